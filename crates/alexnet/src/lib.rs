//! # alexnet
//!
//! AlexNet (Krizhevsky, Sutskever, Hinton 2012) assembled from the workspace's parts: model
//! presets as data ([`Preset`], [`Architecture`]), the paper's training recipe (SGD with
//! momentum and weight decay, [`Schedule`]s including reduce-on-plateau), top-1/top-5
//! metrics, checkpoints in safetensors, a [`Trainer`] over any `alexnet_core::Backend`,
//! starting from given weights ([`interop`]: torchvision's AlexNet, fine-tuning).
//!
//! ```
//! use alexnet::{Architecture, Preset};
//!
//! let paper = Architecture::default_for(Preset::Paper)?;
//! assert_eq!(paper.trainable_params(), 60_965_224);
//! println!("{}", paper.summary());
//! # Ok::<(), alexnet::Error>(())
//! ```

mod atomic;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod error;
pub mod export;
mod failpoint;
pub mod init;
pub mod interop;
pub mod metrics;
pub mod model;
pub mod parallel;
pub mod plot;
pub mod preset;
pub mod profile;
pub mod schedule;
pub mod synthetic;
pub mod trainer;

pub use atomic::write_atomic;
pub use checkpoint::{Checkpoint, CheckpointDir, TensorMap, TrainingState};
pub use config::{BackendKind, DataConfig, OptimConfig, OutputConfig, Parallelism, RunConfig};
pub use data::{DataFormat, Datasets, Subset};
pub use error::{Error, Result};
pub use interop::StartWeights;
pub use metrics::{EpochRecord, MetricsLog, SplitMetrics, TopK};
pub use model::{Model, ModelInfo};
pub use parallel::{Collective, Placement};
pub use preset::{Architecture, InitScheme, LayerSpec, Padding, ParamRole, ParamSpec, Preset, ResolvedLayer};
pub use schedule::{EpochDecision, LrScheduler, Schedule};
pub use trainer::{
    BatchReport, LoadedModel, LogitsFn, Observer, RunResult, Silent, Trainer, evaluate, input_for, load_model,
    model_logits,
};

/// The README's code blocks, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
