//! A streaming, deterministic image augmentation pipeline on crossbeam channels.
//!
//! - **Sources** list labelled samples; reading and decoding happen in the workers:
//!   [`ImageFolder`] (ImageNet-style class folders), [`Idx`] (MNIST / Fashion-MNIST, with
//!   [`fashion_mnist`] verifying the embedded copy's checksums) and [`Cifar10Bin`].
//! - **Stages** are small types: [`Decode`], [`ResizeCentreCrop`], [`RandomCrop`],
//!   [`CentreCrop`], [`TenCrop`], [`Flip`], [`PcaNoise`] (statistics from
//!   [`ColourStats::load_or_compute`], cached in a cache folder) and [`Normalize`]. A
//!   [`Transform`] combines them: it resizes only the crop window
//!   ([`ResizeCentreCrop::apply_region`], bit-identical to resizing the whole image and
//!   cropping) and writes CHW `f32` views in one fused pass, checked against its plain
//!   stage-by-stage reference ([`Transform::apply_reference`]).
//! - **The pipeline** ([`Loader`]): source -> bounded channel -> N workers -> bounded
//!   channel -> batcher (restores order) -> bounded channel -> consumer. Each sample's
//!   randomness comes from `(seed, epoch, index)`, so batches are bit-identical for any
//!   number of workers. Dropping an [`Epoch`] stops and joins every thread. Unusable
//!   samples are skipped and reported once each ([`Loader::take_new_skips`]). A loader
//!   may build only one shard of every batch ([`LoaderBuilder::shard`]), for processes
//!   that train on a batch together.
//!
//! ```
//! use alexnet_augment::{Channels, Idx, Loader, Normalize, Transform};
//! # fn main() -> Result<(), alexnet_augment::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let (images, labels) = (dir.path().join("images"), dir.path().join("labels"));
//! # let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28];
//! # bytes.extend((0..5 * 28 * 28).map(|i| (i % 251) as u8));
//! # std::fs::write(&images, bytes).unwrap();
//! # std::fs::write(&labels, [0, 0, 8, 1, 0, 0, 0, 5, 0, 1, 2, 3, 4]).unwrap();
//! // Fashion-MNIST-style training: pad 4, random 28x28 crop, flip, normalise; 1 channel.
//! let source = Idx::open(&images, &labels)?;
//! let transform = Transform::small_train(Channels::Grey, 28, 4, Normalize::per_channel(&[0.286], &[0.353]));
//! let loader = Loader::builder(transform).batch_size(2).workers(2).seed(7).build(source)?;
//! let mut seen = 0;
//! for batch in loader.epoch(0) {
//!     assert_eq!(batch.shape[1..], [1, 28, 28]);
//!     assert_eq!(batch.images.len(), batch.shape.iter().product::<usize>());
//!     seen += batch.len();
//! }
//! assert_eq!(seen, 5);
//! # Ok(())
//! # }
//! ```

mod error;
mod image;
mod pipeline;
pub mod source;
mod stages;
mod transform;

pub use error::{Error, Result};
pub use image::Image;
pub use pipeline::{Batch, Epoch, Loader, LoaderBuilder, PipelineStats, Skip, shard_range};
pub use source::{
    CIFAR10_CLASSES, Cifar10Bin, FASHION_MNIST_CLASSES, FashionMnist, Idx, ImageFolder, ImageFolderOptions, RawSample,
    Source, fashion_mnist, verify_sha256sums,
};
pub use stages::crop::{CentreCrop, Flip, RandomCrop, TenCrop, Window};
pub use stages::decode::{Channels, Decode};
pub(crate) use stages::fused;
pub use stages::normalize::{MeanImage, Normalize};
pub use stages::pca::{CacheReport, ColourStats, PcaNoise, StatsOptions, symmetric_eigen};
pub use stages::resize::{ChwAffine, Region, ResizeBuffers, ResizeCentreCrop};
pub use transform::{Augment, Plan, Scratch, Transform, sample_rng};

/// The README's code blocks, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
