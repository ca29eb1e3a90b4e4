//! `cargo xtask ablate` end to end on generated data: a tiny plan of every claim (two
//! seeds, two epochs of 36 colour images), then what it wrote: the report with the verdict
//! rule before the table, a PNG per claim, a line per run in `runs.jsonl`, a row per epoch
//! in `epochs.csv`, and runs whose configurations differ in the claim's one factor only.
//! Bad options fail before any training, naming the bad value.

use std::path::Path;
use std::process::{Command, Output};

use alexnet::synthetic::write_noise_folder;
use alexnet::{LayerSpec, RunConfig};

fn xtask(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        // The colour statistics' cache goes here, not into the user's.
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("xtask runs")
}

fn run_config(plan: &Path, run: &str) -> RunConfig {
    RunConfig::load_run(&plan.join("runs").join(run)).unwrap()
}

/// `config` with its name and the factors an ablation changes set to one value, so that
/// two runs' configurations compare equal when they differ in nothing else.
fn without_factors(mut config: RunConfig) -> RunConfig {
    config.name = String::new();
    config.data.augment = true;
    config.data.pca_lighting = true;
    config.layers = None;
    config
}

/// The layer list as `op` names, activations by function.
fn ops(config: &RunConfig) -> Vec<String> {
    config
        .layers
        .as_ref()
        .unwrap()
        .iter()
        .map(|l| match l {
            LayerSpec::Activation { function } => format!("{function:?}"),
            LayerSpec::MaxPool { window, stride } => format!("pool{window}/{stride}"),
            other => other.label().split(' ').next().unwrap().to_string(),
        })
        .collect()
}

#[test]
fn a_tiny_plan_of_every_claim_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_noise_folder(&data, 3, 20, 32).unwrap();
    let runs = dir.path().join("runs");
    let args = [
        "ablate",
        "--data",
        data.to_str().unwrap(),
        "--seeds",
        "2",
        "--epochs",
        "2",
        "--max-train-images",
        "36",
        "--max-eval-images",
        "6",
        "--threads",
        "2",
        "--runs-dir",
        runs.to_str().unwrap(),
        "--quiet",
    ];
    let out = xtask(&args, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let plan = runs.join("ablate-1");

    // Eight variants (the paper's net, tanh, sigmoid, no LRN, 2/2 pooling, no PCA, no
    // crops and flips, no dropout) x two seeds, each two epochs.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(plan.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 16);
    assert!(lines.iter().all(|l| l["epochs"].as_array().unwrap().len() == 2 && l["failure"].is_null()));
    assert!(lines.iter().any(|l| l["ten_crop"]["top1_error"].is_number()), "the paper's runs are ten-cropped");
    let csv = std::fs::read_to_string(plan.join("epochs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 16 * 2, "{csv}");
    assert!(csv.starts_with("run,variant,seed,epoch,seconds"));

    let report = std::fs::read_to_string(plan.join("report.md")).unwrap();
    let rule = report.find("## Verdict rule").unwrap();
    let table = report.find("| claim | paper | ours").unwrap();
    assert!(rule < table);
    let rows: Vec<&str> = report[table..].lines().skip(2).take_while(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), 10, "{report}");
    for row in &rows {
        let verdict = row.trim_end_matches(" |").rsplit("| ").next().unwrap();
        assert!(["reproduced", "inconclusive", "not reproduced"].contains(&verdict), "{row}");
        assert!(row.contains("(n = 2)"), "{row}");
    }
    for claim in ["relu", "lrn", "overlap", "pca", "dropout", "augment", "tencrop"] {
        let png = std::fs::read(plan.join(format!("{claim}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{claim}");
    }
    assert!(stdout.contains("| claim |") && stdout.contains("report.md"), "{stdout}");

    // Each arm differs from the paper's net in its one factor.
    let paper = run_config(&plan, "paper-seed1");
    assert_eq!(paper.seed, 1);
    assert_eq!(run_config(&plan, "paper-seed2").seed, 2);
    let relu_ops = ops(&paper);
    for (run, differs) in [
        ("tanh-seed1", "activation"),
        ("sigmoid-seed1", "activation"),
        ("no-lrn-seed1", "lrn"),
        ("pool-2-2-seed1", "pooling"),
        ("no-dropout-seed1", "dropout"),
        ("no-pca-seed1", "pca"),
    ] {
        let other = run_config(&plan, run);
        assert_eq!(without_factors(other.clone()), without_factors(paper.clone()), "{run}");
        let other_ops = ops(&other);
        let expected: Vec<String> = match differs {
            "activation" => {
                let f = if run.starts_with("tanh") { "Tanh" } else { "Sigmoid" };
                relu_ops.iter().map(|o| if o == "Relu" { f.to_string() } else { o.clone() }).collect()
            }
            "lrn" => relu_ops.iter().filter(|o| *o != "LRN").cloned().collect(),
            "pooling" => relu_ops.iter().map(|o| if o == "pool3/2" { "pool2/2".into() } else { o.clone() }).collect(),
            "dropout" => relu_ops.iter().filter(|o| *o != "Dropout").cloned().collect(),
            _ => relu_ops.clone(),
        };
        assert_eq!(other_ops, expected, "{run}");
        assert_eq!(other.data.pca_lighting, differs != "pca", "{run}");
        assert!(other.data.augment, "{run}");
    }
    // Crops and flips are compared between runs without PCA noise.
    let (with, without) = (run_config(&plan, "no-pca-seed1"), run_config(&plan, "no-crops-flips-seed1"));
    assert_eq!(ops(&with), ops(&without));
    assert!(with.data.augment && !without.data.augment);

    // A crash that lost the last three runs' lines and tore the next: --resume redoes
    // those three from their checkpoints, to the same figures.
    let runs_file = plan.join("runs.jsonl");
    let text = std::fs::read_to_string(&runs_file).unwrap();
    let kept: Vec<&str> = text.lines().take(13).collect();
    std::fs::write(&runs_file, format!("{}\n{{\"name\": \"tor", kept.join("\n"))).unwrap();
    let out = xtask(&["ablate", "--resume", plan.to_str().unwrap(), "--quiet"], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("torn last line") && stdout.contains("13 done"), "{stdout}");
    let again: Vec<serde_json::Value> =
        std::fs::read_to_string(&runs_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(again.len(), 16);
    for before in &lines[13..] {
        let after = again.iter().find(|a| a["name"] == before["name"]).unwrap();
        for field in ["variant", "seed", "epochs", "held_out", "ten_crop", "failure"] {
            assert_eq!(after[field], before[field], "{} {field}", before["name"]);
        }
    }
}

#[test]
fn bad_options_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    for (args, needle) in [
        (&["--claims", "relu,bogus"][..], "bogus"),
        (&["--seeds", "0"][..], "0"),
        (&["--budget", "huge"][..], "huge"),
        (&["--epochs", "0"][..], "0"),
        (&["--data", "/no/such/folder"][..], "/no/such/folder"),
        (&["--resume", "/no/such/plan", "--seeds", "2"][..], "--seeds"),
        (&["--resume", "/no/such/plan"][..], "plan.json"),
    ] {
        let all = [&["ablate", "--runs-dir", runs.to_str().unwrap()][..], args].concat();
        let out = xtask(&all, dir.path());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(out.status.code().is_some_and(|c| c != 101) && !stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("error") && stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!runs.exists(), "{args:?} made {}", runs.display());
    }
}
