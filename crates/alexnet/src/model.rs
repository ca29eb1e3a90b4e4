//! A model: an [`Architecture`] with its parameters in a [`ParamStore`] on a backend; the
//! forward pass records the preset's layer list on a [`Tape`].

use std::collections::HashMap;
use std::sync::Arc;

use alexnet_autograd::{HostTensor, ParamStore, Tape, Tensor};
use alexnet_core::{Backend, BatchNormParams, MaskWindow, SgdStep, XentSummary, rng::mix64};
use serde::{Deserialize, Serialize};

use crate::checkpoint::TensorMap;
use crate::error::{Error, Result};
use crate::init::init_params;
use crate::preset::{Architecture, InitScheme, LayerSpec, ParamSpec, Preset, ResolvedLayer};

/// What a checkpoint records about the model, so `eval` and `predict` can rebuild it: the
/// preset, the input and classes, and how images were normalised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The preset.
    pub preset: Preset,
    /// Input `[channels, height, width]`.
    pub input: [usize; 3],
    /// Class names, indexed by label (their count is the class count).
    pub class_names: Vec<String>,
    /// The initialisation the run started from.
    pub init: InitScheme,
    /// The square size images are resized to before the centre crop (folders), or `None`
    /// when the data came at the input size (IDX, CIFAR).
    pub resize: Option<usize>,
    /// Per-channel mean subtracted from `[0, 1]` pixel values.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation the centred values are divided by.
    pub std: Vec<f32>,
    /// Channel groups the LRN layers normalise apart ([`Architecture::with_lrn_groups`]).
    /// Checkpoints written before the option normalised across all channels: 1.
    #[serde(default = "one")]
    pub lrn_groups: usize,
    /// The layer list when it is not the preset's ([`crate::RunConfig::layers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerSpec>>,
}

fn one() -> usize {
    1
}

/// The safetensors metadata key holding [`ModelInfo`] as JSON.
pub const MODEL_KEY: &str = "alexnet-rs.model";

impl ModelInfo {
    /// The architecture this describes.
    pub fn architecture(&self) -> Result<Architecture> {
        let classes = self.class_names.len();
        let arch = match &self.layers {
            Some(layers) => Architecture::from_layers(self.preset, layers.clone(), self.input, classes)?,
            None => Architecture::new(self.preset, self.input, classes)?,
        };
        arch.with_lrn_groups(self.lrn_groups)
    }

    /// As checkpoint metadata.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let json = serde_json::to_string(self).expect("ModelInfo serialises");
        HashMap::from([(MODEL_KEY.to_string(), json)])
    }

    /// From checkpoint metadata.
    pub fn from_metadata(metadata: &HashMap<String, String>, path: &std::path::Path) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
        let json = metadata.get(MODEL_KEY).ok_or_else(|| bad(format!("no `{MODEL_KEY}` in its metadata")))?;
        serde_json::from_str(json).map_err(|e| bad(format!("unreadable model description: {e}")))
    }
}

/// An architecture with its parameters on backend `B`.
pub struct Model<B: Backend> {
    /// The resolved layers.
    pub arch: Architecture,
    /// Parameter values, gradients and momentum.
    pub store: ParamStore<B>,
}

impl<B: Backend> Model<B> {
    /// A model with freshly initialised parameters.
    pub fn init(arch: Architecture, backend: Arc<B>, scheme: InitScheme, seed: u64) -> Result<Self> {
        let params = init_params(&arch, scheme, seed);
        Self::from_params(arch, backend, &params)
    }

    /// A model whose parameters come from `params` (every tensor of the architecture must be
    /// present with its dims; extra tensors are an error).
    pub fn from_params(arch: Architecture, backend: Arc<B>, params: &TensorMap) -> Result<Self> {
        let mut store = ParamStore::new(backend);
        for (spec, t) in match_params(&arch, params)? {
            insert_param(&mut store, spec, &t.dims, &t.data)?;
        }
        Ok(Self { arch, store })
    }

    /// Every parameter (and state) copied to the host, in layer order.
    pub fn params_to_host(&self) -> Result<TensorMap> {
        Ok(self.store.to_host_map()?)
    }

    /// One SGD step on a batch (`images` of dims `shape`, one label per image), the tape reset
    /// first: forward, softmax cross-entropy, backward, then the update. The host uploads the
    /// images and labels and reads back only the loss summary (loss, top-1/top-5 counts), once,
    /// after the backward is queued. A non-finite loss skips the update (the caller decides
    /// what to do with the returned summary).
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        tape: &mut Tape<B>,
        images: &[f32],
        shape: &[usize],
        labels: &[usize],
        dropout_seed: u64,
        sgd: &SgdStep,
    ) -> Result<XentSummary> {
        let summary =
            self.forward_backward_part(tape, images, shape, labels, dropout_seed, 0, |tape, loss, store| {
                Ok(tape.backward(loss, store)?)
            })?;
        if summary.mean_loss.is_finite() {
            self.store.sgd_step(sgd)?;
        }
        Ok(summary)
    }

    /// Forward, softmax cross-entropy and `backward` (from the loss) of `images` (dims
    /// `shape`), the samples from `first_sample` on of a larger batch (see
    /// [`Model::forward_part`]); the tape is reset first. Returns the loss summary, read back
    /// once after the backward is queued, so that the device never waits for the host.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward_part(
        &mut self,
        tape: &mut Tape<B>,
        images: &[f32],
        shape: &[usize],
        labels: &[usize],
        dropout_seed: u64,
        first_sample: u64,
        backward: impl FnOnce(&mut Tape<B>, Tensor, &mut ParamStore<B>) -> Result<()>,
    ) -> Result<XentSummary> {
        tape.reset();
        let x = tape.input(images, shape)?;
        let logits = self.forward_part(tape, x, dropout_seed, first_sample)?;
        let loss = tape.softmax_cross_entropy(logits, labels)?;
        backward(tape, loss, &mut self.store)?;
        Ok(tape.xent_summary(loss)?)
    }

    /// Records the forward pass of `x` (`[batch, c, h, w]`) on `tape`; returns the logits
    /// `[batch, classes]`. On a training tape dropout draws masks from `dropout_seed`
    /// (one stream per dropout layer) and batch norm updates its running averages.
    pub fn forward(&mut self, tape: &mut Tape<B>, x: Tensor, dropout_seed: u64) -> Result<Tensor> {
        self.forward_part(tape, x, dropout_seed, 0)
    }

    /// [`Model::forward`] of the samples from `first_sample` on of a larger batch (a
    /// replica's share): dropout draws exactly the masks that the whole batch's forward
    /// draws for these samples.
    pub fn forward_part(
        &mut self,
        tape: &mut Tape<B>,
        x: Tensor,
        dropout_seed: u64,
        first_sample: u64,
    ) -> Result<Tensor> {
        self.forward_recording_spans(tape, x, dropout_seed, first_sample, None)
    }

    /// [`Model::forward_part`], also pushing onto `spans` (when given) the tape's index
    /// range of each layer's ops, for the profiler.
    pub(crate) fn forward_recording_spans(
        &mut self,
        tape: &mut Tape<B>,
        x: Tensor,
        dropout_seed: u64,
        first_sample: u64,
        mut spans: Option<&mut Vec<std::ops::Range<usize>>>,
    ) -> Result<Tensor> {
        let mut h = x;
        let part = LayerPart { first_sample, part: 0, parts: 1 };
        for (i, layer) in self.arch.layers.iter().enumerate() {
            let start = tape.len();
            h = record_layer(tape, &mut self.store, layer, i, h, dropout_seed, part)?;
            if let Some(spans) = spans.as_deref_mut() {
                spans.push(start..tape.len());
            }
        }
        Ok(h)
    }
}

/// `params` matched to `arch`'s parameters, in layer order: every tensor of the
/// architecture present with its dims, and no other.
pub(crate) fn match_params<'a>(
    arch: &'a Architecture,
    params: &'a TensorMap,
) -> Result<Vec<(&'a ParamSpec, &'a HostTensor)>> {
    let mut by_name: HashMap<&str, &HostTensor> = params.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut matched = Vec::new();
    for spec in arch.params() {
        let t = by_name.remove(spec.name.as_str()).ok_or_else(|| {
            Error::config(format!("parameter {} is missing (the weights are for another model?)", spec.name))
        })?;
        if t.dims != spec.dims {
            return Err(Error::config(format!(
                "parameter {} has dims {:?}, the {} model needs {:?}",
                spec.name, t.dims, arch.preset, spec.dims
            )));
        }
        matched.push((spec, t));
    }
    if let Some(extra) = by_name.keys().min() {
        return Err(Error::config(format!("unexpected parameter {extra} for the {} model", arch.preset)));
    }
    Ok(matched)
}

/// Adds parameter `spec` with the given value (a trainable parameter or a state buffer).
pub(crate) fn insert_param<B: Backend>(
    store: &mut ParamStore<B>,
    spec: &ParamSpec,
    dims: &[usize],
    data: &[f32],
) -> Result<()> {
    if spec.role.trainable() {
        store.insert(&spec.name, dims, data)?;
    } else {
        store.insert_state(&spec.name, dims, data)?;
    }
    Ok(())
}

/// Where a layer's activations sit in the whole batch's: from sample `first_sample` on,
/// and `part` of `parts` equal column blocks of every row (a device's half of a split
/// layer's features).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LayerPart {
    pub(crate) first_sample: u64,
    pub(crate) part: usize,
    pub(crate) parts: usize,
}

/// Records `layer` (number `index` of its network) on `tape` with input `h` and the
/// parameters of `store`. Dropout draws from stream `index` of `dropout_seed`, the masks
/// that the whole batch's whole layer draws at `place`.
pub(crate) fn record_layer<B: Backend>(
    tape: &mut Tape<B>,
    store: &mut ParamStore<B>,
    layer: &ResolvedLayer,
    index: usize,
    h: Tensor,
    dropout_seed: u64,
    place: LayerPart,
) -> Result<Tensor> {
    Ok(match &layer.spec {
        LayerSpec::Conv { name, .. } => {
            let geom = layer.conv.as_ref().expect("resolved convolutions carry their geometry");
            let w = tape.param(store, &format!("{name}.weight"))?;
            let b = tape.param(store, &format!("{name}.bias"))?;
            tape.conv2d(h, w, Some(b), geom)?
        }
        LayerSpec::Activation { function } => tape.activation(*function, h)?,
        LayerSpec::Lrn { params, groups } => tape.lrn_grouped(h, params, *groups)?,
        LayerSpec::MaxPool { .. } => {
            let geom = layer.pool.as_ref().expect("resolved pools carry their geometry");
            tape.max_pool(h, geom)?
        }
        LayerSpec::AdaptiveAvgPool { .. } => {
            let geom = layer.pool.as_ref().expect("resolved pools carry their geometry");
            tape.avg_pool(h, geom)?
        }
        LayerSpec::BatchNorm { name, eps, momentum } => {
            let params = BatchNormParams { eps: *eps, momentum: *momentum };
            tape.batch_norm(h, store, name, &params)?
        }
        LayerSpec::Dropout { p } => {
            let cols = h.dims().rows_cols().1;
            let window = MaskWindow {
                first_row: place.first_sample,
                first_col: (place.part * cols) as u64,
                row_len: cols as u64,
                total_row_len: (place.parts * cols) as u64,
            };
            tape.dropout_at(h, *p, mix64(dropout_seed, index as u64), window)?
        }
        LayerSpec::Flatten => tape.flatten(h)?,
        LayerSpec::Dense { name, .. } => {
            let w = tape.param(store, &format!("{name}.weight"))?;
            let b = tape.param(store, &format!("{name}.bias"))?;
            tape.linear(h, w, Some(b))?
        }
    })
}
