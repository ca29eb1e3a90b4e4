//! Decoding image files into 8-bit pixels with the channel count the pipeline wants.

use crate::Image;

/// The channel count samples are brought to before any other stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channels {
    /// Three channels: grey images repeat their channel, CMYK and RGBA are converted.
    #[default]
    Rgb,
    /// One channel: colour images are converted to luma (BT.601).
    Grey,
}

impl Channels {
    /// The number of channels, 3 or 1.
    pub fn count(self) -> usize {
        match self {
            Channels::Rgb => 3,
            Channels::Grey => 1,
        }
    }

    /// Brings an already-decoded image to this channel count.
    pub fn convert(self, image: Image) -> Image {
        match self {
            Channels::Rgb => image.into_rgb(),
            Channels::Grey => image.into_grey(),
        }
    }
}

/// The decode stage: the `image` crate detects the real format from the bytes (so a PNG
/// named `.JPEG` decodes), and converts grey, CMYK and alpha images to the requested channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decode {
    /// The channel count to produce.
    pub channels: Channels,
}

impl Decode {
    /// Decodes `bytes`; the error string says why a file cannot be used.
    pub fn apply(&self, bytes: &[u8]) -> Result<Image, String> {
        if bytes.is_empty() {
            return Err("empty file (0 bytes)".into());
        }
        if is_truncated_jpeg(bytes) {
            return Err("truncated JPEG: no end-of-image marker".into());
        }
        let decoded = image::load_from_memory(bytes).map_err(|e| format!("decode failed: {e}"))?;
        let (width, height) = (decoded.width() as usize, decoded.height() as usize);
        if width == 0 || height == 0 {
            return Err(format!("image has zero size {width}x{height}"));
        }
        let (channels, data) = match self.channels {
            Channels::Rgb => (3, decoded.into_rgb8().into_raw()),
            Channels::Grey => (1, decoded.into_luma8().into_raw()),
        };
        Ok(Image { width, height, channels, data })
    }
}

/// JPEG decoders fill a cut-off scan with grey and report success, so truncation is
/// checked here: a JPEG must hold its end-of-image marker (`FF D9`) near the end. Inside
/// entropy-coded data a literal `FF` is always followed by `00`, so the marker cannot
/// appear by accident; up to 1 KiB of trailing padding after it is accepted.
fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return false;
    }
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    !tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
