//! Per-kernel throughput of the OpenCL backend: GEMM and convolution in FLOP/s (divan's
//! "item/s" counts floating-point operations), memory-bound kernels in bytes/s.
//!
//! `cargo bench -p alexnet-opencl --bench kernels` (device from `ALEX_OPENCL_DEVICE`). The GEMM
//! bench runs AlexNet's shapes on both engines (`gemm::<i>`: shape `i` of [`ALEXNET_GEMMS`]). On
//! PoCL the numbers are for regression only: the kernels are written for GPUs.

use std::sync::OnceLock;

use alexnet_core::{Activation, Backend, Conv2dGeom, LrnParams, PoolGeom, PoolKind, Rounding, Shape4};
use alexnet_opencl::{DeviceSelector, GemmEngine, OpenClBackend};
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};

fn main() {
    if backend().is_none() {
        eprintln!("no OpenCL device: benchmarks skipped");
        return;
    }
    divan::main();
}

fn backend() -> Option<&'static OpenClBackend> {
    static BACKEND: OnceLock<Option<OpenClBackend>> = OnceLock::new();
    BACKEND.get_or_init(alexnet_opencl::test_backend).as_ref()
}

fn data(be: &OpenClBackend, n: usize) -> alexnet_opencl::ClBuffer {
    let host: Vec<f32> = (0..n).map(|i| alexnet_core::rng::uniform(1, i as u64) - 0.5).collect();
    be.upload(&host).unwrap()
}

/// A backend with GEMM engine `engine`, or `None` where it is unavailable (CLBlast missing).
fn backend_with(engine: GemmEngine) -> Option<&'static OpenClBackend> {
    static BACKENDS: OnceLock<[Option<OpenClBackend>; 2]> = OnceLock::new();
    let [own, clblast] = BACKENDS.get_or_init(|| {
        [GemmEngine::Own, GemmEngine::ClBlast]
            .map(|e| OpenClBackend::with_gemm(&DeviceSelector::from_env(), Some(e)).ok())
    });
    match engine {
        GemmEngine::Own => own.as_ref(),
        _ => clblast.as_ref(),
    }
}

/// AlexNet's GEMMs `(name, m, n, k, trans_b)`: each convolution's forward for one image and one
/// group (`cout_g x positions x cin_g k^2`), the conv1 weight gradient over 8 images, and the
/// dense layers at batch 32 (weights stored `outputs x inputs`, so B is transposed).
const ALEXNET_GEMMS: [(&str, usize, usize, usize, bool); 8] = [
    ("conv1", 96, 3025, 363, false),
    ("conv2", 128, 729, 1200, false),
    ("conv3", 384, 169, 2304, false),
    ("conv4", 192, 169, 1728, false),
    ("conv5", 128, 169, 1728, false),
    ("conv1 dW, 8 images", 96, 363, 8 * 3025, true),
    ("fc6, batch 32", 32, 4096, 9216, true),
    ("fc7, batch 32", 32, 4096, 4096, true),
];

/// AlexNet's GEMM shapes on our own kernel and on CLBlast (skipped where CLBlast is missing).
#[divan::bench(args = [GemmEngine::Own, GemmEngine::ClBlast], consts = [0, 1, 2, 3, 4, 5, 6, 7])]
fn gemm<const SHAPE: usize>(bencher: Bencher<'_, '_>, engine: GemmEngine) {
    let Some(be) = backend_with(engine) else { return };
    let (_, m, n, k, trans_b) = ALEXNET_GEMMS[SHAPE];
    let (a, b) = (data(be, m * k), data(be, k * n));
    let mut c = be.zeros(m * n).unwrap();
    bencher.counter(ItemsCount::new(2 * m * n * k)).bench_local(|| {
        be.gemm(false, trans_b, m, n, k, 1.0, &a, &b, 0.0, &mut c).unwrap();
        be.synchronize().unwrap();
    });
}

/// AlexNet's conv1 (11x11 stride 4) and conv2 (5x5, two groups) at batch 1.
#[divan::bench(args = ["conv1", "conv2"])]
fn conv_forward(bencher: Bencher<'_, '_>, layer: &str) {
    let be = backend().unwrap();
    let (geom, input) = match layer {
        "conv1" => (Conv2dGeom::square(3, 96, 11, 4, 0, 1).unwrap(), Shape4::new(1, 3, 227, 227).unwrap()),
        _ => (Conv2dGeom::square(96, 256, 5, 1, 2, 2).unwrap(), Shape4::new(1, 96, 27, 27).unwrap()),
    };
    let out = geom.output_shape(input).unwrap();
    let (x, w, b) = (data(be, input.numel()), data(be, geom.weight_len()), data(be, geom.out_channels));
    let mut y = be.zeros(out.numel()).unwrap();
    bencher.counter(ItemsCount::new(geom.forward_flops(input).unwrap())).bench_local(|| {
        be.conv2d_forward(&geom, input, &x, &w, Some(&b), &mut y).unwrap();
        be.synchronize().unwrap();
    });
}

const STREAM_LEN: usize = 1 << 22;

/// `y += alpha x` over 4 Mi elements: three f32 accesses per element.
#[divan::bench]
fn axpy(bencher: Bencher<'_, '_>) {
    let be = backend().unwrap();
    let x = data(be, STREAM_LEN);
    let mut y = data(be, STREAM_LEN);
    bencher.counter(BytesCount::new(3 * 4 * STREAM_LEN)).bench_local(|| {
        be.axpy(black_box(1e-3), &x, &mut y).unwrap();
        be.synchronize().unwrap();
    });
}

/// ReLU forward over 4 Mi elements: one read and one write each.
#[divan::bench]
fn relu_forward(bencher: Bencher<'_, '_>) {
    let be = backend().unwrap();
    let x = data(be, STREAM_LEN);
    let mut y = be.zeros(STREAM_LEN).unwrap();
    bencher.counter(BytesCount::new(2 * 4 * STREAM_LEN)).bench_local(|| {
        be.activation_forward(Activation::Relu, &x, &mut y).unwrap();
        be.synchronize().unwrap();
    });
}

/// AlexNet's first max-pool (96 x 55 x 55 -> 27 x 27) at batch 1, bytes of input and output.
#[divan::bench]
fn max_pool_forward(bencher: Bencher<'_, '_>) {
    let be = backend().unwrap();
    let input = Shape4::new(1, 96, 55, 55).unwrap();
    let geom = PoolGeom::square(3, 2, 0, Rounding::Floor).unwrap();
    let out = geom.output_shape(input).unwrap();
    let x = data(be, input.numel());
    let mut y = be.zeros(out.numel()).unwrap();
    bencher.counter(BytesCount::new(4 * (input.numel() + out.numel()))).bench_local(|| {
        be.pool_forward(PoolKind::Max, &geom, input, &x, &mut y).unwrap();
        be.synchronize().unwrap();
    });
}

/// AlexNet's first LRN (96 x 55 x 55) at batch 1: one read, two writes (y, scale) per element.
#[divan::bench]
fn lrn_forward(bencher: Bencher<'_, '_>) {
    let be = backend().unwrap();
    let input = Shape4::new(1, 96, 55, 55).unwrap();
    let x = data(be, input.numel());
    let (mut y, mut scale) = (be.zeros(input.numel()).unwrap(), be.zeros(input.numel()).unwrap());
    bencher.counter(BytesCount::new(3 * 4 * input.numel())).bench_local(|| {
        be.lrn_forward(&LrnParams::paper(), input, &x, &mut y, &mut scale).unwrap();
        be.synchronize().unwrap();
    });
}

/// One SGD step (forward, backward, update) of `alexnet-autograd`'s `SmallConvNet` at batch 32
/// on this backend, synchronised at the end; the counter gives training images/s.
#[divan::bench(sample_count = 5, sample_size = 1)]
fn small_conv_net_train_step(bencher: Bencher<'_, '_>) {
    use alexnet_autograd::small_net::SmallConvNet;
    use alexnet_autograd::{ParamStore, Tape};

    let be = std::sync::Arc::new(alexnet_opencl::test_backend().unwrap());
    let net = SmallConvNet::new(32).unwrap();
    let mut store = ParamStore::new(std::sync::Arc::clone(&be));
    net.init(&mut store, 1).unwrap();
    let mut tape = Tape::train(std::sync::Arc::clone(&be));
    let (images, labels) = net.synthetic_batch(0);
    let step = alexnet_core::SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 };
    bencher.counter(ItemsCount::new(net.batch)).bench_local(|| {
        net.train_step(&mut tape, &mut store, &images, &labels, 0, &step).unwrap();
        be.synchronize().unwrap();
    });
}
