//! Local response normalisation across channels, both alpha conventions.

use alexnet_core::{LrnParams, Result, Shape4};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};

pub(crate) fn forward(
    be: &OpenClBackend,
    params: &LrnParams,
    input: Shape4,
    x: &ClBuffer,
    y: &mut ClBuffer,
    scale: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "lrn_forward";
    params.validate()?;
    let n = input.numel();
    be.check(OP, "x", x, n)?;
    be.check(OP, "y", y, n)?;
    be.check(OP, "scale", scale, n)?;
    be.launch_1d(
        Kern::LrnForward,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::U32(u("channels", input.c)?),
            Arg::U32(u("plane", input.plane_len())?),
            Arg::U32(u("LRN size", params.size / 2)?),
            Arg::F32(params.k),
            Arg::F32(params.sum_coefficient()),
            Arg::F32(params.beta),
            Arg::Buf(x),
            Arg::Buf(y),
            Arg::Buf(scale),
        ],
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    be: &OpenClBackend,
    params: &LrnParams,
    input: Shape4,
    x: &ClBuffer,
    y: &ClBuffer,
    scale: &ClBuffer,
    dy: &ClBuffer,
    dx: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "lrn_backward";
    params.validate()?;
    let n = input.numel();
    for (name, buf) in [("x", x), ("y", y), ("scale", scale), ("dy", dy), ("dx", &*dx)] {
        be.check(OP, name, buf, n)?;
    }
    be.launch_1d(
        Kern::LrnBackward,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::U32(u("channels", input.c)?),
            Arg::U32(u("plane", input.plane_len())?),
            Arg::U32(u("LRN size", params.size / 2)?),
            Arg::F32(params.sum_coefficient()),
            Arg::F32(params.beta),
            Arg::Buf(x),
            Arg::Buf(y),
            Arg::Buf(scale),
            Arg::Buf(dy),
            Arg::Buf(dx),
        ],
    )
}

#[cfg(test)]
mod tests {
    use alexnet_core::{AlphaConvention, Backend, LrnParams, Shape4};

    use crate::testing::{assert_close, backend, check_vjp, down, random, to_f64, up};

    /// Direct f64 LRN: returns (y, scale).
    fn ref_forward(p: &LrnParams, s: Shape4, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let alpha = f64::from(p.sum_coefficient());
        let mut y = vec![0.0; x.len()];
        let mut scale = vec![0.0; x.len()];
        for n in 0..s.n {
            for c in 0..s.c {
                let (lo, hi) = p.window(c, s.c);
                for i in 0..s.plane_len() {
                    let at = |ch: usize| (n * s.c + ch) * s.plane_len() + i;
                    let sum: f64 = (lo..=hi).map(|j| x[at(j)] * x[at(j)]).sum();
                    scale[at(c)] = f64::from(p.k) + alpha * sum;
                    y[at(c)] = x[at(c)] * scale[at(c)].powf(-f64::from(p.beta));
                }
            }
        }
        (y, scale)
    }

    /// Direct f64 LRN backward: the full sum over every output that each input touches.
    fn ref_backward(p: &LrnParams, s: Shape4, x: &[f64], dy: &[f64]) -> Vec<f64> {
        let (y, scale) = ref_forward(p, s, x);
        let (alpha, beta) = (f64::from(p.sum_coefficient()), f64::from(p.beta));
        let mut dx = vec![0.0; x.len()];
        for n in 0..s.n {
            for j in 0..s.c {
                let (lo, hi) = p.window(j, s.c);
                for i in 0..s.plane_len() {
                    let at = |ch: usize| (n * s.c + ch) * s.plane_len() + i;
                    dx[at(j)] += dy[at(j)] * scale[at(j)].powf(-beta);
                    for c in lo..=hi {
                        dx[at(c)] -= 2.0 * alpha * beta * x[at(c)] * dy[at(j)] * y[at(j)] / scale[at(j)];
                    }
                }
            }
        }
        dx
    }

    fn check_case(p: LrnParams, s: Shape4, amplitude: f32, gradcheck: bool) {
        let Some(be) = backend() else { return };
        let x: Vec<f32> = random(s.numel(), 11).iter().map(|v| v * amplitude).collect();
        let dy = random(s.numel(), 12);
        let (xd, dyd) = (to_f64(&x), to_f64(&dy));
        let (ry, rscale) = ref_forward(&p, s, &xd);
        let xb = up(&be, &x);
        let (mut y, mut scale) = (be.zeros(s.numel()).unwrap(), be.zeros(s.numel()).unwrap());
        be.lrn_forward(&p, s, &xb, &mut y, &mut scale).unwrap();
        assert_close("lrn y", &down(&be, &y), &ry, 1e-5);
        assert_close("lrn scale", &down(&be, &scale), &rscale, 1e-5);
        let mut dx = be.zeros(s.numel()).unwrap();
        be.lrn_backward(&p, s, &xb, &y, &scale, &up(&be, &dy), &mut dx).unwrap();
        let rdx = ref_backward(&p, s, &xd, &dyd);
        assert_close("lrn dx", &down(&be, &dx), &rdx, 1e-4);
        if gradcheck {
            check_vjp("lrn reference", |x| ref_forward(&p, s, x).0, &xd, &dyd, &rdx);
        }
    }

    #[test]
    fn both_conventions_with_strong_normalisation() {
        // Large alpha and inputs make the cross-channel term dominate, so a wrong window shows.
        for convention in [AlphaConvention::Paper, AlphaConvention::PyTorchCaffe] {
            let p = LrnParams::new(5, 0.5, 0.75, 2.0, convention).unwrap();
            check_case(p, Shape4::new(2, 7, 3, 2).unwrap(), 2.0, true);
            let p = LrnParams::new(3, 1.0, 0.5, 1.0, convention).unwrap();
            check_case(p, Shape4::new(1, 2, 2, 3).unwrap(), 2.0, true);
        }
    }
}
