//! Crop windows (random, centre, ten-crop) and horizontal reflection.

use crate::Image;
use rand::RngExt;

/// Where one output view comes from: a `width` x `height` window whose top-left corner is
/// at (`left`, `top`) in source pixels, optionally mirrored left-right. Coordinates may lie
/// outside the source when a crop is padded; those pixels read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Column of the window's left edge in the source (negative inside the padding).
    pub left: isize,
    /// Row of the window's top edge in the source (negative inside the padding).
    pub top: isize,
    /// Window width (the output width).
    pub width: usize,
    /// Window height (the output height).
    pub height: usize,
    /// Mirror the window left-right.
    pub flip: bool,
}

impl Window {
    /// Cuts the window out of `image` as a new image, padding with 0 (the plain reference
    /// for the fused pass; flipping is a separate stage, see [`Flip::apply`]).
    pub fn crop(&self, image: &Image) -> Image {
        let data = self.crop_hwc(&image.data, image.width, image.height, image.channels);
        Image { width: self.width, height: self.height, channels: image.channels, data }
    }

    /// Cuts the window out of any interleaved `width` x `height` x `channels` buffer,
    /// padding with `T::default()`.
    pub fn crop_hwc<T: Copy + Default>(&self, data: &[T], width: usize, height: usize, channels: usize) -> Vec<T> {
        let c = channels;
        let mut out = vec![T::default(); self.width * self.height * c];
        for y in 0..self.height {
            for x in 0..self.width {
                let (sx, sy) = (self.left + x as isize, self.top + y as isize);
                if (0..width as isize).contains(&sx) && (0..height as isize).contains(&sy) {
                    let src = (sy as usize * width + sx as usize) * c;
                    out[(y * self.width + x) * c..][..c].copy_from_slice(&data[src..src + c]);
                }
            }
        }
        out
    }
}

/// A uniformly placed `size` x `size` crop from the image surrounded by `padding` zero
/// pixels on every side (padding 0 for ImageNet; the usual 4 for 28 or 32 px images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomCrop {
    /// Crop side length (the paper: 227 from 256).
    pub size: usize,
    /// Zero padding added on each side before cropping.
    pub padding: usize,
}

impl RandomCrop {
    /// Draws the window for an image of `width` x `height`: the top-left corner is uniform
    /// over the `(H + 2p - size + 1) x (W + 2p - size + 1)` valid positions, row first.
    /// Returns `None` when the padded image is smaller than the crop.
    pub fn window(&self, width: usize, height: usize, rng: &mut impl rand::Rng) -> Option<Window> {
        let (pw, ph) = (width + 2 * self.padding, height + 2 * self.padding);
        if pw < self.size || ph < self.size {
            return None;
        }
        let top = rng.random_range(0..=ph - self.size) as isize - self.padding as isize;
        let left = rng.random_range(0..=pw - self.size) as isize - self.padding as isize;
        Some(Window { left, top, width: self.size, height: self.size, flip: false })
    }
}

/// The central `size` x `size` window (rounding the margin down, as torchvision does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CentreCrop {
    /// Crop side length.
    pub size: usize,
}

impl CentreCrop {
    /// The window for an image of `width` x `height`, or `None` if it is smaller than the crop.
    pub fn window(&self, width: usize, height: usize) -> Option<Window> {
        if width < self.size || height < self.size {
            return None;
        }
        let left = ((width - self.size) / 2) as isize;
        let top = ((height - self.size) / 2) as isize;
        Some(Window { left, top, width: self.size, height: self.size, flip: false })
    }
}

/// The paper's test-time views: the four corner crops and the centre crop, then the same
/// five mirrored (ten views per sample, in that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenCrop {
    /// Crop side length.
    pub size: usize,
}

impl TenCrop {
    /// The ten windows (top-left, top-right, bottom-left, bottom-right, centre; then
    /// mirrored), or `None` if the image is smaller than the crop.
    pub fn windows(&self, width: usize, height: usize) -> Option<[Window; 10]> {
        let centre = CentreCrop { size: self.size }.window(width, height)?;
        let (r, b) = ((width - self.size) as isize, (height - self.size) as isize);
        let at = |left, top| Window { left, top, ..centre };
        let five = [at(0, 0), at(r, 0), at(0, b), at(r, b), centre];
        Some(std::array::from_fn(|i| Window { flip: i >= 5, ..five[i % 5] }))
    }
}

/// Horizontal reflection with probability `probability` (the paper: 0.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flip {
    /// Chance of mirroring a training view.
    pub probability: f64,
}

impl Default for Flip {
    fn default() -> Self {
        Flip { probability: 0.5 }
    }
}

impl Flip {
    /// Draws whether to mirror.
    pub fn draw(&self, rng: &mut impl rand::Rng) -> bool {
        self.probability > 0.0 && rng.random_bool(self.probability.min(1.0))
    }

    /// Mirrors `image` left-right (the plain reference for the fused pass).
    pub fn apply(image: &Image) -> Image {
        Image { data: Self::apply_hwc(&image.data, image.width, image.channels), ..*image }
    }

    /// Mirrors any interleaved buffer of rows `width` pixels wide left-right.
    pub fn apply_hwc<T: Copy>(data: &[T], width: usize, channels: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(data.len());
        for row in data.chunks_exact(width * channels) {
            for px in row.chunks_exact(channels).rev() {
                out.extend_from_slice(px);
            }
        }
        out
    }
}
