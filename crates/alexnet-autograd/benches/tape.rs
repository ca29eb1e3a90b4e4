//! Tape overhead per recorded op on tiny tensors, and forward + backward of a small conv net.
//!
//! `cargo bench -p alexnet-autograd --bench tape`

use std::sync::Arc;

use alexnet_autograd::small_net::SmallConvNet;
use alexnet_autograd::{CpuBackend, ParamStore, Tape};
use alexnet_core::Backend;
use divan::Bencher;
use divan::counter::ItemsCount;

fn main() {
    divan::main();
}

const OPS: usize = 100;

/// The kernel alone: `scale` on 4 elements, 100 times, into preallocated buffers.
#[divan::bench]
fn tiny_kernel_only(bencher: Bencher<'_, '_>) {
    let backend = CpuBackend::new();
    let x = vec![1.0f32; 4];
    let mut y = vec![0.0f32; 4];
    bencher.counter(ItemsCount::new(OPS)).bench_local(|| {
        for _ in 0..OPS {
            backend.scale(0.5, divan::black_box(&x), &mut y).unwrap();
        }
    });
}

/// The same 100 `scale` ops recorded on a tape (reset every iteration): per op, the kernel
/// plus the tape's bookkeeping (shape checks, pooled buffer, record).
#[divan::bench]
fn tiny_ops_recorded(bencher: Bencher<'_, '_>) {
    let backend = Arc::new(CpuBackend::new());
    let mut tape = Tape::train(backend);
    bencher.counter(ItemsCount::new(OPS)).bench_local(|| {
        tape.reset();
        let mut t = tape.input(&[1.0; 4], &[4]).unwrap();
        for _ in 0..OPS {
            t = tape.scale(t, 0.5).unwrap();
        }
    });
}

/// Recording and backward of the 100 ops.
#[divan::bench]
fn tiny_ops_forward_backward(bencher: Bencher<'_, '_>) {
    let backend = Arc::new(CpuBackend::new());
    let mut store = ParamStore::new(backend.clone());
    let mut tape = Tape::train(backend);
    bencher.counter(ItemsCount::new(OPS)).bench_local(|| {
        tape.reset();
        let mut t = tape.variable(&[1.0; 4], &[4]).unwrap();
        for _ in 0..OPS {
            t = tape.scale(t, 0.5).unwrap();
        }
        tape.backward_with(t, &[1.0; 4], &mut store).unwrap();
    });
}

/// One SGD training step (forward, backward, update) of [`SmallConvNet`] at batch 32;
/// the counter gives images/s.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn small_conv_net_train_step(bencher: Bencher<'_, '_>) {
    let backend = Arc::new(CpuBackend::new());
    let net = SmallConvNet::new(32).unwrap();
    let mut store = ParamStore::new(backend.clone());
    net.init(&mut store, 1).unwrap();
    let mut tape = Tape::train(backend);
    let (images, labels) = net.synthetic_batch(0);
    let step = alexnet_core::SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
    bencher.counter(ItemsCount::new(net.batch)).bench_local(|| {
        net.train_step(&mut tape, &mut store, &images, &labels, 0, &step).unwrap();
    });
}

/// Inference (nothing recorded) of [`SmallConvNet`] at batch 32.
#[divan::bench(sample_count = 10, sample_size = 1)]
fn small_conv_net_inference(bencher: Bencher<'_, '_>) {
    let backend = Arc::new(CpuBackend::new());
    let net = SmallConvNet::new(32).unwrap();
    let mut store = ParamStore::new(backend.clone());
    net.init(&mut store, 1).unwrap();
    let mut tape = Tape::inference(backend);
    let (images, _) = net.synthetic_batch(0);
    bencher.counter(ItemsCount::new(net.batch)).bench_local(|| {
        tape.reset();
        net.logits(&mut tape, &mut store, &images, 0).unwrap();
    });
}
