//! Data parallelism in one process (replicas on several CPU backends) tracks one device
//! running the same global batch, and checkpoints move between device counts.

mod common;

use alexnet::synthetic::write_noise_folder;
use alexnet::{Silent, Trainer};
use common::{Losses, assert_losses_close, assert_params_close, cpu, noise_config, replicas};

/// 20 steps of `mini` (dropout, LRN, grouped convolutions) at global batch 30: one device,
/// two replicas (15/15), three (10/10/10) and four (7/8/7/8).
#[test]
fn replicas_track_one_device_over_twenty_steps() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 3, 40, 32).unwrap();
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
        assert!(stats.all_reduce_seconds > 0.0 && stats.wait_seconds >= 0.0, "{stats:?}");
    }
}

/// A run checkpointed inside an epoch on two replicas resumes on one device, and the
/// reverse; both end where an uninterrupted single-device run ends.
#[test]
fn checkpoints_move_between_device_counts() {
    let (data, runs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_noise_folder(data.path(), 3, 40, 32).unwrap();
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
