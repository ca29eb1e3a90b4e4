//! The paper's preprocessing: rescale so the shorter side is `size`, keep the central
//! `size` x `size` square; or only a rectangle of that square (the crop window).

use crate::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

/// Resize-shorter-side-then-centre-crop, done in one step: `fast_image_resize` (bilinear,
/// SIMD) maps the source's central square straight onto a `size` x `size` output, so no
/// pixel outside the kept square is ever computed. This is the continuous form of "resize
/// so the shorter side is `size`, then crop the centre": it does not round an intermediate
/// size, so the kept region is exactly the central square of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeCentreCrop {
    /// Output side length (the paper: 256).
    pub size: usize,
}

/// A rectangle of the (virtual) `size` x `size` resized image, in its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First column.
    pub left: usize,
    /// First row.
    pub top: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

impl Default for ResizeCentreCrop {
    fn default() -> Self {
        ResizeCentreCrop { size: 256 }
    }
}

impl ResizeCentreCrop {
    /// Resizes `image`; `resizer` holds reusable buffers (one per worker).
    pub fn apply(&self, image: &Image, resizer: &mut Resizer) -> Result<Image, String> {
        let mut out = Image::empty(image.channels);
        let whole = Region { left: 0, top: 0, width: self.size, height: self.size };
        self.apply_region(image, whole, resizer, &mut out)?;
        Ok(out)
    }

    /// Computes only `region` of the resized image into `out` (reusing its buffer): each
    /// output pixel samples the source at the position it has in the whole `size` x `size`
    /// result, and filter taps past the region's edge read the real neighbouring pixels.
    ///
    /// Equal to resizing the whole square and cropping `region`, with one caveat of
    /// `fast_image_resize`'s fixed-point weights: their precision (14 or 15 bits) is picked
    /// from the largest weight in the set, so when the region's set lacks the image
    /// border's weights, an output can round one step differently (+-1). With `size` a power
    /// of two the sample positions are exact binary fractions, and when the weights are too
    /// (as for 224 -> 256, all multiples of 1/16), the region is bit-identical (tested).
    pub fn apply_region(
        &self,
        image: &Image,
        region: Region,
        resizer: &mut Resizer,
        out: &mut Image,
    ) -> Result<(), String> {
        if region.left + region.width > self.size || region.top + region.height > self.size {
            return Err(format!(
                "region {}x{} at ({}, {}) lies outside the {size}x{size} resized image",
                region.width,
                region.height,
                region.left,
                region.top,
                size = self.size
            ));
        }
        let side = image.width.min(image.height);
        let len = region.width * region.height * image.channels;
        // Only a growing buffer is written here; the resizer overwrites every byte.
        out.data.resize(len, 0);
        (out.width, out.height, out.channels) = (region.width, region.height, image.channels);
        if len == 0 {
            return Ok(());
        }
        let pixel_type = if image.channels == 3 { PixelType::U8x3 } else { PixelType::U8 };
        let src =
            fast_image_resize::images::ImageRef::new(image.width as u32, image.height as u32, &image.data, pixel_type)
                .map_err(|e| format!("resize source: {e}"))?;
        let mut dst = fast_image_resize::images::Image::from_slice_u8(
            region.width as u32,
            region.height as u32,
            &mut out.data[..len],
            pixel_type,
        )
        .map_err(|e| format!("resize destination: {e}"))?;
        // Source coordinates: the central square's corner plus the region's corner scaled
        // by side / size. Integer products divided once keep them exact where possible.
        let scale = |at: usize| (at * side) as f64 / self.size as f64;
        let left = (image.width - side) as f64 / 2.0 + scale(region.left);
        let top = (image.height - side) as f64 / 2.0 + scale(region.top);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
            left,
            top,
            scale(region.width),
            scale(region.height),
        );
        resizer.resize(&src, &mut dst, &options).map_err(|e| format!("resize failed: {e}"))
    }
}
