//! Mean subtraction and scaling to the network's input range.

use std::sync::Arc;

/// A per-pixel mean image (the paper's "mean activity over the training set"), interleaved
/// `width` x `height` x `channels`, in `[0, 1]` units, defined on the images the crops are
/// taken from (after any resize).
#[derive(Debug, Clone, PartialEq)]
pub struct MeanImage {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels.
    pub channels: usize,
    /// `height * width * channels` means.
    pub data: Vec<f32>,
}

/// `(x - mean) / std` per channel with `x = byte / 255`; with a mean image, the mean is
/// taken per pixel (at the source position of each cropped pixel) instead of per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    /// Per-channel means in `[0, 1]` units (ignored when `mean_image` is set).
    pub mean: Vec<f32>,
    /// Per-channel standard deviations (must be positive).
    pub std: Vec<f32>,
    /// The per-pixel mean image, replacing `mean`.
    pub mean_image: Option<Arc<MeanImage>>,
}

impl Normalize {
    /// Per-channel normalisation.
    pub fn per_channel(mean: &[f32], std: &[f32]) -> Self {
        Normalize { mean: mean.to_vec(), std: std.to_vec(), mean_image: None }
    }

    /// ImageNet's usual RGB mean and standard deviation (torchvision's constants).
    pub fn imagenet() -> Self {
        Self::per_channel(&[0.485, 0.456, 0.406], &[0.229, 0.224, 0.225])
    }

    /// Maps bytes to `[0, 1]` only (mean 0, std 1).
    pub fn identity(channels: usize) -> Self {
        Normalize { mean: vec![0.0; channels], std: vec![1.0; channels], mean_image: None }
    }

    /// Statistics-derived per-channel normalisation.
    pub fn from_stats(stats: &crate::ColourStats) -> Self {
        let f = |v: &Vec<f64>| v.iter().map(|&x| x as f32).collect();
        Normalize { mean: f(&stats.mean), std: f(&stats.std), mean_image: None }
    }
}
