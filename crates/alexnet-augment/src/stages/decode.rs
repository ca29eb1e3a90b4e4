//! Decoding image files into 8-bit pixels with the channel count the pipeline wants.

use crate::Image;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;
use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;

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

/// The decode stage. Baseline and progressive JPEGs with YCbCr, RGB or grey data are
/// decoded by `zune-jpeg` straight into a reused buffer; everything else (CMYK JPEGs, PNGs,
/// a PNG named `.JPEG`, colour JPEGs wanted as grey) goes through the `image` crate, which
/// detects the real format from the bytes and converts grey, CMYK and alpha images to the
/// requested channels. (`image` decodes JPEGs with the same `zune-jpeg`, so both routes give
/// the same pixels; the direct one skips a second header parse, a copy of the file and a
/// zeroed output allocation per image.)
///
/// Every route reads the image's size from its header first and refuses images of more
/// than [`Decode::max_pixels`] pixels before allocating anything for their pixels, so a
/// small file claiming 65,500 x 65,500 pixels (a decompression bomb) is an error, not a
/// 12 GB allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decode {
    /// The channel count to produce.
    pub channels: Channels,
    /// The largest image accepted, in pixels (width x height); default
    /// [`Decode::DEFAULT_MAX_PIXELS`].
    pub max_pixels: u64,
}

impl Default for Decode {
    fn default() -> Self {
        Decode::new(Channels::default())
    }
}

impl Decode {
    /// The default pixel limit: 64 megapixels (e.g. 8000 x 8000), far above any photo a
    /// 256-pixel training crop needs, far below what exhausts a machine's memory.
    pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

    /// Decoding to `channels` with the default pixel limit.
    pub fn new(channels: Channels) -> Self {
        Decode { channels, max_pixels: Self::DEFAULT_MAX_PIXELS }
    }

    /// Refuses a `width` x `height` image over the pixel limit (or of zero size).
    fn check_size(&self, width: usize, height: usize) -> Result<(), String> {
        if width == 0 || height == 0 {
            return Err(format!("image has zero size {width}x{height}"));
        }
        let pixels = (width as u64).saturating_mul(height as u64);
        if pixels > self.max_pixels {
            return Err(format!(
                "image is {width}x{height} ({} megapixels), over the limit of {} megapixels \
                 (max_image_pixels, --max-image-pixels)",
                megapixels(pixels),
                megapixels(self.max_pixels)
            ));
        }
        Ok(())
    }

    /// Decodes `bytes`; the error string says why a file cannot be used.
    pub fn apply(&self, bytes: &[u8]) -> Result<Image, String> {
        let mut image = Image::empty(self.channels.count());
        self.apply_into(bytes, &mut image)?;
        Ok(image)
    }

    /// Decodes `bytes` into `out`, reusing its buffer (no allocation once it is large
    /// enough); the error string says why a file cannot be used (`out` is then unspecified).
    pub fn apply_into(&self, bytes: &[u8], out: &mut Image) -> Result<(), String> {
        if bytes.is_empty() {
            return Err("empty file (0 bytes)".into());
        }
        if is_truncated_jpeg(bytes) {
            return Err("truncated JPEG: no end-of-image marker".into());
        }
        if bytes.starts_with(&JPEG_START) && self.decode_jpeg(bytes, out)? {
            return Ok(());
        }
        let decoded = self.decode_with_image_crate(bytes)?;
        let (width, height) = (decoded.width() as usize, decoded.height() as usize);
        let (channels, data) = match self.channels {
            Channels::Rgb => (3, decoded.into_rgb8().into_raw()),
            Channels::Grey => (1, decoded.into_luma8().into_raw()),
        };
        *out = Image { width, height, channels, data };
        Ok(())
    }

    /// The `image` crate's route: the format is sniffed from the bytes, the size read from
    /// the header and checked before the pixels are decoded.
    fn decode_with_image_crate(&self, bytes: &[u8]) -> Result<image::DynamicImage, String> {
        use image::ImageDecoder;
        if let Some((width, height)) = png_size(bytes) {
            self.check_size(width as usize, height as usize)?;
        }
        let failed = |e: image::ImageError| match e {
            image::ImageError::Limits(_) => {
                format!("decode refused: {e} (allowed: what an image of max_image_pixels needs)")
            }
            e => format!("decode failed: {e}"),
        };
        let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format!("decode failed: {e}"))?;
        // Room for the largest image allowed at 16 bits per channel with alpha, plus the
        // decoder's own tables; metadata chunks beyond that are refused too.
        let mut limits = image::Limits::default();
        limits.max_alloc = Some(self.max_pixels.saturating_mul(8).saturating_add(1 << 20));
        reader.limits(limits);
        let decoder = reader.into_decoder().map_err(failed)?;
        let (width, height) = decoder.dimensions();
        self.check_size(width as usize, height as usize)?;
        image::DynamicImage::from_decoder(decoder).map_err(failed)
    }

    /// The direct `zune-jpeg` route: `Ok(false)` leaves the file to the `image` crate (a
    /// colour space handled there, or headers it should report on).
    fn decode_jpeg(&self, bytes: &[u8], out: &mut Image) -> Result<bool, String> {
        // The options `image` uses: lenient about non-conformance; the pixel limit is ours,
        // checked once the header is read.
        let options =
            DecoderOptions::default().set_strict_mode(false).set_max_width(usize::MAX).set_max_height(usize::MAX);
        let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
        if decoder.decode_headers().is_err() {
            return Ok(false);
        }
        let (Some(input), Some((width, height))) = (decoder.input_colorspace(), decoder.dimensions()) else {
            return Ok(false);
        };
        let decoded_channels = match (input, self.channels) {
            (ColorSpace::YCbCr | ColorSpace::RGB, Channels::Rgb) => 3,
            (ColorSpace::Luma, _) => 1,
            _ => return Ok(false),
        };
        self.check_size(width, height)?;
        let out_space = if decoded_channels == 3 { ColorSpace::RGB } else { ColorSpace::Luma };
        decoder.set_options(options.jpeg_set_out_colorspace(out_space));
        let len = width * height * decoded_channels;
        // Only a growing buffer is written here; the decoder overwrites every byte.
        out.data.resize(len, 0);
        decoder.decode_into(&mut out.data[..len]).map_err(|e| format!("decode failed: {e}"))?;
        (out.width, out.height, out.channels) = (width, height, decoded_channels);
        if self.channels == Channels::Rgb && decoded_channels == 1 {
            expand_grey_in_place(&mut out.data, width * height);
            out.channels = 3;
        }
        Ok(true)
    }
}

/// The size a PNG's header (its first chunk, IHDR) claims, read before the `image` crate
/// sees the file so that its error names the size: signature (8 bytes), chunk length (4),
/// `IHDR`, width and height (4 bytes each, big-endian).
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1A, b'\n'];
    if !bytes.starts_with(&SIGNATURE) || bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let word = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some((word(16)?, word(20)?))
}

/// `pixels` in megapixels, for messages: `4290.3`, `64`.
fn megapixels(pixels: u64) -> String {
    let mp = pixels as f64 / 1e6;
    if mp.fract() == 0.0 { format!("{mp}") } else { format!("{mp:.1}") }
}

/// The first bytes of every JPEG file: start-of-image and the next marker's `FF`.
const JPEG_START: [u8; 3] = [0xFF, 0xD8, 0xFF];

/// Turns the first `pixels` grey bytes of `data` into `pixels` RGB triples, in place
/// (back to front, so no byte is overwritten before it is read).
fn expand_grey_in_place(data: &mut Vec<u8>, pixels: usize) {
    data.resize(3 * pixels, 0);
    for i in (0..pixels).rev() {
        let v = data[i];
        data[3 * i..3 * i + 3].fill(v);
    }
}

/// JPEG decoders fill a cut-off scan with grey and report success, so truncation is
/// checked here: a JPEG must hold its end-of-image marker (`FF D9`) near the end. Inside
/// entropy-coded data a literal `FF` is always followed by `00`, so the marker cannot
/// appear by accident; up to 1 KiB of trailing padding after it is accepted.
fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&JPEG_START) {
        return false;
    }
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    !tail.windows(2).any(|w| w == [0xFF, 0xD9])
}
