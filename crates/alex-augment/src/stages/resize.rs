//! The paper's preprocessing: rescale so the shorter side is `size`, keep the central
//! `size` x `size` square.

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

impl Default for ResizeCentreCrop {
    fn default() -> Self {
        ResizeCentreCrop { size: 256 }
    }
}

impl ResizeCentreCrop {
    /// Resizes `image`; `resizer` holds reusable buffers (one per worker).
    pub fn apply(&self, image: &Image, resizer: &mut Resizer) -> Result<Image, String> {
        let side = image.width.min(image.height);
        if image.width == self.size && image.height == self.size {
            return Ok(image.clone());
        }
        let pixel_type = if image.channels == 3 { PixelType::U8x3 } else { PixelType::U8 };
        let src =
            fast_image_resize::images::ImageRef::new(image.width as u32, image.height as u32, &image.data, pixel_type)
                .map_err(|e| format!("resize source: {e}"))?;
        let mut dst = fast_image_resize::images::Image::new(self.size as u32, self.size as u32, pixel_type);
        let left = (image.width - side) as f64 / 2.0;
        let top = (image.height - side) as f64 / 2.0;
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
            left,
            top,
            side as f64,
            side as f64,
        );
        resizer.resize(&src, &mut dst, &options).map_err(|e| format!("resize failed: {e}"))?;
        Ok(Image { width: self.size, height: self.size, channels: image.channels, data: dst.into_vec() })
    }
}
