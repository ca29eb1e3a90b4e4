//! Top-1/top-5 error, per-epoch records (`metrics.jsonl`) and per-step scalars
//! (`steps.jsonl`), each an append-only JSON-lines log.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The rank of `label` among `scores` (0 = highest). Ties count against the label only
/// for classes with a lower index, so the rank is deterministic.
pub fn rank_of(scores: &[f32], label: usize) -> usize {
    let target = scores[label];
    scores.iter().enumerate().filter(|&(j, &s)| s > target || (s == target && j < label)).count()
}

/// Counts of correct top-1 and top-5 predictions over many rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TopK {
    /// Rows seen.
    pub count: u64,
    /// Rows whose label has rank 0.
    pub top1_correct: u64,
    /// Rows whose label has rank < 5.
    pub top5_correct: u64,
}

impl TopK {
    /// Adds `batch` rows of `classes` scores (logits or probabilities) with their labels.
    pub fn add_batch(&mut self, scores: &[f32], labels: &[usize], classes: usize) {
        assert_eq!(scores.len(), labels.len() * classes, "scores and labels disagree");
        for (row, &label) in scores.chunks_exact(classes).zip(labels) {
            let rank = rank_of(row, label);
            self.count += 1;
            self.top1_correct += u64::from(rank == 0);
            self.top5_correct += u64::from(rank < 5);
        }
    }

    /// Adds `rows` rows of which `top1` had the label ranked first and `top5` among the first
    /// five (counts ranked on the device, as [`TopK::add_batch`] ranks them).
    pub fn add_counts(&mut self, rows: usize, top1: usize, top5: usize) {
        assert!(top1 <= top5 && top5 <= rows, "counts {top1} <= {top5} <= {rows} violated");
        self.count += rows as u64;
        self.top1_correct += top1 as u64;
        self.top5_correct += top5 as u64;
    }

    /// Adds another tally's counts (another batch, another replica's share).
    pub fn merge(&mut self, other: &TopK) {
        self.count += other.count;
        self.top1_correct += other.top1_correct;
        self.top5_correct += other.top5_correct;
    }

    /// Top-1 error in [0, 1].
    pub fn top1_error(&self) -> f64 {
        1.0 - self.top1_correct as f64 / self.count.max(1) as f64
    }

    /// Top-5 error in [0, 1].
    pub fn top5_error(&self) -> f64 {
        1.0 - self.top5_correct as f64 / self.count.max(1) as f64
    }
}

/// Loss and error of one pass over a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitMetrics {
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Top-1 error in [0, 1].
    pub top1_error: f64,
    /// Top-5 error in [0, 1].
    pub top5_error: f64,
    /// Images evaluated.
    pub images: u64,
}

impl SplitMetrics {
    /// The metrics of a pass whose losses sum to `loss_sum` over the samples `topk` counts.
    pub fn from_sums(loss_sum: f64, topk: &TopK) -> Self {
        Self {
            loss: loss_sum / topk.count.max(1) as f64,
            top1_error: topk.top1_error(),
            top5_error: topk.top5_error(),
            images: topk.count,
        }
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (1-based: the number of epochs finished).
    pub epoch: usize,
    /// Global step at the end of the epoch.
    pub step: u64,
    /// The learning rate at the end of the epoch.
    pub lr: f32,
    /// Training loss and error (running, with dropout and augmentation, as the paper reports).
    pub train: SplitMetrics,
    /// Validation loss and error (centre crop), when there is a validation set.
    pub val: Option<SplitMetrics>,
    /// Test loss and error (centre crop) after this epoch, evaluated every epoch when there
    /// is a test set but no validation set, so that a held-out curve is drawn; never used
    /// for a decision (schedule, best checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<SplitMetrics>,
    /// Training throughput.
    pub images_per_sec: f64,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

/// One line of `steps.jsonl`: scalars every `log_every_steps` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Global step (batches trained) after this record's last step.
    pub step: u64,
    /// Training progress in epochs (2.5: half way through the third epoch).
    pub epoch: f64,
    /// Mean training loss over the steps since the previous record.
    pub loss: f64,
    /// The learning rate of the last step.
    pub lr: f32,
    /// Training images per second over the steps since the previous record.
    pub images_per_sec: f64,
}

/// A record of a JSON-lines log, ordered by its position (epoch or step) so that a resumed
/// run can drop what follows its checkpoint.
pub trait LogRecord: Serialize + DeserializeOwned {
    /// The pause point after an append (crash tests stop the process there).
    const APPENDED: &'static str;
    /// The epoch or step the record ends at.
    fn position(&self) -> u64;
}

impl LogRecord for EpochRecord {
    const APPENDED: &'static str = "metrics-appended";
    fn position(&self) -> u64 {
        self.epoch as u64
    }
}

impl LogRecord for StepRecord {
    const APPENDED: &'static str = "steps-appended";
    fn position(&self) -> u64 {
        self.step
    }
}

/// Appends records to a JSON-lines file, one object a line.
#[derive(Debug)]
pub struct JsonlLog<R> {
    path: PathBuf,
    records: std::marker::PhantomData<R>,
}

/// The per-epoch log, `metrics.jsonl`.
pub type MetricsLog = JsonlLog<EpochRecord>;
/// The per-step log, `steps.jsonl`.
pub type StepLog = JsonlLog<StepRecord>;

impl<R: LogRecord> JsonlLog<R> {
    /// A log at `path` (created on the first append).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), records: std::marker::PhantomData }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (one write of the whole line, so a crash leaves at most a torn
    /// last line, which [`MetricsLog::truncate_after`] drops).
    pub fn append(&self, record: &R) -> Result<()> {
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(Error::io(&self.path))?;
        let mut line = serde_json::to_string(record).map_err(|e| Error::config(e.to_string()))?;
        line.push('\n');
        file.write_all(line.as_bytes()).map_err(Error::io(&self.path))?;
        crate::failpoint::pause_point(R::APPENDED, &record.position().to_string());
        Ok(())
    }

    /// Reads all records (for plots and resumed runs).
    pub fn read(&self) -> Result<Vec<R>> {
        self.parse(&self.text()?)
    }

    fn text(&self) -> Result<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io(&self.path)(e)),
        }
    }

    fn parse(&self, text: &str) -> Result<Vec<R>> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| Error::config(format!("{} line {}: {e}", self.path.display(), i + 1)))
            })
            .collect()
    }

    /// Keeps only the records at positions (epochs or steps) `<= position` (a resumed run
    /// rewrites what follows). A last line without its newline, torn by a crash while it
    /// was appended, is dropped.
    pub fn truncate_after(&self, position: u64) -> Result<()> {
        let text = self.text()?;
        let whole = if text.ends_with('\n') { &text[..] } else { &text[..text.rfind('\n').map_or(0, |i| i + 1)] };
        let kept: Vec<R> = self.parse(whole)?.into_iter().filter(|r| r.position() <= position).collect();
        let mut text = String::new();
        for r in &kept {
            text += &serde_json::to_string(r).map_err(|e| Error::config(e.to_string()))?;
            text.push('\n');
        }
        crate::atomic::write_atomic(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_and_topk_by_hand() {
        assert_eq!(rank_of(&[0.1, 0.5, 0.2], 1), 0);
        assert_eq!(rank_of(&[0.1, 0.5, 0.2], 2), 1);
        assert_eq!(rank_of(&[0.1, 0.5, 0.2], 0), 2);
        // Ties: the lower index wins.
        assert_eq!(rank_of(&[0.3, 0.3], 0), 0);
        assert_eq!(rank_of(&[0.3, 0.3], 1), 1);

        let mut t = TopK::default();
        // 6 classes; row 0 label ranked 0, row 1 label ranked 5, row 2 ranked 4.
        let scores = [
            9.0, 1.0, 2.0, 3.0, 4.0, 5.0, //
            9.0, 1.0, 2.0, 3.0, 4.0, 5.0, //
            9.0, 1.0, 2.0, 3.0, 4.0, 5.0,
        ];
        t.add_batch(&scores, &[0, 1, 2], 6);
        assert_eq!(t, TopK { count: 3, top1_correct: 1, top5_correct: 2 });
        assert!((t.top1_error() - 2.0 / 3.0).abs() < 1e-12);
        assert!((t.top5_error() - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn jsonl_round_trip_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let log = MetricsLog::new(dir.path().join("metrics.jsonl"));
        assert!(log.read().unwrap().is_empty());
        let split = SplitMetrics { loss: 1.5, top1_error: 0.5, top5_error: 0.1, images: 100 };
        for epoch in 1..=3 {
            let rec = EpochRecord {
                epoch,
                step: epoch as u64 * 10,
                lr: 0.01,
                train: split,
                val: Some(split),
                test: None,
                images_per_sec: 123.0,
                seconds: 2.0,
            };
            log.append(&rec).unwrap();
        }
        assert_eq!(log.read().unwrap().len(), 3);
        log.truncate_after(2).unwrap();
        assert_eq!(log.read().unwrap().len(), 2);
        // A crash while appending tears the last line: truncating drops it.
        let mut text = std::fs::read_to_string(log.path()).unwrap();
        text.push_str("{\"epoch\": 3, \"st");
        std::fs::write(log.path(), text).unwrap();
        assert!(log.read().is_err());
        log.truncate_after(1).unwrap();
        let left = log.read().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].epoch, 1);
        assert_eq!(left[0].val, Some(split));
    }
}
