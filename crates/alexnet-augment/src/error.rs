//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong before or while setting up a pipeline.
///
/// Problems with single samples during an epoch are not errors: they are skipped, counted
/// and reported (see [`crate::Skip`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A data set folder holds no class folders or no images at all.
    #[error("no images found under {root}")]
    EmptyDataset {
        /// The data set root.
        root: PathBuf,
    },
    /// A class folder holds no image files.
    #[error("class folder {folder} holds no images (extensions .jpg, .jpeg, .png)")]
    EmptyClass {
        /// The empty class folder.
        folder: PathBuf,
    },
    /// An IDX or CIFAR file's header disagrees with its size or contents.
    #[error("malformed data file {path}: {reason}")]
    Malformed {
        /// The offending file.
        path: PathBuf,
        /// What is wrong, with the values involved.
        reason: String,
    },
    /// A file's SHA-256 digest differs from the expected one.
    #[error("checksum mismatch for {path}: expected {expected}, got {actual}")]
    Checksum {
        /// The file checked.
        path: PathBuf,
        /// The digest listed in the sums file.
        expected: String,
        /// The digest computed.
        actual: String,
    },
    /// A configuration value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The statistics cache could not be parsed or written.
    #[error("statistics cache {path}: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Malformed { path: path.into(), reason: reason.into() }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
