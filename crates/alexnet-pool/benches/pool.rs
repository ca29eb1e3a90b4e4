//! Throughput of AlexNet's pooling and LRN layers at batch 128, forward and backward, beside
//! the machine's copy bandwidth (these ops are memory-bound).
//!
//! `cargo bench -p alexnet-pool --bench pool`. Bytes are the least traffic each call needs (every
//! buffer it reads or writes, once): a copy of the same size moves `2 x` its length.

use alexnet_core::{LrnParams, PoolGeom, PoolKind, Rounding, Shape4};
use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};

const BATCH: usize = 128;
const SAMPLES: u32 = 8;

fn main() {
    divan::main();
}

/// The paper net's layer inputs (batch 128): pool1/pool2/pool5 and LRN1/LRN2.
fn layer(name: &str) -> Shape4 {
    let (c, hw) = match name {
        "pool1" | "lrn1" => (96, 55),
        "pool2" | "lrn2" => (256, 27),
        "pool5" => (256, 13),
        _ => unreachable!("unknown layer {name}"),
    };
    Shape4::new(BATCH, c, hw, hw).unwrap()
}

fn filled(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64).map(|i| alexnet_core::rng::uniform(seed, i) * 8.0).collect()
}

fn counters<'a, 'b>(bencher: Bencher<'a, 'b>, floats: usize) -> Bencher<'a, 'b> {
    bencher.counter(BytesCount::new(floats * size_of::<f32>())).counter(ItemsCount::new(BATCH))
}

/// The copy the figures are compared with: the LRN1 tensor (149 MB) into another buffer.
#[divan::bench(sample_count = SAMPLES)]
fn memcpy_lrn1_tensor(bencher: Bencher<'_, '_>) {
    let len = layer("lrn1").numel();
    let (src, mut dst) = (filled(len, 1), vec![0.0f32; len]);
    counters(bencher, 2 * len).bench_local(|| dst.copy_from_slice(black_box(&src)));
}

const POOLS: [&str; 3] = ["pool1", "pool2", "pool5"];

/// Forward: reads `x`, writes `y`.
fn pool_forward(bencher: Bencher<'_, '_>, kind: PoolKind, name: &str) {
    let input = layer(name);
    let geom = PoolGeom::square(3, 2, 0, Rounding::Floor).unwrap();
    let output = geom.output_shape(input).unwrap();
    let (x, mut y) = (filled(input.numel(), 2), vec![0.0; output.numel()]);
    counters(bencher, input.numel() + output.numel())
        .bench_local(|| alexnet_pool::pool_forward(kind, &geom, input, black_box(&x), &mut y).unwrap());
}

/// Backward: max reads `x`, `y` and `dy` and writes `dx`; average needs only `dy` and `dx`.
fn pool_backward(bencher: Bencher<'_, '_>, kind: PoolKind, name: &str) {
    let input = layer(name);
    let geom = PoolGeom::square(3, 2, 0, Rounding::Floor).unwrap();
    let output = geom.output_shape(input).unwrap();
    let (x, mut y, dy, mut dx) =
        (filled(input.numel(), 3), vec![0.0; output.numel()], filled(output.numel(), 4), vec![0.0; input.numel()]);
    alexnet_pool::pool_forward(kind, &geom, input, &x, &mut y).unwrap();
    let floats = match kind {
        PoolKind::Max => 2 * input.numel() + 2 * output.numel(),
        PoolKind::Avg => input.numel() + output.numel(),
    };
    counters(bencher, floats)
        .bench_local(|| alexnet_pool::pool_backward(kind, &geom, input, black_box(&x), &y, &dy, &mut dx).unwrap());
}

#[divan::bench(args = POOLS, sample_count = SAMPLES)]
fn max_pool_forward(bencher: Bencher<'_, '_>, name: &str) {
    pool_forward(bencher, PoolKind::Max, name);
}

#[divan::bench(args = POOLS, sample_count = SAMPLES)]
fn max_pool_backward(bencher: Bencher<'_, '_>, name: &str) {
    pool_backward(bencher, PoolKind::Max, name);
}

#[divan::bench(args = POOLS, sample_count = SAMPLES)]
fn avg_pool_forward(bencher: Bencher<'_, '_>, name: &str) {
    pool_forward(bencher, PoolKind::Avg, name);
}

#[divan::bench(args = POOLS, sample_count = SAMPLES)]
fn avg_pool_backward(bencher: Bencher<'_, '_>, name: &str) {
    pool_backward(bencher, PoolKind::Avg, name);
}

const LRNS: [&str; 2] = ["lrn1", "lrn2"];

#[divan::bench(args = LRNS, sample_count = SAMPLES)]
fn lrn_forward(bencher: Bencher<'_, '_>, name: &str) {
    let input = layer(name);
    let (x, mut y, mut scale) = (filled(input.numel(), 5), vec![0.0; input.numel()], vec![0.0; input.numel()]);
    counters(bencher, 3 * input.numel()).bench_local(|| {
        alexnet_pool::lrn_forward(&LrnParams::paper(), input, black_box(&x), &mut y, &mut scale).unwrap()
    });
}

#[divan::bench(args = LRNS, sample_count = SAMPLES)]
fn lrn_backward(bencher: Bencher<'_, '_>, name: &str) {
    let input = layer(name);
    let len = input.numel();
    let (x, mut y, mut scale, dy, mut dx) =
        (filled(len, 6), vec![0.0; len], vec![0.0; len], filled(len, 7), vec![0.0; len]);
    alexnet_pool::lrn_forward(&LrnParams::paper(), input, &x, &mut y, &mut scale).unwrap();
    counters(bencher, 5 * len).bench_local(|| {
        alexnet_pool::lrn_backward(&LrnParams::paper(), input, black_box(&x), &y, &scale, &dy, &mut dx).unwrap()
    });
}
