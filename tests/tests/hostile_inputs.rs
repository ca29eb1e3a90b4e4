//! Property tests (issue 12, item 12): every reader of outside bytes (the image decoder,
//! the IDX and CIFAR-10 readers, the checkpoint, state and model-description loaders) is
//! handed valid files damaged by a seeded mutation loop (bit flips, truncation, repeated
//! or spliced chunks, size fields set to extreme values). Each must return `Ok` or `Err`:
//! never panic, and never hold more memory at once than its stated bound:
//!
//! - decoding an image: at most 24 bytes per allowed pixel (`max_pixels`) plus 8 MiB,
//!   whatever size the file claims;
//! - an IDX file: 3 x its data (the file, or for gzip the decompressed stream, which is
//!   read no further than the header's claim and cannot exceed ~1,032 x the file) + 1 MiB;
//! - a CIFAR-10 batch file: 3 x the file + 1 MiB;
//! - checkpoint, state and model-description files: 6 x the files + 16 MiB (the model's
//!   parameters included).
//!
//! `ALEX_FUZZ_ITERATIONS` (default 200 per target) and `ALEX_FUZZ_SEED` scale and vary
//! the search; CI runs the default.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use alexnet::checkpoint::{
    Checkpoint, CheckpointDir, DataPosition, TrainingState, load_tensors, parse_tensors, save_tensors,
};
use alexnet::model::MODEL_KEY;
use alexnet::{Architecture, LrScheduler, ModelInfo, Preset, Schedule, load_model};
use alexnet_augment::{Channels, Cifar10Bin, Decode, Idx, Source};
use alexnet_autograd::CpuBackend;
use alexnet_integration_tests::alloc::{CountingAlloc, measure, serial};
use alexnet_integration_tests::fixtures;
use alexnet_integration_tests::mutate::for_each_mutation;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const MIB: usize = 1 << 20;
/// What a measurement may allocate before the process is stopped: far above every stated
/// bound, far below what would trouble the machine.
const HARD_LIMIT: usize = 1 << 30;

/// Runs `f` and asserts that it stayed within `bound` bytes at its peak.
fn within(bound: usize, what: &str, f: impl FnOnce()) -> usize {
    let ((), peak) = measure(HARD_LIMIT, f);
    assert!(peak <= bound, "{what}: peak {peak} bytes, bound {bound}");
    peak
}

#[test]
fn image_decoding_never_panics_and_stays_within_its_bound() {
    let _serial = serial();
    let max_pixels = 1u64 << 20;
    let bound = 24 * max_pixels as usize + 8 * MIB;
    let pngs = [fixtures::png_bytes(33, 21, 3), fixtures::png_bytes(300, 200, 4)];
    let mut seeds = vec![fixtures::jpeg_bytes(48, 40, 1), fixtures::jpeg_bytes(17, 9, 2), fixtures::cmyk_jpeg()];
    seeds.extend(pngs);
    let decoders = [Channels::Rgb, Channels::Grey].map(|channels| Decode { channels, max_pixels });
    let mut worst = 0;
    for_each_mutation("image decode", &seeds, |bytes| {
        // Mutated PNGs mostly fail their CRCs; fixed, they reach the decoder proper.
        for input in [bytes.to_vec(), fixtures::with_fixed_png_crcs(bytes)] {
            for decode in &decoders {
                worst = worst.max(within(bound, "decode", || drop(decode.apply(&input))));
            }
        }
    });
    println!("image decode: peak {worst} bytes, bound {bound}");
}

/// An IDX image file of `n` `rows` x `cols` images and its label file.
fn idx_pair(n: usize, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let mut images = vec![0, 0, 8, 3];
    let mut labels = vec![0, 0, 8, 1];
    for d in [n, rows, cols] {
        images.extend((d as u32).to_be_bytes());
    }
    labels.extend((n as u32).to_be_bytes());
    images.extend((0..n * rows * cols).map(|i| (i * 37 % 256) as u8));
    labels.extend((0..n).map(|i| (i % 10) as u8));
    (images, labels)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Opens a source and reads every sample, label and name of it.
fn read_all(source: &dyn Source) {
    for i in 0..source.len() {
        let _ = (source.read(i), source.label(i), source.describe(i));
    }
    let _ = (source.class_names(), source.fingerprint_bytes());
}

#[test]
fn idx_files_never_panic_and_stay_within_their_bound() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = idx_pair(4, 6, 5);
    let (images_path, labels_path) = (dir.path().join("images"), dir.path().join("labels"));
    // Seeds: image files plain and gzipped; the label file is damaged in every other case.
    let seeds = [images.clone(), gzip(&images), labels.clone(), gzip(&labels)];
    let mut worst = 0;
    for_each_mutation("idx", &seeds, |bytes| {
        let damaged_labels = bytes.len() > 4 && bytes[3] == 1;
        let (image_bytes, label_bytes) = if damaged_labels { (&images[..], bytes) } else { (bytes, &labels[..]) };
        std::fs::write(&images_path, image_bytes).unwrap();
        std::fs::write(&labels_path, label_bytes).unwrap();
        let expansion = if bytes.starts_with(&[0x1f, 0x8b]) { 1032 } else { 1 };
        let bound = 3 * expansion * (image_bytes.len() + label_bytes.len()) + MIB;
        worst = worst.max(within(bound, "idx", || {
            if let Ok(idx) = Idx::open(&images_path, &labels_path) {
                read_all(&idx);
            }
        }));
    });
    println!("idx: peak {worst} bytes");
}

#[test]
fn cifar_files_never_panic_and_stay_within_their_bound() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data_batch_1.bin");
    let record = |label: u8| std::iter::once(label).chain((0..3072).map(move |i| (i * 7 % 256) as u8));
    let seed: Vec<u8> = (0..3).flat_map(record).collect();
    for_each_mutation("cifar", &[seed], |bytes| {
        std::fs::write(&path, bytes).unwrap();
        within(3 * bytes.len() + MIB, "cifar", || {
            if let Ok(cifar) = Cifar10Bin::open(&[&path]) {
                read_all(&cifar);
            }
        });
    });
}

/// The `mini` model's description and freshly initialised weights on 28x28 grey input.
fn mini() -> (ModelInfo, alexnet::TensorMap) {
    let info = ModelInfo {
        preset: Preset::Mini,
        input: [1, 28, 28],
        class_names: (0..10).map(|c| format!("class {c}")).collect(),
        init: Preset::Mini.default_init(),
        resize: None,
        mean: vec![0.286],
        std: vec![0.353],
        lrn_groups: 1,
        layers: None,
    };
    let arch = Architecture::new(info.preset, info.input, 10).unwrap();
    let params = alexnet::init::init_params(&arch, info.init, 1);
    (info, params)
}

/// Loads everything a damaged checkpoint folder offers, as resume, eval and predict do.
fn load_everything(dir: &Path, state: &Path, weights: &Path) {
    let _ = TrainingState::load(state);
    let _ = CheckpointDir::load(state);
    if let Ok(bytes) = std::fs::read(weights)
        && let Ok((_, metadata)) = parse_tensors(weights, &bytes)
        && let Ok(info) = ModelInfo::from_metadata(&metadata, weights)
    {
        let _ = alexnet::data::eval_transform(&info, 1 << 20);
    }
    let _ = alexnet::checkpoint::committed_best(dir);
    let _ = CheckpointDir::new(dir, 3).and_then(|mut c| c.resume_latest(false));
}

#[test]
fn checkpoint_and_state_files_never_panic_and_stay_within_their_bound() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (info, params) = mini();
    let mut ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
    let scheduler = LrScheduler::new(Schedule::Constant, 0.1, 5).unwrap();
    let mut state = TrainingState::new(DataPosition { epoch: 1, batch: 3 }, 7, scheduler, 42);
    state.best_val_error = Some(0.25);
    let momentum: alexnet::TensorMap = params.iter().take(4).cloned().collect();
    let ckpt = Checkpoint { weights: params.clone(), momentum, state, metadata: info.to_metadata() };
    ckpts.save(&ckpt, true).unwrap();
    let names = ["epoch-0001_batch-00000003.safetensors", "epoch-0001_batch-00000003.momentum.safetensors"];
    let state_path = dir.path().join("epoch-0001_batch-00000003.state.json");
    let files: Vec<_> = names.iter().map(|n| dir.path().join(n)).chain([state_path.clone()]).collect();
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let total: usize = originals.iter().map(Vec::len).sum();
    let mut case = 0;
    for_each_mutation("checkpoint", &originals, |bytes| {
        // The mutation loop cycles through the seeds, so case % 3 is the file damaged.
        let target = case % 3;
        case += 1;
        std::fs::write(&files[target], bytes).unwrap();
        within(6 * (total + bytes.len()) + 16 * MIB, "checkpoint", || {
            load_everything(dir.path(), &state_path, &files[0]);
        });
        std::fs::write(&files[target], &originals[target]).unwrap();
    });
}

/// Model descriptions a hostile or buggy writer could sign with a valid checksum: damaged
/// JSON, and fields at extreme values. Loading the model and building its transforms
/// must refuse them with an error.
#[test]
fn signed_but_absurd_model_descriptions_are_refused_without_panicking() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let (info, params) = mini();
    let json = serde_json::to_string(&info).unwrap();
    let backend = Arc::new(CpuBackend::with_threads(1).unwrap());
    let weights_size = 4 * params.iter().map(|(_, t)| t.data.len()).sum::<usize>();
    let check = |model: &str| {
        save_tensors(&path, &params, HashMap::from([(MODEL_KEY.to_string(), model.to_string())])).unwrap();
        within(6 * weights_size + 16 * MIB, "model description", || {
            if let Ok(loaded) = load_model(&path, backend.clone()) {
                let _ = alexnet::data::eval_transform(&loaded.info, 1 << 20);
            }
        });
    };
    let edits: [(&str, serde_json::Value); 12] = [
        ("input", serde_json::json!([1, 0, 0])),
        ("input", serde_json::json!([0, 28, 28])),
        ("input", serde_json::json!([1, 65535, 65535])),
        ("input", serde_json::json!([1, 28])),
        ("class_names", serde_json::json!([])),
        ("class_names", serde_json::json!(["only one"])),
        ("resize", serde_json::json!(0)),
        ("resize", serde_json::json!(4_000_000_000u64)),
        ("mean", serde_json::json!([])),
        ("std", serde_json::json!([0.0])),
        ("std", serde_json::json!([-1.0])),
        ("preset", serde_json::json!("vgg")),
    ];
    for (key, value) in edits {
        let mut model: serde_json::Value = serde_json::from_str(&json).unwrap();
        model[key] = value;
        check(&model.to_string());
    }
    for_each_mutation("model description", &[json.clone().into_bytes()], |bytes| {
        check(&String::from_utf8_lossy(bytes));
    });
    // The unharmed description loads.
    save_tensors(&path, &params, info.to_metadata()).unwrap();
    assert!(load_tensors(&path).is_ok() && load_model(&path, backend).is_ok());
}
