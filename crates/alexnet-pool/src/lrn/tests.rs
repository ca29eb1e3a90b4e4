use alexnet_core::{AlphaConvention, Error, LrnParams, Shape4};

use super::{lrn_backward, lrn_forward};
use crate::PoolError;
use crate::testutil::{assert_close, gradient_check, shape, to_f64, uniform_vec, with_threads};

fn params(size: usize, alpha: f32, beta: f32, k: f32, convention: AlphaConvention) -> LrnParams {
    LrnParams::new(size, alpha, beta, k, convention).unwrap()
}

/// The direct formula in f64: `(b, s)` with the window written out, not taken from
/// `LrnParams::window`.
fn reference_forward(p: &LrnParams, input: Shape4, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let alpha = match p.convention {
        AlphaConvention::Paper => f64::from(p.alpha),
        AlphaConvention::PyTorchCaffe => f64::from(p.alpha) / p.size as f64,
    };
    let (mut b, mut s) = (vec![0.0; x.len()], vec![0.0; x.len()]);
    let half = p.size as isize / 2;
    for n in 0..input.n {
        for c in 0..input.c {
            for h in 0..input.h {
                for w in 0..input.w {
                    let sum: f64 = (c as isize - half..=c as isize + half)
                        .filter(|&j| (0..input.c as isize).contains(&j))
                        .map(|j| x[input.index(n, j as usize, h, w)].powi(2))
                        .sum();
                    let i = input.index(n, c, h, w);
                    s[i] = f64::from(p.k) + alpha * sum;
                    b[i] = x[i] * s[i].powf(-f64::from(p.beta));
                }
            }
        }
    }
    (b, s)
}

/// The closed-form gradient in f64, summing over every `j` whose window holds `i`.
fn reference_backward(p: &LrnParams, input: Shape4, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let (b, s) = reference_forward(p, input, x);
    let alpha = f64::from(p.alpha) / if p.convention == AlphaConvention::PyTorchCaffe { p.size as f64 } else { 1.0 };
    let beta = f64::from(p.beta);
    let half = p.size / 2;
    let mut dx = vec![0.0; x.len()];
    for n in 0..input.n {
        for i in 0..input.c {
            for h in 0..input.h {
                for w in 0..input.w {
                    let at = |c| input.index(n, c, h, w);
                    let cross: f64 =
                        (0..input.c).filter(|&j| j.abs_diff(i) <= half).map(|j| dy[at(j)] * b[at(j)] / s[at(j)]).sum();
                    dx[at(i)] = dy[at(i)] * s[at(i)].powf(-beta) - 2.0 * alpha * beta * x[at(i)] * cross;
                }
            }
        }
    }
    dx
}

/// Forward and backward over garbage-filled outputs, to prove they are overwritten.
fn run(p: &LrnParams, input: Shape4, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut y, mut scale, mut dx) = (vec![f32::NAN; x.len()], vec![-3.0; x.len()], vec![9.0; x.len()]);
    lrn_forward(p, input, x, &mut y, &mut scale).unwrap();
    lrn_backward(p, input, x, &y, &scale, dy, &mut dx).unwrap();
    (y, scale, dx)
}

fn check_against_reference(p: &LrnParams, input: Shape4, x: &[f32], seed: u64) {
    let dy = uniform_vec(seed, x.len(), -1.0, 1.0);
    let (y, scale, dx) = run(p, input, x, &dy);
    let (want_y, want_scale) = reference_forward(p, input, &to_f64(x));
    let what = format!("{p:?} on {input}");
    assert_close(&format!("{what}: scale"), &scale, &want_scale, 1e-6, 0.0);
    assert_close(&format!("{what}: y"), &y, &want_y, 2e-6, 1e-7);
    assert_close(&format!("{what}: dx"), &dx, &reference_backward(p, input, &to_f64(x), &to_f64(&dy)), 1e-5, 1e-6);
}

/// Values computed by hand, one pixel of three channels `a = [1, 2, 3]`.
#[test]
fn hand_computed_both_conventions() {
    let input = shape(1, 3, 1, 1);
    let a = [1.0, 2.0, 3.0];
    let forward = |p: LrnParams| {
        let (mut y, mut scale) = ([0.0; 3], [0.0; 3]);
        lrn_forward(&p, input, &a, &mut y, &mut scale).unwrap();
        (y, scale)
    };
    // n = 3, k = 1, alpha = 1, beta = 1: s = 1 + [1 + 4, 1 + 4 + 9, 4 + 9] (clipped windows).
    let (y, scale) = forward(params(3, 1.0, 1.0, 1.0, AlphaConvention::Paper));
    assert_eq!(scale, [6.0, 15.0, 14.0]);
    assert_close("paper, beta 1", &y, &[1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0], 1e-7, 0.0);
    // Caffe/PyTorch's convention divides alpha by n: alpha = 3 there is the paper's alpha = 1.
    assert_eq!(forward(params(3, 3.0, 1.0, 1.0, AlphaConvention::PyTorchCaffe)), (y, scale));
    // ... and alpha = 1 there is 1/3 here: s = 1 + [5, 14, 13] / 3.
    let (y, scale) = forward(params(3, 1.0, 1.0, 1.0, AlphaConvention::PyTorchCaffe));
    assert_close("average, beta 1: scale", &scale, &[8.0 / 3.0, 17.0 / 3.0, 16.0 / 3.0], 1e-7, 0.0);
    assert_close("average, beta 1: y", &y, &[3.0 / 8.0, 6.0 / 17.0, 9.0 / 16.0], 1e-7, 0.0);
    // n = 5 spans all three channels: s = 2 + 14 = 16 everywhere and 16^-0.75 = 1/8.
    let (y, scale) = forward(params(5, 1.0, 0.75, 2.0, AlphaConvention::Paper));
    assert_eq!(scale, [16.0; 3]);
    assert_eq!(y, [0.125, 0.25, 0.375]);
}

#[test]
fn random_against_reference() {
    let cases = [
        LrnParams::paper(),
        params(5, 1e-4, 0.75, 1.0, AlphaConvention::PyTorchCaffe),
        params(3, 0.5, 0.75, 1.0, AlphaConvention::Paper),
        params(5, 2.0, 0.75, 1.0, AlphaConvention::PyTorchCaffe),
        params(7, 0.3, 0.6, 1.5, AlphaConvention::PyTorchCaffe),
        params(5, 0.2, 1.0, 0.5, AlphaConvention::Paper),
        params(1, 1.0, 0.75, 1.0, AlphaConvention::Paper),
        params(3, 0.1, 0.0, 1.0, AlphaConvention::Paper),
    ];
    let mut seed = 0;
    for p in cases {
        for c in [1, 2, 4, 13] {
            seed += 1;
            let input = shape(2, c, 3, 5);
            check_against_reference(&p, input, &uniform_vec(seed, input.numel(), -3.0, 3.0), seed + 500);
        }
    }
}

/// AlexNet's two LRN layers with the paper's constants, on activations large enough that the
/// sum term matters (`alpha * sum` comparable to `k`).
#[test]
fn alexnet_shapes_against_reference() {
    for (c, hw) in [(96, 55), (256, 27)] {
        let input = shape(1, c, hw, hw);
        check_against_reference(&LrnParams::paper(), input, &uniform_vec(c as u64, input.numel(), 0.0, 50.0), 1);
    }
}

/// A huge channel followed by small ones: a running sum that adds and subtracts across
/// channels would leave rounding debris of the huge squares in the small channels' scales.
#[test]
fn small_channels_after_a_huge_one_stay_accurate() {
    let input = shape(1, 12, 1, 4);
    let mut x = uniform_vec(3, input.numel(), 0.0, 1.0);
    x[..4].iter_mut().for_each(|v| *v *= 1e6);
    check_against_reference(&params(3, 1.0, 0.75, 1.0, AlphaConvention::Paper), input, &x, 4);
}

/// f64 central differences of the reference forward against the f32 backward, with an
/// alpha large enough that the cross-channel term is a sizeable part of the gradient.
#[test]
fn gradient_checks() {
    for p in [
        params(3, 0.5, 0.75, 1.0, AlphaConvention::Paper),
        params(5, 2.0, 0.75, 1.0, AlphaConvention::PyTorchCaffe),
        params(5, 0.3, 0.6, 1.5, AlphaConvention::Paper),
        params(3, 1.5, 1.2, 2.0, AlphaConvention::PyTorchCaffe),
    ] {
        let input = shape(2, 6, 2, 3);
        let x = uniform_vec(21, input.numel(), -2.0, 2.0);
        let dy = uniform_vec(22, input.numel(), -1.0, 1.0);
        let (_, _, dx) = run(&p, input, &x, &dy);
        let forward = |x: &[f64]| reference_forward(&p, input, x).0;
        gradient_check(&format!("{p:?}"), forward, &to_f64(&x), &to_f64(&dy), &dx, 1e-5, 1e-4);
    }
}

/// Channel blocks (used when the batch is small) and thread counts change how the work is
/// split, never the numbers.
#[test]
fn results_do_not_depend_on_batch_split_or_threads() {
    let p = LrnParams::paper();
    let batch = shape(6, 40, 3, 7);
    let x = uniform_vec(5, batch.numel(), -20.0, 20.0);
    let dy = uniform_vec(6, batch.numel(), -1.0, 1.0);
    let all = with_threads(1, || run(&p, batch, &x, &dy));
    for threads in [2, 3] {
        assert_eq!(with_threads(threads, || run(&p, batch, &x, &dy)), all, "{threads} threads");
    }
    let image = batch.image_len();
    let (y, scale, dx) = with_threads(3, || run(&p, shape(1, 40, 3, 7), &x[..image], &dy[..image]));
    assert_eq!((&y[..], &scale[..], &dx[..]), (&all.0[..image], &all.1[..image], &all.2[..image]));
}

#[test]
fn bad_input_is_an_error() {
    let p = LrnParams::paper();
    let input = shape(2, 3, 2, 2);
    let v = vec![0.0; 24];
    let (mut y, mut scale, mut dx) = (v.clone(), v.clone(), v.clone());
    let wrong = |op, buffer| PoolError::Core(Error::BufferSize { op, buffer, expected: 24, got: 23 });
    assert_eq!(lrn_forward(&p, input, &v[1..], &mut y, &mut scale), Err(wrong("lrn_forward", "x")));
    assert_eq!(lrn_forward(&p, input, &v, &mut y[1..], &mut scale), Err(wrong("lrn_forward", "y")));
    assert_eq!(lrn_forward(&p, input, &v, &mut y, &mut scale[1..]), Err(wrong("lrn_forward", "scale")));
    let short = &v[1..];
    assert_eq!(lrn_backward(&p, input, short, &v, &v, &v, &mut dx), Err(wrong("lrn_backward", "x")));
    assert_eq!(lrn_backward(&p, input, &v, short, &v, &v, &mut dx), Err(wrong("lrn_backward", "y")));
    assert_eq!(lrn_backward(&p, input, &v, &v, short, &v, &mut dx), Err(wrong("lrn_backward", "scale")));
    assert_eq!(lrn_backward(&p, input, &v, &v, &v, short, &mut dx), Err(wrong("lrn_backward", "dy")));
    assert_eq!(lrn_backward(&p, input, &v, &v, &v, &v, &mut dx[1..]), Err(wrong("lrn_backward", "dx")));

    // Even or zero window sizes and bad constants (the fields are public, so `new` can be skipped).
    for size in [0, 2, 4] {
        let bad = LrnParams { size, ..p };
        assert_eq!(lrn_forward(&bad, input, &v, &mut y, &mut scale), Err(PoolError::Core(Error::LrnSize { size })));
        assert_eq!(lrn_backward(&bad, input, &v, &v, &v, &v, &mut dx), Err(PoolError::Core(Error::LrnSize { size })));
    }
    let no_k = LrnParams { k: 0.0, ..p };
    assert!(matches!(
        lrn_forward(&no_k, input, &v, &mut y, &mut scale),
        Err(PoolError::Core(Error::InvalidParameter { what: "LRN k", .. }))
    ));
    let nan_beta = LrnParams { beta: f32::NAN, ..p };
    assert!(matches!(
        lrn_backward(&nan_beta, input, &v, &v, &v, &v, &mut dx),
        Err(PoolError::Core(Error::InvalidParameter { what: "LRN beta", .. }))
    ));

    let zero_channels = Shape4 { c: 0, ..input };
    assert_eq!(
        lrn_forward(&p, zero_channels, &[], &mut [], &mut []),
        Err(PoolError::Core(Error::ZeroSize { what: "channels" }))
    );
    let huge = shape(usize::MAX / 2, 4, 2, 2);
    assert_eq!(
        lrn_forward(&p, huge, &v, &mut y, &mut scale),
        Err(PoolError::TooLarge { op: "lrn_forward", dims: huge.dims() })
    );
}
