//! `cargo xtask ablate`: the paper's claims about its parts, each measured as matched runs
//! of one small network that differ in that part only (same seeds, so the same initial
//! weights, data order, augmentation draws and dropout masks, and the same schedule).
//!
//! The runs go through the library's [`Trainer`] with a layer list per arm
//! ([`RunConfig::layers`]); arms that two claims share (the paper's network is every
//! claim's reference) train once. Each finished run is appended to `runs.jsonl` and
//! `epochs.csv` at once, and `report.md` and the plots are rewritten after every run, so an
//! interrupted plan keeps everything it finished.

mod claims;
mod report;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use alexnet::data::Splits;
use alexnet::{Architecture, BackendKind, BatchReport, DataFormat, EpochRecord, Observer, Preset, RunConfig, Trainer};
use alexnet_core::Backend;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use self::claims::{Claim, Comparison, PAPER, RunRecord, Variant, comparisons};
use self::report::{CSV_HEADER, Context, csv_rows, plot_claims, report};
use crate::{AnyResult, BackendArgs, absolute, embedded_data, make_backend};

/// How long each run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Budget {
    /// Every claim on the embedded Fashion-MNIST within 15 minutes on two cores.
    Quick,
    /// The docs' CIFAR-10 figures: every claim in about 20 minutes on two cores that
    /// other work shares.
    Full,
}

impl Budget {
    /// `(epochs, training images, held-out images)` per run.
    fn size(self) -> (usize, usize, usize) {
        match self {
            Budget::Quick => (5, 4_000, 2_000),
            Budget::Full => (6, 2_500, 1_000),
        }
    }
}

/// Options of `ablate`.
#[derive(Args, Debug)]
pub struct AblateArgs {
    /// Claims to measure, comma-separated [default: all]: relu (ReLU against tanh and
    /// sigmoid, epochs to 25% training error), lrn (local response normalisation), overlap
    /// (3/2 against 2/2 max pooling), pca (PCA colour noise), dropout, augment (random crops
    /// and flips), tencrop (ten-crop averaging at test time).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "CLAIM,...")]
    claims: Option<Vec<Claim>>,
    /// The data: a CIFAR-10 binary folder, a folder with `train/` and `test/` class folders
    /// (CIFAR-10 as images), an IDX folder, or one class folder (10% held out)
    /// [default: the embedded Fashion-MNIST].
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Run length: quick (5 epochs of 4,000 images, 2,000 held out: every claim on the
    /// embedded data within 15 minutes on two cores) or full (6 epochs of 2,500 colour
    /// images, 1,000 held out: the CIFAR-10 figures in docs/ablations.md).
    #[arg(long, value_enum, default_value_t = Budget::Quick)]
    budget: Budget,
    /// Seeds per arm (1..=N): each fixes the initial weights, the data order, the
    /// augmentation and the dropout masks, the same in every arm. Two or more give a spread.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
    seeds: u64,
    /// Epochs per run [default: the budget's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    epochs: Option<u64>,
    /// Training images per run (a seeded subset) [default: the budget's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_train_images: Option<u64>,
    /// Held-out images evaluated after every epoch [default: the budget's].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_eval_images: Option<u64>,
    /// Folder the plan's folder (`ablate-N`) is made in.
    #[arg(long, default_value = "runs")]
    runs_dir: PathBuf,
    /// Continue the plan in this folder (`runs/ablate-N`): runs it finished are kept, a run
    /// it was in continues from its last checkpoint, the rest train [default: start a new
    /// plan].
    #[arg(
        long,
        value_name = "PLAN_DIR",
        conflicts_with_all = ["claims", "data", "budget", "seeds", "epochs", "max_train_images", "max_eval_images"]
    )]
    resume: Option<PathBuf>,
    /// One line per finished run instead of a progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Where the data come from, and what that means for the claims.
struct DataPlan {
    /// Training folder, and a test folder beside it (`DIR/train`, `DIR/test`) if any.
    train: PathBuf,
    test: Option<PathBuf>,
    format: DataFormat,
    /// Held out from the training folder when there is no test split.
    val_fraction: f64,
    has_pca: bool,
}

impl DataPlan {
    fn resolve(dir: Option<&Path>) -> AnyResult<Self> {
        let dir = dir.map_or_else(embedded_data, absolute);
        let (train, test) = if dir.join("train").is_dir() && dir.join("test").is_dir() {
            (dir.join("train"), Some(dir.join("test")))
        } else {
            (dir.clone(), None)
        };
        let format = DataFormat::detect(&train)?;
        let has_test_split = test.is_some() || matches!(format, DataFormat::Idx | DataFormat::Cifar10);
        Ok(Self {
            train,
            test,
            format,
            val_fraction: if has_test_split { 0.0 } else { 0.1 },
            // Only class folders go through the pipeline with PCA noise (colour, 3 channels).
            has_pca: format == DataFormat::ImageFolder,
        })
    }
}

/// The learning rate of every run: the paper's.
const PAPER_LR: f32 = 0.01;

/// What a plan was asked for, saved as `plan.json` so that `--resume` rebuilds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PlanSpec {
    /// The command line, for the report.
    command: String,
    claims: Vec<Claim>,
    /// The `--data` folder (absolute), `None` for the embedded data.
    data: Option<PathBuf>,
    budget: Budget,
    seeds: u64,
    epochs: usize,
    max_train_images: usize,
    max_eval_images: usize,
}

/// The plan's description file in its folder.
const PLAN_FILE: &str = "plan.json";

impl PlanSpec {
    fn from_args(args: &AblateArgs) -> Self {
        let mut claims = args.claims.clone().unwrap_or_else(|| Claim::ALL.to_vec());
        claims.sort();
        claims.dedup();
        let (epochs, train, eval) = args.budget.size();
        Self {
            command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            claims,
            data: args.data.as_deref().map(absolute),
            budget: args.budget,
            seeds: args.seeds,
            epochs: args.epochs.map_or(epochs, |e| e as usize),
            max_train_images: args.max_train_images.map_or(train, |n| n as usize),
            max_eval_images: args.max_eval_images.map_or(eval, |n| n as usize),
        }
    }

    fn load(plan_dir: &Path) -> AnyResult<Self> {
        let path = plan_dir.join(PLAN_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}; --resume takes a folder that `ablate` made", path.display()))?;
        Ok(serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?)
    }
}

/// Everything a plan needs besides the backend.
struct Plan {
    dir: PathBuf,
    spec: PlanSpec,
    data: DataPlan,
    comparisons: Vec<Comparison>,
    /// `(variant, seed)` in order: every variant of seed 1, then of seed 2, ...
    runs: Vec<(Variant, u64)>,
    paper: Variant,
    class_names: Vec<String>,
    /// Images per split as the runs see them: training, held out.
    sizes: (usize, usize),
    input: [usize; 3],
}

/// The first `ablate-N` under `runs_dir` that does not exist.
fn free_plan_dir(runs_dir: &Path) -> PathBuf {
    (1..).map(|n| runs_dir.join(format!("ablate-{n}"))).find(|p| !p.exists()).expect("some name is free")
}

impl Plan {
    /// The plan `spec` asks for, in `dir`. Opens the data once: a bad folder fails before
    /// any run, and the class count sizes the network.
    fn new(spec: PlanSpec, dir: PathBuf) -> AnyResult<Self> {
        let data = DataPlan::resolve(spec.data.as_deref())?;
        let paper = PAPER.effective(data.has_pca);
        let comparisons = comparisons(&spec.claims, data.has_pca, data.format);
        let mut variants: Vec<Variant> = Vec::new();
        for c in comparisons.iter().filter(|c| c.not_applicable.is_none()) {
            for v in [c.control.0, c.ablated.0] {
                if !variants.contains(&v) {
                    variants.push(v);
                }
            }
        }
        let runs = (1..=spec.seeds).flat_map(|s| variants.iter().map(move |&v| (v, s))).collect();
        let mut plan =
            Self { dir, spec, data, comparisons, runs, paper, class_names: Vec::new(), sizes: (0, 0), input: [0; 3] };
        let splits = Splits::open(&plan.run_config(paper, 1, 2))?;
        plan.class_names = splits.class_names.clone();
        let held = splits.test.as_ref().or(splits.val.as_ref()).map_or(0, |s| s.len());
        plan.sizes = (splits.train.len(), held);
        plan.input = alexnet::input_for(Preset::Mini, splits.format)?;
        // Fail now, not after the first run, if the network does not fit the input.
        let classes = plan.class_names.len();
        for &(v, _) in &plan.runs {
            Architecture::from_layers(Preset::Mini, v.layers(classes), plan.input, classes)?;
        }
        Ok(plan)
    }

    /// The configuration of `variant`'s run with `seed` (`classes` outputs).
    fn run_config(&self, variant: Variant, seed: u64, classes: usize) -> RunConfig {
        let mut c = RunConfig::for_preset(Preset::Mini);
        c.name = format!("{}-seed{seed}", variant.name(&self.paper));
        c.seed = seed;
        c.layers = Some(variant.layers(classes));
        let d = &mut c.data;
        d.train = Some(self.data.train.clone());
        d.test = self.data.test.clone();
        d.val_fraction = self.data.val_fraction;
        d.max_train_images = Some(self.spec.max_train_images);
        d.max_eval_images = Some(self.spec.max_eval_images);
        d.augment = variant.augment;
        d.pca_lighting = variant.pca;
        c.optim.epochs = self.spec.epochs;
        // The paper's learning rate (mini's 0.05 makes some arms diverge at the start),
        // on mini's cosine schedule; the paper's momentum and weight decay are mini's too.
        c.optim.lr = PAPER_LR;
        c.output.runs_dir = self.dir.join("runs");
        c.output.keep_last = 1;
        c
    }

    fn chance(&self) -> f64 {
        1.0 - 1.0 / self.class_names.len().max(1) as f64
    }

    fn wants_ten_crop(&self, variant: Variant) -> bool {
        variant == self.paper && self.spec.claims.contains(&Claim::Tencrop)
    }
}

/// The plan's progress bar, fed by each run's trainer.
struct RunProgress<'a> {
    bar: &'a ProgressBar,
    label: String,
    epochs: Vec<EpochRecord>,
}

impl Observer for RunProgress<'_> {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, _batches: usize) {
        self.bar.set_message(format!("{}, epoch {}/{epochs}", self.label, epoch + 1));
    }

    fn batch_end(&mut self, r: &BatchReport) {
        if r.batch.is_multiple_of(8) {
            self.bar.set_message(format!("{}, epoch {}, batch {}/{}", self.label, r.epoch + 1, r.batch + 1, r.batches));
        }
    }

    fn epoch_end(&mut self, record: &EpochRecord) {
        self.epochs.push(record.clone());
        self.bar.inc(1);
    }

    fn note(&mut self, message: &str) {
        if !message.starts_with("checkpoint") {
            say(self.bar, &format!("{}: {message}", self.label));
        }
    }
}

/// Prints `line` above the bar, or as a plain line when the bar is hidden (`--quiet`, or
/// stderr is not a terminal).
fn say(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

/// Appends `line` (and a newline) to `path`, creating it.
fn append(path: &Path, line: &str) -> AnyResult {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(file, "{line}").map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(())
}

/// The load average over the last minute (Linux), for saying how busy the machine was.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

pub fn run(args: AblateArgs) -> AnyResult {
    let (plan, records) = match &args.resume {
        Some(dir) => {
            let plan = Plan::new(PlanSpec::load(dir)?, dir.clone())?;
            let records = read_records(&plan.dir.join(RUNS_FILE))?;
            // Both files again from the runs read, without a torn line or a run's rows
            // that a crash left in one file but not the other.
            let mut lines = String::new();
            let mut csv = format!("{CSV_HEADER}\n");
            for r in &records {
                lines.push_str(&serde_json::to_string(r)?);
                lines.push('\n');
                csv.push_str(&csv_rows(r, &r.variant.name(&plan.paper)));
            }
            alexnet::write_atomic(&plan.dir.join(RUNS_FILE), lines.as_bytes())?;
            alexnet::write_atomic(&plan.dir.join(CSV_FILE), csv.as_bytes())?;
            (plan, records)
        }
        None => {
            let plan = Plan::new(PlanSpec::from_args(&args), free_plan_dir(&args.runs_dir))?;
            std::fs::create_dir_all(&plan.dir).map_err(|e| format!("{}: {e}", plan.dir.display()))?;
            let spec = serde_json::to_string_pretty(&plan.spec)?;
            alexnet::write_atomic(&plan.dir.join(PLAN_FILE), spec.as_bytes())?;
            append(&plan.dir.join(CSV_FILE), CSV_HEADER)?;
            (plan, Vec::new())
        }
    };
    let any = make_backend(&args.backend, BackendKind::Cpu)?;
    dispatch!(any, b => execute(&plan, records, b, args.quiet))
}

/// One line per finished run, appended as each finishes.
const RUNS_FILE: &str = "runs.jsonl";
/// Every epoch of every finished run as a table.
const CSV_FILE: &str = "epochs.csv";

/// The runs recorded in `path`; a torn last line (a crash while appending) is dropped.
fn read_records(path: &Path) -> AnyResult<Vec<RunRecord>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", path.display()).into()),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str(line) {
            Ok(record) => records.push(record),
            Err(_) if i + 1 == lines.len() => println!("{}: dropping a torn last line", path.display()),
            Err(e) => return Err(format!("{} line {}: {e}", path.display(), i + 1).into()),
        }
    }
    Ok(records)
}

/// Trains the plan's runs not in `records` yet, in order, writing each one's figures as it
/// finishes; a run interrupted after a checkpoint continues from it.
fn execute<B: Backend + 'static>(plan: &Plan, mut records: Vec<RunRecord>, backend: Arc<B>, quiet: bool) -> AnyResult {
    let ctx = Context {
        backend: backend.name(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        load_at_start: load_average(),
    };
    let variants = plan.runs.len() / plan.spec.seeds as usize;
    println!(
        "ablate: {} claims, {} runs ({variants} variants x {} seeds, {} done) of {} epochs on {} training images, \
         into {} (an interrupted plan continues with --resume {})",
        plan.spec.claims.len(),
        plan.runs.len(),
        plan.spec.seeds,
        records.len(),
        plan.spec.epochs,
        plan.sizes.0,
        plan.dir.display(),
        plan.dir.display()
    );
    let epochs = plan.spec.epochs;
    let bar = ProgressBar::with_draw_target(
        Some((plan.runs.len() * epochs) as u64),
        if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() },
    );
    bar.set_style(
        ProgressStyle::with_template("epochs {pos}/{len} [{bar:30}] elapsed {elapsed_precise} eta {eta_precise} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let classes = plan.class_names.len();
    for (i, &(variant, seed)) in plan.runs.iter().enumerate() {
        let config = plan.run_config(variant, seed, classes);
        let name = config.name.clone();
        if records.iter().any(|r| r.name == name) {
            continue;
        }
        bar.set_position((i * epochs) as u64);
        let run_dir = config.run_dir();
        let label = format!("run {}/{} {name}", i + 1, plan.runs.len());
        let mut obs = RunProgress { bar: &bar, label: label.clone(), epochs: Vec::new() };
        let started = Instant::now();
        let outcome = (|| -> alexnet::Result<_> {
            let mut trainer = if alexnet::checkpoint::has_checkpoint(&run_dir.join("checkpoints")) {
                Trainer::resume(&run_dir, backend.clone(), None)?
            } else {
                Trainer::new(config, backend.clone())?
            };
            let result = trainer.fit(&mut obs)?;
            let test_split = trainer.split_sizes().2.is_some();
            let ten_crop =
                if plan.wants_ten_crop(variant) { trainer.evaluate_split(test_split, true, &mut obs)? } else { None };
            Ok((result, ten_crop))
        })();
        let (held, ten_crop, failure) = match outcome {
            Ok((result, ten_crop)) => (result.test.or(result.val), ten_crop, None),
            Err(e @ alexnet::Error::NonFiniteLoss { .. }) => (None, None, Some(e.to_string())),
            Err(e) => {
                bar.abandon();
                return Err(format!("{name}: {e} (finished runs are in {})", plan.dir.display()).into());
            }
        };
        // The run's own log holds every epoch, those of an earlier session too.
        let logged = alexnet::MetricsLog::new(run_dir.join("metrics.jsonl")).read().unwrap_or_default();
        let record = RunRecord {
            name: name.clone(),
            variant,
            seed,
            epochs: if logged.len() >= obs.epochs.len() { logged } else { obs.epochs },
            held_out: held,
            ten_crop,
            failure,
            wall_seconds: started.elapsed().as_secs_f64(),
        };
        append(&plan.dir.join(RUNS_FILE), &serde_json::to_string(&record)?)?;
        let csv = csv_rows(&record, &variant.name(&plan.paper));
        if !csv.is_empty() {
            append(&plan.dir.join(CSV_FILE), csv.trim_end())?;
        }
        bar.set_position(((i + 1) * epochs) as u64);
        let summary = match (&record.failure, record.epochs.last(), record.held_out) {
            (Some(f), _, _) => format!("failed: {f}"),
            (None, Some(last), Some(h)) => format!(
                "training error {:.2}%, held-out error {:.2}% after {} epochs, {:.0} s",
                100.0 * last.train.top1_error,
                100.0 * h.top1_error,
                last.epoch,
                record.wall_seconds
            ),
            _ => "finished without figures".to_string(),
        };
        say(&bar, &format!("{label}: {summary}"));
        records.push(record);
        alexnet::write_atomic(&plan.dir.join("report.md"), report(plan, &records, &ctx).as_bytes())?;
        plot_claims(plan, &records)?;
    }
    bar.finish_and_clear();
    let text = report(plan, &records, &ctx);
    alexnet::write_atomic(&plan.dir.join("report.md"), text.as_bytes())?;
    plot_claims(plan, &records)?;
    let table: Vec<&str> =
        text.lines().skip_while(|l| !l.starts_with("| claim")).take_while(|l| l.starts_with('|')).collect();
    println!("{}", table.join("\n"));
    println!("report: {}", plan.dir.join("report.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use alexnet::SplitMetrics;
    use alexnet_core::Activation;

    use super::claims::*;
    use super::report::*;
    use super::*;

    #[test]
    fn mean_and_sd_follow_the_plain_formulas() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), 40.0 / 8.0);
        // Squared deviations from 5: 9 1 1 1 0 0 4 16 = 32, over n - 1 = 7.
        assert!((sample_sd(&xs).unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(sample_sd(&[3.0]), None);
        assert_eq!(sample_sd(&[1.5, 1.5]), Some(0.0));
    }

    #[test]
    fn verdict_rule_judges_direction_against_two_standard_errors() {
        // Mean 1, sd 0.1 over 3 seeds: far outside 2 * 0.1 / sqrt(3).
        assert_eq!(verdict(&[0.9, 1.0, 1.1]), Verdict::Reproduced);
        assert_eq!(verdict(&[-0.9, -1.0, -1.1]), Verdict::NotReproduced);
        // Mean 1/3, sd sqrt(7/3) = 1.53: spread 2 * 1.53 / sqrt(3) = 1.76 > 1/3.
        assert_eq!(verdict(&[-1.0, 0.0, 2.0]), Verdict::Inconclusive);
        // Just inside and just outside the spread: effects m - d, m, m + d have sd d, so
        // the spread is 2 d / sqrt(3); m = 1.2 d is outside, m = 1.1 d inside.
        let d = 0.5;
        let spread = 2.0 * d / 3f64.sqrt();
        assert!(1.2 * d > spread && 1.1 * d < spread);
        assert_eq!(verdict(&[1.2 * d - d, 1.2 * d, 1.2 * d + d]), Verdict::Reproduced);
        assert_eq!(verdict(&[1.1 * d - d, 1.1 * d, 1.1 * d + d]), Verdict::Inconclusive);
        // One seed has no spread; identical effects of zero decide nothing.
        assert_eq!(verdict(&[5.0]), Verdict::Inconclusive);
        assert_eq!(verdict(&[0.0, 0.0]), Verdict::Inconclusive);
        assert_eq!(verdict(&[0.2, 0.2]), Verdict::Reproduced);
    }

    #[test]
    fn crossing_interpolates_between_epochs() {
        // From 0.9 at epoch 0 to 0.1 at epoch 2: 0.25 is reached at 2 * (0.9 - 0.25) / 0.8.
        let points = [(0.0, 0.9), (2.0, 0.1), (3.0, 0.05)];
        assert!((first_crossing(&points, 0.25).unwrap() - 1.625).abs() < 1e-12);
        assert_eq!(first_crossing(&points, 0.95), Some(0.0));
        assert_eq!(first_crossing(&points, 0.01), None);
        // The first crossing counts, not a later one after a rise.
        let bumpy = [(0.0, 0.9), (1.0, 0.2), (2.0, 0.5), (3.0, 0.1)];
        assert!((first_crossing(&bumpy, 0.25).unwrap() - (0.65 / 0.7)).abs() < 1e-12);
    }

    fn split(top1: f64) -> SplitMetrics {
        SplitMetrics { loss: 1.0, top1_error: top1, top5_error: top1 / 4.0, images: 100 }
    }

    fn record(variant: Variant, seed: u64, train: &[f64], held: &[f64]) -> RunRecord {
        let epochs: Vec<EpochRecord> = train
            .iter()
            .zip(held)
            .enumerate()
            .map(|(i, (&t, &h))| EpochRecord {
                epoch: i + 1,
                step: 10 * (i as u64 + 1),
                lr: 0.05,
                train: split(t),
                val: None,
                test: Some(split(h)),
                images_per_sec: 100.0,
                seconds: 2.0,
            })
            .collect();
        let last = *held.last().unwrap();
        RunRecord {
            name: format!("{}-seed{seed}", variant.name(&PAPER)),
            variant,
            seed,
            epochs,
            held_out: Some(split(last)),
            ten_crop: Some(split(last - 0.01)),
            failure: None,
            wall_seconds: 10.0,
        }
    }

    #[test]
    fn comparisons_pair_seeds_and_sign_effects() {
        let tanh = Variant { activation: Activation::Tanh, ..PAPER };
        let rows = comparisons(&[Claim::Relu, Claim::Lrn], true, DataFormat::ImageFolder);
        let relu_tanh = &rows[0];
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        // Every run reaches 25%: ReLU at epoch 1 (0.9 -> 0.25 exactly), tanh between
        // epochs 1 and 2 (0.5 -> 0.2): 1 + (0.5 - 0.25) / 0.3; seed 2's tanh at epoch 3.
        let mut records = vec![
            record(PAPER, 1, &[0.25, 0.2, 0.1], &[0.3, 0.3, 0.3]),
            record(tanh, 1, &[0.5, 0.2, 0.1], &[0.4, 0.4, 0.4]),
            record(PAPER, 2, &[0.25, 0.2, 0.1], &[0.3, 0.3, 0.3]),
            record(tanh, 2, &[0.6, 0.5, 0.25], &[0.4, 0.4, 0.4]),
        ];
        let m = relu_tanh.measure(&records, 0.9);
        assert_eq!((m.seeds.clone(), m.threshold), (vec![1, 2], Some(0.25)));
        let tanh1 = 1.0 + 0.25 / 0.3;
        assert!(close(m.ablated[0].value, tanh1) && !m.ablated[0].censored);
        assert!(close(m.ablated[1].value, 3.0));
        assert_eq!(m.control[0], Value { value: 1.0, censored: false });
        let effects = relu_tanh.effects(&m);
        assert!(close(effects[0], tanh1 - 1.0));
        // Seconds: two per epoch in these records.
        let (relu_s, tanh_s) = m.seconds.as_ref().unwrap();
        assert!(close(relu_s[0].value, 2.0) && close(tanh_s[0].value, 2.0 * tanh1));
        let cell = relu_tanh.ours(&m);
        assert!(cell.starts_with("to 25% training error: ") && cell.contains("tanh / ReLU"), "{cell}");

        // Seed 2's tanh stops at 40%: every run is compared at 40% instead, and says so.
        records[3] = record(tanh, 2, &[0.6, 0.5, 0.4], &[0.4, 0.4, 0.4]);
        let m = relu_tanh.measure(&records, 0.9);
        assert_eq!(m.threshold, Some(0.4));
        assert!(close(m.control[0].value, 0.5 / 0.65) && close(m.ablated[0].value, 1.0 + 0.1 / 0.3));
        assert_eq!(m.ablated[1], Value { value: 3.0, censored: false });
        let cell = relu_tanh.ours(&m);
        assert!(cell.starts_with("to 40.0% training error (not every run reached 25%)"), "{cell}");

        // The LRN row has no runs without LRN yet.
        assert!(rows[1].measure(&records, 0.9).seeds.is_empty());
        // A failed run drops its seed.
        records[3].failure = Some("diverged".into());
        let m = relu_tanh.measure(&records, 0.9);
        assert_eq!((m.seeds, m.failed_seeds), (vec![1], vec![2]));
    }

    #[test]
    fn arms_share_runs_and_grey_data_skips_pca() {
        let grey = comparisons(&Claim::ALL, false, DataFormat::Idx);
        let pca = grey.iter().find(|c| c.claim == Claim::Pca).unwrap();
        assert!(pca.not_applicable.as_ref().is_some_and(|w| w.contains("grey")));
        let colour = comparisons(&Claim::ALL, true, DataFormat::ImageFolder);
        assert!(colour.iter().all(|c| c.not_applicable.is_none()));
        // Crops and flips are compared without PCA noise in both arms, sharing the PCA row's run.
        let augment = colour.iter().find(|c| c.claim == Claim::Augment).unwrap();
        let pca = colour.iter().find(|c| c.claim == Claim::Pca).unwrap();
        assert_eq!(augment.control.0, pca.ablated.0);
        assert!(!augment.ablated.0.pca && !augment.ablated.0.augment);
        // Every arm differs from its reference in exactly one named factor.
        for c in &colour {
            let (a, b) = (c.control.0, c.ablated.0);
            let names = [a.name(&PAPER), b.name(&PAPER)];
            assert!(names.contains(&"paper".to_string()) || c.claim == Claim::Augment, "{names:?}");
        }
    }

    #[test]
    fn pooling_arms_have_the_same_shapes() {
        for input in [[1, 28, 28], [3, 32, 32]] {
            let shapes = |v: Variant| {
                let arch = Architecture::from_layers(Preset::Mini, v.layers(10), input, 10).unwrap();
                arch.params().map(|p| p.dims.clone()).collect::<Vec<_>>()
            };
            assert_eq!(shapes(PAPER), shapes(Variant { overlap: false, ..PAPER }), "{input:?}");
        }
    }

    #[test]
    fn report_states_the_rule_before_the_table() {
        let spec = PlanSpec {
            command: "ablate --claims lrn".into(),
            claims: vec![Claim::Lrn],
            data: None,
            budget: Budget::Quick,
            seeds: 2,
            epochs: 3,
            max_train_images: 100,
            max_eval_images: 100,
        };
        let plan = Plan {
            dir: PathBuf::from("/tmp/none"),
            spec,
            data: DataPlan {
                train: PathBuf::from("/data"),
                test: None,
                format: DataFormat::Idx,
                val_fraction: 0.0,
                has_pca: false,
            },
            comparisons: comparisons(&[Claim::Lrn], false, DataFormat::Idx),
            runs: vec![],
            paper: PAPER.effective(false),
            class_names: (0..10).map(|k| k.to_string()).collect(),
            sizes: (100, 100),
            input: [1, 28, 28],
        };
        let paper = plan.paper;
        let no_lrn = Variant { lrn: false, ..paper };
        let records = [
            record(paper, 1, &[0.5, 0.3, 0.2], &[0.3, 0.2, 0.10]),
            record(no_lrn, 1, &[0.5, 0.3, 0.2], &[0.3, 0.2, 0.12]),
            record(paper, 2, &[0.5, 0.3, 0.2], &[0.3, 0.2, 0.11]),
            record(no_lrn, 2, &[0.5, 0.3, 0.2], &[0.3, 0.2, 0.14]),
        ];
        let ctx = Context { backend: "cpu".into(), cores: 2, load_at_start: Some(1.0) };
        let text = report(&plan, &records, &ctx);
        let rule = text.find("## Verdict rule").unwrap();
        let table = text.find("| claim |").unwrap();
        assert!(rule < table);
        // Effects 2 and 3 points: mean 2.5, sd 0.71, spread 1.0: reproduced.
        let row = text.lines().find(|l| l.starts_with("| Local response")).unwrap();
        assert!(row.contains("+2.50 ± 0.71 points") && row.ends_with("| reproduced |"), "{row}");
    }
}
