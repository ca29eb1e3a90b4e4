//! [`sgemm_strided`](super::sgemm_strided) on the `matrixmultiply` crate.

use super::Strides;

pub(super) const NAME: &str = "matrixmultiply";
pub(super) const THREADS_PER_CALL: bool = false;

/// Bounds were checked by the caller. `matrixmultiply` cannot be told a thread count per
/// call: every product uses its own pool (`MATMUL_NUM_THREADS`, at most 4 threads).
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
    _threads: usize,
) {
    // SAFETY: the caller checked that every element addressed through these strides lies
    // inside its slice; `c` is borrowed mutably, so it aliases neither `a` nor `b`; with
    // `beta == 0` matrixmultiply does not read C.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            a_strides.row as isize,
            a_strides.col as isize,
            b.as_ptr(),
            b_strides.row as isize,
            b_strides.col as isize,
            beta,
            c.as_mut_ptr(),
            ldc as isize,
            1,
        );
    }
}
