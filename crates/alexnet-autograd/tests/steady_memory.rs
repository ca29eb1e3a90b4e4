//! Steady-state training allocates no new buffers: the pool stops allocating after the
//! first step and the peak RSS stays flat over 50 steps. Its own test binary, so that no
//! other test's memory is counted.

use std::sync::Arc;

use alexnet_autograd::small_net::SmallConvNet;
use alexnet_autograd::{CpuBackend, ParamStore, Tape};
use alexnet_core::SgdStep;

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn fifty_steps_allocate_nothing_after_warm_up() {
    let backend = Arc::new(CpuBackend::new());
    let net = SmallConvNet::new(16).unwrap();
    let mut store = ParamStore::new(backend.clone());
    net.init(&mut store, 3).unwrap();
    let mut tape = Tape::train(backend);
    let step = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
    let (mut allocations, mut rss) = (Vec::new(), Vec::new());
    let mut losses = Vec::new();
    for i in 0..50u64 {
        let (images, labels) = net.synthetic_batch(i);
        losses.push(net.train_step(&mut tape, &mut store, &images, &labels, i, &step).unwrap());
        allocations.push(tape.pool_stats().allocations);
        rss.push(peak_rss_kib());
    }
    // The first step fills the pool; every later step is served from it.
    assert!(allocations[0] > 0);
    assert!(allocations[1..].iter().all(|&a| a == allocations[1]), "pool allocations per step: {allocations:?}");
    // Peak RSS after warm-up (step 5) grows by less than the smallest activation batch
    // (16 x 32 x 32 x 32 floats = 2 MiB): no buffer is kept or grown per step.
    if let (Some(warm), Some(end)) = (rss[5], rss[49]) {
        assert!(end - warm < 2048, "peak RSS grew from {warm} KiB to {end} KiB: {rss:?}");
    }
    // It learns: the mean loss of the last 10 steps is below that of the first 10.
    let mean = |s: &[f32]| s.iter().sum::<f32>() / s.len() as f32;
    assert!(mean(&losses[40..]) < mean(&losses[..10]), "losses {losses:?}");
}
