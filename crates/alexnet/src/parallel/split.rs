//! The paper's model split (its Figure 2): each of two devices holds half of every layer's
//! kernels and neurons, and activations cross between the devices only where a layer is
//! connected to both halves of the one before.
//!
//! The plan follows from the layer list. Device `d` holds output channels (or features)
//! `d * out / 2 .. (d + 1) * out / 2` of every convolution and dense layer: rows of every
//! weight and bias along dim 0, so the parameter names and layouts are those of one device.
//! A convolution with `groups = 2` (conv2, conv4, conv5) reads only its own device's maps;
//! conv1 reads the whole image, which both devices receive; a convolution with one group
//! (conv3) and every dense layer (fc6, fc7, fc8) read both halves. Before such a layer the
//! devices exchange: both halves are concatenated and each device gets the whole; in the
//! backward pass the two devices' input gradients are summed and each takes its half. The
//! layers between two exchanges are a *stage*, recorded on one tape per device and stage.
//! fc8's two halves of logits are concatenated for the softmax cross-entropy (on device 0).
//!
//! LRN normalises within one device's channels, so the split needs LRN layers with two
//! channel groups (`lrn_groups = 2`, the `paper` preset's); dropout on a device's half of
//! fc6 and fc7 draws the masks one device draws for those features; batch normalisation
//! is refused (its statistics would span both devices).

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use alexnet_autograd::{ParamStore, Tape, Tensor};
use alexnet_core::{Backend, SgdStep, Shape4};

use super::Engine;
use super::engine::{StepInput, StepOutput};
use super::sync::{ExchangeStats, Exchanged};
use crate::checkpoint::TensorMap;
use crate::error::{Error, Result};
use crate::metrics::TopK;
use crate::model::{LayerPart, insert_param, match_params, record_layer};
use crate::preset::{Architecture, LayerSpec, ParamSpec, ResolvedLayer};

/// The number of devices of the split.
const DEVICES: usize = 2;

/// Layers between two exchanges.
#[derive(Debug, Clone, PartialEq)]
struct Stage {
    /// The network's layers this stage runs.
    layers: Range<usize>,
    /// Dims of one sample of the stage's input, as every device receives it whole
    /// (`[c, h, w]` for the images and convolutions, `[features]` for dense layers).
    input: Vec<usize>,
}

impl Stage {
    fn sample_len(&self) -> usize {
        self.input.iter().product()
    }

    fn batch_dims(&self, n: usize) -> Vec<usize> {
        std::iter::once(n).chain(self.input.iter().copied()).collect()
    }
}

/// The split of an architecture: stages, and every layer as a device runs its half (the
/// same for both devices; dropout learns which half it is from [`LayerPart`]).
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    stages: Vec<Stage>,
    layers: Vec<ResolvedLayer>,
}

/// Halves dim 0 of a parameter's dims.
fn halved(spec: &ParamSpec) -> ParamSpec {
    let mut half = spec.clone();
    half.dims[0] /= DEVICES;
    half
}

impl Plan {
    /// Splits `arch` in two, or says why it cannot be.
    fn new(arch: &Architecture) -> Result<Self> {
        let refuse = |layer: &ResolvedLayer, why: &str| {
            Err(Error::config(format!(
                "the model split cannot run {} (layer {}): {why}",
                arch.preset,
                layer.spec.label()
            )))
        };
        let mut stages: Vec<Stage> = Vec::new();
        let mut half_layers = Vec::with_capacity(arch.layers.len());
        // Whether the activations entering the current layer are split across the devices
        // (false: the whole input, which both devices hold).
        let mut split = false;
        for (i, layer) in arch.layers.iter().enumerate() {
            let whole_input = layer.input;
            let mut half = layer.clone();
            half.params = layer.params.iter().map(halved).collect();
            let half_channels = |s: Shape4| Shape4 { c: s.c / DEVICES, ..s };
            // A layer that reads both halves starts a stage, fed the whole input.
            let mut reads_whole = false;
            match &mut half.spec {
                LayerSpec::Conv { out_channels, groups, .. } => {
                    let geom = layer.conv.expect("resolved convolutions carry their geometry");
                    if !out_channels.is_multiple_of(DEVICES) {
                        return refuse(layer, "an odd number of output channels does not halve");
                    }
                    let in_channels = match (*groups, split) {
                        (1, _) => {
                            reads_whole = true;
                            geom.in_channels
                        }
                        (2, true) => geom.in_channels / DEVICES,
                        (2, false) => return refuse(layer, "a grouped convolution cannot read the whole input"),
                        (g, _) => return refuse(layer, &format!("{g} groups: each device holds one of 2")),
                    };
                    *out_channels /= DEVICES;
                    *groups = 1;
                    half.conv =
                        Some(alexnet_core::Conv2dGeom { in_channels, out_channels: *out_channels, groups: 1, ..geom });
                    half.input = Shape4 { c: in_channels, ..whole_input };
                }
                LayerSpec::Dense { out_features, .. } => {
                    if !out_features.is_multiple_of(DEVICES) {
                        return refuse(layer, "an odd number of outputs does not halve");
                    }
                    *out_features /= DEVICES;
                    reads_whole = true;
                }
                LayerSpec::Lrn { groups, .. } => {
                    if !groups.is_multiple_of(DEVICES) {
                        return refuse(
                            layer,
                            "its window spans both devices' channels; the split normalises each device's \
                             channels apart, as the paper's two GPUs did: set lrn_groups = 2 (--lrn-groups 2)",
                        );
                    }
                    *groups /= DEVICES;
                }
                LayerSpec::BatchNorm { .. } => {
                    return refuse(layer, "batch statistics would span both devices; use data parallelism");
                }
                LayerSpec::Activation { .. }
                | LayerSpec::MaxPool { .. }
                | LayerSpec::AdaptiveAvgPool { .. }
                | LayerSpec::Dropout { .. } => {}
                LayerSpec::Flatten => {}
            }
            if !reads_whole && !split {
                return refuse(layer, "the network must start with a convolution or a dense layer");
            }
            if !reads_whole {
                half.input = half_channels(whole_input);
            }
            half.output = half_channels(layer.output);
            if reads_whole {
                if let Some(last) = stages.last_mut() {
                    last.layers.end = i;
                }
                let input = match layer.spec {
                    LayerSpec::Dense { .. } => vec![whole_input.c],
                    _ => vec![whole_input.c, whole_input.h, whole_input.w],
                };
                stages.push(Stage { layers: i..arch.layers.len(), input });
            }
            split = true;
            half_layers.push(half);
        }
        if stages.is_empty() {
            return Err(Error::config(format!("the model split cannot run {}: it has no layers", arch.preset)));
        }
        Ok(Self { stages, layers: half_layers })
    }
}

/// One device's half of the network.
struct Half<B: Backend> {
    device: usize,
    store: ParamStore<B>,
    /// One training tape per stage, holding the stage's values from forward to backward.
    tapes: Vec<Tape<B>>,
    /// Each stage's input and output on its tape during a training step.
    ends: Vec<Option<(Tensor, Tensor)>>,
    /// The inference tape (one stage at a time).
    eval: Tape<B>,
}

impl<B: Backend> Half<B> {
    fn new(
        device: usize,
        backend: Arc<B>,
        arch: &Architecture,
        stages: usize,
        params: &TensorMap,
        momentum: Option<&TensorMap>,
    ) -> Result<Self> {
        let mut store = ParamStore::new(backend.clone());
        for (spec, t) in match_params(arch, params)? {
            let (dims, data) = device_share(device, &t.dims, &t.data);
            insert_param(&mut store, spec, &dims, data)?;
        }
        if let Some(momentum) = momentum {
            let shares: TensorMap = momentum
                .iter()
                .map(|(name, t)| {
                    let (dims, data) = device_share(device, &t.dims, &t.data);
                    (name.clone(), alexnet_autograd::HostTensor { dims, data: data.to_vec() })
                })
                .collect();
            store.load_momentum_from_host(&shares)?;
        }
        Ok(Self {
            device,
            store,
            tapes: (0..stages).map(|_| Tape::train(backend.clone())).collect(),
            ends: vec![None; stages],
            eval: Tape::inference(backend),
        })
    }

    /// Records `stage` (of the network `layers` at half width) on `tape` from the whole
    /// input `x` (`[n, ...]`); returns this device's half of the stage's output.
    #[allow(clippy::too_many_arguments)]
    fn record(
        tape: &mut Tape<B>,
        store: &mut ParamStore<B>,
        layers: &[ResolvedLayer],
        stage: &Stage,
        x: Tensor,
        dropout_seed: u64,
        device: usize,
    ) -> Result<Tensor> {
        let place = LayerPart { first_sample: 0, part: device, parts: DEVICES };
        let mut h = x;
        for i in stage.layers.clone() {
            h = record_layer(tape, store, &layers[i], i, h, dropout_seed, place)?;
        }
        Ok(h)
    }

    /// Forward of stage `s` from its whole input `whole` on the stage's training tape (the
    /// images for stage 0, which need no gradient); returns this device's output half and
    /// the seconds spent moving exchanged data (the upload of an exchanged input, the
    /// download of the output).
    fn train_forward(&mut self, s: usize, plan: &Plan, whole: &[f32], dropout_seed: u64) -> Result<(Vec<f32>, f64)> {
        let stage = &plan.stages[s];
        let dims = stage.batch_dims(whole.len() / stage.sample_len());
        let tape = &mut self.tapes[s];
        tape.reset();
        let upload = Instant::now();
        let x = if s == 0 { tape.input(whole, &dims)? } else { tape.variable(whole, &dims)? };
        let uploading = if s == 0 { 0.0 } else { upload.elapsed().as_secs_f64() };
        let y = Self::record(tape, &mut self.store, &plan.layers, stage, x, dropout_seed, self.device)?;
        self.ends[s] = Some((x, y));
        let (host, downloading) = download(tape, y, |tape, y| tape.to_host(y))?;
        Ok((host, uploading + downloading))
    }

    /// Backward of stage `s` from the gradient of this device's output half; returns the
    /// gradient of the stage's whole input (none for the images) and the seconds its
    /// download took.
    fn train_backward(&mut self, s: usize, seed: &[f32]) -> Result<(Option<Vec<f32>>, f64)> {
        let (x, y) = self.ends[s].take().expect("backward follows the stage's forward");
        let tape = &mut self.tapes[s];
        tape.backward_stage(y, seed, &mut self.store)?;
        if s == 0 {
            return Ok((None, 0.0));
        }
        let (grad, seconds) = download(tape, x, |tape, x| tape.grad_to_host(x))?;
        Ok((Some(grad.expect("a stage's input is a variable")), seconds))
    }

    /// Inference of stage `stage` from its whole input.
    fn eval_forward(&mut self, plan: &Plan, stage: &Stage, whole: &[f32]) -> Result<Vec<f32>> {
        let dims = stage.batch_dims(whole.len() / stage.sample_len());
        let tape = &mut self.eval;
        tape.reset();
        let x = tape.input(whole, &dims)?;
        let y = Self::record(tape, &mut self.store, &plan.layers, stage, x, 0, self.device)?;
        let host = tape.to_host(y)?;
        // Hand the parameters back, or the next SGD step finds them in use.
        tape.reset();
        Ok(host)
    }
}

/// `read(tape, t)` (a value or gradient to the host) once the device finished computing
/// it, with the seconds the copy itself took.
fn download<B: Backend, T>(
    tape: &Tape<B>,
    t: Tensor,
    read: impl FnOnce(&Tape<B>, Tensor) -> alexnet_autograd::Result<T>,
) -> Result<(T, f64)> {
    tape.backend().synchronize()?;
    let started = Instant::now();
    let host = read(tape, t)?;
    Ok((host, started.elapsed().as_secs_f64()))
}

/// Device `device`'s rows (dim 0) of a tensor of `dims`.
fn device_share<'a>(device: usize, dims: &[usize], data: &'a [f32]) -> (Vec<usize>, &'a [f32]) {
    let len = data.len() / DEVICES;
    let mut half = dims.to_vec();
    half[0] /= DEVICES;
    (half, &data[device * len..(device + 1) * len])
}

/// Both devices' halves of `n` samples side by side: per sample, device 0's part then
/// device 1's (the channel or feature order of one device).
fn concat_halves(halves: &[Vec<f32>; DEVICES], n: usize) -> Vec<f32> {
    let part = halves[0].len() / n.max(1);
    let mut whole = Vec::with_capacity(DEVICES * halves[0].len());
    for sample in 0..n {
        for half in halves {
            whole.extend_from_slice(&half[sample * part..(sample + 1) * part]);
        }
    }
    whole
}

/// Device `device`'s part of every sample of `whole` (`n` samples).
fn take_half(whole: &[f32], n: usize, device: usize) -> Vec<f32> {
    let part = whole.len() / (n.max(1) * DEVICES);
    (0..n).flat_map(|sample| &whole[(sample * DEVICES + device) * part..][..part]).copied().collect()
}

/// The model split over two devices.
pub(crate) struct Split<B: Backend> {
    arch: Architecture,
    plan: Plan,
    halves: [Half<B>; DEVICES],
    /// The softmax cross-entropy of the concatenated logits, on device 0.
    loss_tape: Tape<B>,
    /// An empty store for the loss tape's backward (the loss has no parameters).
    no_params: ParamStore<B>,
    /// What crossed between the devices.
    stats: ExchangeStats,
}

impl<B: Backend + 'static> Split<B> {
    /// The split of `arch` over `backends` (exactly two), from one device's parameters.
    pub(crate) fn new(
        arch: &Architecture,
        backends: Vec<Arc<B>>,
        params: &TensorMap,
        momentum: Option<&TensorMap>,
    ) -> Result<Self> {
        let Ok([first, second]) = <[Arc<B>; DEVICES]>::try_from(backends) else {
            return Err(Error::config(
                "the model split runs on exactly two devices (the paper's two GPUs); list two with --devices",
            ));
        };
        let plan = Plan::new(arch)?;
        let stages = plan.stages.len();
        let halves = [
            Half::new(0, first.clone(), arch, stages, params, momentum)?,
            Half::new(1, second, arch, stages, params, momentum)?,
        ];
        Ok(Self {
            arch: arch.clone(),
            plan,
            halves,
            loss_tape: Tape::train(first.clone()),
            no_params: ParamStore::new(first),
            stats: ExchangeStats { what: Exchanged::Activations, ..ExchangeStats::default() },
        })
    }
}

/// Runs `f` on both devices at once (device 0 on this thread); the first failure is
/// returned naming its device.
fn on_both<B: Backend, T: Send>(
    halves: &mut [Half<B>; DEVICES],
    f: impl Fn(&mut Half<B>) -> Result<T> + Sync,
) -> Result<[T; DEVICES]> {
    let [first, second] = halves;
    let (a, b) = std::thread::scope(|scope| {
        let other = scope.spawn(|| f(second));
        let mine = f(first);
        (mine, other.join().unwrap_or_else(|_| Err(Error::config("a device's thread panicked"))))
    });
    let named = |half: &Half<B>, result: Result<T>| {
        result.map_err(|source| Error::Device {
            index: half.device,
            name: half.store.backend().name(),
            source: Box::new(source),
        })
    };
    Ok([named(first, a)?, named(second, b)?])
}

impl<B: Backend + 'static> Engine for Split<B> {
    fn arch(&self) -> &Architecture {
        &self.arch
    }

    fn forward_backward(&mut self, input: &StepInput<'_>) -> Result<StepOutput> {
        let n = input.shape[0];
        let classes = self.arch.classes;
        let plan = &self.plan;
        let last = plan.stages.len() - 1;
        // Bytes that one device sends the other, and seconds spent moving them.
        let mut bytes = 0;
        let mut moving = 0.0;
        // Forward, stage by stage: each device computes its half, the halves are joined and
        // both devices get the whole.
        let mut whole = input.images.to_vec();
        for s in 0..=last {
            let [(out0, t0), (out1, t1)] =
                on_both(&mut self.halves, |half| half.train_forward(s, plan, &whole, input.dropout_seed))?;
            let joining = Instant::now();
            whole = concat_halves(&[out0, out1], n);
            moving += t0.max(t1) + joining.elapsed().as_secs_f64();
            // Each device's half to the other; after the last stage, device 1's half of the
            // logits to the loss on device 0.
            bytes += if s < last { whole.len() } else { whole.len() / DEVICES };
        }
        // The loss over the whole logits, on device 0.
        let tape = &mut self.loss_tape;
        tape.reset();
        let logits = tape.variable(&whole, &[n, classes])?;
        let loss = tape.softmax_cross_entropy(logits, input.labels)?;
        let value = tape.scalar(loss)?;
        tape.backward(loss, &mut self.no_params)?;
        let mut upstream = tape.grad_to_host(logits)?.expect("the logits are a variable");
        let mut topk = TopK::default();
        topk.add_batch(&whole, input.labels, classes);
        // Device 1's half of the logits' gradient back to it.
        bytes += upstream.len() / DEVICES;
        // Backward, stage by stage: each device takes its half of its output's gradient;
        // the two devices' gradients of the stage input are summed (each device sends the
        // other the other's half).
        for s in (0..=last).rev() {
            let grads =
                on_both(&mut self.halves, |half| half.train_backward(s, &take_half(&upstream, n, half.device)))?;
            let [(Some(g0), t0), (Some(g1), t1)] = grads else { break };
            let summing = Instant::now();
            upstream = g0.iter().zip(&g1).map(|(a, b)| a + b).collect();
            moving += t0.max(t1) + summing.elapsed().as_secs_f64();
            bytes += upstream.len();
        }
        self.stats.steps += 1;
        self.stats.bytes_per_step = 4 * bytes as u64;
        self.stats.wait_seconds += moving;
        Ok(StepOutput { loss: value, topk })
    }

    fn sgd_step(&mut self, step: &SgdStep) -> Result<()> {
        on_both(&mut self.halves, |half| Ok(half.store.sgd_step(step)?))?;
        Ok(())
    }

    fn logits(&mut self, images: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        let n = shape.first().copied().unwrap_or(0);
        let plan = &self.plan;
        let expected = plan.stages[0].batch_dims(n);
        if shape != expected.as_slice() || images.len() != expected.iter().product::<usize>() {
            return Err(Error::config(format!(
                "{} values of shape {shape:?}; the model takes images of shape {expected:?}",
                images.len()
            )));
        }
        let mut whole = images.to_vec();
        for stage in &plan.stages {
            let [a, b] = on_both(&mut self.halves, |half| half.eval_forward(plan, stage, &whole))?;
            whole = concat_halves(&[a, b], n);
        }
        Ok(whole)
    }

    fn params_to_host(&self) -> Result<TensorMap> {
        let [a, b] = &self.halves;
        join_maps(a.store.to_host_map()?, b.store.to_host_map()?)
    }

    fn momentum_to_host(&self) -> Result<TensorMap> {
        let [a, b] = &self.halves;
        join_maps(a.store.momentum_to_host_map()?, b.store.momentum_to_host_map()?)
    }

    fn exchange_stats(&self) -> Option<ExchangeStats> {
        Some(self.stats)
    }
}

/// One device's tensors from both devices' rows.
fn join_maps(first: TensorMap, second: TensorMap) -> Result<TensorMap> {
    first
        .into_iter()
        .zip(second)
        .map(|((name, mut a), (other, b))| {
            assert_eq!(name, other, "both devices hold the same parameters in one order");
            a.dims[0] *= DEVICES;
            a.data.extend_from_slice(&b.data);
            Ok((name, a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::init_params;
    use crate::parallel::{Placement, build_engine};
    use crate::preset::{InitScheme, Preset};
    use alexnet_autograd::CpuBackend;

    fn cpu() -> Arc<CpuBackend> {
        Arc::new(CpuBackend::with_threads(1).unwrap())
    }

    #[test]
    fn the_paper_net_splits_where_figure_2_crosses() {
        let arch = Architecture::default_for(Preset::Paper).unwrap();
        let plan = Plan::new(&arch).unwrap();
        let starts: Vec<String> = plan.stages.iter().map(|s| arch.layers[s.layers.start].spec.label()).collect();
        assert_eq!(
            starts,
            ["conv1 (Conv 11x11/4, g1)", "conv3 (Conv 3x3/1, g1)", "fc6 (Dense)", "fc7 (Dense)", "fc8 (Dense)"]
        );
        let inputs: Vec<Vec<usize>> = plan.stages.iter().map(|s| s.input.clone()).collect();
        assert_eq!(inputs, [vec![3, 227, 227], vec![256, 13, 13], vec![9216], vec![4096], vec![4096]]);
        assert_eq!(plan.stages.last().unwrap().layers.end, arch.layers.len());
        // Each device's convolutions: (input channels, output channels), one group each.
        let convs: Vec<(usize, usize, usize)> =
            plan.layers.iter().filter_map(|l| l.conv).map(|g| (g.in_channels, g.out_channels, g.groups)).collect();
        assert_eq!(convs, [(3, 48, 1), (48, 128, 1), (256, 192, 1), (192, 192, 1), (192, 128, 1)]);
        let lrn: Vec<usize> = plan
            .layers
            .iter()
            .filter_map(|l| match l.spec {
                LayerSpec::Lrn { groups, .. } => Some(groups),
                _ => None,
            })
            .collect();
        assert_eq!(lrn, [1, 1], "each device normalises its own 48 and 128 maps");
        let half: usize = plan.layers.iter().flat_map(|l| &l.params).map(ParamSpec::numel).sum();
        assert_eq!(2 * half, arch.trainable_params());
        let fc8 = plan.layers.last().unwrap();
        assert_eq!(fc8.params[0].dims, [500, 4096]);
    }

    #[test]
    fn networks_the_split_cannot_run_are_refused_with_the_reason() {
        let refusal = |arch: Architecture| Plan::new(&arch).unwrap_err().to_string();
        let caffenet = Architecture::default_for(Preset::Caffenet).unwrap();
        let msg = refusal(caffenet.clone());
        assert!(msg.contains("LRN") && msg.contains("lrn_groups = 2"), "{msg}");
        assert!(Plan::new(&caffenet.with_lrn_groups(2).unwrap()).is_ok());
        let msg = refusal(Architecture::default_for(Preset::KerasBn).unwrap());
        assert!(msg.contains("batch statistics"), "{msg}");
        let odd = Architecture::new(Preset::Mini, [1, 28, 28], 7).unwrap().with_lrn_groups(2).unwrap();
        let msg = refusal(odd);
        assert!(msg.contains("fc8") && msg.contains("odd number of outputs"), "{msg}");
    }

    #[test]
    fn halves_join_and_part_per_sample() {
        let halves = [vec![1.0, 2.0, 5.0, 6.0], vec![3.0, 4.0, 7.0, 8.0]];
        let whole = concat_halves(&halves, 2);
        assert_eq!(whole, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(take_half(&whole, 2, 0), halves[0]);
        assert_eq!(take_half(&whole, 2, 1), halves[1]);
        let (dims, data) = device_share(1, &[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
        assert_eq!((dims, data), (vec![2, 2], &[4.0, 5.0, 6.0, 7.0][..]));
    }

    /// Max |a - b| over max |a|.
    fn max_relative(a: &[f32], b: &[f32]) -> f32 {
        let scale = a.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
        a.iter().zip(b).fold(0.0f32, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The `paper` preset itself (at 67x67, the smallest input its layers close on, so that
    /// the test is quick): the split's logits equal one device's, and three training steps
    /// with dropout track one device's in loss, weights and momentum.
    #[test]
    fn the_paper_net_split_tracks_one_device() {
        let arch = Architecture::new(Preset::Paper, [3, 67, 67], 1000).unwrap();
        let params = init_params(&arch, InitScheme::Paper, 5);
        let mut single = build_engine(&arch, Placement::Single(cpu()), &params, None, &[]).unwrap();
        let mut split = build_engine(&arch, Placement::Split(vec![cpu(), cpu()]), &params, None, &[]).unwrap();
        let n = 4;
        let images: Vec<f32> =
            (0..n * 3 * 67 * 67).map(|i| alexnet_core::rng::uniform(9, i as u64) * 2.0 - 1.0).collect();
        let shape = [n, 3, 67, 67];
        let want = single.logits(&images, &shape).unwrap();
        let got = split.logits(&images, &shape).unwrap();
        assert!(max_relative(&want, &got) <= 1e-5, "logits differ by {:e}", max_relative(&want, &got));

        let labels = [3, 999, 500, 499];
        let sgd = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
        for step in 0..3 {
            let input = StepInput { images: &images, shape, labels: &labels, dropout_seed: 100 + step };
            let a = single.forward_backward(&input).unwrap();
            let b = split.forward_backward(&input).unwrap();
            assert!((a.loss - b.loss).abs() <= 1e-4 * a.loss.abs(), "step {step}: loss {} vs {}", a.loss, b.loss);
            assert_eq!((a.topk.top1_correct, a.topk.top5_correct), (b.topk.top1_correct, b.topk.top5_correct));
            single.sgd_step(&sgd).unwrap();
            split.sgd_step(&sgd).unwrap();
        }
        for (mine, theirs) in [
            (single.params_to_host().unwrap(), split.params_to_host().unwrap()),
            (single.momentum_to_host().unwrap(), split.momentum_to_host().unwrap()),
        ] {
            assert_eq!(mine.len(), theirs.len());
            for ((name, a), (other, b)) in mine.iter().zip(&theirs) {
                assert_eq!((name, &a.dims), (other, &b.dims));
                let rel = max_relative(&a.data, &b.data);
                assert!(rel <= 1e-4, "{name} differs by {rel:e}");
            }
        }
        // conv3, fc6, fc7: each device's half of the activations to the other, forward, and
        // of the input gradients, backward; fc8: device 1's logits and their gradient.
        let stats = split.exchange_stats().unwrap();
        let per_sample = 2 * (256 * 3 * 3 + 256 + 4096 + 4096) + 1000;
        assert_eq!(
            (stats.what, stats.steps, stats.bytes_per_step),
            (Exchanged::Activations, 3, (4 * n * per_sample) as u64)
        );
        assert!(!stats.to_string().contains("all-reduce"), "{stats}");
    }
}
