//! Data parallelism in one process (replicas on several CPU backends) tracks one device
//! running the same global batch, and checkpoints move between device counts.

mod common;

use std::path::Path;
use std::sync::Arc;

use alexnet::{BatchReport, Observer, Placement, RunConfig, Silent, TensorMap, Trainer};
use alexnet_autograd::CpuBackend;
use common::{small_config, write_noise_folder};

/// Records every step's loss.
#[derive(Default)]
struct Losses(Vec<f32>);
impl Observer for Losses {
    fn batch_end(&mut self, report: &BatchReport) {
        self.0.push(report.loss);
    }
}

fn cpu() -> Arc<CpuBackend> {
    Arc::new(CpuBackend::with_threads(1).unwrap())
}

fn replicas(n: usize) -> Placement<CpuBackend> {
    Placement::Data((0..n).map(|_| cpu()).collect())
}

/// Relative difference of two tensors: max |a - b| over max |a|.
fn max_relative(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().map(|v| f64::from(v.abs())).fold(1e-12, f64::max);
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max) / scale
}

#[track_caller]
fn assert_params_close(a: &TensorMap, b: &TensorMap, tolerance: f64, what: &str) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!((na, &ta.dims), (nb, &tb.dims));
        let rel = max_relative(&ta.data, &tb.data);
        assert!(rel <= tolerance, "{what}: {na} differs by {rel:e} relative");
    }
}

#[track_caller]
fn assert_losses_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: step counts");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        let rel = f64::from((x - y).abs()) / f64::from(x.abs()).max(1e-6);
        assert!(rel <= 1e-4, "{what}: step {step} loss {x} vs {y} ({rel:e} relative)");
    }
}

/// `mini` on a class folder of 120 noise images (crops, flips, PCA noise; 90 to train).
fn noise_config(data: &Path, runs: &Path, name: &str, epochs: usize) -> RunConfig {
    let mut c = small_config(runs, name, epochs);
    c.data.train = Some(data.to_path_buf());
    c.data.max_train_images = None;
    c.optim.batch_size = 30;
    c
}

/// 20 steps of `mini` (dropout, LRN, grouped convolutions) at global batch 30: one device,
/// two replicas (15/15), three (10/10/10) and four (7/8/7/8).
#[test]
fn replicas_track_one_device_over_twenty_steps() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 3, 40, 32);
    let config = |name: &str| {
        let mut c = noise_config(data.path(), runs.path(), name, 7);
        c.optim.max_steps = Some(20);
        c
    };
    let mut single = Trainer::new(config("single"), cpu()).unwrap();
    let mut single_losses = Losses::default();
    single.fit(&mut single_losses).unwrap();
    assert_eq!(single_losses.0.len(), 20);
    let want = single.params_to_host().unwrap();
    let want_momentum = single.momentum_to_host().unwrap();
    for n in [2, 3, 4] {
        let name = format!("data-{n}");
        let mut parallel = Trainer::new(config(&name), replicas(n)).unwrap();
        let mut losses = Losses::default();
        parallel.fit(&mut losses).unwrap();
        assert_losses_close(&single_losses.0, &losses.0, &name);
        assert_params_close(&want, &parallel.params_to_host().unwrap(), 1e-4, &name);
        assert_params_close(&want_momentum, &parallel.momentum_to_host().unwrap(), 1e-4, &name);
        let stats = parallel.exchange_stats().expect("replicas exchange gradients");
        assert_eq!(stats.steps, 20);
        assert_eq!(stats.bytes_per_step, 4 * parallel.arch().trainable_params() as u64);
    }
}

/// A run checkpointed inside an epoch on two replicas resumes on one device, and the
/// reverse; both end where an uninterrupted single-device run ends.
#[test]
fn checkpoints_move_between_device_counts() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 3, 40, 32);
    let mut straight = Trainer::new(noise_config(data.path(), runs.path(), "straight", 3), cpu()).unwrap();
    straight.fit(&mut Silent).unwrap();
    let want = straight.params_to_host().unwrap();

    for (name, first, then) in
        [("two-then-one", replicas(2), cpu().into()), ("one-then-two", cpu().into(), replicas(2))]
    {
        let mut config = noise_config(data.path(), runs.path(), name, 3);
        config.optim.max_steps = Some(4);
        let mut part = Trainer::new(config, first).unwrap();
        part.fit(&mut Silent).unwrap();
        drop(part);
        // Resuming drops the step limit: the run finishes its two epochs.
        let mut resumed = Trainer::resume(&runs.path().join(name), then, None).unwrap();
        assert_eq!(resumed.step(), 4);
        resumed.fit(&mut Silent).unwrap();
        assert_eq!(resumed.step(), straight.step());
        assert_params_close(&want, &resumed.params_to_host().unwrap(), 1e-4, name);
    }
}
