//! Progress bars for training and evaluation (indicatif), or plain lines with `--quiet`.

use alexnet::{BatchReport, EpochRecord, Observer, SplitMetrics};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// An epoch bar over a batch bar, or nothing but one line per epoch when quiet.
pub struct Bars {
    quiet: bool,
    multi: MultiProgress,
    epoch: Option<ProgressBar>,
    batch: Option<ProgressBar>,
    eval: Option<ProgressBar>,
}

impl Bars {
    /// Bars on stderr (hidden when `quiet` or when stderr is not a terminal).
    pub fn new(quiet: bool) -> Self {
        let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        Self { quiet, multi: MultiProgress::with_draw_target(target), epoch: None, batch: None, eval: None }
    }

    /// Removes the bars.
    pub fn finish(&mut self) {
        for bar in [self.batch.take(), self.eval.take(), self.epoch.take()].into_iter().flatten() {
            bar.finish_and_clear();
        }
    }

    fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            println!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}

/// Loss and error rates, labelled as such: `loss 0.4102, top-1 error 14.20%, top-5 error 1.10%`.
fn split_line(m: &SplitMetrics) -> String {
    format!("loss {:.4}, top-1 error {:.2}%, top-5 error {:.2}%", m.loss, 100.0 * m.top1_error, 100.0 * m.top5_error)
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).expect("valid template").progress_chars("=> ")
}

impl Observer for Bars {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, batches: usize) {
        let bar = self.epoch.get_or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(epochs as u64));
            b.set_style(style("epoch {pos}/{len} [{bar:30}] elapsed {elapsed_precise} eta {eta_precise}"));
            b
        });
        bar.set_position(epoch as u64);
        if let Some(old) = self.batch.take() {
            old.finish_and_clear();
        }
        let b = self.multi.add(ProgressBar::new(batches as u64));
        b.set_style(style("batch {pos}/{len} [{bar:30}] {msg} eta {eta}"));
        self.batch = Some(b);
    }

    fn batch_end(&mut self, r: &BatchReport) {
        if let Some(b) = &self.batch {
            b.set_position(r.batch as u64 + 1);
            b.set_message(format!("loss {:.4} lr {:.2e} {:.0} img/s", r.loss, r.lr, r.images_per_sec));
        }
    }

    fn epoch_end(&mut self, r: &EpochRecord) {
        if let Some(b) = &self.epoch {
            b.set_position(r.epoch as u64);
        }
        let held_out = [("val", r.val), ("test", r.test)]
            .into_iter()
            .filter_map(|(name, m)| m.map(|m| format!(" | {name} {}", split_line(&m))))
            .collect::<String>();
        self.println(&format!(
            "epoch {}: train {} (running, augmented){held_out} | lr {:.2e}, {:.0} img/s, {:.0} s",
            r.epoch,
            split_line(&r.train),
            r.lr,
            r.images_per_sec,
            r.seconds
        ));
    }

    fn eval_start(&mut self, what: &str, batches: usize) {
        let b = self.multi.add(ProgressBar::new(batches as u64));
        b.set_style(style("{msg} {pos}/{len} [{bar:30}] eta {eta}"));
        b.set_message(what.to_string());
        self.eval = Some(b);
    }

    fn eval_batch(&mut self) {
        if let Some(b) = &self.eval {
            b.inc(1);
        }
    }

    fn eval_end(&mut self) {
        if let Some(b) = self.eval.take() {
            b.finish_and_clear();
        }
    }

    fn note(&mut self, message: &str) {
        if !self.quiet || !message.starts_with("checkpoint") {
            self.println(message);
        }
    }
}
