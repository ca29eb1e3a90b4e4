//! Pipeline throughput in images/s.
//!
//! - ImageNet chain (decode -> resize 256 -> random crop 227 -> flip -> PCA -> normalise
//!   -> CHW f32) on the Imagenette subset: set `ALEX_IMAGENETTE` to the unpacked
//!   `imagenette-224` folder (its `train` split is used); skipped when unset.
//! - Fashion-MNIST (pad 4, random crop 28, flip, normalise, 1 channel) from the embedded copy.
//!
//! `cargo bench -p alex-augment --bench pipeline` (set `ALEX_BENCH_EPOCHS` to repeat more).

use alex_augment::*;
use std::time::Instant;

fn epochs() -> u64 {
    std::env::var("ALEX_BENCH_EPOCHS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// Images/s through the whole loader, after one warm-up epoch.
fn loader_rate(loader: &Loader) -> f64 {
    loader.epoch(0).for_each(|b| loader.recycle(b));
    let start = Instant::now();
    let mut n = 0;
    for e in 1..=epochs() {
        for batch in loader.epoch(e) {
            n += batch.len();
            loader.recycle(batch);
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Images/s of `f` applied to every sample on this thread.
fn stage_rate(count: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..count {
        f(i);
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn imagenette() {
    let Some(root) = std::env::var_os("ALEX_IMAGENETTE") else {
        println!("imagenette: skipped (set ALEX_IMAGENETTE to the unpacked imagenette-224 folder)");
        return;
    };
    let train = std::path::Path::new(&root).join("train");
    let source = ImageFolder::open(&train).expect("open Imagenette");
    let decode = Decode { channels: Channels::Rgb };
    let resize = ResizeCentreCrop { size: 256 };
    let opts =
        StatsOptions { fallback_cache_dir: Some(std::env::temp_dir().join("alex-augment")), ..Default::default() };
    let start = Instant::now();
    let (stats, report) = ColourStats::load_or_compute(&source, decode, Some(resize), &opts).expect("statistics");
    println!(
        "imagenette: {} images; PCA statistics {} {} in {:.2} s; eigenvalues {:.4?}",
        source.len(),
        if report.loaded { "loaded from" } else { "computed and cached in" },
        report.path.display(),
        start.elapsed().as_secs_f64(),
        stats.eigenvalues
    );
    let transform = Transform::imagenet_train(Some(PcaNoise::from_stats(&stats)));

    // Single-thread stage breakdown on in-memory files.
    let files: Vec<Vec<u8>> = (0..source.len())
        .map(|i| match source.read(i).unwrap() {
            RawSample::Encoded(b) => b,
            RawSample::Pixels(_) => unreachable!(),
        })
        .collect();
    let n = files.len();
    let mut decoded = Image::new(0, 0, 3, Vec::new()).unwrap();
    let image_crate_rate = stage_rate(n, |i| drop(image::load_from_memory(&files[i]).unwrap().into_rgb8()));
    let decode_rate = stage_rate(n, |i| decode.apply_into(&files[i], &mut decoded).unwrap());
    let decoded: Vec<Image> = files.iter().map(|f| decode.apply(f).unwrap()).collect();
    let mut resizer = fast_image_resize::Resizer::new();
    let mut resized = Image::new(0, 0, 3, Vec::new()).unwrap();
    let whole = Region { left: 0, top: 0, width: 256, height: 256 };
    let resize_rate = stage_rate(n, |i| resize.apply_region(&decoded[i], whole, &mut resizer, &mut resized).unwrap());
    let window_rate = stage_rate(n, |i| {
        let (left, top) = (i * 7 % 30, i * 11 % 30);
        let window = Region { left, top, width: 227, height: 227 };
        resize.apply_region(&decoded[i], window, &mut resizer, &mut resized).unwrap()
    });
    let mut scratch = Scratch::new();
    let mut out = vec![0.0f32; transform.sample_len()];
    let img = transform.prepare(RawSample::Encoded(files[0].clone()), &mut scratch).unwrap();
    let fused_rate = stage_rate(20 * n, |i| {
        let plan = transform.plan(256, 256, &mut sample_rng(0, 0, i as u64)).unwrap();
        transform.write_fused(&img, &plan, &mut out);
    });
    let full_rate = stage_rate(n, |i| {
        let mut rng = sample_rng(0, 0, i as u64);
        transform.apply(RawSample::Encoded(files[i].clone()), &mut rng, &mut scratch, &mut out).unwrap();
    });
    println!("imagenette, one thread, files in memory:");
    println!("  decode, image::load_from_memory     {image_crate_rate:>9.0} images/s");
    println!("  decode, zune-jpeg into a reused buffer {decode_rate:>6.0} images/s");
    println!("  resize to the whole 256 square      {resize_rate:>9.0} images/s");
    println!("  resize into a 227 window only       {window_rate:>9.0} images/s");
    println!("  fused crop/flip/PCA/normalise/CHW   {fused_rate:>9.0} images/s");
    println!("  whole transform                     {full_rate:>9.0} images/s");
    for workers in [1, 2] {
        let loader = Loader::builder(transform.clone()).batch_size(64).workers(workers).build(source.clone()).unwrap();
        let rate = loader_rate(&loader);
        println!(
            "imagenette loader, {workers} worker(s), batch 64, files from disk: {rate:>7.0} images/s ({:.0} per worker)",
            rate / workers as f64
        );
    }
}

fn fashion() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fashion-mnist");
    let fm = fashion_mnist(&dir).expect("embedded Fashion-MNIST");
    let transform = Transform::small_train(Channels::Grey, 28, 4, Normalize::per_channel(&[0.286], &[0.353]));
    let mut out = vec![0.0f32; transform.sample_len()];
    let mut scratch = Scratch::new();
    let one = stage_rate(fm.train.len(), |i| {
        let mut rng = sample_rng(0, 0, i as u64);
        transform.apply(fm.train.read(i).unwrap(), &mut rng, &mut scratch, &mut out).unwrap();
    });
    println!("fashion-mnist, one thread, whole transform: {one:>9.0} images/s");
    for workers in [1, 2] {
        let loader =
            Loader::builder(transform.clone()).batch_size(128).workers(workers).build(fm.train.clone()).unwrap();
        let rate = loader_rate(&loader);
        println!("fashion-mnist loader, {workers} worker(s), batch 128: {rate:>9.0} images/s");
    }
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pipeline bench: run with `cargo bench` to measure");
        return;
    }
    fashion();
    imagenette();
}
