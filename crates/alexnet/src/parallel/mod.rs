//! Training on several devices and processes.
//!
//! A [`Backend`] is one device and stays so. Parallel training lives here, above it:
//!
//! - **Data parallelism** ([`Placement::Data`] in one process, [`Placement::Distributed`]
//!   across processes): every participant holds a replica of the model and takes a
//!   contiguous share of each global batch, in the single-device order. Dropout masks are
//!   keyed by the sample's global position ([`alexnet_core::MaskWindow`]) and augmentation by
//!   the sample's index, so the result does not depend on the participant count. Gradients
//!   are summed across participants in buckets while the backward pass is still running (as
//!   PyTorch's DDP does), then every participant applies the same SGD step, which keeps the
//!   replicas equal.
//! - **The paper's model split** ([`Placement::Split`], two devices): each device holds half
//!   of every layer's kernels and neurons, as in the paper's Figure 2. conv1 (48 kernels per
//!   device) sees the whole image; conv2, conv4 and conv5 read only their own device's maps
//!   (the `groups = 2` of one device); conv3, fc6, fc7 and fc8 read both devices' maps, so
//!   the devices exchange activations before them (both halves joined, each device given
//!   the whole) and gradients after them (summed, each device taking its half). LRN
//!   normalises each device's channels apart (`lrn_groups = 2`). Parameters keep one
//!   device's names and layouts (each device holds rows of every weight along dim 0), so
//!   checkpoints move between one device and two.
//! - The summing is one small interface, [`Collective`]: all-reduce-sum and broadcast of
//!   named host buffers. [`LocalGroup`] implements it for replicas in one process;
//!   `MpiGroup` (feature `mpi`) for processes on one machine or several, started by `mpirun`.
//!   Each process then loads only its own share of every batch.
//!
//! Batch normalisation (the `keras-bn` preset) normalises with each replica's own share of
//! the batch, as DDP does without synchronised batch norm; the running statistics are
//! broadcast from participant 0 after every step so that replicas stay equal.

mod engine;
mod local;
#[cfg(feature = "mpi")]
mod mpi;
mod split;
mod sync;

use std::sync::Arc;

use alexnet_core::Backend;

#[cfg(feature = "mpi")]
pub use self::mpi::{EXIT_STALLED, Mpi, MpiGroup};
pub use engine::PlacedModel;
pub(crate) use engine::{Engine, StepInput, build_engine};
pub use local::{LocalGroup, LocalMember};
pub use sync::{DEFAULT_BUCKET_BYTES, ExchangeStats, Exchanged};

use crate::error::Result;

/// One participant's end of a group that sums gradients: a replica in this process, or a
/// process (an MPI rank). Every participant makes the same calls in the same order; the
/// `tag` names what is exchanged, so participants that disagree fail instead of mixing
/// tensors.
pub trait Collective: Send {
    /// This participant's index, `0..size()`.
    fn rank(&self) -> usize;
    /// The number of participants.
    fn size(&self) -> usize;
    /// Replaces `data` by its element-wise sum over all participants.
    fn all_reduce_sum(&mut self, tag: &str, data: &mut [f32]) -> Result<()>;
    /// Replaces `data` by participant `root`'s `data`.
    fn broadcast(&mut self, tag: &str, root: usize, data: &mut [f32]) -> Result<()>;
    /// Ends the group after a failure of this participant, so that no other waits forever:
    /// their pending and later calls fail with `reason`.
    fn abort(&mut self, reason: &str);
    /// What the group is, for logs (`in-process, 2 replicas`, `MPI, 4 ranks`).
    fn describe(&self) -> String;
}

/// How a training run spreads over devices and processes.
pub enum Placement<B: Backend> {
    /// One device.
    Single(Arc<B>),
    /// Data parallelism in this process: one replica per backend (devices listed once each).
    Data(Vec<Arc<B>>),
    /// The paper's model split over exactly two devices: each holds half of every layer
    /// (the `paper` and `caffenet` presets, and `mini`; LRN in two channel groups).
    Split(Vec<Arc<B>>),
    /// This process is one member of a data-parallel group of processes (MPI): its replica
    /// runs on `backend` and sums gradients through `group`. The trainer loads, trains on
    /// and evaluates only this process's share of every batch; rank 0 writes the run's
    /// files. A failure in [`crate::Trainer::new`], `resume` or `fit` ends the group
    /// ([`Collective::abort`]; over MPI, every process), so that none waits forever.
    Distributed {
        /// This process's device.
        backend: Arc<B>,
        /// This process's end of the group.
        group: Box<dyn Collective>,
    },
}

impl<B: Backend> From<Arc<B>> for Placement<B> {
    fn from(backend: Arc<B>) -> Self {
        Placement::Single(backend)
    }
}

impl<B: Backend> Placement<B> {
    /// The device that evaluates and whose parameters are saved (the first).
    pub fn primary(&self) -> &Arc<B> {
        match self {
            Placement::Single(b) | Placement::Distributed { backend: b, .. } => b,
            Placement::Data(backends) | Placement::Split(backends) => &backends[0],
        }
    }

    /// Whether this process writes checkpoints, metrics and plots (rank 0 of a group).
    pub fn is_primary_process(&self) -> bool {
        self.process().0 == 0
    }

    /// This process's rank and the number of processes (`(0, 1)` unless distributed).
    pub fn process(&self) -> (usize, usize) {
        match self {
            Placement::Distributed { group, .. } => (group.rank(), group.size()),
            _ => (0, 1),
        }
    }

    /// Ends the group after this process failed (before its engine exists), so that no
    /// other process waits for it.
    pub(crate) fn abort(&mut self, reason: &str) {
        if let Placement::Distributed { group, .. } = self {
            group.abort(reason);
        }
    }

    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        match self {
            Placement::Single(b) => b.name(),
            Placement::Data(backends) => {
                let names: Vec<String> = backends.iter().map(|b| b.name()).collect();
                format!("data parallel over {} devices: {}", backends.len(), names.join(", "))
            }
            Placement::Split(backends) => {
                let names: Vec<String> = backends.iter().map(|b| b.name()).collect();
                format!("model split over {} devices: {}", backends.len(), names.join(", "))
            }
            Placement::Distributed { backend, group } => {
                format!("{} ({}, rank {})", backend.name(), group.describe(), group.rank())
            }
        }
    }
}

/// The contiguous share `[start, end)` of a batch of `batch` samples that participant `rank`
/// of `size` takes: sizes differ by at most one, in rank order.
pub fn share(batch: usize, rank: usize, size: usize) -> (usize, usize) {
    // The loader's shards: processes that load their own share load exactly this one.
    alexnet_augment::shard_range(batch, rank, size)
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_tile_the_batch_in_order() {
        for batch in 0..40 {
            for size in 1..6 {
                let mut next = 0;
                for rank in 0..size {
                    let (start, end) = share(batch, rank, size);
                    assert_eq!(start, next);
                    assert!(end - start <= batch.div_ceil(size) && end - start >= batch / size);
                    next = end;
                }
                assert_eq!(next, batch);
            }
        }
    }
}
