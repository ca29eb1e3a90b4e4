//! Where a step's time goes, layer by layer: [`profile_train_step`] and [`profile_inference`]
//! time every layer's forward and backward on a timed [`Tape`] (which waits for the device
//! after each op) and count the work each did, so that a benchmark can print GFLOP/s for the
//! layers that compute and GB/s for those that move memory.
//!
//! ```
//! use std::sync::Arc;
//! use alexnet::{Architecture, InitScheme, Model, Preset, profile::profile_train_step};
//! use alexnet_autograd::{CpuBackend, Tape};
//! use alexnet_core::SgdStep;
//!
//! let arch = Architecture::default_for(Preset::Mini)?;
//! let backend = Arc::new(CpuBackend::new());
//! let mut model = Model::init(arch, backend.clone(), InitScheme::He, 1)?;
//! let mut tape = Tape::train(backend);
//! let images = vec![0.5; 2 * 28 * 28];
//! let sgd = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
//! let profile = profile_train_step(&mut model, &mut tape, &images, [2, 1, 28, 28], &[3, 7], 0, &sgd)?;
//! // One row for the input, one per layer, the loss and the update.
//! assert_eq!(profile.rows.len(), model.arch.layers.len() + 3);
//! let shares: f64 = profile.rows.iter().map(|r| profile.share(r.seconds())).sum();
//! assert!((shares + profile.share(profile.unattributed_seconds()) - 100.0).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::Range;
use std::time::Instant;

use alexnet_autograd::{NodeTimes, Tape, Tensor};
use alexnet_core::{Backend, SgdStep};

use crate::error::Result;
use crate::model::Model;
use crate::preset::{LayerSpec, ResolvedLayer};

/// Bytes of one `f32`.
const F32: u64 = 4;

/// One timed half (forward, or backward) of a row, with the work it did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timed {
    /// Seconds, the device's work included.
    pub seconds: f64,
    /// Floating-point operations of its matrix products and convolutions (a multiply-add
    /// counts 2; bias additions and element-wise work are not counted).
    pub flops: u64,
    /// Bytes its kernels must at least move: every tensor they read or write, once.
    pub bytes: u64,
}

impl Timed {
    /// Whether the work is counted in FLOPs (a product) rather than only in bytes.
    pub fn computes(&self) -> bool {
        self.flops > 0
    }

    /// FLOP/s.
    pub fn flops_per_second(&self) -> f64 {
        self.flops as f64 / self.seconds.max(1e-12)
    }

    /// Bytes/s.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes as f64 / self.seconds.max(1e-12)
    }
}

/// One row of a profile: a layer, or the input upload, the loss, the update.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    /// The layer's label (as `summary` prints it), or `input`, `softmax loss`, `SGD update`.
    pub name: String,
    /// The forward half (`None`: the row has none, as the update).
    pub forward: Option<Timed>,
    /// The backward half (the update is counted here; `None`: inference, or the input).
    pub backward: Option<Timed>,
}

impl ProfileRow {
    /// Forward plus backward seconds.
    pub fn seconds(&self) -> f64 {
        self.forward.map_or(0.0, |t| t.seconds) + self.backward.map_or(0.0, |t| t.seconds)
    }
}

/// Where the time of one training step or inference batch went.
#[derive(Debug, Clone, PartialEq)]
pub struct StepProfile {
    /// Images in the batch.
    pub batch: usize,
    /// The rows in execution order of the forward pass.
    pub rows: Vec<ProfileRow>,
    /// The whole step, timed around everything (rows and the bookkeeping between them).
    pub total_seconds: f64,
}

impl StepProfile {
    /// `seconds` as a percentage of the whole step.
    pub fn share(&self, seconds: f64) -> f64 {
        100.0 * seconds / self.total_seconds.max(1e-12)
    }

    /// Time of the step spent outside every row (the tape's bookkeeping between ops).
    pub fn unattributed_seconds(&self) -> f64 {
        (self.total_seconds - self.rows.iter().map(ProfileRow::seconds).sum::<f64>()).max(0.0)
    }

    /// The mean of several profiles of the same step (row by row).
    ///
    /// # Panics
    /// If `profiles` is empty or their rows differ (an internal invariant of one model).
    pub fn mean(profiles: &[StepProfile]) -> StepProfile {
        let first = profiles.first().expect("at least one profile");
        let k = profiles.len() as f64;
        let mean_of = |pick: &dyn Fn(&ProfileRow) -> Option<Timed>, i: usize| {
            pick(&first.rows[i]).map(|t| Timed {
                seconds: profiles.iter().map(|p| pick(&p.rows[i]).map_or(0.0, |t| t.seconds)).sum::<f64>() / k,
                ..t
            })
        };
        let rows = (0..first.rows.len())
            .map(|i| {
                assert!(profiles.iter().all(|p| p.rows[i].name == first.rows[i].name), "profiles of one model");
                ProfileRow {
                    name: first.rows[i].name.clone(),
                    forward: mean_of(&|r| r.forward, i),
                    backward: mean_of(&|r| r.backward, i),
                }
            })
            .collect();
        StepProfile {
            batch: first.batch,
            rows,
            total_seconds: profiles.iter().map(|p| p.total_seconds).sum::<f64>() / k,
        }
    }
}

/// The work of `layer` on a batch of `n`: forward and backward FLOPs and bytes.
/// `input_grad`: whether the backward computes the gradient of the layer's input (not for
/// layers that no parameter precedes).
pub fn layer_work(layer: &ResolvedLayer, n: usize, input_grad: bool) -> (Timed, Timed) {
    let n = n as u64;
    let (inp, out) = (n * layer.input.numel() as u64, n * layer.output.numel() as u64);
    let params = layer.trainable_params() as u64;
    let work = |flops: u64, elements: u64| Timed { seconds: 0.0, flops, bytes: F32 * elements };
    let with_dx = u64::from(input_grad);
    match &layer.spec {
        LayerSpec::Conv { .. } | LayerSpec::Dense { .. } => {
            let product = n * layer.forward_flops();
            // Forward reads x and the weights, writes y; backward reads dy, x and the weights
            // and writes the weight gradients (and dx).
            (work(product, inp + params + out), work(product * (1 + with_dx), out + inp + 2 * params + with_dx * inp))
        }
        // dx from the saved input (or output) and dy.
        LayerSpec::Activation { .. } => (work(0, inp + out), work(0, with_dx * (inp + out + inp))),
        // y and the saved scale; dx from x, y, scale and dy.
        LayerSpec::Lrn { .. } => (work(0, 3 * inp), work(0, with_dx * 5 * inp)),
        // dx from x, y and dy.
        LayerSpec::MaxPool { .. } | LayerSpec::AdaptiveAvgPool { .. } => {
            (work(0, inp + out), work(0, with_dx * (inp + 2 * out + inp)))
        }
        LayerSpec::BatchNorm { .. } => (work(0, inp + out), work(0, inp + out + inp)),
        // y and the mask; dx from dy and the mask.
        LayerSpec::Dropout { .. } => (work(0, 3 * inp), work(0, with_dx * 3 * inp)),
        LayerSpec::Flatten => (work(0, 0), work(0, 0)),
    }
}

/// Runs the forward pass of `model` on a timed `tape` (reset first); returns the logits and
/// the tape's index range of each layer (after the input's, which is `0..1`).
fn timed_forward<B: Backend>(
    model: &mut Model<B>,
    tape: &mut Tape<B>,
    images: &[f32],
    shape: [usize; 4],
    dropout_seed: u64,
) -> Result<(Tensor, Vec<Range<usize>>)> {
    tape.set_timing(true);
    tape.reset();
    let x = tape.input(images, &shape)?;
    let mut spans = Vec::with_capacity(model.arch.layers.len());
    let logits = model.forward_recording_spans(tape, x, dropout_seed, 0, Some(&mut spans))?;
    Ok((logits, spans))
}

/// The rows of the input and of each layer, from the tape's times.
fn layer_rows<B: Backend>(
    model: &Model<B>,
    times: &NodeTimes,
    spans: &[Range<usize>],
    n: usize,
    training: bool,
) -> Vec<ProfileRow> {
    let sum = |v: &[f64], span: &Range<usize>| v.get(span.clone()).map_or(0.0, |s| s.iter().sum::<f64>());
    let input_bytes = 2 * F32 * (n * model.arch.input.iter().product::<usize>()) as u64;
    let mut rows = vec![ProfileRow {
        name: "input".into(),
        forward: Some(Timed { seconds: sum(&times.forward, &(0..1)), flops: 0, bytes: input_bytes }),
        backward: None,
    }];
    let mut parameters_before = false;
    for (layer, span) in model.arch.layers.iter().zip(spans) {
        let (forward, backward) = layer_work(layer, n, parameters_before);
        parameters_before |= layer.trainable_params() > 0;
        let (forward, backward) = if training {
            (forward, backward)
        } else {
            // Inference: dropout is the identity and records nothing.
            let dropout = matches!(layer.spec, LayerSpec::Dropout { .. });
            (if dropout { Timed::default() } else { forward }, backward)
        };
        rows.push(ProfileRow {
            name: layer.spec.label(),
            forward: Some(Timed { seconds: sum(&times.forward, span), ..forward }),
            backward: training.then(|| Timed { seconds: sum(&times.backward, span), ..backward }),
        });
    }
    rows
}

/// One training step of `model` (forward, softmax cross-entropy, backward, SGD update) on a
/// batch, every op timed ([`Tape::set_timing`], left on), as [`Model::train_step`] runs it.
#[allow(clippy::too_many_arguments)]
pub fn profile_train_step<B: Backend>(
    model: &mut Model<B>,
    tape: &mut Tape<B>,
    images: &[f32],
    shape: [usize; 4],
    labels: &[usize],
    dropout_seed: u64,
    sgd: &SgdStep,
) -> Result<StepProfile> {
    let started = Instant::now();
    let (logits, spans) = timed_forward(model, tape, images, shape, dropout_seed)?;
    let loss_start = tape.len();
    let loss = tape.softmax_cross_entropy(logits, labels)?;
    tape.backward(loss, &mut model.store)?;
    let summary = tape.xent_summary(loss)?;
    let update_started = Instant::now();
    if summary.mean_loss.is_finite() {
        model.store.sgd_step(sgd)?;
    }
    model.store.backend().synchronize()?;
    let update_seconds = update_started.elapsed().as_secs_f64();
    let total_seconds = started.elapsed().as_secs_f64();

    let times = tape.node_times()?.expect("timing is on");
    let n = shape[0];
    let mut rows = layer_rows(model, times, &spans, n, true);
    let loss_span = loss_start..tape.len();
    let sum = |v: &[f64]| v[loss_span.clone()].iter().sum::<f64>();
    let classes = (n * model.arch.classes) as u64;
    rows.push(ProfileRow {
        name: "softmax loss".into(),
        // Logits in, probabilities out; dlogits from the probabilities.
        forward: Some(Timed { seconds: sum(&times.forward), flops: 0, bytes: 2 * F32 * classes }),
        backward: Some(Timed { seconds: sum(&times.backward), flops: 0, bytes: 2 * F32 * classes }),
    });
    // Reads weights, gradients and momentum, writes weights and momentum.
    let params = model.arch.trainable_params() as u64;
    rows.push(ProfileRow {
        name: "SGD update".into(),
        forward: None,
        backward: Some(Timed { seconds: update_seconds, flops: 0, bytes: 5 * F32 * params }),
    });
    Ok(StepProfile { batch: n, rows, total_seconds })
}

/// One inference batch of `model` on an inference `tape`, every layer timed (timing left on).
pub fn profile_inference<B: Backend>(
    model: &mut Model<B>,
    tape: &mut Tape<B>,
    images: &[f32],
    shape: [usize; 4],
) -> Result<StepProfile> {
    let started = Instant::now();
    let (logits, spans) = timed_forward(model, tape, images, shape, 0)?;
    let mut host = vec![0.0; logits.numel()];
    model.store.backend().download(tape.value(logits)?, &mut host)?;
    let total_seconds = started.elapsed().as_secs_f64();
    let times = tape.node_times()?.expect("timing is on");
    let rows = layer_rows(model, times, &spans, shape[0], false);
    tape.reset();
    Ok(StepProfile { batch: shape[0], rows, total_seconds })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use alexnet_autograd::CpuBackend;

    use super::*;
    use crate::preset::{Architecture, InitScheme, Preset};

    fn mini(batch: usize) -> (Model<CpuBackend>, Tape<CpuBackend>, Vec<f32>, Vec<usize>) {
        let backend = Arc::new(CpuBackend::with_threads(2).unwrap());
        let model =
            Model::init(Architecture::default_for(Preset::Mini).unwrap(), backend.clone(), InitScheme::He, 3).unwrap();
        let images = (0..batch * 28 * 28).map(|i| (i % 17) as f32 / 17.0).collect();
        (model, Tape::train(backend), images, (0..batch).map(|i| i % 10).collect())
    }

    const SGD: SgdStep = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };

    #[test]
    fn training_rows_name_every_layer_and_shares_sum_to_the_step() {
        let (mut model, mut tape, images, labels) = mini(3);
        let p = profile_train_step(&mut model, &mut tape, &images, [3, 1, 28, 28], &labels, 0, &SGD).unwrap();
        let mut names = vec!["input".to_string()];
        names.extend(model.arch.layers.iter().map(|l| l.spec.label()));
        names.extend(["softmax loss".to_string(), "SGD update".to_string()]);
        assert_eq!(p.rows.iter().map(|r| r.name.clone()).collect::<Vec<_>>(), names);
        let rows: f64 = p.rows.iter().map(|r| r.seconds()).sum();
        assert!(rows > 0.0 && rows <= p.total_seconds, "rows {rows} s within the step's {} s", p.total_seconds);
        let shares: f64 = p.rows.iter().map(|r| p.share(r.seconds())).sum::<f64>() + p.share(p.unattributed_seconds());
        assert!((shares - 100.0).abs() < 1e-6, "shares sum to {shares}");
        // Every layer ran forward and backward (the flatten's views take no time to speak of).
        for row in &p.rows[1..p.rows.len() - 1] {
            assert!(row.forward.is_some() && row.backward.is_some(), "{}", row.name);
        }
        // The step trained: a second profile of the same batch has the same rows.
        let again = profile_train_step(&mut model, &mut tape, &images, [3, 1, 28, 28], &labels, 1, &SGD).unwrap();
        let mean = StepProfile::mean(&[p.clone(), again.clone()]);
        assert!((mean.total_seconds - (p.total_seconds + again.total_seconds) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn flop_counts_match_the_direct_formula() {
        let (mut model, mut tape, images, labels) = mini(2);
        let p = profile_train_step(&mut model, &mut tape, &images, [2, 1, 28, 28], &labels, 0, &SGD).unwrap();
        let row = |name: &str| p.rows.iter().find(|r| r.name.starts_with(name)).unwrap();
        let flops = |name: &str| (row(name).forward.unwrap().flops, row(name).backward.unwrap().flops);
        // conv1: 2 images x 32 maps of 28x28, each a 1x3x3 window; the image needs no
        // gradient, so backward is the weight gradient alone.
        let conv1 = 2 * 2 * 32 * 28 * 28 * 9;
        assert_eq!(flops("conv1 "), (conv1, conv1));
        // conv2: 64 maps of 13x13 over 16 of the 32 input maps (two groups); backward also
        // computes the input gradient.
        let conv2 = 2 * 2 * 64 * 13 * 13 * 16 * 9;
        assert_eq!(flops("conv2 "), (conv2, 2 * conv2));
        // conv4 and conv5 at 6x6 over 48 maps per group.
        assert_eq!(flops("conv5 ").0, 2 * 2 * 64 * 6 * 6 * 48 * 9);
        // fc6: 256 inputs (64 maps of 2x2) to 256 outputs.
        assert_eq!(flops("fc6 "), (2 * 2 * 256 * 256, 2 * 2 * 2 * 256 * 256));
        assert_eq!(flops("fc8 ").0, 2 * 2 * 256 * 10);
        // Memory-bound rows count bytes, not FLOPs: the ReLU after conv1 reads and writes
        // 2 x 32 x 28 x 28 floats.
        let relu = p.rows.iter().find(|r| r.name == "Relu").unwrap().forward.unwrap();
        assert_eq!((relu.flops, relu.bytes), (0, 2 * 4 * 2 * 32 * 28 * 28));
        // The whole forward is the architecture's count.
        let forward: u64 = p.rows.iter().filter_map(|r| r.forward).map(|t| t.flops).sum();
        assert_eq!(forward, 2 * model.arch.forward_flops());
    }

    #[test]
    fn inference_rows_have_no_backward() {
        let backend = Arc::new(CpuBackend::with_threads(1).unwrap());
        let arch = Architecture::default_for(Preset::Mini).unwrap();
        let mut model = Model::init(arch, backend.clone(), InitScheme::He, 3).unwrap();
        let mut tape = Tape::inference(backend);
        let p = profile_inference(&mut model, &mut tape, &[0.25; 4 * 28 * 28], [4, 1, 28, 28]).unwrap();
        assert_eq!(p.rows.len(), model.arch.layers.len() + 1);
        assert!(p.rows.iter().all(|r| r.backward.is_none()));
        let dropout = p.rows.iter().find(|r| r.name.starts_with("Dropout")).unwrap();
        assert_eq!(dropout.forward.unwrap().bytes, 0, "inference dropout is the identity");
    }
}
