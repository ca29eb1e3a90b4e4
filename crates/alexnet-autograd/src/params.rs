//! The parameter store: named values, gradients and optimiser state on a backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use alexnet_core::{Backend, SgdStep};

use crate::error::{AutogradError, Result};
use crate::tensor::{Dims, HostTensor};

/// What a store entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// Learned by SGD: has a gradient and a momentum buffer.
    Trainable,
    /// State updated by the forward pass (batch-norm running statistics): no gradient.
    State,
}

impl ParamKind {
    fn describe(self) -> &'static str {
        match self {
            ParamKind::Trainable => "a trainable parameter",
            ParamKind::State => "a state buffer",
        }
    }
}

/// The position of an entry in its [`ParamStore`], stable for the store's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub(crate) usize);

impl ParamId {
    /// Insertion index.
    pub fn index(self) -> usize {
        self.0
    }
}

pub(crate) struct Entry<B: Backend> {
    pub(crate) name: String,
    pub(crate) dims: Dims,
    pub(crate) kind: ParamKind,
    /// Shared with the tapes that read it during a pass; mutated only when unshared.
    pub(crate) value: Arc<B::Buffer>,
    /// Gradient (trainable only).
    pub(crate) grad: Option<B::Buffer>,
    /// Momentum buffer (trainable only).
    pub(crate) velocity: Option<B::Buffer>,
    /// A trainable parameter held fixed: read as a constant, left alone by SGD.
    pub(crate) frozen: bool,
}

static NEXT_STORE_ID: AtomicU64 = AtomicU64::new(1);

/// Named tensors on a backend in insertion order: trainable parameters (value, gradient,
/// momentum) and state buffers (batch-norm running statistics).
///
/// Names are the stable keys of checkpoints: `conv1.weight`, `conv1.bias`,
/// `bn1.running_mean`, ... A [`crate::Tape`] reads values through [`crate::Tape::param`] and
/// [`crate::Tape::backward`] writes gradients here; [`ParamStore::sgd_step`] updates every
/// trainable entry.
pub struct ParamStore<B: Backend> {
    backend: Arc<B>,
    pub(crate) entries: Vec<Entry<B>>,
    index: HashMap<String, usize>,
    id: u64,
}

impl<B: Backend> ParamStore<B> {
    /// An empty store on `backend`.
    pub fn new(backend: Arc<B>) -> Self {
        Self { backend, entries: Vec::new(), index: HashMap::new(), id: NEXT_STORE_ID.fetch_add(1, Ordering::Relaxed) }
    }

    /// The backend holding the buffers.
    pub fn backend(&self) -> &Arc<B> {
        &self.backend
    }

    pub(crate) fn store_id(&self) -> u64 {
        self.id
    }

    /// Adds a trainable parameter with value `host` (zero gradient and momentum).
    pub fn insert(&mut self, name: &str, dims: &[usize], host: &[f32]) -> Result<ParamId> {
        self.insert_kind(name, dims, host, ParamKind::Trainable)
    }

    /// Adds a state buffer (no gradient), e.g. `bn1.running_var`.
    pub fn insert_state(&mut self, name: &str, dims: &[usize], host: &[f32]) -> Result<ParamId> {
        self.insert_kind(name, dims, host, ParamKind::State)
    }

    fn insert_kind(&mut self, name: &str, dims: &[usize], host: &[f32], kind: ParamKind) -> Result<ParamId> {
        if self.index.contains_key(name) {
            return Err(AutogradError::DuplicateParam { name: name.to_owned() });
        }
        let checked = check_host("ParamStore::insert", dims, host.len())?;
        let value = Arc::new(self.backend.upload(host)?);
        let (grad, velocity) = match kind {
            ParamKind::Trainable => (Some(self.backend.zeros(host.len())?), Some(self.backend.zeros(host.len())?)),
            ParamKind::State => (None, None),
        };
        let id = self.entries.len();
        self.entries.push(Entry { name: name.to_owned(), dims: checked, kind, value, grad, velocity, frozen: false });
        self.index.insert(name.to_owned(), id);
        Ok(ParamId(id))
    }

    /// Number of entries (trainable and state).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id of `name`.
    pub fn id(&self, name: &str) -> Result<ParamId> {
        self.index.get(name).map(|&i| ParamId(i)).ok_or_else(|| AutogradError::UnknownParam { name: name.to_owned() })
    }

    /// Names in insertion order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// Ids of the trainable parameters in insertion order.
    pub fn trainable(&self) -> impl Iterator<Item = ParamId> + '_ {
        self.entries.iter().enumerate().filter(|(_, e)| e.kind == ParamKind::Trainable).map(|(i, _)| ParamId(i))
    }

    fn entry(&self, id: ParamId) -> Result<&Entry<B>> {
        self.entries.get(id.0).ok_or_else(|| AutogradError::UnknownParam { name: format!("#{}", id.0) })
    }

    /// The name of `id`.
    pub fn name(&self, id: ParamId) -> Result<&str> {
        Ok(&self.entry(id)?.name)
    }

    /// The dims of `id`.
    pub fn dims(&self, id: ParamId) -> Result<Dims> {
        Ok(self.entry(id)?.dims)
    }

    /// The kind of `id`.
    pub fn kind(&self, id: ParamId) -> Result<ParamKind> {
        Ok(self.entry(id)?.kind)
    }

    /// Holds the trainable parameter `name` fixed (`frozen`) or trains it again. Tapes read
    /// a frozen parameter as a constant, so backward computes no gradient for it, nor for
    /// the layers before it when nothing else there needs one (fine-tuning only a head
    /// skips the backward pass of the frozen trunk); [`ParamStore::sgd_step`] leaves its
    /// value and momentum unchanged (no weight decay either) and its gradient stays zero.
    pub fn set_frozen(&mut self, name: &str, frozen: bool) -> Result<()> {
        let id = self.id(name)?;
        let e = &mut self.entries[id.0];
        if e.kind != ParamKind::Trainable {
            return Err(kind_error(e, ParamKind::Trainable));
        }
        if frozen && let Some(grad) = e.grad.as_mut() {
            self.backend.fill(grad, 0.0)?;
        }
        e.frozen = frozen;
        Ok(())
    }

    /// Whether `id` is held fixed (see [`ParamStore::set_frozen`]).
    pub fn is_frozen(&self, id: ParamId) -> Result<bool> {
        Ok(self.entry(id)?.frozen)
    }

    /// Total elements of the trainable parameters.
    pub fn trainable_elements(&self) -> usize {
        self.entries.iter().filter(|e| e.kind == ParamKind::Trainable).map(|e| e.dims.numel()).sum()
    }

    /// The value buffer of `id`.
    pub fn value(&self, id: ParamId) -> Result<&B::Buffer> {
        Ok(&self.entry(id)?.value)
    }

    /// The gradient buffer of trainable `id` (written by the last backward).
    pub fn grad(&self, id: ParamId) -> Result<&B::Buffer> {
        let e = self.entry(id)?;
        e.grad.as_ref().ok_or_else(|| kind_error(e, ParamKind::Trainable))
    }

    /// `name`'s value copied to the host.
    pub fn value_to_host(&self, name: &str) -> Result<Vec<f32>> {
        self.download(self.value(self.id(name)?)?)
    }

    /// `name`'s gradient copied to the host.
    pub fn grad_to_host(&self, name: &str) -> Result<Vec<f32>> {
        self.download(self.grad(self.id(name)?)?)
    }

    fn download(&self, buf: &B::Buffer) -> Result<Vec<f32>> {
        let mut host = vec![0.0; self.backend.len(buf)];
        self.backend.download(buf, &mut host)?;
        Ok(host)
    }

    /// Mutable access to an entry's value; fails while a tape still reads it.
    pub(crate) fn value_mut(&mut self, id: ParamId) -> Result<&mut B::Buffer> {
        let e = self.entries.get_mut(id.0).ok_or_else(|| AutogradError::UnknownParam { name: format!("#{}", id.0) })?;
        let name = &e.name;
        Arc::get_mut(&mut e.value).ok_or_else(|| AutogradError::ParamInUse { name: name.clone() })
    }

    /// Adds the four entries of a batch-normalisation layer over `channels` channels:
    /// `{prefix}.weight` (ones) and `{prefix}.bias` (zeros), trainable;
    /// `{prefix}.running_mean` (zeros) and `{prefix}.running_var` (ones), state.
    pub fn insert_batch_norm(&mut self, prefix: &str, channels: usize) -> Result<()> {
        let (ones, zeros) = (vec![1.0; channels], vec![0.0; channels]);
        self.insert(&format!("{prefix}.weight"), &[channels], &ones)?;
        self.insert(&format!("{prefix}.bias"), &[channels], &zeros)?;
        self.insert_state(&format!("{prefix}.running_mean"), &[channels], &zeros)?;
        self.insert_state(&format!("{prefix}.running_var"), &[channels], &ones)?;
        Ok(())
    }

    /// Mutable values of two different state entries at once (running mean and variance).
    pub(crate) fn state_pair_mut(&mut self, a: ParamId, b: ParamId) -> Result<(&mut B::Buffer, &mut B::Buffer)> {
        for id in [a, b] {
            let e = self.entry(id)?;
            if e.kind != ParamKind::State {
                return Err(kind_error(e, ParamKind::State));
            }
        }
        assert_ne!(a, b, "running mean and variance are distinct entries");
        let (lo, hi) = if a < b { (a.0, b.0) } else { (b.0, a.0) };
        let (head, tail) = self.entries.split_at_mut(hi);
        let (first, second) = (&mut head[lo], &mut tail[0]);
        let in_use = |e: &Entry<B>| AutogradError::ParamInUse { name: e.name.clone() };
        let first_name = in_use(first);
        let second_name = in_use(second);
        let first = Arc::get_mut(&mut first.value).ok_or(first_name)?;
        let second = Arc::get_mut(&mut second.value).ok_or(second_name)?;
        Ok(if a < b { (first, second) } else { (second, first) })
    }

    /// Replaces `name`'s value with `host` (same length).
    pub fn set_value_from_host(&mut self, name: &str, host: &[f32]) -> Result<()> {
        let id = self.id(name)?;
        let dims = self.entries[id.0].dims;
        check_host("ParamStore::set_value_from_host", dims.as_slice(), host.len())?;
        // Written in place so that the stored buffer (and any device allocation) stays the same.
        let backend = Arc::clone(&self.backend);
        backend.upload_into(host, self.value_mut(id)?)?;
        Ok(())
    }

    /// Replaces trainable `id`'s gradient with `host` (same length): a gradient summed
    /// across replicas coming back to this one.
    pub fn set_grad_from_host(&mut self, id: ParamId, host: &[f32]) -> Result<()> {
        let e = self.entries.get_mut(id.0).ok_or_else(|| AutogradError::UnknownParam { name: format!("#{}", id.0) })?;
        check_host("ParamStore::set_grad_from_host", e.dims.as_slice(), host.len())?;
        match e.grad.as_mut() {
            Some(grad) => Ok(self.backend.upload_into(host, grad)?),
            None => Err(kind_error(e, ParamKind::Trainable)),
        }
    }

    /// Sets every gradient to zero.
    pub fn zero_grads(&mut self) -> Result<()> {
        for e in &mut self.entries {
            if let Some(g) = e.grad.as_mut() {
                self.backend.fill(g, 0.0)?;
            }
        }
        Ok(())
    }

    /// One SGD step (momentum, weight decay) on every trainable parameter that is not
    /// frozen, from the gradients of the last backward. Fails with
    /// [`AutogradError::ParamInUse`] while a tape still reads a parameter (call `backward`
    /// or `reset` on it first).
    pub fn sgd_step(&mut self, step: &SgdStep) -> Result<()> {
        for e in self.entries.iter_mut().filter(|e| !e.frozen) {
            let (Some(grad), Some(velocity)) = (e.grad.as_ref(), e.velocity.as_mut()) else { continue };
            let value = Arc::get_mut(&mut e.value).ok_or_else(|| AutogradError::ParamInUse { name: e.name.clone() })?;
            self.backend.sgd_step(step, value, grad, velocity)?;
        }
        Ok(())
    }

    /// Every value (trainable and state) copied to the host, in insertion order.
    pub fn to_host_map(&self) -> Result<Vec<(String, HostTensor)>> {
        self.entries
            .iter()
            .map(|e| Ok((e.name.clone(), HostTensor { dims: e.dims.to_vec(), data: self.download(&e.value)? })))
            .collect()
    }

    /// The momentum buffers of the trainable parameters, keyed by parameter name.
    pub fn momentum_to_host_map(&self) -> Result<Vec<(String, HostTensor)>> {
        self.entries
            .iter()
            .filter_map(|e| e.velocity.as_ref().map(|v| (e, v)))
            .map(|(e, v)| Ok((e.name.clone(), HostTensor { dims: e.dims.to_vec(), data: self.download(v)? })))
            .collect()
    }

    /// Loads every value from `map` (as written by [`ParamStore::to_host_map`]). Every entry
    /// of the store must be present with the same dims, and every name in `map` known;
    /// nothing is changed unless all match.
    pub fn load_from_host(&mut self, map: &[(String, HostTensor)]) -> Result<()> {
        let ids = self.match_map(map, |_| true)?;
        for (id, (_, t)) in ids.into_iter().zip(map) {
            let backend = Arc::clone(&self.backend);
            backend.upload_into(&t.data, self.value_mut(id)?)?;
        }
        Ok(())
    }

    /// Loads the momentum buffers (as written by [`ParamStore::momentum_to_host_map`]).
    pub fn load_momentum_from_host(&mut self, map: &[(String, HostTensor)]) -> Result<()> {
        let ids = self.match_map(map, |e| e.kind == ParamKind::Trainable)?;
        for (id, (_, t)) in ids.into_iter().zip(map) {
            let velocity = self.entries[id.0].velocity.as_mut().expect("trainable entries have momentum");
            self.backend.upload_into(&t.data, velocity)?;
        }
        Ok(())
    }

    /// Resolves `map`'s names, checking dims, kinds and completeness against `wanted` entries.
    fn match_map(&self, map: &[(String, HostTensor)], wanted: impl Fn(&Entry<B>) -> bool) -> Result<Vec<ParamId>> {
        let mut ids = Vec::with_capacity(map.len());
        for (name, t) in map {
            let id = self.id(name)?;
            let e = &self.entries[id.0];
            if !wanted(e) {
                return Err(kind_error(e, ParamKind::Trainable));
            }
            if e.dims.as_slice() != t.dims.as_slice() {
                return Err(AutogradError::Shape {
                    op: "ParamStore::load",
                    expected: e.dims.to_vec(),
                    got: t.dims.clone(),
                });
            }
            check_host("ParamStore::load", &t.dims, t.data.len())?;
            ids.push(id);
        }
        if let Some(e) = self.entries.iter().find(|e| wanted(e) && !map.iter().any(|(n, _)| *n == e.name)) {
            return Err(AutogradError::MissingParam { name: e.name.clone() });
        }
        Ok(ids)
    }
}

fn kind_error<B: Backend>(e: &Entry<B>, expected: ParamKind) -> AutogradError {
    AutogradError::ParamKind { name: e.name.clone(), expected: expected.describe(), actual: e.kind.describe() }
}

pub(crate) fn check_host(op: &'static str, dims: &[usize], len: usize) -> Result<Dims> {
    let checked = Dims::new(dims)?;
    if checked.numel() != len {
        return Err(AutogradError::HostLength { op, dims: dims.to_vec(), expected: checked.numel(), got: len });
    }
    Ok(checked)
}
