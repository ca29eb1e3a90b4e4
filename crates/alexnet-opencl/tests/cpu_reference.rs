//! The OpenCL kernels against the CPU reference crates (`alexnet-conv`, `alexnet-pool`) on
//! AlexNet's layer shapes at batch 1 (kept small enough for PoCL), within 1e-4 relative.

use alexnet_conv::ConvWorkspace;
use alexnet_core::{AlphaConvention, Backend, Conv2dGeom, LrnParams, PoolGeom, PoolKind, Rounding, Shape4};
use alexnet_opencl::{ClBuffer, GemmEngine, OpenClBackend, test_backend, test_backend_with_gemm};

/// A backend per GEMM engine: convolutions are checked on both.
fn backends() -> Vec<OpenClBackend> {
    [GemmEngine::Own, GemmEngine::ClBlast].into_iter().filter_map(test_backend_with_gemm).collect()
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| alexnet_core::rng::uniform(seed, i as u64) * 2.0 - 1.0).collect()
}

fn down(be: &OpenClBackend, buf: &ClBuffer) -> Vec<f32> {
    let mut host = vec![0.0; buf.len()];
    be.download(buf, &mut host).unwrap();
    host
}

/// `|got - want| <= rel * (|want| + max|want| / 100)`: relative, with a floor for entries
/// near zero (sums with cancellation, whose error scales with the largest terms).
#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let floor = want.iter().fold(0.0f32, |m, w| m.max(w.abs())) / 100.0;
    let worst = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (g, w))| (i, (g - w).abs() / (w.abs() + floor)))
        .fold((0, 0.0f32), |a, b| if b.1 > a.1 { b } else { a });
    assert!(
        worst.1 <= rel,
        "{what}: worst relative error {} at {} (got {}, want {})",
        worst.1,
        worst.0,
        got[worst.0],
        want[worst.0]
    );
}

fn check_conv(be: &OpenClBackend, geom: Conv2dGeom, input: Shape4) {
    let out = geom.output_shape(input).unwrap();
    let (x, w, b, dy) =
        (random(input.numel(), 1), random(geom.weight_len(), 2), random(geom.out_channels, 3), random(out.numel(), 4));
    let mut ws = ConvWorkspace::new();
    let (mut y, mut dx, mut dw) = (vec![0.0; out.numel()], vec![0.0; input.numel()], vec![0.0; w.len()]);
    alexnet_conv::conv2d_forward(&geom, input, &x, &w, Some(&b), &mut y, &mut ws).unwrap();
    alexnet_conv::conv2d_backward_input(&geom, input, &w, &dy, &mut dx, &mut ws).unwrap();
    alexnet_conv::conv2d_backward_weight(&geom, input, &x, &dy, &mut dw, &mut ws).unwrap();

    let (xb, wb, dyb) = (be.upload(&x).unwrap(), be.upload(&w).unwrap(), be.upload(&dy).unwrap());
    let mut yb = be.zeros(out.numel()).unwrap();
    be.conv2d_forward(&geom, input, &xb, &wb, Some(&be.upload(&b).unwrap()), &mut yb).unwrap();
    let engine = be.gemm_engine();
    assert_close(&format!("conv forward {input} {geom:?} ({engine} GEMM)"), &down(be, &yb), &y, 1e-4);
    let mut dxb = be.zeros(input.numel()).unwrap();
    be.conv2d_backward_input(&geom, input, &wb, &dyb, &mut dxb).unwrap();
    assert_close(&format!("conv dx {input} ({engine} GEMM)"), &down(be, &dxb), &dx, 1e-4);
    let mut dwb = be.zeros(w.len()).unwrap();
    be.conv2d_backward_weight(&geom, input, &xb, &dyb, &mut dwb).unwrap();
    assert_close(&format!("conv dw {input} ({engine} GEMM)"), &down(be, &dwb), &dw, 1e-4);
}

fn shape(n: usize, c: usize, h: usize, w: usize) -> Shape4 {
    Shape4::new(n, c, h, w).unwrap()
}

#[test]
fn alexnet_convolutions_batch_1() {
    for be in backends() {
        alexnet_convolutions_on(&be);
    }
}

fn alexnet_convolutions_on(be: &OpenClBackend) {
    let exact = |g: Conv2dGeom| g.with_rounding(Rounding::Exact);
    for (geom, input) in [
        (exact(Conv2dGeom::square(3, 96, 11, 4, 0, 1).unwrap()), shape(1, 3, 227, 227)),
        (exact(Conv2dGeom::square(96, 256, 5, 1, 2, 2).unwrap()), shape(1, 96, 27, 27)),
        (exact(Conv2dGeom::square(256, 384, 3, 1, 1, 1).unwrap()), shape(1, 256, 13, 13)),
        (exact(Conv2dGeom::square(384, 384, 3, 1, 1, 2).unwrap()), shape(1, 384, 13, 13)),
        (exact(Conv2dGeom::square(384, 256, 3, 1, 1, 2).unwrap()), shape(1, 384, 13, 13)),
    ] {
        check_conv(be, geom, input);
    }
}

/// Several images per chunk and odd sizes: batched GEMM strides across images and groups.
#[test]
fn batched_grouped_convolution() {
    for be in backends() {
        check_conv(
            &be,
            Conv2dGeom::square(6, 9, 3, 2, 1, 3).unwrap().with_rounding(Rounding::Ceil),
            shape(5, 6, 12, 11),
        );
    }
}

fn check_pool(be: &OpenClBackend, kind: PoolKind, geom: PoolGeom, input: Shape4) {
    let out = geom.output_shape(input).unwrap();
    let (x, dy) = (random(input.numel(), 5), random(out.numel(), 6));
    let (mut y, mut dx) = (vec![0.0; out.numel()], vec![0.0; input.numel()]);
    alexnet_pool::pool_forward(kind, &geom, input, &x, &mut y).unwrap();
    alexnet_pool::pool_backward(kind, &geom, input, &x, &y, &dy, &mut dx).unwrap();
    let xb = be.upload(&x).unwrap();
    let mut yb = be.zeros(out.numel()).unwrap();
    be.pool_forward(kind, &geom, input, &xb, &mut yb).unwrap();
    assert_close(&format!("{kind:?} pool forward {input} {geom:?}"), &down(be, &yb), &y, 1e-5);
    let mut dxb = be.zeros(input.numel()).unwrap();
    be.pool_backward(kind, &geom, input, &xb, &yb, &be.upload(&dy).unwrap(), &mut dxb).unwrap();
    assert_close(&format!("{kind:?} pool backward {input} {geom:?}"), &down(be, &dxb), &dx, 1e-5);
}

#[test]
fn alexnet_pooling_and_ceil_mode() {
    let Some(be) = test_backend() else { return };
    let overlapping = PoolGeom::square(3, 2, 0, Rounding::Floor).unwrap();
    for input in [shape(1, 96, 55, 55), shape(1, 256, 27, 27), shape(1, 256, 13, 13)] {
        check_pool(&be, PoolKind::Max, overlapping, input);
    }
    for kind in [PoolKind::Max, PoolKind::Avg] {
        check_pool(&be, kind, PoolGeom::square(3, 2, 1, Rounding::Ceil).unwrap(), shape(2, 3, 14, 13));
        check_pool(&be, kind, PoolGeom::square(2, 2, 0, Rounding::Ceil).unwrap(), shape(1, 4, 7, 9));
    }
}

#[test]
fn max_pool_nan_wins_like_the_cpu() {
    let Some(be) = test_backend() else { return };
    let mut x = random(2 * 9 * 9, 9);
    x[10] = f32::NAN;
    let geom = PoolGeom::square(3, 2, 0, Rounding::Floor).unwrap();
    let input = shape(1, 2, 9, 9);
    let out = geom.output_shape(input).unwrap();
    let mut y = vec![0.0; out.numel()];
    alexnet_pool::pool_forward(PoolKind::Max, &geom, input, &x, &mut y).unwrap();
    let mut yb = be.zeros(out.numel()).unwrap();
    be.pool_forward(PoolKind::Max, &geom, input, &be.upload(&x).unwrap(), &mut yb).unwrap();
    let got = down(&be, &yb);
    for (g, w) in got.iter().zip(&y) {
        assert!(g == w || (g.is_nan() && w.is_nan()), "got {g}, want {w}");
    }
}

#[test]
fn alexnet_lrn_both_conventions() {
    let Some(be) = test_backend() else { return };
    for (input, convention) in
        [(shape(1, 96, 55, 55), AlphaConvention::Paper), (shape(1, 256, 27, 27), AlphaConvention::PyTorchCaffe)]
    {
        let params = LrnParams { convention, ..LrnParams::paper() };
        // ReLU-like magnitudes up to 30 so that the normalisation is far from the identity.
        let x: Vec<f32> = random(input.numel(), 7).iter().map(|v| 30.0 * v).collect();
        let dy = random(input.numel(), 8);
        let n = input.numel();
        let (mut y, mut scale, mut dx) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        alexnet_pool::lrn_forward(&params, input, &x, &mut y, &mut scale).unwrap();
        alexnet_pool::lrn_backward(&params, input, &x, &y, &scale, &dy, &mut dx).unwrap();
        let xb = be.upload(&x).unwrap();
        let (mut yb, mut sb, mut dxb) = (be.zeros(n).unwrap(), be.zeros(n).unwrap(), be.zeros(n).unwrap());
        be.lrn_forward(&params, input, &xb, &mut yb, &mut sb).unwrap();
        be.lrn_backward(&params, input, &xb, &yb, &sb, &be.upload(&dy).unwrap(), &mut dxb).unwrap();
        assert_close("lrn y", &down(&be, &yb), &y, 1e-4);
        assert_close("lrn scale", &down(&be, &sb), &scale, 1e-4);
        assert_close("lrn dx", &down(&be, &dxb), &dx, 1e-4);
    }
}

/// A deterministic pseudo-random integer in `lo..=hi`.
fn pick(seed: u64, index: u64, lo: usize, hi: usize) -> usize {
    lo + (alexnet_core::rng::mix64(seed, index) % (hi - lo + 1) as u64) as usize
}

/// Randomised convolution geometries (groups, rectangular kernels, strides, padding, all
/// roundings); those that the geometry rejects are skipped and counted.
#[test]
fn randomised_convolutions() {
    for be in backends() {
        randomised_convolutions_on(&be);
    }
}

fn randomised_convolutions_on(be: &OpenClBackend) {
    let mut checked = 0;
    for case in 0..40u64 {
        let r = |i: u64, lo: usize, hi: usize| pick(case, i, lo, hi);
        let groups = r(0, 1, 3);
        let rounding = [Rounding::Floor, Rounding::Ceil, Rounding::Exact][r(1, 0, 2)];
        let geom = Conv2dGeom {
            in_channels: groups * r(2, 1, 3),
            out_channels: groups * r(3, 1, 4),
            kernel_h: r(4, 1, 5),
            kernel_w: r(5, 1, 5),
            stride_h: r(6, 1, 3),
            stride_w: r(7, 1, 3),
            pad_h: r(8, 0, 2),
            pad_w: r(9, 0, 2),
            groups,
            rounding,
        };
        let input = shape(r(10, 1, 3), geom.in_channels, r(11, 3, 12), r(12, 3, 12));
        if geom.output_shape(input).is_ok() {
            check_conv(be, geom, input);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} of 40 random geometries were valid");
}

/// Randomised pooling geometries of both kinds and all roundings.
#[test]
fn randomised_pooling() {
    let Some(be) = test_backend() else { return };
    let mut checked = 0;
    for case in 0..40u64 {
        let r = |i: u64, lo: usize, hi: usize| pick(1000 + case, i, lo, hi);
        let (window_h, window_w) = (r(0, 1, 4), r(1, 1, 4));
        let geom = PoolGeom {
            window_h,
            window_w,
            stride_h: r(2, 1, 3),
            stride_w: r(3, 1, 3),
            pad_h: r(4, 0, window_h - 1),
            pad_w: r(5, 0, window_w - 1),
            rounding: [Rounding::Floor, Rounding::Ceil, Rounding::Exact][r(6, 0, 2)],
        };
        let input = shape(r(7, 1, 2), r(8, 1, 3), r(9, 2, 11), r(10, 2, 11));
        let kind = [PoolKind::Max, PoolKind::Avg][r(11, 0, 1)];
        let Ok(out) = geom.output_shape(input) else { continue };
        // alexnet-core accepts some geometries (stride larger than the window, ceil rounding)
        // whose last window lies wholly outside the input; alexnet-pool asserts on those, this
        // backend writes 0 there. Skip them, counted.
        let empty = |o: usize, k: usize, s: usize, p: usize, n: usize| o * s + k <= p || o * s >= n + p;
        if empty(out.h - 1, geom.window_h, geom.stride_h, geom.pad_h, input.h)
            || empty(out.w - 1, geom.window_w, geom.stride_w, geom.pad_w, input.w)
        {
            eprintln!("skipped: {geom:?} on {input} has a window outside the input");
            continue;
        }
        check_pool(&be, kind, geom, input);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} of 40 random geometries were checked");
}
