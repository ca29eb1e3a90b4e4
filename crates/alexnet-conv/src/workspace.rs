//! Reusable scratch memory, the thread budget and the algorithm of the convolution.

use crate::{ConvAlgorithm, ConvError};

/// Scratch owned by one worker thread.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// im2col columns of one group of one image, `[k, p]`.
    pub cols: Vec<f32>,
    /// A private weight-gradient accumulator (workers other than the first).
    pub dw: Vec<f32>,
    /// Winograd: zero-padded input planes of one block of images.
    pub planes: Vec<f32>,
    /// Winograd: transformed input tiles of one group, `[tile element][channel][tile]`.
    pub tiles_in: Vec<f32>,
    /// Winograd: transformed output tiles of one group, `[tile element][channel][tile]`.
    pub tiles_out: Vec<f32>,
}

impl Scratch {
    fn bytes(&self) -> usize {
        [&self.cols, &self.dw, &self.planes, &self.tiles_in, &self.tiles_out]
            .iter()
            .map(|v| v.capacity() * size_of::<f32>())
            .sum()
    }
}

/// Grows `buf` to at least `len` elements (never shrinks it) and returns its first `len`.
pub(crate) fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Reusable scratch for the convolution functions: im2col columns, Winograd tiles and
/// weight-gradient accumulators, one set per worker thread, plus the number of threads and the
/// [`ConvAlgorithm`] to use.
///
/// Buffers grow to the largest layer seen and are then reused, so a training loop that keeps
/// one workspace allocates nothing of its own after the first step. (The GEMM libraries
/// allocate their small packing buffers per product.)
///
/// Threads come from the current rayon pool (the global one unless the call runs inside
/// `ThreadPool::install`); [`ConvWorkspace::with_threads`] caps how many a call uses. (With
/// the `matrixmultiply` feature, that crate's own pool does the threading instead; see
/// [`crate::gemm::THREADS_PER_CALL`].)
///
/// The algorithm is [`ConvAlgorithm::Auto`] unless [`ConvWorkspace::with_algorithm`] sets
/// one or the environment variable [`ALGORITHM_ENV`](crate::ALGORITHM_ENV) (`ALEX_CONV_ALGO`)
/// names one; the variable is read at the first convolution that uses the workspace.
#[derive(Debug)]
pub struct ConvWorkspace {
    pub(crate) threads: usize,
    pub(crate) scratch: Vec<Scratch>,
    /// `None` until set or read from the environment.
    algorithm: Option<ConvAlgorithm>,
    /// Winograd-transformed weights of the current call, shared by all workers.
    pub(crate) winograd_weights: Vec<f32>,
}

impl ConvWorkspace {
    /// A workspace using every thread of the current rayon pool (by default one per core).
    pub fn new() -> Self {
        Self::with_threads(rayon::current_num_threads())
    }

    /// A workspace using at most `threads` threads per call (`0` counts as `1`).
    pub fn with_threads(threads: usize) -> Self {
        Self { threads: threads.max(1), scratch: Vec::new(), algorithm: None, winograd_weights: Vec::new() }
    }

    /// The same workspace, using `algorithm` whatever the environment says.
    pub fn with_algorithm(mut self, algorithm: ConvAlgorithm) -> Self {
        self.algorithm = Some(algorithm);
        self
    }

    /// The algorithm calls use: the one set, else the environment's, else `Auto`.
    ///
    /// # Errors
    /// [`ConvError::UnknownAlgorithm`] if [`ALGORITHM_ENV`](crate::ALGORITHM_ENV) holds an
    /// unknown name (and none was set).
    pub fn algorithm(&mut self) -> Result<ConvAlgorithm, ConvError> {
        match self.algorithm {
            Some(algorithm) => Ok(algorithm),
            None => {
                let algorithm = ConvAlgorithm::from_env()?;
                self.algorithm = Some(algorithm);
                Ok(algorithm)
            }
        }
    }

    /// The most threads one call uses.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Bytes of scratch currently held (grows to the largest layer seen, then stays).
    pub fn scratch_bytes(&self) -> usize {
        self.scratch.iter().map(Scratch::bytes).sum::<usize>() + self.winograd_weights.capacity() * size_of::<f32>()
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
