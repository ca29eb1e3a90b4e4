//! A run's configuration: defaults per preset, a TOML file merged over them, and command
//! line overrides on top. The resolved configuration is written into the run's folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::interop::StartWeights;
use crate::preset::{InitScheme, LayerSpec, Preset};
use crate::schedule::Schedule;

/// Which compute device runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The CPU backend of `alexnet-autograd`.
    Cpu,
    /// The OpenCL backend of `alexnet-opencl`.
    Opencl,
}

impl std::str::FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(BackendKind::Cpu),
            "opencl" => Ok(BackendKind::Opencl),
            other => Err(Error::config(format!("unknown backend `{other}`; choose cpu or opencl"))),
        }
    }
}

/// How a run on several devices divides the work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Parallelism {
    /// Every device holds a replica and takes a share of each batch; gradients are summed.
    #[default]
    Data,
    /// The paper's split: each device holds half of every layer (paper and caffenet presets).
    Model,
}

impl std::str::FromStr for Parallelism {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "data" => Ok(Parallelism::Data),
            "model" => Ok(Parallelism::Model),
            other => Err(Error::config(format!("unknown parallelism `{other}`; choose data or model"))),
        }
    }
}

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training data: an ImageNet-style folder (one sub-folder per class), a folder of IDX
    /// files, or a CIFAR-10 binary folder. `None`: the embedded Fashion-MNIST.
    pub train: Option<PathBuf>,
    /// Validation data in the same layout; when absent, `val_fraction` of the training set
    /// is held out (0: no validation).
    pub val: Option<PathBuf>,
    /// Fraction of the training set held out for validation when `val` is absent.
    pub val_fraction: f64,
    /// Test data, evaluated once at the end (the embedded set's test split by default).
    pub test: Option<PathBuf>,
    /// Use at most this many training images (smoke runs, tests).
    pub max_train_images: Option<usize>,
    /// Use at most this many validation/test images.
    pub max_eval_images: Option<usize>,
    /// Decode/augment worker threads.
    pub workers: usize,
    /// Random crops and flips (and PCA lighting on colour images) during training.
    pub augment: bool,
    /// The paper's PCA colour augmentation (colour images only).
    pub pca_lighting: bool,
    /// The largest image decoded, in pixels (width x height), checked from the file's
    /// header before decoding: larger files are skipped and reported like unreadable ones.
    #[serde(default = "default_max_image_pixels")]
    pub max_image_pixels: u64,
}

/// The default of [`DataConfig::max_image_pixels`]: 64 megapixels.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = alexnet_augment::Decode::DEFAULT_MAX_PIXELS;

fn default_max_image_pixels() -> u64 {
    DEFAULT_MAX_IMAGE_PIXELS
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: None,
            val: None,
            val_fraction: 0.0,
            test: None,
            max_train_images: None,
            max_eval_images: None,
            workers: 1,
            augment: true,
            pca_lighting: true,
            max_image_pixels: default_max_image_pixels(),
        }
    }
}

/// Optimiser and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Epochs to train.
    pub epochs: usize,
    /// Images per SGD step (paper: 128).
    pub batch_size: usize,
    /// Images per evaluation batch.
    pub eval_batch_size: usize,
    /// Base learning rate (paper: 0.01).
    pub lr: f32,
    /// Momentum (paper: 0.9).
    pub momentum: f32,
    /// Weight decay (paper: 0.0005).
    pub weight_decay: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Stop after this many steps (smoke runs); the epoch is cut short.
    pub max_steps: Option<u64>,
}

/// Where outputs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Parent folder of run folders.
    pub runs_dir: PathBuf,
    /// Checkpoints to keep besides the best.
    pub keep_last: usize,
    /// Also checkpoint inside an epoch once this many minutes have passed since the last
    /// checkpoint, so that a crash loses at most this much training (0: at epoch ends only).
    #[serde(default = "default_checkpoint_minutes")]
    pub checkpoint_minutes: f64,
    /// Append the mean loss, learning rate and images/s to `steps.jsonl` every this many
    /// steps (0: no step log).
    #[serde(default = "default_log_every_steps")]
    pub log_every_steps: u64,
}

fn default_log_every_steps() -> u64 {
    10
}

fn default_checkpoint_minutes() -> f64 {
    30.0
}

/// Everything a run depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Run name: the folder under `runs_dir`.
    pub name: String,
    /// Model preset.
    pub preset: Preset,
    /// Weight initialisation.
    pub init: InitScheme,
    /// Channel groups the LRN layers normalise apart; `None`: the preset's
    /// ([`Preset::default_lrn_groups`]). The model split needs 2.
    #[serde(default)]
    pub lrn_groups: Option<usize>,
    /// Seed of initialisation, data order, augmentation and dropout.
    pub seed: u64,
    /// Compute backend.
    pub backend: BackendKind,
    /// OpenCL device index (from `cargo xtask devices`).
    pub device: usize,
    /// The devices of a multi-device run (OpenCL indices; for the CPU backend, the count of
    /// replicas). Empty: `device` alone.
    #[serde(default)]
    pub devices: Vec<usize>,
    /// How a multi-device run divides the work.
    #[serde(default)]
    pub parallel: Parallelism,
    /// Compute threads (0: all cores).
    pub threads: usize,
    /// Data.
    pub data: DataConfig,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// Outputs.
    pub output: OutputConfig,
    /// Initial weights from a file (fine-tuning) instead of `init`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<StartWeights>,
    /// The network's layers instead of the preset's (the preset still sets the input size
    /// and the recipe): how `cargo xtask ablate` trains variants of one network that
    /// differ in one layer. In TOML, a `[[layers]]` table per layer (`op = "conv"`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerSpec>>,
}

impl RunConfig {
    /// The defaults for `preset`: the paper's recipe for the ImageNet presets, and a short
    /// cosine schedule for `mini` on Fashion-MNIST.
    pub fn for_preset(preset: Preset) -> Self {
        let optim = match preset {
            Preset::Mini => OptimConfig {
                epochs: 10,
                batch_size: 128,
                eval_batch_size: 500,
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 0.0005,
                schedule: Schedule::Cosine { final_factor: 0.02 },
                max_steps: None,
            },
            _ => OptimConfig {
                epochs: 90,
                batch_size: 128,
                eval_batch_size: 128,
                lr: 0.01,
                momentum: 0.9,
                weight_decay: 0.0005,
                schedule: Schedule::paper(),
                max_steps: None,
            },
        };
        let data = match preset {
            Preset::Mini => DataConfig { val_fraction: 0.0, workers: 1, ..DataConfig::default() },
            _ => DataConfig { val_fraction: 0.02, workers: 2, ..DataConfig::default() },
        };
        Self {
            name: preset.name().to_string(),
            preset,
            init: preset.default_init(),
            lrn_groups: None,
            seed: 42,
            backend: BackendKind::Cpu,
            device: 0,
            devices: Vec::new(),
            parallel: Parallelism::Data,
            threads: 0,
            data,
            optim,
            output: OutputConfig {
                runs_dir: PathBuf::from("runs"),
                keep_last: 3,
                checkpoint_minutes: default_checkpoint_minutes(),
                log_every_steps: default_log_every_steps(),
            },
            weights: None,
            layers: None,
        }
    }

    /// The defaults for the preset named in `text` (or `preset` when given, which wins),
    /// with the TOML `text` merged over them.
    pub fn from_toml(text: &str, preset: Option<Preset>) -> Result<Self> {
        let file: toml::Table = toml::from_str(text).map_err(|e| Error::config(format!("config: {e}")))?;
        let preset = match (preset, file.get("preset")) {
            (Some(p), _) => p,
            (None, Some(toml::Value::String(name))) => name.parse()?,
            (None, Some(other)) => return Err(Error::config(format!("config: preset must be a string, got {other}"))),
            (None, None) => Preset::Mini,
        };
        let defaults = Self::for_preset(preset);
        let mut merged = toml::Table::try_from(&defaults).map_err(|e| Error::config(e.to_string()))?;
        merge(&mut merged, file);
        merged.insert("preset".into(), toml::Value::String(preset.name().into()));
        let config: RunConfig =
            merged.try_into().map_err(|e: toml::de::Error| Error::config(format!("config: {}", e.message())))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file (see [`RunConfig::from_toml`]).
    pub fn load(path: &Path, preset: Option<Preset>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        Self::from_toml(&text, preset).map_err(|e| Error::config(format!("{}: {e}", path.display())))
    }

    /// Whether the TOML file at `path` names its run (a top-level `name`); without one a
    /// run is named after its preset.
    pub fn file_names_run(path: &Path) -> Result<bool> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let file: toml::Table =
            toml::from_str(&text).map_err(|e| Error::config(format!("{}: config: {e}", path.display())))?;
        Ok(file.contains_key("name"))
    }

    /// The configuration of the run in `run_dir`, relocated to where the folder is now: its
    /// `runs_dir` and `name` follow the folder (absolute), so a run that was moved, or
    /// started from another working folder, keeps all its files together when resumed.
    pub fn load_run(run_dir: &Path) -> Result<Self> {
        let dir = std::fs::canonicalize(run_dir).map_err(Error::io(run_dir))?;
        let mut config = Self::load(&dir.join(crate::trainer::CONFIG_FILE), None)?;
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(Error::config(format!("{} is not a run folder", dir.display())));
        };
        config.output.runs_dir = parent.to_path_buf();
        config.name = name.to_string_lossy().into_owned();
        Ok(config)
    }

    /// The resolved configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::config(e.to_string()))
    }

    /// The run's folder.
    pub fn run_dir(&self) -> PathBuf {
        self.output.runs_dir.join(&self.name)
    }

    /// Checks values that would otherwise fail later.
    pub fn validate(&self) -> Result<()> {
        let o = &self.optim;
        let bad = |msg: String| Err(Error::config(msg));
        if o.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if o.batch_size == 0 || o.eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad(format!("learning rate {} must be positive", o.lr));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad(format!("momentum {} must be in [0, 1)", o.momentum));
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return bad(format!("weight decay {} must be non-negative", o.weight_decay));
        }
        o.schedule.validate()?;
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return bad(format!("val fraction {} must be in [0, 1)", self.data.val_fraction));
        }
        let minutes = self.output.checkpoint_minutes;
        if !(minutes.is_finite() && minutes >= 0.0) {
            return bad(format!("checkpoint interval {minutes} minutes must be >= 0"));
        }
        if self.data.max_image_pixels == 0 {
            return bad("max image pixels must be at least 1".into());
        }
        for (what, count) in [("data workers", self.data.workers), ("threads", self.threads)] {
            check_thread_count(what, count)?;
        }
        if self.lrn_groups == Some(0) {
            return bad("LRN groups must be at least 1".into());
        }
        if self.data.workers == 0 {
            return bad("data workers must be at least 1".into());
        }
        for (what, max) in
            [("max train images", self.data.max_train_images), ("max eval images", self.data.max_eval_images)]
        {
            if max == Some(0) {
                return bad(format!("{what} must be at least 1 (leave it out to use every image)"));
            }
        }
        let mut sorted = self.devices.clone();
        sorted.sort_unstable();
        if let Some(pair) = sorted.windows(2).find(|p| p[0] == p[1]) {
            return bad(format!("device {} is listed twice in devices {:?}", pair[0], self.devices));
        }
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name == ".." || self.name == "." {
            return bad(format!("run name `{}` must be a plain folder name", self.name));
        }
        Ok(())
    }
}

/// The most threads (compute or data workers) a run may ask for: far beyond any machine's
/// cores, far below what makes spawning them hang.
pub const MAX_THREADS: usize = 1024;

/// Refuses a thread count above [`MAX_THREADS`] (`what` names the setting).
pub fn check_thread_count(what: &str, count: usize) -> Result<()> {
    if count > MAX_THREADS {
        return Err(Error::config(format!(
            "{count} {what} is beyond the limit of {MAX_THREADS}; this machine has {} cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        )));
    }
    Ok(())
}

/// Recursively overwrites `base` with `over`.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) if key != "schedule" => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_toml() {
        for preset in Preset::ALL {
            let c = RunConfig::for_preset(preset);
            c.validate().unwrap();
            let back = RunConfig::from_toml(&c.to_toml().unwrap(), None).unwrap();
            assert_eq!(back, c);
        }
    }

    #[test]
    fn layer_lists_round_trip_through_toml() {
        // Every preset's layers between them use every kind of layer and padding.
        for preset in Preset::ALL {
            let c = RunConfig { layers: Some(preset.layers(7)), ..RunConfig::for_preset(Preset::Mini) };
            let text = c.to_toml().unwrap();
            assert!(text.contains("[[layers]]"), "{text}");
            assert_eq!(RunConfig::from_toml(&text, None).unwrap(), c, "{preset}");
        }
    }

    #[test]
    fn file_merges_over_preset_defaults() {
        let text = r#"
            preset = "paper"
            seed = 7
            [optim]
            epochs = 3
            schedule = { kind = "step", every = 1, factor = 0.5 }
            [data]
            train = "/data/train"
        "#;
        let c = RunConfig::from_toml(text, None).unwrap();
        assert_eq!(c.preset, Preset::Paper);
        assert_eq!(c.seed, 7);
        assert_eq!(c.optim.epochs, 3);
        assert_eq!(c.optim.lr, 0.01, "untouched values keep the paper default");
        assert_eq!(c.optim.schedule, Schedule::Step { every: 1, factor: 0.5 });
        assert_eq!(c.data.train.as_deref(), Some(Path::new("/data/train")));
        assert_eq!(c.init, InitScheme::Paper);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = RunConfig::from_toml("[optim]\nepoch = 3\n", None).unwrap_err().to_string();
        assert!(err.contains("epoch"), "{err}");
        let err = RunConfig::from_toml("preset = \"vgg\"", None).unwrap_err().to_string();
        assert!(err.contains("vgg"), "{err}");
        let err = RunConfig::from_toml("[optim]\nlr = -1.0\n", None).unwrap_err().to_string();
        assert!(err.contains("learning rate"), "{err}");
        let err = RunConfig::from_toml("name = \"../x\"", None).unwrap_err().to_string();
        assert!(err.contains("plain folder name"), "{err}");
        // Issue 12, item 11: values that used to be taken silently or hang.
        for (text, needle) in [
            ("name = \".\"", "plain folder name"),
            ("[data]\nmax_train_images = 0\n", "max train images must be at least 1"),
            ("[data]\nmax_eval_images = 0\n", "max eval images must be at least 1"),
            ("threads = 100000", "100000 threads is beyond the limit"),
            ("[data]\nworkers = 5000\n", "5000 data workers is beyond the limit"),
            ("[data]\nmax_image_pixels = 0\n", "max image pixels"),
        ] {
            let err = RunConfig::from_toml(text, None).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
