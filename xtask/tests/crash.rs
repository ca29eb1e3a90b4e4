//! Crash safety (issue 12, item 12): a training run is killed with SIGKILL at several
//! moments (inside checkpoint writes, with a temporary file written but not renamed;
//! between a checkpoint's files; after the state file committed a new best but before
//! `best.safetensors` was written; after an epoch's metrics line but before its checkpoint;
//! at an arbitrary time) and resumed after each. It must end with the same weights,
//! momentum, best weights, metrics and test result as a run never interrupted, and with no
//! leftovers.
//!
//! The run is tiny (192 Fashion-MNIST training images, batches of 16, 2 epochs, a
//! checkpoint after every step), so the eleven processes take seconds. The moments are pause points
//! (`ALEXNET_PAUSE_AT`, see `alexnet`'s failpoint module): the child stops there and is
//! killed from here.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUN: &[&str] = &[
    "--quiet",
    "--val-fraction",
    "0.25",
    "--batch-size",
    "16",
    "--lr",
    "0.02",
    "--epochs",
    "2",
    "--threads",
    "1",
    "--checkpoint-minutes",
    "0.000001",
    "--seed",
    "7",
];

fn xtask(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn fresh(data: &Path, runs: &Path, name: &str) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--name", name].map(String::from).to_vec();
    for (option, path) in [("--data", data), ("--runs-dir", runs)] {
        args.extend([option.to_string(), path.display().to_string()]);
    }
    args.extend(RUN.iter().map(|s| s.to_string()));
    args
}

fn resume(run: &Path) -> Vec<String> {
    vec!["train".into(), "--quiet".into(), "--resume".into(), run.display().to_string()]
}

/// Runs `args` to the end; it must succeed.
fn complete(args: &[String]) -> Duration {
    let started = Instant::now();
    let out = xtask(args).output().expect("xtask runs");
    assert!(out.status.success(), "{args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

/// Runs `args` until it reaches the pause point `label`, then kills it with SIGKILL.
fn kill_at(args: &[String], label: &str, scratch: &Path) {
    let marker = scratch.join("paused");
    let _ = std::fs::remove_file(&marker);
    let mut child = xtask(args)
        .env("ALEXNET_PAUSE_AT", label)
        .env("ALEXNET_PAUSE_MARKER", &marker)
        .stderr(Stdio::null())
        .spawn()
        .expect("xtask starts");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if marker.exists() {
            child.kill().expect("SIGKILL");
            child.wait().unwrap();
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{args:?} ended ({status}) without reaching {label}");
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} did not reach {label} in 300 s");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `args` and kills it with SIGKILL after `delay`, wherever it is (it may have ended).
fn kill_after(args: &[String], delay: Duration) {
    let mut child = xtask(args).stderr(Stdio::null()).spawn().expect("xtask starts");
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap();
}

/// A JSON value without its wall-clock fields, which differ between any two runs.
fn without_times(mut value: serde_json::Value) -> serde_json::Value {
    match &mut value {
        serde_json::Value::Object(map) => {
            for key in ["seconds", "images_per_sec", "run_dir"] {
                map.remove(key);
            }
            for v in map.values_mut() {
                *v = without_times(v.take());
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| *v = without_times(v.take())),
        _ => {}
    }
    value
}

fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(|l| without_times(serde_json::from_str(l).unwrap())).collect()
}

fn json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    without_times(serde_json::from_slice(&bytes).unwrap())
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The first epoch after the first whose validation error beat every earlier one (so its
/// checkpoint records a new best): killing right after its state file commits leaves a
/// stale `best.safetensors`.
fn improving_epoch(metrics: &Path) -> usize {
    let errors: Vec<f64> = json_lines(metrics).iter().map(|r| r["val"]["top1_error"].as_f64().unwrap()).collect();
    (1..errors.len())
        .find(|&i| errors[..i].iter().all(|&e| errors[i] < e))
        .map(|i| i + 1)
        .expect("the validation error improves after the first epoch")
}

#[test]
fn runs_killed_anywhere_resume_to_the_uninterrupted_result() {
    let scratch = tempfile::tempdir().unwrap();
    let (data, runs) = (scratch.path().join("data"), scratch.path().join("runs"));
    // 256 training images (64 held out for validation), 64 test images.
    alexnet_integration_tests::fixtures::write_fashion_slice(&data, 256, 64);
    let took = complete(&fresh(&data, &runs, "straight"));
    let straight = runs.join("straight");
    let e = improving_epoch(&straight.join("metrics.jsonl"));

    let crashed: PathBuf = runs.join("crashed");
    let first = fresh(&data, &runs, "crashed");
    let again = resume(&crashed);
    // In training order; each kill is followed by a resume that is killed at the next.
    let mut moments = vec![
        "write-tmp:epoch-0000_batch-00000002.safetensors".to_string(),
        "checkpoint-weights:epoch-0000_batch-00000004".into(),
        "write-tmp:epoch-0000_batch-00000005.state.json".into(),
        // The first epoch is always a best: killed before best.safetensors exists.
        "checkpoint-committed:epoch-0001".into(),
        "write-tmp:epoch-0001_batch-00000002.momentum.safetensors".into(),
    ];
    // A later best, killed before best.safetensors was replaced: it is stale.
    let later = [format!("metrics-appended:{e}"), format!("checkpoint-committed:epoch-{e:04}")];
    moments.extend(later);
    for (i, label) in moments.iter().enumerate() {
        kill_at(if i == 0 { &first } else { &again }, label, scratch.path());
    }
    // And once wherever the run happens to be a little after its start.
    kill_after(&again, took.mul_f64(0.4));
    complete(&again);

    let (a, b) = (straight.join("checkpoints"), crashed.join("checkpoints"));
    assert_eq!(files(&a), files(&b), "checkpoint files (a crash leftover, or a checkpoint missing)");
    for name in files(&a) {
        if name.ends_with(".state.json") {
            assert_eq!(json(&a.join(&name)), json(&b.join(&name)), "{name}");
        } else {
            // Weights, momentum and best.safetensors: bit for bit.
            let same = std::fs::read(a.join(&name)).unwrap() == std::fs::read(b.join(&name)).unwrap();
            assert!(same, "{name} differs from the uninterrupted run's");
        }
    }
    assert_eq!(json_lines(&straight.join("metrics.jsonl")), json_lines(&crashed.join("metrics.jsonl")));
    assert_eq!(json(&straight.join("result.json")), json(&crashed.join("result.json")));
    let leftovers: Vec<String> = files(&crashed).into_iter().filter(|f| f.contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
