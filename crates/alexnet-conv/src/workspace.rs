//! Reusable scratch memory and the thread budget of the convolution.

/// Scratch owned by one worker thread.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// im2col columns of one group of one image, `[k, p]`.
    pub cols: Vec<f32>,
    /// A private weight-gradient accumulator (workers other than the first).
    pub dw: Vec<f32>,
}

/// Grows `buf` to at least `len` elements (never shrinks it) and returns its first `len`.
pub(crate) fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Reusable scratch for the convolution functions: im2col columns and weight-gradient
/// accumulators, one set per worker thread, plus the number of threads to use.
///
/// Buffers grow to the largest layer seen and are then reused, so a training loop that keeps
/// one workspace allocates nothing of its own after the first step. (The GEMM libraries
/// allocate their small packing buffers per product.)
///
/// Threads come from the current rayon pool (the global one unless the call runs inside
/// `ThreadPool::install`); [`ConvWorkspace::with_threads`] caps how many a call uses. (With
/// the `matrixmultiply` feature, that crate's own pool does the threading instead; see
/// [`crate::gemm::THREADS_PER_CALL`].)
#[derive(Debug)]
pub struct ConvWorkspace {
    pub(crate) threads: usize,
    pub(crate) scratch: Vec<Scratch>,
}

impl ConvWorkspace {
    /// A workspace using every thread of the current rayon pool (by default one per core).
    pub fn new() -> Self {
        Self::with_threads(rayon::current_num_threads())
    }

    /// A workspace using at most `threads` threads per call (`0` counts as `1`).
    pub fn with_threads(threads: usize) -> Self {
        Self { threads: threads.max(1), scratch: Vec::new() }
    }

    /// The most threads one call uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes of scratch currently held (grows to the largest layer seen, then stays).
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.iter().map(|s| (s.cols.capacity() + s.dw.capacity()) * size_of::<f32>()).sum()
    }

    /// Threads to split a batch over: ours, unless the GEMM library runs its own pool (then
    /// images go one after another, each product using that pool).
    pub(crate) fn split_threads(&self) -> usize {
        if crate::gemm::THREADS_PER_CALL { self.threads } else { 1 }
    }

    /// Per-worker scratch for `workers` workers.
    pub(crate) fn workers(&mut self, workers: usize) -> &mut [Scratch] {
        if self.scratch.len() < workers {
            self.scratch.resize_with(workers, Scratch::default);
        }
        &mut self.scratch[..workers]
    }
}

impl Default for ConvWorkspace {
    fn default() -> Self {
        Self::new()
    }
}
