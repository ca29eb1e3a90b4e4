//! Weights from elsewhere: starting a run from a safetensors file (an alexnet-rs checkpoint,
//! or a `state_dict` that PyTorch saved, such as torchvision's AlexNet for the
//! `torchvision` preset), optionally with a new last layer for another class count and
//! everything but that layer frozen. This is fine-tuning.
//!
//! ```no_run
//! use std::path::PathBuf;
//! use alexnet::{Preset, RunConfig, StartWeights};
//!
//! let mut config = RunConfig::for_preset(Preset::Torchvision);
//! config.data.train = Some(PathBuf::from("flowers/train"));
//! config.weights = Some(StartWeights {
//!     file: PathBuf::from("alexnet-torchvision.safetensors"),
//!     new_head: true,
//!     freeze: true,
//! });
//! // `Trainer::new(config, backend)` then loads every layer but `classifier.6` from the
//! // file, draws a new `classifier.6` for the folder's classes and trains only that.
//! ```

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::{TensorMap, load_any_tensors};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::init::{init_param, init_params};
use crate::model::{MODEL_KEY, ModelInfo};
use crate::preset::{Architecture, LayerSpec, Preset};

/// Where a run's initial weights come from, and which of them it trains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartWeights {
    /// A safetensors file with the preset's parameter names and layouts: an alexnet-rs
    /// checkpoint, or a PyTorch `state_dict` saved with `safetensors.torch.save_file`.
    pub file: PathBuf,
    /// Draw a new last layer for the run's class count instead of loading the file's.
    pub new_head: bool,
    /// Train only the last layer; every other parameter keeps the file's values.
    pub freeze: bool,
}

/// The tensors of a weights file, with its model description when alexnet-rs wrote it.
#[derive(Debug, Clone)]
pub struct WeightsFile {
    /// Every tensor, in name order.
    pub tensors: TensorMap,
    /// The model the file was trained as (`None` for files from elsewhere).
    pub info: Option<ModelInfo>,
}

/// Reads a weights file from alexnet-rs (verified) or from elsewhere (taken as it is).
pub fn read_weights(path: &Path) -> Result<WeightsFile> {
    let (tensors, metadata) = load_any_tensors(path)?;
    let info = match metadata.contains_key(MODEL_KEY) {
        true => Some(ModelInfo::from_metadata(&metadata, path)?),
        false => None,
    };
    Ok(WeightsFile { tensors, info })
}

/// The name of the architecture's last layer (the classifier a new head replaces).
pub fn head_name(arch: &Architecture) -> &str {
    arch.layers
        .iter()
        .rev()
        .find_map(|l| match &l.spec {
            LayerSpec::Dense { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .expect("every preset ends in a dense layer")
}

/// Whether parameter `name` belongs to layer `layer` (`fc8.weight` to `fc8`).
fn in_layer(name: &str, layer: &str) -> bool {
    name.strip_prefix(layer).is_some_and(|rest| rest.starts_with('.'))
}

/// The initial parameters of a run of `arch`: drawn afresh (`config.init`, `config.seed`)
/// without `config.weights`, otherwise the file's, with a fresh last layer when asked.
pub fn initial_params(arch: &Architecture, config: &RunConfig) -> Result<TensorMap> {
    let Some(start) = &config.weights else { return Ok(init_params(arch, config.init, config.seed)) };
    let file = read_weights(&start.file)?;
    let bad = |reason: String| Error::Checkpoint { path: start.file.clone(), reason };
    if let Some(info) = &file.info
        && info.preset != arch.preset
    {
        return Err(bad(format!(
            "it holds a {} model, the run is {}; pass --preset {}",
            info.preset, arch.preset, info.preset
        )));
    }
    let head = head_name(arch);
    let mut by_name: HashMap<String, _> = file.tensors.into_iter().collect();
    let mut params = TensorMap::new();
    for spec in arch.params() {
        if start.new_head && in_layer(&spec.name, head) {
            by_name.remove(&spec.name);
            params.push((spec.name.clone(), init_param(spec, config.init, config.seed)));
            continue;
        }
        let t = by_name.remove(&spec.name).ok_or_else(|| {
            let mut held: Vec<&String> = by_name.keys().collect();
            held.sort_unstable();
            held.truncate(4);
            bad(format!("it has no {}: are the weights for another preset? It holds {held:?}...", spec.name))
        })?;
        if t.dims != spec.dims {
            let hint = match in_layer(&spec.name, head) {
                true => format!(
                    "; it was trained for {} classes, the data has {}: pass --new-head to replace {head}",
                    t.dims[0], arch.classes
                ),
                false => String::new(),
            };
            return Err(bad(format!(
                "{} has dims {:?}, the {} model needs {:?}{hint}",
                spec.name, t.dims, arch.preset, spec.dims
            )));
        }
        params.push((spec.name.clone(), t));
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(bad(format!("{extra} is not a parameter of the {} model", arch.preset)));
    }
    Ok(params)
}

/// The trainable parameters a run holds fixed: all but the last layer's when
/// `config.weights` asks to freeze, none otherwise.
pub fn frozen_params(arch: &Architecture, config: &RunConfig) -> Vec<String> {
    if !config.weights.as_ref().is_some_and(|w| w.freeze) {
        return Vec::new();
    }
    let head = head_name(arch);
    arch.params().filter(|p| p.role.trainable() && !in_layer(&p.name, head)).map(|p| p.name.clone()).collect()
}

/// A description for a weights file from elsewhere, taken as `preset` at its default input
/// with the class count of the file's last layer (named `0`, `1`, ...) and the preset's
/// fixed normalisation (none when it has none).
pub fn foreign_model_info(preset: Preset, tensors: &TensorMap) -> Result<ModelInfo> {
    let probe = Architecture::default_for(preset)?;
    let head_weight = format!("{}.weight", head_name(&probe));
    let classes = tensors.iter().find(|(n, _)| *n == head_weight).map(|(_, t)| t.dims[0]).ok_or_else(|| {
        Error::config(format!("the weights have no {head_weight}: they are not for the {preset} preset"))
    })?;
    let input = preset.default_input();
    let (mean, std) = match preset.fixed_normalization() {
        Some((mean, std)) => (mean.to_vec(), std.to_vec()),
        None => (vec![0.0; input[0]], vec![1.0; input[0]]),
    };
    Ok(ModelInfo {
        preset,
        input,
        class_names: (0..classes).map(|k| k.to_string()).collect(),
        init: preset.default_init(),
        resize: Some(preset.resize_for_crop(input[1])),
        mean,
        std,
        lrn_groups: preset.default_lrn_groups(),
        layers: None,
    })
}
