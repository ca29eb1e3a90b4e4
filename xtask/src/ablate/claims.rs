//! The claims as data: the factors an arm changes ([`Variant`]) and its layer list, the
//! comparisons each claim makes, and what a finished run measured ([`RunRecord`]).

use std::collections::BTreeSet;

use alexnet::plot::CurvePoint;
use alexnet::{DataFormat, EpochRecord, LayerSpec, Padding, SplitMetrics};
use alexnet_core::{Activation, LrnParams, Rounding};
use clap::ValueEnum;
use serde::{Deserialize, Serialize};

/// A claim of the paper, as `--claims` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Claim {
    /// ReLU trains several times faster than tanh (Figure 1); sigmoid is measured too.
    Relu,
    /// Local response normalisation lowers the error.
    Lrn,
    /// Overlapping pooling (3/2) lowers the error against 2/2.
    Overlap,
    /// PCA colour noise lowers the error.
    Pca,
    /// Dropout prevents overfitting and slows convergence.
    Dropout,
    /// Random crops and flips prevent overfitting.
    Augment,
    /// Averaging ten crops at test time lowers the error against the centre crop.
    Tencrop,
}

impl Claim {
    pub(super) const ALL: [Claim; 7] =
        [Claim::Relu, Claim::Lrn, Claim::Overlap, Claim::Pca, Claim::Dropout, Claim::Augment, Claim::Tencrop];

    /// The name `--claims` takes, and the claim's PNG is called.
    pub(super) fn name(self) -> &'static str {
        match self {
            Claim::Relu => "relu",
            Claim::Lrn => "lrn",
            Claim::Overlap => "overlap",
            Claim::Pca => "pca",
            Claim::Dropout => "dropout",
            Claim::Augment => "augment",
            Claim::Tencrop => "tencrop",
        }
    }
}

/// The factors the arms differ in; [`PAPER`] is the paper's choice of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Variant {
    pub(super) activation: Activation,
    pub(super) lrn: bool,
    pub(super) overlap: bool,
    pub(super) pca: bool,
    pub(super) dropout: bool,
    pub(super) augment: bool,
}

/// The paper's network: ReLU, LRN, overlapping pooling, PCA noise, dropout, crops and flips.
pub(super) const PAPER: Variant =
    Variant { activation: Activation::Relu, lrn: true, overlap: true, pca: true, dropout: true, augment: true };

impl Variant {
    /// The variant as the trainer runs it on data with (`has_pca`) or without PCA noise:
    /// without crops and flips there is no PCA noise either (the pipeline's centre crop).
    pub(super) fn effective(self, has_pca: bool) -> Self {
        Self { pca: self.pca && self.augment && has_pca, ..self }
    }

    /// How it differs from the paper's network (`paper`, effective): `paper` when it does not.
    pub(super) fn name(&self, paper: &Variant) -> String {
        let mut parts = Vec::new();
        match self.activation {
            Activation::Relu => {}
            Activation::Tanh => parts.push("tanh"),
            Activation::Sigmoid => parts.push("sigmoid"),
        }
        if !self.lrn {
            parts.push("no-lrn");
        }
        if !self.overlap {
            parts.push("pool-2-2");
        }
        if !self.augment {
            parts.push("no-crops-flips");
        } else if paper.pca && !self.pca {
            parts.push("no-pca");
        }
        if !self.dropout {
            parts.push("no-dropout");
        }
        if parts.is_empty() { "paper".to_string() } else { parts.join("+") }
    }

    /// The layer list: three convolutions (32, 32 and 64 maps, as cuda-convnet's CIFAR-10
    /// net) and two dense layers, a small AlexNet: LRN after the first two convolutions,
    /// then max pooling, dropout on the hidden dense layer.
    /// conv1 is 4x4 with padding 1, so that the maps it and conv2 give have odd sides
    /// (28 -> 27 -> 13 -> 13 -> 6; 32 -> 31 -> 15 -> 15 -> 7), where 3/2 and 2/2 pooling
    /// give the same size, as the paper's 55 -> 27: the pooling arms have the same shapes.
    pub(super) fn layers(&self, classes: usize) -> Vec<LayerSpec> {
        let conv = |name: &str, out: usize, kernel: usize, pad: usize, bias: f32| LayerSpec::Conv {
            name: name.to_string(),
            out_channels: out,
            kernel,
            stride: 1,
            padding: Padding::Explicit(pad),
            groups: 1,
            rounding: Rounding::Floor,
            bias_init: bias,
        };
        let dense = |name: &str, out: usize, bias: f32| LayerSpec::Dense {
            name: name.to_string(),
            out_features: out,
            bias_init: bias,
        };
        let act = LayerSpec::Activation { function: self.activation };
        let (window, stride) = if self.overlap { (3, 2) } else { (2, 2) };
        let pool = LayerSpec::MaxPool { window, stride };
        let lrn = self.lrn.then_some(LayerSpec::Lrn { params: LrnParams::paper(), groups: 1 });
        let mut layers = vec![conv("conv1", 32, 4, 1, 0.0), act.clone()];
        layers.extend(lrn.clone());
        layers.extend([pool.clone(), conv("conv2", 32, 5, 2, 1.0), act.clone()]);
        layers.extend(lrn);
        layers.extend([pool, conv("conv3", 64, 3, 1, 0.0), act.clone(), LayerSpec::Flatten, dense("fc4", 128, 1.0)]);
        layers.push(act);
        if self.dropout {
            layers.push(LayerSpec::Dropout { p: 0.5 });
        }
        layers.push(dense("fc5", classes, 0.0));
        layers
    }
}

/// What a comparison measures on one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Metric {
    /// Epochs until the running training top-1 error first reaches this fraction.
    EpochsToTrainError(f64),
    /// The same in seconds of training.
    SecondsToTrainError(f64),
    /// The final held-out top-1 error (centre crop).
    HeldOutTop1,
    /// The final held-out top-5 error (centre crop).
    HeldOutTop5,
    /// The epoch of the lowest held-out top-1 error (where early stopping would stop).
    BestEpoch,
    /// The final held-out top-1 error of ten-crop averaging.
    TenCropTop1,
}

impl Metric {
    pub(super) fn is_error(self) -> bool {
        matches!(self, Metric::HeldOutTop1 | Metric::HeldOutTop5 | Metric::TenCropTop1)
    }
}

/// A measured value; `censored`: a lower bound (the threshold was not reached in the run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Value {
    pub(super) value: f64,
    pub(super) censored: bool,
}

/// Which way the paper says the ablated arm's figure moves against the paper's arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expect {
    Higher,
    Lower,
}

/// One row of the report: the paper's arm against an ablated arm.
#[derive(Debug, Clone)]
pub(super) struct Comparison {
    pub(super) claim: Claim,
    pub(super) title: &'static str,
    /// The paper's figure, in words.
    pub(super) paper: &'static str,
    /// The paper's arm: variant, metric, label.
    pub(super) control: (Variant, Metric, &'static str),
    /// The ablated arm.
    pub(super) ablated: (Variant, Metric, &'static str),
    pub(super) expect: Expect,
    /// Why the claim cannot be measured on this data, if it cannot.
    pub(super) not_applicable: Option<String>,
}

/// The comparisons of `claims` on data with (`has_pca`) or without PCA noise, whose
/// layout is `format`.
pub(super) fn comparisons(claims: &[Claim], has_pca: bool, format: DataFormat) -> Vec<Comparison> {
    let paper = PAPER.effective(has_pca);
    let with = |change: fn(&mut Variant)| {
        let mut v = paper;
        change(&mut v);
        v.effective(has_pca)
    };
    let row = |claim, title, paper_text, control: (Variant, Metric, &'static str), ablated, expect| Comparison {
        claim,
        title,
        paper: paper_text,
        control,
        ablated,
        expect,
        not_applicable: None,
    };
    let top1 = Metric::HeldOutTop1;
    let mut rows = Vec::new();
    for &claim in claims {
        match claim {
            Claim::Relu => {
                let to25 = Metric::EpochsToTrainError(0.25);
                rows.push(row(
                    claim,
                    "ReLU vs tanh: epochs to 25% training error",
                    "tanh needs about 6x the epochs of ReLU (CIFAR-10, four-layer net, Figure 1)",
                    (paper, to25, "ReLU"),
                    (with(|v| v.activation = Activation::Tanh), to25, "tanh"),
                    Expect::Higher,
                ));
                rows.push(row(
                    claim,
                    "ReLU vs sigmoid: epochs to 25% training error",
                    "not measured (sigmoid saturates like tanh: slower expected)",
                    (paper, to25, "ReLU"),
                    (with(|v| v.activation = Activation::Sigmoid), to25, "sigmoid"),
                    Expect::Higher,
                ));
            }
            Claim::Lrn => rows.push(row(
                claim,
                "Local response normalisation: held-out top-1 error",
                "13% test error without, 11% with: +2 points without (CIFAR-10, four-layer net)",
                (paper, top1, "with LRN"),
                (with(|v| v.lrn = false), top1, "without"),
                Expect::Higher,
            )),
            Claim::Overlap => {
                let top5 = Metric::HeldOutTop5;
                for (title, text, metric) in [
                    (
                        "Overlapping pooling: held-out top-1 error",
                        "+0.4 points top-1 with 2/2 pooling (ImageNet)",
                        top1,
                    ),
                    (
                        "Overlapping pooling: held-out top-5 error",
                        "+0.3 points top-5 with 2/2 pooling (ImageNet)",
                        top5,
                    ),
                ] {
                    rows.push(row(
                        claim,
                        title,
                        text,
                        (paper, metric, "3/2 pooling"),
                        (with(|v| v.overlap = false), metric, "2/2"),
                        Expect::Higher,
                    ));
                }
            }
            Claim::Pca => {
                let mut r = row(
                    claim,
                    "PCA colour noise: held-out top-1 error",
                    "over 1 point higher top-1 without (ImageNet)",
                    (paper, top1, "with PCA noise"),
                    (with(|v| v.pca = false), top1, "without"),
                    Expect::Higher,
                );
                if !has_pca {
                    r.not_applicable = Some(match format {
                        DataFormat::Idx => "the images are grey: there is no colour to perturb".to_string(),
                        _ => "this layout loads through the small-image pipeline (shifts and flips, no PCA noise); \
                              pass CIFAR-10 as class folders"
                            .to_string(),
                    });
                }
                rows.push(r);
            }
            Claim::Dropout => {
                rows.push(row(
                    claim,
                    "Dropout: held-out top-1 error",
                    "substantial overfitting without (no figure)",
                    (paper, top1, "with dropout"),
                    (with(|v| v.dropout = false), top1, "without"),
                    Expect::Higher,
                ));
                rows.push(row(
                    claim,
                    "Dropout: epoch of the lowest held-out error",
                    "about 2x the iterations to converge with it",
                    (paper, Metric::BestEpoch, "with dropout"),
                    (with(|v| v.dropout = false), Metric::BestEpoch, "without"),
                    Expect::Lower,
                ));
            }
            Claim::Augment => rows.push(row(
                claim,
                "Crops and flips: held-out top-1 error",
                "substantial overfitting without (no figure)",
                // Both arms without PCA noise (which needs the crops' pipeline), so that
                // they differ in the crops and flips only.
                (with(|v| v.pca = false), top1, "with crops and flips"),
                (with(|v| v.augment = false), top1, "without"),
                Expect::Higher,
            )),
            Claim::Tencrop => rows.push(row(
                claim,
                "Ten-crop testing: held-out top-1 error",
                "used for the paper's test figures (no separate figure)",
                (paper, Metric::TenCropTop1, "ten crops"),
                (paper, top1, "centre crop"),
                Expect::Higher,
            )),
        }
    }
    rows
}

/// One finished (or failed) run, as `runs.jsonl` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunRecord {
    pub(super) name: String,
    pub(super) variant: Variant,
    pub(super) seed: u64,
    /// The trainer's per-epoch records (training seconds per epoch, evaluation excluded).
    pub(super) epochs: Vec<EpochRecord>,
    /// Held-out metrics of the final weights, centre crop.
    pub(super) held_out: Option<SplitMetrics>,
    /// The same with ten-crop averaging (the paper's network, when `tencrop` is measured).
    pub(super) ten_crop: Option<SplitMetrics>,
    /// Why the run failed (a diverged loss), if it did.
    pub(super) failure: Option<String>,
    /// Wall time of the run, evaluation included.
    pub(super) wall_seconds: f64,
}

/// The held-out split of an epoch record: the test split, else the validation split.
pub(super) fn held_out(record: &EpochRecord) -> Option<SplitMetrics> {
    record.test.or(record.val)
}

impl RunRecord {
    /// The run's curve: epochs, cumulative training seconds, errors.
    pub(super) fn curve(&self) -> Vec<CurvePoint> {
        let mut seconds = 0.0;
        self.epochs
            .iter()
            .map(|r| {
                seconds += r.seconds;
                CurvePoint {
                    epoch: r.epoch as f64,
                    seconds,
                    train_error: r.train.top1_error,
                    held_out_error: held_out(r).map(|m| m.top1_error),
                }
            })
            .collect()
    }

    /// `metric` of this run (`chance`: the training error before training), or `None` when
    /// the run failed or lacks it.
    pub(super) fn measure(&self, metric: Metric, chance: f64) -> Option<Value> {
        if self.failure.is_some() {
            return None;
        }
        let exact = |value: f64| Some(Value { value, censored: false });
        match metric {
            Metric::EpochsToTrainError(threshold) | Metric::SecondsToTrainError(threshold) => {
                let seconds = matches!(metric, Metric::SecondsToTrainError(_));
                let points: Vec<(f64, f64)> = std::iter::once((0.0, chance))
                    .chain(self.curve().iter().map(|p| (if seconds { p.seconds } else { p.epoch }, p.train_error)))
                    .collect();
                match first_crossing(&points, threshold) {
                    Some(x) => exact(x),
                    None => Some(Value { value: points.last().map_or(0.0, |p| p.0), censored: true }),
                }
            }
            Metric::HeldOutTop1 => self.held_out.and_then(|m| exact(m.top1_error)),
            Metric::HeldOutTop5 => self.held_out.and_then(|m| exact(m.top5_error)),
            Metric::TenCropTop1 => self.ten_crop.and_then(|m| exact(m.top1_error)),
            Metric::BestEpoch => {
                let best = self
                    .epochs
                    .iter()
                    .filter_map(|r| held_out(r).map(|m| (r.epoch, m.top1_error)))
                    .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))?;
                exact(best.0 as f64)
            }
        }
    }
}

/// The first `x` at which the polyline through `points` (in order of `x`) is at or below
/// `threshold`, interpolated linearly between points; `None` if it never is.
pub(super) fn first_crossing(points: &[(f64, f64)], threshold: f64) -> Option<f64> {
    let (first_x, first_y) = *points.first()?;
    if first_y <= threshold {
        return Some(first_x);
    }
    points.windows(2).find(|w| w[1].1 <= threshold).map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        x0 + (x1 - x0) * (y0 - threshold) / (y0 - y1)
    })
}

/// A comparison's per-seed figures.
pub(super) struct Measured {
    pub(super) seeds: Vec<u64>,
    pub(super) control: Vec<Value>,
    pub(super) ablated: Vec<Value>,
    /// Seeds with both runs recorded where one failed (diverged) or lacks the figure.
    pub(super) failed_seeds: Vec<u64>,
    /// For epoch counts to a training error: the error they count to.
    pub(super) threshold: Option<f64>,
    /// For epoch counts to a training error: the same in seconds, per seed.
    pub(super) seconds: Option<(Vec<Value>, Vec<Value>)>,
}

impl Comparison {
    /// The per-seed figures of both arms in `records` (`chance`: the training error before
    /// training). An epoch count to a training error goes to the claim's threshold when
    /// every run reaches it, else to the lowest error that every run reaches (the highest
    /// of the runs' lowest), so that the runs are compared where all of them have been.
    pub(super) fn measure(&self, records: &[RunRecord], chance: f64) -> Measured {
        let seeds: BTreeSet<u64> = records.iter().map(|r| r.seed).collect();
        let mut pairs = Vec::new();
        let mut failed_seeds = Vec::new();
        for seed in seeds {
            let find = |v: Variant| records.iter().find(|r| r.seed == seed && r.variant == v);
            let (Some(c), Some(a)) = (find(self.control.0), find(self.ablated.0)) else { continue };
            if c.failure.is_some() || a.failure.is_some() {
                failed_seeds.push(seed);
            } else {
                pairs.push((seed, c, a));
            }
        }
        let (metric, threshold) = match self.control.1 {
            Metric::EpochsToTrainError(t) => {
                let lowest = |r: &RunRecord| r.epochs.iter().map(|e| e.train.top1_error).fold(f64::INFINITY, f64::min);
                let reached = pairs.iter().flat_map(|(_, c, a)| [lowest(c), lowest(a)]).fold(0.0f64, f64::max);
                let t = if reached <= t { t } else { reached };
                (Metric::EpochsToTrainError(t), Some(t))
            }
            other => (other, None),
        };
        let ablated_metric = if threshold.is_some() { metric } else { self.ablated.1 };
        let mut m = Measured {
            seeds: Vec::new(),
            control: Vec::new(),
            ablated: Vec::new(),
            failed_seeds,
            threshold,
            seconds: threshold.map(|_| (Vec::new(), Vec::new())),
        };
        for (seed, c, a) in pairs {
            match (c.measure(metric, chance), a.measure(ablated_metric, chance)) {
                (Some(cv), Some(av)) => {
                    m.seeds.push(seed);
                    m.control.push(cv);
                    m.ablated.push(av);
                    if let (Some(t), Some((cs, as_))) = (threshold, m.seconds.as_mut()) {
                        cs.extend(c.measure(Metric::SecondsToTrainError(t), chance));
                        as_.extend(a.measure(Metric::SecondsToTrainError(t), chance));
                    }
                }
                _ => m.failed_seeds.push(seed),
            }
        }
        m
    }
}
