//! The threaded loader: determinism, ordering, resume, shutdown, bad-file accounting,
//! statistics caching.

// Direct formulas read best with explicit indices.
#![allow(clippy::needless_range_loop)]

mod common;

use alexnet_augment::*;
use std::sync::mpsc;
use std::time::Duration;

/// The paper's training transform scaled down (resize 40, crop 32), PCA noise included.
fn folder_loader(root: &std::path::Path, workers: usize) -> Loader {
    let pca = PcaNoise {
        eigenvalues: vec![0.2, 0.02, 0.005],
        eigenvectors: vec![vec![0.6, 0.8, 0.0], vec![-0.8, 0.6, 0.0], vec![0.0, 0.0, 1.0]],
        sigma: 0.1,
    };
    let mut t = Transform::imagenet_train(None);
    t.resize = Some(ResizeCentreCrop { size: 40 });
    t.augment = Augment::Train { crop: RandomCrop { size: 32, padding: 0 }, flip: Flip::default(), pca: Some(pca) };
    Loader::builder(t).batch_size(5).workers(workers).seed(42).build(ImageFolder::open(root).unwrap()).unwrap()
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).collect()
}

/// Runs `f` on a thread and fails if it does not finish within `secs`.
fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(secs)).expect("pipeline hung")
}

#[test]
fn batches_are_bit_identical_for_1_2_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    common::write_folder(dir.path(), &["a", "b", "c"], 6);
    let one = collect(&folder_loader(dir.path(), 1), 3);
    assert_eq!(one.len(), 4, "18 samples in batches of 5");
    assert_eq!(one.iter().map(Batch::len).collect::<Vec<_>>(), [5, 5, 5, 3]);
    for workers in [2, 4] {
        assert_eq!(collect(&folder_loader(dir.path(), workers), 3), one, "{workers} workers");
    }
    // Every sample once per epoch; another epoch reshuffles and redraws.
    let mut seen: Vec<usize> = one.iter().flat_map(|b| b.indices.clone()).collect();
    seen.sort();
    assert_eq!(seen, (0..18).collect::<Vec<_>>());
    let other = collect(&folder_loader(dir.path(), 2), 4);
    assert_ne!(other[0].indices, one[0].indices);
    let b = &one[0];
    assert_eq!(b.shape, [5, 3, 32, 32]);
    assert_eq!(b.images.len(), 5 * 3 * 32 * 32);
    assert!(b.images.iter().all(|v| v.is_finite()));
}

#[test]
fn loader_output_equals_the_reference_path_per_sample() {
    // The pipeline resizes only the crop window, into recycled batch buffers that it does
    // not zero, with skipped files mid-batch; the reference resizes the whole image, crops
    // and applies every stage separately.
    let dir = tempfile::tempdir().unwrap();
    common::write_folder(dir.path(), &["a", "b"], 4);
    std::fs::write(dir.path().join("a/bad0.jpg"), b"").unwrap();
    std::fs::write(dir.path().join("b/bad1.jpg"), b"not an image").unwrap();
    let loader = folder_loader(dir.path(), 2);
    let t = loader.transform().clone();
    let mut scratch = Scratch::new();
    let per = t.sample_len();
    let mut checked = 0;
    for epoch in 1..3 {
        for batch in loader.epoch(epoch) {
            for (i, &index) in batch.indices.iter().enumerate() {
                let img = t.prepare(loader.source().read(index).unwrap(), &mut scratch).unwrap();
                let plan = t.plan(img.width, img.height, &mut sample_rng(42, epoch, index as u64)).unwrap();
                let reference = t.apply_reference(&img, &plan);
                let got = &batch.images[i * per..(i + 1) * per];
                let worst = got.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(worst <= 1e-6, "epoch {epoch} sample {index}: {worst}");
                assert_eq!(batch.labels[i], loader.source().label(index));
                checked += 1;
            }
            loader.recycle(batch);
        }
    }
    assert_eq!(checked, 2 * 8);
}

#[test]
fn resuming_mid_epoch_gives_the_remaining_batches() {
    let (dir, _) = (tempfile::tempdir().unwrap(), ());
    let (ip, lp) = common::write_idx(dir.path(), 50, 12, 12);
    let t = Transform::small_train(Channels::Rgb, 10, 2, Normalize::per_channel(&[0.5; 3], &[0.25; 3]));
    let loader = Loader::builder(t).batch_size(8).workers(3).seed(5).build(Idx::open(ip, lp).unwrap()).unwrap();
    assert_eq!(loader.batches_per_epoch(), 7);
    let full: Vec<Batch> = loader.epoch(2).collect();
    let tail: Vec<Batch> = loader.epoch_from(2, 4).collect();
    assert_eq!(tail, full[4..]);
    // Recycled buffers (holding old values) give the same batches.
    let recycled: Vec<Batch> = loader.epoch(2).inspect(|b| loader.recycle(b.clone())).collect();
    assert_eq!(recycled, full);
    assert_eq!(tail[0].number, 4);
    assert_eq!(full[0].shape, [8, 3, 10, 10]);
    // Grey expanded to RGB: three equal planes.
    assert_eq!(full[0].images[..100], full[0].images[100..200]);
}

#[test]
fn shards_build_their_part_of_every_batch_with_the_same_pixels() {
    // 18 images and 2 unusable files in batches of 5; each shard builds its positions of
    // every batch (the last one short), and together, in shard order, the shards give the
    // unsharded batches bit for bit, skips included.
    let dir = tempfile::tempdir().unwrap();
    common::write_folder(dir.path(), &["a", "b", "c"], 6);
    std::fs::write(dir.path().join("a/bad.jpg"), b"").unwrap();
    std::fs::write(dir.path().join("c/bad.jpg"), b"not an image").unwrap();
    let whole = collect(&folder_loader(dir.path(), 2), 1);
    let loader = folder_loader(dir.path(), 2);
    let total = loader.batches_per_epoch();
    for count in [2, 3, 7] {
        let shards: Vec<Vec<Batch>> = (0..count)
            .map(|index| {
                let sharded = Loader::builder(loader.transform().clone())
                    .batch_size(5)
                    .workers(2)
                    .seed(42)
                    .shard(index, count)
                    .build(ImageFolder::open(dir.path()).unwrap())
                    .unwrap();
                sharded.epoch(1).collect()
            })
            .collect();
        for (index, batches) in shards.iter().enumerate() {
            // Every batch number is delivered, empty or not, so shards stay in step.
            assert_eq!(batches.iter().map(|b| b.number).collect::<Vec<_>>(), (0..total).collect::<Vec<_>>());
            for b in batches {
                let nominal = if b.number + 1 == total { 20 - 5 * b.number } else { 5 };
                let (start, end) = shard_range(nominal, index, count);
                assert!(b.len() <= end - start, "shard {index} of {count}, batch {}", b.number);
            }
        }
        let mut whole_iter = whole.iter();
        for number in 0..total {
            let parts: Vec<&Batch> = shards.iter().map(|s| &s[number]).collect();
            let joined: Vec<f32> = parts.iter().flat_map(|b| b.images.iter().copied()).collect();
            let indices: Vec<usize> = parts.iter().flat_map(|b| b.indices.iter().copied()).collect();
            if indices.is_empty() {
                continue;
            }
            let want = whole_iter.next().unwrap();
            assert_eq!(want.number, number);
            assert_eq!(indices, want.indices, "{count} shards, batch {number}");
            assert_eq!(joined, want.images, "{count} shards, batch {number}");
        }
        assert!(whole_iter.next().is_none());
    }
    assert!(
        Loader::builder(loader.transform().clone()).shard(2, 2).build(ImageFolder::open(dir.path()).unwrap()).is_err()
    );
}

#[test]
fn drop_last_and_no_shuffle() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = common::write_idx(dir.path(), 10, 4, 4);
    let t = Transform::small_eval(Channels::Grey, 4, Normalize::identity(1));
    let loader =
        Loader::builder(t).batch_size(4).shuffle(false).drop_last(true).build(Idx::open(ip, lp).unwrap()).unwrap();
    let batches: Vec<Batch> = loader.epoch(0).collect();
    assert_eq!(batches.len(), 2);
    assert_eq!(batches[1].indices, [4, 5, 6, 7]);
    let (images, _) = common::idx_bytes(10, 4, 4);
    assert!((batches[1].images[0] - f32::from(images[16 + 4 * 16]) / 255.0).abs() < 1e-6);
}

#[test]
fn dropping_an_epoch_early_joins_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = common::write_idx(dir.path(), 2000, 28, 28);
    let source = Idx::open(ip, lp).unwrap();
    within(60, move || {
        for workers in [1, 3] {
            let t = Transform::small_train(Channels::Grey, 28, 4, Normalize::identity(1));
            let loader = Loader::builder(t)
                .batch_size(3)
                .workers(workers)
                .job_capacity(1)
                .batch_capacity(1)
                .build(source.clone())
                .unwrap();
            // Never started, started and abandoned, and consumed one batch then dropped.
            drop(loader.epoch(0));
            let mut epoch = loader.epoch(1);
            assert!(epoch.next().is_some());
            std::thread::sleep(Duration::from_millis(20)); // let every stage block on a full channel
            drop(epoch);
            let mut epoch = loader.epoch_from(2, 600);
            assert_eq!(epoch.next().unwrap().number, 600);
            assert_eq!(epoch.count(), 66, "batches 601..=666");
        }
    });
}

#[test]
fn bad_files_are_skipped_counted_and_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    common::write_folder(dir.path(), &["a", "b"], 5);
    let a = dir.path().join("a");
    std::fs::write(a.join("zero.jpg"), b"").unwrap();
    std::fs::write(a.join("text.jpg"), b"this is not an image at all").unwrap();
    let jpeg = common::jpeg_bytes(64, 64, 3);
    std::fs::write(a.join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    std::fs::write(a.join("tiny.png"), common::png_bytes(1, 1, 0)).unwrap();
    let loader = folder_loader(dir.path(), 2);
    let batches = collect(&loader, 0);
    let delivered: usize = batches.iter().map(Batch::len).sum();
    let skipped = loader.take_new_skips();
    let mut names: Vec<String> = skipped.iter().map(|s| s.name.rsplit('/').next().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["text.jpg", "truncated.jpg", "zero.jpg"], "{skipped:#?}");
    assert_eq!(delivered, 14 - 3, "the 1x1 PNG is resized and used");
    assert!(skipped.iter().any(|s| s.reason.contains("0 bytes")));
    for batch in &batches {
        assert_eq!(batch.shape[0], batch.len());
        assert_eq!(batch.images.len(), batch.len() * 3 * 32 * 32);
    }
    // A second epoch meets the same files: counted again, not reported again.
    let mut epoch = loader.epoch(1);
    epoch.by_ref().for_each(drop);
    assert_eq!(epoch.stats().skipped, 3);
    assert_eq!(epoch.stats().samples, 11);
    assert!(loader.take_new_skips().is_empty());
    assert_eq!(loader.skipped().len(), 3);
}

#[test]
fn stats_report_throughput_and_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, lp) = common::write_idx(dir.path(), 300, 28, 28);
    let t = Transform::small_train(Channels::Grey, 28, 4, Normalize::identity(1));
    let loader = Loader::builder(t).batch_size(10).build(Idx::open(ip, lp).unwrap()).unwrap();
    let mut epoch = loader.epoch(0);
    let first = epoch.next().unwrap();
    // A slow consumer: the batcher waits on it.
    std::thread::sleep(Duration::from_millis(50));
    let rest = epoch.by_ref().count();
    let s = epoch.stats();
    assert_eq!((first.len(), rest, s.samples, s.skipped), (10, 29, 300, 0));
    assert!(s.images_per_sec > 0.0);
    assert!(s.producer_wait >= Duration::from_millis(10), "{s:?}");
}

#[test]
fn colour_statistics_match_a_direct_computation_and_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    common::write_folder(dir.path(), &["a", "b"], 3);
    let source = ImageFolder::open(dir.path()).unwrap();
    let decode = Decode::new(Channels::Rgb);
    let cache = tempfile::tempdir().unwrap();
    let opts = StatsOptions { cache_dir: Some(cache.path().to_path_buf()), per_pixel_mean: true, ..Default::default() };
    let resize_24 = ResizeCentreCrop { size: 24 };
    let resize = Some(resize_24);
    let (stats, report) = ColourStats::load_or_compute(&source, decode, resize, &opts).unwrap();
    assert!(!report.loaded && report.problem.is_none());
    assert!(report.path.starts_with(cache.path()) && report.path.exists());
    // Direct: decode and resize every image, accumulate in f64.
    let mut pixels = Vec::new();
    let mut scratch = ResizeBuffers::default();
    for i in 0..source.len() {
        let RawSample::Encoded(bytes) = source.read(i).unwrap() else { unreachable!() };
        let img = resize_24.apply(&decode.apply(&bytes).unwrap(), &mut scratch).unwrap();
        pixels.extend(img.data.chunks_exact(3).map(|p| [0, 1, 2].map(|c| f64::from(p[c]) / 255.0)));
    }
    let n = pixels.len() as f64;
    let mean: Vec<f64> = (0..3).map(|c| pixels.iter().map(|p| p[c]).sum::<f64>() / n).collect();
    for i in 0..3 {
        assert!((stats.mean[i] - mean[i]).abs() < 1e-9);
        for j in 0..3 {
            let cov = pixels.iter().map(|p| (p[i] - mean[i]) * (p[j] - mean[j])).sum::<f64>() / n;
            assert!((stats.covariance[i * 3 + j] - cov).abs() < 1e-9, "cov {i}{j}");
        }
    }
    assert_eq!((stats.images, stats.pixels), (6, 6 * 24 * 24));
    let (w, h, mean_image) = stats.mean_image.as_ref().unwrap();
    assert_eq!((*w, *h, mean_image.len()), (24, 24, 24 * 24 * 3));
    let m0 = pixels.iter().step_by(24 * 24).map(|p| p[0]).sum::<f64>() / 6.0;
    assert!((f64::from(mean_image[0]) - m0).abs() < 1e-6);
    // Second call: from the cache, identical.
    let (again, report) = ColourStats::load_or_compute(&source, decode, resize, &opts).unwrap();
    assert!(report.loaded);
    assert_eq!(again, stats);
    // Another preprocessing is another key.
    let (_, report) =
        ColourStats::load_or_compute(&source, decode, Some(ResizeCentreCrop { size: 20 }), &opts).unwrap();
    assert!(!report.loaded);
    let noise = PcaNoise::from_stats(&stats);
    assert_eq!(noise.eigenvalues.len(), 3);
    assert!(noise.eigenvalues[0] >= noise.eigenvalues[2]);
}

/// Issue 12, item 11: the cache never goes into the data folder (which may be read-only or
/// shared); a truncated cache file is recomputed and replaced, and a cache that cannot be
/// written only costs the time to compute.
#[test]
fn statistics_cache_stays_out_of_the_data_and_survives_damage() {
    let data = tempfile::tempdir().unwrap();
    let (ip, lp) = common::write_idx(data.path(), 20, 5, 5);
    let source = Idx::open(&ip, &lp).unwrap();
    let listing = |dir: &std::path::Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        names
    };
    let before = listing(data.path());
    let cache = tempfile::tempdir().unwrap();
    let opts = StatsOptions { cache_dir: Some(cache.path().to_path_buf()), max_images: 7, ..Default::default() };
    let decode = Decode::new(Channels::Grey);
    let (stats, report) = ColourStats::load_or_compute(&source, decode, None, &opts).unwrap();
    assert_eq!(listing(data.path()), before, "the data folder gained files");
    // max_images 7 of 20: every 3rd sample, 0, 3, ..., 18.
    assert_eq!(stats.images, 7);
    let text = std::fs::read_to_string(&report.path).unwrap();
    std::fs::write(&report.path, &text[..text.len() / 2]).unwrap();
    let (again, repaired) = ColourStats::load_or_compute(&source, decode, None, &opts).unwrap();
    assert!(!repaired.loaded && repaired.problem.as_deref().is_some_and(|p| p.contains("unreadable")), "{repaired:?}");
    assert_eq!(again, stats);
    let (_, loaded) = ColourStats::load_or_compute(&source, decode, None, &opts).unwrap();
    assert!(loaded.loaded && loaded.problem.is_none(), "{loaded:?}");
    // A cache folder that cannot exist (a file is in its way).
    let blocked = StatsOptions { cache_dir: Some(ip.clone()), ..opts };
    let (third, report) = ColourStats::load_or_compute(&source, decode, None, &blocked).unwrap();
    assert_eq!(third, stats);
    assert!(report.problem.is_some_and(|p| p.contains("could not be written")));
}
