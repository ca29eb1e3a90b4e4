//! The threaded pipeline: source -> jobs channel -> workers -> results channel -> batcher
//! (restores order) -> batches channel -> consumer.

use crate::source::Source;
use crate::{Error, Result, Scratch, Transform, sample_rng};
use crossbeam_channel::{Receiver, bounded};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One batch: `views` CHW `f32` images per sample, in the epoch's shuffled order.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// The batch's number within the epoch (what [`Loader::epoch_from`] counts).
    pub number: usize,
    /// `shape[0] * shape[1] * shape[2] * shape[3]` values; sample `i`'s views are rows
    /// `i * views .. (i + 1) * views`.
    pub images: Vec<f32>,
    /// One label per sample.
    pub labels: Vec<u32>,
    /// The source index of each sample.
    pub indices: Vec<usize>,
    /// `[samples * views, channels, height, width]`.
    pub shape: [usize; 4],
    /// Views per sample (10 for ten-crop, else 1).
    pub views: usize,
}

impl Batch {
    /// Number of samples (not views).
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the batch holds no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A sample the pipeline could not use, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// Source index.
    pub index: usize,
    /// The source's name for it (a path for files).
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

#[derive(Default)]
struct SkipLog {
    seen: HashSet<usize>,
    all: Vec<Skip>,
    reported: usize,
}

/// Configuration of a [`Loader`], built with [`Loader::builder`].
#[derive(Debug, Clone)]
pub struct LoaderBuilder {
    transform: Transform,
    batch_size: usize,
    workers: usize,
    job_capacity: usize,
    batch_capacity: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
    /// `(index, count)`: build only this shard of every batch.
    shard: (usize, usize),
}

/// The contiguous part `[start, end)` of `len` items that shard `index` of `count` takes:
/// sizes differ by at most one, in shard order, and the shards tile `0..len`.
pub fn shard_range(len: usize, index: usize, count: usize) -> (usize, usize) {
    assert!(index < count, "shard {index} of {count}");
    (len * index / count, len * (index + 1) / count)
}

impl LoaderBuilder {
    /// Samples per batch (default 128).
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n;
        self
    }
    /// Worker threads decoding and augmenting (default 2).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Batches queued for workers beyond those being built (default 2). Together with
    /// `workers` and `batch_capacity` this bounds memory: at most
    /// `workers + job_capacity + batch_capacity` batches exist at once.
    pub fn job_capacity(mut self, n: usize) -> Self {
        self.job_capacity = n;
        self
    }
    /// Finished batches queued for the consumer (default 2).
    pub fn batch_capacity(mut self, n: usize) -> Self {
        self.batch_capacity = n;
        self
    }
    /// Seed of the shuffles and augmentations (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
    /// Reshuffle every epoch (default true); false keeps source order.
    pub fn shuffle(mut self, on: bool) -> Self {
        self.shuffle = on;
        self
    }
    /// Drop the last batch of an epoch if it is short (default false).
    pub fn drop_last(mut self, on: bool) -> Self {
        self.drop_last = on;
        self
    }

    /// Build only shard `index` of `count` of every batch ([`shard_range`] of its
    /// positions; default: shard 0 of 1, the whole batch). For data-parallel training in
    /// several processes: each decodes only its own share, with the randomness the whole
    /// batch would give it. Batches keep their numbers, and every batch is delivered, even
    /// an empty one (a short last batch, or skips), so that the shards stay in step.
    pub fn shard(mut self, index: usize, count: usize) -> Self {
        self.shard = (index, count);
        self
    }

    /// Checks the configuration and builds the loader.
    pub fn build<S: Source + 'static>(self, source: S) -> Result<Loader> {
        self.transform.validate()?;
        let (index, count) = self.shard;
        if index >= count {
            return Err(Error::Config(format!("shard {index} of {count}: the index must be below the count")));
        }
        if self.batch_size == 0 || self.workers == 0 || self.batch_capacity == 0 {
            return Err(Error::Config(format!(
                "batch_size ({}), workers ({}) and batch_capacity ({}) must be at least 1",
                self.batch_size, self.workers, self.batch_capacity
            )));
        }
        if source.is_empty() {
            return Err(Error::EmptyDataset { root: source.data_dir().unwrap_or_default() });
        }
        Ok(Loader {
            source: Arc::new(source),
            config: Arc::new(self),
            skips: Arc::new(Mutex::new(SkipLog::default())),
            pool: Arc::new(Mutex::new(Vec::new())),
        })
    }
}

/// A reusable data loader: one [`Epoch`] iterator at a time per call to [`Loader::epoch`].
#[derive(Clone)]
pub struct Loader {
    source: Arc<dyn Source>,
    config: Arc<LoaderBuilder>,
    skips: Arc<Mutex<SkipLog>>,
    /// Image buffers handed back through [`Loader::recycle`], reused by the workers.
    pool: Arc<Mutex<Vec<Vec<f32>>>>,
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("samples", &self.source.len()).field("config", &self.config).finish()
    }
}

/// Throughput and waiting figures of one epoch so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineStats {
    /// Samples delivered to the consumer.
    pub samples: u64,
    /// Samples skipped this epoch.
    pub skipped: u64,
    /// Time since the epoch started.
    pub elapsed: Duration,
    /// Samples delivered per second.
    pub images_per_sec: f64,
    /// Time the consumer spent waiting for a batch (the pipeline was the bottleneck).
    pub consumer_wait: Duration,
    /// Time the batcher spent waiting for the consumer to take a batch (the consumer was
    /// the bottleneck).
    pub producer_wait: Duration,
}

#[derive(Default)]
struct Counters {
    samples: AtomicU64,
    skipped: AtomicU64,
    consumer_wait_ns: AtomicU64,
    producer_wait_ns: AtomicU64,
}

struct Job {
    number: usize,
    positions: std::ops::Range<usize>,
}

impl Loader {
    /// A builder with defaults for `transform`.
    pub fn builder(transform: Transform) -> LoaderBuilder {
        LoaderBuilder {
            transform,
            batch_size: 128,
            workers: 2,
            job_capacity: 2,
            batch_capacity: 2,
            seed: 0,
            shuffle: true,
            drop_last: false,
            shard: (0, 1),
        }
    }

    /// The source.
    pub fn source(&self) -> &dyn Source {
        &*self.source
    }

    /// The transform.
    pub fn transform(&self) -> &Transform {
        &self.config.transform
    }

    /// Batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.source.len(), self.config.batch_size);
        if self.config.drop_last { n / b } else { n.div_ceil(b) }
    }

    /// The sample order of `epoch`: a ChaCha8 shuffle seeded from `(seed, epoch)`, or
    /// source order without shuffling.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        if self.config.shuffle {
            let seed = crate::transform::mix64(crate::transform::mix64(self.config.seed, 0x5348_5546), epoch);
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        }
        order
    }

    /// Every skip so far (all epochs).
    pub fn skipped(&self) -> Vec<Skip> {
        self.skips.lock().expect("skip log poisoned").all.clone()
    }

    /// Skips not returned by an earlier call: each bad sample is reported once.
    pub fn take_new_skips(&self) -> Vec<Skip> {
        let mut log = self.skips.lock().expect("skip log poisoned");
        let new = log.all[log.reported..].to_vec();
        log.reported = log.all.len();
        new
    }

    /// Hands a used batch's buffer back for reuse. Optional, but it spares the workers
    /// fresh allocations, whose page faults cost as much as the fused pass for 227 px
    /// batches. At most `workers + job_capacity + batch_capacity` buffers are kept.
    pub fn recycle(&self, batch: Batch) {
        let cfg = &*self.config;
        let mut pool = self.pool.lock().expect("buffer pool poisoned");
        if pool.len() < cfg.workers + cfg.job_capacity + cfg.batch_capacity {
            pool.push(batch.images);
        }
    }

    /// Starts epoch `epoch` from its first batch.
    pub fn epoch(&self, epoch: u64) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// Starts epoch `epoch` at batch `first_batch`, producing exactly the batches an
    /// uninterrupted epoch would from there on (for resuming a run).
    pub fn epoch_from(&self, epoch: u64, first_batch: usize) -> Epoch {
        let cfg = &*self.config;
        let order: Arc<[usize]> = self.order(epoch).into();
        let total = self.batches_per_epoch();
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = cfg.workers + cfg.job_capacity.max(1);
        let (job_tx, job_rx) = bounded::<Job>(cfg.job_capacity.max(1));
        let (result_tx, result_rx) = bounded::<Batch>(in_flight);
        let (batch_tx, batch_rx) = bounded::<Batch>(cfg.batch_capacity);
        let (credit_tx, credit_rx) = bounded::<()>(in_flight);
        for _ in 0..in_flight {
            credit_tx.send(()).expect("credit channel has room");
        }
        let mut threads = Vec::new();
        let (n, b) = (order.len(), cfg.batch_size);
        let (shard, shards) = cfg.shard;
        threads.push(std::thread::spawn(move || {
            for number in first_batch..total {
                if credit_rx.recv().is_err() {
                    return;
                }
                let (first, end) = (number * b, ((number + 1) * b).min(n));
                let (start, stop) = shard_range(end - first, shard, shards);
                let job = Job { number, positions: first + start..first + stop };
                if job_tx.send(job).is_err() {
                    return;
                }
            }
        }));
        for _ in 0..cfg.workers {
            let (job_rx, result_tx) = (job_rx.clone(), result_tx.clone());
            let (source, config, skips) = (self.source.clone(), self.config.clone(), self.skips.clone());
            let (order, counters, stop, pool) = (order.clone(), counters.clone(), stop.clone(), self.pool.clone());
            threads.push(std::thread::spawn(move || {
                let mut scratch = Scratch::new();
                for job in job_rx {
                    let batch = build_batch(
                        &*source,
                        &config,
                        epoch,
                        &order,
                        job,
                        &mut scratch,
                        &skips,
                        &counters,
                        &stop,
                        &pool,
                    );
                    if stop.load(Ordering::Relaxed) || result_tx.send(batch).is_err() {
                        return;
                    }
                }
            }));
        }
        drop((job_rx, result_tx));
        let batcher_counters = counters.clone();
        let sharded = shards > 1;
        threads.push(std::thread::spawn(move || {
            let mut pending = BTreeMap::new();
            let mut next = first_batch;
            for batch in result_rx {
                pending.insert(batch.number, batch);
                while let Some(batch) = pending.remove(&next) {
                    next += 1;
                    let waited = Instant::now();
                    let samples = batch.len() as u64;
                    // Batches left empty by skips are not sent (the numbering stays intact),
                    // except to a shard, whose group must take every step together.
                    if (samples > 0 || sharded) && batch_tx.send(batch).is_err() {
                        return;
                    }
                    batcher_counters.producer_wait_ns.fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    batcher_counters.samples.fetch_add(samples, Ordering::Relaxed);
                    // A credit lets the source hand out one more batch (it may have finished:
                    // then nobody listens, which is fine).
                    let _ = credit_tx.send(());
                }
            }
        }));
        Epoch { receiver: Some(batch_rx), threads, counters, stop, started: Instant::now() }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_batch(
    source: &dyn Source,
    config: &LoaderBuilder,
    epoch: u64,
    order: &[usize],
    job: Job,
    scratch: &mut Scratch,
    skips: &Mutex<SkipLog>,
    counters: &Counters,
    stop: &AtomicBool,
    pool: &Mutex<Vec<Vec<f32>>>,
) -> Batch {
    let transform = &config.transform;
    let sample_len = transform.sample_len();
    let count = job.positions.len();
    // A recycled buffer keeps its length: the fused pass overwrites every value of a slot,
    // so only growth is zero-filled (a per-sample fill of 227 px RGB views cost ~14% of
    // the loader's time).
    let mut images = pool.lock().expect("buffer pool poisoned").pop().unwrap_or_default();
    let (mut labels, mut indices) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let mut filled = 0;
    for &index in &order[job.positions] {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if images.len() < filled + sample_len {
            // Grown one sample at a time, so the zero fill happens while the memory is in cache.
            images.resize(filled + sample_len, 0.0);
        }
        let slot = &mut images[filled..filled + sample_len];
        let mut rng = sample_rng(config.seed, epoch, index as u64);
        match source.read(index).and_then(|raw| transform.apply(raw, &mut rng, scratch, slot)) {
            Ok(()) => {
                filled += sample_len;
                labels.push(source.label(index));
                indices.push(index);
            }
            Err(reason) => {
                // The slot is reused by the next sample.
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                let mut log = skips.lock().expect("skip log poisoned");
                if log.seen.insert(index) {
                    log.all.push(Skip { index, name: source.describe(index), reason });
                }
            }
        }
    }
    images.truncate(filled);
    let views = transform.views();
    let [c, h, w] = transform.view_shape();
    Batch { number: job.number, images, shape: [labels.len() * views, c, h, w], labels, indices, views }
}

/// One epoch's batches, in order. Dropping it stops and joins every pipeline thread.
pub struct Epoch {
    receiver: Option<Receiver<Batch>>,
    threads: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    started: Instant,
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Epoch").field("stats", &self.stats()).finish()
    }
}

impl Epoch {
    /// Throughput and waiting figures so far.
    pub fn stats(&self) -> PipelineStats {
        let c = &self.counters;
        let samples = c.samples.load(Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        PipelineStats {
            samples,
            skipped: c.skipped.load(Ordering::Relaxed),
            elapsed,
            images_per_sec: samples as f64 / elapsed.as_secs_f64().max(1e-9),
            consumer_wait: Duration::from_nanos(c.consumer_wait_ns.load(Ordering::Relaxed)),
            producer_wait: Duration::from_nanos(c.producer_wait_ns.load(Ordering::Relaxed)),
        }
    }
}

impl Iterator for Epoch {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let waited = Instant::now();
        let batch = self.receiver.as_ref()?.recv().ok();
        self.counters.consumer_wait_ns.fetch_add(waited.elapsed().as_nanos() as u64, Ordering::Relaxed);
        batch
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver makes the batcher's send fail; it exits and drops its
        // receivers and the credit sender, which ends the workers and the source in turn.
        self.receiver = None;
        for thread in self.threads.drain(..) {
            // A panicking stage is a bug in this crate; surface it rather than hide it.
            if let Err(panic) = thread.join()
                && !std::thread::panicking()
            {
                std::panic::resume_unwind(panic);
            }
        }
    }
}
