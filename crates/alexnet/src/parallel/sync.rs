//! Summing one replica's gradients with its group's, bucket by bucket, on a communication
//! thread while the backward pass is still running (PyTorch DDP's overlap; Horovod's fusion
//! of small tensors, such as AlexNet's biases, into one buffer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use alexnet_autograd::{ParamId, ParamStore};
use alexnet_core::Backend;

use super::Collective;
use crate::error::{Error, Result};

/// Gradient bytes per bucket (DDP's default): large enough that per-message latency does
/// not dominate, small enough that the first bucket's exchange starts early in backward.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

enum Request {
    /// `gradients`: a bucket of gradients, whose time the stats count.
    Sum {
        tag: String,
        data: Vec<f32>,
        gradients: bool,
    },
    Broadcast {
        tag: String,
        root: usize,
        data: Vec<f32>,
    },
    Abort {
        reason: String,
    },
}

type Reply = mpsc::Receiver<Result<Vec<f32>>>;
/// A request with the channel its answer goes back on.
type Job = (Request, mpsc::Sender<Result<Vec<f32>>>);

/// The thread that owns this participant's [`Collective`] and serves its calls in order
/// (so an MPI library sees one calling thread at a time).
struct Comm {
    requests: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    rank: usize,
    size: usize,
    /// Nanoseconds the thread spent summing gradient buckets.
    gradient_sum_ns: Arc<AtomicU64>,
}

impl Comm {
    fn spawn(mut group: Box<dyn Collective>) -> Result<Self> {
        let (rank, size) = (group.rank(), group.size());
        let (tx, rx) = mpsc::channel::<Job>();
        let gradient_sum_ns = Arc::new(AtomicU64::new(0));
        let summing = Arc::clone(&gradient_sum_ns);
        let thread = std::thread::Builder::new()
            .name(format!("alexnet-comm-{rank}"))
            .spawn(move || {
                for (request, reply) in rx {
                    let result = match request {
                        Request::Sum { tag, mut data, gradients } => {
                            let started = std::time::Instant::now();
                            let summed = group.all_reduce_sum(&tag, &mut data).map(|()| data);
                            if gradients {
                                summing.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            }
                            summed
                        }
                        Request::Broadcast { tag, root, mut data } => {
                            group.broadcast(&tag, root, &mut data).map(|()| data)
                        }
                        Request::Abort { reason } => {
                            group.abort(&reason);
                            Ok(Vec::new())
                        }
                    };
                    // The requester may have given up (it failed itself); nothing to tell.
                    let _ = reply.send(result);
                }
            })
            .map_err(|e| Error::Collective { member: rank, reason: format!("cannot start its thread: {e}") })?;
        Ok(Self { requests: Some(tx), thread: Some(thread), rank, size, gradient_sum_ns })
    }

    fn submit(&self, request: Request) -> Reply {
        let (tx, rx) = mpsc::channel();
        let sender = self.requests.as_ref().expect("the request channel lives until drop");
        // A send fails only if the thread ended; the reply channel then reports it.
        let _ = sender.send((request, tx));
        rx
    }

    fn wait(&self, reply: Reply) -> Result<Vec<f32>> {
        reply.recv().map_err(|_| Error::Collective {
            member: self.rank,
            reason: "the communication thread ended unexpectedly".to_string(),
        })?
    }
}

impl Drop for Comm {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A run of parameters whose gradients travel together, laid out back to back.
struct Bucket {
    params: Vec<(ParamId, usize, usize)>,
    tag: String,
    /// Gradients gathered so far this step.
    filled: usize,
    /// The host buffer (absent while its sum is in flight).
    data: Option<Vec<f32>>,
}

/// One replica's side of the gradient exchange: [`GradientSync::ready`] from the backward
/// pass's callback, [`GradientSync::finish`] after it.
pub(crate) struct GradientSync {
    comm: Comm,
    buckets: Vec<Bucket>,
    /// Per store entry: its bucket and offset (trainable parameters only).
    place: Vec<Option<(usize, usize)>>,
    next_to_send: usize,
    in_flight: VecDeque<(usize, Reply)>,
    stats: ExchangeStats,
}

/// What crosses between devices or processes each step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Exchanged {
    /// Data parallelism: each replica's gradients, summed by all-reduce.
    #[default]
    Gradients,
    /// The model split: the halves' activations forward and their gradients backward.
    Activations,
}

/// What exchanging data between devices or processes cost so far. Its `Display` is the
/// one-line summary `train` prints at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ExchangeStats {
    /// What was exchanged (and so which of the fields below apply).
    pub what: Exchanged,
    /// Steps exchanged.
    pub steps: u64,
    /// Bytes per step (the last step's). Data parallelism: the gradient bytes one replica
    /// sends (and receives back summed). Model split: the activations and gradients the two
    /// devices send each other, both directions together.
    pub bytes_per_step: u64,
    /// Seconds spent exchanging that computing did not hide. Data parallelism: a replica's
    /// waits for sums after its backward pass ended. Model split: every copy of exchanged
    /// data between a device and the host and the host's joins and sums, which the
    /// devices wait for.
    pub wait_seconds: f64,
    /// Data parallelism only (0 otherwise): seconds spent in all-reduce calls on gradients,
    /// overlapped with backward or not (including the time the other participants took
    /// to join each call).
    pub all_reduce_seconds: f64,
}

impl std::fmt::Display for ExchangeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_step = |seconds: f64| seconds / self.steps.max(1) as f64;
        let megabytes = self.bytes_per_step as f64 / 1e6;
        match self.what {
            Exchanged::Gradients => write!(
                f,
                "gradient exchange: {megabytes:.1} MB per step over {} steps; all-reduce {:.3} s per step, \
                 {:.3} s of it after the backward pass",
                self.steps,
                per_step(self.all_reduce_seconds),
                per_step(self.wait_seconds)
            ),
            Exchanged::Activations => write!(
                f,
                "activation exchange between the devices: {megabytes:.1} MB per step over {} steps; \
                 {:.3} s per step of copies and joins that the devices waited for",
                self.steps,
                per_step(self.wait_seconds)
            ),
        }
    }
}

impl GradientSync {
    /// Plans buckets of about `bucket_bytes` over `store`'s trainable parameters in reverse
    /// order (the order backward finishes them) and starts the communication thread.
    pub(crate) fn new<B: Backend>(
        store: &ParamStore<B>,
        group: Box<dyn Collective>,
        bucket_bytes: usize,
    ) -> Result<Self> {
        let limit = (bucket_bytes / 4).max(1);
        let mut buckets: Vec<Bucket> = Vec::new();
        let mut place = vec![None; store.len()];
        let ids: Vec<ParamId> = store.trainable().collect();
        let mut elements = 0;
        for &id in ids.iter().rev() {
            let len = store.dims(id)?.numel();
            let start_new = buckets.last().is_none_or(|b| {
                let used: usize = b.params.iter().map(|p| p.2).sum();
                used > 0 && used + len > limit
            });
            if start_new {
                buckets.push(Bucket { params: Vec::new(), tag: store.name(id)?.to_string(), filled: 0, data: None });
            }
            let bucket = buckets.last_mut().expect("just pushed");
            let offset: usize = bucket.params.iter().map(|p| p.2).sum();
            bucket.params.push((id, offset, len));
            place[id.index()] = Some((buckets.len() - 1, offset));
            elements += len;
        }
        for b in &mut buckets {
            b.data = Some(vec![0.0; b.params.iter().map(|p| p.2).sum()]);
        }
        Ok(Self {
            comm: Comm::spawn(group)?,
            buckets,
            place,
            next_to_send: 0,
            in_flight: VecDeque::new(),
            stats: ExchangeStats { bytes_per_step: (elements * 4) as u64, ..ExchangeStats::default() },
        })
    }

    /// This participant's rank.
    pub(crate) fn rank(&self) -> usize {
        self.comm.rank
    }

    /// The group's size.
    pub(crate) fn size(&self) -> usize {
        self.comm.size
    }

    /// The exchange's costs so far.
    pub(crate) fn stats(&self) -> ExchangeStats {
        let all_reduce_seconds = self.comm.gradient_sum_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        ExchangeStats { all_reduce_seconds, ..self.stats }
    }

    /// Parameter `id`'s gradient is final: copy it into its bucket, and start summing every
    /// bucket that is complete (in bucket order, so all participants exchange in one order).
    pub(crate) fn ready<B: Backend>(&mut self, store: &ParamStore<B>, id: ParamId) -> Result<()> {
        let (b, offset) = self.place[id.index()].expect("only trainable parameters are reported");
        let bucket = &mut self.buckets[b];
        let len = store.dims(id)?.numel();
        let data = bucket.data.as_mut().expect("a bucket fills only after its last sum came back");
        store.backend().download(store.grad(id)?, &mut data[offset..offset + len])?;
        bucket.filled += 1;
        while let Some(next) = self.buckets.get_mut(self.next_to_send) {
            if next.filled < next.params.len() {
                break;
            }
            let data = next.data.take().expect("a full bucket holds its data");
            let reply = self.comm.submit(Request::Sum { tag: next.tag.clone(), data, gradients: true });
            self.in_flight.push_back((self.next_to_send, reply));
            self.next_to_send += 1;
        }
        Ok(())
    }

    /// Every parameter reported: waits for the sums and writes them back as the gradients.
    pub(crate) fn finish<B: Backend>(&mut self, store: &mut ParamStore<B>) -> Result<()> {
        assert_eq!(self.next_to_send, self.buckets.len(), "backward reports every trainable parameter");
        let started = std::time::Instant::now();
        while let Some((b, reply)) = self.in_flight.pop_front() {
            let data = self.comm.wait(reply)?;
            let bucket = &mut self.buckets[b];
            for &(id, offset, len) in &bucket.params {
                store.set_grad_from_host(id, &data[offset..offset + len])?;
            }
            bucket.data = Some(data);
            bucket.filled = 0;
        }
        self.next_to_send = 0;
        self.stats.steps += 1;
        self.stats.wait_seconds += started.elapsed().as_secs_f64();
        Ok(())
    }

    /// Reports every trainable parameter of `store` with a zero gradient (a replica whose
    /// share of the batch is empty still takes part in the sums).
    pub(crate) fn contribute_zeros<B: Backend>(&mut self, store: &mut ParamStore<B>) -> Result<()> {
        store.zero_grads()?;
        let ids: Vec<ParamId> = store.trainable().collect();
        for &id in ids.iter().rev() {
            self.ready(store, id)?;
        }
        Ok(())
    }

    /// A blocking sum of a few values (metrics).
    pub(crate) fn sum(&self, tag: &str, data: Vec<f32>) -> Result<Vec<f32>> {
        self.comm.wait(self.comm.submit(Request::Sum { tag: tag.to_string(), data, gradients: false }))
    }

    /// A blocking broadcast from `root`.
    pub(crate) fn broadcast(&self, tag: &str, root: usize, data: Vec<f32>) -> Result<Vec<f32>> {
        self.comm.wait(self.comm.submit(Request::Broadcast { tag: tag.to_string(), root, data }))
    }

    /// Breaks the group after this participant failed, so no other waits for it; returns
    /// once the communication thread has done so (an MPI group ends the process instead).
    pub(crate) fn abort(&mut self, reason: &str) {
        self.in_flight.clear();
        let _ = self.comm.submit(Request::Abort { reason: reason.to_string() }).recv();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_divides_totals_by_steps_and_names_what_was_exchanged() {
        let gradients = ExchangeStats {
            what: Exchanged::Gradients,
            steps: 4,
            bytes_per_step: 2_000_000,
            wait_seconds: 0.4,
            all_reduce_seconds: 2.0,
        };
        assert_eq!(
            gradients.to_string(),
            "gradient exchange: 2.0 MB per step over 4 steps; all-reduce 0.500 s per step, 0.100 s of it after \
             the backward pass"
        );
        // The split has no all-reduce: its line must not report one (it once printed a
        // 0.000 s all-reduce with a larger part of it "after the backward pass").
        let activations = ExchangeStats { what: Exchanged::Activations, all_reduce_seconds: 0.0, ..gradients };
        assert_eq!(
            activations.to_string(),
            "activation exchange between the devices: 2.0 MB per step over 4 steps; 0.100 s per step of copies \
             and joins that the devices waited for"
        );
    }
}
