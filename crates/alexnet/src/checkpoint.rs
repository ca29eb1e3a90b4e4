//! Checkpoints: weights as safetensors, optimiser momentum as safetensors, and the
//! training state as JSON, each written atomically; the state file commits them.
//!
//! A checkpoint `epoch-0003` in a run's `checkpoints/` folder is three files:
//!
//! - `epoch-0003.safetensors`: every parameter (and batch-norm running statistic) under
//!   its parameter-store name (`conv1.weight` `[96, 3, 11, 11]`, `fc6.weight`
//!   `[4096, 9216]`, ...), `F32`, row-major, PyTorch's layouts. The file is a plain
//!   safetensors file, so PyTorch reads it with
//!   `safetensors.torch.load_file("epoch-0003.safetensors")`; the header's `__metadata__`
//!   holds `format = pt`, the model (`alexnet-rs.model`, JSON: preset, input, classes,
//!   class names, normalisation) and a SHA-256 over the metadata and the tensors (names,
//!   shapes, bytes) that loading verifies, so an edited class name is caught like a
//!   flipped bit. Files are byte-identical for identical weights (sorted header).
//! - `epoch-0003.momentum.safetensors`: the SGD velocity of every trainable parameter,
//!   under the same names.
//! - `epoch-0003.state.json`: epoch, global step, schedule state, the data position, the
//!   SHA-256 of both files above, and which weights `best.safetensors` must hold; written
//!   last, so a checkpoint without it is incomplete and ignored.
//!
//! Checkpoints inside an epoch (every `checkpoint_minutes`, and where `--max-steps` stops a
//! run) are named `epoch-0003_batch-00000120`: three epochs done, the fourth continues at
//! batch 120. Names sort in training order.
//!
//! `best.safetensors` is written after the state file commits, so a crash can leave it
//! stale or missing; the state records its checksum and the checkpoint it came from, and
//! [`CheckpointDir::resume_latest`] repairs it from there. [`committed_best`] finds the
//! right weights without writing anything (for `eval` and `predict` on a run folder).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use alexnet_autograd::HostTensor;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::{TMP_INFIX, write_atomic};
use crate::error::{Error, Result};
use crate::failpoint::pause_point;
use crate::metrics::TopK;
use crate::schedule::LrScheduler;

/// Named host tensors in a fixed order: the unit of import and export.
pub type TensorMap = Vec<(String, HostTensor)>;

/// The metadata key holding the format marker.
const FORMAT_KEY: &str = "alexnet-rs.format";
/// The format marker of weight files written by this crate.
const FORMAT: &str = "alexnet-rs/weights/2";
/// The metadata key holding the SHA-256 of the metadata and tensors.
const SHA_KEY: &str = "alexnet-rs.sha256";
/// The format marker of training-state files.
const STATE_FORMAT: &str = "alexnet-rs/train-state/2";
/// The key safetensors reserves for the metadata in its header.
const METADATA_KEY: &str = "__metadata__";

/// Serialises `tensors` as safetensors with `metadata` plus the format marker and checksum.
pub fn save_tensors(path: &Path, tensors: &[(String, HostTensor)], metadata: HashMap<String, String>) -> Result<()> {
    write_atomic(path, &tensors_to_bytes(tensors, metadata)?)
}

/// Calls `f` with the little-endian bytes of `data`, a block at a time (no full copy).
fn le_blocks(data: &[f32], mut f: impl FnMut(&[u8])) {
    let mut block = Vec::with_capacity(4 * 16_384);
    for chunk in data.chunks(16_384) {
        block.clear();
        block.extend(chunk.iter().flat_map(|x| x.to_le_bytes()));
        f(&block);
    }
}

/// The safetensors bytes of `tensors` with `metadata`, the format marker and the checksum.
/// Deterministic: header keys sorted, tensors stored in name order, so identical weights
/// give identical files.
fn tensors_to_bytes(tensors: &[(String, HostTensor)], metadata: HashMap<String, String>) -> Result<Vec<u8>> {
    let mut sorted: Vec<&(String, HostTensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some(pair) = sorted.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(Error::config(format!("tensor {} is given twice", pair[0].0)));
    }
    if sorted.iter().any(|(name, _)| name == METADATA_KEY) {
        return Err(Error::config(format!("a tensor cannot be named {METADATA_KEY}")));
    }
    let mut metadata: BTreeMap<String, String> = metadata.into_iter().collect();
    metadata.remove(SHA_KEY);
    metadata.insert(FORMAT_KEY.into(), FORMAT.into());
    metadata.entry("format".into()).or_insert_with(|| "pt".into());
    let mut hasher = content_hasher(&metadata);
    for (name, t) in &sorted {
        hash_tensor_head(&mut hasher, name, &t.dims, 4 * t.data.len());
        le_blocks(&t.data, |b| hasher.update(b));
    }
    metadata.insert(SHA_KEY.into(), hex(&hasher.finalize()));

    let mut header: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
    header.insert(METADATA_KEY, serde_json::json!(metadata));
    let mut offset = 0usize;
    for (name, t) in &sorted {
        let end = offset + 4 * t.data.len();
        header.insert(name, serde_json::json!({ "dtype": "F32", "shape": t.dims, "data_offsets": [offset, end] }));
        offset = end;
    }
    let mut json = serde_json::to_vec(&header).map_err(|e| Error::config(format!("safetensors header: {e}")))?;
    // The tensor data start 8-byte aligned, as the safetensors library writes them.
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, t) in &sorted {
        le_blocks(&t.data, |b| out.extend_from_slice(b));
    }
    Ok(out)
}

/// A SHA-256 started over the format marker and `metadata` (without the checksum itself),
/// in key order, each string length-prefixed.
fn content_hasher(metadata: &BTreeMap<String, String>) -> Sha256 {
    let mut hasher = Sha256::new();
    hash_str(&mut hasher, FORMAT);
    for (key, value) in metadata.iter().filter(|(k, _)| *k != SHA_KEY) {
        hash_str(&mut hasher, key);
        hash_str(&mut hasher, value);
    }
    hasher
}

fn hash_str(hasher: &mut Sha256, s: &str) {
    hasher.update((s.len() as u64).to_le_bytes());
    hasher.update(s.as_bytes());
}

/// A tensor's name, shape and byte count, hashed before its bytes.
fn hash_tensor_head(hasher: &mut Sha256, name: &str, dims: &[usize], bytes: usize) {
    hash_str(hasher, name);
    hasher.update((dims.len() as u64).to_le_bytes());
    for &d in dims {
        hasher.update((d as u64).to_le_bytes());
    }
    hasher.update((bytes as u64).to_le_bytes());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex SHA-256 of `bytes` (what state files record of the files they commit).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Reads a safetensors file written by [`save_tensors`]: its tensors (in name order) and
/// metadata. Truncated, corrupted or edited (checksum mismatch) and foreign files (no
/// alexnet-rs marker, or tensors that are not `F32`) are [`Error::Checkpoint`] errors.
pub fn load_tensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    parse_tensors(path, &bytes)
}

/// [`load_tensors`] on bytes already read from `path`.
pub fn parse_tensors(path: &Path, bytes: &[u8]) -> Result<(TensorMap, HashMap<String, String>)> {
    read_tensors(path, bytes, false)
}

/// Reads a safetensors file of `F32` tensors that alexnet-rs or another program wrote
/// (`safetensors.torch.save_file(model.state_dict(), ...)`). A file with alexnet-rs's
/// marker is verified as by [`load_tensors`]; one without it is taken as it is.
pub fn load_any_tensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    read_tensors(path, &bytes, true)
}

fn read_tensors(path: &Path, bytes: &[u8], accept_foreign: bool) -> Result<(TensorMap, HashMap<String, String>)> {
    let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        bad(format!("not a readable safetensors file ({e}); it may be truncated or not a checkpoint at all"))
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("unreadable header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let ours = match metadata.get(FORMAT_KEY).map(String::as_str) {
        Some(FORMAT) => true,
        Some("alexnet-rs/weights/1") => {
            return Err(bad(format!(
                "written by an earlier alexnet-rs (format alexnet-rs/weights/1), whose checksum does not \
                 cover the model description; this version reads `{FORMAT}` only"
            )));
        }
        Some(f) => return Err(bad(format!("format `{f}` is not `{FORMAT}`; written by another version?"))),
        None if accept_foreign => false,
        None => return Err(bad("not written by alexnet-rs (no `alexnet-rs.format` in its metadata)".into())),
    };
    let expected = match ours {
        true => Some(metadata.get(SHA_KEY).ok_or_else(|| bad("no checksum in its metadata".into()))?),
        false => None,
    };
    let mut hasher = content_hasher(&metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let mut names = st.names();
    names.sort_unstable();
    let mut tensors: Vec<(String, HostTensor)> = Vec::with_capacity(names.len());
    for name in names {
        let view = st.tensor(name).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(bad(format!(
                "tensor {name} is {:?}, expected F32 (in PyTorch, save `{{k: v.float() for k, v in sd.items()}}`)",
                view.dtype()
            )));
        }
        if ours {
            hash_tensor_head(&mut hasher, name, view.shape(), view.data().len());
            hasher.update(view.data());
        }
        let data: Vec<f32> =
            view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let t = HostTensor::new(view.shape(), data).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        tensors.push((name.to_string(), t));
    }
    if expected.is_some_and(|e| *e != hex(&hasher.finalize())) {
        return Err(bad("checksum mismatch: the file is corrupted or was edited".into()));
    }
    Ok((tensors, metadata))
}

/// The first tensor holding a NaN or infinity, by name.
pub fn first_non_finite(tensors: &[(String, HostTensor)]) -> Option<&str> {
    tensors.iter().find(|(_, t)| t.data.iter().any(|v| !v.is_finite())).map(|(name, _)| name.as_str())
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

/// What `best.safetensors` holds as of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BestWeights {
    /// The checkpoint weights file it is a copy of (while that checkpoint is kept).
    pub source: String,
    /// The hex SHA-256 of its bytes.
    pub sha256: String,
}

/// Everything besides weights and momentum that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub partial_epoch: Option<PartialEpoch>,
    /// The best validation top-1 error so far.
    pub best_val_error: Option<f64>,
    /// The weights file (name within the folder).
    pub weights: String,
    /// The momentum file (name within the folder).
    pub momentum: String,
    /// The hex SHA-256 of the weights file (set by [`CheckpointDir::save`]).
    pub weights_sha256: String,
    /// The hex SHA-256 of the momentum file (set by [`CheckpointDir::save`]).
    pub momentum_sha256: String,
    /// What `best.safetensors` holds as of this checkpoint (set by [`CheckpointDir::save`]).
    pub best: Option<BestWeights>,
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
            weights_sha256: String::new(),
            momentum_sha256: String::new(),
            best: None,
        }
    }

    /// Reads and checks a state file: its format, that the files it names are plain names
    /// in its own folder, and that its numbers agree.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let bad = |reason: String| Error::Checkpoint { path: path.to_path_buf(), reason };
        let format = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("format").and_then(|f| f.as_str()).map(String::from));
        if let Some(f) = format.filter(|f| f != STATE_FORMAT) {
            return Err(bad(format!("format `{f}` is not `{STATE_FORMAT}`; written by another version?")));
        }
        let state: TrainingState = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not a training-state file ({e}); truncated or foreign?")))?;
        let plain = |name: &str| {
            name.ends_with(".safetensors")
                && Path::new(name).file_name().is_some_and(|n| n == name)
                && name != BEST_WEIGHTS
                && !name.starts_with('.')
        };
        for name in [&state.weights, &state.momentum].into_iter().chain(state.best.as_ref().map(|b| &b.source)) {
            if !plain(name) {
                return Err(bad(format!("`{name}` is not a checkpoint file name in this folder")));
            }
        }
        if state.data.epoch != state.epochs_done {
            return Err(bad(format!(
                "it says {} epochs are done but continues in epoch {}",
                state.epochs_done,
                state.data.epoch + 1
            )));
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
    /// What `best.safetensors` holds as of the newest checkpoint saved or resumed from.
    best: Option<BestWeights>,
}

/// The name of the best checkpoint's weights file.
pub const BEST_WEIGHTS: &str = "best.safetensors";

/// The suffix of state files.
const STATE_SUFFIX: &str = ".state.json";

/// The checkpoint name of a state, weights or momentum file name, if it is one of those.
fn stem_of(file_name: &str) -> Option<&str> {
    let stem = [STATE_SUFFIX, ".momentum.safetensors", ".safetensors"]
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))?;
    stem.starts_with("epoch-").then_some(stem)
}

/// Removes `path`, a missing file counting as removed; otherwise says what went wrong.
fn remove(path: &Path) -> Option<String> {
    match std::fs::remove_file(path) {
        Ok(()) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("could not remove {}: {e}", path.display())),
    }
}

impl CheckpointDir {
    /// A checkpoint folder (created when missing) keeping the newest `keep_last` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        Ok(Self { dir, keep_last: keep_last.max(1), best: None })
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

    /// Writes a checkpoint: weights, momentum, then the state file that commits them (with
    /// both files' checksums and what the best weights are), then, with `is_best`, the
    /// weights again as `best.safetensors`; then removes checkpoints beyond the newest
    /// `keep_last`. Returns the weights file's path and notes on anything pruning could not
    /// remove (pruning never fails a save).
    ///
    /// Weights or momentum holding a NaN or infinity are refused with
    /// [`Error::NonFiniteWeights`] naming the last good checkpoint: a checkpoint is only
    /// written when it is good.
    pub fn save(&mut self, ckpt: &Checkpoint, is_best: bool) -> Result<(PathBuf, Vec<String>)> {
        let mut state = ckpt.state.clone();
        let bad = first_non_finite(&ckpt.weights)
            .map(String::from)
            .or_else(|| first_non_finite(&ckpt.momentum).map(|n| format!("{n} (momentum)")));
        if let Some(parameter) = bad {
            let epoch = if state.data.batch == 0 { state.epochs_done } else { state.epochs_done + 1 };
            return Err(Error::NonFiniteWeights {
                parameter,
                step: state.step,
                epoch,
                last_good: self.last_good(state.step),
            });
        }
        let stem = state.weights.trim_end_matches(".safetensors").to_string();
        let weights_path = self.dir.join(&state.weights);
        let weight_bytes = tensors_to_bytes(&ckpt.weights, ckpt.metadata.clone())?;
        write_atomic(&weights_path, &weight_bytes)?;
        pause_point("checkpoint-weights", &stem);
        let momentum_bytes = tensors_to_bytes(&ckpt.momentum, HashMap::new())?;
        write_atomic(&self.dir.join(&state.momentum), &momentum_bytes)?;
        pause_point("checkpoint-momentum", &stem);
        state.weights_sha256 = sha256_hex(&weight_bytes);
        state.momentum_sha256 = sha256_hex(&momentum_bytes);
        if is_best {
            state.best = Some(BestWeights { source: state.weights.clone(), sha256: state.weights_sha256.clone() });
        } else {
            state.best = self.best.clone();
        }
        let json = serde_json::to_string_pretty(&state).map_err(|e| Error::config(e.to_string()))?;
        write_atomic(&self.dir.join(format!("{stem}{STATE_SUFFIX}")), json.as_bytes())?;
        self.best = state.best.clone();
        pause_point("checkpoint-committed", &stem);
        if is_best {
            write_atomic(&self.dir.join(BEST_WEIGHTS), &weight_bytes)?;
            pause_point("checkpoint-best", &stem);
        }
        let notes = self.prune();
        Ok((weights_path, notes))
    }

    /// State files of complete checkpoints, oldest first.
    pub fn list(&self) -> Result<Vec<PathBuf>> {
        let mut states: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(Error::io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(STATE_SUFFIX)))
            .collect();
        states.sort();
        Ok(states)
    }

    /// The newest complete checkpoint's state file, if any.
    pub fn latest(&self) -> Result<Option<PathBuf>> {
        Ok(self.list()?.pop())
    }

    /// The weights of the newest checkpoint whose step is below `step`: the last good one
    /// when the weights after `step` steps turned out non-finite (the loss at step `step`
    /// was computed from a checkpoint with that step, if any). Unreadable states are passed
    /// over.
    pub fn last_good(&self, step: u64) -> Option<PathBuf> {
        let states = self.list().ok()?;
        states.iter().rev().find_map(|path| {
            let state = TrainingState::load(path).ok()?;
            (state.step < step).then(|| self.dir.join(&state.weights))
        })
    }

    /// Removes checkpoints beyond the newest `keep_last`, state file first (a crash midway
    /// leaves orphans, never a state naming missing files). Files are found by their names,
    /// so a damaged state file is pruned too; what cannot be removed is reported, not an
    /// error.
    fn prune(&self) -> Vec<String> {
        let states = match self.list() {
            Ok(states) => states,
            Err(e) => return vec![format!("could not list old checkpoints to prune: {e}")],
        };
        let excess = states.len().saturating_sub(self.keep_last);
        let mut notes = Vec::new();
        for state_path in &states[..excess] {
            let name = state_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let Some(stem) = stem_of(&name) else { continue };
            let files = [name.clone(), format!("{stem}.safetensors"), format!("{stem}.momentum.safetensors")];
            notes.extend(files.iter().filter_map(|f| remove(&self.dir.join(f))));
        }
        notes
    }

    /// Loads the checkpoint whose state file is `state_path`, checking both files against
    /// the checksums the state recorded.
    pub fn load(state_path: &Path) -> Result<Checkpoint> {
        let state = TrainingState::load(state_path)?;
        let dir = state_path.parent().unwrap_or(Path::new("."));
        let read = |name: &str, sha: &str| -> Result<(TensorMap, HashMap<String, String>)> {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            if sha256_hex(&bytes) != sha {
                return Err(Error::Checkpoint {
                    path: path.clone(),
                    reason: format!(
                        "its checksum differs from the one {} recorded: it was rewritten or damaged after \
                         that checkpoint was saved",
                        state_path.display()
                    ),
                });
            }
            parse_tensors(&path, &bytes)
        };
        let (weights, metadata) = read(&state.weights, &state.weights_sha256)?;
        let (momentum, _) = read(&state.momentum, &state.momentum_sha256)?;
        Ok(Checkpoint { weights, momentum, state, metadata })
    }

    /// Loads the newest checkpoint that is intact, for resuming: a damaged newer one is
    /// passed over with a note saying what is wrong with it. With `repair`, makes
    /// `best.safetensors` what that checkpoint says it is (repairing it after a crash
    /// between the state file and the best weights) and finishes an interrupted pruning.
    /// Continues from its record of the best
    /// weights. Returns the state file, the checkpoint and notes for the person running it.
    pub fn resume_latest(&mut self, repair: bool) -> Result<(PathBuf, Checkpoint, Vec<String>)> {
        let mut notes = Vec::new();
        let mut first_error = None;
        for state_path in self.list()?.into_iter().rev() {
            match Self::load(&state_path) {
                Ok(ckpt) => {
                    notes.extend(first_error.as_ref().map(|e: &Error| {
                        format!("the newest checkpoint is damaged ({e}); resuming from {}", state_path.display())
                    }));
                    if repair {
                        notes.extend(self.repair_best(ckpt.state.best.as_ref()));
                        // A crash can come between a save and its pruning.
                        notes.extend(self.prune());
                    }
                    self.best = ckpt.state.best.clone();
                    return Ok((state_path, ckpt, notes));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or_else(|| {
            Error::config(format!("{} holds no checkpoint to resume from; start the run afresh", self.dir.display()))
        }))
    }

    /// Makes `best.safetensors` hold `best` (or removes one no checkpoint committed);
    /// returns a note when it had to act or could not.
    fn repair_best(&self, best: Option<&BestWeights>) -> Option<String> {
        let path = self.dir.join(BEST_WEIGHTS);
        let Some(best) = best else {
            return path.exists().then(|| {
                remove(&path).unwrap_or_else(|| format!("removed {}: no checkpoint committed it", path.display()))
            });
        };
        if std::fs::read(&path).is_ok_and(|bytes| sha256_hex(&bytes) == best.sha256) {
            return None;
        }
        let source = self.dir.join(&best.source);
        match std::fs::read(&source) {
            Ok(bytes) if sha256_hex(&bytes) == best.sha256 => Some(match write_atomic(&path, &bytes) {
                Ok(()) => format!(
                    "{} was stale or missing (a crash while saving?); restored it from {}",
                    path.display(),
                    source.display()
                ),
                Err(e) => format!("{} is stale or missing and could not be restored: {e}", path.display()),
            }),
            _ => Some(format!(
                "{} is stale or missing and its source {} is gone; the best weights so far are lost, the next \
                 improvement writes them again",
                path.display(),
                source.display()
            )),
        }
    }

    /// Removes what a crash can leave in a run folder and its checkpoint folder: temporary
    /// files of atomic writes (`.<name>.tmp-<pid>` of processes no longer running) and
    /// weights or momentum files no state file commits. Returns a note per removal (with its
    /// size) or per failure.
    pub fn clean_leftovers(&self, run_dir: &Path) -> Vec<String> {
        let committed: Vec<String> =
            self.list().unwrap_or_default().iter().filter_map(|p| p.file_name()?.to_str().map(String::from)).collect();
        let mut notes = Vec::new();
        for dir in [run_dir, self.dir.as_path()] {
            let Ok(entries) = std::fs::read_dir(dir) else { continue };
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let leftover = if let Some((_, pid)) = name.strip_prefix('.').and_then(|n| n.rsplit_once(TMP_INFIX)) {
                    pid.parse::<u32>().is_ok_and(|pid| !process_alive(pid))
                } else {
                    dir == self.dir
                        && name != BEST_WEIGHTS
                        && !name.ends_with(STATE_SUFFIX)
                        && stem_of(&name).is_some_and(|stem| !committed.contains(&format!("{stem}{STATE_SUFFIX}")))
                };
                if leftover && entry.file_type().is_ok_and(|t| t.is_file()) {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    let path = entry.path();
                    notes.push(remove(&path).unwrap_or_else(|| {
                        format!("removed {} ({size} bytes) left by an interrupted save", path.display())
                    }));
                }
            }
        }
        notes
    }
}

/// Whether process `pid` is running (this one counts as running). Where `/proc` is not
/// available every other process counts as gone.
fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// The weights `best.safetensors` should hold in `dir` according to its newest readable
/// checkpoint: `best.safetensors` itself when its checksum matches, else the checkpoint it
/// was copied from (after a crash between the two writes), without writing anything. Runs
/// whose checkpoints record no best fall back to `best.safetensors` as it is.
pub fn committed_best(dir: &Path) -> Result<PathBuf> {
    let best = dir.join(BEST_WEIGHTS);
    let ckpts = CheckpointDir { dir: dir.to_path_buf(), keep_last: 1, best: None };
    let record = ckpts.list()?.iter().rev().find_map(|p| TrainingState::load(p).ok()).and_then(|s| s.best);
    let Some(record) = record else {
        return if best.exists() {
            Ok(best)
        } else {
            Err(Error::config(format!("{} holds no {BEST_WEIGHTS}; pass a .safetensors file", dir.display())))
        };
    };
    for candidate in [best, dir.join(&record.source)] {
        if std::fs::read(&candidate).is_ok_and(|bytes| sha256_hex(&bytes) == record.sha256) {
            return Ok(candidate);
        }
    }
    Err(Error::Checkpoint {
        path: dir.join(BEST_WEIGHTS),
        reason: format!(
            "it is not the best weights the newest checkpoint recorded, and their source {} is gone; resume the \
             run to repair it, or pass a checkpoint's .safetensors",
            record.source
        ),
    })
}

/// Whether `dir` (a run's `checkpoints/` folder) holds at least one complete checkpoint.
pub fn has_checkpoint(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().ends_with(STATE_SUFFIX))
    })
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

    fn metadata() -> HashMap<String, String> {
        HashMap::from([
            ("alexnet-rs.model".to_string(), "{\"classes\": [\"cat\", \"dog\"]}".to_string()),
            ("note".to_string(), "a".to_string()),
            ("other".to_string(), "b".to_string()),
        ])
    }

    fn checkpoint(epoch: usize, batch: usize, step: u64) -> Checkpoint {
        let sched = LrScheduler::new(Schedule::Constant, 0.1, 5).unwrap();
        let state = TrainingState::new(DataPosition { epoch, batch }, step, sched, 42);
        Checkpoint { weights: tensors(), momentum: tensors(), state, metadata: metadata() }
    }

    #[test]
    fn tensors_round_trip_bit_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_tensors(&path, &tensors(), metadata()).unwrap();
        let (back, meta) = load_tensors(&path).unwrap();
        assert_eq!(back, sorted(tensors()));
        assert_eq!(meta["format"], "pt");
        assert_eq!(meta["alexnet-rs.model"], metadata()["alexnet-rs.model"]);
        // The safetensors library reads the file as written.
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.tensor("fc.weight").unwrap().shape(), [3, 2]);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Issue 12, item 11: the same weights give the same bytes, whatever order the metadata
    /// map iterates in (a fresh `HashMap` each time, as in separate processes).
    #[test]
    fn identical_weights_give_byte_identical_files() {
        let first = tensors_to_bytes(&tensors(), metadata()).unwrap();
        for _ in 0..8 {
            let mut reversed = tensors();
            reversed.reverse();
            assert!(tensors_to_bytes(&reversed, metadata()).unwrap() == first);
        }
    }

    /// Rewrites the JSON header of a safetensors file with `edit`, keeping the tensor data.
    fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        edit(&mut header);
        let json = serde_json::to_vec(&header).unwrap();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend(json);
        out.extend_from_slice(&bytes[8 + n..]);
        out
    }

    #[test]
    fn truncated_corrupted_edited_and_foreign_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save_tensors(&path, &tensors(), metadata()).unwrap();
        let good = std::fs::read(&path).unwrap();
        let check = |name: &str, bytes: &[u8], needle: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let err = load_tensors(&p).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains(name), "{name}: {err}");
        };
        check("truncated.safetensors", &good[..good.len() - 5], "truncated");
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        check("corrupted.safetensors", &flipped, "checksum mismatch");
        // Issue 12, item 6: the checksum covers the metadata: an edited class name, an added
        // key, and a changed shape (same bytes) are all caught.
        let renamed = edit_header(&good, |h| {
            h["__metadata__"]["alexnet-rs.model"] = "{\"classes\": [\"cat\", \"wolf\"]}".into();
        });
        check("renamed.safetensors", &renamed, "checksum mismatch");
        let added = edit_header(&good, |h| h["__metadata__"]["extra"] = "x".into());
        check("added.safetensors", &added, "checksum mismatch");
        let reshaped = edit_header(&good, |h| h["fc.weight"]["shape"] = serde_json::json!([2, 3]));
        check("reshaped.safetensors", &reshaped, "checksum mismatch");
        let old = edit_header(&good, |h| h["__metadata__"]["alexnet-rs.format"] = "alexnet-rs/weights/1".into());
        check("old.safetensors", &old, "earlier alexnet-rs");

        // A valid safetensors file from elsewhere (no alexnet-rs marker).
        let data: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![2], &data).unwrap();
        check(
            "foreign.safetensors",
            &safetensors::serialize([("x", view)], None).unwrap(),
            "not written by alexnet-rs",
        );
        check("garbage.safetensors", b"hello, this is not a checkpoint", "not a readable safetensors");

        let state = dir.path().join("x.state.json");
        std::fs::write(&state, "{\"format\": \"alexnet-rs/train-state/2\", \"epochs").unwrap();
        let err = TrainingState::load(&state).unwrap_err().to_string();
        assert!(err.contains("truncated or foreign"), "{err}");
    }

    #[test]
    fn state_files_naming_other_folders_or_disagreeing_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
        ckpts.save(&checkpoint(1, 0, 7), true).unwrap();
        let path = dir.path().join("epoch-0001.state.json");
        let good: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for (key, value, needle) in [
            ("weights", serde_json::json!("../../etc/passwd.safetensors"), "not a checkpoint file name"),
            ("momentum", serde_json::json!("best.safetensors"), "not a checkpoint file name"),
            ("epochs_done", serde_json::json!(4), "continues in epoch 2"),
            ("format", serde_json::json!("alexnet-rs/train-state/1"), "format"),
        ] {
            let mut state = good.clone();
            state[key] = value;
            std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
            let err = TrainingState::load(&path).unwrap_err().to_string();
            assert!(err.contains(needle) && err.contains("epoch-0001.state.json"), "{key}: {err}");
        }
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
        let mut ckpts = CheckpointDir::new(dir.path().join("checkpoints"), 2).unwrap();
        for epoch in 1..=4 {
            let (_, notes) = ckpts.save(&checkpoint(epoch, 0, epoch as u64 * 7), epoch == 2).unwrap();
            assert!(notes.is_empty(), "{notes:?}");
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
        // The best record outlives the pruned checkpoint it came from.
        assert_eq!(latest.state.best.as_ref().unwrap().source, "epoch-0002.safetensors");
        assert_eq!(committed_best(ckpts.dir()).unwrap(), ckpts.dir().join(BEST_WEIGHTS));
    }

    /// Issue 12, item 4: a damaged older state file does not stop the save that prunes it;
    /// it is pruned by its name like any other.
    #[test]
    fn pruning_never_fails_a_save() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpts = CheckpointDir::new(dir.path(), 2).unwrap();
        ckpts.save(&checkpoint(1, 0, 7), true).unwrap();
        ckpts.save(&checkpoint(2, 0, 14), false).unwrap();
        std::fs::write(dir.path().join("epoch-0001.state.json"), b"{ garbage").unwrap();
        let (_, notes) = ckpts.save(&checkpoint(3, 0, 21), false).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert!(!dir.path().join("epoch-0001.state.json").exists());
        assert!(!dir.path().join("epoch-0001.safetensors").exists());
        // A checkpoint that cannot be removed (here: a folder where a file should be) is
        // reported, and the save still succeeds.
        std::fs::remove_file(dir.path().join("epoch-0002.momentum.safetensors")).unwrap();
        std::fs::create_dir_all(dir.path().join("epoch-0002.momentum.safetensors/x")).unwrap();
        let (_, notes) = ckpts.save(&checkpoint(4, 0, 28), false).unwrap();
        assert!(notes.iter().any(|n| n.contains("epoch-0002.momentum.safetensors")), "{notes:?}");
    }

    /// Issue 12, item 2: a crash between the state file and `best.safetensors` leaves the
    /// best stale or missing; resuming repairs it from the checkpoint the state names, and
    /// `committed_best` finds the right weights before any repair.
    #[test]
    fn stale_or_missing_best_is_repaired_from_the_committed_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
        ckpts.save(&checkpoint(1, 0, 7), true).unwrap();
        let old_best = std::fs::read(dir.path().join(BEST_WEIGHTS)).unwrap();
        let mut better = checkpoint(2, 0, 14);
        better.weights[0].1.data[0] = 99.0;
        ckpts.save(&better, true).unwrap();
        let new_best = std::fs::read(dir.path().join(BEST_WEIGHTS)).unwrap();
        assert_ne!(old_best, new_best);

        // The crash: epoch 2's state committed, its best never written.
        std::fs::write(dir.path().join(BEST_WEIGHTS), &old_best).unwrap();
        assert_eq!(committed_best(dir.path()).unwrap(), dir.path().join("epoch-0002.safetensors"));
        let (latest, ckpt, notes) = CheckpointDir::new(dir.path(), 3).unwrap().resume_latest(true).unwrap();
        assert!(latest.ends_with("epoch-0002.state.json") && ckpt.state.step == 14);
        assert!(notes.iter().any(|n| n.contains("restored it from")), "{notes:?}");
        assert_eq!(std::fs::read(dir.path().join(BEST_WEIGHTS)).unwrap(), new_best);

        std::fs::remove_file(dir.path().join(BEST_WEIGHTS)).unwrap();
        let (_, _, notes) = CheckpointDir::new(dir.path(), 3).unwrap().resume_latest(true).unwrap();
        assert!(notes.iter().any(|n| n.contains("restored it from")), "{notes:?}");
        assert_eq!(std::fs::read(dir.path().join(BEST_WEIGHTS)).unwrap(), new_best);

        // A best no checkpoint committed (written before a crash, state never written).
        let bare = tempfile::tempdir().unwrap();
        let mut ckpts = CheckpointDir::new(bare.path(), 3).unwrap();
        ckpts.save(&checkpoint(1, 0, 7), false).unwrap();
        std::fs::write(bare.path().join(BEST_WEIGHTS), &new_best).unwrap();
        let (_, _, notes) = CheckpointDir::new(bare.path(), 3).unwrap().resume_latest(true).unwrap();
        assert!(notes.iter().any(|n| n.contains("no checkpoint committed it")), "{notes:?}");
        assert!(!bare.path().join(BEST_WEIGHTS).exists());
    }

    /// Issue 12, item 10: temporary files of dead processes and weights no state commits are
    /// removed on resume; committed checkpoints, the best and foreign files stay.
    #[test]
    fn crash_leftovers_are_cleaned() {
        let run = tempfile::tempdir().unwrap();
        let mut ckpts = CheckpointDir::new(run.path().join("checkpoints"), 3).unwrap();
        ckpts.save(&checkpoint(1, 0, 7), true).unwrap();
        let dir = ckpts.dir().to_path_buf();
        let dead = u32::MAX - 1;
        let leftovers = [
            dir.join(format!(".epoch-0002.safetensors.tmp-{dead}")),
            run.path().join(format!(".metrics.jsonl.tmp-{dead}")),
            dir.join("epoch-0002.safetensors"),
            dir.join("epoch-0002.momentum.safetensors"),
        ];
        let kept = [
            dir.join(format!(".epoch-0003.safetensors.tmp-{}", std::process::id())),
            dir.join("notes.txt"),
            run.path().join("config.toml"),
        ];
        for f in leftovers.iter().chain(&kept) {
            std::fs::write(f, b"0123456789").unwrap();
        }
        let notes = ckpts.clean_leftovers(run.path());
        assert_eq!(notes.len(), leftovers.len(), "{notes:?}");
        assert!(notes.iter().all(|n| n.contains("(10 bytes)")), "{notes:?}");
        for f in &leftovers {
            assert!(!f.exists(), "{} left", f.display());
        }
        for f in kept.iter().chain([&dir.join("epoch-0001.safetensors"), &dir.join(BEST_WEIGHTS)]) {
            assert!(f.exists(), "{} removed", f.display());
        }
    }

    /// Issue 12, item 7: a checkpoint is written only with finite weights and momentum; the
    /// error names the last good checkpoint (the newest of an earlier step).
    #[test]
    fn non_finite_weights_are_never_saved() {
        let dir = tempfile::tempdir().unwrap();
        let mut ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
        ckpts.save(&checkpoint(1, 0, 7), true).unwrap();
        let mut bad = checkpoint(1, 3, 10);
        bad.momentum[1].1.data[0] = f32::NAN;
        let err = ckpts.save(&bad, false).unwrap_err();
        let msg = err.to_string();
        match err {
            Error::NonFiniteWeights { parameter, step: 10, epoch: 2, last_good } => {
                assert_eq!(parameter, "conv1.bias (momentum)");
                assert_eq!(last_good, Some(dir.path().join("epoch-0001.safetensors")));
            }
            other => panic!("{other}"),
        }
        assert!(msg.contains("(epoch 2)") && msg.contains("epoch-0001.safetensors"), "{msg}");
        assert!(!dir.path().join("epoch-0001_batch-00000003.state.json").exists());
        assert_eq!(ckpts.last_good(7), None, "no checkpoint before step 7");
    }
}
