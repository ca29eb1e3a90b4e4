//! Helpers shared by the integration tests: a small slice of the embedded Fashion-MNIST.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

use alexnet::{Preset, RunConfig, Schedule};
use alexnet_autograd::CpuBackend;

pub fn fashion_mnist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fashion-mnist")
}

pub fn small_config(runs: &Path, name: &str, epochs: usize) -> RunConfig {
    let mut c = RunConfig::for_preset(Preset::Mini);
    c.name = name.into();
    c.output.runs_dir = runs.to_path_buf();
    c.data.train = Some(fashion_mnist());
    c.data.max_train_images = Some(384);
    c.data.max_eval_images = Some(128);
    c.data.val_fraction = 0.25;
    c.optim.epochs = epochs;
    c.optim.batch_size = 32;
    c.optim.eval_batch_size = 64;
    c.optim.lr = 0.02;
    c.optim.schedule = Schedule::Constant;
    c
}

pub fn backend() -> Arc<CpuBackend> {
    Arc::new(CpuBackend::with_threads(2).unwrap())
}

/// Writes `per_class` PNGs of seeded noise, `size` pixels square, into one sub-folder per
/// class under `root`, each class with its own mean colour so that it is learnable. Unlike
/// Fashion-MNIST's exact-zero backgrounds, noise puts no activation exactly on a ReLU or
/// max-pool boundary, so two runs that differ only in rounding stay close.
pub fn write_noise_folder(root: &Path, classes: usize, per_class: usize, size: u32) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    for class in 0..classes {
        let dir = root.join(format!("class{class}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(size, size, |_, _| {
                let mut px = [next() / 2, next() / 2, next() / 2];
                px[class % 3] += 100;
                image::Rgb(px)
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}
