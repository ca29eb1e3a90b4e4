//! The error type of the `alexnet` crate.

use std::path::PathBuf;

use alexnet_core::Shape4;
use thiserror::Error;

/// Everything that can go wrong building, training, saving or loading a model.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A geometry or backend error from `alexnet-core`.
    #[error(transparent)]
    Core(#[from] alexnet_core::Error),
    /// An error from the autograd (shapes, parameters).
    #[error(transparent)]
    Autograd(#[from] alexnet_autograd::AutogradError),
    /// A layer of a preset does not fit its input.
    #[error("layer {layer} with input {input}: {source}")]
    Layer {
        /// The layer's label.
        layer: String,
        /// Its input shape (batch 1).
        input: Shape4,
        /// What the geometry said.
        source: alexnet_core::Error,
    },
    /// Adaptive average pooling met a feature map whose sides are not whole multiples of
    /// its output (see [`crate::LayerSpec::AdaptiveAvgPool`]).
    #[error(
        "adaptive average pooling to {size}x{size} needs a feature map whose sides are multiples of {size}, got \
         {height}x{width}{}",
        nearest_input_hint(nearest_inputs)
    )]
    AdaptivePool {
        /// The pooled output side.
        size: usize,
        /// The feature map's height.
        height: usize,
        /// The feature map's width.
        width: usize,
        /// The nearest square input sizes (below and above the one given) that work.
        nearest_inputs: Vec<usize>,
    },
    /// No preset has this name.
    #[error("unknown preset `{name}`; choose one of paper, caffenet, keras-bn, mini, torchvision")]
    UnknownPreset {
        /// The name given.
        name: String,
    },
    /// An invalid setting.
    #[error("{message}")]
    Config {
        /// What is wrong and what to do.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A checkpoint file is truncated, corrupted, foreign or does not fit the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image file cannot be used (not an image, damaged, over the pixel limit).
    #[error("{path}: {reason}")]
    Image {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The model's outputs are NaN or infinite: its weights are damaged or diverged.
    #[error(
        "the model's outputs for {what} are not finite (NaN or infinite): its weights are damaged or \
         training diverged; use an earlier checkpoint"
    )]
    NonFiniteOutput {
        /// What was evaluated (a file, a batch of a split).
        what: String,
    },
    /// The loss became NaN or infinite.
    #[error("loss is {loss} at step {step} (epoch {}); stopped. {}", .epoch + 1, last_good_note(.last_good))]
    NonFiniteLoss {
        /// Global step (batches since the start of training).
        step: u64,
        /// Epoch (0-based; the message numbers it from 1, as `metrics.jsonl` does).
        epoch: usize,
        /// The loss value.
        loss: f32,
        /// The newest checkpoint whose weights gave a finite loss, if any.
        last_good: Option<PathBuf>,
    },
    /// A checkpoint was about to hold a NaN or infinity: training diverged.
    #[error("{parameter} is not finite after step {step} (epoch {epoch}); stopped without saving it. {}", last_good_note(.last_good))]
    NonFiniteWeights {
        /// The first parameter (or momentum buffer) with a non-finite value.
        parameter: String,
        /// Global step.
        step: u64,
        /// Epoch, numbered from 1 as in `metrics.jsonl`: the one the step belongs to.
        epoch: usize,
        /// The newest good checkpoint, if any.
        last_good: Option<PathBuf>,
    },
    /// A data-parallel group failed: a member left, or members disagreed about what they
    /// exchange.
    #[error("data-parallel group (member {member}): {reason}")]
    Collective {
        /// This member's rank in the group.
        member: usize,
        /// What happened.
        reason: String,
    },
    /// The devices of a multi-device run are not alike.
    #[error(
        "device {index} ({other}) differs from device 0 ({first}); a multi-device run gives every device an \
         equal share of the work, so its devices must be of one kind"
    )]
    DevicesDiffer {
        /// The position of the differing device in the run's device list.
        index: usize,
        /// What device 0 is.
        first: String,
        /// What this device is.
        other: String,
    },
    /// One device of a multi-device run failed.
    #[error("device {index} ({name}): {source}")]
    Device {
        /// The device's position in the run's device list.
        index: usize,
        /// The backend's name.
        name: String,
        /// What it reported.
        source: Box<Error>,
    },
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// An [`Error::Config`].
    pub fn config(message: impl Into<String>) -> Error {
        Error::Config { message: message.into() }
    }
}

/// The end of a divergence message: where the last good checkpoint is.
fn last_good_note(last_good: &Option<PathBuf>) -> String {
    match last_good {
        Some(p) => format!("The last good checkpoint is kept at {}", p.display()),
        None => "No good checkpoint was written before it".into(),
    }
}

fn nearest_input_hint(sizes: &[usize]) -> String {
    match sizes {
        [] => String::new(),
        [one] => format!("; an input of {one}x{one} works"),
        [lo, hi, ..] => format!("; the nearest inputs that work are {lo}x{lo} and {hi}x{hi}"),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
