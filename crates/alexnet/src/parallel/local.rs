//! [`LocalGroup`]: the [`Collective`] of replicas in one process (threads).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::Collective;
use crate::error::{Error, Result};

/// What a round of the group computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sum,
    Broadcast { root: usize },
}

/// The state of the round in progress.
#[derive(Default)]
struct Round {
    /// Members that handed in their data this round.
    arrived: usize,
    /// Members that took the result away (the round is draining while `< size`).
    departed: usize,
    draining: bool,
    tag: String,
    kind: Option<Kind>,
    len: usize,
    /// Each member's data, summed in rank order so results never depend on thread timing.
    slots: Vec<Vec<f32>>,
    result: Vec<f32>,
    /// Set once a member fails or leaves; every later call fails with it.
    broken: Option<String>,
}

struct Shared {
    size: usize,
    round: Mutex<Round>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Round> {
        // A member that panicked while holding the lock leaves a consistent enough state:
        // it is only ever used to report the group as broken.
        self.round.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn break_group(&self, reason: String) {
        let mut round = self.lock();
        round.broken.get_or_insert(reason);
        self.changed.notify_all();
    }
}

/// Replicas in one process summing their gradients: each replica's thread holds one
/// [`LocalMember`]. Sums are added in rank order, so a run's results do not depend on
/// which thread arrives first.
///
/// ```
/// use alexnet::parallel::{Collective, LocalGroup};
///
/// let members = LocalGroup::members(3);
/// let sums: Vec<Vec<f32>> = std::thread::scope(|s| {
///     let handles: Vec<_> = members
///         .into_iter()
///         .map(|mut m| {
///             s.spawn(move || {
///                 let mut data = vec![m.rank() as f32, 1.0];
///                 m.all_reduce_sum("grads", &mut data).unwrap();
///                 data
///             })
///         })
///         .collect();
///     handles.into_iter().map(|h| h.join().unwrap()).collect()
/// });
/// assert!(sums.iter().all(|s| s == &[3.0, 3.0]));
/// ```
pub struct LocalGroup;

impl LocalGroup {
    /// A group of `size` members, ranks `0..size` in order.
    pub fn members(size: usize) -> Vec<LocalMember> {
        assert!(size > 0, "a group has at least one member");
        let shared = Arc::new(Shared {
            size,
            round: Mutex::new(Round { slots: vec![Vec::new(); size], ..Round::default() }),
            changed: Condvar::new(),
        });
        (0..size).map(|rank| LocalMember { rank, shared: Arc::clone(&shared) }).collect()
    }
}

/// One member of a [`LocalGroup`]. Dropping it breaks the group (others' calls then fail
/// rather than wait for it).
pub struct LocalMember {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalMember {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::Collective { member: self.rank, reason: reason.into() }
    }

    fn exchange(&mut self, tag: &str, kind: Kind, data: &mut [f32]) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let mut round = shared.lock();
        // Wait for the previous round's members to take their results.
        while round.draining && round.broken.is_none() {
            round = shared.changed.wait(round).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(reason) = &round.broken {
            return Err(self.error(reason.clone()));
        }
        if round.arrived == 0 {
            round.tag.clear();
            round.tag.push_str(tag);
            round.kind = Some(kind);
            round.len = data.len();
        } else if round.tag != tag || round.kind != Some(kind) || round.len != data.len() {
            let reason = format!(
                "members disagree: member {} sent {kind:?} `{tag}` of {} values while others sent {:?} `{}` of {}",
                self.rank,
                data.len(),
                round.kind,
                round.tag,
                round.len
            );
            round.broken = Some(reason.clone());
            shared.changed.notify_all();
            return Err(self.error(reason));
        }
        let slot = &mut round.slots[self.rank];
        slot.clear();
        slot.extend_from_slice(data);
        round.arrived += 1;
        if round.arrived == shared.size {
            let Round { slots, result, .. } = &mut *round;
            result.clear();
            match kind {
                Kind::Broadcast { root } => result.extend_from_slice(&slots[root]),
                Kind::Sum => {
                    result.extend_from_slice(&slots[0]);
                    for slot in &slots[1..] {
                        result.iter_mut().zip(slot).for_each(|(r, v)| *r += v);
                    }
                }
            }
            round.draining = true;
            round.departed = 0;
            shared.changed.notify_all();
        } else {
            while !round.draining && round.broken.is_none() {
                round = shared.changed.wait(round).unwrap_or_else(|p| p.into_inner());
            }
            // A round that completed delivers its result even if a member left right after.
            if let (false, Some(reason)) = (round.draining, &round.broken) {
                return Err(self.error(reason.clone()));
            }
        }
        data.copy_from_slice(&round.result);
        round.departed += 1;
        if round.departed == shared.size {
            round.draining = false;
            round.arrived = 0;
            shared.changed.notify_all();
        }
        Ok(())
    }
}

impl Collective for LocalMember {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&mut self, tag: &str, data: &mut [f32]) -> Result<()> {
        self.exchange(tag, Kind::Sum, data)
    }

    fn broadcast(&mut self, tag: &str, root: usize, data: &mut [f32]) -> Result<()> {
        if root >= self.shared.size {
            return Err(self.error(format!("broadcast root {root} is not a member (size {})", self.shared.size)));
        }
        self.exchange(tag, Kind::Broadcast { root }, data)
    }

    fn abort(&mut self, reason: &str) {
        self.shared.break_group(format!("member {} failed: {reason}", self.rank));
    }

    fn describe(&self) -> String {
        format!("in-process, {} replicas", self.shared.size)
    }
}

impl Drop for LocalMember {
    fn drop(&mut self) {
        self.shared.break_group(format!("member {} left the group", self.rank));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Send>(members: Vec<LocalMember>, f: impl Fn(LocalMember) -> T + Sync) -> Vec<T> {
        std::thread::scope(|s| {
            let handles: Vec<_> = members.into_iter().map(|m| s.spawn(|| f(m))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn sums_and_broadcasts_over_many_rounds() {
        let results = run(LocalGroup::members(4), |mut m| {
            let r = m.rank() as f32;
            let mut out = Vec::new();
            for round in 0..50 {
                let mut data = vec![r, r * round as f32, 1.0];
                m.all_reduce_sum("g", &mut data).unwrap();
                out.push(data);
                let mut b = vec![r + 10.0];
                m.broadcast("b", 2, &mut b).unwrap();
                assert_eq!(b, [12.0]);
            }
            out
        });
        for out in results {
            for (round, data) in out.iter().enumerate() {
                assert_eq!(data, &[6.0, 6.0 * round as f32, 4.0]);
            }
        }
    }

    #[test]
    fn sums_add_in_rank_order_whatever_the_timing() {
        // In f32, 1e8 + 1 - 1e8 + 1 depends on the order of the additions: rank order is fixed.
        let values = [1.0e8f32, 1.0, -1.0e8, 1.0];
        let want = ((values[0] + values[1]) + values[2]) + values[3];
        for _ in 0..20 {
            let results = run(LocalGroup::members(4), |mut m| {
                std::thread::sleep(std::time::Duration::from_micros((3 - m.rank() as u64) * 200));
                let mut data = vec![values[m.rank()]];
                m.all_reduce_sum("x", &mut data).unwrap();
                data[0]
            });
            assert!(results.iter().all(|&v| v.to_bits() == want.to_bits()), "{results:?} vs {want}");
        }
    }

    #[test]
    fn a_failed_member_ends_the_others_waits() {
        let results = run(LocalGroup::members(3), |mut m| {
            if m.rank() == 1 {
                m.abort("device lost");
                return Err(m.error("gave up"));
            }
            m.all_reduce_sum("g", &mut [1.0])
        });
        for (rank, r) in results.iter().enumerate() {
            let message = r.as_ref().unwrap_err().to_string();
            if rank != 1 {
                assert!(message.contains("member 1 failed: device lost"), "{message}");
            }
        }
    }

    #[test]
    fn a_member_that_leaves_ends_the_others_waits() {
        let results =
            run(LocalGroup::members(2), |mut m| if m.rank() == 0 { m.all_reduce_sum("g", &mut [1.0]) } else { Ok(()) });
        assert!(results[0].as_ref().unwrap_err().to_string().contains("member 1 left the group"));
    }

    #[test]
    fn members_that_disagree_fail_instead_of_mixing_tensors() {
        let results = run(LocalGroup::members(2), |mut m| {
            let (tag, len) = if m.rank() == 0 { ("conv1.weight", 3) } else { ("fc8.bias", 3) };
            m.all_reduce_sum(tag, &mut vec![0.0; len])
        });
        assert!(results.iter().all(|r| r.as_ref().unwrap_err().to_string().contains("disagree")));
        let results = run(LocalGroup::members(2), |mut m| m.all_reduce_sum("g", &mut vec![0.0; 2 + m.rank()]));
        assert!(results.iter().all(|r| r.is_err()));
        let results = run(LocalGroup::members(2), |mut m| m.broadcast("g", 5, &mut [0.0]));
        assert!(results.iter().all(|r| r.as_ref().unwrap_err().to_string().contains("not a member")));
    }
}
