//! Generated fixtures shared by the integration tests.
#![allow(dead_code, unused_imports)]

use image::{ImageEncoder, codecs::jpeg::JpegEncoder};
use std::path::Path;

pub use alexnet_integration_tests::fixtures::{jpeg_bytes, png_bytes, rgb_pixels};

pub fn grey_jpeg_bytes(width: u32, height: u32) -> Vec<u8> {
    let grey: Vec<u8> = (0..width * height).map(|i| (i * 5 % 256) as u8).collect();
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .write_image(&grey, width, height, image::ExtendedColorType::L8)
        .unwrap();
    out
}

/// `root/<class>/img<i>.jpg` with `per_class` JPEGs of varied sizes per class.
pub fn write_folder(root: &Path, classes: &[&str], per_class: u32) {
    for (c, class) in classes.iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let (w, h) = (40 + (i * 13 + c as u32 * 7) % 30, 36 + (i * 5) % 25);
            std::fs::write(dir.join(format!("img{i:03}.jpg")), jpeg_bytes(w, h, i + 100 * c as u32)).unwrap();
        }
    }
}

/// An IDX image file (`n` images of `rows` x `cols`) and label file, plain bytes.
pub fn idx_bytes(n: usize, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let mut images = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        images.extend((d as u32).to_be_bytes());
    }
    images.extend((0..n * rows * cols).map(|i| (i * 31 % 256) as u8));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    (images, labels)
}

pub fn write_idx(dir: &Path, n: usize, rows: usize, cols: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let (images, labels) = idx_bytes(n, rows, cols);
    let (ip, lp) = (dir.join("images-idx3-ubyte"), dir.join("labels-idx1-ubyte"));
    std::fs::write(&ip, images).unwrap();
    std::fs::write(&lp, labels).unwrap();
    (ip, lp)
}

pub fn fashion_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fashion-mnist")
}
