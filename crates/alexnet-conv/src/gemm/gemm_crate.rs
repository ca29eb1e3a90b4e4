//! [`sgemm_strided`](super::sgemm_strided) on the `gemm` crate.

use gemm::Parallelism;

use super::Strides;

pub(super) const NAME: &str = "gemm";
pub(super) const THREADS_PER_CALL: bool = true;

/// Bounds were checked by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
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
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the caller checked that every element addressed through these strides lies
    // inside its slice; `c` is borrowed mutably, so it aliases neither `a` nor `b`. The
    // `gemm` crate's `alpha` scales the old C and its `beta` scales the product.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != 0.0,
            a.as_ptr(),
            a_strides.col as isize,
            a_strides.row as isize,
            b.as_ptr(),
            b_strides.col as isize,
            b_strides.row as isize,
            beta,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}
