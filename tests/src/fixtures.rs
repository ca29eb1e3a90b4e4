//! Generated test data: small images and class folders, and hostile files (images whose
//! headers claim sizes their bytes do not hold).

use std::path::{Path, PathBuf};

use image::ImageEncoder;
use image::codecs::{jpeg::JpegEncoder, png::PngEncoder};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace").to_path_buf()
}

/// The embedded Fashion-MNIST.
pub fn fashion_mnist() -> PathBuf {
    workspace().join("datasets/fashion-mnist")
}

/// Writes the first `train` training and `test` test images of the embedded Fashion-MNIST
/// into `dir` under Fashion-MNIST's file names (uncompressed, no checksums): a data set
/// that opens in milliseconds, for tests that start many processes.
pub fn write_fashion_slice(dir: &Path, train: usize, test: usize) {
    use alexnet_augment::Source;
    let fm = alexnet_augment::fashion_mnist(fashion_mnist()).expect("the embedded Fashion-MNIST");
    std::fs::create_dir_all(dir).expect("data folder");
    for (prefix, split, n) in [("train", &fm.train, train), ("t10k", &fm.test, test)] {
        let (rows, cols) = split.image_size();
        let mut images = vec![0, 0, 8, 3];
        for d in [n, rows, cols] {
            images.extend((d as u32).to_be_bytes());
        }
        let mut labels = vec![0, 0, 8, 1];
        labels.extend((n as u32).to_be_bytes());
        for i in 0..n {
            images.extend_from_slice(split.pixels(i));
            labels.push(split.label(i) as u8);
        }
        // Plain bytes under the `.gz` names: the reader goes by the gzip magic bytes.
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), images).expect("images");
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), labels).expect("labels");
    }
}

/// A CMYK JPEG (16x12), the `image` crate's decoding route.
pub fn cmyk_jpeg() -> Vec<u8> {
    std::fs::read(workspace().join("crates/alexnet-augment/tests/data/cmyk.jpg")).expect("the CMYK fixture")
}

/// A deterministic, textured RGB image (`width * height * 3` bytes).
pub fn rgb_pixels(width: u32, height: u32, salt: u32) -> Vec<u8> {
    (0..height)
        .flat_map(|y| {
            (0..width).flat_map(move |x| {
                [
                    ((x * 7 + y * 3 + salt * 11) % 256) as u8,
                    ((x * 2 + y * 9 + salt * 5) % 256) as u8,
                    ((x * y + salt * 17) % 256) as u8,
                ]
            })
        })
        .collect()
}

/// A colour JPEG of [`rgb_pixels`].
pub fn jpeg_bytes(width: u32, height: u32, salt: u32) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
        .write_image(&rgb_pixels(width, height, salt), width, height, image::ExtendedColorType::Rgb8)
        .expect("JPEG encodes");
    out
}

/// A colour PNG of [`rgb_pixels`].
pub fn png_bytes(width: u32, height: u32, salt: u32) -> Vec<u8> {
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(&rgb_pixels(width, height, salt), width, height, image::ExtendedColorType::Rgb8)
        .expect("PNG encodes");
    out
}

/// `jpeg` with the size in its start-of-frame header replaced by `width` x `height`: a few
/// KB claiming any size, as a decompression bomb does.
pub fn jpeg_claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let sof = (2..out.len() - 9)
        .find(|&i| out[i] == 0xFF && (0xC0..=0xC2).contains(&out[i + 1]))
        .expect("a start-of-frame marker");
    // FF Cx, length (2), precision (1), height (2), width (2).
    out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    out
}

/// `png` with the size in its IHDR chunk replaced by `width` x `height` (CRC fixed).
pub fn png_claiming(png: &[u8], width: u32, height: u32) -> Vec<u8> {
    let mut out = png.to_vec();
    // Signature (8), length (4), "IHDR" (4), width (4), height (4), 5 more bytes, CRC (4).
    assert_eq!(&out[12..16], b"IHDR");
    out[16..20].copy_from_slice(&width.to_be_bytes());
    out[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&out[12..29]);
    out[29..33].copy_from_slice(&crc.to_be_bytes());
    out
}

/// `png` with every chunk's CRC recomputed, so that a mutated file gets past the CRC
/// check to the decoder proper (chunks running past the end are left as they are).
pub fn with_fixed_png_crcs(png: &[u8]) -> Vec<u8> {
    let mut out = png.to_vec();
    let mut at = 8;
    while at + 12 <= out.len() {
        let len = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&end| end + 4 <= out.len()) else { break };
        let crc = crc32(&out[at + 4..end]);
        out[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        at = end + 4;
    }
    out
}

/// CRC-32 (IEEE, as PNG uses), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// Three decompression bombs under 30 KB each: a colour JPEG claiming 65,500 x 65,500
/// pixels (12.9 GB decoded), a PNG claiming 20,000 x 20,000, and the CMYK JPEG claiming
/// 20,000 x 20,000 (the `image` crate's route), with the names to save them under.
pub fn bombs() -> [(&'static str, Vec<u8>); 3] {
    [
        ("bomb-65500.jpg", jpeg_claiming(&jpeg_bytes(64, 64, 1), 65_500, 65_500)),
        ("bomb-20000.png", png_claiming(&png_bytes(64, 64, 2), 20_000, 20_000)),
        ("bomb-cmyk.jpg", jpeg_claiming(&cmyk_jpeg(), 20_000, 20_000)),
    ]
}

/// The class names of [`write_class_folder`].
pub const CLASSES: [&str; 3] = ["blue_sky", "green_grass", "red_brick"];

/// Writes `per_class` JPEGs of varied sizes into `root/<class>/` for each of [`CLASSES`]:
/// each class has its own dominant colour, so a few epochs of `mini` learn them. Returns
/// the files, class by class.
pub fn write_class_folder(root: &Path, per_class: usize) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for (class, name) in CLASSES.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("class folder");
        for i in 0..per_class {
            let (w, h) = [(48, 36), (36, 52), (40, 40), (64, 40), (33, 45), (56, 56)][i % 6];
            let img = image::RgbImage::from_fn(w, h, |x, y| {
                let mut px = [40u8, 40, 40];
                px[2 - class] = 150 + ((x * 100) / w) as u8;
                px[(3 - class) % 3] = ((y * 60) / h) as u8 + if (x + y + i as u32).is_multiple_of(7) { 40 } else { 0 };
                image::Rgb(px)
            });
            let path = dir.join(format!("img{i}.jpg"));
            img.save(&path).expect("JPEG saves");
            files.push(path);
        }
    }
    files
}
