//! Max and average pooling, forward and backward (backward as a gather: no atomics).

use alexnet_core::{PoolGeom, PoolKind, Result, Shape4};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};

/// H, W, OH, OW, KH, KW, SH, SW, PH, PW as kernel arguments.
fn window_args(geom: &PoolGeom, input: Shape4, out: Shape4) -> Result<[Arg<'static>; 10]> {
    Ok([
        Arg::U32(u("height", input.h)?),
        Arg::U32(u("width", input.w)?),
        Arg::U32(u("output height", out.h)?),
        Arg::U32(u("output width", out.w)?),
        Arg::U32(u("window height", geom.window_h)?),
        Arg::U32(u("window width", geom.window_w)?),
        Arg::U32(u("stride height", geom.stride_h)?),
        Arg::U32(u("stride width", geom.stride_w)?),
        Arg::U32(u("padding height", geom.pad_h)?),
        Arg::U32(u("padding width", geom.pad_w)?),
    ])
}

pub(crate) fn forward(
    be: &OpenClBackend,
    kind: PoolKind,
    geom: &PoolGeom,
    input: Shape4,
    x: &ClBuffer,
    y: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "pool_forward";
    let out = geom.output_shape(input)?;
    be.check(OP, "x", x, input.numel())?;
    be.check(OP, "y", y, out.numel())?;
    let kern = match kind {
        PoolKind::Max => Kern::MaxPoolForward,
        PoolKind::Avg => Kern::AvgPoolForward,
    };
    let mut args = vec![Arg::U32(u("output length", out.numel())?), Arg::Buf(x), Arg::Buf(y)];
    args.extend(window_args(geom, input, out)?);
    be.launch_1d(kern, out.numel(), &args)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    be: &OpenClBackend,
    kind: PoolKind,
    geom: &PoolGeom,
    input: Shape4,
    x: &ClBuffer,
    y: &ClBuffer,
    dy: &ClBuffer,
    dx: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "pool_backward";
    let out = geom.output_shape(input)?;
    be.check(OP, "x", x, input.numel())?;
    be.check(OP, "y", y, out.numel())?;
    be.check(OP, "dy", dy, out.numel())?;
    be.check(OP, "dx", dx, input.numel())?;
    let mut args = vec![Arg::U32(u("input length", input.numel())?)];
    let kern = match kind {
        // The argmax is recomputed from x (first maximum in window order), so y is not needed.
        PoolKind::Max => {
            args.push(Arg::Buf(x));
            Kern::MaxPoolBackward
        }
        PoolKind::Avg => Kern::AvgPoolBackward,
    };
    args.extend([Arg::Buf(dy), Arg::Buf(dx)]);
    args.extend(window_args(geom, input, out)?);
    be.launch_1d(kern, input.numel(), &args)
}

#[cfg(test)]
mod tests {
    use alexnet_core::{Backend, PoolGeom, PoolKind, Rounding, Shape4};

    use crate::testing::{assert_close, backend, check_vjp, down, random, to_f64, up};

    /// For each output, the in-input cells of its clipped window in row-major order.
    fn windows(g: &PoolGeom, s: Shape4) -> Vec<Vec<usize>> {
        let out = g.output_shape(s).unwrap();
        let mut all = Vec::with_capacity(out.numel());
        for plane in 0..s.n * s.c {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let mut cells = Vec::new();
                    for ky in 0..g.window_h {
                        for kx in 0..g.window_w {
                            let iy = (oy * g.stride_h + ky) as isize - g.pad_h as isize;
                            let ix = (ox * g.stride_w + kx) as isize - g.pad_w as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w {
                                cells.push(plane * s.h * s.w + iy as usize * s.w + ix as usize);
                            }
                        }
                    }
                    all.push(cells);
                }
            }
        }
        all
    }

    fn ref_forward(kind: PoolKind, wins: &[Vec<usize>], x: &[f64]) -> Vec<f64> {
        wins.iter()
            .map(|cells| match kind {
                PoolKind::Max => cells.iter().map(|&i| x[i]).fold(f64::NEG_INFINITY, f64::max),
                PoolKind::Avg => cells.iter().map(|&i| x[i]).sum::<f64>() / cells.len() as f64,
            })
            .collect()
    }

    fn ref_backward(kind: PoolKind, wins: &[Vec<usize>], x: &[f64], dy: &[f64]) -> Vec<f64> {
        let mut dx = vec![0.0; x.len()];
        for (cells, &g) in wins.iter().zip(dy) {
            match kind {
                PoolKind::Max => {
                    // First maximum in window order.
                    let best = cells.iter().copied().reduce(|b, i| if x[i] > x[b] { i } else { b }).unwrap();
                    dx[best] += g;
                }
                PoolKind::Avg => cells.iter().for_each(|&i| dx[i] += g / cells.len() as f64),
            }
        }
        dx
    }

    fn check_case(kind: PoolKind, g: PoolGeom, s: Shape4, x: Vec<f32>, gradcheck: bool) {
        let Some(be) = backend() else { return };
        let out = g.output_shape(s).unwrap();
        let wins = windows(&g, s);
        let dy = random(out.numel(), 9);
        let (xd, dyd) = (to_f64(&x), to_f64(&dy));
        let xb = up(&be, &x);
        let mut y = be.zeros(out.numel()).unwrap();
        be.pool_forward(kind, &g, s, &xb, &mut y).unwrap();
        assert_close(&format!("{kind:?} pool forward {g:?} {s}"), &down(&be, &y), &ref_forward(kind, &wins, &xd), 1e-6);
        let mut dx = be.upload(&vec![f32::NAN; s.numel()]).unwrap();
        be.pool_backward(kind, &g, s, &xb, &y, &up(&be, &dy), &mut dx).unwrap();
        let rdx = ref_backward(kind, &wins, &xd, &dyd);
        assert_close(&format!("{kind:?} pool backward {g:?} {s}"), &down(&be, &dx), &rdx, 1e-5);
        if gradcheck {
            check_vjp("pool reference", |x| ref_forward(kind, &wins, x), &xd, &dyd, &rdx);
        }
    }

    fn shape(n: usize, c: usize, h: usize, w: usize) -> Shape4 {
        Shape4::new(n, c, h, w).unwrap()
    }

    #[test]
    fn overlapping_padded_and_ceil_windows() {
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for (g, s) in [
                (PoolGeom::square(3, 2, 0, Rounding::Floor).unwrap(), shape(2, 3, 9, 8)),
                (PoolGeom::square(3, 2, 1, Rounding::Ceil).unwrap(), shape(1, 2, 6, 7)),
                (PoolGeom::square(2, 2, 0, Rounding::Ceil).unwrap(), shape(1, 2, 7, 7)),
                (
                    PoolGeom {
                        window_h: 3,
                        window_w: 2,
                        stride_h: 1,
                        stride_w: 3,
                        pad_h: 1,
                        pad_w: 0,
                        rounding: Rounding::Floor,
                    },
                    shape(2, 1, 5, 8),
                ),
            ] {
                check_case(kind, g, s, random(s.numel(), 8), true);
            }
        }
    }

    /// Ties: the gradient goes to the first maximum only, and overlapping windows accumulate.
    #[test]
    fn max_pool_ties_route_to_first_maximum() {
        let s = shape(1, 1, 4, 4);
        let g = PoolGeom::square(2, 1, 0, Rounding::Floor).unwrap();
        check_case(PoolKind::Max, g, s, vec![1.0; 16], false);
        let x = vec![0.0, 5.0, 5.0, 0.0, 5.0, 5.0, 0.0, 0.0, 1.0, 2.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        check_case(PoolKind::Max, g, s, x, false);
    }
}
