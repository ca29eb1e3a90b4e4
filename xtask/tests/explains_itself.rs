//! The runner explains itself (issue 13, item 3): every option's default in `--help`, the
//! recipe's settings as flags, the example configurations in `configs/` load, and a
//! configuration's `name` is the run's folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use alexnet::{InitScheme, Preset, RunConfig, Schedule};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask")).args(args).output().expect("xtask runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(option, its help text)` for every option of a `--help` page that takes a value and is
/// not required (required ones are in the usage line).
fn options_with_values(help: &str) -> Vec<(String, String)> {
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap_or_default();
    let mut options: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if (trimmed.starts_with("--") || trimmed.starts_with('-')) && indent <= 6 {
            options.push((trimmed.to_string(), String::new()));
        } else if let Some((_, text)) = options.last_mut() {
            text.push_str(trimmed);
            text.push(' ');
        }
    }
    options.retain(|(head, _)| {
        let long = head.split([' ', ',']).find(|w| w.starts_with("--")).unwrap_or(head);
        head.contains('<') && !usage.contains(&format!("{long} "))
    });
    options
}

#[test]
fn help_shows_every_default() {
    let pages: [&[&str]; 6] = [&["train"], &["eval"], &["predict"], &["summary"], &["bench", "train"], &["ablate"]];
    for page in pages {
        let mut args = page.to_vec();
        args.push("--help");
        let out = xtask(&args);
        assert!(out.status.success(), "{args:?}");
        let help = stdout(&out);
        let options = options_with_values(&help);
        assert!(!options.is_empty(), "{args:?}: no options found in\n{help}");
        for (head, text) in options {
            // Short help pages put the text on the option's line, long ones below it.
            assert!(
                format!("{head} {text}").contains("[default"),
                "{args:?}: `{head}` does not say its default: {text}"
            );
        }
    }
    // Defaults that differ by preset name each preset's value.
    let help = stdout(&xtask(&["train", "--help"]));
    assert!(help.contains("[default: 0.01 (paper, caffenet, keras-bn, torchvision); 0.05 (mini)]"), "{help}");
    assert!(help.contains("[default: 0.9]"), "{help}");
}

#[test]
fn recipe_settings_are_flags_too() {
    let runs = tempfile::tempdir().unwrap();
    let out = xtask(&[
        "train",
        "--quiet",
        "--runs-dir",
        runs.path().to_str().unwrap(),
        "--name",
        "flags",
        "--max-steps",
        "1",
        "--max-train-images",
        "64",
        "--max-eval-images",
        "64",
        "--batch-size",
        "32",
        "--epochs",
        "2",
        "--momentum",
        "0.8",
        "--weight-decay",
        "0.001",
        "--schedule",
        "{ kind = \"step\", every = 1, factor = 0.5 }",
        "--init",
        "paper",
        "--augment",
        "false",
        "--pca-lighting",
        "false",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = RunConfig::load(&runs.path().join("flags").join("config.toml"), None).unwrap();
    assert_eq!((config.optim.momentum, config.optim.weight_decay), (0.8, 0.001));
    assert_eq!(config.optim.schedule, Schedule::Step { every: 1, factor: 0.5 });
    assert_eq!(config.init, InitScheme::Paper, "mini's default is he");
    assert!(!config.data.augment && !config.data.pca_lighting);

    let out = xtask(&["train", "--schedule", "linear"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain names are constant and paper"));
}

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn example_configs_load() {
    let mut names: Vec<String> = std::fs::read_dir(configs_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["caffenet.toml", "keras-bn.toml", "paper.toml", "small-folder.toml"]);
    let load = |name: &str| RunConfig::load(&configs_dir().join(name), None).unwrap();

    let paper = load("paper.toml");
    assert_eq!(paper, RunConfig { name: paper.name.clone(), ..RunConfig::for_preset(Preset::Paper) });
    let caffenet = load("caffenet.toml");
    assert_eq!((caffenet.preset, caffenet.optim.batch_size), (Preset::Caffenet, 256));
    assert_eq!(caffenet.optim.schedule, Schedule::Step { every: 20, factor: 0.1 });
    let keras = load("keras-bn.toml");
    assert_eq!((keras.preset, keras.init, keras.optim.weight_decay), (Preset::KerasBn, InitScheme::He, 0.0004));
    let small = load("small-folder.toml");
    assert_eq!((small.preset, small.name.as_str(), small.data.val_fraction), (Preset::Mini, "small-folder", 0.2));
}

/// A configuration's `name` is its run's folder; a second run under that name is refused,
/// never renamed (it used to become `mini-1`).
#[test]
fn config_name_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("short.toml");
    let runs = dir.path().join("runs");
    std::fs::write(&config, "name = \"short\"\n[data]\nmax_train_images = 64\nmax_eval_images = 64\n").unwrap();
    let args = [
        "train",
        "--quiet",
        "--config",
        config.to_str().unwrap(),
        "--runs-dir",
        runs.to_str().unwrap(),
        "--max-steps",
        "1",
    ];
    let out = xtask(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(runs.join("short").join("config.toml").is_file());
    let again = xtask(&args);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("short already has checkpoints"));
    assert!(!runs.join("mini-1").exists());
}
