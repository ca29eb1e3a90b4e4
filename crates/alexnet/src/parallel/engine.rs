//! The engine a trainer drives: the model's replicas on their devices, one training step
//! at a time.

use std::sync::Arc;

use alexnet_autograd::{ParamKind, Tape};
use alexnet_core::{Backend, SgdStep};

use super::split::Split;
use super::sync::{DEFAULT_BUCKET_BYTES, ExchangeStats, GradientSync};
use super::{Collective, LocalGroup, Placement, share};
use crate::checkpoint::TensorMap;
use crate::error::{Error, Result};
use crate::metrics::TopK;
use crate::model::Model;
use crate::preset::Architecture;

/// One global batch, or this process's share of it (in a group of processes, each loads
/// only its own share).
pub(crate) struct StepInput<'a> {
    /// `[n, c, h, w]` images, row-major.
    pub(crate) images: &'a [f32],
    /// Their shape.
    pub(crate) shape: [usize; 4],
    /// Their labels.
    pub(crate) labels: &'a [usize],
    /// The step's dropout seed.
    pub(crate) dropout_seed: u64,
}

/// What a step measured over the whole global batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepOutput {
    /// Mean loss.
    pub(crate) loss: f32,
    /// Top-1 and top-5 counts of the logits.
    pub(crate) topk: TopK,
}

/// The model on its devices.
pub(crate) trait Engine: Send {
    /// The architecture.
    fn arch(&self) -> &Architecture;
    /// Forward and backward of one global batch; the gradients are ready for
    /// [`Engine::sgd_step`] (the loss is checked in between).
    fn forward_backward(&mut self, input: &StepInput<'_>) -> Result<StepOutput>;
    /// The SGD update on every device.
    fn sgd_step(&mut self, step: &SgdStep) -> Result<()>;
    /// Inference logits of `images` (`shape` = `[n, c, h, w]`), to the host.
    fn logits(&mut self, images: &[f32], shape: &[usize]) -> Result<Vec<f32>>;
    /// Parameters and state, as a checkpoint holds them.
    fn params_to_host(&self) -> Result<TensorMap>;
    /// Momentum buffers, as a checkpoint holds them.
    fn momentum_to_host(&self) -> Result<TensorMap>;
    /// The first device's gradient-exchange costs, when gradients are exchanged.
    fn exchange_stats(&self) -> Option<ExchangeStats>;
    /// Element-wise sums of `values` over the processes of a group (by default, an engine
    /// in one process: the values themselves).
    fn sum_over_processes(&mut self, _tag: &str, values: Vec<f32>) -> Result<Vec<f32>> {
        Ok(values)
    }
    /// Process 0's `values` (by default, one process: the values themselves): for checking
    /// that the processes of a group agree.
    fn values_of_process_0(&mut self, _tag: &str, values: &[u64]) -> Result<Vec<u64>> {
        Ok(values.to_vec())
    }
    /// Ends the group after this process failed, so that no other waits for it (over MPI
    /// this ends every process; by default, one process, nothing to end).
    fn abort(&mut self, _reason: &str) {}
}

/// Builds the engine for `placement` with parameters `params` (and momentum, when resuming),
/// holding the parameters named in `frozen` fixed (fine-tuning).
pub(crate) fn build_engine<B: Backend + 'static>(
    arch: &Architecture,
    placement: Placement<B>,
    params: &TensorMap,
    momentum: Option<&TensorMap>,
    frozen: &[String],
) -> Result<Box<dyn Engine>> {
    let replica = |backend: Arc<B>| -> Result<Replica<B>> {
        let mut model = Model::from_params(arch.clone(), backend.clone(), params)?;
        if let Some(m) = momentum {
            model.store.load_momentum_from_host(m)?;
        }
        for name in frozen {
            model.store.set_frozen(name, true)?;
        }
        Ok(Replica { model, tape: Tape::train(backend), sync: None })
    };
    let distributed = matches!(placement, Placement::Distributed { .. });
    let (replicas, groups): (Vec<Replica<B>>, Vec<Box<dyn Collective>>) = match placement {
        Placement::Single(backend) => (vec![replica(backend)?], Vec::new()),
        Placement::Data(backends) => {
            if backends.is_empty() {
                return Err(Error::config("data parallelism needs at least one device"));
            }
            check_alike(&backends)?;
            let members = LocalGroup::members(backends.len());
            let replicas = backends.into_iter().map(replica).collect::<Result<Vec<_>>>()?;
            (replicas, members.into_iter().map(|m| Box::new(m) as Box<dyn Collective>).collect())
        }
        Placement::Distributed { backend, mut group } => match replica(backend) {
            Ok(rep) => (vec![rep], vec![group]),
            Err(e) => {
                group.abort(&e.to_string());
                return Err(e);
            }
        },
        Placement::Split(backends) => {
            check_alike(&backends)?;
            return Ok(Box::new(Split::new(arch, backends, params, momentum)?));
        }
    };
    let mut engine =
        Replicas { eval: Tape::inference(replicas[0].model.store.backend().clone()), replicas, distributed };
    if !groups.is_empty() {
        for (rep, group) in engine.replicas.iter_mut().zip(groups) {
            rep.sync = Some(GradientSync::new(&rep.model.store, group, DEFAULT_BUCKET_BYTES)?);
        }
    }
    if distributed {
        // Processes built their replicas apart: start them from participant 0's values.
        engine.for_each(|rep| rep.broadcast_entries(true)).inspect_err(|e| engine.abort(&e.to_string()))?;
    }
    Ok(Box::new(engine))
}

/// Refuses devices of one run whose capabilities differ: every device gets an equal share of
/// the work, so a slower device would set the pace and a smaller one the memory limit.
fn check_alike<B: Backend>(backends: &[Arc<B>]) -> Result<()> {
    let Some(first) = backends.first().map(|b| b.capabilities()) else { return Ok(()) };
    for (index, backend) in backends.iter().enumerate().skip(1) {
        let other = backend.capabilities();
        if other != first {
            return Err(Error::DevicesDiffer { index, first: first.to_string(), other: other.to_string() });
        }
    }
    Ok(())
}

/// One copy of the model on one device.
struct Replica<B: Backend> {
    model: Model<B>,
    tape: Tape<B>,
    /// The gradient exchange, when the model is replicated.
    sync: Option<GradientSync>,
}

impl<B: Backend> Replica<B> {
    /// This replica's share of the batch: forward, backward, and the gradient exchange.
    /// `input_is_share`: `input` holds only this participant's share (processes load their
    /// own), else the whole batch.
    fn step(&mut self, input: &StepInput<'_>, input_is_share: bool) -> Result<StepOutput> {
        let [given, c, h, w] = input.shape;
        let sample_len = c * h * w;
        let (start, n, batch, images, labels) = match self.sync.as_ref() {
            Some(sync) if input_is_share => {
                // The shares' sizes (skipped samples make them uneven) give this share's
                // position in the batch, as one process would have assembled it.
                let mut counts = vec![0.0; sync.size()];
                counts[sync.rank()] = given as f32;
                let counts = sync.sum("batch shares", counts)?;
                let start = counts[..sync.rank()].iter().sum::<f32>() as usize;
                (start, given, counts.iter().sum::<f32>() as usize, input.images, input.labels)
            }
            _ => {
                let (rank, size) = self.sync.as_ref().map_or((0, 1), |s| (s.rank(), s.size()));
                let (start, end) = share(given, rank, size);
                let images = &input.images[start * sample_len..end * sample_len];
                (start, end - start, given, images, &input.labels[start..end])
            }
        };
        let mut local = StepOutput::default();
        if batch == 0 {
            // Every share is empty (all samples skipped): no step, as one process takes none.
            return Ok(local);
        }
        if n > 0 {
            let sync = self.sync.as_mut();
            let summary = self.model.forward_backward_part(
                &mut self.tape,
                images,
                &[n, c, h, w],
                labels,
                input.dropout_seed,
                start as u64,
                |tape, loss, store| match sync {
                    None => Ok(tape.backward(loss, store)?),
                    Some(sync) => {
                        // Each share's mean, weighted by its size, sums to the batch mean.
                        let weighted = tape.scale(loss, n as f32 / batch as f32)?;
                        tape.backward_notify(weighted, store, |store, id| sync.ready(store, id))
                    }
                },
            )?;
            local.loss = summary.mean_loss;
            local.topk.add_counts(n, summary.top1_correct, summary.top5_correct);
        } else if let Some(sync) = self.sync.as_mut() {
            sync.contribute_zeros(&mut self.model.store)?;
        }
        let Some(sync) = self.sync.as_mut() else { return Ok(local) };
        sync.finish(&mut self.model.store)?;
        let t = &local.topk;
        let sums = sync.sum(
            "metrics",
            vec![local.loss * n as f32, t.count as f32, t.top1_correct as f32, t.top5_correct as f32],
        )?;
        Ok(StepOutput {
            loss: sums[0] / batch as f32,
            topk: TopK { count: sums[1] as u64, top1_correct: sums[2] as u64, top5_correct: sums[3] as u64 },
        })
    }

    /// Replaces state buffers (and, with `everything`, parameters and momentum) by
    /// participant 0's, so replicas stay equal.
    fn broadcast_entries(&mut self, everything: bool) -> Result<()> {
        let Some(sync) = self.sync.as_ref() else { return Ok(()) };
        let store = &mut self.model.store;
        let names: Vec<String> = store
            .names()
            .filter(|n| everything || store.id(n).and_then(|id| store.kind(id)).is_ok_and(|k| k == ParamKind::State))
            .map(str::to_string)
            .collect();
        for name in names {
            let value = sync.broadcast(&name, 0, store.value_to_host(&name)?)?;
            store.set_value_from_host(&name, &value)?;
        }
        if everything {
            let momentum = store.momentum_to_host_map()?;
            let mut synced = Vec::with_capacity(momentum.len());
            for (name, mut t) in momentum {
                t.data = sync.broadcast(&format!("{name}.momentum"), 0, t.data)?;
                synced.push((name, t));
            }
            store.load_momentum_from_host(&synced)?;
        }
        Ok(())
    }
}

/// Data parallelism (one replica, or several on this process's devices).
struct Replicas<B: Backend> {
    replicas: Vec<Replica<B>>,
    /// Inference tape on the first replica's device.
    eval: Tape<B>,
    /// This process is one of a group of processes (one replica, inputs are its shares).
    distributed: bool,
}

impl<B: Backend> Replicas<B> {
    /// Runs `f` on every replica at once (the first on this thread), since the replicas
    /// meet in collective calls. A replica that fails breaks the group so that no other
    /// waits for it; the first failure is returned, naming its device.
    fn for_each<T: Send>(&mut self, f: impl Fn(&mut Replica<B>) -> Result<T> + Sync) -> Result<Vec<T>> {
        if self.replicas.len() == 1 {
            return Ok(vec![f(&mut self.replicas[0])?]);
        }
        let run = |rep: &mut Replica<B>| {
            let result = f(rep);
            if let (Err(e), Some(sync)) = (&result, rep.sync.as_mut()) {
                sync.abort(&e.to_string());
            }
            result
        };
        let results: Vec<Result<T>> = std::thread::scope(|scope| {
            let (first, rest) = self.replicas.split_first_mut().expect("at least one replica");
            let handles: Vec<_> = rest.iter_mut().map(|rep| scope.spawn(|| run(rep))).collect();
            let mut results = vec![run(first)];
            results.extend(
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(Error::config("a replica's thread panicked")))),
            );
            results
        });
        // Report the root cause, not the others' "member failed" that it caused.
        let first_error = results
            .iter()
            .position(|r| matches!(r, Err(e) if !matches!(e, Error::Collective { .. })))
            .or_else(|| results.iter().position(Result::is_err));
        match first_error {
            None => Ok(results.into_iter().map(|r| r.expect("no error")).collect()),
            Some(i) => {
                let name = self.replicas[i].model.store.backend().name();
                let source = results.into_iter().nth(i).expect("index").err().expect("an error");
                Err(Error::Device { index: i, name, source: Box::new(source) })
            }
        }
    }
}

impl<B: Backend + 'static> Engine for Replicas<B> {
    fn arch(&self) -> &Architecture {
        &self.replicas[0].model.arch
    }

    fn forward_backward(&mut self, input: &StepInput<'_>) -> Result<StepOutput> {
        let distributed = self.distributed;
        Ok(self.for_each(|rep| rep.step(input, distributed))?[0])
    }

    fn sgd_step(&mut self, step: &SgdStep) -> Result<()> {
        self.for_each(|rep| {
            rep.model.store.sgd_step(step)?;
            rep.broadcast_entries(false)
        })?;
        Ok(())
    }

    fn logits(&mut self, images: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        let model = &mut self.replicas[0].model;
        self.eval.reset();
        let x = self.eval.input(images, shape)?;
        let logits = model.forward(&mut self.eval, x, 0)?;
        let host = self.eval.to_host(logits)?;
        // Hand the parameters back, or the next SGD step finds them in use.
        self.eval.reset();
        Ok(host)
    }

    fn params_to_host(&self) -> Result<TensorMap> {
        self.replicas[0].model.params_to_host()
    }

    fn momentum_to_host(&self) -> Result<TensorMap> {
        Ok(self.replicas[0].model.store.momentum_to_host_map()?)
    }

    fn exchange_stats(&self) -> Option<ExchangeStats> {
        self.replicas[0].sync.as_ref().map(GradientSync::stats)
    }

    fn sum_over_processes(&mut self, tag: &str, values: Vec<f32>) -> Result<Vec<f32>> {
        match &self.replicas[0].sync {
            Some(sync) if self.distributed => sync.sum(tag, values),
            _ => Ok(values),
        }
    }

    fn values_of_process_0(&mut self, tag: &str, values: &[u64]) -> Result<Vec<u64>> {
        let Some(sync) = self.replicas[0].sync.as_ref().filter(|_| self.distributed) else {
            return Ok(values.to_vec());
        };
        // In 16-bit pieces, which f32 holds exactly.
        let pieces: Vec<f32> =
            values.iter().flat_map(|v| (0..4).map(move |i| ((v >> (16 * i)) & 0xffff) as f32)).collect();
        let pieces = sync.broadcast(tag, 0, pieces)?;
        Ok(pieces.chunks_exact(4).map(|p| p.iter().rev().fold(0u64, |v, &piece| (v << 16) | piece as u64)).collect())
    }

    fn abort(&mut self, reason: &str) {
        for rep in &mut self.replicas {
            if let Some(sync) = rep.sync.as_mut() {
                sync.abort(reason);
            }
        }
    }
}

/// A model on its devices ([`Placement`]), one training step or inference batch at a time,
/// without the [`crate::Trainer`]'s data, schedules and files: for benchmarks and custom
/// loops.
///
/// ```
/// use std::sync::Arc;
/// use alexnet::parallel::{Placement, PlacedModel};
/// use alexnet::{Architecture, InitScheme, Preset, init::init_params};
/// use alexnet_autograd::CpuBackend;
/// use alexnet_core::SgdStep;
///
/// let arch = Architecture::default_for(Preset::Mini)?.with_lrn_groups(2)?;
/// let params = init_params(&arch, InitScheme::He, 1);
/// let devices = vec![Arc::new(CpuBackend::with_threads(1)?), Arc::new(CpuBackend::with_threads(1)?)];
/// let mut split = PlacedModel::new(&arch, Placement::Split(devices), &params)?;
/// let images = vec![0.5; 2 * 28 * 28];
/// let sgd = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
/// let loss = split.train_step(&images, [2, 1, 28, 28], &[3, 7], 0, &sgd)?;
/// assert!(loss.is_finite());
/// assert_eq!(split.logits(&images, &[2, 1, 28, 28])?.len(), 2 * 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct PlacedModel {
    engine: Box<dyn Engine>,
}

impl PlacedModel {
    /// `arch` with parameters `params` (one device's names and layouts) on `placement`.
    pub fn new<B: Backend + 'static>(arch: &Architecture, placement: Placement<B>, params: &TensorMap) -> Result<Self> {
        Ok(Self { engine: build_engine(arch, placement, params, None, &[])? })
    }

    /// The architecture.
    pub fn arch(&self) -> &Architecture {
        self.engine.arch()
    }

    /// Forward, backward and SGD update of one global batch (`shape` = `[n, c, h, w]`);
    /// returns the mean loss. Dropout draws from `dropout_seed`.
    pub fn train_step(
        &mut self,
        images: &[f32],
        shape: [usize; 4],
        labels: &[usize],
        dropout_seed: u64,
        step: &SgdStep,
    ) -> Result<f32> {
        if images.len() != shape.iter().product::<usize>() || labels.len() != shape[0] {
            return Err(Error::config(format!(
                "{} image values and {} labels for a batch of shape {shape:?}",
                images.len(),
                labels.len()
            )));
        }
        let out = self.engine.forward_backward(&StepInput { images, shape, labels, dropout_seed })?;
        self.engine.sgd_step(step)?;
        Ok(out.loss)
    }

    /// Inference logits `[n, classes]` of `images` (`shape` = `[n, c, h, w]`).
    pub fn logits(&mut self, images: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
        self.engine.logits(images, shape)
    }

    /// Parameters (and state) as one device holds them.
    pub fn params_to_host(&self) -> Result<TensorMap> {
        self.engine.params_to_host()
    }

    /// What exchanges between devices cost so far (`None` on one device).
    pub fn exchange_stats(&self) -> Option<ExchangeStats> {
        self.engine.exchange_stats()
    }
}
