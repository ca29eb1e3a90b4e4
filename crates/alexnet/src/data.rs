//! Opening a run's data: the layout of a folder is detected (IDX files, CIFAR-10 binaries,
//! or ImageNet-style class folders), a validation split is held out when asked, and each
//! split gets its `alexnet-augment` loader with the matching transform.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alexnet_augment::{
    Channels, ColourStats, Decode, Loader, Normalize, PcaNoise, ResizeCentreCrop, Source, StatsOptions, Transform,
};
use alexnet_core::rng::mix64;

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::model::ModelInfo;

/// The layouts a data folder can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// `train-images-idx3-ubyte[.gz]` and friends (MNIST, Fashion-MNIST); has a test split.
    Idx,
    /// CIFAR-10's `data_batch_*.bin` and `test_batch.bin`; has a test split.
    Cifar10,
    /// One sub-folder of images per class.
    ImageFolder,
}

impl DataFormat {
    /// Detects the layout of `dir`.
    pub fn detect(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::config(format!(
                "data folder {} does not exist; pass --data with an ImageNet-style folder (one sub-folder per class), \
                 an IDX folder or a CIFAR-10 binary folder",
                dir.display()
            )));
        }
        let has = |name: &str| dir.join(name).exists();
        if has("train-images-idx3-ubyte.gz") || has("train-images-idx3-ubyte") {
            Ok(DataFormat::Idx)
        } else if has("data_batch_1.bin") {
            Ok(DataFormat::Cifar10)
        } else {
            Ok(DataFormat::ImageFolder)
        }
    }
}

/// A view of some samples of another source, in the given order.
#[derive(Clone)]
pub struct Subset {
    inner: Arc<dyn Source>,
    indices: Arc<[usize]>,
}

impl Subset {
    /// The samples `indices` of `inner`.
    pub fn new(inner: Arc<dyn Source>, indices: Vec<usize>) -> Self {
        Self { inner, indices: indices.into() }
    }
}

impl Source for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn label(&self, index: usize) -> u32 {
        self.inner.label(self.indices[index])
    }
    fn class_names(&self) -> &[String] {
        self.inner.class_names()
    }
    fn read(&self, index: usize) -> Result<alexnet_augment::RawSample, String> {
        self.inner.read(self.indices[index])
    }
    fn describe(&self, index: usize) -> String {
        self.inner.describe(self.indices[index])
    }
    fn fingerprint_bytes(&self) -> Vec<u8> {
        let mut bytes = self.inner.fingerprint_bytes();
        bytes.extend(self.indices.iter().flat_map(|i| (*i as u64).to_le_bytes()));
        bytes
    }
    fn data_dir(&self) -> Option<PathBuf> {
        self.inner.data_dir()
    }
}

/// A deterministic permutation of `0..n` from `seed` (Fisher-Yates on the counter RNG).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (mix64(seed, i as u64) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// The first `max` samples of a seeded permutation of `source` (all of them when `max`
/// is `None` or not smaller).
fn limit(source: Arc<dyn Source>, max: Option<usize>, seed: u64) -> Arc<dyn Source> {
    match max {
        Some(m) if m < source.len() => {
            let mut order = permutation(source.len(), seed);
            order.truncate(m.max(1));
            order.sort_unstable();
            Arc::new(Subset::new(source, order))
        }
        _ => source,
    }
}

/// A run's samples, split for training, validation and test, before any transform.
pub struct Splits {
    /// Training samples.
    pub train: Arc<dyn Source>,
    /// Validation samples (a held-out part of the training set, or a folder).
    pub val: Option<Arc<dyn Source>>,
    /// Test samples (the data set's own test split, or a folder).
    pub test: Option<Arc<dyn Source>>,
    /// The layout.
    pub format: DataFormat,
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
}

/// The splits of a run, opened but not yet loading.
pub struct Datasets {
    /// Training samples.
    pub train: Arc<dyn Source>,
    /// Validation samples (a held-out part of the training set, or a folder).
    pub val: Option<Arc<dyn Source>>,
    /// Test samples (the data set's own test split, or a folder).
    pub test: Option<Arc<dyn Source>>,
    /// The layout.
    pub format: DataFormat,
    /// Class names, indexed by label.
    pub class_names: Vec<String>,
    /// The training transform.
    pub train_transform: Transform,
    /// The evaluation transform (centre crop).
    pub eval_transform: Transform,
    /// Things the person running this should know (a statistics cache that was damaged).
    pub notes: Vec<String>,
}

/// Known channel statistics of the small data sets, in `[0, 1]` units.
const FASHION_MNIST_NORM: ([f32; 1], [f32; 1]) = ([0.2860], [0.3530]);
const CIFAR10_NORM: ([f32; 3], [f32; 3]) = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);

fn open_split(format: DataFormat, dir: &Path, test: bool) -> Result<Arc<dyn Source>> {
    let wrap = |e: alexnet_augment::Error| Error::config(format!("{}: {e}", dir.display()));
    Ok(match format {
        DataFormat::Idx => {
            let fm = alexnet_augment::fashion_mnist(dir).map_err(wrap)?;
            Arc::new(if test { fm.test } else { fm.train })
        }
        DataFormat::Cifar10 => Arc::new(if test {
            alexnet_augment::Cifar10Bin::test(dir).map_err(wrap)?
        } else {
            alexnet_augment::Cifar10Bin::train(dir).map_err(wrap)?
        }),
        DataFormat::ImageFolder => Arc::new(alexnet_augment::ImageFolder::open(dir).map_err(wrap)?),
    })
}

/// Opens the data set in `dir` whole (every image of a folder; the test files of an IDX or
/// CIFAR-10 folder): what `eval --data` evaluates.
pub fn open_whole(dir: &Path) -> Result<(DataFormat, Arc<dyn Source>)> {
    let format = DataFormat::detect(dir)?;
    let test = matches!(format, DataFormat::Idx | DataFormat::Cifar10);
    Ok((format, open_split(format, dir, test)?))
}

impl Splits {
    /// Opens the data `config` names and splits it: a validation folder or a seeded
    /// hold-out of `val_fraction`, a test folder or the data set's own test split, each
    /// limited to `max_train_images` / `max_eval_images`.
    pub fn open(config: &RunConfig) -> Result<Self> {
        let d = &config.data;
        let train_dir = d.train.as_ref().ok_or_else(|| Error::config("no training data: pass --data DIR"))?;
        let format = DataFormat::detect(train_dir)?;
        let full_train = open_split(format, train_dir, false)?;
        let class_names = full_train.class_names().to_vec();

        let (train, val): (Arc<dyn Source>, Option<Arc<dyn Source>>) = match (&d.val, d.val_fraction) {
            (Some(dir), _) => (full_train, Some(open_split(DataFormat::detect(dir)?, dir, false)?)),
            (None, f) if f > 0.0 => {
                let n = full_train.len();
                if n < 2 {
                    return Err(Error::config(format!(
                        "{} holds {n} image; holding out a validation fraction ({f}) needs at least 2 \
                         (pass --val-fraction 0 or --val DIR)",
                        train_dir.display()
                    )));
                }
                let held = ((n as f64 * f).round() as usize).clamp(1, n - 1);
                let order = permutation(n, mix64(config.seed, 0x0056_414C));
                let (mut v, mut t) = (order[..held].to_vec(), order[held..].to_vec());
                v.sort_unstable();
                t.sort_unstable();
                (Arc::new(Subset::new(full_train.clone(), t)), Some(Arc::new(Subset::new(full_train, v))))
            }
            _ => (full_train, None),
        };
        let test: Option<Arc<dyn Source>> = match (&d.test, format) {
            (Some(dir), _) => Some(open_split(DataFormat::detect(dir)?, dir, false)?),
            (None, DataFormat::Idx | DataFormat::Cifar10) => Some(open_split(format, train_dir, true)?),
            (None, DataFormat::ImageFolder) => None,
        };
        for (what, split) in [("validation", &val), ("test", &test)] {
            if let Some(s) = split
                && s.class_names().len() != class_names.len()
            {
                return Err(Error::config(format!(
                    "the {what} data has {} classes but the training data has {}; they must use the same class folders",
                    s.class_names().len(),
                    class_names.len()
                )));
            }
        }
        let train = limit(train, d.max_train_images, mix64(config.seed, 1));
        let val = val.map(|v| limit(v, d.max_eval_images, mix64(config.seed, 2)));
        let test = test.map(|t| limit(t, d.max_eval_images, mix64(config.seed, 3)));
        Ok(Self { train, val, test, format, class_names })
    }
}

impl Datasets {
    /// Opens the data `config` names ([`Splits::open`]); `input` is the network's
    /// `[c, h, w]` (the crop size and channel count of the transforms). Class folders get
    /// their colour statistics from the cache folder, computed on first use.
    pub fn open(config: &RunConfig, input: [usize; 3]) -> Result<Self> {
        let d = &config.data;
        let Splits { train, val, test, format, class_names } = Splits::open(config)?;
        let mut notes = Vec::new();
        let [c, h, w] = input;
        if h != w {
            return Err(Error::config(format!("input {h}x{w} is not square; crops are square")));
        }
        let channels = match c {
            1 => Channels::Grey,
            3 => Channels::Rgb,
            other => return Err(Error::config(format!("input with {other} channels: only 1 (grey) or 3 (RGB)"))),
        };
        let decode = Decode { channels, max_pixels: d.max_image_pixels };
        let (mut train_transform, mut eval_transform) = match format {
            DataFormat::Idx | DataFormat::Cifar10 => {
                let normalize = match (format, c) {
                    (DataFormat::Idx, 1) => Normalize::per_channel(&FASHION_MNIST_NORM.0, &FASHION_MNIST_NORM.1),
                    (DataFormat::Cifar10, 3) => Normalize::per_channel(&CIFAR10_NORM.0, &CIFAR10_NORM.1),
                    _ => Normalize::identity(c),
                };
                // Shift by up to 2 pixels (pad, then crop back) and flip.
                let train = if d.augment {
                    Transform::small_train(channels, h, 2, normalize.clone())
                } else {
                    Transform::small_eval(channels, h, normalize.clone())
                };
                (train, Transform::small_eval(channels, h, normalize))
            }
            DataFormat::ImageFolder => {
                // The paper: shorter side to 256 (scaled for other inputs), centre crop,
                // random crops of the input size, flips, PCA lighting.
                let resize = ResizeCentreCrop { size: config.preset.resize_for_crop(h) };
                let options = StatsOptions { workers: d.workers, ..StatsOptions::default() };
                let (stats, report) = ColourStats::load_or_compute(&*train, decode, Some(resize), &options)
                    .map_err(|e| Error::config(format!("colour statistics: {e}")))?;
                notes.extend(report.problem.map(|p| format!("colour statistics cache: {p}")));
                let pca = (d.pca_lighting && c == 3).then(|| PcaNoise::from_stats(&stats));
                // Published weights expect their own statistics, not this folder's.
                let normalize = match config.preset.fixed_normalization() {
                    Some((mean, std)) => Normalize::per_channel(&mean[..c], &std[..c]),
                    None => Normalize::from_stats(&stats),
                };
                let mut train = Transform::imagenet_train(pca);
                train.resize = Some(resize);
                if let alexnet_augment::Augment::Train { crop, .. } = &mut train.augment {
                    crop.size = h;
                }
                if !d.augment {
                    train.augment = alexnet_augment::Augment::Centre(alexnet_augment::CentreCrop { size: h });
                }
                train.normalize = normalize.clone();
                let mut eval = Transform::imagenet_eval(false);
                eval.resize = Some(resize);
                eval.augment = alexnet_augment::Augment::Centre(alexnet_augment::CentreCrop { size: h });
                eval.normalize = normalize;
                (train, eval)
            }
        };
        (train_transform.decode, eval_transform.decode) = (decode, decode);
        Ok(Self { train, val, test, format, class_names, train_transform, eval_transform, notes })
    }

    /// Checks that a checkpoint's model (`saved`, from `checkpoint`) fits this data's model
    /// (`now`) for resuming, in words: a different input or different classes are errors
    /// saying what changed. Colour statistics that moved (images were added or removed
    /// since the run started) are not: the run continues with the statistics it recorded,
    /// which become the transforms' normalisation, and the returned note says so.
    pub fn keep_checkpoint_model(
        &mut self,
        saved: &ModelInfo,
        now: &ModelInfo,
        checkpoint: &Path,
    ) -> Result<Option<String>> {
        let refuse = |what: String| {
            Err(Error::Checkpoint {
                path: checkpoint.to_path_buf(),
                reason: format!("{what}; restore the run's data or start a new run"),
            })
        };
        if (saved.preset, saved.input, saved.resize) != (now.preset, now.input, now.resize) {
            let shape = |i: &ModelInfo| format!("{} with {:?} input, resize {:?}", i.preset, i.input, i.resize);
            return refuse(format!("it is a {} model, but the run's data now gives {}", shape(saved), shape(now)));
        }
        if saved.layers != now.layers {
            return refuse("its layers differ from those of the run's configuration".to_string());
        }
        if saved.class_names != now.class_names {
            let missing: Vec<&String> = saved.class_names.iter().filter(|c| !now.class_names.contains(c)).collect();
            let added: Vec<&String> = now.class_names.iter().filter(|c| !saved.class_names.contains(c)).collect();
            return refuse(format!(
                "it was trained on {} classes, the data now has {} (missing: {missing:?}, new: {added:?}{})",
                saved.class_names.len(),
                now.class_names.len(),
                if missing.is_empty() && added.is_empty() { ", in another order" } else { "" }
            ));
        }
        if (&saved.mean, &saved.std) == (&now.mean, &now.std) {
            return Ok(None);
        }
        for transform in [&mut self.train_transform, &mut self.eval_transform] {
            transform.normalize = Normalize::per_channel(&saved.mean, &saved.std);
        }
        Ok(Some(format!(
            "the training images changed since the run started (colour means {:.4?}, standard deviations {:.4?} \
             now; {:.4?} and {:.4?} recorded in {}); continuing with the recorded statistics",
            now.mean,
            now.std,
            saved.mean,
            saved.std,
            checkpoint.display()
        )))
    }

    /// The image size a layout comes in, for choosing a preset's input: 28x28 grey for
    /// IDX, 32x32 RGB for CIFAR-10, `None` for folders (any size).
    pub fn native_input(format: DataFormat) -> Option<[usize; 3]> {
        match format {
            DataFormat::Idx => Some([1, 28, 28]),
            DataFormat::Cifar10 => Some([3, 32, 32]),
            DataFormat::ImageFolder => None,
        }
    }

    /// A loader over `source` with `transform` that builds shard `shard.0` of `shard.1`
    /// of every batch (`(0, 1)`: whole batches).
    pub fn loader(
        source: &Arc<dyn Source>,
        transform: Transform,
        batch_size: usize,
        workers: usize,
        seed: u64,
        shuffle: bool,
        shard: (usize, usize),
    ) -> Result<Loader> {
        Loader::builder(transform)
            .batch_size(batch_size)
            .workers(workers)
            .seed(seed)
            .shuffle(shuffle)
            .shard(shard.0, shard.1)
            .build(source.clone())
            .map_err(|e| Error::config(format!("data loader: {e}")))
    }
}

/// The evaluation transform of a trained model, from what its checkpoint records: decode
/// to its channels (refusing images over `max_image_pixels`), resize as in training,
/// centre crop, normalise with the run's statistics. Checked against the model's input.
pub fn eval_transform(info: &ModelInfo, max_image_pixels: u64) -> Result<Transform> {
    let [c, h, _] = info.input;
    let channels = if c == 1 { Channels::Grey } else { Channels::Rgb };
    let transform = Transform {
        decode: Decode { channels, max_pixels: max_image_pixels },
        resize: info.resize.map(|size| ResizeCentreCrop { size }),
        augment: alexnet_augment::Augment::Centre(alexnet_augment::CentreCrop { size: h }),
        normalize: Normalize::per_channel(&info.mean, &info.std),
    };
    transform.validate().map_err(|e| Error::config(format!("the checkpoint's model description: {e}")))?;
    Ok(transform)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_seeded_permutation() {
        let p = permutation(100, 7);
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(p, permutation(100, 7));
        assert_ne!(p, permutation(100, 8));
    }

    #[test]
    fn missing_folder_says_what_to_do() {
        let err = DataFormat::detect(Path::new("/no/such/folder")).unwrap_err().to_string();
        assert!(err.contains("/no/such/folder") && err.contains("--data"), "{err}");
    }
}
