//! The statistics, the verdict rule and the report: `report.md`, the claims' PNGs and
//! `epochs.csv`'s rows.

use std::fmt::Write as _;

use alexnet::DataFormat;
use alexnet::plot::{ArmCurves, plot_comparison};

use super::Plan;
use super::claims::{Claim, Comparison, Expect, Measured, Metric, RunRecord, Value, Variant, held_out};
use crate::AnyResult;

/// The arithmetic mean (NaN for no values).
pub(super) fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// The sample standard deviation (n - 1 in the denominator); `None` below two values.
pub(super) fn sample_sd(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values);
    Some((values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() - 1) as f64).sqrt())
}

/// A comparison's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Reproduced,
    Inconclusive,
    NotReproduced,
}

impl Verdict {
    pub(super) fn text(self) -> &'static str {
        match self {
            Verdict::Reproduced => "reproduced",
            Verdict::Inconclusive => "inconclusive",
            Verdict::NotReproduced => "not reproduced",
        }
    }
}

/// The verdict rule, in the report's words.
pub(super) const VERDICT_RULE: &str = "Each seed trains both arms identically but for the one factor; its effect is the \
    ablated arm's figure minus the paper's arm's, signed so that the paper's direction is positive. Over n seeds, \
    m is the mean effect and s its standard deviation (n - 1 in the denominator); the spread is two standard \
    errors, 2 s / sqrt(n). **reproduced**: m > 0 and m is farther from zero than the spread; **not reproduced**: \
    m < 0 and farther than the spread (the opposite direction); **inconclusive**: within the spread, or fewer \
    than two seeds. Only the direction is judged: the sizes stand beside the paper's for comparison, and no arm \
    is tuned towards them. A run that diverged drops its seed from the comparison (the row says so). Epochs to \
    a training error count to the paper's threshold when every run of the comparison reaches it, else to the \
    lowest error every run reaches (the row names it).";

/// The verdict on `effects` (one per seed, positive = the paper's direction).
pub(super) fn verdict(effects: &[f64]) -> Verdict {
    let Some(sd) = sample_sd(effects) else { return Verdict::Inconclusive };
    let m = mean(effects);
    let spread = 2.0 * sd / (effects.len() as f64).sqrt();
    if m > 0.0 && m > spread {
        Verdict::Reproduced
    } else if m < 0.0 && -m > spread {
        Verdict::NotReproduced
    } else {
        Verdict::Inconclusive
    }
}

/// `mean ± sd` of `values` scaled by `scale`, with `digits` decimals (`±` omitted for one value).
pub(super) fn mean_sd(values: &[f64], scale: f64, digits: usize) -> String {
    let m = mean(values) * scale;
    match sample_sd(values) {
        Some(sd) => format!("{m:.digits$} ± {:.digits$}", sd * scale),
        None => format!("{m:.digits$}"),
    }
}

impl Comparison {
    /// Effects signed so that the paper's direction is positive.
    pub(super) fn effects(&self, m: &Measured) -> Vec<f64> {
        let sign = if self.expect == Expect::Higher { 1.0 } else { -1.0 };
        m.control.iter().zip(&m.ablated).map(|(c, a)| sign * (a.value - c.value)).collect()
    }

    /// The table's cell of our figures.
    pub(super) fn ours(&self, m: &Measured) -> String {
        let values = |vs: &[Value]| vs.iter().map(|v| v.value).collect::<Vec<f64>>();
        let bound = |vs: &[Value]| if vs.iter().any(|v| v.censored) { ">= " } else { "" };
        let (c, a) = (values(&m.control), values(&m.ablated));
        let diffs: Vec<f64> = c.iter().zip(&a).map(|(c, a)| a - c).collect();
        let (cl, al) = (self.control.2, self.ablated.2);
        if self.control.1.is_error() {
            format!(
                "{cl} {}%, {al} {}%: {} points",
                mean_sd(&c, 100.0, 2),
                mean_sd(&a, 100.0, 2),
                signed(&mean_sd(&diffs, 100.0, 2))
            )
        } else {
            // Epoch counts: the ratio of the slower arm the paper expects to the other.
            let ratios: Vec<f64> = match self.expect {
                Expect::Higher => c.iter().zip(&a).map(|(c, a)| a / c).collect(),
                Expect::Lower => c.iter().zip(&a).map(|(c, a)| c / a).collect(),
            };
            let (num, den) = if self.expect == Expect::Higher { (al, cl) } else { (cl, al) };
            let mut cell = match (m.threshold, self.control.1) {
                (Some(t), Metric::EpochsToTrainError(claimed)) if t > claimed => {
                    format!("to {:.1}% training error (not every run reached {:.0}%): ", 100.0 * t, 100.0 * claimed)
                }
                (Some(t), _) => format!("to {:.0}% training error: ", 100.0 * t),
                (None, _) => String::new(),
            };
            let _ = write!(
                cell,
                "{cl} {}{}, {al} {}{} epochs: {num} / {den} {}x",
                bound(&m.control),
                mean_sd(&c, 1.0, 2),
                bound(&m.ablated),
                mean_sd(&a, 1.0, 2),
                mean_sd(&ratios, 1.0, 2)
            );
            if let Some((cs, as_)) = &m.seconds {
                let (cv, av) = (values(cs), values(as_));
                let ratios: Vec<f64> = cv.iter().zip(&av).map(|(c, a)| a / c).collect();
                let _ = write!(
                    cell,
                    "; in seconds {}{} and {}{}: {}x",
                    bound(cs),
                    mean_sd(&cv, 1.0, 1),
                    bound(as_),
                    mean_sd(&av, 1.0, 1),
                    mean_sd(&ratios, 1.0, 2)
                );
            }
            cell
        }
    }
}

/// `text` with a `+` before a non-negative leading number.
pub(super) fn signed(text: &str) -> String {
    if text.starts_with('-') { text.to_string() } else { format!("+{text}") }
}

pub(super) const CSV_HEADER: &str = "run,variant,seed,epoch,seconds,lr,train_loss,train_top1_error,train_top5_error,\
                          held_out_loss,held_out_top1_error,held_out_top5_error";

/// The run's rows of `epochs.csv`.
pub(super) fn csv_rows(record: &RunRecord, variant_name: &str) -> String {
    let mut rows = String::new();
    for (r, point) in record.epochs.iter().zip(record.curve()) {
        let h = held_out(r);
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        let _ = writeln!(
            rows,
            "{},{variant_name},{},{},{:.3},{},{:.6},{:.6},{:.6},{},{},{}",
            record.name,
            record.seed,
            r.epoch,
            point.seconds,
            r.lr,
            r.train.loss,
            r.train.top1_error,
            r.train.top5_error,
            opt(h.map(|m| m.loss)),
            opt(h.map(|m| m.top1_error)),
            opt(h.map(|m| m.top5_error)),
        );
    }
    rows
}

/// Facts the report states besides the runs.
pub(super) struct Context {
    pub(super) backend: String,
    pub(super) cores: usize,
    pub(super) load_at_start: Option<f64>,
}

/// The report: setup, the verdict rule, the table, then per-claim details.
pub(super) fn report(plan: &Plan, records: &[RunRecord], ctx: &Context) -> String {
    let mut out = String::new();
    let chance = plan.chance();
    let w = &mut out;
    let _ = writeln!(w, "# The paper's claims, measured\n");
    let _ = writeln!(w, "Command: `cargo xtask {}`\n", plan.spec.command);
    let finished = records.len();
    let _ = writeln!(
        w,
        "Runs finished: {finished} of {} ({} variants x {} seeds), {:.1} minutes of training and evaluation.\n",
        plan.runs.len(),
        plan.runs.len() / plan.spec.seeds.max(1) as usize,
        plan.spec.seeds,
        records.iter().map(|r| r.wall_seconds).sum::<f64>() / 60.0
    );
    let [c, h, wd] = plan.input;
    let _ = writeln!(
        w,
        "- Data: `{}`{} ({:?} layout, {} classes); per run a seeded subset of {} training images, {} held-out \
         images ({}).",
        plan.data.train.display(),
        plan.data.test.as_ref().map_or(String::new(), |t| format!(" and `{}`", t.display())),
        plan.data.format,
        plan.class_names.len(),
        plan.sizes.0,
        plan.sizes.1,
        if plan.data.val_fraction > 0.0 { "10% of the folder held out" } else { "the test split" },
    );
    let _ = writeln!(
        w,
        "- Budget `{:?}`: {} epochs of batch 128, SGD momentum 0.9, weight decay 0.0005, learning rate 0.01 \
         on a cosine schedule to 2% of it, He initialisation; the same in every arm.",
        plan.spec.budget, plan.spec.epochs
    );
    let _ = writeln!(
        w,
        "- Network (input {c}x{h}x{wd}): conv1 32 4x4 pad 1 -> act -> LRN -> max-pool -> conv2 32 5x5 pad 2 -> act \
         -> LRN -> max-pool -> conv3 64 3x3 pad 1 -> act -> fc4 128 -> act -> dropout 0.5 -> fc{} (pooling 3/2; \
         each claim changes one of these).",
        plan.class_names.len()
    );
    let _ = writeln!(
        w,
        "- Machine: {} on {} cores, load average {} at the start (other work on the machine slows the seconds, \
         not the epochs).\n",
        ctx.backend,
        ctx.cores,
        ctx.load_at_start.map_or("unknown".to_string(), |l| format!("{l:.2}"))
    );
    let _ = writeln!(w, "## Verdict rule\n\n{VERDICT_RULE}\n");
    let _ = writeln!(w, "## Results\n");
    let _ = writeln!(w, "| claim | paper | ours (mean ± sd over seeds) | verdict |");
    let _ = writeln!(w, "|---|---|---|---|");
    for comp in &plan.comparisons {
        let (ours, verdict_text) = match &comp.not_applicable {
            Some(why) => (format!("not measured: {why}"), "n/a".to_string()),
            None => {
                let m = comp.measure(records, chance);
                if m.seeds.is_empty() {
                    let why = if m.failed_seeds.is_empty() { "no finished pair yet" } else { "every pair failed" };
                    (why.to_string(), "-".to_string())
                } else {
                    let failed = if m.failed_seeds.is_empty() {
                        String::new()
                    } else {
                        format!("; seeds {:?} failed (see below)", m.failed_seeds)
                    };
                    let text = format!("{} (n = {}{failed})", comp.ours(&m), m.seeds.len());
                    (text, verdict(&comp.effects(&m)).text().to_string())
                }
            }
        };
        let _ = writeln!(w, "| {} | {} | {ours} | {verdict_text} |", comp.title, comp.paper);
    }
    let _ = writeln!(w, "\n## Per claim\n");
    for &claim in &plan.spec.claims {
        let _ = writeln!(w, "### {}\n", claim.name());
        if plan.comparisons.iter().any(|c| c.claim == claim && c.not_applicable.is_none()) {
            let _ = writeln!(w, "![{}]({}.png)\n", claim.name(), claim.name());
        }
        for comp in plan.comparisons.iter().filter(|c| c.claim == claim && c.not_applicable.is_none()) {
            let m = comp.measure(records, chance);
            let _ = writeln!(w, "{}: per seed, {} / {} / effect\n", comp.title, comp.control.2, comp.ablated.2);
            let scale = if comp.control.1.is_error() { 100.0 } else { 1.0 };
            for ((seed, c), a) in m.seeds.iter().zip(&m.control).zip(&m.ablated) {
                let mark = |v: &Value| if v.censored { ">= " } else { "" };
                let _ = writeln!(
                    w,
                    "- seed {seed}: {}{:.2} / {}{:.2} / {:+.2}",
                    mark(c),
                    c.value * scale,
                    mark(a),
                    a.value * scale,
                    (a.value - c.value) * scale
                );
            }
            let _ = writeln!(w);
        }
        if claim == Claim::Tencrop && plan.data.format != DataFormat::ImageFolder {
            let _ = writeln!(
                w,
                "The images come at the network's input size, so the four corner crops and the centre crop are the \
                 whole image: ten-crop averaging here averages the image and its mirror.\n"
            );
        }
    }
    let _ = writeln!(w, "## Runs\n");
    let _ = writeln!(w, "| run | final training error | final held-out error | gap | training seconds | result |");
    let _ = writeln!(w, "|---|---|---|---|---|---|");
    for r in records {
        let last = r.epochs.last();
        let train = last.map(|e| e.train.top1_error);
        let held = r.held_out.map(|m| m.top1_error);
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v));
        let gap = match (held, train) {
            (Some(h), Some(t)) => format!("{:+.2} points", 100.0 * (h - t)),
            _ => "-".to_string(),
        };
        let seconds: f64 = r.epochs.iter().map(|e| e.seconds).sum();
        let result = r.failure.clone().unwrap_or_else(|| "finished".to_string());
        let _ = writeln!(w, "| {} | {} | {} | {gap} | {seconds:.0} | {result} |", r.name, pct(train), pct(held));
    }
    let _ = writeln!(
        w,
        "\nThe training error is the running error over each epoch's batches, with augmentation and dropout \
         active (as the paper reports it); the held-out error is the centre crop. Raw figures: `runs.jsonl` \
         (every epoch record of every run), `epochs.csv` (the same as a table), each run's folder under `runs/`."
    );
    out
}

/// Draws one PNG per claim (its arms' curves) for the claims with finished runs.
pub(super) fn plot_claims(plan: &Plan, records: &[RunRecord]) -> AnyResult {
    for &claim in &plan.spec.claims {
        let mut arms: Vec<(Variant, &str)> = Vec::new();
        for comp in plan.comparisons.iter().filter(|c| c.claim == claim && c.not_applicable.is_none()) {
            for (v, _, label) in [comp.control, comp.ablated] {
                if !arms.iter().any(|(a, _)| *a == v) {
                    arms.push((v, label));
                }
            }
        }
        let curves: Vec<ArmCurves> = arms
            .iter()
            .map(|&(v, label)| ArmCurves {
                label: label.to_string(),
                runs: records.iter().filter(|r| r.variant == v).map(RunRecord::curve).collect(),
            })
            .filter(|a| !a.runs.is_empty())
            .collect();
        if curves.is_empty() {
            continue;
        }
        let title = format!("{}: top-1 error, one line per seed", claim.name());
        plot_comparison(&title, &curves, &plan.dir.join(format!("{}.png", claim.name())))?;
    }
    Ok(())
}
