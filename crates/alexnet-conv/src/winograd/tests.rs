//! Winograd against the direct nested loops of `conv2d`'s tests (which also run every one of
//! their cases with [`ConvAlgorithm::Winograd`] and check its gradients by central
//! differences), on AlexNet's 3x3 layers, and the algorithm choice.

use alexnet_core::{Conv2dGeom, Rounding, Shape4};

use super::{WINOGRAD_MIN_CHANNELS, applies};
use crate::conv2d::tests::{alexnet_layers, check_against_reference, geom, random, shape, widen};
use crate::{ConvAlgorithm, ConvError, ConvWorkspace, conv2d_backward_input, conv2d_forward};

#[test]
fn edge_shapes_match_direct_loops() {
    let cases = [
        // Padding 0 to 3 (3: the input gradient crops), groups 1-3, odd and non-square maps.
        (geom(3, 4, (3, 3), (1, 1), (0, 0), 1), shape(2, 3, 9, 7)),
        (geom(4, 6, (3, 3), (1, 1), (1, 1), 2), shape(3, 4, 13, 13)),
        (geom(6, 3, (3, 3), (1, 1), (2, 2), 3), shape(1, 6, 5, 11)),
        (geom(2, 2, (3, 3), (1, 1), (3, 3), 1), shape(2, 2, 4, 3)),
        (geom(2, 3, (3, 3), (1, 1), (1, 0), 1), shape(1, 2, 6, 3)),
        // Maps smaller than one tile: a 1x1 output, a 1x1 input.
        (geom(2, 2, (3, 3), (1, 1), (0, 0), 1), shape(2, 2, 3, 3)),
        (geom(2, 2, (3, 3), (1, 1), (1, 1), 2), shape(3, 2, 1, 1)),
        // Ceil rounding changes nothing at stride 1.
        (geom(3, 3, (3, 3), (1, 1), (1, 1), 1).with_rounding(Rounding::Ceil), shape(2, 3, 7, 7)),
        // Many images per block (4 tiles each), several blocks, a remainder on 3 threads.
        (geom(2, 3, (3, 3), (1, 1), (1, 1), 1), shape(71, 2, 5, 5)),
    ];
    for (seed, (g, input)) in cases.iter().enumerate() {
        for threads in [1, 3] {
            check_against_reference(g, *input, threads, ConvAlgorithm::Winograd, 40 + seed as u64);
        }
    }
}

/// `max |got - want| / max |want|`.
fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    let worst = got.iter().zip(want).map(|(&g, &w)| (f64::from(g) - w).abs()).fold(0.0, f64::max);
    worst / want.iter().fold(0.0f64, |m, w| m.max(w.abs()))
}

/// The whole of `y` and `dx` by Winograd against im2col + GEMM (itself checked against the
/// `f64` loops by `conv2d`'s tests, which check sampled elements of Winograd's too; full
/// `f64` loops over these layers would take a minute).
#[test]
fn alexnet_3x3_layers_are_within_1e4_relative_of_direct() {
    for (g, input) in alexnet_layers().into_iter().filter(|(g, _)| g.kernel_h == 3) {
        let (input, seed) = (shape(3, input.c, input.h, input.w), g.out_channels as u64);
        let out = g.output_shape(input).unwrap();
        let (x, w, b, dy) = (
            random(seed, input.numel()),
            random(seed + 1, g.weight_len()),
            random(seed + 2, g.out_channels),
            random(seed + 3, out.numel()),
        );
        let [(y, dx), (want_y, want_dx)] = [ConvAlgorithm::Winograd, ConvAlgorithm::Direct].map(|algorithm| {
            let mut ws = ConvWorkspace::with_threads(2).with_algorithm(algorithm);
            let mut y = vec![f32::NAN; out.numel()];
            conv2d_forward(&g, input, &x, &w, Some(&b), &mut y, &mut ws).unwrap();
            let mut dx = vec![f32::NAN; input.numel()];
            conv2d_backward_input(&g, input, &w, &dy, &mut dx, &mut ws).unwrap();
            (y, dx)
        });
        for (what, got, want) in [("y", y, want_y), ("dx", dx, want_dx)] {
            let err = relative_error(&got, &widen(&want));
            assert!(err < 1e-4, "{what} {g:?}: relative error {err:e}");
        }
    }
}

#[test]
fn auto_picks_winograd_for_wide_3x3_stride_1_layers_only() {
    // Batch 32 on 2 threads: 16 images of 7x7 tiles per worker, over one block of 256.
    let batch = |input: Shape4, n: usize| Shape4 { n, ..input };
    let [conv1, conv2, conv3, conv4, conv5] = alexnet_layers().map(|(g, input)| (g, batch(input, 32)));
    let applies_with = |(g, input): (Conv2dGeom, Shape4), algorithm| applies(&g, input, 2, algorithm);
    for layer in [conv3, conv4, conv5] {
        assert!(applies_with(layer, ConvAlgorithm::Auto), "{layer:?}");
        assert!(applies_with(layer, ConvAlgorithm::Winograd), "{layer:?}");
        assert!(!applies_with(layer, ConvAlgorithm::Direct), "{layer:?}");
        // Batch 1 (and 10 on 2 threads: 5 x 49 tiles per worker) is direct unless forced.
        for n in [1, 10] {
            assert!(!applies_with((layer.0, batch(layer.1, n)), ConvAlgorithm::Auto), "{layer:?}");
            assert!(applies_with((layer.0, batch(layer.1, n)), ConvAlgorithm::Winograd), "{layer:?}");
        }
    }
    let input = shape(64, 4, 13, 13);
    for g in [geom(4, 4, (3, 3), (2, 2), (1, 1), 1), geom(4, 4, (3, 1), (1, 1), (1, 0), 1)] {
        assert!(!applies_with((g, input), ConvAlgorithm::Auto) && !applies_with((g, input), ConvAlgorithm::Winograd));
    }
    for layer in [conv1, conv2] {
        assert!(!applies_with(layer, ConvAlgorithm::Auto) && !applies_with(layer, ConvAlgorithm::Winograd));
    }
    // Too few channels per group on either side: direct unless forced.
    let (narrow, wide) = (WINOGRAD_MIN_CHANNELS - 1, WINOGRAD_MIN_CHANNELS);
    for g in [geom(narrow, wide, (3, 3), (1, 1), (1, 1), 1), geom(2 * wide, 2 * narrow, (3, 3), (1, 1), (1, 1), 2)] {
        let input = shape(32, g.in_channels, 13, 13);
        assert!(!applies_with((g, input), ConvAlgorithm::Auto) && applies_with((g, input), ConvAlgorithm::Winograd));
    }
}

#[test]
fn algorithm_names_parse_and_unknown_ones_are_errors() {
    assert_eq!(ConvAlgorithm::parse("auto"), Ok(ConvAlgorithm::Auto));
    assert_eq!(ConvAlgorithm::parse(" Direct "), Ok(ConvAlgorithm::Direct));
    assert_eq!(ConvAlgorithm::parse("WINOGRAD"), Ok(ConvAlgorithm::Winograd));
    let err = ConvAlgorithm::parse("fft").unwrap_err();
    assert_eq!(err, ConvError::UnknownAlgorithm { value: "fft".into() });
    assert!(err.to_string().contains("`fft`") && err.to_string().contains("ALEX_CONV_ALGO"), "{err}");
    let mut ws = ConvWorkspace::with_threads(1).with_algorithm(ConvAlgorithm::Direct);
    assert_eq!(ws.algorithm(), Ok(ConvAlgorithm::Direct));
}

#[test]
fn workspace_is_reused_not_regrown() {
    let big = geom(64, 64, (3, 3), (1, 1), (1, 1), 2);
    let small = geom(8, 8, (3, 3), (1, 1), (1, 1), 1);
    let mut ws = ConvWorkspace::with_threads(2).with_algorithm(ConvAlgorithm::Winograd);
    let run = |g: &Conv2dGeom, input: Shape4, ws: &mut ConvWorkspace| {
        let out = g.output_shape(input).unwrap();
        let (x, w) = (random(5, input.numel()), random(6, g.weight_len()));
        let mut y = vec![0.0; out.numel()];
        conv2d_forward(g, input, &x, &w, None, &mut y, ws).unwrap();
        let mut dx = vec![0.0; input.numel()];
        conv2d_backward_input(g, input, &w, &y, &mut dx, ws).unwrap();
    };
    run(&big, shape(4, 64, 13, 13), &mut ws);
    let after_big = ws.scratch_bytes();
    assert!(after_big > 0);
    run(&small, shape(2, 8, 9, 9), &mut ws);
    run(&big, shape(4, 64, 13, 13), &mut ws);
    assert_eq!(ws.scratch_bytes(), after_big);
}
