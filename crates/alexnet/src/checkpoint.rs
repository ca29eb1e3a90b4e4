//! Checkpoints: weights as safetensors, optimiser momentum as safetensors, and the
//! training state as JSON, each written atomically.
//!
//! A checkpoint `epoch-0003` in a run's `checkpoints/` folder is three files:
//!
//! - `epoch-0003.safetensors`: every parameter (and batch-norm running statistic) under
//!   its parameter-store name (`conv1.weight` `[96, 3, 11, 11]`, `fc6.weight`
//!   `[4096, 9216]`, ...), `F32`, row-major, PyTorch's layouts. The file is a plain
//!   safetensors file, so PyTorch reads it with
//!   `safetensors.torch.load_file("epoch-0003.safetensors")`; the header's `__metadata__`
//!   holds `format = pt`, the model (`alexnet-rs.model`, JSON: preset, input, classes,
//!   class names, normalisation) and a SHA-256 of the tensor bytes that loading verifies.
//! - `epoch-0003.momentum.safetensors`: the SGD velocity of every trainable parameter,
//!   under the same names.
//! - `epoch-0003.state.json`: epoch, global step, schedule state and the data position;
//!   written last, so a checkpoint without it is incomplete and ignored.
//!
//! Checkpoints inside an epoch (every `checkpoint_minutes`, and where `--max-steps` stops a
//! run) are named `epoch-0003_batch-00000120`: three epochs done, the fourth continues at
//! batch 120. Names sort in training order.
//!
//! Writes go to a temporary file in the same folder, are fsynced and renamed into place,
//! so a crash never leaves a half-written checkpoint under the real name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use alexnet_autograd::HostTensor;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::write_atomic;
use crate::error::{Error, Result};
use crate::metrics::TopK;
use crate::schedule::LrScheduler;

/// Named host tensors in a fixed order: the unit of import and export.
pub type TensorMap = Vec<(String, HostTensor)>;

/// The metadata key holding the format marker.
const FORMAT_KEY: &str = "alexnet-rs.format";
/// The format marker of weight files written by this crate.
const FORMAT: &str = "alexnet-rs/weights/1";
/// The metadata key holding the SHA-256 of the tensor bytes.
const SHA_KEY: &str = "alexnet-rs.sha256";
/// The format marker of training-state files.
const STATE_FORMAT: &str = "alexnet-rs/train-state/1";

/// Serialises `tensors` as safetensors with `metadata` plus the format marker and checksum.
pub fn save_tensors(path: &Path, tensors: &[(String, HostTensor)], metadata: HashMap<String, String>) -> Result<()> {
    let bytes = tensors_to_bytes(tensors, metadata)?;
    write_atomic(path, &bytes)
}

fn tensors_to_bytes(tensors: &[(String, HostTensor)], mut metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let raw: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(name, t)| (name.clone(), t.dims.clone(), f32_to_le(&t.data))).collect();
    let views = raw
        .iter()
        .map(|(name, dims, bytes)| {
            safetensors::tensor::TensorView::new(Dtype::F32, dims.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::config(format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // safetensors orders the payload by dtype then name; hash the tensors in name order,
    // which is what `load_tensors` sees too.
    metadata.insert(SHA_KEY.into(), payload_digest(raw.iter().map(|(n, _, b)| (n.as_str(), b.as_slice()))));
    metadata.insert(FORMAT_KEY.into(), FORMAT.into());
    metadata.entry("format".into()).or_insert_with(|| "pt".into());
    safetensors::serialize(views, Some(metadata)).map_err(|e| Error::config(format!("safetensors: {e}")))
}

fn f32_to_le(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// SHA-256 over the tensors' names and bytes, in name order.
fn payload_digest<'a>(tensors: impl Iterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut sorted: Vec<(&str, &[u8])> = tensors.collect();
    sorted.sort_by_key(|(n, _)| *n);
    let mut hasher = Sha256::new();
    for (name, bytes) in sorted {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a safetensors file written by [`save_tensors`]: its tensors (in name order) and
/// metadata. Truncated, corrupted (checksum mismatch) and foreign files (no alexnet-rs
/// marker, or tensors that are not `F32`) are [`Error::Checkpoint`] errors.
pub fn load_tensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        bad(format!("not a readable safetensors file ({e}); it may be truncated or not a checkpoint at all"))
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("unreadable header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    match metadata.get(FORMAT_KEY) {
        Some(f) if f == FORMAT => {}
        Some(f) => return Err(bad(format!("format `{f}` is not `{FORMAT}`; written by another version?"))),
        None => return Err(bad("not written by alexnet-rs (no `alexnet-rs.format` in its metadata)".into())),
    }
    let mut tensors: Vec<(String, HostTensor)> = Vec::with_capacity(st.len());
    let mut names = st.names();
    names.sort_unstable();
    for name in names {
        let view = st.tensor(name).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!("tensor {name} is {:?}, expected F32", view.dtype())));
        }
        let data: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let t = HostTensor::new(view.shape(), data).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        tensors.push((name.to_string(), t));
    }
    let expected = metadata.get(SHA_KEY).ok_or_else(|| bad("no checksum in its metadata".into()))?;
    let got = payload_digest(st.iter().map(|(n, v)| (n, v.data())));
    if *expected != got {
        return Err(bad("checksum mismatch: the file is corrupted".into()));
    }
    Ok((tensors, metadata))
}

/// Where the data loader stands: epoch and batch within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Epoch (0-based) the next batch belongs to.
    pub epoch: usize,
    /// Index of the next batch within that epoch.
    pub batch: usize,
}

/// The training metrics of an epoch so far, saved with a checkpoint inside the epoch so that
/// the resumed epoch reports the same figures as an uninterrupted one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    /// Sum of the per-image losses.
    pub loss_sum: f64,
    /// Top-1/top-5 counts.
    pub topk: TopK,
    /// Seconds spent training in the epoch.
    pub seconds: f64,
}

/// Everything besides weights and momentum that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Format marker.
    pub format: String,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Global step (batches trained).
    pub step: u64,
    /// The learning-rate schedule and its state.
    pub scheduler: LrScheduler,
    /// The run's seed (initialisation, data order, augmentation and dropout derive from it).
    pub seed: u64,
    /// Where the data loader continues.
    pub data: DataPosition,
    /// The running training metrics of the epoch `data` is in, for a checkpoint inside an
    /// epoch (absent at epoch ends).
    #[serde(default)]
    pub partial_epoch: Option<PartialEpoch>,
    /// The best validation top-1 error so far.
    pub best_val_error: Option<f64>,
    /// The weights file (name within the folder).
    pub weights: String,
    /// The momentum file (name within the folder).
    pub momentum: String,
}

impl TrainingState {
    /// The state record of a checkpoint whose data continue at `at` (batch 0: an epoch's
    /// end; `at.epoch` epochs are done either way), named [`CheckpointDir::stem`]`(at)`.
    pub fn new(at: DataPosition, step: u64, scheduler: LrScheduler, seed: u64) -> Self {
        let stem = CheckpointDir::stem(at);
        Self {
            format: STATE_FORMAT.into(),
            epochs_done: at.epoch,
            step,
            scheduler,
            seed,
            data: at,
            partial_epoch: None,
            best_val_error: None,
            weights: format!("{stem}.safetensors"),
            momentum: format!("{stem}.momentum.safetensors"),
        }
    }

    /// Reads and checks a state file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
        let state: TrainingState = serde_json::from_str(&text)
            .map_err(|e| bad(format!("not a training-state file ({e}); truncated or foreign?")))?;
        if state.format != STATE_FORMAT {
            return Err(bad(format!("format `{}` is not `{STATE_FORMAT}`", state.format)));
        }
        Ok(state)
    }
}

/// A complete checkpoint in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Parameter values (and batch-norm state) by name.
    pub weights: TensorMap,
    /// Momentum buffers by parameter name.
    pub momentum: TensorMap,
    /// Training state.
    pub state: TrainingState,
    /// The weights file's metadata (model description, format, checksum).
    pub metadata: HashMap<String, String>,
}

/// Saves and finds checkpoints in one folder, keeping the last `keep_last` and the best.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
    keep_last: usize,
}

/// The name of the best checkpoint's weights file.
pub const BEST_WEIGHTS: &str = "best.safetensors";

impl CheckpointDir {
    /// A checkpoint folder (created when missing) keeping the newest `keep_last` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(Self { dir, keep_last: keep_last.max(1) })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoint name for data position `at`: `epoch-0003` at an epoch's end (three
    /// done), `epoch-0003_batch-00000120` inside the fourth. `_` sorts after `.`, so names
    /// sort in training order.
    pub fn stem(at: DataPosition) -> String {
        match at.batch {
            0 => format!("epoch-{:04}", at.epoch),
            batch => format!("epoch-{:04}_batch-{batch:08}", at.epoch),
        }
    }

    /// Writes a checkpoint (weights, momentum, then the state file that commits it) and
    /// removes checkpoints beyond the newest `keep_last`. With `is_best`, the weights are
    /// also written as `best.safetensors`. Returns the weights file's path.
    pub fn save(&self, ckpt: &Checkpoint, is_best: bool) -> Result<PathBuf> {
        let state = &ckpt.state;
        let weights_path = self.dir.join(&state.weights);
        let weight_bytes = tensors_to_bytes(&ckpt.weights, ckpt.metadata.clone())?;
        write_atomic(&weights_path, &weight_bytes)?;
        save_tensors(&self.dir.join(&state.momentum), &ckpt.momentum, HashMap::new())?;
        let json = serde_json::to_string_pretty(state).map_err(|e| Error::config(e.to_string()))?;
        let stem = state.weights.trim_end_matches(".safetensors");
        write_atomic(&self.dir.join(format!("{stem}.state.json")), json.as_bytes())?;
        if is_best {
            write_atomic(&self.dir.join(BEST_WEIGHTS), &weight_bytes)?;
        }
        self.prune()?;
        Ok(weights_path)
    }

    /// State files of complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        let mut states: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(Error::io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".state.json")))
            .collect();
        states.sort();
        Ok(states)
    }

    /// The newest complete checkpoint's state file, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop())
    }

    fn prune(&self) -> Result<()> {
        let states = self.list()?;
        let excess = states.len().saturating_sub(self.keep_last);
        for state_path in &states[..excess] {
            let state = TrainingState::load(state_path)?;
            // Remove the state file first: a crash midway leaves orphans, never a
            // state file pointing at missing weights.
            std::fs::remove_file(state_path).map_err(Error::io(state_path))?;
            for f in [&state.weights, &state.momentum] {
                let p = self.dir.join(f);
                if p.exists() {
                    std::fs::remove_file(&p).map_err(Error::io(&p))?;
                }
            }
        }
        Ok(())
    }

    /// Loads the checkpoint whose state file is `state_path`.
    pub fn load(state_path: &Path) -> Result<Checkpoint> {
        let state = TrainingState::load(state_path)?;
        let dir = state_path.parent().unwrap_or(Path::new("."));
        let (weights, metadata) = load_tensors(&dir.join(&state.weights))?;
        let (momentum, _) = load_tensors(&dir.join(&state.momentum))?;
        Ok(Checkpoint { weights, momentum, state, metadata })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;

    fn tensors() -> TensorMap {
        vec![
            ("conv1.weight".into(), HostTensor::new(&[2, 1, 2, 2], (0..8).map(|i| i as f32 * 0.5).collect()).unwrap()),
            ("conv1.bias".into(), HostTensor::new(&[2], vec![1.0, -2.5]).unwrap()),
            ("fc.weight".into(), HostTensor::new(&[3, 2], vec![f32::MIN_POSITIVE, 1e30, -0.0, 3.0, 4.0, 5.0]).unwrap()),
        ]
    }

    fn sorted(mut m: TensorMap) -> TensorMap {
        m.sort_by(|a, b| a.0.cmp(&b.0));
        m
    }

    #[test]
    fn tensors_round_trip_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let meta = HashMap::from([("alexnet-rs.model".to_string(), "{}".to_string())]);
        save_tensors(&path, &tensors(), meta).unwrap();
        let (back, meta) = load_tensors(&path).unwrap();
        assert_eq!(back, sorted(tensors()));
        assert_eq!(meta["format"], "pt");
        assert_eq!(meta["alexnet-rs.model"], "{}");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn truncated_corrupted_and_foreign_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_tensors(&path, &tensors(), HashMap::new()).unwrap();
        let good = std::fs::read(&path).unwrap();

        let truncated = dir.path().join("truncated.safetensors");
        std::fs::write(&truncated, &good[..good.len() - 5]).unwrap();
        let err = load_tensors(&truncated).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("truncated.safetensors"), "{err}");

        let corrupted = dir.path().join("corrupted.safetensors");
        let mut bytes = good.clone();
        *bytes.last_mut().unwrap() ^= 0x40;
        std::fs::write(&corrupted, &bytes).unwrap();
        let err = load_tensors(&corrupted).unwrap_err().to_string();
        assert!(err.contains("checksum mismatch"), "{err}");

        // A valid safetensors file from elsewhere (no alexnet-rs marker).
        let foreign = dir.path().join("foreign.safetensors");
        let data = f32_to_le(&[1.0, 2.0]);
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        std::fs::write(&foreign, safetensors::serialize([("x", view)], None).unwrap()).unwrap();
        let err = load_tensors(&foreign).unwrap_err().to_string();
        assert!(err.contains("not written by alexnet-rs"), "{err}");

        let garbage = dir.path().join("garbage.safetensors");
        std::fs::write(&garbage, b"hello, this is not a checkpoint").unwrap();
        assert!(matches!(load_tensors(&garbage), Err(Error::Checkpoint { .. })));

        let state = dir.path().join("x.state.json");
        std::fs::write(&state, "{\"format\": \"alexnet-rs/train-state/1\", \"epochs").unwrap();
        let err = TrainingState::load(&state).unwrap_err().to_string();
        assert!(err.contains("truncated or foreign"), "{err}");
    }

    #[test]
    fn checkpoint_names_sort_in_training_order() {
        let at = |epoch, batch| CheckpointDir::stem(DataPosition { epoch, batch });
        let order = [at(3, 0), at(3, 7), at(3, 120), at(4, 0), at(4, 1), at(10, 0)];
        let mut files: Vec<String> = order.iter().rev().map(|s| format!("{s}.state.json")).collect();
        files.sort();
        let want: Vec<String> = order.iter().map(|s| format!("{s}.state.json")).collect();
        assert_eq!(files, want);
    }

    #[test]
    fn checkpoint_dir_keeps_last_n_and_best() {
        let dir = tempfile::tempdir().unwrap();
        let ckpts = CheckpointDir::new(dir.path().join("checkpoints"), 2).unwrap();
        let sched = LrScheduler::new(Schedule::Constant, 0.1, 5).unwrap();
        for epoch in 1..=4 {
            let state = TrainingState::new(DataPosition { epoch, batch: 0 }, epoch as u64 * 7, sched.clone(), 42);
            let ckpt = Checkpoint { weights: tensors(), momentum: tensors(), state, metadata: HashMap::new() };
            ckpts.save(&ckpt, epoch == 2).unwrap();
        }
        let names: Vec<String> =
            ckpts.list().unwrap().iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["epoch-0003.state.json", "epoch-0004.state.json"]);
        assert!(!ckpts.dir().join("epoch-0001.safetensors").exists());
        assert!(ckpts.dir().join(BEST_WEIGHTS).exists());
        let latest = CheckpointDir::load(&ckpts.latest().unwrap().unwrap()).unwrap();
        assert_eq!(latest.state.step, 28);
        assert_eq!(latest.weights, sorted(tensors()));
        assert_eq!(latest.momentum, sorted(tensors()));
    }
}
