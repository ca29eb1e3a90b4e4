//! [`MpiGroup`]: the [`Collective`] of processes on one machine or several, over MPI
//! (feature `mpi`). Start the processes with `mpirun`; `docs/distributed.md` has the
//! commands.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use alexnet::parallel::Mpi;
//! use alexnet::{Placement, RunConfig, Preset, Silent, Trainer};
//! use alexnet_autograd::CpuBackend;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // `mpirun -np 2 this-program`: every rank runs this.
//! let mpi = Mpi::init()?;
//! let cores = std::thread::available_parallelism()?.get();
//! let backend = Arc::new(CpuBackend::with_threads((cores / mpi.local_size()).max(1))?);
//! let group = Box::new(mpi.group(Duration::from_secs(600))?);
//! let mut trainer = Trainer::new(RunConfig::for_preset(Preset::Mini), Placement::Distributed { backend, group })?;
//! trainer.fit(&mut Silent)?; // on an error, every rank's process ends (MPI_Abort)
//! drop(trainer);
//! drop(mpi); // MPI_Finalize, once the group is gone too
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mpi::Threading;
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::datatype::{Buffer, BufferMut};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};

use super::Collective;
use crate::error::{Error, Result};

/// The exit status of a process whose collective call waited past its timeout.
pub const EXIT_STALLED: i32 = 3;

/// MPI in this process. [`Mpi::init`] initialises it; MPI is finalised when this handle
/// and every [`MpiGroup`] made from it are dropped (drop the groups first, so that this
/// happens on the thread that initialised MPI, as the standard asks).
pub struct Mpi {
    env: Arc<Universe>,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
}

impl Mpi {
    /// Initialises MPI with thread level `Serialized`: a [`MpiGroup`] is used from a
    /// communication thread, one call at a time. Fails if MPI is already initialised or
    /// offers less.
    pub fn init() -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::config("MPI is already initialised in this process; create one `Mpi` only"))?;
        if matches!(threading, Threading::Single | Threading::Funneled) {
            return Err(Error::config(format!(
                "the MPI library offers thread level {threading:?}, but training needs Serialized \
                 (gradients are summed on a communication thread); use an MPI built with thread support"
            )));
        }
        let world = universe.world();
        // The ranks on this machine (those that can share memory), ordered by world rank.
        let local = world.split_shared(world.rank());
        let (local_rank, local_size) = (local.rank() as usize, local.size() as usize);
        drop(local);
        Ok(Self {
            rank: world.rank() as usize,
            size: world.size() as usize,
            local_rank,
            local_size,
            env: Arc::new(universe),
        })
    }

    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// This process's rank among those on its machine: the device it should use.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// The number of processes on this machine (they share its cores).
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// This machine's name, as MPI reports it.
    pub fn host(&self) -> String {
        mpi::environment::processor_name().unwrap_or_else(|_| "?".to_string())
    }

    /// All processes as a data-parallel group (a duplicate of the world communicator, so
    /// its messages never mix with others'). A collective call that waits longer than
    /// `timeout` for the other processes ends this process with a message and exit
    /// status [`EXIT_STALLED`] (mpirun then ends the others): a rank that hangs cannot
    /// hang the job. The timeout must exceed the longest time one rank may legitimately
    /// lag (rank 0 writes checkpoints while the others wait).
    pub fn group(&self, timeout: Duration) -> Result<MpiGroup> {
        let comm = self.env.world().duplicate();
        let watchdog = Watchdog::start(self.rank, self.size, timeout)?;
        Ok(MpiGroup {
            comm,
            rank: self.rank,
            size: self.size,
            scratch: Vec::new(),
            watchdog,
            _env: Arc::clone(&self.env),
        })
    }

    /// Rank 0's `bytes` on every process.
    pub fn broadcast_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let world = self.env.world();
        let root = world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut data = if self.rank == 0 { bytes.to_vec() } else { vec![0u8; len as usize] };
        root.broadcast_into(&mut data[..]);
        data
    }

    /// Ends every process of the job (`MPI_Abort`) after printing `reason`: what a rank
    /// must do on an error, since the others would otherwise wait for it.
    pub fn abort(&self, reason: &str) -> ! {
        abort_world(&self.env.world(), self.rank, self.size, reason)
    }
}

fn abort_world(comm: &SimpleCommunicator, rank: usize, size: usize, reason: &str) -> ! {
    eprintln!("error: MPI rank {rank} of {size}: {reason}; ending every rank (MPI_Abort)");
    comm.abort(1)
}

/// The longest pause between two checks of an all-reduce in progress.
const MAX_POLL_PAUSE: Duration = Duration::from_micros(500);

/// `MPI_Iallreduce`, waited for by checking it with short sleeps between. A blocking MPI
/// call busy-waits for the other ranks, which takes a core from the backward pass that
/// runs meanwhile (on a machine whose cores all compute, the ranks then slow each other
/// down); sleeping gives the core back. MPI progresses the reduction on each check.
fn all_reduce_yielding<S, R>(comm: &SimpleCommunicator, send: &S, recv: &mut R, op: SystemOperation)
where
    S: Buffer + ?Sized,
    R: BufferMut + ?Sized,
{
    mpi::request::scope(|scope| {
        let mut request = comm.immediate_all_reduce_into(scope, send, recv, op);
        let mut pause = Duration::from_micros(10);
        loop {
            match request.test() {
                Ok(_) => break,
                Err(pending) => {
                    request = pending;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_POLL_PAUSE);
                }
            }
        }
    });
}

/// What a collective call is, hashed, so that ranks check they make the same call.
fn call_key(tag: &str, kind: &str, root: usize, len: usize) -> u64 {
    let mut h = alexnet_core::rng::mix64(len as u64, root as u64);
    for chunk in tag.as_bytes().chunks(8).chain(kind.as_bytes().chunks(8)) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = alexnet_core::rng::mix64(h, u64::from_le_bytes(word));
    }
    h
}

/// This process's end of a group of MPI processes ([`Mpi::group`]). Every call first
/// checks that all ranks make the same call (tag, kind, length), so ranks that disagree
/// fail instead of mixing tensors.
pub struct MpiGroup {
    // Declared before `_env`: the communicator is freed before MPI can be finalised.
    comm: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// The send buffer of sums (rsmpi has no in-place all-reduce).
    scratch: Vec<f32>,
    watchdog: Watchdog,
    _env: Arc<Universe>,
}

// SAFETY: MPI is initialised with thread level Serialized (checked by `Mpi::init`), so its
// calls may come from any thread as long as they do not overlap. A group is used through
// `&mut self` only (the `Collective` methods), so one thread calls at a time; moving it to
// the communication thread is the intended use. The communicator handle is a plain value
// that MPI allows any thread to use under that level.
unsafe impl Send for MpiGroup {}

impl MpiGroup {
    /// Fails on every rank unless all ranks make the call `key`.
    fn agree(&mut self, what: &str, key: u64) -> Result<()> {
        // max(key) and max(!key) = !min(key) agree with `key` on every rank iff all are equal.
        let mut both = [0u64; 2];
        let comm = &self.comm;
        self.watchdog
            .during(what, || all_reduce_yielding(comm, &[key, !key][..], &mut both[..], SystemOperation::max()));
        if both == [key, !key] {
            Ok(())
        } else {
            Err(Error::Collective {
                member: self.rank,
                reason: format!(
                    "ranks disagree: rank {} called {what} while another rank made another call",
                    self.rank
                ),
            })
        }
    }
}

impl Collective for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&mut self, tag: &str, data: &mut [f32]) -> Result<()> {
        let what = format!("all-reduce `{tag}` of {} values", data.len());
        self.agree(&what, call_key(tag, "sum", 0, data.len()))?;
        self.scratch.clear();
        self.scratch.extend_from_slice(data);
        let (comm, scratch) = (&self.comm, &self.scratch);
        self.watchdog.during(&what, || all_reduce_yielding(comm, &scratch[..], &mut *data, SystemOperation::sum()));
        Ok(())
    }

    fn broadcast(&mut self, tag: &str, root: usize, data: &mut [f32]) -> Result<()> {
        if root >= self.size {
            return Err(Error::Collective {
                member: self.rank,
                reason: format!("broadcast root {root} is not a rank (size {})", self.size),
            });
        }
        let what = format!("broadcast `{tag}` of {} values from rank {root}", data.len());
        self.agree(&what, call_key(tag, "broadcast", root, data.len()))?;
        let comm = &self.comm;
        self.watchdog.during(&what, || comm.process_at_rank(root as i32).broadcast_into(&mut *data));
        Ok(())
    }

    fn abort(&mut self, reason: &str) {
        abort_world(&self.comm, self.rank, self.size, reason)
    }

    fn describe(&self) -> String {
        format!("MPI, {} ranks", self.size)
    }
}

/// The call in progress, as the watchdog sees it.
#[derive(Default)]
struct Watched {
    call: Option<(String, Instant)>,
    stop: bool,
}

/// A thread that ends the process when a collective call waits longer than the timeout.
struct Watchdog {
    state: Arc<(Mutex<Watched>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(rank: usize, size: usize, timeout: Duration) -> Result<Self> {
        let state = Arc::new((Mutex::new(Watched::default()), Condvar::new()));
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("alexnet-mpi-watchdog".to_string())
            .spawn(move || {
                let (lock, wake) = &*shared;
                let mut watched = lock.lock().unwrap_or_else(PoisonError::into_inner);
                while !watched.stop {
                    let wait = match &watched.call {
                        Some((what, since)) => {
                            let waited = since.elapsed();
                            if waited >= timeout {
                                eprintln!(
                                    "error: MPI rank {rank} of {size}: {what} waited {:.0} s for the other ranks \
                                     (--collective-timeout): a rank is stuck or gone, so this rank exits \
                                     (mpirun then ends the others)",
                                    waited.as_secs_f64()
                                );
                                // Not MPI_Abort: MPI may be busy in the call on another thread.
                                std::process::exit(EXIT_STALLED);
                            }
                            timeout - waited
                        }
                        None => timeout,
                    };
                    watched = wake.wait_timeout(watched, wait).unwrap_or_else(PoisonError::into_inner).0;
                }
            })
            .map_err(|e| Error::Collective { member: rank, reason: format!("cannot start the MPI watchdog: {e}") })?;
        Ok(Self { state, thread: Some(thread) })
    }

    /// Runs the MPI call `f` (described by `what`) under watch.
    fn during<T>(&self, what: &str, f: impl FnOnce() -> T) -> T {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap_or_else(PoisonError::into_inner).call = Some((what.to_string(), Instant::now()));
        wake.notify_one();
        let result = f();
        lock.lock().unwrap_or_else(PoisonError::into_inner).call = None;
        result
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap_or_else(PoisonError::into_inner).stop = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
