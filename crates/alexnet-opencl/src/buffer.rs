//! Device buffers and the per-backend pool that recycles them.
//!
//! Training allocates the same sizes every step; returning a dropped buffer to a pool keyed
//! by its exact length turns those allocations into a map lookup. The pool belongs to one
//! backend (one in-order queue), so a recycled buffer is only ever reused after the
//! commands queued before it on that same queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opencl3::context::Context;
use opencl3::memory::{Buffer, CL_MEM_READ_WRITE};

use crate::error::{ClResultExt, OpenClError};

/// A flat `f32` buffer in device memory, owned by one [`crate::OpenClBackend`].
pub struct ClBuffer {
    /// Always `Some` until dropped.
    mem: Option<Buffer<f32>>,
    len: usize,
    pool: Arc<Pool>,
}

impl std::fmt::Debug for ClBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClBuffer").field("len", &self.len).finish_non_exhaustive()
    }
}

impl ClBuffer {
    /// Element count.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn mem(&self) -> &Buffer<f32> {
        self.mem.as_ref().expect("buffer used after drop")
    }

    pub(crate) fn mem_mut(&mut self) -> &mut Buffer<f32> {
        self.mem.as_mut().expect("buffer used after drop")
    }

    /// Whether this buffer was allocated from `pool`.
    pub(crate) fn belongs_to(&self, pool: &Arc<Pool>) -> bool {
        Arc::ptr_eq(&self.pool, pool)
    }
}

impl Drop for ClBuffer {
    fn drop(&mut self) {
        if let Some(mem) = self.mem.take() {
            self.pool.give_back(capacity(self.len), mem);
        }
    }
}

/// OpenCL rejects zero-sized buffers: an empty buffer still holds one element.
fn capacity(len: usize) -> usize {
    len.max(1)
}

#[derive(Default)]
struct PoolState {
    free: HashMap<usize, Vec<Buffer<f32>>>,
    bytes: u64,
}

/// Free buffers of one backend, by capacity, up to a byte budget.
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    budget_bytes: u64,
}

impl Pool {
    pub(crate) fn new(budget_bytes: u64) -> Self {
        Self { state: Mutex::new(PoolState::default()), budget_bytes }
    }

    /// A buffer of `len` elements: a recycled one when the pool has one, else a new allocation.
    /// Its contents are unspecified.
    pub(crate) fn take(self: &Arc<Self>, context: &Context, len: usize) -> Result<ClBuffer, OpenClError> {
        let cap = capacity(len);
        let recycled = {
            let mut state = self.lock();
            let mem = state.free.get_mut(&cap).and_then(Vec::pop);
            if mem.is_some() {
                state.bytes -= bytes(cap);
            }
            mem
        };
        let mem = match recycled {
            Some(mem) => mem,
            // SAFETY: no host pointer is passed; the buffer is device-allocated.
            None => unsafe { Buffer::<f32>::create(context, CL_MEM_READ_WRITE, cap, std::ptr::null_mut()) }
                .cl("clCreateBuffer")?,
        };
        Ok(ClBuffer { mem: Some(mem), len, pool: Arc::clone(self) })
    }

    fn give_back(&self, cap: usize, mem: Buffer<f32>) {
        let mut state = self.lock();
        if state.bytes + bytes(cap) <= self.budget_bytes {
            state.bytes += bytes(cap);
            state.free.entry(cap).or_default().push(mem);
        }
        // Otherwise `mem` drops here: clReleaseMemObject defers the free until queued commands finish.
    }

    /// Releases every pooled buffer.
    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.free.clear();
        state.bytes = 0;
    }

    /// Bytes currently held by free buffers.
    pub(crate) fn pooled_bytes(&self) -> u64 {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn bytes(cap: usize) -> u64 {
    (cap * std::mem::size_of::<f32>()) as u64
}
