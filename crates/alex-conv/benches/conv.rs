//! GFLOP/s of AlexNet's five convolutions, forward and backward, next to the machine's FMA peak.
//!
//! ```text
//! cargo bench -p alex-conv --bench conv                                  # batch 1 and 32
//! ALEX_CONV_BATCHES=1,32,128 cargo bench -p alex-conv --bench conv       # add 128 (slow)
//! ALEX_CONV_THREADS=1 cargo bench -p alex-conv --bench conv              # thread count
//! ```
//!
//! Divan's throughput column counts floating-point operations as "items": `Gitem/s` is GFLOP/s
//! (a multiply-add counts 2; backward = input gradient + weight gradient = 2x forward).

use std::hint::black_box;
use std::time::Instant;

use alex_conv::{ConvWorkspace, conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
use alex_core::{Conv2dGeom, Rounding, Shape4, rng};
use divan::{Bencher, counter::ItemsCount};

/// One AlexNet layer at one batch size; its name is what divan prints.
#[derive(Clone, Copy)]
struct Case {
    layer: usize,
    batch: usize,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conv{} b{}", self.layer + 1, self.batch)
    }
}

impl Case {
    /// The layer's geometry and input shape (the paper's net, two groups on conv2/4/5).
    fn layer(&self) -> (Conv2dGeom, Shape4) {
        let (c, o, k, s, p, g, hw) = [
            (3, 96, 11, 4, 0, 1, 227),
            (96, 256, 5, 1, 2, 2, 27),
            (256, 384, 3, 1, 1, 1, 13),
            (384, 384, 3, 1, 1, 2, 13),
            (384, 256, 3, 1, 1, 2, 13),
        ][self.layer];
        let geom = Conv2dGeom::square(c, o, k, s, p, g).unwrap().with_rounding(Rounding::Exact);
        (geom, Shape4::new(self.batch, c, hw, hw).unwrap())
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}: not a list of numbers: {s:?}")))
        .collect()
}

fn cases() -> Vec<Case> {
    env_list("ALEX_CONV_BATCHES", "1,32")
        .into_iter()
        .flat_map(|batch| (0..5).map(move |layer| Case { layer, batch }))
        .collect()
}

fn threads() -> usize {
    env_list("ALEX_CONV_THREADS", "2")[0]
}

fn random(seed: u64, len: usize) -> Vec<f32> {
    (0..len as u64).map(|i| 2.0 * rng::uniform(seed, i) - 1.0).collect()
}

#[divan::bench(args = cases(), sample_count = 5, sample_size = 1)]
fn forward(bencher: Bencher<'_, '_>, case: Case) {
    let (geom, input) = case.layer();
    let out = geom.output_shape(input).unwrap();
    let (x, w, b) = (random(1, input.numel()), random(2, geom.weight_len()), random(3, geom.out_channels));
    let mut y = vec![0.0; out.numel()];
    let mut ws = ConvWorkspace::with_threads(threads());
    conv2d_forward(&geom, input, &x, &w, Some(&b), &mut y, &mut ws).unwrap();
    bencher
        .counter(ItemsCount::new(geom.forward_flops(input).unwrap()))
        .bench_local(|| conv2d_forward(&geom, input, black_box(&x), &w, Some(&b), &mut y, &mut ws).unwrap());
}

#[divan::bench(args = cases(), sample_count = 5, sample_size = 1)]
fn backward(bencher: Bencher<'_, '_>, case: Case) {
    let (geom, input) = case.layer();
    let out = geom.output_shape(input).unwrap();
    let (x, w, dy) = (random(1, input.numel()), random(2, geom.weight_len()), random(3, out.numel()));
    let (mut dx, mut dw) = (vec![0.0; input.numel()], vec![0.0; geom.weight_len()]);
    let mut ws = ConvWorkspace::with_threads(threads());
    let mut step = || {
        conv2d_backward_input(&geom, input, &w, black_box(&dy), &mut dx, &mut ws).unwrap();
        conv2d_backward_weight(&geom, input, &x, black_box(&dy), &mut dw, &mut ws).unwrap();
    };
    step();
    bencher.counter(ItemsCount::new(2 * geom.forward_flops(input).unwrap())).bench_local(step);
}

/// Peak f32 FMA throughput on `threads` threads in GFLOP/s, and the instruction set used.
fn fma_peak(threads: usize) -> Option<(f64, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        let (kernel, isa): (unsafe fn(u64) -> f32, _) = if is_x86_feature_detected!("avx512f") {
            (fma_loop_avx512, "AVX-512")
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            (fma_loop_avx2, "AVX2+FMA")
        } else {
            return None;
        };
        let (iterations, flops_per_iteration) =
            (50_000_000u64, if isa == "AVX-512" { 12 * 16 * 2 } else { 12 * 8 * 2 });
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                // SAFETY: the instruction set was detected above.
                s.spawn(|| black_box(unsafe { kernel(iterations) }));
            }
        });
        let flops = (threads as u64 * iterations * flops_per_iteration) as f64;
        Some((flops / start.elapsed().as_secs_f64() / 1e9, isa))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

/// Twelve independent FMA chains, enough to cover latency x throughput on current cores.
macro_rules! fma_loop {
    ($name:ident, $feature:literal, $vec:ty, $set1:ident, $fmadd:ident, $add:ident, $reduce:expr) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $feature)]
        unsafe fn $name(iterations: u64) -> f32 {
            use std::arch::x86_64::*;
            let (a, b) = ($set1(black_box(0.999_99)), $set1(black_box(1e-6)));
            let mut acc: [$vec; 12] = [$set1(1.0); 12];
            for _ in 0..iterations {
                for v in &mut acc {
                    *v = $fmadd(*v, a, b);
                }
            }
            let sum = acc.iter().fold($set1(0.0), |s, v| $add(s, *v));
            $reduce(sum)
        }
    };
}
fma_loop!(fma_loop_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, |s: __m256| {
    _mm_cvtss_f32(_mm256_castps256_ps128(s))
});
fma_loop!(fma_loop_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, |s: __m512| {
    _mm512_reduce_add_ps(s)
});

fn main() {
    println!("alex-conv bench: GEMM backend `{}`, {} threads", alex_conv::gemm::BACKEND, threads());
    for t in [1, 2] {
        match fma_peak(t) {
            Some((gflops, isa)) => println!("FMA peak ({isa}), {t} thread(s): {gflops:.0} GFLOP/s"),
            None => println!("FMA peak: not measured on this CPU"),
        }
    }
    divan::main();
}
