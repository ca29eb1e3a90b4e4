//! Helpers shared by the integration tests: a small slice of the embedded Fashion-MNIST.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod faulty;

use alexnet::{BatchReport, Observer, Placement, Preset, RunConfig, Schedule, TensorMap};
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

/// Records every step's loss.
#[derive(Default)]
pub struct Losses(pub Vec<f32>);
impl Observer for Losses {
    fn batch_end(&mut self, report: &BatchReport) {
        self.0.push(report.loss);
    }
}

/// A one-thread CPU backend (several of them stand for several devices).
pub fn cpu() -> Arc<CpuBackend> {
    Arc::new(CpuBackend::with_threads(1).unwrap())
}

/// `n` one-thread CPU replicas.
pub fn replicas(n: usize) -> Placement<CpuBackend> {
    Placement::Data((0..n).map(|_| cpu()).collect())
}

/// Relative difference of two tensors: max |a - b| over max |a|.
pub fn max_relative(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().map(|v| f64::from(v.abs())).fold(1e-12, f64::max);
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max) / scale
}

#[track_caller]
pub fn assert_params_close(a: &TensorMap, b: &TensorMap, tolerance: f64, what: &str) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!((na, &ta.dims), (nb, &tb.dims));
        let rel = max_relative(&ta.data, &tb.data);
        assert!(rel <= tolerance, "{what}: {na} differs by {rel:e} relative");
    }
}

#[track_caller]
pub fn assert_losses_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        let rel = f64::from((x - y).abs()) / f64::from(x.abs()).max(1e-6);
        assert!(rel <= 1e-4, "{what}: step {step} loss {x} vs {y} ({rel:e} relative)");
    }
}

/// `mini` on a class folder of 120 noise images (crops, flips, PCA noise; 90 to train).
pub fn noise_config(data: &Path, runs: &Path, name: &str, epochs: usize) -> RunConfig {
    let mut c = small_config(runs, name, epochs);
    c.data.train = Some(data.to_path_buf());
    c.data.max_train_images = None;
    c.optim.batch_size = 30;
    c
}

/// Writes `params` as `safetensors.torch.save_file(state_dict)` does: F32 tensors and the
/// metadata `format = pt` only (no alexnet-rs description or checksum).
pub fn save_like_pytorch(params: &alexnet::checkpoint::TensorMap, path: &Path) {
    let bytes: Vec<(&str, Vec<u8>, &[usize])> = params
        .iter()
        .map(|(n, t)| (n.as_str(), t.data.iter().flat_map(|x| x.to_le_bytes()).collect(), t.dims.as_slice()))
        .collect();
    let views = bytes.iter().map(|(n, b, d)| {
        (n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, d.to_vec(), b).unwrap())
    });
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}
