//! Decompression bombs (issue 12, item 1): every decoding route refuses an image whose
//! header claims more than the pixel limit before allocating its pixels; a training run
//! over a folder holding such files skips and names them and peaks within 10% of the same
//! run without them; `predict` says why per file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alexnet::trainer::predict_files;
use alexnet::{Observer, Preset, RunConfig, Schedule, Trainer};
use alexnet_augment::{Channels, Decode};
use alexnet_autograd::CpuBackend;
use alexnet_integration_tests::alloc::{CountingAlloc, measure, serial};
use alexnet_integration_tests::fixtures;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const MIB: usize = 1 << 20;

#[test]
fn every_decoding_route_refuses_images_over_the_pixel_limit_from_the_header() {
    let _serial = serial();
    let rgb_jpeg = fixtures::jpeg_bytes(16, 16, 3);
    let png = fixtures::png_bytes(16, 16, 3);
    // zune-jpeg directly (colour JPEG wanted as RGB); the `image` crate for a colour JPEG
    // wanted grey, for CMYK, and for PNG.
    let cases = [
        (fixtures::jpeg_claiming(&rgb_jpeg, 20_000, 20_000), Decode::new(Channels::Rgb)),
        (fixtures::jpeg_claiming(&rgb_jpeg, 65_500, 65_500), Decode::new(Channels::Rgb)),
        (fixtures::jpeg_claiming(&rgb_jpeg, 20_000, 20_000), Decode::new(Channels::Grey)),
        (fixtures::jpeg_claiming(&fixtures::cmyk_jpeg(), 20_000, 20_000), Decode::new(Channels::Rgb)),
        (fixtures::png_claiming(&png, 20_000, 20_000), Decode::new(Channels::Rgb)),
        (fixtures::png_claiming(&png, 1 << 30, 1 << 30), Decode::new(Channels::Grey)),
    ];
    for (i, (bytes, decode)) in cases.iter().enumerate() {
        // Refused from the header: a few tables at most, never the claimed pixels.
        let (result, peak) = measure(64 * MIB, || decode.apply(bytes));
        let err = result.expect_err(&format!("case {i} decoded"));
        assert!(err.contains("over the limit of 64 megapixels"), "case {i}: {err}");
        assert!(peak < 4 * MIB, "case {i} allocated {peak} bytes");
    }
    let err = Decode::new(Channels::Rgb).apply(&cases[0].0).unwrap_err();
    assert!(err.contains("20000x20000 (400 megapixels)"), "{err}");
    // The limit is the caller's: 16x16 = 256 pixels passes a limit of 256, not one of 255.
    for (bytes, limit, ok) in [(&rgb_jpeg, 256, true), (&rgb_jpeg, 255, false), (&png, 255, false), (&png, 256, true)] {
        let decode = Decode { max_pixels: limit, ..Decode::default() };
        assert_eq!(decode.apply(bytes).is_ok(), ok, "limit {limit}");
    }
}

/// Collects the trainer's notes.
#[derive(Default)]
struct Notes(Vec<String>);
impl Observer for Notes {
    fn note(&mut self, message: &str) {
        self.0.push(message.to_string());
    }
}

fn one_epoch(data: &Path, runs: &Path) -> Vec<String> {
    let mut config = RunConfig::for_preset(Preset::Mini);
    config.name = "run".into();
    config.output.runs_dir = runs.to_path_buf();
    config.data.train = Some(data.to_path_buf());
    config.data.val_fraction = 0.0;
    config.optim.epochs = 1;
    config.optim.batch_size = 4;
    config.optim.schedule = Schedule::Constant;
    let backend = Arc::new(CpuBackend::with_threads(1).unwrap());
    let mut notes = Notes::default();
    Trainer::new(config, backend).unwrap().fit(&mut notes).unwrap();
    notes.0
}

#[test]
fn bombs_in_a_training_folder_are_skipped_named_and_cost_no_memory_and_predict_says_why() {
    let _serial = serial();
    let (clean, bombed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files = fixtures::write_class_folder(clean.path(), 6);
    fixtures::write_class_folder(bombed.path(), 6);
    let bomb_paths: Vec<PathBuf> = fixtures::bombs()
        .into_iter()
        .map(|(name, bytes)| {
            let path = bombed.path().join(fixtures::CLASSES[0]).join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();

    let (runs_clean, runs_bombed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Decoding the 65,500 x 65,500 JPEG alone would take 12.9 GB; the limit of the
    // measurement (1 GiB) aborts long before.
    let (_, clean_peak) = measure(1024 * MIB, || one_epoch(clean.path(), runs_clean.path()));
    let (notes, bombed_peak) = measure(1024 * MIB, || one_epoch(bombed.path(), runs_bombed.path()));
    println!("peak heap of one epoch: {clean_peak} bytes without the bombs, {bombed_peak} with them");
    assert!(
        (bombed_peak as f64) <= 1.10 * clean_peak as f64,
        "peak {bombed_peak} bytes with the bombs, {clean_peak} without"
    );
    for bomb in &bomb_paths {
        let named = notes.iter().any(|n| n.contains(&bomb.display().to_string()) && n.contains("over the limit"));
        assert!(named, "{} not reported in {notes:#?}", bomb.display());
    }
    assert_eq!(notes.iter().filter(|n| n.starts_with("skipped")).count(), bomb_paths.len(), "{notes:#?}");

    // predict: one answer per file, in order; the good image still gets its prediction.
    let empty = clean.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let asked = [files[0].clone(), bomb_paths[0].clone(), empty, clean.path().join("missing.png")];
    let backend = Arc::new(CpuBackend::with_threads(1).unwrap());
    let answers = predict_files(&runs_clean.path().join("run"), &asked, Decode::DEFAULT_MAX_PIXELS, backend).unwrap();
    assert_eq!(answers.len(), asked.len());
    assert_eq!(answers[0].as_ref().unwrap().len(), 3, "three classes ranked");
    let reasons: Vec<String> = answers[1..].iter().map(|a| a.as_ref().unwrap_err().to_string()).collect();
    assert!(reasons[0].contains("65500x65500") && reasons[0].contains("over the limit"), "{}", reasons[0]);
    assert!(reasons[1].contains("0 bytes"), "{}", reasons[1]);
    assert!(reasons[2].contains("missing.png"), "{}", reasons[2]);
}
