//! Learning-rate schedules: constant, step, cosine, and the paper's reduce-on-plateau.
//!
//! The paper: "divide the learning rate by 10 when the validation error rate stopped
//! improving with the current learning rate ... reduced three times prior to termination."
//! [`Schedule::Plateau`] does exactly that, with the patience configurable, and asks the
//! trainer to stop when the error stalls again after the last reduction.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the learning rate changes over training.
///
/// In TOML (and JSON) a schedule with parameters is a table tagged by `kind`
/// (`{ kind = "step", every = 30, factor = 0.1 }`); one without is a plain string:
/// `"constant"`, or `"paper"` for [`Schedule::paper`]. [`FromStr`](std::str::FromStr) reads
/// the same forms (`--schedule constant`, `--schedule '{ kind = "cosine", final_factor = 0.02 }'`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", remote = "Self")]
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
    pub const fn paper() -> Self {
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

/// The schedules written as a plain string: `(name, schedule)`.
const NAMED: [(&str, Schedule); 2] = [("constant", Schedule::Constant), ("paper", Schedule::paper())];

impl Schedule {
    /// The schedule a plain string names.
    fn named(name: &str) -> Result<Self> {
        NAMED.iter().find(|(n, _)| *n == name).map(|&(_, s)| s).ok_or_else(|| {
            Error::config(format!(
                "unknown schedule `{name}`: plain names are constant and paper; step, cosine and plateau take \
                 parameters, e.g. {{ kind = \"step\", every = 30, factor = 0.1 }}"
            ))
        })
    }
}

impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match NAMED.iter().find(|(_, s)| s == self) {
            Some((name, _)) => serializer.serialize_str(name),
            None => Schedule::serialize(self, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        /// A plain name, or the table tagged by `kind`.
        struct NameOrTable;
        impl<'de> serde::de::Visitor<'de> for NameOrTable {
            type Value = Schedule;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a schedule name (\"constant\", \"paper\") or a table with `kind`")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> std::result::Result<Schedule, E> {
                Schedule::named(name).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Schedule, A::Error> {
                Schedule::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer.deserialize_any(NameOrTable)
    }
}

impl std::fmt::Display for Schedule {
    /// The form [`FromStr`](std::str::FromStr) reads: a plain name or an inline TOML table.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((name, _)) = NAMED.iter().find(|(_, s)| s == self) {
            return f.write_str(name);
        }
        match *self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::Step { every, factor } => write!(f, "{{ kind = \"step\", every = {every}, factor = {factor} }}"),
            Schedule::Cosine { final_factor } => write!(f, "{{ kind = \"cosine\", final_factor = {final_factor} }}"),
            Schedule::Plateau { patience, factor, max_reductions, min_delta } => write!(
                f,
                "{{ kind = \"plateau\", patience = {patience}, factor = {factor}, max_reductions = {max_reductions}, \
                 min_delta = {min_delta} }}"
            ),
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = Error;
    /// A plain name (`constant`, `paper`) or an inline TOML table (`{ kind = "step", ... }`).
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if !text.starts_with('{') {
            return Self::named(text);
        }
        #[derive(Deserialize)]
        struct Wrapper {
            schedule: Schedule,
        }
        let parsed: Wrapper = toml::from_str(&format!("schedule = {text}"))
            .map_err(|e| Error::config(format!("schedule `{text}`: {}", e.message())))?;
        parsed.schedule.validate()?;
        Ok(parsed.schedule)
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

    /// Every schedule round-trips through TOML, JSON (checkpoints) and the command line's
    /// form; parameterless ones are plain strings, tables still load.
    #[test]
    fn plain_names_and_tables_in_toml_json_and_flags() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Holder {
            schedule: Schedule,
        }
        let all = [
            Schedule::Constant,
            Schedule::paper(),
            Schedule::Step { every: 30, factor: 0.1 },
            Schedule::Cosine { final_factor: 0.02 },
            Schedule::Plateau { patience: 2, factor: 0.5, max_reductions: 1, min_delta: 0.001 },
        ];
        for schedule in all {
            let holder = Holder { schedule };
            let text = toml::to_string(&holder).unwrap();
            assert_eq!(toml::from_str::<Holder>(&text).unwrap(), holder, "{text}");
            let json = serde_json::to_string(&holder).unwrap();
            assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), holder, "{json}");
            // The command line's form, as `--help` shows it.
            let flag = schedule.to_string();
            assert!(flag == "constant" || flag == "paper" || flag.starts_with("{ kind = "), "{flag}");
            assert_eq!(flag.parse::<Schedule>().unwrap(), schedule, "{flag}");
        }
        assert_eq!(Schedule::Cosine { final_factor: 0.02 }.to_string(), "{ kind = \"cosine\", final_factor = 0.02 }");
        let holder = |text: &str| toml::from_str::<Holder>(text).map(|h| h.schedule);
        assert_eq!(holder("schedule = \"constant\"").unwrap(), Schedule::Constant);
        assert_eq!(holder("schedule = \"paper\"").unwrap(), Schedule::paper());
        assert_eq!(
            toml::to_string(&Holder { schedule: Schedule::Constant }).unwrap().trim(),
            "schedule = \"constant\""
        );
        // The tagged tables of earlier files and checkpoints still load.
        assert_eq!(holder("schedule = { kind = \"constant\" }").unwrap(), Schedule::Constant);
        assert_eq!(
            serde_json::from_str::<Holder>(r#"{"schedule":{"kind":"constant"}}"#).unwrap().schedule,
            Schedule::Constant
        );
        for (bad, needle) in [
            ("schedule = \"step\"", "unknown schedule `step`"),
            ("schedule = { kind = \"step\", every = 3 }", "factor"),
            ("schedule = { kind = \"warp\" }", "warp"),
        ] {
            let err = holder(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let err = "{ kind = \"step\", every = 0, factor = 0.1 }".parse::<Schedule>().unwrap_err().to_string();
        assert!(err.contains("invalid schedule"), "{err}");
        assert!("linear".parse::<Schedule>().unwrap_err().to_string().contains("plain names are constant and paper"));
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
