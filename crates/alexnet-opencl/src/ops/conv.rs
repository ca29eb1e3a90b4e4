//! Convolution with groups as im2col + one GEMM per chunk of images, batched over groups.
//!
//! A chunk's column matrix `col[row][img][p]` (rows: input channels x kernel area, columns: the
//! chunk's images side by side, output positions within each) is built by `im2col`; one GEMM
//! launch batched over the groups then covers the whole chunk, with `n` (or `k`, for the weight
//! gradient) = images x positions: large products that keep a GPU busy, and the weight gradient
//! sums over the chunk's images inside the GEMM instead of one launch per image. Output-shaped
//! operands use the matching `[channel][img][p]` layout, converted from and to NCHW by one
//! `swap_outer` launch per chunk. The chunk size keeps the scratch within the backend's
//! [`OpenClBackend::scratch_budget`].

use alexnet_core::{Conv2dGeom, Result, Shape4};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};
use crate::ops::gemm::{MatView, gemm_batched};

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
    fn new(be: &OpenClBackend, geom: &Conv2dGeom, input: Shape4) -> Result<Self> {
        let out = geom.output_shape(input)?;
        let k = geom.in_per_group() * geom.kernel_h * geom.kernel_w;
        let p = out.h * out.w;
        // Columns plus the output in [channel][img][p] layout, per image.
        let per_image = (geom.groups * k + geom.out_channels) * p;
        let chunk = (be.scratch_budget() / per_image.max(1)).clamp(1, input.n);
        Ok(Self { input, out, groups: geom.groups, k, p, cout_g: geom.out_per_group(), chunk })
    }

    /// `(first image, image count)` of each chunk.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.input.n).step_by(self.chunk).map(|i0| (i0, self.chunk.min(self.input.n - i0)))
    }

    /// Scratch for one chunk's columns and one chunk's output in `[channel][img][p]` layout.
    fn scratch(&self, be: &OpenClBackend) -> Result<(ClBuffer, ClBuffer)> {
        Ok((be.scratch(self.chunk * self.groups * self.k * self.p)?, be.scratch(self.chunk * self.out.c * self.p)?))
    }

    /// The window geometry as kernel arguments: nb, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW.
    fn window_args(&self, geom: &Conv2dGeom, nb: usize) -> Result<[Arg<'static>; 12]> {
        let s = self.input;
        Ok([
            Arg::U32(u("images per chunk", nb)?),
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
        args.extend(self.window_args(geom, nb)?);
        args.push(Arg::Buf(col));
        be.launch_1d(Kern::Im2col, total, &args)
    }

    /// `dst[b][a][p] = src[src_off + (a * outer_b + b) * p]` for `a < outer_a`, `b < outer_b`.
    fn swap(
        &self,
        be: &OpenClBackend,
        (src, src_off): (&ClBuffer, usize),
        (outer_a, outer_b): (usize, usize),
        (dst, dst_off): (&ClBuffer, usize),
    ) -> Result<()> {
        let total = outer_a * outer_b * self.p;
        be.launch_1d(
            Kern::SwapOuter,
            total,
            &[
                Arg::U32(u("length", total)?),
                Arg::Buf(src),
                Arg::U32(u("offset", src_off)?),
                Arg::U32(u("extent", outer_a)?),
                Arg::U32(u("extent", outer_b)?),
                Arg::U32(u("positions", self.p)?),
                Arg::Buf(dst),
                Arg::U32(u("offset", dst_off)?),
            ],
        )
    }

    /// The weight of group `g` as a `cout_g x k` matrix.
    fn weight<'a>(&self, w: &'a ClBuffer) -> MatView<'a> {
        MatView { buf: w, offset: 0, ld: self.k, stride: self.cout_g * self.k }
    }

    /// Group `g` of output-shaped `[channel][img][p]` data of `nb` images: `cout_g x nb p`.
    fn output_t<'a>(&self, yt: &'a ClBuffer, nb: usize) -> MatView<'a> {
        MatView { buf: yt, offset: 0, ld: nb * self.p, stride: self.cout_g * nb * self.p }
    }

    /// Group `g`'s columns of `nb` images: `k x nb p`.
    fn columns<'a>(&self, col: &'a ClBuffer, nb: usize) -> MatView<'a> {
        MatView { buf: col, offset: 0, ld: nb * self.p, stride: self.k * nb * self.p }
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
    let plan = Plan::new(be, geom, input)?;
    be.check(OP, "w", w, geom.weight_len())?;
    be.check(OP, "x", x, input.numel())?;
    be.check(OP, "y", y, plan.out.numel())?;
    if let Some(bias) = bias {
        be.check(OP, "bias", bias, geom.out_channels)?;
    }
    let (col, yt) = plan.scratch(be)?;
    for (i0, nb) in plan.chunks() {
        plan.im2col(be, geom, x, (i0, nb), &col)?;
        // yt[g] (cout_g x nb p) = W[g] (cout_g x k) * col[g] (k x nb p)
        gemm_batched(
            be,
            false,
            false,
            (plan.cout_g, nb * plan.p, plan.k),
            1.0,
            plan.weight(w),
            plan.columns(&col, nb),
            0.0,
            plan.output_t(&yt, nb),
            plan.groups,
        )?;
        plan.swap(be, (&yt, 0), (plan.out.c, nb), (y, i0 * plan.out.image_len()))?;
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
    let plan = Plan::new(be, geom, input)?;
    be.check(OP, "w", w, geom.weight_len())?;
    be.check(OP, "dy", dy, plan.out.numel())?;
    be.check(OP, "dx", dx, input.numel())?;
    let (col, dyt) = plan.scratch(be)?;
    for (i0, nb) in plan.chunks() {
        plan.swap(be, (dy, i0 * plan.out.image_len()), (nb, plan.out.c), (&dyt, 0))?;
        // dcol[g] (k x nb p) = W[g]^T (k x cout_g) * dyt[g] (cout_g x nb p)
        gemm_batched(
            be,
            true,
            false,
            (plan.k, nb * plan.p, plan.cout_g),
            1.0,
            plan.weight(w),
            plan.output_t(&dyt, nb),
            0.0,
            plan.columns(&col, nb),
            plan.groups,
        )?;
        let total = nb * input.image_len();
        let mut args = vec![Arg::U32(u("input length", total)?), Arg::Buf(&col)];
        args.extend(plan.window_args(geom, nb)?);
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
    let plan = Plan::new(be, geom, input)?;
    be.check(OP, "dw", dw, geom.weight_len())?;
    be.check(OP, "x", x, input.numel())?;
    be.check(OP, "dy", dy, plan.out.numel())?;
    let (col, dyt) = plan.scratch(be)?;
    for (i0, nb) in plan.chunks() {
        plan.swap(be, (dy, i0 * plan.out.image_len()), (nb, plan.out.c), (&dyt, 0))?;
        plan.im2col(be, geom, x, (i0, nb), &col)?;
        // dW[g] (cout_g x k) (+)= dyt[g] (cout_g x nb p) * col[g]^T (nb p x k): the sum over the
        // chunk's images and positions is the GEMM's inner dimension.
        gemm_batched(
            be,
            false,
            true,
            (plan.cout_g, plan.k, nb * plan.p),
            1.0,
            plan.output_t(&dyt, nb),
            plan.columns(&col, nb),
            if i0 == 0 { 0.0 } else { 1.0 },
            plan.weight(dw),
            plan.groups,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use alexnet_core::{Backend, Conv2dGeom, Rounding, Shape4};

    use crate::OpenClBackend;
    use crate::testing::{assert_close, backend, backends, check_vjp, down, random, to_f64, up};

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

    /// Checks `g` on `s` on both GEMM engines, in one chunk and in chunks of one or two images.
    fn check_case(g: Conv2dGeom, s: Shape4, gradcheck: bool) {
        for mut be in backends() {
            check_on(&be, g, s);
            let out = g.output_shape(s).unwrap();
            be.set_scratch_budget((g.groups * g.in_per_group() * g.kernel_h * g.kernel_w + out.c) * out.h * out.w + 1);
            check_on(&be, g, s);
            be.set_scratch_budget(1);
            check_on(&be, g, s);
        }
        if gradcheck {
            let out = g.output_shape(s).unwrap();
            let (x, w, b, dy) =
                (random(s.numel(), 1), random(g.weight_len(), 2), random(g.out_channels, 3), random(out.numel(), 4));
            let (xd, wd, bd, dyd) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
            let (rdx, rdw) = ref_backward(&g, s, &xd, &wd, &dyd);
            check_vjp("conv reference dx", |x| ref_forward(&g, s, x, &wd, &bd), &xd, &dyd, &rdx);
            check_vjp("conv reference dw", |w| ref_forward(&g, s, &xd, w, &bd), &wd, &dyd, &rdw);
        }
    }

    fn check_on(be: &OpenClBackend, g: Conv2dGeom, s: Shape4) {
        let out = g.output_shape(s).unwrap();
        let (x, w, b, dy) =
            (random(s.numel(), 1), random(g.weight_len(), 2), random(g.out_channels, 3), random(out.numel(), 4));
        let (xd, wd, bd, dyd) = (to_f64(&x), to_f64(&w), to_f64(&b), to_f64(&dy));
        let mut y = be.zeros(out.numel()).unwrap();
        be.conv2d_forward(&g, s, &up(be, &x), &up(be, &w), Some(&up(be, &b)), &mut y).unwrap();
        let what =
            |part: &str| format!("conv {part} {g:?} {s} on {} in chunks of {}", be.gemm_engine(), be.scratch_budget());
        assert_close(&what("forward"), &down(be, &y), &ref_forward(&g, s, &xd, &wd, &bd), 1e-4);
        let (rdx, rdw) = ref_backward(&g, s, &xd, &wd, &dyd);
        let mut dx = be.upload(&vec![f32::NAN; s.numel()]).unwrap();
        be.conv2d_backward_input(&g, s, &up(be, &w), &up(be, &dy), &mut dx).unwrap();
        assert_close(&what("dx"), &down(be, &dx), &rdx, 1e-4);
        let mut dw = be.upload(&vec![f32::NAN; g.weight_len()]).unwrap();
        be.conv2d_backward_weight(&g, s, &up(be, &x), &up(be, &dy), &mut dw).unwrap();
        assert_close(&what("dw"), &down(be, &dw), &rdw, 1e-4);
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
