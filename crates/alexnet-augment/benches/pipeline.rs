//! Pipeline throughput in images/s.
//!
//! - ImageNet chain (decode -> resize 256 -> random crop 227 -> flip -> PCA -> normalise
//!   -> CHW f32) on the Imagenette subset: set `ALEX_IMAGENETTE` to the unpacked
//!   `imagenette-224` folder (its `train` split is used); skipped when unset.
//! - Fashion-MNIST (pad 4, random crop 28, flip, normalise, 1 channel) from the embedded copy.
//!
//! `cargo bench -p alexnet-augment --bench pipeline` (set `ALEX_BENCH_EPOCHS` to repeat more).

use alexnet_augment::*;
use std::time::Instant;

fn epochs() -> u64 {
    std::env::var("ALEX_BENCH_EPOCHS").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

/// Seconds this thread has spent on a CPU (Linux; 0 elsewhere). Rates per CPU-second are
/// what a core gives when the machine is shared: time spent waiting for a core is left out.
fn thread_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    stat.split_whitespace().next().and_then(|ns| ns.parse::<f64>().ok()).unwrap_or(0.0) * 1e-9
}

/// CPU seconds of the whole process, exited threads included (Linux `utime + stime` at
/// 100 ticks/s; 0 elsewhere).
fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(14) + ticks(15)) / 100.0
}

/// Images/s through the whole loader after one warm-up epoch, and images per CPU-second
/// of the whole process (all workers, the reader and the batcher).
fn loader_rate(loader: &Loader) -> (f64, f64) {
    loader.epoch(0).for_each(|b| loader.recycle(b));
    let (start, cpu) = (Instant::now(), process_cpu_s());
    let mut n = 0;
    for e in 1..=epochs() {
        for batch in loader.epoch(e) {
            n += batch.len();
            loader.recycle(batch);
        }
    }
    (n as f64 / start.elapsed().as_secs_f64(), n as f64 / (process_cpu_s() - cpu))
}

/// Images/s of `f` applied to every sample on this thread: by the clock and per CPU-second.
fn stage_rate(count: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
    let (start, cpu) = (Instant::now(), thread_cpu_s());
    for i in 0..count {
        f(i);
    }
    (count as f64 / start.elapsed().as_secs_f64(), count as f64 / (thread_cpu_s() - cpu))
}

fn show(what: &str, (wall, cpu): (f64, f64)) {
    println!("  {what:<50} {wall:>8.0} images/s {cpu:>8.0} per CPU-second");
}

fn imagenette() {
    let Some(root) = std::env::var_os("ALEX_IMAGENETTE") else {
        println!("imagenette: skipped (set ALEX_IMAGENETTE to the unpacked imagenette-224 folder)");
        return;
    };
    let train = std::path::Path::new(&root).join("train");
    let source = ImageFolder::open(&train).expect("open Imagenette");
    let decode = Decode::new(Channels::Rgb);
    let resize = ResizeCentreCrop { size: 256 };
    let opts = StatsOptions { cache_dir: Some(std::env::temp_dir().join("alexnet-augment")), ..Default::default() };
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
    let image_crate = stage_rate(n, |i| drop(image::load_from_memory(&files[i]).unwrap().into_rgb8()));
    let zune = stage_rate(n, |i| decode.apply_into(&files[i], &mut decoded).unwrap());
    let decoded: Vec<Image> = files.iter().map(|f| decode.apply(f).unwrap()).collect();
    let mut buffers = ResizeBuffers::default();
    let mut resized = Image::new(0, 0, 3, Vec::new()).unwrap();
    let whole = Region { left: 0, top: 0, width: 256, height: 256 };
    let resize_whole = stage_rate(n, |i| resize.apply_region(&decoded[i], whole, &mut buffers, &mut resized).unwrap());
    let window = |i: usize| Region { left: i * 7 % 30, top: i * 11 % 30, width: 227, height: 227 };
    let resize_window =
        stage_rate(n, |i| resize.apply_region(&decoded[i], window(i), &mut buffers, &mut resized).unwrap());
    let library_window = library_window_rate(&decoded, window);
    let mut chw = vec![0.0f32; 3 * 227 * 227];
    let affine = ChwAffine { scale: [1.0 / 58.4, 1.0 / 57.1, 1.0 / 57.4], bias: [-2.1, -2.0, -1.8], flip: false };
    let resize_chw = stage_rate(n, |i| {
        let affine = ChwAffine { flip: i % 2 == 1, ..affine };
        assert!(resize.apply_region_chw(&decoded[i], window(i), &mut buffers, affine, &mut chw).unwrap());
    });
    let mut scratch = Scratch::new();
    let mut out = vec![0.0f32; transform.sample_len()];
    let img = transform.prepare(RawSample::Encoded(files[0].clone()), &mut scratch).unwrap();
    let fused = stage_rate(20 * n, |i| {
        let plan = transform.plan(256, 256, &mut sample_rng(0, 0, i as u64)).unwrap();
        transform.write_fused(&img, &plan, &mut out);
    });
    let full = stage_rate(n, |i| {
        let mut rng = sample_rng(0, 0, i as u64);
        transform.apply(RawSample::Encoded(files[i].clone()), &mut rng, &mut scratch, &mut out).unwrap();
    });
    println!("imagenette, one thread, files in memory:");
    show("decode, image::load_from_memory", image_crate);
    show("decode, zune-jpeg into a reused buffer", zune);
    show("resize to the whole 256 square", resize_whole);
    show("resize into a 227 window only", resize_window);
    show("  (fast_image_resize, same 227 window)", library_window);
    show("resize into the 227 window, straight to CHW f32", resize_chw);
    show("fused crop/flip/PCA/normalise/CHW (2-step path)", fused);
    show("whole transform", full);
    for workers in [1, 2] {
        let loader = Loader::builder(transform.clone()).batch_size(64).workers(workers).build(source.clone()).unwrap();
        let (rate, cpu) = loader_rate(&loader);
        println!(
            "imagenette loader, {workers} worker(s), batch 64, files from disk: {rate:>7.0} images/s ({:.0} per worker), \
             {cpu:.0} per CPU-second of the process",
            rate / workers as f64
        );
    }
}

/// The same windows through `fast_image_resize` (bilinear convolution, crop box mapped
/// onto the window), for comparison.
fn library_window_rate(decoded: &[Image], window: impl Fn(usize) -> Region) -> (f64, f64) {
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer, images};
    let mut resizer = Resizer::new();
    let mut dst = images::Image::new(227, 227, PixelType::U8x3);
    stage_rate(decoded.len(), |i| {
        let img = &decoded[i];
        let src = images::ImageRef::new(img.width as u32, img.height as u32, &img.data, PixelType::U8x3).unwrap();
        let side = img.width.min(img.height);
        let scale = |at: usize| (at * side) as f64 / 256.0;
        let (w, left0, top0) = (window(i), (img.width - side) as f64 / 2.0, (img.height - side) as f64 / 2.0);
        let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)).crop(
            left0 + scale(w.left),
            top0 + scale(w.top),
            scale(w.width),
            scale(w.height),
        );
        resizer.resize(&src, &mut dst, &options).unwrap();
    })
}

fn fashion() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fashion-mnist");
    let fm = fashion_mnist(&dir).expect("embedded Fashion-MNIST");
    let transform = Transform::small_train(Channels::Grey, 28, 4, Normalize::per_channel(&[0.286], &[0.353]));
    let mut out = vec![0.0f32; transform.sample_len()];
    let mut scratch = Scratch::new();
    let (one, _) = stage_rate(fm.train.len(), |i| {
        let mut rng = sample_rng(0, 0, i as u64);
        transform.apply(fm.train.read(i).unwrap(), &mut rng, &mut scratch, &mut out).unwrap();
    });
    println!("fashion-mnist, one thread, whole transform: {one:>9.0} images/s");
    for workers in [1, 2] {
        let loader =
            Loader::builder(transform.clone()).batch_size(128).workers(workers).build(fm.train.clone()).unwrap();
        let (rate, _) = loader_rate(&loader);
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
