//! The runner's error paths: a one-line `error:` message saying what to do, a non-zero
//! exit code, and never a panic.

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("xtask runs")
}

/// Asserts a clean failure whose one-line message contains `needle`.
fn fails_with(args: &[&str], needle: &str) {
    let out = xtask(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: expected `{needle}` in: {stderr}");
}

#[test]
fn missing_data_folder() {
    fails_with(&["train", "--data", "/no/such/folder"], "--data");
}

#[test]
fn preset_that_does_not_fit_the_data() {
    fails_with(&["train", "--preset", "paper", "--name", "never"], "use --preset mini");
}

#[test]
fn bad_values() {
    fails_with(&["train", "--lr=-1"], "learning rate");
    fails_with(&["train", "--val-fraction", "1.5"], "val fraction");
    fails_with(&["summary", "--preset", "vgg"], "vgg");
    fails_with(&["summary", "--preset", "paper", "--input", "3x224x224"], "227");
    fails_with(&["train", "--backend", "cuda"], "cuda");
}

#[test]
fn missing_or_foreign_checkpoints() {
    fails_with(&["eval", "--checkpoint", "/no/such/file.safetensors"], "does not exist");
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.safetensors");
    std::fs::write(&foreign, b"not a checkpoint").unwrap();
    fails_with(&["predict", "--checkpoint", foreign.to_str().unwrap(), "x.png"], "truncated");
    let resume_nothing = dir.path().join("empty-runs");
    fails_with(&["train", "--resume", "--runs-dir", resume_nothing.to_str().unwrap()], "nothing to resume");
    // A resumed run keeps its own configuration: options that would silently be ignored are refused.
    fails_with(&["train", "--resume", "runs/mini-1", "--lr", "0.1"], "cannot be used with");
}

#[test]
fn summary_prints_the_paper_total() {
    let out = xtask(&["summary", "--preset", "paper"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Total params: 60,965,224"));
}
