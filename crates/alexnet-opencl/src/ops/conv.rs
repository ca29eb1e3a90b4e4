//! Convolution with groups as im2col + batched GEMM, in chunks of images.
//!
//! One chunk's column matrix `col[img][g][K][P]` (K = in-channels per group x kernel area,
//! P = output positions) is built by `im2col`, then one batched GEMM launch covers every
//! (image, group) pair. The chunk size keeps the column buffer within [`COL_BUDGET`].

use alexnet_core::{Conv2dGeom, Result, Shape4};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};
use crate::ops::gemm::{MatView, gemm_batched};

/// Largest column buffer, in elements (64 MiB of f32).
const COL_BUDGET: usize = 16 << 20;

/// Sizes shared by the three convolution kernels.
struct Plan {
    input: Shape4,
    out: Shape4,
    groups: usize,
    /// Rows of one group's column block: in-channels per group x kernel area.
    k: usize,
    /// Output positions per image.
    p: usize,
    cout_g: usize,
    /// Images per chunk.
    chunk: usize,
}

impl Plan {
    fn new(geom: &Conv2dGeom, input: Shape4) -> Result<Self> {
        let out = geom.output_shape(input)?;
        let k = geom.in_per_group() * geom.kernel_h * geom.kernel_w;
        let p = out.h * out.w;
        let per_image = geom.groups * k * p;
        let chunk = (COL_BUDGET / per_image.max(1)).clamp(1, input.n);
        Ok(Self { input, out, groups: geom.groups, k, p, cout_g: geom.out_per_group(), chunk })
    }

    /// `(first image, image count)` of each chunk.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.input.n).step_by(self.chunk).map(|i0| (i0, self.chunk.min(self.input.n - i0)))
    }

    fn col_len(&self) -> usize {
        self.chunk * self.groups * self.k * self.p
    }

    /// The window geometry as kernel arguments: C, H, W, KH, KW, SH, SW, PH, PW, OH, OW.
    fn window_args(&self, geom: &Conv2dGeom) -> Result<[Arg<'static>; 11]> {
        let s = self.input;
        Ok([
            Arg::U32(u("channels", s.c)?),
            Arg::U32(u("height", s.h)?),
            Arg::U32(u("width", s.w)?),
            Arg::U32(u("kernel height", geom.kernel_h)?),
            Arg::U32(u("kernel width", geom.kernel_w)?),
            Arg::U32(u("stride height", geom.stride_h)?),
            Arg::U32(u("stride width", geom.stride_w)?),
            Arg::U32(u("padding height", geom.pad_h)?),
            Arg::U32(u("padding width", geom.pad_w)?),
            Arg::U32(u("output height", self.out.h)?),
            Arg::U32(u("output width", self.out.w)?),
        ])
    }

    fn im2col(
        &self,
        be: &OpenClBackend,
        geom: &Conv2dGeom,
        x: &ClBuffer,
        (i0, nb): (usize, usize),
        col: &ClBuffer,
    ) -> Result<()> {
        let total = nb * self.groups * self.k * self.p;
        let mut args = vec![
            Arg::U32(u("column length", total)?),
            Arg::Buf(x),
            Arg::U32(u("offset", i0 * self.input.image_len())?),
        ];
        args.extend(self.window_args(geom)?);
        args.push(Arg::Buf(col));
        be.launch_1d(Kern::Im2col, total, &args)
    }

    /// The weight of group `g` as a `cout_g x k` matrix.
    fn weight<'a>(&self, w: &'a ClBuffer) -> MatView<'a> {
        MatView { buf: w, offset: 0, ld: self.k, outer: 0, inner: self.cout_g * self.k }
    }

    /// The output (or output gradient) of (image i0 + zo, group zi) as a `cout_g x p` matrix.
    fn output<'a>(&self, y: &'a ClBuffer, i0: usize) -> MatView<'a> {
        let image = self.out.image_len();
        MatView { buf: y, offset: i0 * image, ld: self.p, outer: image, inner: self.cout_g * self.p }
    }

    /// The columns of (chunk image zo, group zi) as a `k x p` matrix.
    fn columns<'a>(&self, col: &'a ClBuffer) -> MatView<'a> {
        MatView { buf: col, offset: 0, ld: self.p, outer: self.groups * self.k * self.p, inner: self.k * self.p }
    }
}

pub(crate) fn forward(
    be: &OpenClBackend,
    geom: &Conv2dGeom,
    input: Shape4,
    x: &ClBuffer,
    w: &ClBuffer,
    bias: Option<&ClBuffer>,
    y: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "conv2d_forward";
    let plan = Plan::new(geom, input)?;
    be.check(OP, "w", w, geom.weight_len())?;
    be.check(OP, "x", x, input.numel())?;
    be.check(OP, "y", y, plan.out.numel())?;
    if let Some(bias) = bias {
        be.check(OP, "bias", bias, geom.out_channels)?;
    }
    let col = be.scratch(plan.col_len())?;
    for (i0, nb) in plan.chunks() {
        plan.im2col(be, geom, x, (i0, nb), &col)?;
        // y[img, g] (cout_g x p) = W[g] (cout_g x k) * col[img, g] (k x p)
        gemm_batched(
            be,
            false,
            false,
            (plan.cout_g, plan.p, plan.k),
            1.0,
            plan.weight(w),
            plan.columns(&col),
            0.0,
            plan.output(y, i0),
            (nb, plan.groups),
        )?;
    }
    if let Some(bias) = bias {
        crate::ops::elementwise::add_channel_bias(be, plan.out.into(), bias, y)?;
    }
    Ok(())
}

pub(crate) fn backward_input(
    be: &OpenClBackend,
    geom: &Conv2dGeom,
    input: Shape4,
    w: &ClBuffer,
    dy: &ClBuffer,
    dx: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "conv2d_backward_input";
    let plan = Plan::new(geom, input)?;
    be.check(OP, "w", w, geom.weight_len())?;
    be.check(OP, "dy", dy, plan.out.numel())?;
    be.check(OP, "dx", dx, input.numel())?;
    let col = be.scratch(plan.col_len())?;
    for (i0, nb) in plan.chunks() {
        // dcol[img, g] (k x p) = W[g]^T (k x cout_g) * dy[img, g] (cout_g x p)
        gemm_batched(
            be,
            true,
            false,
            (plan.k, plan.p, plan.cout_g),
            1.0,
            plan.weight(w),
            plan.output(dy, i0),
            0.0,
            plan.columns(&col),
            (nb, plan.groups),
        )?;
        let total = nb * input.image_len();
        let mut args = vec![Arg::U32(u("input length", total)?), Arg::Buf(&col)];
        args.extend(plan.window_args(geom)?);
        args.extend([Arg::Buf(dx), Arg::U32(u("offset", i0 * input.image_len())?)]);
        be.launch_1d(Kern::Col2im, total, &args)?;
    }
    Ok(())
}

pub(crate) fn backward_weight(
    be: &OpenClBackend,
    geom: &Conv2dGeom,
    input: Shape4,
    x: &ClBuffer,
    dy: &ClBuffer,
    dw: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "conv2d_backward_weight";
    let plan = Plan::new(geom, input)?;
    be.check(OP, "dw", dw, geom.weight_len())?;
    be.check(OP, "x", x, input.numel())?;
    be.check(OP, "dy", dy, plan.out.numel())?;
    let col = be.scratch(plan.col_len())?;
    for (i0, nb) in plan.chunks() {
        plan.im2col(be, geom, x, (i0, nb), &col)?;
        // dW[g] (cout_g x k) (+)= dy[img, g] (cout_g x p) * col[img, g]^T (p x k), image by
        // image so that no two work-items accumulate into the same weight.
        for i in 0..nb {
            let dy_view = MatView { outer: 0, ..plan.output(dy, i0 + i) };
            let col_view = MatView { offset: i * plan.groups * plan.k * plan.p, outer: 0, ..plan.columns(&col) };
            let beta = if i0 + i == 0 { 0.0 } else { 1.0 };
            gemm_batched(
                be,
                false,
                true,
                (plan.cout_g, plan.k, plan.p),
                1.0,
                dy_view,
                col_view,
                beta,
                plan.weight(dw),
                (1, plan.groups),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alexnet_core::{Backend, Conv2dGeom, Rounding, Shape4};

    use crate::testing::{assert_close, backend, check_vjp, down, random, to_f64, up};

    /// Visits every (output index, weight index, input index or None for padding) triple.
    fn for_each_tap(g: &Conv2dGeom, s: Shape4, mut f: impl FnMut(usize, usize, Option<usize>)) {
        let out = g.output_shape(s).unwrap();
        let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
        for n in 0..s.n {
            for o in 0..g.out_channels {
                let grp = o / cout_g;
                for oy in 0..out.h {
                    for ox in 0..out.w {
                        let yi = out.index(n, o, oy, ox);
                        for ci in 0..cin_g {
                            for ky in 0..g.kernel_h {
                                for kx in 0..g.kernel_w {
                                    let wi = ((o * cin_g + ci) * g.kernel_h + ky) * g.kernel_w + kx;
                                    let iy = (oy * g.stride_h + ky) as isize - g.pad_h as isize;
                                    let ix = (ox * g.stride_w + kx) as isize - g.pad_w as isize;
                                    let inside = iy >= 0 && ix >= 0 && (iy as usize) < s.h && (ix as usize) < s.w;
                                    let xi = inside.then(|| s.index(n, grp * cin_g + ci, iy as usize, ix as usize));
                                    f(yi, wi, xi);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn ref_forward(g: &Conv2dGeom, s: Shape4, x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
        let out = g.output_shape(s).unwrap();
        let mut y: Vec<f64> = (0..out.numel()).map(|i| b[(i / (out.h * out.w)) % out.c]).collect();
        for_each_tap(g, s, |yi, wi, xi| {
            if let Some(xi) = xi {
                y[yi] += w[wi] * x[xi];
            }
        });
        y
    }

    fn ref_backward(g: &Conv2dGeom, s: Shape4, x: &[f64], w: &[f64], dy: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
        for_each_tap(g, s, |yi, wi, xi| {
            if let Some(xi) = xi {
                dx[xi] += w[wi] * dy[yi];
                dw[wi] += x[xi] * dy[yi];
            }
        });
        (dx, dw)
    }

    fn check_case(g: Conv2dGeom, s: Shape4, gradcheck: bool) {
        let Some(be) = backend() else { return };
        let out = g.output_shape(s).unwrap();
        let (x, w, b, dy) =
            (random(s.numel(), 1), random(g.weight_len(), 2), random(g.out_channels, 3), random(out.numel(), 4));
        let (xd, wd, bd, dyd) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
        let mut y = be.zeros(out.numel()).unwrap();
        be.conv2d_forward(&g, s, &up(&be, &x), &up(&be, &w), Some(&up(&be, &b)), &mut y).unwrap();
        assert_close(&format!("conv forward {g:?} {s}"), &down(&be, &y), &ref_forward(&g, s, &xd, &wd, &bd), 1e-4);
        let (rdx, rdw) = ref_backward(&g, s, &xd, &wd, &dyd);
        let mut dx = be.upload(&vec![f32::NAN; s.numel()]).unwrap();
        be.conv2d_backward_input(&g, s, &up(&be, &w), &up(&be, &dy), &mut dx).unwrap();
        assert_close(&format!("conv dx {g:?} {s}"), &down(&be, &dx), &rdx, 1e-4);
        let mut dw = be.upload(&vec![f32::NAN; g.weight_len()]).unwrap();
        be.conv2d_backward_weight(&g, s, &up(&be, &x), &up(&be, &dy), &mut dw).unwrap();
        assert_close(&format!("conv dw {g:?} {s}"), &down(&be, &dw), &rdw, 1e-4);
        if gradcheck {
            check_vjp("conv reference dx", |x| ref_forward(&g, s, x, &wd, &bd), &xd, &dyd, &rdx);
            check_vjp("conv reference dw", |w| ref_forward(&g, s, &xd, w, &bd), &wd, &dyd, &rdw);
        }
    }

    fn shape(n: usize, c: usize, h: usize, w: usize) -> Shape4 {
        Shape4::new(n, c, h, w).unwrap()
    }

    #[test]
    fn small_geometries_with_groups_stride_padding() {
        check_case(Conv2dGeom::square(3, 4, 3, 1, 1, 1).unwrap(), shape(2, 3, 5, 6), true);
        check_case(Conv2dGeom::square(4, 6, 3, 2, 1, 2).unwrap(), shape(3, 4, 7, 7), true);
        check_case(
            Conv2dGeom::square(2, 2, 2, 3, 0, 1).unwrap().with_rounding(Rounding::Ceil),
            shape(1, 2, 7, 8),
            true,
        );
        let rect = Conv2dGeom {
            kernel_h: 3,
            kernel_w: 2,
            stride_h: 2,
            stride_w: 1,
            pad_h: 0,
            pad_w: 1,
            ..Conv2dGeom::square(6, 3, 1, 1, 0, 3).unwrap()
        };
        check_case(rect, shape(2, 6, 6, 5), true);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let Some(be) = backend() else { return };
        let g = Conv2dGeom::square(3, 4, 3, 1, 1, 1).unwrap();
        let s = shape(1, 3, 5, 5);
        let (x, w) = (be.zeros(s.numel()).unwrap(), be.zeros(g.weight_len() - 1).unwrap());
        let mut y = be.zeros(4 * 25).unwrap();
        let err = be.conv2d_forward(&g, s, &x, &w, None, &mut y).unwrap_err();
        assert!(matches!(err, alexnet_core::Error::BufferSize { buffer: "w", .. }), "{err}");
        let err = be.conv2d_forward(&g, shape(1, 2, 5, 5), &x, &w, None, &mut y).unwrap_err();
        assert!(matches!(err, alexnet_core::Error::ShapeMismatch { .. }), "{err}");
    }
}
