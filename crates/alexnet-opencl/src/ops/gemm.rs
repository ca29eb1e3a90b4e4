//! GEMM: the trait's single row-major product, and the strided-batched form convolution uses,
//! on CLBlast or on our own kernel (the backend's [`GemmEngine`]).

use alexnet_core::Result;

use opencl3::memory::ClMem as _;

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::clblast::{GemmEngine, RawMatrix, clblast};
use crate::context::{Arg, Kern};

/// A matrix inside a buffer: element `(r, c)` of batch item `z` sits at
/// `offset + z * stride + r * ld + c` (rows and columns as stored).
#[derive(Clone, Copy)]
pub(crate) struct MatView<'a> {
    pub(crate) buf: &'a ClBuffer,
    pub(crate) offset: usize,
    pub(crate) ld: usize,
    pub(crate) stride: usize,
}

impl<'a> MatView<'a> {
    /// A single dense matrix with leading dimension `ld`.
    pub(crate) fn dense(buf: &'a ClBuffer, ld: usize) -> Self {
        Self { buf, offset: 0, ld, stride: 0 }
    }

    fn raw(&self) -> RawMatrix {
        RawMatrix { mem: self.buf.mem().get(), offset: self.offset, ld: self.ld, stride: self.stride }
    }
}

/// Batched `c = alpha * op(a) * op(b) + beta * c` over `batch` items, one launch (one CLBlast
/// call). Callers have checked that every view stays inside its buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_batched(
    be: &OpenClBackend,
    trans_a: bool,
    trans_b: bool,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: MatView<'_>,
    b: MatView<'_>,
    beta: f32,
    c: MatView<'_>,
    batch: usize,
) -> Result<()> {
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    // CLBlast rejects k = 0 (InvalidDimension); our kernel scales C by beta then.
    if be.gemm_engine() == GemmEngine::ClBlast && k > 0 {
        let lib = clblast()?;
        // SAFETY: the queue and buffers belong to this backend's context, and the callers
        // checked that every batch item of every view lies inside its buffer.
        unsafe {
            lib.gemm(be.queue().get(), (trans_a, trans_b), (m, n, k), alpha, a.raw(), b.raw(), beta, c.raw(), batch)
        }?;
        be.count_library_call();
        return Ok(());
    }
    let kern = match (trans_a, trans_b) {
        (false, false) => Kern::GemmNN,
        (false, true) => Kern::GemmNT,
        (true, false) => Kern::GemmTN,
        (true, true) => Kern::GemmTT,
    };
    let config = be.kernel_config();
    let rts = config.gemm_rts;
    let (tile_m, tile_n) = (rts * config.gemm_wpt, 4 * rts);
    let mut args =
        vec![Arg::U32(u("m", m)?), Arg::U32(u("n", n)?), Arg::U32(u("k", k)?), Arg::F32(alpha), Arg::F32(beta)];
    for view in [a, b, c] {
        args.extend([
            Arg::Buf(view.buf),
            Arg::U32(u("offset", view.offset)?),
            Arg::U32(u("leading dimension", view.ld)?),
            Arg::U32(u("batch stride", view.stride)?),
        ]);
    }
    be.launch(kern, &[n.div_ceil(tile_n) * rts, m.div_ceil(tile_m) * rts, batch], &[rts, rts, 1], &args)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    be: &OpenClBackend,
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &ClBuffer,
    b: &ClBuffer,
    beta: f32,
    c: &mut ClBuffer,
) -> Result<()> {
    be.check("gemm", "a", a, m * k)?;
    be.check("gemm", "b", b, k * n)?;
    be.check("gemm", "c", c, m * n)?;
    let lda = if trans_a { m } else { k };
    let ldb = if trans_b { k } else { n };
    gemm_batched(
        be,
        trans_a,
        trans_b,
        (m, n, k),
        alpha,
        MatView::dense(a, lda),
        MatView::dense(b, ldb),
        beta,
        MatView::dense(c, n),
        1,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use alexnet_core::Backend;

    use crate::testing::{assert_close, backend, backends, down, random, up};

    /// Direct f64 `alpha * op(a) * op(b) + beta * c`.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f64,
        a: &[f32],
        b: &[f32],
        beta: f64,
        c: &[f32],
    ) -> Vec<f64> {
        let at = |i: usize, p: usize| f64::from(if ta { a[p * m + i] } else { a[i * k + p] });
        let bt = |p: usize, j: usize| f64::from(if tb { b[j * k + p] } else { b[p * n + j] });
        (0..m * n)
            .map(|ij| {
                let (i, j) = (ij / n, ij % n);
                alpha * (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f64>() + beta * f64::from(c[ij])
            })
            .collect()
    }

    #[test]
    fn all_transposes_edge_tiles_alpha_beta() {
        for be in backends() {
            all_transposes_on(&be);
        }
    }

    /// Every transpose pair on shapes around the tiles, against the f64 formula.
    pub(crate) fn all_transposes_on(be: &crate::OpenClBackend) {
        // Sizes around the 64 and 128 tiles and the 16-deep k panel, plus degenerate ones.
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (64, 64, 16),
            (65, 63, 17),
            (129, 65, 33),
            (17, 130, 33),
            (100, 1, 50),
            (1, 100, 300),
            (5, 4, 0),
        ];
        for (s, &(m, n, k)) in shapes.iter().enumerate() {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let seed = 10 * s as u64;
                let (a, b, c0) = (random(m * k, seed), random(k * n, seed + 1), random(m * n, seed + 2));
                for (alpha, beta) in [(1.0f32, 0.0f32), (-0.5, 2.0)] {
                    let mut c = up(be, &c0);
                    be.gemm(ta, tb, m, n, k, alpha, &up(be, &a), &up(be, &b), beta, &mut c).unwrap();
                    let want = reference(ta, tb, m, n, k, alpha.into(), &a, &b, beta.into(), &c0);
                    assert_close(
                        &format!("gemm {m}x{n}x{k} ta={ta} tb={tb} a={alpha} b={beta} on {}", be.gemm_engine()),
                        &down(be, &c),
                        &want,
                        1e-4,
                    );
                }
            }
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        for be in backends() {
            let (a, b) = (random(6, 1), random(6, 2));
            let mut c = up(&be, &[f32::NAN; 4]);
            be.gemm(false, false, 2, 2, 3, 1.0, &up(&be, &a), &up(&be, &b), 0.0, &mut c).unwrap();
            assert!(down(&be, &c).iter().all(|v| v.is_finite()), "{}", be.gemm_engine());
        }
    }

    #[test]
    fn alexnet_fc8_shape_batch_1() {
        for be in backends() {
            // fc8 at batch 1: y (1 x 1000) = x (1 x 4096) * W^T, W stored 1000 x 4096.
            let (m, n, k) = (1, 1000, 4096);
            let (x, w) = (random(k, 7), random(n * k, 8));
            let mut y = be.zeros(n).unwrap();
            be.gemm(false, true, m, n, k, 1.0, &up(&be, &x), &up(&be, &w), 0.0, &mut y).unwrap();
            let want = reference(false, true, m, n, k, 1.0, &x, &w, 0.0, &vec![0.0; n]);
            assert_close(&format!("fc8 on {}", be.gemm_engine()), &down(&be, &y), &want, 1e-4);
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let Some(be) = backend() else { return };
        let (a, b) = (be.zeros(6).unwrap(), be.zeros(6).unwrap());
        let mut c = be.zeros(5).unwrap();
        let err = be.gemm(false, false, 2, 2, 3, 1.0, &a, &b, 0.0, &mut c).unwrap_err();
        assert_eq!(err, alexnet_core::Error::BufferSize { op: "gemm", buffer: "c", expected: 4, got: 5 });
    }
}
