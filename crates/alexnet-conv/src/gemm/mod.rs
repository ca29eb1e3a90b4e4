//! Row-major single-precision GEMM, `C = alpha * op(A) * op(B) + beta * C`.
//!
//! One small interface over two libraries, chosen at compile time:
//!
//! - default: the [`gemm`](https://docs.rs/gemm) crate (AVX-512 kernels through its `x86-v4`
//!   feature, AVX2/FMA otherwise, picked at run time);
//! - cargo feature `matrixmultiply`: the [`matrixmultiply`](https://docs.rs/matrixmultiply)
//!   crate.
//!
//! Products with at most four rows whose `op(B)` columns are contiguous (a dense layer
//! `x W^T` at batch 1 to 4) take a path of their own: memory-bound matrix-vector products
//! that read `B` once where it lies, split across threads.
//!
//! The convolution in this crate uses it for every product; it is public so that other
//! layers (dense layers of a CPU backend) share the same tuned kernel.
//!
//! ```
//! use alexnet_conv::gemm::{Transpose, sgemm, BACKEND};
//!
//! // A is 2x3, B^T is given as 2x3 (so B is 3x2), C is 2x2.
//! let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
//! let b_t = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];
//! let mut c = [0.0; 4];
//! sgemm(Transpose::No, Transpose::Yes, 2, 2, 3, 1.0, &a, &b_t, 0.0, &mut c, 1)?;
//! assert_eq!(c, [4.0, 2.0, 10.0, 5.0]);
//! assert!(!BACKEND.is_empty());
//! # Ok::<(), alexnet_conv::ConvError>(())
//! ```

mod few_rows;
#[cfg(not(feature = "matrixmultiply"))]
mod gemm_crate;
#[cfg(not(feature = "matrixmultiply"))]
use gemm_crate as backend;

#[cfg(feature = "matrixmultiply")]
mod matrixmultiply_crate;
#[cfg(feature = "matrixmultiply")]
use matrixmultiply_crate as backend;

use alexnet_core::check_len;

use crate::ConvError;

/// Name of the GEMM library compiled in (`"gemm"` or `"matrixmultiply"`).
pub const BACKEND: &str = backend::NAME;

/// Whether [`sgemm`]'s `threads` argument is obeyed (`gemm`) rather than the library's own
/// pool being used for every product (`matrixmultiply`).
pub const THREADS_PER_CALL: bool = backend::THREADS_PER_CALL;

/// Whether an operand is used as stored or transposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transpose {
    /// Use the matrix as stored.
    No,
    /// Use its transpose.
    Yes,
}

/// A strided view of a matrix: element `(r, c)` lives at `ptr[r * row_stride + c * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strides {
    pub row: usize,
    pub col: usize,
}

impl Strides {
    /// The strides of `op(M)` where `M` is stored row-major with `cols` columns.
    pub(crate) fn row_major(cols: usize, transpose: Transpose) -> Self {
        match transpose {
            Transpose::No => Self { row: cols, col: 1 },
            Transpose::Yes => Self { row: 1, col: cols },
        }
    }
}

/// `C = alpha * op(A) * op(B) + beta * C` on contiguous row-major matrices.
///
/// `op(A)` is `m x k` and `op(B)` is `k x n`; `C` is `m x n`. With [`Transpose::No`], `a`
/// holds `m x k` elements row-major; with [`Transpose::Yes`] it holds `A^T` as a `k x m`
/// row-major matrix (likewise for `b`). When `beta == 0`, `C` is not read (it may hold
/// anything, NaN included).
///
/// `threads` is the most threads this one product may use, taken from the current rayon
/// pool (`0` counts as `1`; `1` runs on the calling thread). With the `matrixmultiply`
/// feature ([`THREADS_PER_CALL`] false), every product uses that crate's own pool instead,
/// sized by its `MATMUL_NUM_THREADS` environment variable.
///
/// # Errors
/// [`alexnet_core::Error::BufferSize`] (wrapped) if `a`, `b` or `c` does not hold exactly
/// `m*k`, `k*n`, `m*n` elements; [`ConvError::SizeOverflow`] if one of these overflows.
#[allow(clippy::too_many_arguments)] // the BLAS signature, which every reader already knows
pub fn sgemm(
    trans_a: Transpose,
    trans_b: Transpose,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
    threads: usize,
) -> Result<(), ConvError> {
    const OP: &str = "sgemm";
    let len = |what, x: usize, y: usize| x.checked_mul(y).ok_or(ConvError::SizeOverflow { op: OP, what });
    check_len(OP, "a", len("a = m x k", m, k)?, a.len())?;
    check_len(OP, "b", len("b = k x n", k, n)?, b.len())?;
    check_len(OP, "c", len("c = m x n", m, n)?, c.len())?;
    let a_strides = Strides::row_major(if trans_a == Transpose::No { k } else { m }, trans_a);
    let b_strides = Strides::row_major(if trans_b == Transpose::No { n } else { k }, trans_b);
    sgemm_strided(m, n, k, alpha, a, a_strides, b, b_strides, beta, c, n, threads);
    Ok(())
}

/// The checked-by-caller core of [`sgemm`]: `C[m x n]` with row stride `ldc`.
///
/// Panics (internal invariant) if an operand slice is too short for its strides.
#[allow(clippy::too_many_arguments)]
#[track_caller]
pub(crate) fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    a_strides: Strides,
    b: &[f32],
    b_strides: Strides,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n, "ldc {ldc} < n {n}");
    assert!(c.len() > (m - 1) * ldc + (n - 1), "c too short");
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            for v in &mut row[..n] {
                *v = if beta == 0.0 { 0.0 } else { beta * *v };
            }
        }
        return;
    }
    let last = |s: Strides, rows: usize, cols: usize| (rows - 1) * s.row + (cols - 1) * s.col;
    assert!(a.len() > last(a_strides, m, k), "a too short for its strides");
    assert!(b.len() > last(b_strides, k, n), "b too short for its strides");
    if few_rows::applies(m, a_strides, b_strides) {
        few_rows::sgemm(m, n, k, alpha, a, a_strides, b, b_strides, beta, c, ldc, threads.max(1));
    } else {
        backend::sgemm(m, n, k, alpha, a, a_strides, b, b_strides, beta, c, ldc, threads.max(1));
    }
}

#[cfg(test)]
mod tests;
