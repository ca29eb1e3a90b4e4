//! Sources: class folders, IDX, CIFAR-10 binaries, the embedded Fashion-MNIST.

// Direct formulas read best with explicit indices.
#![allow(clippy::needless_range_loop)]

mod common;

use alexnet_augment::*;
use std::io::Write;

#[test]
fn image_folder_sorts_classes_and_files_and_reads_class_names() {
    let dir = tempfile::tempdir().unwrap();
    common::write_folder(dir.path(), &["n02", "n01", "n10"], 3);
    // Non-image and hidden files are not samples.
    std::fs::write(dir.path().join("n01/notes.txt"), "x").unwrap();
    std::fs::write(dir.path().join("n01/.hidden.jpg"), "x").unwrap();
    std::fs::write(dir.path().join("n01/UPPER.JPEG"), common::jpeg_bytes(8, 8, 0)).unwrap();
    let words = dir.path().join("words.txt");
    std::fs::write(&words, "n01\ttench, Tinca tinca\nn10 golf ball\n").unwrap();
    let opts = ImageFolderOptions { class_names_file: Some(words), ..Default::default() };
    let src = ImageFolder::open_with(dir.path(), &opts).unwrap();
    assert_eq!(src.folders(), ["n01", "n02", "n10"]);
    assert_eq!(src.class_names(), ["tench, Tinca tinca", "n02", "golf ball"]);
    assert_eq!(src.len(), 10);
    let names: Vec<_> = (0..4).map(|i| src.path(i).file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["UPPER.JPEG", "img000.jpg", "img001.jpg", "img002.jpg"]);
    assert_eq!((0..10).map(|i| src.label(i)).collect::<Vec<_>>(), [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]);
}

#[test]
fn empty_data_set_and_empty_class_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(ImageFolder::open(dir.path()), Err(Error::EmptyDataset { .. })));
    common::write_folder(dir.path(), &["a"], 1);
    std::fs::create_dir(dir.path().join("b")).unwrap();
    std::fs::write(dir.path().join("b/readme.txt"), "no images").unwrap();
    match ImageFolder::open(dir.path()) {
        Err(Error::EmptyClass { folder }) => assert!(folder.ends_with("b")),
        other => panic!("expected EmptyClass, got {other:?}"),
    }
    assert!(matches!(ImageFolder::open(dir.path().join("missing")), Err(Error::Io { .. })));
}

#[test]
fn idx_reads_plain_and_gzip_files() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = common::write_idx(dir.path(), 7, 3, 4);
    let plain = Idx::open(&ip, &lp).unwrap();
    assert_eq!((plain.len(), plain.image_size()), (7, (3, 4)));
    assert_eq!(plain.class_names().len(), 7, "labels 0..=6 seen");
    let (images, _) = common::idx_bytes(7, 3, 4);
    for i in 0..7 {
        assert_eq!(plain.label(i), i as u32 % 10);
        let RawSample::Pixels(img) = plain.read(i).unwrap() else { panic!("IDX gives pixels") };
        assert_eq!((img.width, img.height, img.channels), (4, 3, 1));
        assert_eq!(img.data, images[16 + i * 12..16 + (i + 1) * 12]);
    }
    // The same data gzipped.
    let gz = |p: &std::path::Path| {
        let out = p.with_extension("gz");
        let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&out).unwrap(), flate2::Compression::fast());
        enc.write_all(&std::fs::read(p).unwrap()).unwrap();
        enc.finish().unwrap();
        out
    };
    let zipped = Idx::open(gz(&ip), gz(&lp)).unwrap();
    assert_eq!(zipped.pixels(6), plain.pixels(6));
}

#[test]
fn idx_header_size_mismatch_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (images, labels) = common::idx_bytes(5, 4, 4);
    let (ip, lp) = (dir.path().join("i"), dir.path().join("l"));
    std::fs::write(&lp, &labels).unwrap();
    std::fs::write(&ip, &images[..images.len() - 3]).unwrap();
    match Idx::open(&ip, &lp) {
        Err(Error::Malformed { reason, .. }) => {
            assert!(reason.contains("80 bytes") && reason.contains("77"), "{reason}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    std::fs::write(&ip, &images).unwrap();
    let (_, six_labels) = common::idx_bytes(6, 1, 1);
    std::fs::write(&lp, six_labels).unwrap();
    assert!(
        matches!(Idx::open(&ip, &lp), Err(Error::Malformed { reason, .. }) if reason.contains("6 labels for 5 images"))
    );
    std::fs::write(&ip, [0, 0, 9, 3]).unwrap();
    assert!(matches!(Idx::open(&ip, &lp), Err(Error::Malformed { .. })));
}

/// Issue 12, item 12 (found while writing the property tests): sizes whose product does
/// not fit a `usize` are an error, not an overflow panic; a gzip stream is read no further
/// than its header's claim, so a small file cannot expand into a large allocation.
#[test]
fn idx_headers_cannot_overflow_or_expand_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = (dir.path().join("i"), dir.path().join("l"));
    let (_, labels) = common::idx_bytes(5, 4, 4);
    std::fs::write(&lp, &labels).unwrap();
    let mut huge = vec![0, 0, 8, 3];
    huge.extend([u32::MAX; 3].iter().flat_map(|d| d.to_be_bytes()));
    std::fs::write(&ip, &huge).unwrap();
    match Idx::open(&ip, &lp) {
        Err(Error::Malformed { reason, .. }) => assert!(reason.contains("address space"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    // 5 images of 4x4 claimed, 10 MB of pixels compressed into a few KB.
    let mut claimed = vec![0, 0, 8, 3];
    claimed.extend([5u32, 4, 4].iter().flat_map(|d| d.to_be_bytes()));
    claimed.resize(16 + 10_000_000, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&claimed).unwrap();
    std::fs::write(&ip, gz.finish().unwrap()).unwrap();
    match Idx::open(&ip, &lp) {
        Err(Error::Malformed { reason, .. }) => assert!(reason.contains("file holds 81"), "{reason}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}

fn cifar_record(label: u8, salt: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|i| (i as u8).wrapping_mul(3).wrapping_add(salt)));
    r
}

#[test]
fn cifar_binary_reads_planes_into_rgb_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let batch: Vec<u8> = (0..3).flat_map(|i| cifar_record(i * 3, i)).collect();
    std::fs::write(dir.path().join("test_batch.bin"), &batch).unwrap();
    let src = Cifar10Bin::test(dir.path()).unwrap();
    assert_eq!((src.len(), src.label(2)), (3, 6));
    assert_eq!(src.class_names()[9], "truck");
    let RawSample::Pixels(img) = src.read(1).unwrap() else { panic!("CIFAR gives pixels") };
    let rec = cifar_record(3, 1);
    for (x, y) in [(0, 0), (5, 7), (31, 31)] {
        for c in 0..3 {
            assert_eq!(img.get(x, y, c), rec[1 + c * 1024 + y * 32 + x]);
        }
    }
    assert!(src.describe(2).ends_with("test_batch.bin[2]"));
    std::fs::write(dir.path().join("test_batch.bin"), &batch[..5000]).unwrap();
    assert!(matches!(Cifar10Bin::test(dir.path()), Err(Error::Malformed { .. })));
    std::fs::write(dir.path().join("test_batch.bin"), cifar_record(10, 0)).unwrap();
    assert!(
        matches!(Cifar10Bin::test(dir.path()), Err(Error::Malformed { reason, .. }) if reason.contains("label 10"))
    );
}

#[test]
fn embedded_fashion_mnist_verifies_and_opens() {
    let fm = fashion_mnist(common::fashion_dir()).unwrap();
    assert_eq!((fm.train.len(), fm.test.len()), (60_000, 10_000));
    assert_eq!(fm.train.image_size(), (28, 28));
    assert_eq!(fm.train.class_names()[9], "Ankle boot");
    // The first training image is an ankle boot (label 9), as in Zalando's documentation.
    assert_eq!(fm.train.label(0), 9);
    let counts = (0..fm.test.len()).fold([0; 10], |mut acc, i| {
        acc[fm.test.label(i) as usize] += 1;
        acc
    });
    assert_eq!(counts, [1000; 10], "the test set is balanced");
}

#[test]
fn checksum_mismatch_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.bin"), b"abc").unwrap();
    // SHA-256("abc") from FIPS 180-2.
    let good = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    std::fs::write(dir.path().join("SUMS"), format!("{good}  a.bin\n")).unwrap();
    verify_sha256sums(dir.path().join("SUMS")).unwrap();
    std::fs::write(dir.path().join("a.bin"), b"abd").unwrap();
    assert!(
        matches!(verify_sha256sums(dir.path().join("SUMS")), Err(Error::Checksum { expected, .. }) if expected == good)
    );
}
