//! Element-wise kernels on slices with ndarray's `Zip`, parallel (rayon) above a size
//! threshold so that tiny tensors do not pay for thread hand-off.

use alexnet_core::Activation;
use ndarray::{ArrayView1, ArrayViewMut1, Zip};
use rayon::prelude::*;

/// Below this many elements a kernel runs on the calling thread.
pub(crate) const PARALLEL_MIN: usize = 1 << 15;

/// `out[i] = f(x[i])`.
pub(crate) fn map1(out: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    let parallel = out.len() >= PARALLEL_MIN;
    let zip = Zip::from(ArrayViewMut1::from(out)).and(ArrayView1::from(x));
    if parallel { zip.par_for_each(|o, &x| *o = f(x)) } else { zip.for_each(|o, &x| *o = f(x)) }
}

/// `out[i] = f(a[i], b[i])`.
pub(crate) fn map2(out: &mut [f32], a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) {
    let parallel = out.len() >= PARALLEL_MIN;
    let zip = Zip::from(ArrayViewMut1::from(out)).and(ArrayView1::from(a)).and(ArrayView1::from(b));
    if parallel { zip.par_for_each(|o, &a, &b| *o = f(a, b)) } else { zip.for_each(|o, &a, &b| *o = f(a, b)) }
}

/// `out[i] = value`.
pub(crate) fn fill(out: &mut [f32], value: f32) {
    if out.len() >= PARALLEL_MIN {
        out.par_iter_mut().for_each(|o| *o = value);
    } else {
        out.fill(value);
    }
}

/// Sum with f64 partial sums.
pub(crate) fn sum(x: &[f32]) -> f64 {
    let chunk = |c: &[f32]| c.iter().map(|&v| f64::from(v)).sum::<f64>();
    if x.len() >= PARALLEL_MIN { x.par_chunks(PARALLEL_MIN / 4).map(chunk).sum() } else { chunk(x) }
}

/// `y = f(x)`.
pub(crate) fn activation_forward(f: Activation, x: &[f32], y: &mut [f32]) {
    match f {
        Activation::Relu => map1(y, x, |x| if x > 0.0 { x } else { 0.0 }),
        Activation::Sigmoid => map1(y, x, |x| 1.0 / (1.0 + (-x).exp())),
        Activation::Tanh => map1(y, x, f32::tanh),
    }
}

/// `dx = dy * f'(x)`, using the forward output `y` where it is cheaper.
pub(crate) fn activation_backward(f: Activation, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    match f {
        Activation::Relu => map2(dx, x, dy, |x, dy| if x > 0.0 { dy } else { 0.0 }),
        Activation::Sigmoid => map2(dx, y, dy, |y, dy| dy * y * (1.0 - y)),
        Activation::Tanh => map2(dx, y, dy, |y, dy| dy * (1.0 - y * y)),
    }
}

/// Inverted dropout with the shared counter RNG.
pub(crate) fn dropout_forward(
    p: f32,
    seed: u64,
    window: &alexnet_core::rng::MaskWindow,
    x: &[f32],
    mask: &mut [f32],
    y: &mut [f32],
) {
    let keep_scale = 1.0 / (1.0 - p);
    let parallel = y.len() >= PARALLEL_MIN;
    let zip = Zip::indexed(ArrayViewMut1::from(mask)).and(ArrayViewMut1::from(y)).and(ArrayView1::from(x));
    let body = |i: usize, m: &mut f32, y: &mut f32, &x: &f32| {
        *m = if alexnet_core::rng::dropout_keep(seed, window.global_index(i as u64), p) { keep_scale } else { 0.0 };
        *y = x * *m;
    };
    if parallel { zip.par_for_each(body) } else { zip.for_each(body) }
}

/// `w += v` after `v = momentum * v - weight_decay * lr * w - lr * grad`.
pub(crate) fn sgd_step(step: &alexnet_core::SgdStep, w: &mut [f32], grad: &[f32], velocity: &mut [f32]) {
    let (lr, momentum, decay) = (step.lr, step.momentum, step.weight_decay * step.lr);
    let parallel = w.len() >= PARALLEL_MIN;
    let zip = Zip::from(ArrayViewMut1::from(w)).and(ArrayViewMut1::from(velocity)).and(ArrayView1::from(grad));
    let body = |w: &mut f32, v: &mut f32, &g: &f32| {
        *v = momentum * *v - decay * *w - lr * g;
        *w += *v;
    };
    if parallel { zip.par_for_each(body) } else { zip.for_each(body) }
}
