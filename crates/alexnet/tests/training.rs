//! End-to-end runs on a small slice of the embedded Fashion-MNIST: the loss falls, a
//! resumed run matches an uninterrupted one bit for bit, and checkpoints reload.

mod common;

use std::path::Path;
use std::time::Duration;

use alexnet::metrics::StepLog;
use alexnet::trainer::{EvalRequest, STEPS_FILE, STOP_FILE, evaluate_checkpoint};
use alexnet::{BatchReport, Error, MetricsLog, Observer, Silent, Trainer, load_model};
use common::{backend, small_config};

#[test]
fn loss_falls_and_run_files_are_written() {
    let runs = tempfile::tempdir().unwrap();
    let config = small_config(runs.path(), "falls", 4);
    let mut config = config;
    config.optim.lr = 0.05;
    let mut trainer = Trainer::new(config, backend()).unwrap();
    let result = trainer.fit(&mut Silent).unwrap();
    let records = MetricsLog::new(runs.path().join("falls/metrics.jsonl")).read().unwrap();
    assert_eq!(records.len(), 4);
    let (first, last) = (records[0].train.loss, records[3].train.loss);
    assert!(last < 0.85 * first, "training loss did not fall: {first} -> {last}");
    assert!(result.test.is_some() && result.val.is_some());
    for f in [
        "config.toml",
        "curves.png",
        "result.json",
        "checkpoints/best.safetensors",
        "checkpoints/epoch-0004.state.json",
    ] {
        assert!(runs.path().join("falls").join(f).exists(), "{f} missing");
    }
    // The best weights reload into a model that evaluates.
    let loaded = load_model(&runs.path().join("falls"), backend()).unwrap();
    assert_eq!(loaded.info.class_names.len(), 10);
    // A fresh run into a folder with checkpoints is refused.
    let err = Trainer::new(small_config(runs.path(), "falls", 1), backend()).err().unwrap().to_string();
    assert!(err.contains("--resume"), "{err}");
}

/// The two runs' weights are bit-identical and their last epoch reports the same metrics.
#[track_caller]
fn assert_same_run(runs: &Path, a: &Trainer, a_name: &str, b: &Trainer, b_name: &str) {
    let (wa, wb) = (a.params_to_host().unwrap(), b.params_to_host().unwrap());
    assert_eq!(wa.len(), wb.len());
    for ((na, ta), (nb, tb)) in wa.iter().zip(&wb) {
        assert_eq!(na, nb);
        let same = ta.data.iter().zip(&tb.data).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{na} differs between {a_name} and {b_name}");
    }
    let log = |name: &str| MetricsLog::new(runs.join(name).join("metrics.jsonl")).read().unwrap();
    let (la, lb) = (log(a_name), log(b_name));
    assert_eq!(la.len(), lb.len());
    let (last_a, last_b) = (la.last().unwrap(), lb.last().unwrap());
    assert_eq!(last_a.train, last_b.train, "the last epoch's training metrics");
    assert_eq!(last_a.val, last_b.val);
}

/// Runs resumed at an epoch's end, and inside an epoch (stopped there by the step limit, after
/// checkpointing at every step: it resumes at the next batch, with the epoch's metrics so
/// far), both end exactly where an uninterrupted run ends.
#[test]
fn resumed_runs_are_bit_exact() {
    let runs = tempfile::tempdir().unwrap();
    let mut straight = Trainer::new(small_config(runs.path(), "straight", 2), backend()).unwrap();
    straight.fit(&mut Silent).unwrap();

    let mut first = Trainer::new(small_config(runs.path(), "split", 1), backend()).unwrap();
    first.fit(&mut Silent).unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&runs.path().join("split"), backend(), Some(2)).unwrap();
    assert_eq!((resumed.epochs_done(), resumed.step()), (1, 12));
    resumed.fit(&mut Silent).unwrap();
    assert_same_run(runs.path(), &straight, "straight", &resumed, "split");

    let mut config = small_config(runs.path(), "crashed", 2);
    config.optim.max_steps = Some(17);
    config.output.checkpoint_minutes = 1e-9;
    let mut first = Trainer::new(config, backend()).unwrap();
    let stopped = first.fit(&mut Silent).unwrap();
    assert!(stopped.stopped_early.is_some_and(|why| why.contains("step limit")));
    drop(first);
    // 12 batches per epoch: step 17 is batch 5 of the second epoch.
    let ckpts = runs.path().join("crashed/checkpoints");
    for name in ["epoch-0001_batch-00000004", "epoch-0001_batch-00000005"] {
        assert!(ckpts.join(format!("{name}.state.json")).exists(), "{name} missing");
    }
    let mut resumed = Trainer::resume(&runs.path().join("crashed"), backend(), None).unwrap();
    assert_eq!((resumed.epochs_done(), resumed.step()), (1, 17));
    resumed.fit(&mut Silent).unwrap();
    assert_same_run(runs.path(), &straight, "straight", &resumed, "crashed");
}

#[test]
fn non_finite_loss_stops_naming_the_step() {
    let runs = tempfile::tempdir().unwrap();
    let mut config = small_config(runs.path(), "diverges", 2);
    config.optim.lr = 1e12;
    let mut trainer = Trainer::new(config, backend()).unwrap();
    let err = trainer.fit(&mut Silent).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::NonFiniteLoss { step, .. } if step > 0), "{msg}");
    assert!(msg.contains("at step"), "{msg}");
}

/// Issue 12, item 7: a checkpoint is called good only if it is: after the learning rate is
/// raised to 1e30, the checkpoint written one step later (finite but huge weights) gives
/// NaN outputs, so the error names the one before it, numbers the epoch as
/// `metrics.jsonl` does, and evaluating the bad one is an error, not a score.
#[test]
fn non_finite_loss_keeps_the_last_good_checkpoint() {
    let runs = tempfile::tempdir().unwrap();
    let mut config = small_config(runs.path(), "blows-up", 1);
    config.output.checkpoint_minutes = 1e-9;
    let mut first = Trainer::new(config, backend()).unwrap();
    first.fit(&mut Silent).unwrap();
    drop(first);
    let ckpts = runs.path().join("blows-up/checkpoints").canonicalize().unwrap();
    let weights = ckpts.join("epoch-0001.safetensors");
    let good_bytes = std::fs::read(&weights).unwrap();

    // Resume epoch 2 with an absurd learning rate: the schedule continues from the state
    // file, so that is where the rate is raised.
    let state_path = ckpts.join("epoch-0001.state.json");
    let mut state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["scheduler"]["base_lr"] = 1e30.into();
    state["scheduler"]["current"] = 1e30.into();
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();

    let mut resumed = Trainer::resume(&runs.path().join("blows-up"), backend(), Some(2)).unwrap();
    let steps_before = resumed.step();
    let err = resumed.fit(&mut Silent).unwrap_err();
    let msg = err.to_string();
    let last_good = match &err {
        Error::NonFiniteLoss { step, epoch, loss, last_good } => {
            assert!(*step > steps_before, "{msg}");
            assert_eq!(*epoch, 1, "{msg}");
            assert!(!loss.is_finite(), "{msg}");
            assert!(msg.contains(&format!("at step {step} (epoch 2)")), "{msg}");
            last_good
        }
        Error::NonFiniteWeights { epoch: 2, last_good, .. } => last_good,
        other => panic!("expected a divergence error, got {other}"),
    };
    assert_eq!(last_good.as_deref(), Some(weights.as_path()), "{msg}");
    assert!(msg.contains(&weights.display().to_string()), "{msg}");
    // The epoch-1 checkpoint is untouched and still loads; nothing was written for epoch 2.
    assert_eq!(std::fs::read(&weights).unwrap(), good_bytes);
    assert!(!ckpts.join("epoch-0002.state.json").exists());
    let loaded = load_model(&weights, backend()).unwrap();
    let finite = loaded.model.params_to_host().unwrap().iter().all(|(_, t)| t.data.iter().all(|v| v.is_finite()));
    assert!(finite, "the kept checkpoint holds non-finite weights");
    assert_eq!(MetricsLog::new(runs.path().join("blows-up/metrics.jsonl")).read().unwrap().len(), 1);
    // The checkpoint one step after the raise (when its weights were still finite) gives
    // NaN: evaluating it is an error.
    let bad = ckpts.join("epoch-0001_batch-00000001.safetensors");
    if bad.exists() {
        let err = evaluate_checkpoint(&bad, &EvalRequest::default(), backend(), &mut Silent).unwrap_err();
        assert!(matches!(err, Error::NonFiniteOutput { .. }), "{err}");
    }
}

/// Issue 12, item 3: a run lives where it is resumed from: after its folder is moved, the
/// resumed run writes every file into the new folder and never recreates the old one.
#[test]
fn a_moved_run_resumes_in_its_new_folder() {
    let runs = tempfile::tempdir().unwrap();
    let mut config = small_config(runs.path(), "a", 2);
    config.optim.max_steps = Some(5);
    Trainer::new(config, backend()).unwrap().fit(&mut Silent).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("b");
    std::fs::rename(runs.path().join("a"), &moved).unwrap();
    let result = Trainer::resume(&moved, backend(), None).unwrap().fit(&mut Silent).unwrap();
    assert!(!runs.path().join("a").exists(), "the old run folder was recreated");
    assert_eq!(result.run_dir, moved.canonicalize().unwrap());
    for f in ["metrics.jsonl", "curves.png", "result.json", "checkpoints/epoch-0002.state.json"] {
        assert!(moved.join(f).exists(), "{f} missing in the moved run");
    }
    assert_eq!(MetricsLog::new(moved.join("metrics.jsonl")).read().unwrap().len(), 2);
}

/// Creates the run's STOP file when the given batch of the given epoch has finished.
struct StopAt {
    run_dir: std::path::PathBuf,
    epoch: usize,
    batch: usize,
}

impl Observer for StopAt {
    fn batch_end(&mut self, r: &BatchReport) {
        if (r.epoch, r.batch) == (self.epoch, self.batch) {
            std::fs::write(self.run_dir.join(STOP_FILE), b"").unwrap();
        }
    }
}

/// Issue 13, item 5: a STOP file in the run folder, or the time budget, stops a run before
/// its next step with a checkpoint there; resumed, it ends exactly where an uninterrupted
/// run ends.
#[test]
fn stopped_from_outside_runs_resume_bit_exactly() {
    let runs = tempfile::tempdir().unwrap();
    let mut straight = Trainer::new(small_config(runs.path(), "straight", 2), backend()).unwrap();
    straight.fit(&mut Silent).unwrap();

    let mut stopped = Trainer::new(small_config(runs.path(), "stop-file", 2), backend()).unwrap();
    let run_dir = runs.path().join("stop-file");
    let result = stopped.fit(&mut StopAt { run_dir: run_dir.clone(), epoch: 1, batch: 4 }).unwrap();
    let why = result.stopped_early.unwrap();
    assert!(why.contains("stop requested") && why.contains("removed"), "{why}");
    assert!(!run_dir.join(STOP_FILE).exists(), "the STOP file is removed when honoured");
    assert!(result.test.is_some(), "a stopped run still reports its test split");
    drop(stopped);
    // 12 batches per epoch: batch 4 of the second epoch is step 17.
    let mut resumed = Trainer::resume(&run_dir, backend(), None).unwrap();
    assert_eq!((resumed.epochs_done(), resumed.step()), (1, 17));
    assert!(resumed.fit(&mut Silent).unwrap().stopped_early.is_none());
    assert_same_run(runs.path(), &straight, "straight", &resumed, "stop-file");

    let mut budgeted = Trainer::new(small_config(runs.path(), "budget", 2), backend()).unwrap();
    budgeted.set_time_budget(Some(Duration::ZERO));
    let why = budgeted.fit(&mut Silent).unwrap().stopped_early.unwrap();
    assert!(why.contains("time budget"), "{why}");
    assert_eq!(budgeted.step(), 0);
    drop(budgeted);
    let mut resumed = Trainer::resume(&runs.path().join("budget"), backend(), None).unwrap();
    resumed.fit(&mut Silent).unwrap();
    assert_same_run(runs.path(), &straight, "straight", &resumed, "budget");
}

/// Issue 13, item 4: without a validation split the test split is evaluated after every
/// epoch (the held-out curve), and `steps.jsonl` holds the scalars every N steps, continued
/// by a resumed run.
#[test]
fn held_out_curve_and_step_log() {
    let runs = tempfile::tempdir().unwrap();
    let mut config = small_config(runs.path(), "curves", 2);
    config.data.val_fraction = 0.0;
    config.output.log_every_steps = 5;
    config.optim.max_steps = Some(7);
    Trainer::new(config, backend()).unwrap().fit(&mut Silent).unwrap();
    let run_dir = runs.path().join("curves");
    let steps = |n: usize| {
        let records = StepLog::new(run_dir.join(STEPS_FILE)).read().unwrap();
        assert_eq!(records.len(), n);
        records
    };
    assert_eq!(steps(1)[0].step, 5);
    let result = Trainer::resume(&run_dir, backend(), None).unwrap().fit(&mut Silent).unwrap();

    let records = steps(4);
    assert_eq!(records.iter().map(|r| r.step).collect::<Vec<_>>(), [5, 10, 15, 20]);
    for r in &records {
        // 12 batches per epoch.
        assert!((r.epoch - r.step as f64 / 12.0).abs() < 1e-9, "{r:?}");
        assert_eq!(r.lr, 0.02);
        assert!(r.loss.is_finite() && r.loss > 0.0 && r.images_per_sec > 0.0, "{r:?}");
    }
    let epochs = MetricsLog::new(run_dir.join("metrics.jsonl")).read().unwrap();
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        assert!(e.val.is_none());
        assert_eq!(e.test.map(|t| t.images), Some(128), "epoch {}: the test split every epoch", e.epoch);
    }
    assert_eq!(result.test, epochs[1].test, "the final test is the last epoch's");
}
