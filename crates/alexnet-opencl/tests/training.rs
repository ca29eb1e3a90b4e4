//! End-to-end: twenty SGD steps of `alexnet-autograd`'s small AlexNet-shaped network (conv,
//! ReLU, LRN, overlapping max-pool, grouped conv, dense, batch norm, dropout, softmax
//! cross-entropy) on OpenCL track the same steps on the CPU backend.

use std::sync::Arc;

use alexnet_autograd::small_net::SmallConvNet;
use alexnet_autograd::{CpuBackend, ParamStore, Tape};
use alexnet_core::{Backend, SgdStep};

/// The loss of each of `steps` training steps on `backend`.
fn losses<B: Backend>(backend: B, steps: u64) -> Vec<f32> {
    let backend = Arc::new(backend);
    let net = SmallConvNet::new(8).unwrap();
    let mut store = ParamStore::new(Arc::clone(&backend));
    net.init(&mut store, 1).unwrap();
    let mut tape = Tape::train(backend);
    let step = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
    (0..steps)
        .map(|s| {
            let (images, labels) = net.synthetic_batch(s);
            net.train_step(&mut tape, &mut store, &images, &labels, 100 + s, &step).unwrap()
        })
        .collect()
}

#[test]
fn twenty_steps_track_the_cpu() {
    let Some(cl) = alexnet_opencl::test_backend() else { return };
    let on_cl = losses(cl, 20);
    let on_cpu = losses(CpuBackend::new(), 20);
    let worst = on_cl.iter().zip(&on_cpu).map(|(g, w)| (g - w).abs() / w.abs()).fold(0.0f32, f32::max);
    eprintln!("worst relative loss difference over 20 steps: {worst:e}");
    for (s, (g, w)) in on_cl.iter().zip(&on_cpu).enumerate() {
        assert!(
            (g - w).abs() <= 1e-3 * w.abs(),
            "step {s}: OpenCL loss {g}, CPU loss {w}\nOpenCL {on_cl:?}\nCPU {on_cpu:?}"
        );
    }
    // The run learns: otherwise matching losses would prove little.
    assert!(on_cpu[19] < on_cpu[0], "CPU losses {on_cpu:?}");
}

/// A training step moves the batch up and one small summary back, nothing else: no round trip
/// inside the step, whatever the GEMM engine.
#[test]
fn a_training_step_uploads_the_batch_and_reads_back_only_the_summary() {
    let Some(cl) = alexnet_opencl::test_backend() else { return };
    let cl = Arc::new(cl);
    let net = SmallConvNet::new(8).unwrap();
    let mut store = ParamStore::new(Arc::clone(&cl));
    net.init(&mut store, 1).unwrap();
    let mut tape = Tape::train(Arc::clone(&cl));
    let step = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
    let (images, labels) = net.synthetic_batch(0);
    net.train_step(&mut tape, &mut store, &images, &labels, 1, &step).unwrap();
    let before = cl.activity();
    net.train_step(&mut tape, &mut store, &images, &labels, 2, &step).unwrap();
    let step_activity = cl.activity().since(&before);
    eprintln!("one SmallConvNet step: {step_activity:?}");
    assert_eq!(step_activity.uploads, 2, "images and labels: {step_activity:?}");
    assert_eq!(step_activity.upload_bytes, 4 * (images.len() + labels.len()) as u64);
    assert_eq!(step_activity.downloads, 1, "the loss summary only: {step_activity:?}");
    assert_eq!(step_activity.download_bytes, 4 * alexnet_core::XENT_SUMMARY_LEN as u64);
    assert!(step_activity.launches + step_activity.library_calls > 20, "{step_activity:?}");
}
