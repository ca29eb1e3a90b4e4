//! End-to-end training on an ImageNet-style class folder (one sub-folder of JPEGs per
//! class): the `mini` preset takes folder data at 3x28x28 (shorter side resized to 32,
//! random 28-pixel crops, flips, PCA lighting), so a tiny folder trains in seconds.

use std::sync::Arc;

use alexnet::trainer::predict_files;
use alexnet::{MetricsLog, Preset, RunConfig, Schedule, Silent, Trainer, load_model};
use alexnet_autograd::CpuBackend;
use alexnet_integration_tests::fixtures::{CLASSES, write_class_folder};

const PER_CLASS: usize = 6;

fn backend() -> Arc<CpuBackend> {
    Arc::new(CpuBackend::with_threads(2).unwrap())
}

#[test]
fn trains_on_a_class_folder_and_predicts_its_class_names() {
    let data = tempfile::tempdir().unwrap();
    let runs = tempfile::tempdir().unwrap();
    let files = write_class_folder(data.path(), PER_CLASS);

    let mut config = RunConfig::for_preset(Preset::Mini);
    config.name = "folder".into();
    config.output.runs_dir = runs.path().to_path_buf();
    config.data.train = Some(data.path().to_path_buf());
    config.data.val_fraction = 0.25;
    config.optim.epochs = 2;
    config.optim.batch_size = 4;
    config.optim.eval_batch_size = 8;
    config.optim.lr = 0.01;
    config.optim.schedule = Schedule::Constant;

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
