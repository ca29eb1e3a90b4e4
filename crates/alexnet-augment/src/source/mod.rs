//! Where samples come from: a [`Source`] lists samples and labels; reading and decoding
//! happen later, in the pipeline's workers.

mod cifar;
mod folder;
mod idx;

pub use cifar::{CIFAR10_CLASSES, Cifar10Bin};
pub use folder::{ImageFolder, ImageFolderOptions};
pub use idx::{FASHION_MNIST_CLASSES, FashionMnist, Idx, fashion_mnist, verify_sha256sums};

use crate::Image;
use std::path::PathBuf;

/// One sample as a source hands it over: still encoded (a file's bytes) or already pixels.
#[derive(Debug, Clone)]
pub enum RawSample {
    /// The bytes of an image file, to be decoded by [`crate::Decode`].
    Encoded(Vec<u8>),
    /// Raw pixels (IDX, CIFAR): no decoding needed.
    Pixels(Image),
}

/// A list of labelled samples that workers can read concurrently.
pub trait Source: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether the source has no samples (sources refuse to open empty, so normally false).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The class index of sample `index` (`index < len()`).
    fn label(&self, index: usize) -> u32;

    /// Class names, indexed by label.
    fn class_names(&self) -> &[String];

    /// Reads sample `index`. An `Err` is a reason to skip it (unreadable file and so on).
    fn read(&self, index: usize) -> Result<RawSample, String>;

    /// A human-readable name for sample `index`, used in skip reports (a path for files).
    fn describe(&self, index: usize) -> String;

    /// Bytes that identify the sample list (paths, sizes, counts): statistics caches are
    /// keyed by their SHA-256.
    fn fingerprint_bytes(&self) -> Vec<u8>;

    /// The folder beside the data where caches should go, if the source has one.
    fn data_dir(&self) -> Option<PathBuf>;
}

impl<S: Source + ?Sized> Source for std::sync::Arc<S> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn label(&self, index: usize) -> u32 {
        (**self).label(index)
    }
    fn class_names(&self) -> &[String] {
        (**self).class_names()
    }
    fn read(&self, index: usize) -> Result<RawSample, String> {
        (**self).read(index)
    }
    fn describe(&self, index: usize) -> String {
        (**self).describe(index)
    }
    fn fingerprint_bytes(&self) -> Vec<u8> {
        (**self).fingerprint_bytes()
    }
    fn data_dir(&self) -> Option<PathBuf> {
        (**self).data_dir()
    }
}
