use alexnet_core::{Axis, Error, PoolGeom, PoolKind, Rounding, Shape4};

use super::{pool_backward, pool_forward};
use crate::PoolError;
use crate::testutil::{assert_close, distinct_vec, gradient_check, shape, to_f64, uniform_vec, with_threads};

const KINDS: [PoolKind; 2] = [PoolKind::Max, PoolKind::Avg];

fn geom(window: (usize, usize), stride: (usize, usize), pad: (usize, usize), rounding: Rounding) -> PoolGeom {
    PoolGeom {
        window_h: window.0,
        window_w: window.1,
        stride_h: stride.0,
        stride_w: stride.1,
        pad_h: pad.0,
        pad_w: pad.1,
        rounding,
    }
}

/// The input cells of window `(oh, ow)` in row-major order, by the textbook definition:
/// padded coordinates `o * s + k - p`, cells outside the input skipped.
fn window_cells(g: &PoolGeom, input: Shape4, oh: usize, ow: usize) -> Vec<(usize, usize)> {
    let inside = |o: usize, s: usize, k: usize, p: usize, len: usize| {
        let at = (o * s + k) as isize - p as isize;
        (0..len as isize).contains(&at).then_some(at as usize)
    };
    let mut cells = Vec::new();
    for kh in 0..g.window_h {
        for kw in 0..g.window_w {
            if let (Some(h), Some(w)) =
                (inside(oh, g.stride_h, kh, g.pad_h, input.h), inside(ow, g.stride_w, kw, g.pad_w, input.w))
            {
                cells.push((h, w));
            }
        }
    }
    assert!(!cells.is_empty(), "window ({oh}, {ow}) of {g:?} sees no input");
    cells
}

/// Calls `f(output index, input indices of its window in row-major order)` for every output.
fn for_each_window(g: &PoolGeom, input: Shape4, mut f: impl FnMut(usize, Vec<usize>)) {
    let out = g.output_shape(input).unwrap();
    for n in 0..out.n {
        for c in 0..out.c {
            for oh in 0..out.h {
                for ow in 0..out.w {
                    let cells = window_cells(g, input, oh, ow).into_iter().map(|(h, w)| input.index(n, c, h, w));
                    f(out.index(n, c, oh, ow), cells.collect());
                }
            }
        }
    }
}

fn reference_forward(kind: PoolKind, g: &PoolGeom, input: Shape4, x: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; g.output_shape(input).unwrap().numel()];
    for_each_window(g, input, |o, cells| {
        let values = cells.iter().map(|&i| x[i]);
        y[o] = match kind {
            PoolKind::Max => values.fold(f64::NEG_INFINITY, f64::max),
            PoolKind::Avg => values.sum::<f64>() / cells.len() as f64,
        };
    });
    y
}

fn reference_backward(kind: PoolKind, g: &PoolGeom, input: Shape4, x: &[f64], dy: &[f64]) -> Vec<f64> {
    let mut dx = vec![0.0; x.len()];
    for_each_window(g, input, |o, cells| match kind {
        PoolKind::Max => {
            let first_max = cells.iter().copied().reduce(|best, i| if x[i] > x[best] { i } else { best }).unwrap();
            dx[first_max] += dy[o];
        }
        PoolKind::Avg => cells.iter().for_each(|&i| dx[i] += dy[o] / cells.len() as f64),
    });
    dx
}

/// Runs forward and backward (over garbage-filled outputs, to prove they are overwritten).
fn run(kind: PoolKind, g: &PoolGeom, input: Shape4, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![f32::NAN; g.output_shape(input).unwrap().numel()];
    pool_forward(kind, g, input, x, &mut y).unwrap();
    let mut dx = vec![-7.0; x.len()];
    pool_backward(kind, g, input, x, &y, dy, &mut dx).unwrap();
    (y, dx)
}

fn check_against_reference(kind: PoolKind, g: &PoolGeom, input: Shape4, seed: u64) {
    let x = uniform_vec(seed, input.numel(), -2.0, 2.0);
    let dy = uniform_vec(seed + 1, g.output_shape(input).unwrap().numel(), -1.0, 1.0);
    let (y, dx) = run(kind, g, input, &x, &dy);
    let what = format!("{kind:?} {g:?} on {input}");
    assert_close(&format!("{what}: y"), &y, &reference_forward(kind, g, input, &to_f64(&x)), 1e-6, 1e-6);
    let want_dx = reference_backward(kind, g, input, &to_f64(&x), &to_f64(&dy));
    assert_close(&format!("{what}: dx"), &dx, &want_dx, 1e-6, 1e-6);
}

/// Hand-computed windows on one 4x4 plane, including ceil-mode windows clipped at the
/// right and bottom edges and padding excluded from the average.
#[test]
fn hand_computed_small_plane() {
    #[rustfmt::skip]
    let x = [
        3.0, 1.0, 4.0, 1.0,
        5.0, 9.0, 2.0, 6.0,
        5.0, 3.0, 5.0, 8.0,
        9.0, 7.0, 9.0, 3.0,
    ];
    let input = shape(1, 1, 4, 4);
    let forward = |kind, g: PoolGeom| {
        let mut y = vec![0.0; g.output_shape(input).unwrap().numel()];
        pool_forward(kind, &g, input, &x, &mut y).unwrap();
        y
    };
    let floor = geom((3, 3), (2, 2), (0, 0), Rounding::Floor);
    assert_eq!(forward(PoolKind::Max, floor), [9.0]);
    assert_eq!(forward(PoolKind::Avg, floor), [37.0 / 9.0]);

    let ceil = geom((3, 3), (2, 2), (0, 0), Rounding::Ceil);
    assert_eq!(forward(PoolKind::Max, ceil), [9.0, 8.0, 9.0, 9.0]);
    assert_eq!(forward(PoolKind::Avg, ceil), [37.0 / 9.0, 26.0 / 6.0, 38.0 / 6.0, 25.0 / 4.0]);
    let mut dx = [0.0; 16];
    pool_backward(PoolKind::Max, &ceil, input, &x, &[9.0, 8.0, 9.0, 9.0], &[1.0, 10.0, 100.0, 1000.0], &mut dx)
        .unwrap();
    // Window (1, 0) holds two 9s in row 3: the first, (3, 0), takes the gradient.
    #[rustfmt::skip]
    assert_eq!(dx, [
        0.0, 0.0, 0.0, 0.0,
        0.0, 1.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 10.0,
        100.0, 0.0, 1000.0, 0.0,
    ]);

    let padded = geom((2, 2), (2, 2), (1, 1), Rounding::Floor);
    assert_eq!(forward(PoolKind::Max, padded), [3.0, 4.0, 1.0, 5.0, 9.0, 8.0, 9.0, 9.0, 3.0]);
    assert_eq!(forward(PoolKind::Avg, padded), [3.0, 2.5, 1.0, 5.0, 4.75, 7.0, 9.0, 8.0, 3.0]);
    let mut dx = [0.0; 16];
    pool_backward(
        PoolKind::Avg,
        &padded,
        input,
        &x,
        &[0.0; 9],
        &[1.0, 2.0, 4.0, 0.0, 8.0, 0.0, 0.0, 0.0, 0.0],
        &mut dx,
    )
    .unwrap();
    // Corner windows hold one input cell, edge windows two: padding takes no share.
    #[rustfmt::skip]
    assert_eq!(dx, [
        1.0, 1.0, 1.0, 4.0,
        0.0, 2.0, 2.0, 0.0,
        0.0, 2.0, 2.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ]);
}

/// Equal values: the gradient goes to the first of them in row-major window order (row
/// first, not column first), and overlapping windows accumulate.
#[test]
fn ties_route_to_first_maximum_in_row_major_order() {
    let overlapping = geom((3, 3), (2, 2), (0, 0), Rounding::Floor);
    let input = shape(1, 1, 3, 5);
    let x = [1.0; 15];
    let mut dx = [0.0; 15];
    pool_backward(PoolKind::Max, &overlapping, input, &x, &[1.0; 2], &[1.0, 10.0], &mut dx).unwrap();
    let mut want = [0.0; 15];
    want[0] = 1.0;
    want[2] = 10.0;
    assert_eq!(dx, want);

    // [[0, 5], [5, 0]]: row-major order meets (0, 1) before (1, 0).
    let two = geom((2, 2), (2, 2), (0, 0), Rounding::Floor);
    let mut dx = [0.0; 4];
    pool_backward(PoolKind::Max, &two, shape(1, 1, 2, 2), &[0.0, 5.0, 5.0, 0.0], &[5.0], &[3.0], &mut dx).unwrap();
    assert_eq!(dx, [0.0, 3.0, 0.0, 0.0]);
}

#[test]
fn nan_wins_and_takes_the_gradient() {
    let g = geom((2, 2), (2, 2), (0, 0), Rounding::Floor);
    let input = shape(1, 1, 2, 4);
    let x = [1.0, f32::NAN, 7.0, 2.0, 9.0, f32::NAN, 3.0, 4.0];
    let mut y = [0.0; 2];
    pool_forward(PoolKind::Max, &g, input, &x, &mut y).unwrap();
    assert!(y[0].is_nan() && y[1] == 7.0, "{y:?}");
    let mut dx = [0.0; 8];
    pool_backward(PoolKind::Max, &g, input, &x, &y, &[1.0, 2.0], &mut dx).unwrap();
    assert_eq!(dx, [0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

/// The backward finds each window's maximum through `y`; a `y` that is none of its window's
/// cells (here: not computed from this `x`) must not drop the gradient but fall back to
/// searching `x`, inner and edge windows alike.
#[test]
fn max_backward_with_a_foreign_y_routes_to_the_first_maximum_of_x() {
    let g = geom((3, 3), (2, 2), (1, 1), Rounding::Ceil);
    let input = shape(2, 3, 11, 12);
    let output = g.output_shape(input).unwrap();
    let x = uniform_vec(21, input.numel(), -1.0, 1.0);
    let dy = uniform_vec(22, output.numel(), -1.0, 1.0);
    let want = reference_backward(PoolKind::Max, &g, input, &to_f64(&x), &to_f64(&dy));
    for foreign in [f32::NAN, 5.0, -5.0] {
        let mut dx = vec![f32::NAN; input.numel()];
        pool_backward(PoolKind::Max, &g, input, &x, &vec![foreign; output.numel()], &dy, &mut dx).unwrap();
        assert_close(&format!("y = {foreign}"), &dx, &want, 1e-6, 1e-6);
    }
}

/// AlexNet's three pooling layers (overlapping 3x3 stride 2) at full channel counts.
#[test]
fn alexnet_shapes_against_reference() {
    for rounding in [Rounding::Floor, Rounding::Ceil, Rounding::Exact] {
        let g = PoolGeom::square(3, 2, 0, rounding).unwrap();
        for (seed, (c, h, out)) in (11..).zip([(96, 55, 27), (256, 27, 13), (256, 13, 6)]) {
            let input = shape(1, c, h, h);
            assert_eq!(g.output_shape(input).unwrap(), shape(1, c, out, out));
            for kind in KINDS {
                check_against_reference(kind, &g, input, seed);
            }
        }
    }
}

/// Floor and ceil, 2x2/2 and 3x3/2, padding, non-square windows and strides, odd sizes.
#[test]
fn geometries_against_reference() {
    let mut seed = 100;
    for rounding in [Rounding::Floor, Rounding::Ceil] {
        for (window, stride, pad) in [
            ((2, 2), (2, 2), (0, 0)),
            ((3, 3), (2, 2), (0, 0)),
            ((3, 3), (2, 2), (1, 1)),
            ((2, 2), (2, 2), (1, 1)),
            ((3, 3), (1, 1), (1, 1)),
            ((2, 3), (1, 2), (1, 0)),
            ((5, 1), (3, 1), (2, 0)),
            ((4, 4), (3, 3), (2, 3)),
        ] {
            for (h, w) in [(7, 7), (8, 6), (5, 9), (4, 4)] {
                let g = geom(window, stride, pad, rounding);
                let input = shape(2, 3, h, w);
                if g.output_shape(input).is_err() {
                    continue;
                }
                for kind in KINDS {
                    seed += 1;
                    check_against_reference(kind, &g, input, seed);
                }
            }
        }
    }
}

/// f64 central differences of the reference forward against the f32 backward, with inputs
/// spaced far enough apart that a nudge never changes a window's maximum.
#[test]
fn gradient_checks() {
    for (g, (h, w)) in [
        (geom((3, 3), (2, 2), (0, 0), Rounding::Floor), (7, 7)),
        (geom((3, 3), (2, 2), (1, 1), Rounding::Ceil), (6, 8)),
        (geom((2, 2), (2, 2), (0, 0), Rounding::Ceil), (5, 5)),
        (geom((2, 3), (1, 2), (1, 0), Rounding::Floor), (4, 7)),
    ] {
        let input = shape(2, 2, h, w);
        let x = distinct_vec(7, input.numel(), 0.01);
        let dy = to_f64(&uniform_vec(8, g.output_shape(input).unwrap().numel(), -1.0, 1.0));
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let dy32: Vec<f32> = dy.iter().map(|&v| v as f32).collect();
        for kind in KINDS {
            let (_, dx) = run(kind, &g, input, &x32, &dy32);
            let forward = |x: &[f64]| reference_forward(kind, &g, input, x);
            gradient_check(&format!("{kind:?} {g:?}"), forward, &x, &dy, &dx, 1e-4, 1e-5);
        }
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let g = PoolGeom::square(3, 2, 1, Rounding::Ceil).unwrap();
    let input = shape(3, 5, 11, 9);
    let x = uniform_vec(1, input.numel(), -1.0, 1.0);
    let dy = uniform_vec(2, g.output_shape(input).unwrap().numel(), -1.0, 1.0);
    for kind in KINDS {
        let one = with_threads(1, || run(kind, &g, input, &x, &dy));
        for threads in [2, 3] {
            assert_eq!(with_threads(threads, || run(kind, &g, input, &x, &dy)), one, "{kind:?}, {threads} threads");
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let g = PoolGeom::square(3, 2, 0, Rounding::Floor).unwrap();
    let input = shape(2, 3, 7, 7); // output 2 x 3 x 3 x 3
    let (x, y, dx) = (vec![0.0; 294], vec![0.0; 54], vec![0.0; 294]);
    for kind in KINDS {
        let wrong = |backward, buffer, expected, got| {
            Err(PoolError::Core(Error::BufferSize { op: super::op_name(kind, backward), buffer, expected, got }))
        };
        let (mut y_mut, mut dx_mut) = (y.clone(), dx.clone());
        assert_eq!(pool_forward(kind, &g, input, &x[1..], &mut y_mut), wrong(false, "x", 294, 293));
        assert_eq!(pool_forward(kind, &g, input, &x, &mut y_mut[1..]), wrong(false, "y", 54, 53));
        assert_eq!(pool_backward(kind, &g, input, &x[1..], &y, &y, &mut dx_mut), wrong(true, "x", 294, 293));
        assert_eq!(pool_backward(kind, &g, input, &x, &y[1..], &y, &mut dx_mut), wrong(true, "y", 54, 53));
        assert_eq!(pool_backward(kind, &g, input, &x, &y, &y[1..], &mut dx_mut), wrong(true, "dy", 54, 53));
        assert_eq!(pool_backward(kind, &g, input, &x, &y, &y, &mut dx_mut[1..]), wrong(true, "dx", 294, 293));
    }

    let mut y = vec![0.0; 1];
    let forward = |g: &PoolGeom, input: Shape4, y: &mut [f32]| {
        let x = vec![0.0; input.n.saturating_mul(input.c).saturating_mul(input.h).saturating_mul(input.w).min(64)];
        pool_forward(PoolKind::Max, g, input, &x, y).unwrap_err()
    };
    // Window larger than the padded input.
    let big = PoolGeom::square(5, 1, 0, Rounding::Floor).unwrap();
    assert_eq!(
        forward(&big, shape(1, 1, 4, 8), &mut y),
        PoolError::Core(Error::WindowTooLarge { axis: Axis::Height, window: 5, input: 4, padding: 0, padded_input: 4 })
    );
    // Zero sizes, in the shape or the geometry (both have public fields).
    let zero_batch = Shape4 { n: 0, c: 1, h: 4, w: 4 };
    assert_eq!(forward(&g, zero_batch, &mut y), PoolError::Core(Error::ZeroSize { what: "batch size" }));
    let zero_stride = PoolGeom { stride_w: 0, ..g };
    assert_eq!(
        forward(&zero_stride, shape(1, 1, 4, 4), &mut y),
        PoolError::Core(Error::ZeroSize { what: "stride width" })
    );
    let zero_window = PoolGeom { window_h: 0, ..g };
    assert_eq!(
        forward(&zero_window, shape(1, 1, 4, 4), &mut y),
        PoolError::Core(Error::ZeroSize { what: "window height" })
    );
    // Padding as large as the window would leave windows with no input.
    let all_padding = PoolGeom { pad_w: 3, ..g };
    assert_eq!(
        forward(&all_padding, shape(1, 1, 4, 4), &mut y),
        PoolError::Core(Error::PaddingTooLarge { axis: Axis::Width, padding: 3, window: 3 })
    );
    // Exact rounding that does not close.
    let exact = PoolGeom::square(2, 2, 0, Rounding::Exact).unwrap();
    assert!(matches!(
        forward(&exact, shape(1, 1, 7, 7), &mut y),
        PoolError::Core(Error::DoesNotClose { nearest_exact: 8, .. })
    ));
    // A plane too large for the u32 argmax indices (checked before the buffers).
    let wide = shape(1, 1, 70_000, 70_000);
    assert_eq!(
        pool_forward(PoolKind::Max, &g, wide, &[], &mut []),
        Err(PoolError::PlaneTooLarge { op: "max_pool_forward", h: 70_000, w: 70_000 })
    );
    // An element count that overflows.
    let huge = shape(usize::MAX / 2, 4, 2, 2);
    assert_eq!(forward(&g, huge, &mut y), PoolError::TooLarge { op: "max_pool_forward", dims: huge.dims() });
}
