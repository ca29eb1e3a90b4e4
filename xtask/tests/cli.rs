//! The runner's error paths: a one-line `error:` message saying what to do, a non-zero
//! exit code, and never a panic or a hang. The table in `hostile_arguments_and_files`
//! (issue 12, item 5) runs the real binary over bad arguments, damaged and forged files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use alexnet_integration_tests::fixtures;

/// Runs the runner in `cwd` (the package folder when `None`), killing it after a minute: a
/// hang is a failure too.
fn xtask_in(cwd: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("xtask starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn xtask(args: &[&str]) -> Output {
    xtask_in(None, args)
}

/// Asserts a clean failure of `args` run in `cwd`: a non-zero exit that is not a panic's
/// (101) or an abort's (a signal), and an `error:` message containing `needle`.
fn fails_in(cwd: Option<&Path>, args: &[&str], needle: &str) {
    let out = xtask_in(cwd, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(!stderr.contains("panicked") && out.status.code().is_some_and(|c| c != 101), "{args:?}: {stderr}");
    assert!(stderr.contains("error") && stderr.contains(needle), "{args:?}: expected `{needle}` in: {stderr}");
}

fn fails_with(args: &[&str], needle: &str) {
    fails_in(None, args, needle);
}

/// Owned arguments, so that rows of a table can borrow temporaries while they are built.
fn a(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
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

/// Files shared by the tests below: a class folder, a `mini` model trained on it for one
/// epoch, and damaged or forged variants of its checkpoint.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn arg(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }
}

/// A copy of the good checkpoint with `edit` applied to its tensors and model description,
/// saved with a valid checksum.
fn resaved(good: &Path, to: &Path, edit: impl FnOnce(&mut alexnet::TensorMap, &mut serde_json::Value)) {
    let (mut tensors, mut metadata) = alexnet::checkpoint::load_tensors(good).unwrap();
    let mut model: serde_json::Value = serde_json::from_str(&metadata[alexnet::model::MODEL_KEY]).unwrap();
    edit(&mut tensors, &mut model);
    metadata.insert(alexnet::model::MODEL_KEY.into(), model.to_string());
    alexnet::checkpoint::save_tensors(to, &tensors, metadata).unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().map(|e| e.unwrap()) {
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let f = Fixture { dir: tempfile::tempdir().unwrap() };
        let images = fixtures::write_class_folder(&f.path("folder"), 2);
        std::fs::create_dir_all(f.path("one/a")).unwrap();
        std::fs::copy(&images[0], f.path("one/a/x.jpg")).unwrap();
        std::fs::copy(&images[0], f.path("image.jpg")).unwrap();
        std::fs::write(f.path("zero.jpg"), b"").unwrap();
        let [(_, bomb), (_, bomb_png), _] = fixtures::bombs();
        std::fs::write(f.path("bomb.jpg"), &bomb).unwrap();
        for (class, name, bytes) in [("a", "bomb.jpg", &bomb), ("b", "bomb.png", &bomb_png)] {
            std::fs::create_dir_all(f.path(&format!("bombs/{class}"))).unwrap();
            std::fs::write(f.path(&format!("bombs/{class}/{name}")), bytes).unwrap();
        }
        std::fs::create_dir_all(f.path("idx")).unwrap();
        for name in ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"] {
            std::fs::write(f.path(&format!("idx/{name}")), b"not an IDX file").unwrap();
        }
        let out = xtask(&[
            "train",
            "--data",
            &f.arg("folder"),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--val-fraction",
            "0",
            "--threads",
            "1",
            "--runs-dir",
            &f.arg("runs"),
            "--name",
            "good",
            "--quiet",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let good = f.path("runs/good/checkpoints/epoch-0001.safetensors");
        // One mean for a three-channel model, with a valid checksum.
        resaved(&good, &f.path("bad-mean.safetensors"), |_, model| model["mean"] = serde_json::json!([0.5]));
        resaved(&good, &f.path("nan.safetensors"), |tensors, _| {
            tensors.iter_mut().for_each(|(_, t)| t.data.fill(f32::NAN));
        });
        // A class renamed in place (same length), the checksum left as it was.
        let bytes = std::fs::read(&good).unwrap();
        let at = bytes.windows(8).position(|w| w == b"blue_sky").unwrap();
        let mut edited = bytes.clone();
        edited[at..at + 8].copy_from_slice(b"blue_sea");
        std::fs::write(f.path("edited.safetensors"), edited).unwrap();
        std::fs::write(f.path("truncated.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(f.path("garbage.state.json"), b"{").unwrap();
        for run in ["broken", "empty"] {
            std::fs::create_dir_all(f.path(&format!("more-runs/{run}/checkpoints"))).unwrap();
            std::fs::copy(f.path("runs/good/config.toml"), f.path(&format!("more-runs/{run}/config.toml"))).unwrap();
        }
        std::fs::write(f.path("more-runs/broken/checkpoints/epoch-0001.state.json"), b"{").unwrap();
        std::fs::create_dir_all(f.path("no-best")).unwrap();
        f
    })
}

/// Issue 12, item 5: bad arguments and bad files end in a clean error, never a panic
/// (exit 101), an abort (a signal) or a hang.
#[test]
fn hostile_arguments_and_files() {
    let f = fixture();
    let good = f.arg("runs/good/checkpoints/epoch-0001.safetensors");
    let (image, folder) = (f.arg("image.jpg"), f.arg("folder"));
    let rows = [
        (a(&["train", "--data", &f.arg("one"), "--val-fraction", "0.5"]), "needs at least 2"),
        (a(&["predict", "--checkpoint", &f.arg("bad-mean.safetensors"), &image]), "1 means"),
        (a(&["predict", "--checkpoint", &f.arg("edited.safetensors"), &image]), "checksum mismatch"),
        (a(&["predict", "--checkpoint", &f.arg("nan.safetensors"), &image]), "not finite"),
        (a(&["eval", "--checkpoint", &f.arg("nan.safetensors"), "--data", &folder]), "not finite"),
        (a(&["predict", "--checkpoint", &good, &f.arg("bomb.jpg")]), "over the limit of 64 megapixels"),
        (a(&["predict", "--checkpoint", &good, "--max-image-pixels", "100", &image]), "over the limit"),
        (a(&["predict", "--checkpoint", &good, "--threads", "100000", &image]), "beyond the limit"),
        (a(&["train", "--threads", "100000"]), "beyond the limit"),
        (a(&["train", "--workers", "100000"]), "beyond the limit"),
        (a(&["train", "--max-train-images", "0"]), "max train images must be at least 1"),
        (a(&["train", "--max-image-pixels", "0"]), "max image pixels"),
        (a(&["train", "--name", "."]), "plain folder name"),
        (a(&["train", "--name", ".."]), "plain folder name"),
        (a(&["train", "--epochs", "0"]), "epochs"),
        (a(&["train", "--lr", "NaN"]), "learning rate"),
        (a(&["train", "--checkpoint-minutes=-1"]), "checkpoint interval"),
        (a(&["train", "--resume", &f.arg("more-runs/broken")]), "epoch-0001.state.json"),
        (a(&["train", "--resume", &f.arg("more-runs/empty")]), "no checkpoint"),
        (a(&["train", "--data", &f.arg("idx")]), "malformed"),
        (a(&["train", "--data", &f.arg("bombs")]), "no readable images"),
        (a(&["eval", "--checkpoint", &f.arg("truncated.safetensors"), "--data", &folder]), "truncated"),
        (a(&["eval", "--checkpoint", &f.arg("no-best")]), "holds no best.safetensors"),
        (a(&["eval", "--checkpoint", &good]), "no test split"),
        (a(&["eval", "--checkpoint", &good, "--data", &f.arg("one")]), "classes"),
        (a(&["predict", "--checkpoint", &f.arg("garbage.state.json"), &image]), "truncated or foreign"),
        (a(&["summary", "--preset", "mini", "--input", "0x28x28"]), "0"),
        (a(&["summary", "--preset", "mini", "--classes", "0"]), "classes"),
        (a(&["summary", "--preset", "keras-bn", "--input", "3x1x1"]), "layer"),
    ];
    // In the fixture's folder, so that nothing lands in the repository if a row misbehaves.
    for (args, needle) in &rows {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        fails_in(Some(f.dir.path()), &args, needle);
    }

    // Issue 12, item 11: every image gets its answer; a bad one fails the command at the end.
    let out = xtask(&["predict", "--checkpoint", &good, &image, &f.arg("zero.jpg")]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains(&image) && stdout.contains('%'), "{stdout}");
    assert!(stderr.contains("zero.jpg") && stderr.contains("0 bytes") && stderr.contains("1 of 2"), "{stderr}");
}

/// Issue 12, item 11: `--resume` without a path takes the newest run that has a checkpoint,
/// not a newer one whose checkpoints folder is empty.
#[test]
fn resume_latest_passes_over_runs_without_checkpoints() {
    let f = fixture();
    let runs = tempfile::tempdir().unwrap();
    copy_dir(&f.path("runs/good"), &runs.path().join("a"));
    std::thread::sleep(Duration::from_millis(20));
    std::fs::create_dir_all(runs.path().join("b/checkpoints")).unwrap();
    std::fs::copy(f.path("runs/good/config.toml"), runs.path().join("b/config.toml")).unwrap();
    let out = xtask(&["train", "--resume", "--runs-dir", runs.path().to_str().unwrap(), "--epochs", "2", "--quiet"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(runs.path().join("a/checkpoints/epoch-0002.state.json").exists(), "{stdout}");
}

/// Issue 12, item 3: a run started with a relative `--runs-dir` and resumed from another
/// working folder keeps every file in its own folder.
#[test]
fn a_relative_runs_dir_resumed_from_elsewhere_stays_together() {
    let f = fixture();
    let (start, elsewhere) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let folder = f.arg("folder");
    let first = [
        "train",
        "--data",
        &folder,
        "--epochs",
        "2",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--val-fraction",
        "0",
        "--threads",
        "1",
        "--runs-dir",
        "rel",
        "--name",
        "r",
        "--quiet",
    ];
    let out = xtask_in(Some(start.path()), &first);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = start.path().join("rel/r");
    let out = xtask_in(Some(elsewhere.path()), &["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!elsewhere.path().join("rel").exists(), "files went to the other working folder");
    for file in ["result.json", "curves.png", "metrics.jsonl", "checkpoints/epoch-0002.state.json"] {
        assert!(run.join(file).exists(), "{file} missing");
    }
}
