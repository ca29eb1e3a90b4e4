//! Recycling of device buffers between training steps.

use std::collections::HashMap;

use alexnet_core::Backend;

use crate::error::Result;

/// Counters of a [`BufferPool`]; after warm-up `allocations` stops growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Buffers obtained from the backend (`Backend::zeros`) because none was free.
    pub allocations: u64,
    /// Elements in those allocations.
    pub allocated_elements: u64,
    /// Requests served from the free lists.
    pub reuses: u64,
    /// Buffers currently waiting in the free lists.
    pub free_buffers: usize,
}

/// Free lists of backend buffers keyed by element count.
///
/// A training step asks for the same lengths in the same order every time, so after the
/// first step every request is served from the free lists and no large buffer is allocated.
pub struct BufferPool<B: Backend> {
    free: HashMap<usize, Vec<B::Buffer>>,
    stats: PoolStats,
}

impl<B: Backend> Default for BufferPool<B> {
    fn default() -> Self {
        Self { free: HashMap::new(), stats: PoolStats::default() }
    }
}

impl<B: Backend> BufferPool<B> {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// A buffer of `len` elements with unspecified contents (the caller overwrites it).
    pub fn take(&mut self, backend: &B, len: usize) -> Result<B::Buffer> {
        if let Some(buf) = self.free.get_mut(&len).and_then(Vec::pop) {
            self.stats.reuses += 1;
            self.stats.free_buffers -= 1;
            return Ok(buf);
        }
        self.stats.allocations += 1;
        self.stats.allocated_elements += len as u64;
        Ok(backend.zeros(len)?)
    }

    /// A zero-filled buffer of `len` elements.
    pub fn take_zeroed(&mut self, backend: &B, len: usize) -> Result<B::Buffer> {
        let mut buf = self.take(backend, len)?;
        backend.fill(&mut buf, 0.0)?;
        Ok(buf)
    }

    /// Returns `buf` to the free list of its length.
    pub fn give(&mut self, backend: &B, buf: B::Buffer) {
        self.stats.free_buffers += 1;
        self.free.entry(backend.len(&buf)).or_default().push(buf);
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Drops every free buffer (memory goes back to the backend).
    pub fn clear(&mut self) {
        self.free.clear();
        self.stats.free_buffers = 0;
    }
}
