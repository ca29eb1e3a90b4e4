//! The pixel buffer every stage reads: 8-bit, interleaved (HWC), 1 or 3 channels.

/// An 8-bit image stored row-major with interleaved channels (`data[(y * width + x) * channels + c]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Channels per pixel: 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// `height * width * channels` bytes.
    pub data: Vec<u8>,
}

impl Image {
    /// Wraps `data`, checking that its length is `height * width * channels` and that
    /// `channels` is 1 or 3.
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> crate::Result<Self> {
        if channels != 1 && channels != 3 {
            return Err(crate::Error::Config(format!("images have 1 or 3 channels, not {channels}")));
        }
        if data.len() != width * height * channels {
            return Err(crate::Error::Config(format!(
                "{width}x{height}x{channels} image needs {} bytes, got {}",
                width * height * channels,
                data.len()
            )));
        }
        Ok(Image { width, height, channels, data })
    }

    /// A 0x0 image, a buffer to decode or resize into.
    pub(crate) fn empty(channels: usize) -> Self {
        Image { width: 0, height: 0, channels, data: Vec::new() }
    }

    /// The value of channel `c` at column `x`, row `y`.
    pub fn get(&self, x: usize, y: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * self.channels + c]
    }

    /// Repeats a grey image's channel three times; RGB images are returned as they are.
    pub fn into_rgb(self) -> Image {
        if self.channels == 3 {
            return self;
        }
        let data = self.data.iter().flat_map(|&v| [v, v, v]).collect();
        Image { channels: 3, data, ..self }
    }

    /// Converts RGB to grey with ITU-R BT.601 luma weights (what `image` uses); grey images
    /// are returned as they are.
    pub fn into_grey(self) -> Image {
        if self.channels == 1 {
            return self;
        }
        let data = self
            .data
            .chunks_exact(3)
            .map(|p| {
                let y = 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]);
                y.round().clamp(0.0, 255.0) as u8
            })
            .collect();
        Image { channels: 1, data, ..self }
    }
}
