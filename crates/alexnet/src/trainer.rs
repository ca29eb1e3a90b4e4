//! The training loop: SGD over the loader's batches, metrics, schedules, checkpoints and
//! resumption, generic over the backend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alexnet_augment::{Augment, Loader, TenCrop, Transform};
use alexnet_autograd::Tape;
use alexnet_core::{Backend, SgdStep, rng::mix64};
use serde::{Deserialize, Serialize};

use crate::checkpoint::TensorMap;
use crate::checkpoint::{Checkpoint, CheckpointDir, DataPosition, PartialEpoch, TrainingState};
use crate::config::RunConfig;
use crate::data::{DataFormat, Datasets};
use crate::error::{Error, Result};
use crate::metrics::{EpochRecord, MetricsLog, SplitMetrics, StepLog, StepRecord, TopK};
use crate::model::{Model, ModelInfo};
use crate::parallel::{Engine, Placement, StepInput, build_engine};
use crate::plot::plot_curves;
use crate::preset::{Architecture, Preset};
use crate::schedule::LrScheduler;

/// Progress of one training step, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchReport {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Batch within the epoch (0-based).
    pub batch: usize,
    /// Batches in the epoch.
    pub batches: usize,
    /// The batch's mean loss.
    pub loss: f32,
    /// The learning rate used.
    pub lr: f32,
    /// Training images per second so far this epoch.
    pub images_per_sec: f64,
}

/// Receives progress; every method does nothing by default.
pub trait Observer {
    /// An epoch starts.
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _batches: usize) {}
    /// A step finished.
    fn batch_end(&mut self, _report: &BatchReport) {}
    /// An epoch finished (validation included).
    fn epoch_end(&mut self, _record: &EpochRecord) {}
    /// An evaluation pass over `batches` batches starts (`what`: validation, test).
    fn eval_start(&mut self, _what: &str, _batches: usize) {}
    /// One evaluation batch finished.
    fn eval_batch(&mut self) {}
    /// An evaluation pass finished.
    fn eval_end(&mut self) {}
    /// A line of information (checkpoint written, skipped samples, ...).
    fn note(&mut self, _message: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;
impl Observer for Silent {}

/// What a finished run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Epochs finished.
    pub epochs: usize,
    /// Steps taken.
    pub steps: u64,
    /// Test metrics of the final weights (centre crop), when there is a test set.
    pub test: Option<SplitMetrics>,
    /// The last validation metrics.
    pub val: Option<SplitMetrics>,
    /// Why training ended early (plateau after the last reduction, step limit).
    pub stopped_early: Option<String>,
    /// Wall time of the whole run in seconds.
    pub seconds: f64,
}

/// The input `[c, h, w]` of `preset` on data of `format`: small data sets keep their native
/// size for the presets that accept any size; the paper's presets need 227.
pub fn input_for(preset: Preset, format: DataFormat) -> Result<[usize; 3]> {
    let native = Datasets::native_input(format);
    match (preset, native) {
        (Preset::Mini | Preset::KerasBn, Some(n)) => Ok(n),
        (Preset::Mini, None) => Ok([3, 28, 28]),
        (_, None) => Ok(preset.default_input()),
        (p, Some([c, h, w])) => Err(Error::config(format!(
            "the {p} preset needs {}x{}x{} images but this data set is {c}x{h}x{w}; use --preset mini",
            p.default_input()[0],
            p.default_input()[1],
            p.default_input()[2]
        ))),
    }
}

/// Softmax of each row of `logits` (`classes` wide), in place. A non-finite result (NaN or
/// infinite logits: damaged or diverged weights) is an [`Error::NonFiniteOutput`] for `what`.
fn softmax_rows(logits: &mut [f32], classes: usize, what: impl FnOnce() -> String) -> Result<()> {
    for row in logits.chunks_exact_mut(classes) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f64;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += f64::from(*v);
        }
        let inv = (1.0 / sum) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
    if logits.iter().all(|p| p.is_finite()) { Ok(()) } else { Err(Error::NonFiniteOutput { what: what() }) }
}

/// Notes every sample `loader` skipped since the last call, by name and reason.
fn report_skips(loader: &Loader, obs: &mut dyn Observer) {
    for skip in loader.take_new_skips() {
        obs.note(&format!("skipped {}: {}", skip.name, skip.reason));
    }
}

/// Inference logits of a batch of images (`[n, c, h, w]`), to the host.
pub type LogitsFn<'a> = dyn FnMut(&[f32], &[usize]) -> Result<Vec<f32>> + 'a;

/// The inference logits of `model` on an inference `tape`, as [`evaluate`] takes them.
pub fn model_logits<'a, B: Backend>(
    model: &'a mut Model<B>,
    tape: &'a mut Tape<B>,
) -> impl FnMut(&[f32], &[usize]) -> Result<Vec<f32>> + 'a {
    move |images, shape| {
        tape.reset();
        let x = tape.input(images, shape)?;
        let logits = model.forward(tape, x, 0)?;
        Ok(tape.to_host(logits)?)
    }
}

/// Evaluates a model of `classes` outputs, given by its `logits`, on every batch of
/// `loader`'s epoch 0: softmax outputs averaged over each sample's views (ten-crop
/// averaging when the transform has ten), top-1/top-5 error, and the mean of `-ln p(label)`.
pub fn evaluate(
    logits: &mut LogitsFn<'_>,
    classes: usize,
    loader: &Loader,
    what: &str,
    obs: &mut dyn Observer,
) -> Result<SplitMetrics> {
    let (loss_sum, topk) = evaluate_sums(logits, classes, loader, what, obs)?;
    split_metrics(loss_sum, &topk, what)
}

/// [`evaluate`]'s sum of losses and top-k tally (a loader's shard may have empty batches).
fn evaluate_sums(
    logits: &mut LogitsFn<'_>,
    classes: usize,
    loader: &Loader,
    what: &str,
    obs: &mut dyn Observer,
) -> Result<(f64, TopK)> {
    let mut topk = TopK::default();
    let mut loss_sum = 0.0f64;
    obs.eval_start(what, loader.batches_per_epoch());
    for batch in loader.epoch(0) {
        if batch.is_empty() {
            obs.eval_batch();
            continue;
        }
        let mut probs = logits(&batch.images, &batch.shape)?;
        softmax_rows(&mut probs, classes, || format!("{what} batch {}", batch.number + 1))?;
        let views = batch.views;
        let averaged: Vec<f32> = probs
            .chunks_exact(classes * views)
            .flat_map(|sample| {
                (0..classes).map(move |k| (0..views).map(|v| sample[v * classes + k]).sum::<f32>() / views as f32)
            })
            .collect();
        let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
        for (row, &label) in averaged.chunks_exact(classes).zip(&labels) {
            loss_sum -= f64::from(row[label].max(f32::MIN_POSITIVE)).ln();
        }
        topk.add_batch(&averaged, &labels, classes);
        obs.eval_batch();
    }
    obs.eval_end();
    report_skips(loader, obs);
    Ok((loss_sum, topk))
}

/// The metrics of an evaluation whose losses sum to `loss_sum` over the samples `topk`
/// counts; an error if there were none.
fn split_metrics(loss_sum: f64, topk: &TopK, what: &str) -> Result<SplitMetrics> {
    if topk.count == 0 {
        return Err(Error::config(format!("none of the {what} images could be used (each was skipped, see above)")));
    }
    Ok(SplitMetrics::from_sums(loss_sum, topk))
}

/// A training run in progress, on one device or several ([`Placement`]).
pub struct Trainer {
    config: RunConfig,
    info: ModelInfo,
    engine: Box<dyn Engine>,
    /// This process's rank and the number of processes training together (`(0, 1)`
    /// unless distributed): each loads and evaluates its own share of every batch, and
    /// only rank 0 writes the run's files.
    process: (usize, usize),
    scheduler: LrScheduler,
    step: u64,
    epochs_done: usize,
    best_val_error: Option<f64>,
    data: Datasets,
    train_loader: Loader,
    ckpts: CheckpointDir,
    log: MetricsLog,
    step_log: StepLog,
    step_window: StepWindow,
    /// When this session started (the time budget counts from here).
    session_started: Instant,
    time_budget: Option<Duration>,
    /// Notes from opening the run (repairs, cleaned leftovers, changed data), given to the
    /// observer when training starts.
    notes: Vec<String>,
    /// Where a resumed run continues inside its current epoch, with that epoch's metrics so far.
    resume_at: Option<(DataPosition, PartialEpoch)>,
    last_save: Instant,
}

/// The resolved configuration's file name in a run folder.
pub const CONFIG_FILE: &str = "config.toml";
/// The training-curve plot's file name in a run folder.
pub const PLOT_FILE: &str = "curves.png";
/// The final result's file name in a run folder.
pub const RESULT_FILE: &str = "result.json";
/// The per-step log's file name in a run folder.
pub const STEPS_FILE: &str = "steps.jsonl";
/// A file of this name in a run folder stops the run before its next step, with a
/// checkpoint that `--resume` continues from; the file is removed when honoured.
pub const STOP_FILE: &str = "STOP";

/// How an epoch of training ended.
enum EpochEnd {
    /// All its batches trained: its training metrics and seconds.
    Finished(SplitMetrics, f64),
    /// Stopped inside it (step limit, STOP file, time budget) after a checkpoint there.
    Stopped(String),
}

/// The steps since the last `steps.jsonl` record.
struct StepWindow {
    steps: u64,
    loss_sum: f64,
    images: u64,
    /// Seconds spent in training steps (waiting for data included, evaluation not).
    seconds: f64,
}

impl StepWindow {
    const EMPTY: StepWindow = StepWindow { steps: 0, loss_sum: 0.0, images: 0, seconds: 0.0 };

    /// The record ending at `step` (`epoch` progress, rate `lr`); the window starts afresh.
    fn take(&mut self, step: u64, epoch: f64, lr: f32) -> StepRecord {
        let w = std::mem::replace(self, Self::EMPTY);
        StepRecord {
            step,
            epoch,
            loss: w.loss_sum / w.steps.max(1) as f64,
            lr,
            images_per_sec: w.images as f64 / w.seconds.max(1e-9),
        }
    }
}

impl Trainer {
    /// Starts a fresh run: opens the data, builds and initialises the model, creates the
    /// run folder and writes the resolved configuration. A folder that already holds
    /// checkpoints is refused (resume it, or pick another name). `placement` is a backend
    /// (`Arc<B>`) for one device, or a [`Placement`] for several.
    pub fn new<B: Backend + 'static>(config: RunConfig, placement: impl Into<Placement<B>>) -> Result<Self> {
        let mut placement = placement.into();
        let process = placement.process();
        let prepared = (|| -> Result<_> {
            config.validate()?;
            let run_dir = config.run_dir();
            let ckpt_dir = run_dir.join("checkpoints");
            if ckpt_dir.is_dir() && CheckpointDir::new(&ckpt_dir, 1)?.latest()?.is_some() {
                return Err(Error::config(format!(
                    "run folder {} already has checkpoints; pass --resume to continue it or --name to start another run",
                    run_dir.display()
                )));
            }
            let (data, info) = Self::open_data(&config)?;
            let scheduler = LrScheduler::new(config.optim.schedule, config.optim.lr, config.optim.epochs)?;
            let arch = info.architecture()?;
            let params = crate::interop::initial_params(&arch, &config)?;
            Ok((data, arch, info, scheduler, params))
        })();
        // A process that fails here ends its group, or the others would wait for it.
        let (data, arch, info, scheduler, params) = prepared.inspect_err(|e| placement.abort(&e.to_string()))?;
        let frozen = crate::interop::frozen_params(&arch, &config);
        let engine = build_engine(&arch, placement, &params, None, &frozen)?;
        let run_dir = config.run_dir();
        let log = MetricsLog::new(run_dir.join("metrics.jsonl"));
        Self::assemble(config, info, engine, process, scheduler, data, log, |trainer| {
            if process.0 == 0 {
                std::fs::create_dir_all(&run_dir).map_err(Error::io(&run_dir))?;
                crate::atomic::write_atomic(&run_dir.join(CONFIG_FILE), trainer.config.to_toml()?.as_bytes())?;
                trainer.log.truncate_after(0)?;
                trainer.step_log.truncate_after(0)?;
            }
            Ok(())
        })
    }

    /// Continues the run in `run_dir` from its newest checkpoint (at an epoch's end or inside
    /// an epoch), to exactly the result an uninterrupted run would have reached (same thread
    /// count). `epochs`, when given, replaces the planned epoch count. A step limit
    /// (`max_steps`) that stopped the earlier session does not carry over.
    pub fn resume<B: Backend + 'static>(
        run_dir: &Path,
        placement: impl Into<Placement<B>>,
        epochs: Option<usize>,
    ) -> Result<Self> {
        let mut placement = placement.into();
        let process = placement.process();
        let writes_files = process.0 == 0;
        let prepared = (|| -> Result<_> {
            // The run lives where it is resumed from, wherever it was started.
            let mut config = RunConfig::load_run(run_dir)?;
            config.optim.max_steps = None;
            if let Some(e) = epochs {
                config.optim.epochs = e;
            }
            let mut ckpts = CheckpointDir::new(config.run_dir().join("checkpoints"), config.output.keep_last)?;
            let mut notes = if writes_files { ckpts.clean_leftovers(&config.run_dir()) } else { Vec::new() };
            let (latest, ckpt, loaded_notes) = ckpts.resume_latest(writes_files)?;
            notes.extend(loaded_notes);
            let (mut data, info) = Self::open_data(&config)?;
            let saved = ModelInfo::from_metadata(&ckpt.metadata, &latest)?;
            notes.extend(data.keep_checkpoint_model(&saved, &info, &latest)?);
            Ok((config, ckpts, notes, ckpt, data, saved.architecture()?, saved))
        })();
        // A process that fails here ends its group, or the others would wait for it.
        let (config, ckpts, notes, ckpt, data, arch, saved) =
            prepared.inspect_err(|e| placement.abort(&e.to_string()))?;
        let frozen = crate::interop::frozen_params(&arch, &config);
        let engine = build_engine(&arch, placement, &ckpt.weights, Some(&ckpt.momentum), &frozen)?;
        let log = MetricsLog::new(config.run_dir().join("metrics.jsonl"));
        let mut scheduler = ckpt.state.scheduler.clone();
        scheduler.epochs = config.optim.epochs;
        let state = ckpt.state;
        Self::assemble(config, saved, engine, process, scheduler, data, log, |trainer| {
            trainer.step = state.step;
            trainer.epochs_done = state.epochs_done;
            trainer.best_val_error = state.best_val_error;
            trainer.resume_at = state.partial_epoch.map(|partial| (state.data, partial));
            trainer.ckpts = ckpts;
            trainer.notes.splice(0..0, notes);
            if writes_files {
                trainer.log.truncate_after(state.epochs_done as u64)?;
                trainer.step_log.truncate_after(state.step)?;
            }
            Ok(())
        })
    }

    fn open_data(config: &RunConfig) -> Result<(Datasets, ModelInfo)> {
        let train_dir = config.data.train.as_ref().ok_or_else(|| Error::config("no training data: pass --data DIR"))?;
        let input = input_for(config.preset, DataFormat::detect(train_dir)?)?;
        let data = Datasets::open(config, input)?;
        let n = &data.eval_transform.normalize;
        let info = ModelInfo {
            preset: config.preset,
            input,
            class_names: data.class_names.clone(),
            init: config.init,
            resize: data.eval_transform.resize.map(|r| r.size),
            mean: n.mean.clone(),
            std: n.std.clone(),
            lrn_groups: config.lrn_groups.unwrap_or(config.preset.default_lrn_groups()),
            layers: config.layers.clone(),
        };
        // Fail here, not after the first epoch, if the preset does not fit the input.
        info.architecture()?;
        Ok((data, info))
    }

    /// Puts a trainer together around `engine`, then `finish`es it (resume state, run
    /// files) and, in a group of processes, checks that all agree with rank 0. A failure
    /// ends the group, so that no other process waits for this one.
    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: RunConfig,
        info: ModelInfo,
        mut engine: Box<dyn Engine>,
        process: (usize, usize),
        scheduler: LrScheduler,
        mut data: Datasets,
        log: MetricsLog,
        finish: impl FnOnce(&mut Self) -> Result<()>,
    ) -> Result<Self> {
        let o = &config.optim;
        let loader_and_checkpoints = Datasets::loader(
            &data.train,
            data.train_transform.clone(),
            o.batch_size,
            config.data.workers,
            config.seed,
            true,
            process,
        )
        .and_then(|train| {
            Ok((train, CheckpointDir::new(config.run_dir().join("checkpoints"), config.output.keep_last)?))
        });
        let (train_loader, ckpts) = loader_and_checkpoints.inspect_err(|e| engine.abort(&e.to_string()))?;
        let notes = std::mem::take(&mut data.notes);
        let step_log = StepLog::new(config.run_dir().join(STEPS_FILE));
        let mut trainer = Self {
            config,
            info,
            engine,
            process,
            scheduler,
            step: 0,
            epochs_done: 0,
            best_val_error: None,
            data,
            train_loader,
            ckpts,
            log,
            step_log,
            step_window: StepWindow::EMPTY,
            session_started: Instant::now(),
            time_budget: None,
            notes,
            resume_at: None,
            last_save: Instant::now(),
        };
        let finished = finish(&mut trainer).and_then(|()| trainer.check_agreement());
        if let Err(e) = &finished
            && process.1 > 1
        {
            trainer.engine.abort(&e.to_string());
        }
        finished.map(|()| trainer)
    }

    /// Stops training once this session has run for `budget` (counted from the trainer's
    /// creation), before the next step and with a checkpoint there that resumes; `None`:
    /// no limit. In a group of processes rank 0's budget counts.
    pub fn set_time_budget(&mut self, budget: Option<Duration>) {
        self.time_budget = budget;
    }

    /// Why training should stop before the next step, if it should: the step limit, the
    /// time budget, or a [`STOP_FILE`] in the run folder (removed here). In a group of
    /// processes rank 0 decides the last two and the others follow at the same step.
    fn stop_reason(&mut self) -> Result<Option<String>> {
        if self.config.optim.max_steps.is_some_and(|m| self.step >= m) {
            return Ok(Some(format!("step limit {} reached", self.step)));
        }
        let mut reason = None;
        if self.process.0 == 0 {
            let stop = self.config.run_dir().join(STOP_FILE);
            if let Some(budget) = self.time_budget
                && self.session_started.elapsed() >= budget
            {
                reason = Some(format!("time budget of {:.1} minutes reached", budget.as_secs_f64() / 60.0));
            } else if stop.exists() {
                let removed = match std::fs::remove_file(&stop) {
                    Ok(()) => "removed".to_string(),
                    Err(e) => format!("could not remove it: {e}; remove it before resuming"),
                };
                reason = Some(format!("stop requested by {} ({removed})", stop.display()));
            }
        }
        if self.process.1 > 1 {
            let stop = self.engine.values_of_process_0("stop", &[u64::from(reason.is_some())])?[0] == 1;
            if stop && reason.is_none() {
                reason = Some("rank 0 stopped the group (STOP file or time budget)".to_string());
            }
        }
        Ok(reason)
    }

    /// In a group of processes: fails unless this process agrees with rank 0 about what
    /// makes the ranks take their steps together.
    fn check_agreement(&mut self) -> Result<()> {
        if self.process.1 == 1 {
            return Ok(());
        }
        let position = self.resume_at.as_ref().map_or((self.epochs_done, 0), |(at, _)| (at.epoch, at.batch));
        let facts = [
            ("the batch size", self.config.optim.batch_size as u64),
            ("the number of training images", self.data.train.len() as u64),
            ("the seed", self.config.seed),
            ("the planned epochs", self.config.optim.epochs as u64),
            ("the step limit", self.config.optim.max_steps.unwrap_or(u64::MAX)),
            ("the step (of the checkpoint resumed)", self.step),
            ("the epoch of the data position", position.0 as u64),
            ("the batch of the data position", position.1 as u64),
        ];
        let mine: Vec<u64> = facts.iter().map(|f| f.1).collect();
        let root = self.engine.values_of_process_0("agreement", &mine)?;
        for ((what, here), there) in facts.iter().zip(root) {
            if *here != there {
                return Err(Error::config(format!(
                    "rank {} of {} disagrees with rank 0 about {what}: {here} here, {there} on rank 0; every rank \
                     needs the same options and data, and to resume, the same run folder (a shared file system)",
                    self.process.0, self.process.1
                )));
            }
        }
        Ok(())
    }

    /// The resolved configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The resolved architecture.
    pub fn arch(&self) -> &Architecture {
        self.engine.arch()
    }

    /// Every parameter (and state) copied to the host, in layer order.
    pub fn params_to_host(&self) -> Result<TensorMap> {
        self.engine.params_to_host()
    }

    /// Momentum buffers copied to the host, keyed by parameter name.
    pub fn momentum_to_host(&self) -> Result<TensorMap> {
        self.engine.momentum_to_host()
    }

    /// What exchanging gradients between devices or processes has cost so far (`None` on
    /// one device).
    pub fn exchange_stats(&self) -> Option<crate::parallel::ExchangeStats> {
        self.engine.exchange_stats()
    }

    /// The model description saved with checkpoints.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Global step (batches trained).
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Epochs finished.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Samples in the training, validation and test splits.
    pub fn split_sizes(&self) -> (usize, Option<usize>, Option<usize>) {
        (self.data.train.len(), self.data.val.as_ref().map(|s| s.len()), self.data.test.as_ref().map(|s| s.len()))
    }

    fn eval_loader(&self, source: &Arc<dyn alexnet_augment::Source>, transform: Transform) -> Result<Loader> {
        let c = &self.config;
        Datasets::loader(source, transform, c.optim.eval_batch_size, c.data.workers, 0, false, self.process)
    }

    /// Evaluates the current weights on the validation (`test = false`) or test split,
    /// centre crop or ten crops.
    pub fn evaluate_split(
        &mut self,
        test: bool,
        ten_crop: bool,
        obs: &mut dyn Observer,
    ) -> Result<Option<SplitMetrics>> {
        let source = if test { self.data.test.clone() } else { self.data.val.clone() };
        let Some(source) = source else { return Ok(None) };
        let mut transform = self.data.eval_transform.clone();
        if ten_crop {
            transform.augment = Augment::TenCrop(TenCrop { size: self.info.input[1] });
        }
        let loader = self.eval_loader(&source, transform)?;
        let what = if test { "test" } else { "validation" };
        let classes = self.info.class_names.len();
        let engine = &mut self.engine;
        let (mut loss_sum, mut topk) =
            evaluate_sums(&mut |images, shape| engine.logits(images, shape), classes, &loader, what, obs)?;
        if self.process.1 > 1 {
            // Each process evaluated its shares: every one gets the whole split's figures
            // (the schedule's decisions must agree).
            let t = &topk;
            let sums = self.engine.sum_over_processes(
                what,
                vec![loss_sum as f32, t.count as f32, t.top1_correct as f32, t.top5_correct as f32],
            )?;
            loss_sum = f64::from(sums[0]);
            topk = TopK { count: sums[1] as u64, top1_correct: sums[2] as u64, top5_correct: sums[3] as u64 };
        }
        split_metrics(loss_sum, &topk, what).map(Some)
    }

    /// Trains until the planned epochs are done (or the schedule stops it), checkpointing
    /// after every epoch, then evaluates the test split. In a group of processes, a failure
    /// ends the group ([`crate::Collective::abort`]), so that no process waits for this one.
    pub fn fit(&mut self, obs: &mut dyn Observer) -> Result<RunResult> {
        let result = self.fit_to_the_end(obs);
        if let Err(e) = &result
            && self.process.1 > 1
        {
            self.engine.abort(&e.to_string());
        }
        result
    }

    fn fit_to_the_end(&mut self, obs: &mut dyn Observer) -> Result<RunResult> {
        for note in std::mem::take(&mut self.notes) {
            obs.note(&note);
        }
        let started = Instant::now();
        // A run resumed after its last epoch reports the validation that epoch logged.
        let mut last_val = self.log.read().ok().and_then(|records| records.last().and_then(|r| r.val));
        // The test split's metrics and the step they were taken at.
        let mut last_test = None;
        let mut stopped_early = None;
        let epochs = self.config.optim.epochs;
        while self.epochs_done < epochs {
            let epoch = self.epochs_done;
            let (train, seconds) = match self.train_epoch(epoch, obs)? {
                EpochEnd::Finished(train, seconds) => (train, seconds),
                EpochEnd::Stopped(reason) => {
                    stopped_early = Some(reason);
                    break;
                }
            };
            let val = self.evaluate_split(false, false, obs)?;
            last_val = val;
            // Without a validation split the test split draws the held-out curve (as
            // torchvision's reference scripts evaluate their validation set every epoch);
            // it decides nothing (schedule, best checkpoint).
            let test = if val.is_none() { self.evaluate_split(true, false, obs)? } else { None };
            if test.is_some() {
                last_test = Some((self.step, test));
            }
            self.epochs_done += 1;
            let decision = self.scheduler.end_epoch(epoch, val.map(|v| v.top1_error));
            let record = EpochRecord {
                epoch: self.epochs_done,
                step: self.step,
                lr: self.scheduler.lr(self.epochs_done as f64),
                train,
                val,
                test,
                images_per_sec: train.images as f64 / seconds.max(1e-9),
                seconds,
            };
            if self.process.0 == 0 {
                self.log.append(&record)?;
                plot_curves(&self.log.read()?, &self.config.run_dir().join(PLOT_FILE))?;
            }
            let is_best = match (val, self.best_val_error) {
                (Some(v), Some(best)) => v.top1_error < best,
                (Some(_), None) | (None, _) => true,
            };
            if let (true, Some(v)) = (is_best, val) {
                self.best_val_error = Some(v.top1_error);
            }
            let saved = self.save_checkpoint(DataPosition { epoch: self.epochs_done, batch: 0 }, None, is_best, obs)?;
            obs.epoch_end(&record);
            if let Some(path) = saved {
                obs.note(&format!("checkpoint {}", path.display()));
            }
            if decision.reduced {
                obs.note(&format!("validation error stalled: learning rate now {:.2e}", self.scheduler.lr(0.0)));
            }
            if decision.stop {
                stopped_early = Some("validation error stalled after the last learning-rate reduction".to_string());
                break;
            }
        }
        let test = match last_test {
            Some((step, test)) if step == self.step => test,
            _ => self.evaluate_split(true, false, obs)?,
        };
        let result = RunResult {
            run_dir: self.config.run_dir(),
            epochs: self.epochs_done,
            steps: self.step,
            test,
            val: last_val,
            stopped_early,
            seconds: started.elapsed().as_secs_f64(),
        };
        if self.process.0 == 0 {
            let json = serde_json::to_string_pretty(&result).map_err(|e| Error::config(e.to_string()))?;
            crate::atomic::write_atomic(&self.config.run_dir().join(RESULT_FILE), json.as_bytes())?;
        }
        Ok(result)
    }

    /// One epoch of SGD (the rest of it, when resumed inside it): returns the epoch's
    /// training metrics and seconds, or why it stopped early (after a checkpoint at that
    /// point). Checkpoints inside the epoch every `checkpoint_minutes`; appends to
    /// `steps.jsonl` every `log_every_steps`.
    fn train_epoch(&mut self, epoch: usize, obs: &mut dyn Observer) -> Result<EpochEnd> {
        let o = self.config.optim.clone();
        let batches = self.train_loader.batches_per_epoch();
        let (first_batch, mut partial) = match self.resume_at.take() {
            Some((at, partial)) if at.epoch == epoch => (at.batch, partial),
            _ => (0, PartialEpoch::default()),
        };
        let save_every = self.config.output.checkpoint_minutes * 60.0;
        obs.epoch_start(epoch, o.epochs, batches);
        let started = Instant::now();
        let seconds_before = partial.seconds;
        let elapsed = || seconds_before + started.elapsed().as_secs_f64();
        let log_every = self.config.output.log_every_steps;
        let mut tick = Instant::now();
        for batch in self.train_loader.epoch_from(epoch as u64, first_batch) {
            if let Some(reason) = self.stop_reason()? {
                partial.seconds = elapsed();
                let at = DataPosition { epoch, batch: batch.number };
                let saved = self.save_checkpoint(at, Some(partial), false, obs)?;
                report_skips(&self.train_loader, obs);
                if let Some(path) = saved {
                    obs.note(&format!("{reason}: checkpoint {} (resuming continues this epoch)", path.display()));
                }
                return Ok(EpochEnd::Stopped(reason));
            }
            let lr = self.scheduler.lr(epoch as f64 + batch.number as f64 / batches as f64);
            let labels: Vec<usize> = batch.labels.iter().map(|&l| l as usize).collect();
            let shape: [usize; 4] = batch.shape.as_slice().try_into().map_err(|_| {
                Error::config(format!(
                    "the loader gave a batch of shape {:?}; images must be [n, c, h, w]",
                    batch.shape
                ))
            })?;
            let out = self.engine.forward_backward(&StepInput {
                images: &batch.images,
                shape,
                labels: &labels,
                dropout_seed: mix64(self.config.seed, self.step),
            })?;
            if out.topk.count == 0 {
                // Every share of the batch was skipped (a group of processes sees such
                // batches; one process is never given them).
                continue;
            }
            let loss_value = out.loss;
            if !loss_value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    step: self.step,
                    epoch,
                    loss: loss_value,
                    last_good: self.ckpts.last_good(self.step),
                });
            }
            partial.topk.merge(&out.topk);
            partial.loss_sum += f64::from(loss_value) * out.topk.count as f64;
            self.engine.sgd_step(&SgdStep { lr, momentum: o.momentum, weight_decay: o.weight_decay })?;
            self.step += 1;
            let w = &mut self.step_window;
            w.steps += 1;
            w.loss_sum += f64::from(loss_value);
            w.images += out.topk.count;
            w.seconds += tick.elapsed().as_secs_f64();
            tick = Instant::now();
            if log_every > 0 && self.step.is_multiple_of(log_every) {
                let progress = epoch as f64 + (batch.number + 1) as f64 / batches as f64;
                let record = self.step_window.take(self.step, progress, lr);
                if self.process.0 == 0 {
                    self.step_log.append(&record)?;
                }
            }
            obs.batch_end(&BatchReport {
                epoch,
                batch: batch.number,
                batches,
                loss: loss_value,
                lr,
                images_per_sec: partial.topk.count as f64 / elapsed().max(1e-9),
            });
            let next = batch.number + 1;
            if save_every > 0.0 && next < batches && self.last_save.elapsed().as_secs_f64() >= save_every {
                partial.seconds = elapsed();
                if let Some(path) =
                    self.save_checkpoint(DataPosition { epoch, batch: next }, Some(partial), false, obs)?
                {
                    obs.note(&format!("checkpoint {}", path.display()));
                }
            }
        }
        report_skips(&self.train_loader, obs);
        Ok(EpochEnd::Finished(SplitMetrics::from_sums(partial.loss_sum, &partial.topk), elapsed()))
    }

    /// Saves a checkpoint whose data continue at `at` (batch 0: an epoch's end), with the
    /// metrics so far of the epoch it stops inside; pruning's problems go to `obs`.
    /// Returns its path on rank 0, `None` on the other ranks of a group (which write nothing).
    fn save_checkpoint(
        &mut self,
        at: DataPosition,
        partial_epoch: Option<PartialEpoch>,
        is_best: bool,
        obs: &mut dyn Observer,
    ) -> Result<Option<PathBuf>> {
        assert_eq!(at.epoch, self.epochs_done, "a checkpoint's data continue in the epoch after those done");
        let mut state = TrainingState::new(at, self.step, self.scheduler.clone(), self.config.seed);
        state.partial_epoch = partial_epoch;
        state.best_val_error = self.best_val_error;
        if self.process.0 != 0 {
            // Rank 0 writes it; the others keep its schedule.
            self.last_save = Instant::now();
            return Ok(None);
        }
        let ckpt = Checkpoint {
            weights: self.engine.params_to_host()?,
            momentum: self.engine.momentum_to_host()?,
            state,
            metadata: self.info.to_metadata(),
        };
        let (path, notes) = self.ckpts.save(&ckpt, is_best)?;
        notes.iter().for_each(|n| obs.note(n));
        self.last_save = Instant::now();
        Ok(Some(path))
    }
}

/// A model loaded from a weights file for evaluation or prediction.
pub struct LoadedModel<B: Backend> {
    /// The model.
    pub model: Model<B>,
    /// Its description.
    pub info: ModelInfo,
}

/// Loads the weights file `path` (a checkpoint's `.safetensors`, `best.safetensors`, a
/// checkpoint's `.state.json`, or a run folder, meaning its best weights).
pub fn load_model<B: Backend>(path: &Path, backend: Arc<B>) -> Result<LoadedModel<B>> {
    let weights = resolve_weights_path(path)?;
    let (params, metadata) = crate::checkpoint::load_tensors(&weights)?;
    let info = ModelInfo::from_metadata(&metadata, &weights)?;
    let arch: Architecture = info.architecture()?;
    let model = Model::from_params(arch, backend, &params)
        .map_err(|e| Error::Checkpoint { path: weights.clone(), reason: e.to_string() })?;
    Ok(LoadedModel { model, info })
}

pub(crate) fn resolve_weights_path(path: &Path) -> Result<PathBuf> {
    if path.is_dir() {
        let ckpts = path.join("checkpoints");
        return crate::checkpoint::committed_best(if ckpts.is_dir() { &ckpts } else { path });
    }
    if path.to_string_lossy().ends_with(".state.json") {
        let state = TrainingState::load(path)?;
        return Ok(path.parent().unwrap_or(Path::new(".")).join(state.weights));
    }
    if !path.exists() {
        return Err(Error::config(format!("checkpoint {} does not exist", path.display())));
    }
    Ok(path.to_path_buf())
}

/// The result of evaluating a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    /// The weights file.
    pub weights: PathBuf,
    /// What was evaluated: the run's `test` or `validation` split, or a folder.
    pub split: String,
    /// Whether ten crops were averaged.
    pub ten_crop: bool,
    /// The metrics.
    pub metrics: SplitMetrics,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.metrics;
        write!(
            f,
            "{} on {} {} images ({}): top-1 error {:.2}% (accuracy {:.2}%), top-5 error {:.2}%, loss {:.4}",
            self.weights.display(),
            m.images,
            self.split,
            if self.ten_crop { "ten-crop" } else { "centre crop" },
            100.0 * m.top1_error,
            100.0 * (1.0 - m.top1_error),
            100.0 * m.top5_error,
            m.loss
        )
    }
}

/// The run configuration beside a weights file (`<run>/config.toml` above it), if any.
fn run_config_for(weights: &Path) -> Result<Option<RunConfig>> {
    let abs = std::path::absolute(weights).map_err(Error::io(weights))?;
    for dir in abs.ancestors().skip(1).take(3) {
        if dir.join(CONFIG_FILE).exists() {
            return RunConfig::load_run(dir).map(Some);
        }
    }
    Ok(None)
}

/// What [`evaluate_checkpoint`] evaluates.
#[derive(Debug, Clone, Default)]
pub struct EvalRequest {
    /// Every image of this folder (the test files of an IDX or CIFAR-10 folder) instead of a
    /// split of the checkpoint's run.
    pub data: Option<PathBuf>,
    /// The run's validation split instead of its test split (without `data`).
    pub validation: bool,
    /// The paper's ten-crop evaluation.
    pub ten_crop: bool,
    /// The largest image decoded (default: the run's setting, else 64 megapixels).
    pub max_image_pixels: Option<u64>,
}

/// Evaluates a checkpoint with the centre crop or ten crops, normalised with the statistics
/// it recorded: on every image of `request.data`, or on the test (validation) split of its
/// run. Non-finite outputs are an error, never a score.
pub fn evaluate_checkpoint<B: Backend>(
    checkpoint: &Path,
    request: &EvalRequest,
    backend: Arc<B>,
    obs: &mut dyn Observer,
) -> Result<EvalReport> {
    let weights = resolve_weights_path(checkpoint)?;
    let LoadedModel { mut model, info } = load_model(&weights, backend.clone())?;
    let run_config = run_config_for(&weights)?;
    let (split, source, config) = match (&request.data, run_config) {
        (Some(dir), config) => {
            let (_, source) = crate::data::open_whole(dir)?;
            if source.class_names() != info.class_names.as_slice() {
                return Err(Error::config(format!(
                    "{} has the classes {:?}, the checkpoint {:?}; evaluate on data with the checkpoint's classes",
                    dir.display(),
                    source.class_names(),
                    info.class_names
                )));
            }
            (
                format!("images in {}", dir.display()),
                source,
                config.unwrap_or_else(|| RunConfig::for_preset(info.preset)),
            )
        }
        (None, Some(config)) => {
            let splits = crate::data::Splits::open(&config)?;
            let (split, source) = if request.validation { ("validation", splits.val) } else { ("test", splits.test) };
            let source = source.ok_or_else(|| {
                Error::config(format!("the run has no {split} split; pass --data with a folder to evaluate on"))
            })?;
            (split.to_string(), source, config)
        }
        (None, None) => {
            return Err(Error::config(format!(
                "no config.toml of a run found above {}; pass --data DIR",
                weights.display()
            )));
        }
    };
    let max_pixels = request.max_image_pixels.unwrap_or(config.data.max_image_pixels);
    let mut transform = crate::data::eval_transform(&info, max_pixels)?;
    if request.ten_crop {
        transform.augment = Augment::TenCrop(TenCrop { size: info.input[1] });
    }
    let loader =
        Datasets::loader(&source, transform, config.optim.eval_batch_size, config.data.workers, 0, false, (0, 1))?;
    let mut tape = Tape::inference(backend);
    let classes = info.class_names.len();
    let metrics = evaluate(&mut model_logits(&mut model, &mut tape), classes, &loader, &split, obs)?;
    Ok(EvalReport { weights, split, ten_crop: request.ten_crop, metrics })
}

/// The most probable classes of an image (at most five), with their probabilities, best first.
pub type TopClasses = Vec<(String, f32)>;

/// The five most probable classes of each image file with their probabilities, or why that
/// file cannot be used (unreadable, not an image, over `max_image_pixels`, a non-finite
/// output): one result per file, in order. Only a checkpoint that cannot be loaded is an
/// error for all of them.
pub fn predict_files<B: Backend>(
    checkpoint: &Path,
    images: &[PathBuf],
    max_image_pixels: u64,
    backend: Arc<B>,
) -> Result<Vec<Result<TopClasses>>> {
    let LoadedModel { mut model, info } = load_model(checkpoint, backend.clone())?;
    let mut transform = crate::data::eval_transform(&info, max_image_pixels)?;
    let [c, h, w] = info.input;
    // Files of any size: models trained on fixed-size data (IDX, CIFAR) see them resized.
    transform.resize.get_or_insert(alexnet_augment::ResizeCentreCrop { size: h });
    let mut scratch = alexnet_augment::Scratch::new();
    let mut tape = Tape::inference(backend);
    let mut pixels = vec![0.0f32; transform.sample_len()];
    let classes = info.class_names.len();
    let mut predict = |path: &PathBuf| -> Result<TopClasses> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let mut rng = alexnet_augment::sample_rng(0, 0, 0);
        transform
            .apply(alexnet_augment::RawSample::Encoded(bytes), &mut rng, &mut scratch, &mut pixels)
            .map_err(|reason| Error::Image { path: path.clone(), reason })?;
        tape.reset();
        let x = tape.input(&pixels, &[1, c, h, w])?;
        let logits = model.forward(&mut tape, x, 0)?;
        let mut probs = tape.to_host(logits)?;
        softmax_rows(&mut probs, classes, || path.display().to_string())?;
        let mut ranked: Vec<(String, f32)> = info.class_names.iter().cloned().zip(probs).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked.truncate(5);
        Ok(ranked)
    };
    Ok(images.iter().map(&mut predict).collect())
}
