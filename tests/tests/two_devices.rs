//! Both kinds of multi-device training on two OpenCL devices (PoCL gives two CPU devices
//! with `POCL_DEVICES="pthread pthread"`; CI sets it): the model split's logits equal one
//! device's, and over twenty steps the split and two data-parallel replicas track one
//! device. Skips (or, with `ALEX_REQUIRE_OPENCL=1`, fails) when fewer than two devices
//! exist.

use std::path::Path;
use std::sync::Arc;

use alexnet::parallel::PlacedModel;
use alexnet::synthetic::write_noise_folder;
use alexnet::{
    Architecture, BatchReport, Observer, Placement, Preset, RunConfig, Schedule, TensorMap, Trainer, init::init_params,
};
use alexnet_opencl::{DeviceSelector, OpenClBackend, OpenClError};

fn two_devices() -> Option<[Arc<OpenClBackend>; 2]> {
    let [a, b] = <[OpenClBackend; 2]>::try_from(alexnet_opencl::test_backends(2)?).ok()?;
    Some([Arc::new(a), Arc::new(b)])
}

/// Max |a - b| over max |a|.
fn max_relative(a: &[f32], b: &[f32]) -> f64 {
    let scale = a.iter().map(|v| f64::from(v.abs())).fold(1e-12, f64::max);
    a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max) / scale
}

#[track_caller]
fn assert_params_close(a: &TensorMap, b: &TensorMap, what: &str) {
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(b) {
        assert_eq!((na, &ta.dims), (nb, &tb.dims));
        let rel = max_relative(&ta.data, &tb.data);
        assert!(rel <= 1e-4, "{what}: {na} differs by {rel:e} relative");
    }
}

/// The `paper` preset (LRN per device half) at 67x67, the smallest input its layers close
/// on: the split's logits equal one device's within 1e-5.
#[test]
fn split_logits_equal_one_device() {
    let Some([first, second]) = two_devices() else { return };
    let arch = Architecture::new(Preset::Paper, [3, 67, 67], 1000).unwrap();
    let params = init_params(&arch, Preset::Paper.default_init(), 3);
    let shape = [2, 3, 67, 67];
    let images: Vec<f32> =
        (0..shape.iter().product::<usize>()).map(|i| alexnet_core::rng::uniform(4, i as u64) * 2.0 - 1.0).collect();
    let mut one = PlacedModel::new(&arch, Placement::Single(first.clone()), &params).unwrap();
    let mut split = PlacedModel::new(&arch, Placement::Split(vec![first, second]), &params).unwrap();
    let want = one.logits(&images, &shape).unwrap();
    let got = split.logits(&images, &shape).unwrap();
    let rel = max_relative(&want, &got);
    assert!(rel <= 1e-5, "logits differ by {rel:e} relative");
    assert!(want.iter().any(|&v| v != want[0]), "the logits must not be constant");
}

/// Records every step's loss.
#[derive(Default)]
struct Losses(Vec<f32>);
impl Observer for Losses {
    fn batch_end(&mut self, report: &BatchReport) {
        self.0.push(report.loss);
    }
}

/// `mini` with LRN per device half (the paper's architecture at reduced width, so every
/// exchange of the paper net runs) on noise images of four classes, batch 12, no
/// validation (PoCL's kernels are slow on a CPU; this keeps the file under a minute).
fn config(data: &Path, runs: &Path, name: &str, epochs: usize) -> RunConfig {
    let mut c = RunConfig::for_preset(Preset::Mini);
    c.name = name.into();
    c.lrn_groups = Some(2);
    c.output.runs_dir = runs.to_path_buf();
    c.data.train = Some(data.to_path_buf());
    c.data.val_fraction = 0.0;
    c.optim.epochs = epochs;
    c.optim.batch_size = 12;
    c.optim.eval_batch_size = 12;
    c.optim.lr = 0.01;
    c.optim.schedule = Schedule::Constant;
    c
}

#[test]
fn both_modes_track_one_device_over_twenty_steps() {
    let Some([first, second]) = two_devices() else { return };
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 4, 12, 32).unwrap();
    let run = |name: &str, placement: Placement<OpenClBackend>| {
        let mut c = config(data.path(), runs.path(), name, 5);
        c.optim.max_steps = Some(20);
        let mut trainer = Trainer::new(c, placement).unwrap();
        let mut losses = Losses::default();
        trainer.fit(&mut losses).unwrap();
        (losses.0, trainer.params_to_host().unwrap(), trainer.momentum_to_host().unwrap())
    };
    let (want_losses, want, want_momentum) = run("single", Placement::Single(first.clone()));
    assert_eq!(want_losses.len(), 20);
    assert!(want_losses[19] < want_losses[0], "it trains: {want_losses:?}");
    let both = || vec![first.clone(), second.clone()];
    for (name, placement) in [("model", Placement::Split(both())), ("data", Placement::Data(both()))] {
        let (losses, params, momentum) = run(name, placement);
        for (step, (a, b)) in want_losses.iter().zip(&losses).enumerate() {
            let rel = f64::from((a - b).abs()) / f64::from(a.abs()).max(1e-6);
            assert!(rel <= 1e-4, "{name}: step {step} loss {a} vs {b} ({rel:e} relative)");
        }
        assert_params_close(&want, &params, name);
        assert_params_close(&want_momentum, &momentum, name);
    }
}

/// A checkpoint written by the split resumes on one device, and one device's on the split.
#[test]
fn checkpoints_move_between_one_device_and_the_split() {
    let Some([first, second]) = two_devices() else { return };
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 4, 6, 32).unwrap();
    let mut straight = Trainer::new(config(data.path(), runs.path(), "straight", 2), first.clone()).unwrap();
    straight.fit(&mut alexnet::Silent).unwrap();
    let want = straight.params_to_host().unwrap();
    let split = || Placement::Split(vec![first.clone(), second.clone()]);
    for (name, start, then) in [
        ("split-then-one", split(), Placement::Single(first.clone())),
        ("one-then-split", first.clone().into(), split()),
    ] {
        let mut c = config(data.path(), runs.path(), name, 2);
        c.optim.max_steps = Some(2);
        Trainer::new(c, start).unwrap().fit(&mut alexnet::Silent).unwrap();
        let mut resumed = Trainer::resume(&runs.path().join(name), then, None).unwrap();
        assert_eq!(resumed.step(), 2);
        resumed.fit(&mut alexnet::Silent).unwrap();
        assert_eq!(resumed.step(), straight.step());
        assert_params_close(&want, &resumed.params_to_host().unwrap(), name);
    }
}

/// A device index past the last is an error that lists the devices there are.
#[test]
fn a_device_index_out_of_range_lists_the_devices() {
    let Some(devices) = two_devices() else { return };
    drop(devices);
    let count = alexnet_opencl::list_devices().unwrap().len();
    let Err(err) = OpenClBackend::new(&DeviceSelector::Index(count)) else { panic!("device {count} should not exist") };
    assert!(matches!(err, OpenClError::DeviceNotFound { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("`{count}`")) && msg.contains("0: ") && msg.contains("1: "), "{msg}");
}
