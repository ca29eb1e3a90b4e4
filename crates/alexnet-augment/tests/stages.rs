//! Every stage against a direct computation, and the fused pass against the plain reference.

// Direct formulas read best with explicit indices.
#![allow(clippy::needless_range_loop)]

mod common;

use alexnet_augment::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn image(width: usize, height: usize, channels: usize, salt: usize) -> Image {
    let data = (0..width * height * channels).map(|i| ((i * 37 + salt * 11) % 256) as u8).collect();
    Image::new(width, height, channels, data).unwrap()
}

#[test]
fn random_crop_offsets_cover_the_padded_range_uniformly() {
    let crop = RandomCrop { size: 3, padding: 1 };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut direct = rng.clone();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..2000 {
        let w = crop.window(5, 4, &mut rng).unwrap();
        // Padded 7x6: top in 0..=3, left in 0..=4, shifted back by the padding.
        let top = direct.random_range(0..=3usize) as isize - 1;
        let left = direct.random_range(0..=4usize) as isize - 1;
        assert_eq!((w.left, w.top, w.width, w.height, w.flip), (left, top, 3, 3, false));
        seen.insert((left, top));
    }
    assert_eq!(seen.len(), 5 * 4, "every position is reachable");
    assert!(crop.window(0, 0, &mut rng).is_none(), "2x2 padded is smaller than 3");
    assert!(RandomCrop { size: 227, padding: 0 }.window(256, 226, &mut rng).is_none());
}

#[test]
fn crop_and_flip_match_direct_indexing() {
    let img = image(5, 4, 3, 0);
    let w = Window { left: -1, top: 1, width: 3, height: 3, flip: false };
    let cropped = w.crop(&img);
    let flipped = Flip::apply(&cropped);
    for y in 0..3 {
        for x in 0..3 {
            for c in 0..3 {
                let (sx, sy) = (x as isize - 1, y as isize + 1);
                let expected =
                    if (0..5).contains(&sx) && (0..4).contains(&sy) { img.get(sx as usize, sy as usize, c) } else { 0 };
                assert_eq!(cropped.get(x, y, c), expected, "crop at {x},{y},{c}");
                assert_eq!(flipped.get(2 - x, y, c), expected, "flip at {x},{y},{c}");
            }
        }
    }
}

#[test]
fn centre_and_ten_crop_positions() {
    let centre = CentreCrop { size: 4 }.window(11, 8).unwrap();
    assert_eq!((centre.left, centre.top), (3, 2));
    let ten = TenCrop { size: 4 }.windows(10, 8).unwrap();
    let expected = [(0, 0), (6, 0), (0, 4), (6, 4), (3, 2)];
    for (i, w) in ten.iter().enumerate() {
        assert_eq!((w.left, w.top), expected[i % 5], "view {i}");
        assert_eq!(w.flip, i >= 5, "view {i}");
        assert_eq!((w.width, w.height), (4, 4));
    }
    assert!(TenCrop { size: 9 }.windows(10, 8).is_none());
}

#[test]
fn ten_crop_views_hold_the_right_pixels() {
    let img = image(10, 8, 3, 2);
    let t = Transform {
        decode: Decode::new(Channels::Rgb),
        resize: None,
        augment: Augment::TenCrop(TenCrop { size: 4 }),
        normalize: Normalize::identity(3),
    };
    let plan = t.plan(10, 8, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    let mut out = vec![0.0; t.sample_len()];
    t.write_fused(&img, &plan, &mut out);
    let corners = [(0, 0), (6, 0), (0, 4), (6, 4), (3, 2)];
    for v in 0..10 {
        let (l, tp) = corners[v % 5];
        for c in 0..3 {
            for y in 0..4 {
                for x in 0..4 {
                    let sx = if v >= 5 { l + 3 - x } else { l + x };
                    let expected = f32::from(img.get(sx, tp + y, c)) / 255.0;
                    let got = out[v * 48 + c * 16 + y * 4 + x];
                    assert!((got - expected).abs() < 1e-6, "view {v} c{c} y{y} x{x}: {got} vs {expected}");
                }
            }
        }
    }
}

#[test]
fn fused_pass_matches_the_formula_written_out() {
    let img = image(3, 2, 3, 5);
    let t = Transform {
        decode: Decode::new(Channels::Rgb),
        resize: None,
        augment: Augment::Centre(CentreCrop { size: 2 }),
        normalize: Normalize::per_channel(&[0.4, 0.5, 0.6], &[0.2, 0.25, 0.3]),
    };
    let window = Window { left: -1, top: 0, width: 2, height: 2, flip: true };
    let plan = Plan { windows: vec![window], offset: vec![0.01, -0.02, 0.03] };
    let mut out = vec![0.0; 12];
    t.write_fused(&img, &plan, &mut out);
    let (mean, std, off) = ([0.4, 0.5, 0.6], [0.2, 0.25, 0.3], [0.01, -0.02, 0.03]);
    for c in 0..3 {
        for y in 0..2 {
            for x in 0..2 {
                // Mirrored: output column x reads window column 1 - x, i.e. source column -x.
                let sx = -1 + (1 - x as isize);
                let byte = if sx >= 0 { f64::from(img.get(sx as usize, y, c)) } else { 0.0 };
                let expected = (byte / 255.0 + off[c] - mean[c]) / std[c];
                let got = f64::from(out[c * 4 + y * 2 + x]);
                assert!((got - expected).abs() < 1e-6, "c{c} y{y} x{x}: {got} vs {expected}");
            }
        }
    }
}

fn assert_close(fused: &[f32], reference: &[f32], what: &str) {
    assert_eq!(fused.len(), reference.len(), "{what}: lengths");
    let worst = fused.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-6, "{what}: max difference {worst}");
}

#[test]
fn fused_equals_stage_by_stage_reference() {
    let pca = PcaNoise {
        eigenvalues: vec![0.21, 0.019, 0.0045],
        eigenvectors: vec![vec![-0.58, -0.58, -0.57], vec![-0.71, 0.0, 0.7], vec![0.41, -0.82, 0.4]],
        sigma: 0.1,
    };
    let rgb = image(40, 33, 3, 1);
    let grey = image(28, 28, 1, 3);
    let mean_image = MeanImage {
        width: 40,
        height: 33,
        channels: 3,
        data: (0..40 * 33 * 3).map(|i| (i % 97) as f32 / 97.0).collect(),
    };
    let cases = [
        (
            "train rgb padded pca",
            Transform {
                decode: Decode::new(Channels::Rgb),
                resize: None,
                augment: Augment::Train {
                    crop: RandomCrop { size: 32, padding: 4 },
                    flip: Flip::default(),
                    pca: Some(pca.clone()),
                },
                normalize: Normalize::imagenet(),
            },
            &rgb,
        ),
        (
            "train grey padded",
            Transform::small_train(Channels::Grey, 28, 4, Normalize::per_channel(&[0.286], &[0.353])),
            &grey,
        ),
        (
            "ten-crop",
            Transform { augment: Augment::TenCrop(TenCrop { size: 30 }), ..Transform::imagenet_eval(true) },
            &rgb,
        ),
        (
            "per-pixel mean",
            Transform {
                decode: Decode::new(Channels::Rgb),
                resize: None,
                augment: Augment::Train {
                    crop: RandomCrop { size: 31, padding: 0 },
                    flip: Flip { probability: 0.5 },
                    pca: Some(pca),
                },
                normalize: Normalize {
                    mean: vec![0.0; 3],
                    std: vec![0.229, 0.224, 0.225],
                    mean_image: Some(mean_image.into()),
                },
            },
            &rgb,
        ),
    ];
    for (what, t, img) in cases {
        t.validate().unwrap();
        let mut flips = 0;
        for s in 0..40 {
            let plan = t.plan(img.width, img.height, &mut sample_rng(9, 0, s)).unwrap();
            flips += usize::from(plan.windows.iter().any(|w| w.flip));
            let mut fused = vec![f32::NAN; t.sample_len()];
            t.write_fused(img, &plan, &mut fused);
            assert_close(&fused, &t.apply_reference(img, &plan), what);
        }
        assert!(flips > 0, "{what}: some views are mirrored");
    }
}

#[test]
fn fused_equals_reference_on_resized_jpegs() {
    let mut t = Transform::imagenet_train(Some(PcaNoise {
        eigenvalues: vec![0.2, 0.02, 0.005],
        eigenvectors: vec![vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0], vec![0.0, 0.0, 1.0]],
        sigma: 0.1,
    }));
    let mut scratch = Scratch::new();
    for (i, (w, h)) in [(224, 224), (300, 200), (180, 260)].into_iter().enumerate() {
        let img = t.prepare(RawSample::Encoded(common::jpeg_bytes(w, h, i as u32)), &mut scratch).unwrap();
        assert_eq!((img.width, img.height, img.channels), (256, 256, 3));
        let plan = t.plan(256, 256, &mut sample_rng(1, 2, i as u64)).unwrap();
        let mut fused = vec![0.0; t.sample_len()];
        t.write_fused(&img, &plan, &mut fused);
        assert_close(&fused, &t.apply_reference(&img, &plan), "imagenet train");
    }
    t.augment = Augment::Centre(CentreCrop { size: 227 });
    let img = t.prepare(RawSample::Encoded(common::jpeg_bytes(224, 224, 9)), &mut scratch).unwrap();
    let plan = t.plan(img.width, img.height, &mut sample_rng(0, 0, 0)).unwrap();
    assert_eq!((plan.windows[0].left, plan.windows[0].top), (14, 14));
}

/// `fast_image_resize`'s bilinear convolution of the central square onto `size` x `size`.
fn library_resize(img: &Image, size: usize) -> Vec<u8> {
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images};
    let pixel_type = if img.channels == 3 { PixelType::U8x3 } else { PixelType::U8 };
    let src = images::ImageRef::new(img.width as u32, img.height as u32, &img.data, pixel_type).unwrap();
    let mut dst = images::Image::new(size as u32, size as u32, pixel_type);
    let side = img.width.min(img.height) as f64;
    let (left, top) = ((img.width as f64 - side) / 2.0, (img.height as f64 - side) / 2.0);
    let options =
        ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(left, top, side, side);
    Resizer::new().resize(&src, &mut dst, &options).unwrap();
    dst.into_vec()
}

#[test]
fn resize_equals_fast_image_resize_and_regions_equal_its_crops() {
    let mut buffers = ResizeBuffers::default();
    let mut rng = sample_rng(5, 0, 0);
    // Up- and downscaling, odd sizes and half-pixel centre offsets, RGB and grey.
    let cases = [(224, 224, 3, 256), (300, 200, 3, 256), (181, 260, 3, 256), (500, 375, 3, 256), (120, 80, 3, 100)];
    for (i, (w, h, c, size)) in cases.into_iter().chain([(97, 130, 1, 64), (40, 41, 1, 57)]).enumerate() {
        let img = image(w, h, c, i);
        let resize = ResizeCentreCrop { size };
        let whole = resize.apply(&img, &mut buffers).unwrap();
        assert_eq!((whole.width, whole.height, whole.channels), (size, size, c));
        assert!(whole.data == library_resize(&img, size), "{w}x{h}x{c} -> {size}: differs from fast_image_resize");
        for _ in 0..6 {
            let (width, height) = (rng.random_range(1..=size), rng.random_range(1..=size));
            let (left, top) = (rng.random_range(0..=size - width), rng.random_range(0..=size - height));
            let region = Region { left, top, width, height };
            let mut part = Image::new(0, 0, c, Vec::new()).unwrap();
            resize.apply_region(&img, region, &mut buffers, &mut part).unwrap();
            let window = Window { left: left as isize, top: top as isize, width, height, flip: false };
            assert!(part == window.crop(&whole), "{w}x{h}x{c} -> {size}: region {region:?} differs");
        }
    }
    let outside = Region { left: 200, top: 0, width: 57, height: 10 };
    let err = ResizeCentreCrop { size: 256 }.apply_region(
        &image(30, 30, 3, 0),
        outside,
        &mut buffers,
        &mut image(1, 1, 3, 0),
    );
    assert!(err.unwrap_err().contains("outside"));
}

#[test]
fn resize_straight_to_chw_is_the_affine_map_of_the_resized_bytes() {
    let mut buffers = ResizeBuffers::default();
    let affine = ChwAffine { scale: [0.01, -0.02, 0.03], bias: [-1.5, 0.25, 2.0], flip: false };
    // Upscales (two-tap filters): the direct kernel runs wherever AVX2 does.
    for (i, (w, h, size, region)) in [
        (224, 224, 256, Region { left: 29, top: 3, width: 227, height: 227 }),
        (181, 260, 256, Region { left: 0, top: 29, width: 227, height: 200 }),
        (60, 50, 64, Region { left: 5, top: 7, width: 13, height: 9 }),
    ]
    .into_iter()
    .enumerate()
    {
        let img = image(w, h, 3, i);
        let resize = ResizeCentreCrop { size };
        let mut bytes = Image::new(0, 0, 3, Vec::new()).unwrap();
        resize.apply_region(&img, region, &mut buffers, &mut bytes).unwrap();
        for flip in [false, true] {
            let affine = ChwAffine { flip, ..affine };
            let mut out = vec![f32::NAN; 3 * region.width * region.height];
            let done = resize.apply_region_chw(&img, region, &mut buffers, affine, &mut out).unwrap();
            assert_eq!(done, is_x86_feature_detected!("avx2"), "{w}x{h}: the direct kernel runs with AVX2");
            if !done {
                continue;
            }
            for c in 0..3 {
                for y in 0..region.height {
                    for x in 0..region.width {
                        let sx = if flip { region.width - 1 - x } else { x };
                        let expected = f32::from(bytes.get(sx, y, c)) * affine.scale[c] + affine.bias[c];
                        let got = out[(c * region.height + y) * region.width + x];
                        assert_eq!(got.to_bits(), expected.to_bits(), "{w}x{h} flip {flip} c{c} ({x},{y})");
                    }
                }
            }
        }
    }
    // A downscale (wider filters) and a grey image have no direct kernel.
    let region = Region { left: 0, top: 0, width: 20, height: 20 };
    let mut out = vec![0.0; 3 * 400];
    let resize = ResizeCentreCrop { size: 32 };
    assert!(!resize.apply_region_chw(&image(80, 64, 3, 0), region, &mut buffers, affine, &mut out).unwrap());
    assert!(!resize.apply_region_chw(&image(20, 20, 1, 0), region, &mut buffers, affine, &mut out).unwrap());
    let err = resize.apply_region_chw(&image(20, 20, 3, 0), region, &mut buffers, affine, &mut out[..5]);
    assert!(err.unwrap_err().contains("needs 1200 output values, got 5"));
}

#[test]
fn transform_apply_equals_resize_then_fused_pass_bit_for_bit() {
    // `apply` takes the direct resize-to-CHW path where it can; `prepare_views` +
    // `write_fused` is the two-step path.
    let pca = PcaNoise {
        eigenvalues: vec![0.2, 0.02, 0.005],
        eigenvectors: vec![vec![0.6, 0.8, 0.0], vec![-0.8, 0.6, 0.0], vec![0.0, 0.0, 1.0]],
        sigma: 0.1,
    };
    let mut scratch = Scratch::new();
    for t in [Transform::imagenet_train(Some(pca)), Transform::imagenet_eval(false), Transform::imagenet_eval(true)] {
        for (i, (w, h)) in [(224, 224), (300, 200), (181, 260), (500, 375)].into_iter().enumerate() {
            let bytes = common::jpeg_bytes(w, h, i as u32);
            for seed in 0..4 {
                let mut direct = vec![f32::NAN; t.sample_len()];
                let mut rng = sample_rng(seed, 1, i as u64);
                t.apply(RawSample::Encoded(bytes.clone()), &mut rng, &mut scratch, &mut direct).unwrap();
                let mut rng = sample_rng(seed, 1, i as u64);
                let (img, plan) = t.prepare_views(RawSample::Encoded(bytes.clone()), &mut rng, &mut scratch).unwrap();
                let mut two_step = vec![f32::NAN; t.sample_len()];
                t.write_fused(img, &plan, &mut two_step);
                let same = direct.iter().zip(&two_step).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{w}x{h} seed {seed}: {:?}", t.augment);
            }
        }
    }
}

#[test]
fn resize_centre_crop_is_linear_on_a_ramp() {
    // Pixel value 2x: bilinear resampling reproduces a linear ramp exactly away from the edges.
    for (src_w, size) in [(120usize, 64usize), (120, 100)] {
        let (w, h) = (src_w, 80);
        let data = (0..h).flat_map(|_| (0..w).flat_map(|x| [(2 * x) as u8, 50, 7])).collect();
        let img = Image::new(w, h, 3, data).unwrap();
        let out = ResizeCentreCrop { size }.apply(&img, &mut Default::default()).unwrap();
        assert_eq!((out.width, out.height, out.channels), (size, size, 3));
        let (left, side) = ((w - h) as f64 / 2.0, h as f64);
        for y in [0, size / 2, size - 1] {
            for x in 3..size - 3 {
                let src_x = (x as f64 + 0.5) * side / size as f64 - 0.5 + left;
                let expected = 2.0 * src_x;
                let got = f64::from(out.get(x, y, 0));
                assert!((got - expected).abs() <= 1.0, "size {size} x{x}: {got} vs {expected}");
                assert_eq!((out.get(x, y, 1), out.get(x, y, 2)), (50, 7));
            }
        }
    }
}

#[test]
fn symmetric_eigen_on_hand_matrices() {
    let (values, vectors) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
    assert!((values[0] - 3.0).abs() < 1e-12 && (values[1] - 1.0).abs() < 1e-12, "{values:?}");
    let r = std::f64::consts::FRAC_1_SQRT_2;
    assert!((vectors[0][0].abs() - r).abs() < 1e-12 && (vectors[0][0] - vectors[0][1]).abs() < 1e-12);
    assert!((vectors[1][0] + vectors[1][1]).abs() < 1e-12);
    // A general 3x3: A p = l p, unit and orthogonal eigenvectors, values descending.
    let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
    let (values, vectors) = symmetric_eigen(&a, 3);
    assert!(values[0] >= values[1] && values[1] >= values[2]);
    for i in 0..3 {
        for r in 0..3 {
            let ap: f64 = (0..3).map(|k| a[r * 3 + k] * vectors[i][k]).sum();
            assert!((ap - values[i] * vectors[i][r]).abs() < 1e-10);
        }
        for j in 0..3 {
            let dot: f64 = (0..3).map(|k| vectors[i][k] * vectors[j][k]).sum();
            assert!((dot - f64::from(u8::from(i == j))).abs() < 1e-10);
        }
    }
    assert!((values.iter().sum::<f64>() - 8.0).abs() < 1e-10, "trace");
}

#[test]
fn pca_offset_is_the_papers_formula() {
    let p = PcaNoise {
        eigenvalues: vec![0.2, 0.02, 0.005],
        eigenvectors: vec![vec![0.6, 0.8, 0.0], vec![-0.8, 0.6, 0.0], vec![0.0, 0.0, 1.0]],
        sigma: 0.1,
    };
    let offset = p.offset(&[0.1, -0.2, 0.3]);
    // [p1 p2 p3] [a1 l1, a2 l2, a3 l3]^T with a*l = [0.02, -0.004, 0.0015].
    let expected = [0.6 * 0.02 + 0.8 * 0.004, 0.8 * 0.02 - 0.6 * 0.004, 0.0015];
    for c in 0..3 {
        assert!((f64::from(offset[c]) - expected[c]).abs() < 1e-7, "{offset:?}");
    }
    let alphas: Vec<f32> = (0..20_000).flat_map(|s| p.draw_alphas(&mut sample_rng(0, 0, s))).collect();
    let mean = alphas.iter().map(|&a| f64::from(a)).sum::<f64>() / alphas.len() as f64;
    let var = alphas.iter().map(|&a| (f64::from(a) - mean).powi(2)).sum::<f64>() / alphas.len() as f64;
    assert!(mean.abs() < 0.003 && (var.sqrt() - 0.1).abs() < 0.003, "alpha mean {mean}, std {}", var.sqrt());
}

#[test]
fn transform_validation_names_the_problem() {
    let mut t = Transform::imagenet_train(None);
    t.normalize = Normalize::per_channel(&[0.5], &[0.5]);
    assert!(matches!(t.validate(), Err(Error::Config(m)) if m.contains("1 means")));
    t.normalize = Normalize::per_channel(&[0.5; 3], &[0.5, 0.0, 0.5]);
    assert!(matches!(t.validate(), Err(Error::Config(m)) if m.contains("positive")));
    let small = Transform::small_train(Channels::Grey, 30, 0, Normalize::identity(1));
    let err = small.plan(28, 28, &mut sample_rng(0, 0, 0)).unwrap_err();
    assert!(err.contains("28x28") && err.contains("30x30"), "{err}");
}
