//! Learning-rate schedules: constant, step, cosine, and the paper's reduce-on-plateau.
//!
//! The paper: "divide the learning rate by 10 when the validation error rate stopped
//! improving with the current learning rate ... reduced three times prior to termination."
//! [`Schedule::Plateau`] does exactly that, with the patience configurable, and asks the
//! trainer to stop when the error stalls again after the last reduction.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the learning rate changes over training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `factor` every `every` epochs.
    Step {
        /// Epochs between reductions.
        every: usize,
        /// Multiplier (e.g. 0.1).
        factor: f32,
    },
    /// Half a cosine from the base rate down to `base * final_factor` over all epochs,
    /// evaluated every step.
    Cosine {
        /// The final rate as a fraction of the base rate.
        final_factor: f32,
    },
    /// Multiply by `factor` when the validation error has not improved by more than
    /// `min_delta` for `patience` epochs; at most `max_reductions` times, after which a
    /// further stall ends training.
    Plateau {
        /// Epochs without improvement tolerated.
        patience: usize,
        /// Multiplier (paper: 0.1).
        factor: f32,
        /// Reductions before termination (paper: 3).
        max_reductions: usize,
        /// Smallest decrease of the error (a fraction, e.g. 0.001) that counts as improving.
        min_delta: f64,
    },
}

impl Schedule {
    /// The paper's schedule: divide by 10 on a plateau, three times; patience 1 epoch.
    pub fn paper() -> Self {
        Schedule::Plateau { patience: 1, factor: 0.1, max_reductions: 3, min_delta: 0.0 }
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        let factor_ok = |f: f32| f.is_finite() && f > 0.0 && f <= 1.0;
        match *self {
            Schedule::Constant => Ok(()),
            Schedule::Step { every, factor } if every > 0 && factor_ok(factor) => Ok(()),
            Schedule::Cosine { final_factor } if (0.0..=1.0).contains(&final_factor) => Ok(()),
            Schedule::Plateau { patience, factor, min_delta, .. }
                if patience > 0 && factor_ok(factor) && min_delta >= 0.0 =>
            {
                Ok(())
            }
            other => Err(Error::config(format!(
                "invalid schedule {other:?}: factors must lie in (0, 1], `every` and `patience` be at least 1"
            ))),
        }
    }
}

/// What the schedule decided at the end of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochDecision {
    /// The rate was reduced for the next epoch.
    pub reduced: bool,
    /// Training should end (plateau after the last allowed reduction).
    pub stop: bool,
}

/// A schedule with its state; serialised into checkpoints so a resumed run continues it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrScheduler {
    /// The schedule.
    pub schedule: Schedule,
    /// The base (initial) rate.
    pub base_lr: f32,
    /// Total epochs planned (for cosine).
    pub epochs: usize,
    /// The current rate for step-wise schedules (constant, step, plateau).
    pub current: f32,
    /// Reductions done so far (step and plateau).
    pub reductions: usize,
    /// The best validation error so far (plateau).
    pub best_error: Option<f64>,
    /// Epochs since the best validation error (plateau).
    pub epochs_since_best: usize,
}

impl LrScheduler {
    /// A fresh scheduler.
    pub fn new(schedule: Schedule, base_lr: f32, epochs: usize) -> Result<Self> {
        schedule.validate()?;
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(Error::config(format!("learning rate {base_lr} must be positive")));
        }
        Ok(Self { schedule, base_lr, epochs, current: base_lr, reductions: 0, best_error: None, epochs_since_best: 0 })
    }

    /// The rate at a point of training, `epoch_progress` = epochs done including the
    /// fraction of the current one.
    pub fn lr(&self, epoch_progress: f64) -> f32 {
        match self.schedule {
            Schedule::Cosine { final_factor } => {
                let t = (epoch_progress / self.epochs.max(1) as f64).clamp(0.0, 1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                (f64::from(self.base_lr) * (f64::from(final_factor) + (1.0 - f64::from(final_factor)) * cos)) as f32
            }
            _ => self.current,
        }
    }

    /// Updates the state after epoch `epoch` (0-based) finished with `val_error` (top-1
    /// error on the validation set, if there is one).
    pub fn end_epoch(&mut self, epoch: usize, val_error: Option<f64>) -> EpochDecision {
        let mut decision = EpochDecision { reduced: false, stop: false };
        match self.schedule {
            Schedule::Constant | Schedule::Cosine { .. } => {}
            Schedule::Step { every, factor } => {
                if (epoch + 1).is_multiple_of(every) {
                    self.current *= factor;
                    self.reductions += 1;
                    decision.reduced = true;
                }
            }
            Schedule::Plateau { patience, factor, max_reductions, min_delta } => {
                let Some(err) = val_error else { return decision };
                let improved = self.best_error.is_none_or(|best| err < best - min_delta);
                if improved {
                    self.best_error = Some(err);
                    self.epochs_since_best = 0;
                } else {
                    self.epochs_since_best += 1;
                    if self.epochs_since_best >= patience {
                        if self.reductions < max_reductions {
                            self.current *= factor;
                            self.reductions += 1;
                            self.epochs_since_best = 0;
                            decision.reduced = true;
                        } else {
                            decision.stop = true;
                        }
                    }
                }
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_and_step() {
        let mut c = LrScheduler::new(Schedule::Constant, 0.01, 10).unwrap();
        for e in 0..10 {
            assert_eq!(c.end_epoch(e, Some(0.5)), EpochDecision { reduced: false, stop: false });
            assert_eq!(c.lr(e as f64), 0.01);
        }
        let mut s = LrScheduler::new(Schedule::Step { every: 3, factor: 0.5 }, 1.0, 10).unwrap();
        let rates: Vec<f32> = (0..7)
            .map(|e| {
                let lr = s.lr(e as f64);
                s.end_epoch(e, None);
                lr
            })
            .collect();
        assert_eq!(rates, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25]);
    }

    #[test]
    fn cosine_ends_at_the_final_factor() {
        let c = LrScheduler::new(Schedule::Cosine { final_factor: 0.1 }, 1.0, 4).unwrap();
        assert_eq!(c.lr(0.0), 1.0);
        assert!((c.lr(2.0) - 0.55).abs() < 1e-6);
        assert!((c.lr(4.0) - 0.1).abs() < 1e-6);
        assert!((c.lr(9.0) - 0.1).abs() < 1e-6);
    }

    /// Patience 2: the rate drops after two epochs without improvement, three times, and
    /// the fourth stall asks to stop.
    #[test]
    fn plateau_divides_by_ten_three_times_then_stops() {
        let schedule = Schedule::Plateau { patience: 2, factor: 0.1, max_reductions: 3, min_delta: 0.0 };
        let mut s = LrScheduler::new(schedule, 0.01, 100).unwrap();
        let errors = [0.9, 0.8, 0.8, 0.85, 0.7, 0.7, 0.7, 0.6, 0.6, 0.61, 0.5, 0.5, 0.5];
        let mut trace = Vec::new();
        for (e, &err) in errors.iter().enumerate() {
            let d = s.end_epoch(e, Some(err));
            trace.push((d.reduced, d.stop, s.reductions));
        }
        let expected = [
            (false, false, 0), // 0.9 best
            (false, false, 0), // 0.8 best
            (false, false, 0), // stall 1
            (true, false, 1),  // stall 2 -> /10
            (false, false, 1), // 0.7 best
            (false, false, 1), // stall 1
            (true, false, 2),  // stall 2 -> /10
            (false, false, 2), // 0.6 best
            (false, false, 2), // stall 1
            (true, false, 3),  // stall 2 -> /10 (third)
            (false, false, 3), // 0.5 best
            (false, false, 3), // stall 1
            (false, true, 3),  // stall 2 after the last reduction: stop
        ];
        assert_eq!(trace, expected);
        assert!((s.lr(0.0) - 1e-5).abs() < 1e-10);
    }

    #[test]
    fn plateau_min_delta_and_missing_validation() {
        let schedule = Schedule::Plateau { patience: 1, factor: 0.1, max_reductions: 3, min_delta: 0.01 };
        let mut s = LrScheduler::new(schedule, 1.0, 10).unwrap();
        s.end_epoch(0, Some(0.5));
        // 0.495 is not better by more than 0.01: a stall.
        assert!(s.end_epoch(1, Some(0.495)).reduced);
        // No validation set: nothing happens.
        assert!(!s.end_epoch(2, None).reduced);
        assert_eq!(s.reductions, 1);
    }

    #[test]
    fn invalid_schedules_are_rejected() {
        assert!(LrScheduler::new(Schedule::Step { every: 0, factor: 0.1 }, 0.1, 1).is_err());
        assert!(LrScheduler::new(Schedule::Step { every: 1, factor: 2.0 }, 0.1, 1).is_err());
        assert!(LrScheduler::new(Schedule::Constant, -0.1, 1).is_err());
        assert!(LrScheduler::new(Schedule::Constant, f32::NAN, 1).is_err());
        assert!(LrScheduler::new(Schedule::paper(), 0.01, 90).is_ok());
    }
}
