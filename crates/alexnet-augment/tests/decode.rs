//! Decoding the messy files real data sets hold.

// Direct formulas read best with explicit indices.
#![allow(clippy::needless_range_loop)]

mod common;

use alexnet_augment::*;

#[test]
fn grey_jpeg_expands_to_three_equal_channels_or_stays_one() {
    let bytes = common::grey_jpeg_bytes(20, 10);
    let rgb = Decode::new(Channels::Rgb).apply(&bytes).unwrap();
    assert_eq!((rgb.width, rgb.height, rgb.channels), (20, 10, 3));
    assert!(rgb.data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    let grey = Decode::new(Channels::Grey).apply(&bytes).unwrap();
    assert_eq!(grey.channels, 1);
    assert_eq!(grey.data, rgb.data.iter().step_by(3).copied().collect::<Vec<_>>());
}

#[test]
fn png_named_jpeg_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n01/actually_png.JPEG");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, common::png_bytes(9, 7, 4)).unwrap();
    let src = ImageFolder::open(dir.path()).unwrap();
    let RawSample::Encoded(bytes) = src.read(0).unwrap() else { panic!("files are encoded") };
    let img = Decode::default().apply(&bytes).unwrap();
    assert_eq!(img.data, common::rgb_pixels(9, 7, 4), "PNG is lossless");
}

#[test]
fn cmyk_jpeg_decodes_to_rgb() {
    // 16x12: left half (200, 40 + 10y, 20 + 5x), right half (30, 160, 220); see tests/data.
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cmyk.jpg")).unwrap();
    let img = Decode::default().apply(&bytes).unwrap();
    assert_eq!((img.width, img.height, img.channels), (16, 12, 3));
    for y in 0..12 {
        for (x, expected) in [(2, [200, 40 + 10 * y as i32, 30]), (13, [30, 160, 220])] {
            for c in 0..3 {
                let got = i32::from(img.get(x, y, c));
                assert!((got - expected[c]).abs() <= 16, "({x},{y}) c{c}: {got} vs {}", expected[c]);
            }
        }
    }
}

#[test]
fn unusable_bytes_give_reasons() {
    let d = Decode::default();
    assert!(d.apply(b"").unwrap_err().contains("0 bytes"));
    assert!(d.apply(b"GIF89a not really").is_err());
    let jpeg = common::jpeg_bytes(32, 32, 1);
    assert!(d.apply(&jpeg[..40]).is_err(), "truncated in the header");
    let rgb = Image::new(2, 1, 3, vec![255, 0, 0, 0, 0, 255]).unwrap();
    assert_eq!(rgb.clone().into_grey().data, [76, 29]);
    assert!(Image::new(2, 2, 2, vec![0; 8]).is_err());
}

#[test]
fn direct_jpeg_decoding_matches_the_image_crate_and_reuses_buffers() {
    // Colour JPEGs and grey ones (expanded to RGB here) take the direct zune-jpeg route.
    for bytes in [common::jpeg_bytes(37, 23, 4), common::grey_jpeg_bytes(20, 10)] {
        let ours = Decode::default().apply(&bytes).unwrap();
        let theirs = image::load_from_memory(&bytes).unwrap().into_rgb8();
        assert_eq!((ours.width, ours.height, ours.channels), (theirs.width() as usize, theirs.height() as usize, 3));
        assert!(ours.data == theirs.into_raw());
    }
    let mut out = Decode::default().apply(&common::jpeg_bytes(64, 64, 1)).unwrap();
    let small = common::jpeg_bytes(16, 8, 2);
    Decode::default().apply_into(&small, &mut out).unwrap();
    assert_eq!(out, Decode::default().apply(&small).unwrap());
    Decode::new(Channels::Grey).apply_into(&common::grey_jpeg_bytes(9, 5), &mut out).unwrap();
    assert_eq!((out.width, out.height, out.channels, out.data.len()), (9, 5, 1, 45));
}
