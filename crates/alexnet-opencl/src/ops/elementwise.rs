//! Fill, copy, axpy and friends, activations, per-channel bias, and the sum reduction.

use alexnet_core::{Activation, ChannelLayout, Result};
use opencl3::command_queue::CommandQueue;

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};
use crate::error::ClResultExt;

pub(crate) fn fill(be: &OpenClBackend, buf: &mut ClBuffer, value: f32) -> Result<()> {
    be.check("fill", "buffer", buf, buf.len())?;
    let n = buf.len();
    be.launch_1d(Kern::Fill, n, &[Arg::Buf(buf), Arg::U32(u("length", n)?), Arg::F32(value)])
}

pub(crate) fn copy(be: &OpenClBackend, queue: &CommandQueue, src: &ClBuffer, dst: &mut ClBuffer) -> Result<()> {
    be.check("copy", "src", src, src.len())?;
    be.check("copy", "dst", dst, src.len())?;
    if !src.is_empty() {
        let bytes = src.len() * std::mem::size_of::<f32>();
        // SAFETY: both buffers hold at least `bytes` bytes; the queue orders the copy.
        unsafe { queue.enqueue_copy_buffer(src.mem(), dst.mem_mut(), 0, 0, bytes, &[]) }.cl("clEnqueueCopyBuffer")?;
    }
    Ok(())
}

pub(crate) fn axpy(be: &OpenClBackend, alpha: f32, x: &ClBuffer, y: &mut ClBuffer) -> Result<()> {
    let n = x.len();
    be.check("axpy", "x", x, n)?;
    be.check("axpy", "y", y, n)?;
    be.launch_1d(Kern::Axpy, n, &[Arg::U32(u("length", n)?), Arg::F32(alpha), Arg::Buf(x), Arg::Buf(y)])
}

pub(crate) fn add_scaled(
    be: &OpenClBackend,
    alpha: f32,
    a: &ClBuffer,
    beta: f32,
    b: &ClBuffer,
    out: &mut ClBuffer,
) -> Result<()> {
    let n = a.len();
    be.check("add_scaled", "a", a, n)?;
    be.check("add_scaled", "b", b, n)?;
    be.check("add_scaled", "out", out, n)?;
    be.launch_1d(
        Kern::AddScaled,
        n,
        &[Arg::U32(u("length", n)?), Arg::F32(alpha), Arg::Buf(a), Arg::F32(beta), Arg::Buf(b), Arg::Buf(out)],
    )
}

pub(crate) fn scale(be: &OpenClBackend, alpha: f32, x: &ClBuffer, out: &mut ClBuffer) -> Result<()> {
    let n = x.len();
    be.check("scale", "x", x, n)?;
    be.check("scale", "out", out, n)?;
    be.launch_1d(Kern::Scale, n, &[Arg::U32(u("length", n)?), Arg::F32(alpha), Arg::Buf(x), Arg::Buf(out)])
}

pub(crate) fn mul(be: &OpenClBackend, a: &ClBuffer, b: &ClBuffer, out: &mut ClBuffer) -> Result<()> {
    let n = a.len();
    be.check("mul", "a", a, n)?;
    be.check("mul", "b", b, n)?;
    be.check("mul", "out", out, n)?;
    be.launch_1d(Kern::Mul, n, &[Arg::U32(u("length", n)?), Arg::Buf(a), Arg::Buf(b), Arg::Buf(out)])
}

/// Two passes: up to `wg` work-groups write partial sums, then one work-group adds them.
pub(crate) fn sum(be: &OpenClBackend, x: &ClBuffer) -> Result<f32> {
    let n = x.len();
    be.check("sum", "x", x, n)?;
    if n == 0 {
        return Ok(0.0);
    }
    let groups = n.div_ceil(be.wg()).min(be.wg());
    let partial = be.scratch(groups)?;
    be.launch_groups(Kern::ReduceSum, groups, &[Arg::U32(u("length", n)?), Arg::Buf(x), Arg::Buf(&partial)])?;
    let total = be.scratch(1)?;
    be.launch_groups(Kern::ReduceSum, 1, &[Arg::U32(groups as u32), Arg::Buf(&partial), Arg::Buf(&total)])?;
    let mut host = [0.0f32];
    alexnet_core::Backend::download(be, &total, &mut host)?;
    Ok(host[0])
}

fn activation_code(f: Activation) -> u32 {
    match f {
        Activation::Relu => 0,
        Activation::Sigmoid => 1,
        Activation::Tanh => 2,
    }
}

pub(crate) fn activation_forward(be: &OpenClBackend, f: Activation, x: &ClBuffer, y: &mut ClBuffer) -> Result<()> {
    let n = x.len();
    be.check("activation_forward", "x", x, n)?;
    be.check("activation_forward", "y", y, n)?;
    be.launch_1d(
        Kern::ActivationForward,
        n,
        &[Arg::U32(u("length", n)?), Arg::U32(activation_code(f)), Arg::Buf(x), Arg::Buf(y)],
    )
}

pub(crate) fn activation_backward(
    be: &OpenClBackend,
    f: Activation,
    x: &ClBuffer,
    y: &ClBuffer,
    dy: &ClBuffer,
    dx: &mut ClBuffer,
) -> Result<()> {
    let n = x.len();
    for (name, buf) in [("x", x), ("y", y), ("dy", dy), ("dx", &*dx)] {
        be.check("activation_backward", name, buf, n)?;
    }
    be.launch_1d(
        Kern::ActivationBackward,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::U32(activation_code(f)),
            Arg::Buf(x),
            Arg::Buf(y),
            Arg::Buf(dy),
            Arg::Buf(dx),
        ],
    )
}

pub(crate) fn add_channel_bias(
    be: &OpenClBackend,
    layout: ChannelLayout,
    bias: &ClBuffer,
    y: &mut ClBuffer,
) -> Result<()> {
    be.check("add_channel_bias", "bias", bias, layout.channels)?;
    be.check("add_channel_bias", "y", y, layout.numel())?;
    let n = layout.numel();
    be.launch_1d(
        Kern::AddChannelBias,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::U32(u("channels", layout.channels)?),
            Arg::U32(u("inner", layout.inner)?),
            Arg::Buf(bias),
            Arg::Buf(y),
        ],
    )
}

pub(crate) fn channel_bias_grad(
    be: &OpenClBackend,
    layout: ChannelLayout,
    dy: &ClBuffer,
    dbias: &mut ClBuffer,
) -> Result<()> {
    be.check("channel_bias_grad", "dy", dy, layout.numel())?;
    be.check("channel_bias_grad", "dbias", dbias, layout.channels)?;
    be.launch_groups(
        Kern::ChannelBiasGrad,
        layout.channels,
        &[
            Arg::U32(u("outer", layout.outer)?),
            Arg::U32(u("channels", layout.channels)?),
            Arg::U32(u("inner", layout.inner)?),
            Arg::Buf(dy),
            Arg::Buf(dbias),
        ],
    )
}

#[cfg(test)]
mod tests {
    use alexnet_core::{Activation, Backend, ChannelLayout, Error};

    use crate::testing::{assert_close, backend, check_vjp, down, random, to_f64, up};

    #[test]
    fn fill_copy_axpy_scale_mul_add_scaled() {
        let Some(be) = backend() else { return };
        // 1000 is not a multiple of the work-group size: the tail must be handled.
        let n = 1000;
        let (a, b) = (random(n, 1), random(n, 2));
        let (da, db) = (up(&be, &a), up(&be, &b));
        let mut out = be.zeros(n).unwrap();
        assert!(down(&be, &out).iter().all(|&v| v == 0.0));
        be.fill(&mut out, 2.5).unwrap();
        assert!(down(&be, &out).iter().all(|&v| v == 2.5));
        be.copy(&da, &mut out).unwrap();
        assert_eq!(down(&be, &out), a);
        be.axpy(-0.5, &db, &mut out).unwrap();
        assert_close(
            "axpy",
            &down(&be, &out),
            &a.iter().zip(&b).map(|(&x, &y)| f64::from(x) - 0.5 * f64::from(y)).collect::<Vec<_>>(),
            1e-6,
        );
        be.add_scaled(2.0, &da, -3.0, &db, &mut out).unwrap();
        assert_close(
            "add_scaled",
            &down(&be, &out),
            &a.iter().zip(&b).map(|(&x, &y)| 2.0 * f64::from(x) - 3.0 * f64::from(y)).collect::<Vec<_>>(),
            1e-6,
        );
        be.scale(0.25, &da, &mut out).unwrap();
        assert_close("scale", &down(&be, &out), &a.iter().map(|&x| 0.25 * f64::from(x)).collect::<Vec<_>>(), 1e-7);
        be.mul(&da, &db, &mut out).unwrap();
        assert_close(
            "mul",
            &down(&be, &out),
            &a.iter().zip(&b).map(|(&x, &y)| f64::from(x) * f64::from(y)).collect::<Vec<_>>(),
            1e-7,
        );
    }

    #[test]
    fn sum_matches_f64_sum_across_sizes() {
        let Some(be) = backend() else { return };
        for n in [0, 1, 255, 256, 257, 70_000, 300_001] {
            let x = random(n, n as u64);
            let want: f64 = to_f64(&x).iter().sum();
            let got = be.sum(&up(&be, &x)).unwrap();
            // Absolute tolerance scaled by the sum of magnitudes (the conditioning of a sum).
            let mag: f64 = to_f64(&x).iter().map(|v| v.abs()).sum();
            assert!((f64::from(got) - want).abs() <= 1e-6 * mag + 1e-6, "n = {n}: got {got}, want {want}");
        }
    }

    fn act_ref(f: Activation, x: f64) -> f64 {
        match f {
            Activation::Relu => x.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
        }
    }

    fn act_grad_ref(f: Activation, x: f64) -> f64 {
        match f {
            Activation::Relu => f64::from(u8::from(x > 0.0)),
            Activation::Sigmoid => act_ref(f, x) * (1.0 - act_ref(f, x)),
            Activation::Tanh => 1.0 - x.tanh().powi(2),
        }
    }

    #[test]
    fn activations_forward_backward() {
        let Some(be) = backend() else { return };
        let n = 777;
        let x: Vec<f32> = random(n, 3).iter().map(|v| v * 4.0).collect();
        let dy = random(n, 4);
        let (dxb, ddy) = (up(&be, &x), up(&be, &dy));
        for f in [Activation::Relu, Activation::Sigmoid, Activation::Tanh] {
            let mut y = be.zeros(n).unwrap();
            be.activation_forward(f, &dxb, &mut y).unwrap();
            let want: Vec<f64> = x.iter().map(|&v| act_ref(f, v.into())).collect();
            assert_close(&format!("{f:?} forward"), &down(&be, &y), &want, 1e-5);
            let mut dx = be.zeros(n).unwrap();
            be.activation_backward(f, &dxb, &y, &ddy, &mut dx).unwrap();
            let want: Vec<f64> = x.iter().zip(&dy).map(|(&v, &g)| f64::from(g) * act_grad_ref(f, v.into())).collect();
            assert_close(&format!("{f:?} backward"), &down(&be, &dx), &want, 1e-5);
            // The reference derivative itself, by central differences (away from ReLU's kink).
            let xs: Vec<f64> = to_f64(&x[..16]).iter().map(|v| if v.abs() < 1e-3 { 0.5 } else { *v }).collect();
            let dys = to_f64(&dy[..16]);
            let dxs: Vec<f64> = xs.iter().zip(&dys).map(|(&v, &g)| g * act_grad_ref(f, v)).collect();
            check_vjp("activation", |x| x.iter().map(|&v| act_ref(f, v)).collect(), &xs, &dys, &dxs);
        }
    }

    #[test]
    fn channel_bias_add_and_grad() {
        let Some(be) = backend() else { return };
        for layout in [
            ChannelLayout { outer: 3, channels: 5, inner: 7 },
            ChannelLayout { outer: 2, channels: 96, inner: 55 * 55 },
            ChannelLayout { outer: 4, channels: 10, inner: 1 },
        ] {
            let n = layout.numel();
            let (y0, bias) = (random(n, 5), random(layout.channels, 6));
            let mut y = up(&be, &y0);
            be.add_channel_bias(layout, &up(&be, &bias), &mut y).unwrap();
            let at = |i: usize| (i / layout.inner) % layout.channels;
            let want: Vec<f64> = (0..n).map(|i| f64::from(y0[i]) + f64::from(bias[at(i)])).collect();
            assert_close("add_channel_bias", &down(&be, &y), &want, 1e-6);
            let mut db = be.zeros(layout.channels).unwrap();
            be.channel_bias_grad(layout, &up(&be, &y0), &mut db).unwrap();
            let mut want = vec![0.0f64; layout.channels];
            for (i, &v) in y0.iter().enumerate() {
                want[at(i)] += f64::from(v);
            }
            assert_close("channel_bias_grad", &down(&be, &db), &want, 1e-4);
        }
    }

    #[test]
    fn length_mismatch_and_foreign_buffers_are_errors() {
        let Some(be) = backend() else { return };
        let (a, mut b) = (be.zeros(4).unwrap(), be.zeros(5).unwrap());
        assert_eq!(be.axpy(1.0, &a, &mut b), Err(Error::BufferSize { op: "axpy", buffer: "y", expected: 4, got: 5 }));
        let other = crate::OpenClBackend::new(&be.device_info().index.into()).unwrap();
        let foreign = other.zeros(5).unwrap();
        let err = be.copy(&foreign, &mut b).unwrap_err();
        assert!(err.to_string().contains("another OpenCL backend"), "{err}");
    }
}
