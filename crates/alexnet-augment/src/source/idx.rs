//! IDX files (MNIST, Fashion-MNIST), gzip-compressed or plain, and the embedded
//! Fashion-MNIST with its checksums.

use super::{RawSample, Source};
use crate::{Error, Image, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An image/label pair of IDX files held in memory (Fashion-MNIST's training set is 47 MB).
/// Samples are grey images (`u8`, 1 channel).
#[derive(Debug, Clone)]
pub struct Idx {
    images_path: PathBuf,
    pixels: Arc<Vec<u8>>,
    labels: Arc<Vec<u8>>,
    rows: usize,
    cols: usize,
    class_names: Vec<String>,
    file_sizes: [u64; 2],
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic bytes. A gzip
/// stream is read no further than its IDX header says the data go (plus one byte, so
/// [`parse_idx`] sees that there is more): a small file cannot expand into more memory than
/// the data it claims, and never more than deflate's ~1,032:1 ratio allows.
fn read_maybe_gz(path: &Path) -> Result<(Vec<u8>, u64)> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let size = raw.len() as u64;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok((raw, size));
    }
    let mut decoder = flate2::read::GzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    let mut read = |limit: u64, out: &mut Vec<u8>| {
        (&mut decoder).take(limit).read_to_end(out).map_err(|e| Error::malformed(path, format!("gzip stream: {e}")))
    };
    read(4, &mut out)?;
    let dims = out.get(3).copied().map_or(0, u64::from);
    read(4 * dims, &mut out)?;
    let claimed = out[4.min(out.len())..]
        .chunks_exact(4)
        .map(|d| u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])))
        .fold(1u64, u64::saturating_mul);
    read(claimed.saturating_add(1), &mut out)?;
    Ok((out, size))
}

/// Parses an IDX header for unsigned bytes with `dims` dimensions; returns the sizes and
/// the payload, checking that the payload length equals their product.
fn parse_idx<'a>(path: &Path, bytes: &'a [u8], dims: usize) -> Result<(Vec<usize>, &'a [u8])> {
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(Error::malformed(path, format!("{} bytes is shorter than the {header}-byte header", bytes.len())));
    }
    let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
    if magic != [0, 0, 0x08, dims as u8] {
        return Err(Error::malformed(
            path,
            format!("magic {magic:02x?}, expected [00, 00, 08, {dims:02x}] (unsigned bytes, {dims} dimensions)"),
        ));
    }
    let sizes: Vec<usize> = (0..dims)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().expect("4 bytes")) as usize)
        .collect();
    let expected = sizes.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| {
        Error::malformed(path, format!("header sizes {sizes:?} multiply beyond this machine's address space"))
    })?;
    let payload = &bytes[header..];
    if payload.len() != expected {
        return Err(Error::malformed(
            path,
            format!("header says {sizes:?} = {expected} bytes of data, file holds {}", payload.len()),
        ));
    }
    Ok((sizes, payload))
}

impl Idx {
    /// Opens an `idx3-ubyte` image file and an `idx1-ubyte` label file (each `.gz` or
    /// plain). Errors if a header disagrees with the file size or the counts differ.
    /// Class names are the label numbers; see [`Idx::with_class_names`].
    pub fn open(images_path: impl AsRef<Path>, labels_path: impl AsRef<Path>) -> Result<Self> {
        let (images_path, labels_path) = (images_path.as_ref(), labels_path.as_ref());
        let (image_bytes, image_size) = read_maybe_gz(images_path)?;
        let (label_bytes, label_size) = read_maybe_gz(labels_path)?;
        let (dims, pixels) = parse_idx(images_path, &image_bytes, 3)?;
        let (ldims, labels) = parse_idx(labels_path, &label_bytes, 1)?;
        if dims[0] != ldims[0] {
            return Err(Error::malformed(
                labels_path,
                format!("{} labels for {} images in {}", ldims[0], dims[0], images_path.display()),
            ));
        }
        if dims[0] == 0 {
            return Err(Error::EmptyDataset { root: images_path.to_path_buf() });
        }
        let classes = labels.iter().copied().max().map_or(0, |m| usize::from(m) + 1);
        Ok(Idx {
            images_path: images_path.to_path_buf(),
            pixels: Arc::new(pixels.to_vec()),
            labels: Arc::new(labels.to_vec()),
            rows: dims[1],
            cols: dims[2],
            class_names: (0..classes).map(|c| c.to_string()).collect(),
            file_sizes: [image_size, label_size],
        })
    }

    /// Replaces the class names (there must be at least as many as the largest label + 1).
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        if names.len() < self.class_names.len() {
            return Err(Error::Config(format!(
                "{} class names for labels up to {}",
                names.len(),
                self.class_names.len() - 1
            )));
        }
        self.class_names = names;
        Ok(self)
    }

    /// Image height and width.
    pub fn image_size(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// The pixels of sample `index`, row-major.
    pub fn pixels(&self, index: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[index * n..(index + 1) * n]
    }
}

impl Source for Idx {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn label(&self, index: usize) -> u32 {
        u32::from(self.labels[index])
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn read(&self, index: usize) -> Result<RawSample, String> {
        Ok(RawSample::Pixels(Image {
            width: self.cols,
            height: self.rows,
            channels: 1,
            data: self.pixels(index).to_vec(),
        }))
    }
    fn describe(&self, index: usize) -> String {
        format!("{}[{index}]", self.images_path.display())
    }
    fn fingerprint_bytes(&self) -> Vec<u8> {
        let name = self.images_path.file_name().unwrap_or_default().to_string_lossy();
        format!(
            "idx\n{name}\t{}\t{}\t{}x{}x{}\n",
            self.file_sizes[0],
            self.file_sizes[1],
            self.len(),
            self.rows,
            self.cols
        )
        .into_bytes()
    }
    fn data_dir(&self) -> Option<PathBuf> {
        self.images_path.parent().map(Path::to_path_buf)
    }
}

/// Checks every file listed in a `sha256sum`-style file (`<hex>  <name>` per line) against
/// its SHA-256 digest; names are relative to the sums file's folder.
pub fn verify_sha256sums(sums_file: impl AsRef<Path>) -> Result<()> {
    let sums_file = sums_file.as_ref();
    let dir = sums_file.parent().unwrap_or(Path::new("."));
    let text = std::fs::read_to_string(sums_file).map_err(|e| Error::io(sums_file, e))?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (hex, name) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| Error::malformed(sums_file, format!("line {line:?} is not `<sha256>  <name>`")))?;
        let path = dir.join(name.trim().trim_start_matches('*'));
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let actual: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        if !actual.eq_ignore_ascii_case(hex) {
            return Err(Error::Checksum { path, expected: hex.to_string(), actual });
        }
    }
    Ok(())
}

/// Fashion-MNIST's training (60,000) and test (10,000) sets.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    /// The 60,000 training images.
    pub train: Idx,
    /// The 10,000 test images.
    pub test: Idx,
}

/// Fashion-MNIST's class names, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// Opens Fashion-MNIST from `dir` (the four `*-ubyte.gz` files), first verifying them
/// against `dir/SHA256SUMS` when that file exists.
pub fn fashion_mnist(dir: impl AsRef<Path>) -> Result<FashionMnist> {
    let dir = dir.as_ref();
    let sums = dir.join("SHA256SUMS");
    if sums.exists() {
        verify_sha256sums(&sums)?;
    }
    let names: Vec<String> = FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect();
    let train = Idx::open(dir.join("train-images-idx3-ubyte.gz"), dir.join("train-labels-idx1-ubyte.gz"))?
        .with_class_names(names.clone())?;
    let test = Idx::open(dir.join("t10k-images-idx3-ubyte.gz"), dir.join("t10k-labels-idx1-ubyte.gz"))?
        .with_class_names(names)?;
    Ok(FashionMnist { train, test })
}
