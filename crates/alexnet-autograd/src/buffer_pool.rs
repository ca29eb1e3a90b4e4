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
    /// Elements in those buffers.
    pub free_elements: u64,
    /// Free buffers dropped to make room for a request of a new length (see [`BufferPool`]).
    pub evictions: u64,
}

/// Free lists of backend buffers keyed by element count.
///
/// A training step asks for the same lengths in the same order every time, so after the
/// first step every request is served from the free lists and no large buffer is allocated.
/// A step of another batch size (the last of an epoch, or one shortened by skipped images)
/// asks for other lengths: rather than keep a second set of buffers beside the first (a set
/// per batch size seen, when skips make every size appear), a request that misses first
/// drops free buffers of lengths not asked for since the step began ([`BufferPool::begin_step`])
/// until the pool holds no more than the most any step has had in use at once. Lengths the
/// current step uses are never dropped, so a step that gives a buffer back and later asks
/// for another length keeps both, and the steady state allocates nothing. Memory stays at
/// one step's worth; a step of a new size pays the allocations of a first step.
pub struct BufferPool<B: Backend> {
    free: HashMap<usize, Vec<B::Buffer>>,
    /// For each length, the step that last asked for it.
    last_asked: HashMap<usize, u64>,
    /// The current step (see [`BufferPool::begin_step`]).
    step: u64,
    stats: PoolStats,
    /// Elements handed out and not yet given back.
    live_elements: u64,
    /// The most elements ever handed out at once.
    peak_live_elements: u64,
}

impl<B: Backend> Default for BufferPool<B> {
    fn default() -> Self {
        Self {
            free: HashMap::new(),
            last_asked: HashMap::new(),
            step: 0,
            stats: PoolStats::default(),
            live_elements: 0,
            peak_live_elements: 0,
        }
    }
}

impl<B: Backend> BufferPool<B> {
    /// An empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the start of a step: lengths not asked for from here on become candidates for
    /// eviction when a request misses.
    pub fn begin_step(&mut self) {
        self.step += 1;
    }

    /// A buffer of `len` elements with unspecified contents (the caller overwrites it).
    pub fn take(&mut self, backend: &B, len: usize) -> Result<B::Buffer> {
        let elements = len as u64;
        self.last_asked.insert(len, self.step);
        self.live_elements += elements;
        self.peak_live_elements = self.peak_live_elements.max(self.live_elements);
        if let Some(buf) = self.free.get_mut(&len).and_then(Vec::pop) {
            self.stats.reuses += 1;
            self.stats.free_buffers -= 1;
            self.stats.free_elements -= elements;
            return Ok(buf);
        }
        self.evict_for(len);
        self.stats.allocations += 1;
        self.stats.allocated_elements += elements;
        Ok(backend.zeros(len)?)
    }

    /// Drops free buffers of lengths this step has not asked for, largest first, until what
    /// the pool holds (free and handed out, the new buffer included) is within the peak in use.
    fn evict_for(&mut self, len: usize) {
        let step = self.step;
        let stale = |l: &usize| self.last_asked.get(l).is_none_or(|&asked| asked < step);
        let mut lengths: Vec<usize> =
            self.free.iter().filter(|(l, v)| **l != len && !v.is_empty() && stale(l)).map(|(l, _)| *l).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        for other in lengths {
            while self.stats.free_elements + self.live_elements > self.peak_live_elements {
                let Some(buf) = self.free.get_mut(&other).and_then(Vec::pop) else { break };
                drop(buf);
                self.stats.free_buffers -= 1;
                self.stats.free_elements -= other as u64;
                self.stats.evictions += 1;
            }
        }
    }

    /// A zero-filled buffer of `len` elements.
    pub fn take_zeroed(&mut self, backend: &B, len: usize) -> Result<B::Buffer> {
        let mut buf = self.take(backend, len)?;
        backend.fill(&mut buf, 0.0)?;
        Ok(buf)
    }

    /// Returns `buf` to the free list of its length.
    pub fn give(&mut self, backend: &B, buf: B::Buffer) {
        let len = backend.len(&buf);
        self.live_elements = self.live_elements.saturating_sub(len as u64);
        self.stats.free_buffers += 1;
        self.stats.free_elements += len as u64;
        self.free.entry(len).or_default().push(buf);
    }

    /// The pool's counters.
    pub fn stats(&self) -> PoolStats {
        self.stats
    }

    /// Drops every free buffer (memory goes back to the backend).
    pub fn clear(&mut self) {
        self.free.clear();
        self.stats.free_buffers = 0;
        self.stats.free_elements = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CpuBackend;

    /// One training step's worth of requests for a batch of `batch`: activations that scale
    /// with it and weight gradients that do not, all given back at the end (as a tape's
    /// reset does).
    fn step(pool: &mut BufferPool<CpuBackend>, backend: &CpuBackend, batch: usize) {
        pool.begin_step();
        let lens = [batch * 1000, batch * 500, batch * 10, 3000, 40];
        let bufs: Vec<_> = lens.iter().map(|&l| pool.take(backend, l).unwrap()).collect();
        bufs.into_iter().for_each(|b| pool.give(backend, b));
    }

    /// Issue 12, item 1: batches shortened by skipped images (every size from 16 down) do
    /// not each leave a set of buffers behind: the pool stays at one step's worth.
    #[test]
    fn other_batch_sizes_do_not_pile_up_buffer_sets() {
        let backend = CpuBackend::with_threads(1).unwrap();
        let mut pool = BufferPool::new();
        step(&mut pool, &backend, 16);
        let one_step = pool.stats().free_elements;
        assert_eq!(one_step, 16 * 1510 + 3040);
        for batch in (1..=16).rev().chain([16, 16, 7, 16]) {
            step(&mut pool, &backend, batch);
            assert!(pool.stats().free_elements <= one_step, "batch {batch}: {:?}", pool.stats());
        }
        // Steady state needs no allocation at all.
        let before = pool.stats().allocations;
        step(&mut pool, &backend, 16);
        step(&mut pool, &backend, 16);
        assert_eq!(pool.stats().allocations - before, 0, "{:?}", pool.stats());
        assert!(pool.stats().evictions > 0);
    }

    /// A step that gives a buffer back and then asks for another length (as backward does
    /// with temporaries) keeps both: after the first step it allocates nothing.
    #[test]
    fn a_step_that_recycles_mid_way_allocates_only_once() {
        let backend = CpuBackend::with_threads(1).unwrap();
        let mut pool = BufferPool::new();
        for _ in 0..4 {
            pool.begin_step();
            let a = pool.take(&backend, 1000).unwrap();
            pool.give(&backend, a);
            let b = pool.take(&backend, 2000).unwrap();
            let c = pool.take(&backend, 10).unwrap();
            pool.give(&backend, b);
            pool.give(&backend, c);
        }
        assert_eq!(pool.stats().allocations, 3, "{:?}", pool.stats());
        assert_eq!(pool.stats().evictions, 0, "{:?}", pool.stats());
    }
}
