//! Runs one training epoch of the input pipeline and prints what the trainer would see.
//!
//! `cargo run --release -p alexnet-augment --example pipeline` uses the embedded
//! Fashion-MNIST; `... --example pipeline -- /path/to/imagenet-style/train` uses class
//! folders with the paper's transform (PCA statistics computed once and cached).

use alexnet_augment::*;

fn main() -> Result<(), Error> {
    let (source, transform): (std::sync::Arc<dyn Source>, Transform) = match std::env::args().nth(1) {
        Some(root) => {
            let folder = ImageFolder::open(&root)?;
            let opts = StatsOptions::default();
            let (stats, report) =
                ColourStats::load_or_compute(&folder, Decode::default(), Some(ResizeCentreCrop { size: 256 }), &opts)?;
            println!(
                "PCA statistics: {} ({})",
                report.path.display(),
                if report.loaded { "cached" } else { "computed" }
            );
            if let Some(problem) = report.problem {
                println!("  cache: {problem}");
            }
            let mut transform = Transform::imagenet_train(Some(PcaNoise::from_stats(&stats)));
            transform.normalize = Normalize::from_stats(&stats);
            (std::sync::Arc::new(folder), transform)
        }
        None => {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fashion-mnist");
            let fm = fashion_mnist(dir)?;
            let transform = Transform::small_train(Channels::Grey, 28, 4, Normalize::per_channel(&[0.286], &[0.353]));
            (std::sync::Arc::new(fm.train), transform)
        }
    };
    println!("{} samples, {} classes", source.len(), source.class_names().len());
    let loader = Loader::builder(transform).batch_size(128).workers(2).seed(1).build(source)?;
    let mut epoch = loader.epoch(0);
    let mut batches = 0;
    for batch in epoch.by_ref() {
        if batches == 0 {
            println!("first batch: shape {:?}, labels {:?}...", batch.shape, &batch.labels[..8.min(batch.len())]);
        }
        batches += 1;
    }
    let s = epoch.stats();
    println!(
        "{batches} batches, {} samples in {:.2} s: {:.0} images/s; consumer waited {:.2} s, pipeline waited {:.2} s",
        s.samples,
        s.elapsed.as_secs_f64(),
        s.images_per_sec,
        s.consumer_wait.as_secs_f64(),
        s.producer_wait.as_secs_f64()
    );
    for skip in loader.take_new_skips() {
        println!("skipped {}: {}", skip.name, skip.reason);
    }
    Ok(())
}
