//! CIFAR-10's binary batches (`data_batch_1.bin` ... `data_batch_5.bin`, `test_batch.bin`).

use super::{RawSample, Source};
use crate::{Error, Image, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const SIDE: usize = 32;
const PLANE: usize = SIDE * SIDE;
const RECORD: usize = 1 + 3 * PLANE;

/// CIFAR-10's default class names (overridden by `batches.meta.txt` when present).
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// CIFAR-10 binary batch files held in memory: records of one label byte and 32x32 RGB
/// planes. Samples are 32x32 RGB images.
#[derive(Debug, Clone)]
pub struct Cifar10Bin {
    records: Arc<Vec<u8>>,
    files: Vec<(PathBuf, u64)>,
    class_names: Vec<String>,
}

impl Cifar10Bin {
    /// Opens the five training batches in `dir`.
    pub fn train(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let files: Vec<PathBuf> = (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect();
        Self::open(&files)
    }

    /// Opens the test batch in `dir`.
    pub fn test(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open(&[dir.as_ref().join("test_batch.bin")])
    }

    /// Opens the given batch files, in order. Errors if a file's size is not a whole number
    /// of 3,073-byte records, a label exceeds 9, or there are no records. Class names come
    /// from `batches.meta.txt` beside the first file when it exists.
    pub fn open(paths: &[impl AsRef<Path>]) -> Result<Self> {
        let mut records = Vec::new();
        let mut files = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            if bytes.len() % RECORD != 0 {
                return Err(Error::malformed(
                    path,
                    format!("{} bytes is not a multiple of the {RECORD}-byte record", bytes.len()),
                ));
            }
            if let Some((i, rec)) = bytes.chunks_exact(RECORD).enumerate().find(|(_, r)| r[0] >= 10) {
                return Err(Error::malformed(path, format!("record {i} has label {}, expected 0..=9", rec[0])));
            }
            files.push((path.to_path_buf(), bytes.len() as u64));
            records.extend_from_slice(&bytes);
        }
        let Some((first, _)) = files.first() else {
            return Err(Error::Config("Cifar10Bin::open needs at least one file".into()));
        };
        if records.is_empty() {
            return Err(Error::EmptyDataset { root: first.clone() });
        }
        let meta = first.with_file_name("batches.meta.txt");
        let class_names = match std::fs::read_to_string(&meta) {
            Ok(text) => text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
            Err(_) => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        };
        Ok(Cifar10Bin { records: Arc::new(records), files, class_names })
    }

    fn record(&self, index: usize) -> &[u8] {
        &self.records[index * RECORD..(index + 1) * RECORD]
    }
}

impl Source for Cifar10Bin {
    fn len(&self) -> usize {
        self.records.len() / RECORD
    }
    fn label(&self, index: usize) -> u32 {
        u32::from(self.record(index)[0])
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn read(&self, index: usize) -> Result<RawSample, String> {
        let planes = &self.record(index)[1..];
        let mut data = vec![0u8; 3 * PLANE];
        for (p, px) in data.chunks_exact_mut(3).enumerate() {
            for (c, v) in px.iter_mut().enumerate() {
                *v = planes[c * PLANE + p];
            }
        }
        Ok(RawSample::Pixels(Image { width: SIDE, height: SIDE, channels: 3, data }))
    }
    fn describe(&self, index: usize) -> String {
        let mut rest = index * RECORD;
        for (path, size) in &self.files {
            if (rest as u64) < *size {
                return format!("{}[{}]", path.display(), rest / RECORD);
            }
            rest -= *size as usize;
        }
        format!("cifar10[{index}]")
    }
    fn fingerprint_bytes(&self) -> Vec<u8> {
        let mut bytes = b"cifar10-bin\n".to_vec();
        for (path, size) in &self.files {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            bytes.extend_from_slice(format!("{name}\t{size}\n").as_bytes());
        }
        bytes
    }
    fn data_dir(&self) -> Option<PathBuf> {
        self.files.first().and_then(|(p, _)| p.parent().map(Path::to_path_buf))
    }
}
