//! End-to-end training on an ImageNet-style class folder (one sub-folder of JPEGs per
//! class): the `mini` preset takes folder data at 3x28x28 (shorter side resized to 32,
//! random 28-pixel crops, flips, PCA lighting), so a tiny folder trains in seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alexnet::trainer::{EvalRequest, evaluate_checkpoint, predict_files};
use alexnet::{Error, MetricsLog, Observer, Preset, RunConfig, Schedule, Silent, Trainer, load_model};
use alexnet_autograd::CpuBackend;
use alexnet_integration_tests::fixtures::{CLASSES, write_class_folder};

const PER_CLASS: usize = 6;

fn backend() -> Arc<CpuBackend> {
    Arc::new(CpuBackend::with_threads(2).unwrap())
}

/// `mini` on the class folder `data`, a quarter held out for validation, run `folder`.
fn folder_config(data: &Path, runs: &Path, epochs: usize) -> RunConfig {
    let mut config = RunConfig::for_preset(Preset::Mini);
    config.name = "folder".into();
    config.output.runs_dir = runs.to_path_buf();
    config.data.train = Some(data.to_path_buf());
    config.data.val_fraction = 0.25;
    config.optim.epochs = epochs;
    config.optim.batch_size = 4;
    config.optim.eval_batch_size = 8;
    config.optim.lr = 0.01;
    config.optim.schedule = Schedule::Constant;
    config
}

/// Collects the notes a run gives its observer.
#[derive(Default)]
struct Notes(Vec<String>);
impl Observer for Notes {
    fn note(&mut self, message: &str) {
        self.0.push(message.to_string());
    }
}

/// Every file under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(snapshot(&entry.path()));
        } else {
            out.push((entry.path(), meta.len(), meta.modified().unwrap()));
        }
    }
    out.sort();
    out
}

/// Sets `dir` and everything in it read-only (or writable again).
fn set_read_only(dir: &Path, read_only: bool) {
    for entry in std::fs::read_dir(dir).unwrap().map(|e| e.unwrap()) {
        if entry.metadata().unwrap().is_dir() {
            set_read_only(&entry.path(), read_only);
        }
    }
    let mut perms = std::fs::metadata(dir).unwrap().permissions();
    perms.set_readonly(read_only);
    std::fs::set_permissions(dir, perms).unwrap();
}

/// Issue 12, items 8, 9 and 11: training leaves a read-only data folder untouched (the
/// colour-statistics cache goes elsewhere); `eval --data` evaluates every image of a
/// folder; resuming after an image was added continues with the run's recorded statistics
/// and says so; resuming after a class was added is refused in words naming the checkpoint.
#[test]
fn data_folder_is_read_only_evaluated_whole_and_may_change_under_a_resumed_run() {
    let data = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    write_class_folder(data.path(), PER_CLASS);
    let before = snapshot(data.path());
    set_read_only(data.path(), true);
    let trained =
        Trainer::new(folder_config(data.path(), runs.path(), 1), backend()).and_then(|mut t| t.fit(&mut Silent));
    set_read_only(data.path(), false);
    trained.unwrap();
    assert_eq!(snapshot(data.path()), before, "training wrote into the data folder");

    let run = runs.path().join("folder");
    let report = evaluate_checkpoint(
        &run,
        &EvalRequest { data: Some(data.path().to_path_buf()), ..EvalRequest::default() },
        backend(),
        &mut Silent,
    )
    .unwrap();
    assert_eq!(report.metrics.images, (CLASSES.len() * PER_CLASS) as u64, "every image, not a hold-out");
    assert!(report.split.contains(&data.path().display().to_string()), "{}", report.split);

    // One more image: the colour statistics move a little; the run continues with its own.
    let extra = image::RgbImage::from_fn(50, 40, |x, y| image::Rgb([(x * 5) as u8, 200, (y * 6) as u8]));
    extra.save(data.path().join(CLASSES[1]).join("extra.jpg")).unwrap();
    let mut resumed = Trainer::resume(&run, backend(), Some(2)).unwrap();
    let recorded = load_model(&run.join("checkpoints/epoch-0001.safetensors"), backend()).unwrap().info;
    assert_eq!((&resumed.info().mean, &resumed.info().std), (&recorded.mean, &recorded.std));
    let mut notes = Notes::default();
    resumed.fit(&mut notes).unwrap();
    let note = notes.0.iter().find(|n| n.contains("changed since the run started"));
    assert!(note.is_some_and(|n| n.contains("continuing with the recorded statistics")), "{:#?}", notes.0);

    // A new class cannot continue: the error says what changed and names the checkpoint.
    std::fs::create_dir(data.path().join("zebra")).unwrap();
    std::fs::copy(data.path().join(CLASSES[1]).join("extra.jpg"), data.path().join("zebra/z.jpg")).unwrap();
    let err = Trainer::resume(&run, backend(), Some(3)).err().expect("a new class is refused");
    let msg = err.to_string();
    assert!(matches!(err, Error::Checkpoint { .. }), "{msg}");
    assert!(msg.contains("epoch-0002.state.json") && msg.contains("new: [\"zebra\"]"), "{msg}");
    assert!(!msg.contains("ModelInfo"), "{msg}");
}

#[test]
fn trains_on_a_class_folder_and_predicts_its_class_names() {
    let data = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let files = write_class_folder(data.path(), PER_CLASS);

    let config = folder_config(data.path(), runs.path(), 2);
    let mut trainer = Trainer::new(config, backend()).unwrap();
    assert_eq!(trainer.info().input, [3, 28, 28], "mini takes folder images at 3x28x28");
    assert_eq!(trainer.info().class_names, CLASSES);
    let (train_n, val_n, test_n) = trainer.split_sizes();
    let total = CLASSES.len() * PER_CLASS;
    assert_eq!((train_n + val_n.unwrap(), test_n), (total, None));
    assert_eq!(val_n, Some(5), "a quarter of 18 images, rounded, is held out");

    let result = trainer.fit(&mut Silent).unwrap();
    assert_eq!((result.epochs, result.test), (2, None));
    let val = result.val.expect("a held-out validation split is evaluated");
    assert_eq!(val.images, 5);

    let run = runs.path().join("folder");
    for f in ["config.toml", "metrics.jsonl", "curves.png", "result.json", "checkpoints/best.safetensors"] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let records = MetricsLog::new(run.join("metrics.jsonl")).read().unwrap();
    assert_eq!(records.len(), 2);
    for r in &records {
        let v = r.val.expect("validation metrics every epoch");
        let numbers = [r.train.loss, r.train.top1_error, v.loss, v.top1_error, v.top5_error, r.images_per_sec];
        assert!(numbers.iter().all(|x| x.is_finite()), "non-finite metrics in {r:?}");
        assert_eq!(r.train.images, train_n as u64);
    }

    // The last epoch's checkpoint reloads with the folder names as its classes, and
    // prediction ranks those names (3 classes, so the top-5 list has all 3).
    let loaded = load_model(&run.join("checkpoints/epoch-0002.safetensors"), backend()).unwrap();
    assert_eq!(loaded.info.class_names, CLASSES);
    let picks = [files[0].clone(), files[PER_CLASS + 1].clone(), files[2 * PER_CLASS + 2].clone()];
    let predictions: Vec<_> = predict_files(&run, &picks, alexnet::config::DEFAULT_MAX_IMAGE_PIXELS, backend())
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(predictions.len(), picks.len());
    for ranked in &predictions {
        let mut names: Vec<&str> = ranked.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, CLASSES, "top-k should rank exactly the folder classes: {ranked:?}");
        let total: f32 = ranked.iter().map(|(_, p)| p).sum();
        assert!((total - 1.0).abs() < 1e-4, "probabilities sum to {total}: {ranked:?}");
        assert!(ranked.windows(2).all(|w| w[0].1 >= w[1].1), "not sorted: {ranked:?}");
    }
}
