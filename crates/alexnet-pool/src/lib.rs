//! # alexnet-pool
//!
//! Overlapping max pooling, average pooling and local response normalisation (LRN) across
//! channels, forward and backward, on NCHW `f32` slices: the pooling and normalisation
//! layers of AlexNet (Krizhevsky et al. 2012), reusable on their own.
//!
//! - [`pool_forward`] / [`pool_backward`]: any window, stride and padding, floor, ceil
//!   (Caffe) or exact output size, all from `alexnet-core`'s [`PoolGeom`]. Max routes each
//!   gradient to the first maximum in row-major window order; average divides by the number
//!   of input cells in the window (padding excluded). Details in [`pool`].
//! - [`lrn_forward`] / [`lrn_backward`]: the paper's
//!   `b_i = a_i / (k + alpha * sum_{j in window(i)} a_j^2)^beta` with the window clipped at the
//!   channel edges, or Caffe/PyTorch's `alpha / n` ([`LrnParams`], [`AlphaConvention`]). The
//!   forward keeps the scale term for the backward. Details in [`lrn`].
//!
//! Every function validates its geometry and buffer lengths and returns a [`PoolError`]
//! rather than panicking, overwrites its output, and allocates nothing on the steady state.
//!
//! ## Threads
//!
//! Work is split over channel planes (or images) with rayon and runs in the **current rayon
//! pool**: the global one by default, which uses every core. To choose the thread count, call
//! from inside a pool of your own: `rayon::ThreadPoolBuilder::new().num_threads(1).build()?
//! .install(|| pool_forward(..))`. Results are bitwise the same for any thread count.
//!
//! ## Example: AlexNet's first normalise-then-pool stage, forward and backward
//!
//! ```
//! use alexnet_core::{LrnParams, PoolGeom, PoolKind, Rounding, Shape4};
//! use alexnet_pool::{lrn_backward, lrn_forward, pool_backward, pool_forward};
//!
//! let conv1 = Shape4::new(1, 96, 55, 55)?;
//! let pool = PoolGeom::square(3, 2, 0, Rounding::Floor)?;
//! let pooled = pool.output_shape(conv1)?; // 1 x 96 x 27 x 27
//! let a: Vec<f32> = (0..conv1.numel()).map(|i| (i % 7) as f32).collect();
//!
//! let (mut b, mut scale) = (vec![0.0; a.len()], vec![0.0; a.len()]);
//! lrn_forward(&LrnParams::paper(), conv1, &a, &mut b, &mut scale)?;
//! let mut p = vec![0.0; pooled.numel()];
//! pool_forward(PoolKind::Max, &pool, conv1, &b, &mut p)?;
//!
//! let dp = vec![1.0; p.len()];
//! let mut db = vec![0.0; b.len()];
//! pool_backward(PoolKind::Max, &pool, conv1, &b, &p, &dp, &mut db)?;
//! let mut da = vec![0.0; a.len()];
//! lrn_backward(&LrnParams::paper(), conv1, &a, &b, &scale, &db, &mut da)?;
//!
//! // A buffer of the wrong length is an error naming it, not a panic.
//! let err = pool_forward(PoolKind::Max, &pool, conv1, &b, &mut p[1..]).unwrap_err();
//! assert!(err.to_string().contains("`y`"), "{err}");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cell::RefCell;
use std::thread::LocalKey;

mod error;
pub mod lrn;
pub mod pool;
#[cfg(test)]
mod testutil;

pub use alexnet_core::{AlphaConvention, LrnParams, PoolGeom, PoolKind, Rounding, Shape4};
pub use error::{PoolError, Result};
pub use lrn::{lrn_backward, lrn_forward};
pub use pool::{pool_backward, pool_forward};

thread_local! {
    /// Per-thread working memory of the kernels (a plane's pooling phases, LRN's ring of planes).
    static F32_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread working memory for plane-local indices (max pooling's first maxima of a row).
    static U32_SCRATCH: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer `key`, `len` long (contents unspecified). The
/// buffer is allocated on a thread's first use and grows when needed, so steady-state calls
/// allocate nothing. `f` must not ask for the same `key` again.
fn with_scratch<T: Copy + Default + 'static, R>(
    key: &'static LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with_borrow_mut(|buffer| {
        if buffer.len() < len {
            buffer.resize(len, T::default());
        }
        f(&mut buffer[..len])
    })
}

/// Defines the function `$name` with the body given, compiled twice: for AVX2 (twice the
/// vector width), run when the CPU has it, and for the baseline (SSE2). The kernels use no
/// fused multiply-add, so both copies give bitwise the same results.
macro_rules! avx2_when_available {
    ($(#[$meta:meta])* fn $name:ident $(<$($g:ident: $bound:path),*>)? ($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name $(<$($g: $bound),*>)? ($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn kernel $(<$($g: $bound),*>)? ($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2 $(<$($g: $bound),*>)? ($($arg: $ty),*) {
                    kernel $(::<$($g),*>)? ($($arg),*)
                }
                // SAFETY: the CPU supports AVX2, as checked just above.
                return unsafe { avx2 $(::<$($g),*>)? ($($arg),*) };
            }
            kernel $(::<$($g),*>)? ($($arg),*)
        }
    };
}
use avx2_when_available;

/// Re-validates `shape` (its fields are public) and returns its element count.
fn checked_numel(op: &'static str, shape: Shape4) -> Result<usize> {
    let shape = Shape4::new(shape.n, shape.c, shape.h, shape.w)?;
    let dims = shape.dims();
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(PoolError::TooLarge { op, dims })
}

/// [`alexnet_core::check_len`] as a [`PoolError`].
fn check_buffer(op: &'static str, buffer: &'static str, expected: usize, got: usize) -> Result<()> {
    Ok(alexnet_core::check_len(op, buffer, expected, got)?)
}

/// The README's code blocks, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
