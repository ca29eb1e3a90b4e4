//! The tape: values of one forward pass, the record of its ops, and the reverse walk.

use std::sync::Arc;
use std::time::Instant;

use alexnet_core::{Backend, XENT_SUMMARY_LEN, XentSummary};

use crate::buffer_pool::{BufferPool, PoolStats};
use crate::error::{AutogradError, Result};
use crate::grad::{Op, backward_node};
use crate::params::{ParamId, ParamKind, ParamStore, check_host};
use crate::tensor::{Dims, Tensor};

/// Whether a tape records ops for a backward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Records every op; dropout drops, batch norm uses and updates batch statistics.
    Train,
    /// Records nothing and keeps no backward state; dropout is the identity, batch norm
    /// uses the running statistics.
    Inference,
}

/// Where a node's value lives.
pub(crate) enum Value<B: Backend> {
    /// A buffer of the tape (from its pool).
    Owned(B::Buffer),
    /// A parameter's value, shared with the store for the duration of the pass.
    Param(Arc<B::Buffer>),
    /// The same elements as an earlier node (reshape, identity dropout).
    Alias(usize),
    /// A parameter reference handed back to the store after backward.
    Released,
}

/// One tensor on the tape with the op that produced it.
pub(crate) struct Node<B: Backend> {
    pub(crate) value: Value<B>,
    pub(crate) dims: Dims,
    pub(crate) requires_grad: bool,
    pub(crate) op: Op<B>,
}

/// The value buffer of node `i`, following aliases.
pub(crate) fn node_value<B: Backend>(nodes: &[Node<B>], mut i: usize) -> Result<&B::Buffer> {
    loop {
        match &nodes[i].value {
            Value::Owned(b) => return Ok(b),
            Value::Param(b) => return Ok(b),
            Value::Alias(j) => i = *j,
            Value::Released => return Err(AutogradError::Released { id: i }),
        }
    }
}

/// Seconds spent on each tensor of a timed tape ([`Tape::set_timing`]), indexed in the order
/// the tensors were made ([`Tape::len`] just before an op is the index of its tensor).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeTimes {
    /// Forward: from the end of the previous op (or the reset) to the end of this one, the
    /// device's work included; so the forward times of a pass sum to its whole time.
    pub forward: Vec<f64>,
    /// Backward: this tensor's step of the reverse walk (its op's gradient kernels, summing
    /// into its inputs' gradients, handing a parameter's gradient to the store), the device's
    /// work included; zero for tensors the walk did not reach.
    pub backward: Vec<f64>,
}

/// The clock of a timed tape.
struct Timing {
    times: NodeTimes,
    /// The end of the previous op.
    mark: Instant,
    /// The first failure to wait for the device (reported by [`Tape::node_times`]).
    error: Option<AutogradError>,
}

impl Timing {
    fn new() -> Self {
        Self { times: NodeTimes::default(), mark: Instant::now(), error: None }
    }

    /// Waits for `backend`'s queued work and returns the seconds since the mark, moving it.
    fn lap<B: Backend>(&mut self, backend: &B) -> f64 {
        if let Err(e) = backend.synchronize()
            && self.error.is_none()
        {
            self.error = Some(e.into());
        }
        let now = Instant::now();
        let seconds = now.duration_since(self.mark).as_secs_f64();
        self.mark = now;
        seconds
    }
}

/// A recording of one forward pass on a backend.
///
/// Ops are methods returning a [`Tensor`] handle (see the op list in the crate docs). Every
/// value is kept until [`Tape::reset`], which returns all buffers to the tape's
/// [`BufferPool`]: a training loop that keeps one tape and resets it every step allocates
/// no new buffers after the first step.
///
/// ```
/// use std::sync::Arc;
/// use alexnet_autograd::{CpuBackend, ParamStore, Tape};
///
/// let backend = Arc::new(CpuBackend::new());
/// let mut store = ParamStore::new(backend.clone());
/// store.insert("fc.weight", &[2, 3], &[1.0, 0.0, -1.0, 0.5, 0.5, 0.5])?;
/// let mut tape = Tape::train(backend);
/// let x = tape.input(&[1.0, 2.0, 3.0], &[1, 3])?;
/// let w = tape.param(&store, "fc.weight")?;
/// let y = tape.linear(x, w, None)?;
/// assert_eq!(tape.to_host(y)?, vec![-2.0, 3.0]);
/// let loss = tape.mean(y)?;
/// tape.backward(loss, &mut store)?;
/// // d mean(W x) / dW[o, i] = x[i] / 2.
/// assert_eq!(store.grad_to_host("fc.weight")?, vec![0.5, 1.0, 1.5, 0.5, 1.0, 1.5]);
/// # Ok::<(), alexnet_autograd::AutogradError>(())
/// ```
pub struct Tape<B: Backend> {
    pub(crate) backend: Arc<B>,
    mode: Mode,
    pass: u64,
    pub(crate) nodes: Vec<Node<B>>,
    grads: Vec<Option<B::Buffer>>,
    pub(crate) pool: BufferPool<B>,
    store_id: Option<u64>,
    timing: Option<Timing>,
}

impl<B: Backend> Tape<B> {
    /// An empty tape in `mode`.
    pub fn new(backend: Arc<B>, mode: Mode) -> Self {
        Self {
            backend,
            mode,
            pass: 0,
            nodes: Vec::new(),
            grads: Vec::new(),
            pool: BufferPool::new(),
            store_id: None,
            timing: None,
        }
    }

    /// An empty training tape.
    pub fn train(backend: Arc<B>) -> Self {
        Self::new(backend, Mode::Train)
    }

    /// An empty inference tape: it records nothing.
    pub fn inference(backend: Arc<B>) -> Self {
        Self::new(backend, Mode::Inference)
    }

    /// The tape's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Resets the tape and switches it to `mode` (buffers stay pooled).
    pub fn set_mode(&mut self, mode: Mode) {
        self.reset();
        self.mode = mode;
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    /// Whether ops are recorded for backward.
    pub fn is_recording(&self) -> bool {
        self.mode == Mode::Train
    }

    /// Number of tensors on the tape.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tape holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Times every op from now on (`true`) or stops timing (`false`): after each op, forward
    /// and backward, the tape waits for the device ([`Backend::synchronize`]) and records the
    /// op's seconds ([`Tape::node_times`]). Waiting after every op slows a device that
    /// queues work; this is for profiling, not for training.
    pub fn set_timing(&mut self, on: bool) {
        self.timing = on.then(Timing::new);
    }

    /// Each tensor's forward and backward seconds in this pass, when timing is on
    /// ([`Tape::set_timing`]); an error if waiting for the device failed.
    pub fn node_times(&self) -> Result<Option<&NodeTimes>> {
        match &self.timing {
            None => Ok(None),
            Some(Timing { error: Some(e), .. }) => Err(e.clone()),
            Some(t) => Ok(Some(&t.times)),
        }
    }

    /// The buffer pool's counters (allocations stop growing in steady state).
    pub fn pool_stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Forgets every tensor, returning all buffers to the pool and every parameter reference
    /// to its store. Tensors of earlier passes become invalid (using one is an `Err`).
    pub fn reset(&mut self) {
        for node in self.nodes.drain(..) {
            if let Value::Owned(buf) = node.value {
                self.pool.give(&self.backend, buf);
            }
            for buf in node.op.into_buffers() {
                self.pool.give(&self.backend, buf);
            }
        }
        for buf in self.grads.drain(..).flatten() {
            self.pool.give(&self.backend, buf);
        }
        self.pass += 1;
        self.store_id = None;
        self.pool.begin_step();
        if self.timing.is_some() {
            self.timing = Some(Timing::new());
        }
    }

    /// The node index of `t`, checking it belongs to this pass.
    pub(crate) fn check(&self, t: Tensor) -> Result<usize> {
        if t.pass != self.pass || t.id >= self.nodes.len() {
            return Err(AutogradError::ForeignTensor {
                id: t.id,
                tensor_pass: t.pass,
                tape_pass: self.pass,
                len: self.nodes.len(),
            });
        }
        Ok(t.id)
    }

    /// Appends a node. In inference mode the op's saved buffers go straight back to the pool.
    pub(crate) fn push(&mut self, value: Value<B>, dims: Dims, requires_grad: bool, op: Op<B>) -> Tensor {
        let (requires_grad, op) = if self.is_recording() {
            (requires_grad, op)
        } else {
            for buf in op.into_buffers() {
                self.pool.give(&self.backend, buf);
            }
            (false, Op::Untracked)
        };
        let id = self.nodes.len();
        self.nodes.push(Node { value, dims, requires_grad, op });
        if let Some(timing) = self.timing.as_mut() {
            let seconds = timing.lap(&*self.backend);
            timing.times.forward.push(seconds);
        }
        Tensor { id, pass: self.pass, dims }
    }

    /// Whether any of `ids` needs a gradient.
    pub(crate) fn any_requires_grad(&self, ids: &[usize]) -> bool {
        ids.iter().any(|&i| self.nodes[i].requires_grad)
    }

    /// The value buffer of node `i`.
    pub(crate) fn buf(&self, i: usize) -> Result<&B::Buffer> {
        node_value(&self.nodes, i)
    }

    /// A pooled buffer of `len` elements, contents unspecified.
    pub(crate) fn take(&mut self, len: usize) -> Result<B::Buffer> {
        self.pool.take(&self.backend, len)
    }

    /// `host` in a pooled buffer.
    pub(crate) fn upload_pooled(&mut self, host: &[f32]) -> Result<B::Buffer> {
        let mut buf = self.take(host.len())?;
        self.backend.upload_into(host, &mut buf)?;
        Ok(buf)
    }

    /// A pooled copy of a buffer from outside the pool.
    fn adopt(&mut self, outside: &B::Buffer) -> Result<B::Buffer> {
        let mut buf = self.take(self.backend.len(outside))?;
        self.backend.copy(outside, &mut buf)?;
        Ok(buf)
    }

    fn leaf_from_host(&mut self, host: &[f32], dims: &[usize], requires_grad: bool) -> Result<Tensor> {
        let dims = check_host("Tape::input", dims, host.len())?;
        let buf = self.upload_pooled(host)?;
        Ok(self.push(Value::Owned(buf), dims, requires_grad, Op::Input))
    }

    /// A constant input (no gradient), e.g. a batch of images.
    pub fn input(&mut self, host: &[f32], dims: &[usize]) -> Result<Tensor> {
        self.leaf_from_host(host, dims, false)
    }

    /// An input whose gradient backward computes (read it with [`Tape::grad_to_host`]).
    pub fn variable(&mut self, host: &[f32], dims: &[usize]) -> Result<Tensor> {
        self.leaf_from_host(host, dims, true)
    }

    /// An input already on the device, copied into a pooled buffer (so that callers handing
    /// in a new buffer every step do not grow the pool).
    pub fn input_buffer(&mut self, buf: &B::Buffer, dims: &[usize], requires_grad: bool) -> Result<Tensor> {
        let dims = check_host("Tape::input_buffer", dims, self.backend.len(buf))?;
        let own = self.adopt(buf)?;
        Ok(self.push(Value::Owned(own), dims, requires_grad, Op::Input))
    }

    /// The trainable parameter `name` of `store` (its value is shared, not copied); a
    /// constant when it is frozen ([`ParamStore::set_frozen`]).
    pub fn param(&mut self, store: &ParamStore<B>, name: &str) -> Result<Tensor> {
        self.param_id(store, store.id(name)?)
    }

    /// The trainable parameter `id` of `store`.
    pub fn param_id(&mut self, store: &ParamStore<B>, id: ParamId) -> Result<Tensor> {
        match self.store_id {
            Some(s) if s != store.store_id() => return Err(AutogradError::ForeignStore { op: "Tape::param" }),
            _ => self.store_id = Some(store.store_id()),
        }
        let entry =
            store.entries.get(id.0).ok_or_else(|| AutogradError::UnknownParam { name: format!("#{}", id.0) })?;
        if entry.kind != ParamKind::Trainable {
            return Err(AutogradError::ParamKind {
                name: entry.name.clone(),
                expected: "a trainable parameter",
                actual: "a state buffer",
            });
        }
        Ok(self.push(Value::Param(Arc::clone(&entry.value)), entry.dims, !entry.frozen, Op::Param { id }))
    }

    /// The value buffer of `t`.
    pub fn value(&self, t: Tensor) -> Result<&B::Buffer> {
        self.buf(self.check(t)?)
    }

    /// `t`'s value copied to the host.
    pub fn to_host(&self, t: Tensor) -> Result<Vec<f32>> {
        let buf = self.value(t)?;
        let mut host = vec![0.0; t.numel()];
        self.backend.download(buf, &mut host)?;
        Ok(host)
    }

    /// The value of a one-element tensor (a loss).
    pub fn scalar(&self, t: Tensor) -> Result<f32> {
        if t.numel() != 1 {
            return Err(AutogradError::NotScalar { dims: t.dims.to_vec() });
        }
        Ok(self.to_host(t)?[0])
    }

    /// The [`XentSummary`] of a loss made by [`Tape::softmax_cross_entropy`] on a training
    /// tape: the mean loss and the batch's top-1/top-5 counts in one small read-back, which
    /// waits for the work queued so far (read it after `backward` to keep the device busy).
    /// An invalid label that the device recorded is an error here.
    pub fn xent_summary(&self, loss: Tensor) -> Result<XentSummary> {
        let i = self.check(loss)?;
        let Op::SoftmaxXent { summary, .. } = &self.nodes[i].op else {
            return Err(if self.is_recording() {
                AutogradError::InvalidDims { dims: loss.dims.to_vec(), reason: "not a softmax_cross_entropy loss" }
            } else {
                AutogradError::NotRecording { op: "xent_summary" }
            });
        };
        let mut host = [0.0; XENT_SUMMARY_LEN];
        self.backend.download(summary, &mut host)?;
        Ok(XentSummary::from_values(&host)?)
    }

    /// The gradient of an input or variable after backward (`None` when it needs none or
    /// backward did not reach it). Gradients of intermediate tensors are not kept.
    pub fn grad(&self, t: Tensor) -> Result<Option<&B::Buffer>> {
        let i = self.check(t)?;
        Ok(self.grads.get(i).and_then(Option::as_ref))
    }

    /// [`Tape::grad`] copied to the host.
    pub fn grad_to_host(&self, t: Tensor) -> Result<Option<Vec<f32>>> {
        let Some(buf) = self.grad(t)? else { return Ok(None) };
        let mut host = vec![0.0; t.numel()];
        self.backend.download(buf, &mut host)?;
        Ok(Some(host))
    }

    /// Backward from a one-element `loss` (seed 1): writes the gradient of every trainable
    /// parameter of `store` (zero for those the loss does not depend on) and keeps the
    /// gradients of inputs created with [`Tape::variable`].
    ///
    /// Ends the pass for the parameters: the tape hands their values back to the store, so
    /// [`ParamStore::sgd_step`] may follow; other values stay readable until `reset`.
    pub fn backward(&mut self, loss: Tensor, store: &mut ParamStore<B>) -> Result<()> {
        self.backward_notify(loss, store, |_, _| Ok(()))
    }

    /// [`Tape::backward`] that calls `ready(store, id)` as soon as trainable parameter `id`'s
    /// gradient is final, while the rest of the pass still runs: the moment a data-parallel
    /// trainer can start summing that gradient across replicas (reverse order of first use,
    /// so the last layers' gradients come first). Every trainable parameter is reported once.
    pub fn backward_notify<E: From<AutogradError>>(
        &mut self,
        loss: Tensor,
        store: &mut ParamStore<B>,
        ready: impl FnMut(&ParamStore<B>, ParamId) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        if loss.numel() != 1 {
            return Err(AutogradError::NotScalar { dims: loss.dims.to_vec() }.into());
        }
        let mut seed = self.take(1)?;
        self.backend.fill(&mut seed, 1.0).map_err(AutogradError::from)?;
        self.backward_from(loss, seed, store, true, ready)
    }

    /// Backward from any tensor with upstream gradient `seed` (same length).
    pub fn backward_with(&mut self, root: Tensor, seed: &[f32], store: &mut ParamStore<B>) -> Result<()> {
        check_host("Tape::backward_with", root.dims.as_slice(), seed.len())?;
        let seed = self.upload_pooled(seed)?;
        self.backward_from(root, seed, store, true, |_, _| Ok(()))
    }

    /// [`Tape::backward_with`] for one stage of a network recorded on several tapes that
    /// share `store` (a model split across devices records each run of layers between two
    /// exchanges on its own tape): writes the gradients of the parameters used on this tape
    /// and leaves every other parameter's gradient as it is, where `backward_with` would
    /// zero it.
    pub fn backward_stage(&mut self, root: Tensor, seed: &[f32], store: &mut ParamStore<B>) -> Result<()> {
        check_host("Tape::backward_stage", root.dims.as_slice(), seed.len())?;
        let seed = self.upload_pooled(seed)?;
        self.backward_from(root, seed, store, false, |_, _| Ok(()))
    }

    fn backward_from<E: From<AutogradError>>(
        &mut self,
        root: Tensor,
        seed: B::Buffer,
        store: &mut ParamStore<B>,
        zero_unused: bool,
        mut ready: impl FnMut(&ParamStore<B>, ParamId) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        if !self.is_recording() {
            self.pool.give(&self.backend, seed);
            return Err(AutogradError::NotRecording { op: "backward" }.into());
        }
        let root = match self.check(root) {
            Ok(r) => r,
            Err(e) => {
                self.pool.give(&self.backend, seed);
                return Err(e.into());
            }
        };
        if self.store_id.is_some_and(|s| s != store.store_id()) {
            self.pool.give(&self.backend, seed);
            return Err(AutogradError::ForeignStore { op: "backward" }.into());
        }
        for buf in self.grads.drain(..).flatten() {
            self.pool.give(&self.backend, buf);
        }
        self.grads.resize_with(self.nodes.len(), || None);
        self.grads[root] = Some(seed);

        // A parameter's gradient is final once the walk passes its first use on the tape.
        let mut first_use = vec![usize::MAX; store.len()];
        for (i, node) in self.nodes[..=root].iter().enumerate().rev() {
            if let Op::Param { id } = node.op {
                first_use[id.0] = i;
            }
        }
        let mut written = vec![false; store.len()];
        let mut contributions = Vec::new();
        if let Some(timing) = self.timing.as_mut() {
            timing.times.backward = vec![0.0; self.nodes.len()];
            timing.lap(&*self.backend);
        }
        for i in (0..=root).rev() {
            if let Some(dy) = self.grads[i].take() {
                self.backward_step(i, dy, store, &mut written, &mut contributions)?;
            }
            if let Op::Param { id } = self.nodes[i].op
                && first_use[id.0] == i
            {
                self.finish_param_grad(store, id, written[id.0])?;
                ready(store, id)?;
            }
            if let Some(timing) = self.timing.as_mut() {
                timing.times.backward[i] = timing.lap(&*self.backend);
            }
        }
        for (i, &first) in first_use.iter().enumerate() {
            let id = ParamId(i);
            if zero_unused && first == usize::MAX && store.entries[i].grad.is_some() {
                self.finish_param_grad(store, id, false)?;
                ready(store, id)?;
            }
        }
        for node in &mut self.nodes {
            if matches!(node.value, Value::Param(_)) {
                node.value = Value::Released;
            }
        }
        Ok(())
    }

    /// Zeroes the gradient of a parameter that no gradient reached (a frozen one's is zero
    /// already: `set_frozen` cleared it and nothing writes it).
    fn finish_param_grad(&self, store: &mut ParamStore<B>, id: ParamId, written: bool) -> Result<()> {
        let entry = &mut store.entries[id.0];
        if let (false, false, Some(grad)) = (written, entry.frozen, entry.grad.as_mut()) {
            self.backend.fill(grad, 0.0)?;
        }
        Ok(())
    }

    /// Node `i`'s backward with upstream gradient `dy`: a parameter's gradient goes to the
    /// store, an input's is kept, any other op's flows to its inputs.
    fn backward_step(
        &mut self,
        i: usize,
        dy: B::Buffer,
        store: &mut ParamStore<B>,
        written: &mut [bool],
        contributions: &mut Vec<(usize, B::Buffer)>,
    ) -> Result<()> {
        match &self.nodes[i].op {
            Op::Input => self.grads[i] = Some(dy),
            Op::Param { id } => {
                let id = *id;
                let grad = store.entries[id.0].grad.as_mut().expect("tape params are trainable");
                if written[id.0] {
                    self.backend.axpy(1.0, &dy, grad)?;
                    self.pool.give(&self.backend, dy);
                } else {
                    // Hand the tape's buffer to the store and recycle the old gradient.
                    let old = std::mem::replace(grad, dy);
                    self.pool.give(&self.backend, old);
                    written[id.0] = true;
                }
            }
            _ => {
                backward_node(&*self.backend, &self.nodes, &mut self.pool, i, dy, contributions)?;
                for (j, g) in contributions.drain(..) {
                    match &mut self.grads[j] {
                        Some(acc) => {
                            self.backend.axpy(1.0, &g, acc)?;
                            self.pool.give(&self.backend, g);
                        }
                        slot @ None => *slot = Some(g),
                    }
                }
            }
        }
        Ok(())
    }
}

impl<B: Backend> std::fmt::Debug for Tape<B> {
    /// Prints the recorded ops, one per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Tape({}, {:?}, pass {}, {} tensors)",
            self.backend.name(),
            self.mode,
            self.pass,
            self.nodes.len()
        )?;
        for (i, node) in self.nodes.iter().enumerate() {
            writeln!(f, "  #{i} {:?} = {}", node.dims, node.op.describe())?;
        }
        Ok(())
    }
}
