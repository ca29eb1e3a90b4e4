//! Twenty SGD steps of the `mini` preset on the OpenCL backend track the same steps on the
//! CPU backend: same initial weights, same batches, same dropout masks (the counter RNG), so
//! the losses may differ only by floating-point rounding. Skips (or, with
//! `ALEX_REQUIRE_OPENCL=1`, fails) when no OpenCL device is found.

use std::sync::Arc;

use alexnet::{Architecture, Model, Preset};
use alexnet_autograd::{CpuBackend, Tape};
use alexnet_core::{Backend, SgdStep, rng};

const STEPS: usize = 20;
const BATCH: usize = 8;

/// Deterministic images in [0, 1) and labels cycling through the classes.
fn batch(step: usize) -> (Vec<f32>, Vec<usize>) {
    let image_len = 28 * 28;
    let first = (step * BATCH * image_len) as u64;
    let images = (0..BATCH * image_len).map(|i| rng::uniform(2012, first + i as u64)).collect();
    let labels = (0..BATCH).map(|i| (step * BATCH + i) % 10).collect();
    (images, labels)
}

fn losses<B: Backend>(backend: Arc<B>) -> Vec<f32> {
    let arch = Architecture::new(Preset::Mini, [1, 28, 28], 10).expect("mini architecture");
    let scheme = Preset::Mini.default_init();
    let mut model = Model::init(arch, Arc::clone(&backend), scheme, 7).expect("model");
    let mut tape = Tape::train(backend);
    let sgd = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
    (0..STEPS)
        .map(|step| {
            tape.reset();
            let (images, labels) = batch(step);
            let x = tape.input(&images, &[BATCH, 1, 28, 28]).expect("input");
            let logits = model.forward(&mut tape, x, step as u64).expect("forward");
            let loss = tape.softmax_cross_entropy(logits, &labels).expect("loss");
            let value = tape.scalar(loss).expect("loss value");
            tape.backward(loss, &mut model.store).expect("backward");
            model.store.sgd_step(&sgd).expect("sgd");
            value
        })
        .collect()
}

#[test]
fn mini_on_opencl_tracks_cpu_for_twenty_steps() {
    let Some(opencl) = alexnet_opencl::test_backend() else { return };
    let cpu = losses(Arc::new(CpuBackend::new()));
    let gpu = losses(Arc::new(opencl));
    assert!(cpu.iter().all(|l| l.is_finite()), "CPU losses {cpu:?}");
    for (step, (c, g)) in cpu.iter().zip(&gpu).enumerate() {
        let rel = (c - g).abs() / c.abs().max(1e-6);
        assert!(rel <= 1e-3, "step {step}: CPU loss {c}, OpenCL loss {g} (relative difference {rel:.2e})");
    }
    // The run must actually train, or agreeing would prove little.
    assert!(cpu[STEPS - 1] != cpu[0], "loss never changed: {cpu:?}");
}
