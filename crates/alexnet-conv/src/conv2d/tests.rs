//! Checks against a direct nested-loop convolution in `f64`, central-difference gradient
//! checks, and every rejected input.

use alexnet_core::{Axis, Conv2dGeom, Error, Rounding, Shape4, rng};

use super::Plan;
use crate::{
    ChannelLayout, ConvAlgorithm, ConvError, ConvWorkspace, channel_bias_grad, conv2d_backward_input,
    conv2d_backward_weight, conv2d_forward,
};

/// Both algorithms: `Winograd` takes every 3x3 stride-1 case, `Direct` all of them.
const ALGORITHMS: [ConvAlgorithm; 2] = [ConvAlgorithm::Direct, ConvAlgorithm::Winograd];

/// `len` uniform values in `[-1, 1)` from stream `seed`.
pub(crate) fn random(seed: u64, len: usize) -> Vec<f32> {
    (0..len as u64).map(|i| 2.0 * rng::uniform(seed, i) - 1.0).collect()
}

pub(crate) fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// Calls `tap(n, o, oy, ox, input_index, weight_index)` for every multiply-add of the
/// convolution, straight from the definition.
fn for_each_tap(geom: &Conv2dGeom, input: Shape4, mut tap: impl FnMut(usize, usize, usize)) {
    let out = geom.output_shape(input).unwrap();
    let (cg, og) = (geom.in_per_group(), geom.out_per_group());
    for n in 0..out.n {
        for o in 0..out.c {
            let g = o / og;
            for oy in 0..out.h {
                for ox in 0..out.w {
                    for c in 0..cg {
                        for ki in 0..geom.kernel_h {
                            for kj in 0..geom.kernel_w {
                                let iy = (oy * geom.stride_h + ki) as isize - geom.pad_h as isize;
                                let ix = (ox * geom.stride_w + kj) as isize - geom.pad_w as isize;
                                if iy < 0 || ix < 0 || iy >= input.h as isize || ix >= input.w as isize {
                                    continue;
                                }
                                let xi = input.index(n, g * cg + c, iy as usize, ix as usize);
                                let wi = ((o * cg + c) * geom.kernel_h + ki) * geom.kernel_w + kj;
                                tap(out.index(n, o, oy, ox), xi, wi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Direct convolution with `f64` accumulation.
pub(crate) fn reference_forward(
    geom: &Conv2dGeom,
    input: Shape4,
    x: &[f64],
    w: &[f64],
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let out = geom.output_shape(input).unwrap();
    let mut y = vec![0.0; out.numel()];
    if let Some(bias) = bias {
        for (i, v) in y.iter_mut().enumerate() {
            *v = bias[(i / out.plane_len()) % out.c];
        }
    }
    for_each_tap(geom, input, |yi, xi, wi| y[yi] += w[wi] * x[xi]);
    y
}

/// Direct input and weight gradients (the adjoint loops of the same definition).
pub(crate) fn reference_backward(
    geom: &Conv2dGeom,
    input: Shape4,
    x: &[f64],
    w: &[f64],
    dy: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut dx = vec![0.0; input.numel()];
    let mut dw = vec![0.0; geom.weight_len()];
    for_each_tap(geom, input, |yi, xi, wi| {
        dx[xi] += w[wi] * dy[yi];
        dw[wi] += x[xi] * dy[yi];
    });
    (dx, dw)
}

/// Asserts `|got - want| <= tol` element-wise, naming the first offender.
#[track_caller]
pub(crate) fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (worst, i) = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| ((f64::from(g) - w).abs(), i))
        .fold((0.0, 0), |a, b| if b.0 > a.0 || b.0.is_nan() { b } else { a });
    assert!(worst <= tol, "{what}: element {i}: got {} want {} (|diff| {worst:e} > {tol:e})", got[i], want[i]);
}

/// Tolerance for f32 sums of `terms` products of values in [-1, 1], against f64.
fn tol(terms: usize) -> f64 {
    2e-6 * terms as f64 + 1e-6
}

pub(crate) fn geom(
    c: usize,
    o: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    groups: usize,
) -> Conv2dGeom {
    let g = Conv2dGeom {
        in_channels: c,
        out_channels: o,
        kernel_h: k.0,
        kernel_w: k.1,
        stride_h: stride.0,
        stride_w: stride.1,
        pad_h: pad.0,
        pad_w: pad.1,
        groups,
        rounding: Rounding::Floor,
    };
    g.validate().unwrap();
    g
}

pub(crate) fn shape(n: usize, c: usize, h: usize, w: usize) -> Shape4 {
    Shape4::new(n, c, h, w).unwrap()
}

/// Runs all four of our functions on one case and compares them with the direct loops.
pub(crate) fn check_against_reference(
    geom: &Conv2dGeom,
    input: Shape4,
    threads: usize,
    algorithm: ConvAlgorithm,
    seed: u64,
) {
    let out = geom.output_shape(input).unwrap();
    let x = random(seed, input.numel());
    let w = random(seed + 1, geom.weight_len());
    let b = random(seed + 2, geom.out_channels);
    let dy = random(seed + 3, out.numel());
    let mut ws = ConvWorkspace::with_threads(threads).with_algorithm(algorithm);
    let case = format!("{geom:?} on {input}, {threads} threads, {algorithm:?}");

    // Outputs start as NaN: every function must overwrite, never read, its output.
    let mut y = vec![f32::NAN; out.numel()];
    conv2d_forward(geom, input, &x, &w, Some(&b), &mut y, &mut ws).unwrap();
    let taps = geom.in_per_group() * geom.kernel_h * geom.kernel_w;
    let want = reference_forward(geom, input, &widen(&x), &widen(&w), Some(&widen(&b)));
    assert_close(&format!("forward {case}"), &y, &want, tol(taps + 1));

    let (want_dx, want_dw) = reference_backward(geom, input, &widen(&x), &widen(&w), &widen(&dy));
    let mut dx = vec![f32::NAN; input.numel()];
    conv2d_backward_input(geom, input, &w, &dy, &mut dx, &mut ws).unwrap();
    assert_close(&format!("dx {case}"), &dx, &want_dx, tol(geom.out_per_group() * geom.kernel_h * geom.kernel_w));
    let mut dw = vec![f32::NAN; geom.weight_len()];
    conv2d_backward_weight(geom, input, &x, &dy, &mut dw, &mut ws).unwrap();
    assert_close(&format!("dw {case}"), &dw, &want_dw, tol(out.n * out.plane_len()));
    let mut db = vec![f32::NAN; geom.out_channels];
    channel_bias_grad(out.into(), &dy, &mut db).unwrap();
    let want_db: Vec<f64> = (0..out.c)
        .map(|o| (0..out.numel()).filter(|i| (i / out.plane_len()) % out.c == o).map(|i| f64::from(dy[i])).sum())
        .collect();
    assert_close(&format!("db {case}"), &db, &want_db, tol(out.n * out.plane_len()));
}

#[test]
fn small_shapes_match_direct_loops() {
    let cases = [
        // (geometry, input): odd sizes, padding, non-square, stride > kernel, groups 1/2/4, 1x1.
        (geom(3, 5, (3, 3), (1, 1), (1, 1), 1), shape(2, 3, 7, 9)),
        (geom(4, 6, (3, 2), (2, 3), (1, 0), 2), shape(3, 4, 11, 10)),
        (geom(8, 8, (3, 3), (1, 1), (2, 2), 4), shape(1, 8, 5, 6)),
        (geom(2, 3, (2, 2), (3, 3), (0, 0), 1), shape(2, 2, 8, 8)),
        (geom(3, 4, (1, 1), (4, 5), (0, 0), 1), shape(2, 3, 9, 13)),
        (geom(6, 4, (1, 1), (1, 1), (0, 0), 2), shape(2, 6, 5, 7)),
        (geom(4, 8, (1, 1), (1, 1), (0, 0), 4), shape(1, 4, 3, 3)),
        (geom(2, 2, (5, 5), (1, 1), (4, 4), 2), shape(1, 2, 1, 1)),
        (geom(5, 3, (7, 3), (2, 1), (3, 2), 1), shape(2, 5, 13, 4)),
        (geom(4, 4, (3, 3), (2, 2), (1, 1), 1).with_rounding(Rounding::Ceil), shape(1, 4, 6, 6)),
    ];
    for (seed, (g, input)) in cases.iter().enumerate() {
        for algorithm in ALGORITHMS {
            check_against_reference(g, *input, 2, algorithm, 10 * seed as u64);
        }
    }
}

#[test]
fn slabs_of_small_maps_match_direct_loops() {
    // Maps of 6x6 and 5x5 join several images per product (slabs), with groups, padding and
    // stride; batches give each thread full slabs, a partial one, and a remainder that runs
    // with all threads.
    let cases = [
        (geom(8, 12, (3, 3), (1, 1), (1, 1), 2), shape(17, 8, 6, 6), 2),
        (geom(6, 4, (3, 3), (1, 1), (1, 1), 1), shape(23, 6, 5, 5), 3),
        (geom(4, 6, (2, 3), (2, 1), (0, 1), 2), shape(9, 4, 9, 7), 1),
        (geom(4, 4, (1, 1), (1, 1), (0, 0), 2), shape(12, 4, 3, 3), 2),
    ];
    for (seed, (g, input, threads)) in cases.iter().enumerate() {
        assert!(Plan::new("test", g, *input).unwrap().slab_images() > 1 || g.kernel_h == 1, "{g:?} makes slabs");
        check_against_reference(g, *input, *threads, ConvAlgorithm::Direct, 500 + seed as u64);
    }
}

#[test]
fn randomised_shapes_match_direct_loops() {
    for case in 0..40u64 {
        let pick = |i: u64, lo: usize, hi: usize| lo + (rng::mix64(1000 + case, i) % (hi - lo + 1) as u64) as usize;
        let groups = [1, 2, 4][pick(0, 0, 2)];
        let (kh, kw) = (pick(1, 1, 5), pick(2, 1, 5));
        let (ph, pw) = (pick(3, 0, kh - 1), pick(4, 0, kw - 1));
        let (sh, sw) = (pick(5, 1, 6), pick(6, 1, 6));
        let h = pick(7, kh.saturating_sub(2 * ph).max(1), 14);
        let w = pick(8, kw.saturating_sub(2 * pw).max(1), 14);
        let g = geom(groups * pick(9, 1, 3), groups * pick(10, 1, 3), (kh, kw), (sh, sw), (ph, pw), groups);
        let input = shape(pick(11, 1, 5), g.in_channels, h, w);
        for algorithm in ALGORITHMS {
            check_against_reference(&g, input, pick(12, 1, 3), algorithm, 77 * case);
        }
    }
}

/// AlexNet's five convolutions (spec section 1), exact rounding.
pub(crate) fn alexnet_layers() -> [(Conv2dGeom, Shape4); 5] {
    let exact = |g: alexnet_core::Result<Conv2dGeom>| g.unwrap().with_rounding(Rounding::Exact);
    [
        (exact(Conv2dGeom::square(3, 96, 11, 4, 0, 1)), shape(1, 3, 227, 227)),
        (exact(Conv2dGeom::square(96, 256, 5, 1, 2, 2)), shape(1, 96, 27, 27)),
        (exact(Conv2dGeom::square(256, 384, 3, 1, 1, 1)), shape(1, 256, 13, 13)),
        (exact(Conv2dGeom::square(384, 384, 3, 1, 1, 2)), shape(1, 384, 13, 13)),
        (exact(Conv2dGeom::square(384, 256, 3, 1, 1, 2)), shape(1, 384, 13, 13)),
    ]
}

/// Input index of tap `k` of output position `o`, if it falls inside the input.
fn tap_input(o: usize, k: usize, stride: usize, pad: usize, len: usize) -> Option<usize> {
    (o * stride + k).checked_sub(pad).filter(|&i| i < len)
}

/// Output position `o` that sees input position `i` through tap `k`, if any (`o * stride + k
/// - pad == i`).
fn tap_output(i: usize, k: usize, stride: usize, pad: usize, len: usize) -> Option<usize> {
    (i + pad).checked_sub(k).filter(|d| d % stride == 0).map(|d| d / stride).filter(|&o| o < len)
}

/// Indices to spot-check in a buffer of `len`: both ends plus `count` random ones.
fn sample(seed: u64, len: usize, count: usize) -> impl Iterator<Item = usize> {
    [0, len - 1].into_iter().chain((0..count as u64).map(move |i| (rng::mix64(seed, i) % len as u64) as usize))
}

/// AlexNet's layers are too large for the full direct loops in a quick test: compare a
/// sample of elements of y, dx and dw, each computed straight from its own formula.
fn check_sampled_against_direct_formulas(
    geom: &Conv2dGeom,
    input: Shape4,
    threads: usize,
    algorithm: ConvAlgorithm,
    seed: u64,
) {
    let out = geom.output_shape(input).unwrap();
    let (cg, og, kh, kw) = (geom.in_per_group(), geom.out_per_group(), geom.kernel_h, geom.kernel_w);
    let x = random(seed, input.numel());
    let w = random(seed + 1, geom.weight_len());
    let b = random(seed + 2, geom.out_channels);
    let dy = random(seed + 3, out.numel());
    let w_at = |o: usize, c: usize, ki: usize, kj: usize| f64::from(w[((o * cg + c) * kh + ki) * kw + kj]);
    let mut ws = ConvWorkspace::with_threads(threads).with_algorithm(algorithm);
    let case = format!("{geom:?} on {input}, {threads} threads, {algorithm:?}");

    let mut y = vec![f32::NAN; out.numel()];
    conv2d_forward(geom, input, &x, &w, Some(&b), &mut y, &mut ws).unwrap();
    for i in sample(seed, y.len(), 300) {
        let (n, o, oy, ox) = (i / out.image_len(), i / out.plane_len() % out.c, i / out.w % out.h, i % out.w);
        let mut want = f64::from(b[o]);
        for c in 0..cg {
            for ki in 0..kh {
                for kj in 0..kw {
                    let iy = tap_input(oy, ki, geom.stride_h, geom.pad_h, input.h);
                    let ix = tap_input(ox, kj, geom.stride_w, geom.pad_w, input.w);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        want += w_at(o, c, ki, kj) * f64::from(x[input.index(n, o / og * cg + c, iy, ix)]);
                    }
                }
            }
        }
        assert_close(&format!("forward {case} at {i}"), &y[i..=i], &[want], tol(cg * kh * kw + 1));
    }

    let mut dx = vec![f32::NAN; input.numel()];
    conv2d_backward_input(geom, input, &w, &dy, &mut dx, &mut ws).unwrap();
    for i in sample(seed + 1, dx.len(), 300) {
        let (n, ci, iy, ix) =
            (i / input.image_len(), i / input.plane_len() % input.c, i / input.w % input.h, i % input.w);
        let (g, c) = (ci / cg, ci % cg);
        let mut want = 0.0;
        for o in g * og..(g + 1) * og {
            for ki in 0..kh {
                for kj in 0..kw {
                    let oy = tap_output(iy, ki, geom.stride_h, geom.pad_h, out.h);
                    let ox = tap_output(ix, kj, geom.stride_w, geom.pad_w, out.w);
                    if let (Some(oy), Some(ox)) = (oy, ox) {
                        want += w_at(o, c, ki, kj) * f64::from(dy[out.index(n, o, oy, ox)]);
                    }
                }
            }
        }
        assert_close(&format!("dx {case} at {i}"), &dx[i..=i], &[want], tol(og * kh * kw));
    }

    let mut dw = vec![f32::NAN; geom.weight_len()];
    conv2d_backward_weight(geom, input, &x, &dy, &mut dw, &mut ws).unwrap();
    for i in sample(seed + 2, dw.len(), 300) {
        let (o, c, ki, kj) = (i / (cg * kh * kw), i / (kh * kw) % cg, i / kw % kh, i % kw);
        let mut want = 0.0;
        for n in 0..out.n {
            for oy in 0..out.h {
                for ox in 0..out.w {
                    let iy = tap_input(oy, ki, geom.stride_h, geom.pad_h, input.h);
                    let ix = tap_input(ox, kj, geom.stride_w, geom.pad_w, input.w);
                    if let (Some(iy), Some(ix)) = (iy, ix) {
                        let xv = f64::from(x[input.index(n, o / og * cg + c, iy, ix)]);
                        want += xv * f64::from(dy[out.index(n, o, oy, ox)]);
                    }
                }
            }
        }
        assert_close(&format!("dw {case} at {i}"), &dw[i..=i], &[want], tol(out.n * out.plane_len()));
    }
}

#[test]
fn alexnet_layers_match_direct_formulas() {
    // Batch 1 takes the parallel-GEMM path; batch 2 on two threads one image per thread, and
    // on three threads the parallel-GEMM path again.
    for (i, (g, input)) in alexnet_layers().into_iter().enumerate() {
        for (batch, threads) in [(1, 2), (2, 2), (2, 3)] {
            let input = Shape4 { n: batch, ..input };
            for algorithm in ALGORITHMS {
                check_sampled_against_direct_formulas(
                    &g,
                    input,
                    threads,
                    algorithm,
                    500 + 10 * i as u64 + batch as u64,
                );
            }
        }
    }
}

#[test]
fn spot_check_formulas_agree_on_a_small_case() {
    // Our functions match the full loops on small shapes (above), so agreement here on a
    // shape with stride, padding and groups checks the spot-check formulas themselves.
    let g = geom(4, 6, (3, 3), (2, 2), (1, 1), 2);
    check_sampled_against_direct_formulas(&g, shape(2, 4, 7, 8), 2, ConvAlgorithm::Direct, 3);
}

/// `L = sum(r * y_ref)` in f64 with the direct forward, for central differences.
struct Loss {
    geom: Conv2dGeom,
    input: Shape4,
    r: Vec<f64>,
}

impl Loss {
    fn value(&self, x: &[f64], w: &[f64], b: &[f64]) -> f64 {
        let y = reference_forward(&self.geom, self.input, x, w, Some(b));
        y.iter().zip(&self.r).map(|(y, r)| y * r).sum()
    }

    /// Central difference of `L` along every element of `which(x, w, b)`.
    fn numeric_grad(&self, x: &[f64], w: &[f64], b: &[f64], which: usize) -> Vec<f64> {
        const H: f64 = 1e-3;
        let mut params = [x.to_vec(), w.to_vec(), b.to_vec()];
        (0..params[which].len())
            .map(|i| {
                let orig = params[which][i];
                params[which][i] = orig + H;
                let plus = self.value(&params[0], &params[1], &params[2]);
                params[which][i] = orig - H;
                let minus = self.value(&params[0], &params[1], &params[2]);
                params[which][i] = orig;
                (plus - minus) / (2.0 * H)
            })
            .collect()
    }
}

#[test]
fn gradients_match_central_differences() {
    let cases = [
        (geom(2, 3, (3, 3), (1, 1), (1, 1), 1), shape(2, 2, 5, 4)),
        (geom(4, 6, (3, 2), (2, 1), (1, 1), 2), shape(2, 4, 6, 5)),
        (geom(4, 4, (1, 1), (1, 1), (0, 0), 2), shape(1, 4, 3, 3)),
        (geom(3, 2, (2, 3), (3, 2), (0, 1), 1), shape(1, 3, 7, 6)),
        // 3x3 stride 1 (Winograd's), padding 0 to 3 (3: its input gradient crops), groups.
        (geom(2, 4, (3, 3), (1, 1), (0, 0), 2), shape(2, 2, 7, 6)),
        (geom(3, 2, (3, 3), (1, 1), (2, 2), 1), shape(1, 3, 5, 9)),
        (geom(2, 2, (3, 3), (1, 1), (3, 3), 1), shape(1, 2, 3, 4)),
    ];
    for ((seed, (g, input)), algorithm) in cases.into_iter().enumerate().flat_map(|c| ALGORITHMS.map(|a| (c, a))) {
        let seed = 900 + 10 * seed as u64;
        let out = g.output_shape(input).unwrap();
        let (x, w, b) =
            (random(seed, input.numel()), random(seed + 1, g.weight_len()), random(seed + 2, g.out_channels));
        let r = random(seed + 3, out.numel());
        let loss = Loss { geom: g, input, r: widen(&r) };
        let (x64, w64, b64) = (widen(&x), widen(&w), widen(&b));
        let mut ws = ConvWorkspace::with_threads(2).with_algorithm(algorithm);

        let mut dx = vec![0.0; input.numel()];
        conv2d_backward_input(&g, input, &w, &r, &mut dx, &mut ws).unwrap();
        assert_close(&format!("dx {g:?} {algorithm:?}"), &dx, &loss.numeric_grad(&x64, &w64, &b64, 0), 1e-4);
        let mut dw = vec![0.0; g.weight_len()];
        conv2d_backward_weight(&g, input, &x, &r, &mut dw, &mut ws).unwrap();
        assert_close(&format!("dw {g:?}"), &dw, &loss.numeric_grad(&x64, &w64, &b64, 1), 1e-4);
        let mut db = vec![0.0; g.out_channels];
        channel_bias_grad(g.output_shape(input).unwrap().into(), &r, &mut db).unwrap();
        assert_close(&format!("db {g:?}"), &db, &loss.numeric_grad(&x64, &w64, &b64, 2), 1e-4);
    }
}

#[test]
fn thread_counts_agree() {
    // Batch 5 on 1..=4 threads covers whole-image splits with and without a remainder.
    let g = geom(4, 6, (3, 3), (1, 1), (1, 1), 2);
    let input = shape(5, 4, 9, 8);
    let out = g.output_shape(input).unwrap();
    let (x, w, dy) = (random(1, input.numel()), random(2, g.weight_len()), random(3, out.numel()));
    let run = |threads, algorithm| {
        let mut ws = ConvWorkspace::with_threads(threads).with_algorithm(algorithm);
        let mut y = vec![0.0; out.numel()];
        conv2d_forward(&g, input, &x, &w, None, &mut y, &mut ws).unwrap();
        let mut dx = vec![0.0; input.numel()];
        conv2d_backward_input(&g, input, &w, &dy, &mut dx, &mut ws).unwrap();
        let mut dw = vec![0.0; g.weight_len()];
        conv2d_backward_weight(&g, input, &x, &dy, &mut dw, &mut ws).unwrap();
        [y, dx, dw]
    };
    for algorithm in ALGORITHMS {
        let one = run(1, algorithm);
        for threads in 2..=4 {
            for (a, b) in one.iter().zip(run(threads, algorithm)) {
                assert_close(&format!("{threads} threads {algorithm:?}"), &b, &widen(a), 1e-4);
            }
        }
    }
}

#[test]
fn workspace_is_reused_not_regrown() {
    let big = geom(8, 8, (5, 5), (1, 1), (2, 2), 1);
    let small = geom(2, 2, (3, 3), (1, 1), (1, 1), 1);
    let (big_in, small_in) = (shape(4, 8, 16, 16), shape(4, 2, 6, 6));
    let mut ws = ConvWorkspace::with_threads(2).with_algorithm(ConvAlgorithm::Direct);
    let run = |g: &Conv2dGeom, input: Shape4, ws: &mut ConvWorkspace| {
        let out = g.output_shape(input).unwrap();
        let x = random(5, input.numel());
        let w = random(6, g.weight_len());
        let mut y = vec![0.0; out.numel()];
        conv2d_forward(g, input, &x, &w, None, &mut y, ws).unwrap();
        let mut dw = vec![0.0; g.weight_len()];
        conv2d_backward_weight(g, input, &x, &y, &mut dw, ws).unwrap();
        let mut dx = vec![0.0; input.numel()];
        conv2d_backward_input(g, input, &w, &y, &mut dx, ws).unwrap();
    };
    assert_eq!(ws.scratch_bytes(), 0);
    run(&big, big_in, &mut ws);
    let after_big = ws.scratch_bytes();
    // Two workers (one when the GEMM library threads itself), each with a 200 x 256 column
    // buffer and a 1600-element weight accumulator.
    assert_eq!(after_big, ws.split_threads() * (200 * 256 + 1600) * 4);
    let pointers: Vec<_> = ws.scratch.iter().map(|s| s.cols.as_ptr()).collect();
    run(&small, small_in, &mut ws);
    run(&big, big_in, &mut ws);
    assert_eq!(ws.scratch_bytes(), after_big);
    assert_eq!(ws.scratch.iter().map(|s| s.cols.as_ptr()).collect::<Vec<_>>(), pointers);
}

#[test]
fn workspace_can_move_between_threads() {
    fn assert_send<T: Send + Default>() {}
    assert_send::<ConvWorkspace>();
}

#[test]
fn zero_threads_counts_as_one() {
    assert_eq!(ConvWorkspace::with_threads(0).threads(), 1);
    assert_eq!(ConvWorkspace::default().threads(), rayon::current_num_threads());
}

/// Every function with every buffer one element short, and each geometry error.
#[test]
fn invalid_inputs_are_errors_naming_the_values() {
    let g = geom(4, 6, (3, 3), (1, 1), (1, 1), 2);
    let input = shape(2, 4, 5, 5);
    let out = g.output_shape(input).unwrap();
    let (x, w, b, y) = (vec![0.0; input.numel()], vec![0.0; g.weight_len()], vec![0.0; 6], vec![0.0; out.numel()]);
    let mut ws = ConvWorkspace::with_threads(2);
    let short = |v: &[f32]| v[1..].to_vec();
    let buffer_err =
        |op, buffer, expected: usize| ConvError::Core(Error::BufferSize { op, buffer, expected, got: expected - 1 });
    let fwd = |x: &[f32], w: &[f32], b: &[f32], y: &mut [f32], ws: &mut ConvWorkspace| {
        conv2d_forward(&g, input, x, w, Some(b), y, ws).unwrap_err()
    };
    let op = "conv2d_forward";
    assert_eq!(fwd(&short(&x), &w, &b, &mut y.clone(), &mut ws), buffer_err(op, "x", 200));
    assert_eq!(fwd(&x, &short(&w), &b, &mut y.clone(), &mut ws), buffer_err(op, "w", 108));
    assert_eq!(fwd(&x, &w, &short(&b), &mut y.clone(), &mut ws), buffer_err(op, "bias", 6));
    assert_eq!(fwd(&x, &w, &b, &mut short(&y), &mut ws), buffer_err(op, "y", 300));

    let op = "conv2d_backward_input";
    let bin = |w: &[f32], dy: &[f32], dx: &mut [f32], ws: &mut ConvWorkspace| {
        conv2d_backward_input(&g, input, w, dy, dx, ws).unwrap_err()
    };
    assert_eq!(bin(&short(&w), &y, &mut x.clone(), &mut ws), buffer_err(op, "w", 108));
    assert_eq!(bin(&w, &short(&y), &mut x.clone(), &mut ws), buffer_err(op, "dy", 300));
    assert_eq!(bin(&w, &y, &mut short(&x), &mut ws), buffer_err(op, "dx", 200));

    let op = "conv2d_backward_weight";
    let bw = |x: &[f32], dy: &[f32], dw: &mut [f32], ws: &mut ConvWorkspace| {
        conv2d_backward_weight(&g, input, x, dy, dw, ws).unwrap_err()
    };
    assert_eq!(bw(&short(&x), &y, &mut w.clone(), &mut ws), buffer_err(op, "x", 200));
    assert_eq!(bw(&x, &short(&y), &mut w.clone(), &mut ws), buffer_err(op, "dy", 300));
    assert_eq!(bw(&x, &y, &mut short(&w), &mut ws), buffer_err(op, "dw", 108));

    let op = "channel_bias_grad";
    assert_eq!(channel_bias_grad(out.into(), &short(&y), &mut b.clone()).unwrap_err(), buffer_err(op, "dy", 300));
    assert_eq!(channel_bias_grad(out.into(), &y, &mut short(&b)).unwrap_err(), buffer_err(op, "dbias", 6));

    // Geometry errors come first and are the same from all three functions that take one.
    let bad: [(Conv2dGeom, Shape4, Error); 6] = [
        (
            g,
            shape(2, 3, 5, 5),
            Error::ShapeMismatch { op: "conv2d", expected: vec![2, 4, 5, 5], got: vec![2, 3, 5, 5] },
        ),
        (
            geom(4, 6, (8, 3), (1, 1), (1, 1), 2),
            input,
            Error::WindowTooLarge { axis: Axis::Height, window: 8, input: 5, padding: 1, padded_input: 7 },
        ),
        (
            geom(4, 6, (3, 3), (2, 2), (0, 0), 2).with_rounding(Rounding::Exact),
            shape(2, 4, 6, 6),
            Error::DoesNotClose { axis: Axis::Height, input: 6, window: 3, stride: 2, padding: 0, nearest_exact: 7 },
        ),
        (Conv2dGeom { groups: 0, ..g }, input, Error::ZeroSize { what: "groups" }),
        (Conv2dGeom { stride_w: 0, ..g }, input, Error::ZeroSize { what: "stride width" }),
        (
            Conv2dGeom { groups: 3, ..g },
            input,
            Error::GroupsDoNotDivide { what: "input channels", channels: 4, groups: 3 },
        ),
    ];
    // Sizes whose products overflow usize are errors, not wrapped lengths.
    let huge = geom(1, 1, (1, 1), (1, 1), (0, 0), 1);
    let huge_input = shape(usize::MAX / 2, 1, 2, 2);
    assert_eq!(
        conv2d_backward_weight(&huge, huge_input, &x, &y, &mut w.clone(), &mut ws).unwrap_err(),
        ConvError::SizeOverflow { op: "conv2d_backward_weight", what: "input elements" }
    );
    let huge = ChannelLayout { outer: usize::MAX / 2, channels: 6, inner: 4 };
    assert_eq!(
        channel_bias_grad(huge, &y, &mut b.clone()).unwrap_err(),
        ConvError::SizeOverflow { op: "channel_bias_grad", what: "dy elements" }
    );

    for (bad_geom, bad_input, want) in bad {
        let want = ConvError::Core(want);
        let (x, y) = (vec![0.0; bad_input.numel()], vec![0.0; 1]);
        let mut dx = x.clone();
        let mut dw = vec![0.0; 1];
        assert_eq!(conv2d_forward(&bad_geom, bad_input, &x, &w, None, &mut dw, &mut ws).unwrap_err(), want);
        assert_eq!(conv2d_backward_input(&bad_geom, bad_input, &w, &y, &mut dx, &mut ws).unwrap_err(), want);
        assert_eq!(conv2d_backward_weight(&bad_geom, bad_input, &x, &y, &mut dw, &mut ws).unwrap_err(), want);
    }
}
