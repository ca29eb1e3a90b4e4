//! The paper's model split on two CPU backends, through the trainer: it tracks one device
//! (with per-group LRN) over twenty steps, as data parallelism does; checkpoints move
//! between one device and two; a device that fails, devices of different kinds and
//! networks the split cannot run give errors that say so.
//!
//! The network is `mini` with `lrn_groups = 2`: the paper's architecture at reduced width
//! (conv1 on the whole image, grouped conv2/conv4/conv5, LRN after conv1 and conv2, conv3
//! and three dense layers reading both halves, dropout on fc6 and fc7), so every exchange
//! of the paper net runs; `the_paper_net_split_tracks_one_device` (a unit test) runs the
//! `paper` preset itself.

mod common;

use std::path::Path;
use std::sync::Arc;

use alexnet::synthetic::write_noise_folder;
use alexnet::{Error, Placement, RunConfig, Silent, Trainer};
use alexnet_autograd::CpuBackend;
use common::faulty::Faulty;
use common::{Losses, assert_losses_close, assert_params_close, cpu, noise_config, replicas};

fn split_config(data: &Path, runs: &Path, name: &str, epochs: usize) -> RunConfig {
    let mut c = noise_config(data, runs, name, epochs);
    c.lrn_groups = Some(2);
    c.optim.lr = 0.01;
    c
}

fn split() -> Placement<CpuBackend> {
    Placement::Split(vec![cpu(), cpu()])
}

/// 20 steps at global batch 30 (four classes: the split halves fc8) on one device, split over two, and on two replicas.
#[test]
fn split_and_replicas_track_one_device_over_twenty_steps() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 4, 30, 32).unwrap();
    let config = |name: &str| {
        let mut c = split_config(data.path(), runs.path(), name, 7);
        c.optim.max_steps = Some(20);
        c
    };
    let mut single = Trainer::new(config("single"), cpu()).unwrap();
    let mut single_losses = Losses::default();
    single.fit(&mut single_losses).unwrap();
    assert_eq!(single_losses.0.len(), 20);
    assert!(single_losses.0[19] < single_losses.0[0], "it trains: {:?}", single_losses.0);
    let want = single.params_to_host().unwrap();
    let want_momentum = single.momentum_to_host().unwrap();
    for (name, placement) in [("model", split()), ("data", replicas(2))] {
        let mut parallel = Trainer::new(config(name), placement).unwrap();
        let mut losses = Losses::default();
        parallel.fit(&mut losses).unwrap();
        assert_losses_close(&single_losses.0, &losses.0, name);
        assert_params_close(&want, &parallel.params_to_host().unwrap(), 1e-4, name);
        assert_params_close(&want_momentum, &parallel.momentum_to_host().unwrap(), 1e-4, name);
        let stats = parallel.exchange_stats().expect("two devices exchange");
        assert_eq!(stats.steps, 20, "{name}");
    }
}

/// A run checkpointed inside an epoch on the split resumes on one device, and the reverse;
/// both end where an uninterrupted single-device run ends.
#[test]
fn checkpoints_move_between_one_device_and_the_split() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 4, 30, 32).unwrap();
    let mut straight = Trainer::new(split_config(data.path(), runs.path(), "straight", 3), cpu()).unwrap();
    straight.fit(&mut Silent).unwrap();
    let want = straight.params_to_host().unwrap();
    for (name, first, then) in [("split-then-one", split(), cpu().into()), ("one-then-split", cpu().into(), split())] {
        let mut config = split_config(data.path(), runs.path(), name, 3);
        config.optim.max_steps = Some(4);
        let mut part = Trainer::new(config, first).unwrap();
        part.fit(&mut Silent).unwrap();
        drop(part);
        let mut resumed = Trainer::resume(&runs.path().join(name), then, None).unwrap();
        assert_eq!(resumed.step(), 4);
        resumed.fit(&mut Silent).unwrap();
        assert_eq!(resumed.step(), straight.step());
        assert_params_close(&want, &resumed.params_to_host().unwrap(), 1e-4, name);
    }
}

/// Device 1 fails in the middle of the first step: the run stops with an error naming it,
/// in both modes (and the healthy device does not wait for it forever).
#[test]
fn a_device_that_fails_mid_step_is_named() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 4, 8, 32).unwrap();
    for mode in ["model", "data"] {
        let devices = [Arc::new(Faulty::new(cpu())), Arc::new(Faulty::new(cpu()))];
        let placement = match mode {
            "model" => Placement::Split(devices.to_vec()),
            _ => Placement::Data(devices.to_vec()),
        };
        let mut trainer = Trainer::new(split_config(data.path(), runs.path(), mode, 1), placement).unwrap();
        devices[1].fail_after(40);
        let err = trainer.fit(&mut Silent).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Device { index: 1, .. }), "{mode}: {msg}");
        assert!(msg.contains("device 1") && msg.contains("device lost at launch"), "{mode}: {msg}");
    }
}

/// Devices of different kinds, a split over three devices, and a network whose LRN spans
/// both halves are refused before training starts.
#[test]
fn what_the_split_cannot_run_is_refused() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 4, 8, 32).unwrap();
    let config = |name: &str| split_config(data.path(), runs.path(), name, 1);
    let unlike = || vec![Arc::new(Faulty::of_model(cpu(), "cpu")), Arc::new(Faulty::of_model(cpu(), "gpu-x"))];
    for placement in [Placement::Split(unlike()), Placement::Data(unlike())] {
        let err = Trainer::new(config("unlike"), placement).err().expect("refused");
        let msg = err.to_string();
        assert!(matches!(err, Error::DevicesDiffer { index: 1, .. }) && msg.contains("gpu-x"), "{msg}");
    }
    let three = Trainer::new(config("three"), Placement::Split(vec![cpu(), cpu(), cpu()])).err().expect("refused");
    assert!(three.to_string().contains("exactly two devices"), "{three}");
    let mut across = config("across");
    across.lrn_groups = None;
    let err = Trainer::new(across, split()).err().expect("refused");
    assert!(err.to_string().contains("lrn_groups = 2"), "{err}");
}
