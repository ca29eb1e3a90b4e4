//! GFLOP/s of AlexNet's five convolutions, forward and backward, next to the machine's FMA peak.
//!
//! ```text
//! cargo bench -p alexnet-conv --bench conv                                  # batch 1 and 32
//! ALEX_CONV_BATCHES=1,32,128 cargo bench -p alexnet-conv --bench conv       # add 128 (slow)
//! ALEX_CONV_THREADS=1 cargo bench -p alexnet-conv --bench conv              # thread count
//! ALEX_CONV_SUMMARY=5 cargo bench -p alexnet-conv --bench conv -- --list    # summary table only
//! ALEX_CONV_WINOGRAD=3 cargo bench -p alexnet-conv --bench conv -- --list   # Winograd vs direct
//! ALEX_CONV_ALGO=direct cargo bench -p alexnet-conv --bench conv            # force direct
//! ```
//!
//! `ALEX_CONV_SUMMARY=R` first prints a table: for every case, the best of `R` rounds, each
//! round timing the convolution and then the FMA peak on the same number of threads, so that
//! on a machine shared with other work both see the same contention and the fraction stays
//! meaningful.
//!
//! `ALEX_CONV_WINOGRAD=R` prints, for the 3x3 stride-1 layers (the paper's conv3-5, the `mini`
//! preset's conv3-5), the best of `R` rounds of the forward pass, each gradient and a training
//! step (forward + input gradient + weight gradient) with each algorithm at batch 1, 32 and
//! 128 (`ALEX_CONV_WINOGRAD_BATCHES`), all counted in direct-convolution FLOPs, each next to
//! the FMA peak measured alongside, and the machine's load average.
//!
//! Divan's throughput column counts floating-point operations as "items": `Gitem/s` is GFLOP/s
//! (a multiply-add counts 2; backward = input gradient + weight gradient = 2x forward).

use std::hint::black_box;
use std::time::{Duration, Instant};

use alexnet_conv::{ConvAlgorithm, ConvWorkspace, conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
use alexnet_core::{Conv2dGeom, Rounding, Shape4, rng};
use divan::{Bencher, counter::ItemsCount};

/// A layer: (name, in channels, out channels, kernel, stride, padding, groups, map size).
type LayerRow = (&'static str, usize, usize, usize, usize, usize, usize, usize);

/// The paper net's five convolutions (two groups on conv2/4/5), then the 3x3 layers of the
/// `mini` preset that Winograd can take.
const LAYERS: [LayerRow; 8] = [
    ("conv1", 3, 96, 11, 4, 0, 1, 227),
    ("conv2", 96, 256, 5, 1, 2, 2, 27),
    ("conv3", 256, 384, 3, 1, 1, 1, 13),
    ("conv4", 384, 384, 3, 1, 1, 2, 13),
    ("conv5", 384, 256, 3, 1, 1, 2, 13),
    ("mini3", 64, 96, 3, 1, 1, 1, 6),
    ("mini4", 96, 96, 3, 1, 1, 2, 6),
    ("mini5", 96, 64, 3, 1, 1, 2, 6),
];

/// One layer of [`LAYERS`] at one batch size; its name is what divan prints.
#[derive(Clone, Copy)]
struct Case {
    layer: usize,
    batch: usize,
}

impl std::fmt::Display for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} b{}", LAYERS[self.layer].0, self.batch)
    }
}

impl Case {
    /// The layer's geometry and input shape.
    fn layer(&self) -> (Conv2dGeom, Shape4) {
        let (_, c, o, k, s, p, g, hw) = LAYERS[self.layer];
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

/// Forward and backward (input + weight) of one case, with their FLOP counts.
struct Layer {
    geom: Conv2dGeom,
    input: Shape4,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    ws: ConvWorkspace,
}

impl Layer {
    fn new(case: Case) -> Self {
        let (geom, input) = case.layer();
        let out = geom.output_shape(input).unwrap();
        let mut layer = Self {
            geom,
            input,
            x: random(1, input.numel()),
            w: random(2, geom.weight_len()),
            b: random(3, geom.out_channels),
            y: random(4, out.numel()),
            dx: vec![0.0; input.numel()],
            dw: vec![0.0; geom.weight_len()],
            ws: ConvWorkspace::with_threads(threads()),
        };
        // Size the workspace so that timed runs allocate nothing of ours.
        layer.backward();
        layer.forward();
        layer
    }

    fn forward_flops(&self) -> u64 {
        self.geom.forward_flops(self.input).unwrap()
    }

    fn forward(&mut self) {
        let Self { geom, input, x, w, b, y, ws, .. } = self;
        conv2d_forward(geom, *input, black_box(x), w, Some(b), y, ws).unwrap();
    }

    /// Input and weight gradients, with the forward output standing in for `dy`.
    fn backward(&mut self) {
        self.backward_input();
        self.backward_weight();
    }

    fn backward_input(&mut self) {
        let Self { geom, input, w, y, dx, ws, .. } = self;
        conv2d_backward_input(geom, *input, w, black_box(y), dx, ws).unwrap();
    }

    fn backward_weight(&mut self) {
        let Self { geom, input, x, y, dw, ws, .. } = self;
        conv2d_backward_weight(geom, *input, x, black_box(y), dw, ws).unwrap();
    }

    /// The same layer computed with `algorithm` (workspace sized by one untimed step).
    fn using(mut self, algorithm: ConvAlgorithm) -> Self {
        self.ws = ConvWorkspace::with_threads(threads()).with_algorithm(algorithm);
        self.forward();
        self.backward();
        self
    }
}

/// Seconds that `f` takes, then the FMA peak measured for as long (GFLOP/s), so that both see
/// the same share of a contended machine.
fn timed_with_peak(f: &mut dyn FnMut()) -> (f64, f64) {
    let start = Instant::now();
    f();
    let took = start.elapsed();
    (took.as_secs_f64(), fma_peak(threads(), took).map_or(f64::NAN, |p| p.0))
}

/// The load average (1, 5, 15 minutes) as `/proc/loadavg` gives it, for the record.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Winograd against direct on the 3x3 layers (the paper's conv3-5, mini's): inference at
/// batch 32, a training step at batch 128, best of `rounds`, GFLOP/s in direct-convolution
/// FLOPs with the fraction of peak.
fn compare_winograd(rounds: usize) {
    let t = threads();
    println!("\nWinograd vs direct: best of {rounds} rounds, {t} threads, load average {}", load_average());
    println!("GFLOP/s counted in direct-convolution FLOPs (fraction of the FMA peak measured alongside)");
    println!(
        "{:<12} {:<9} {:>16} {:>16} {:>16} {:>16} {:>9}",
        "case", "algorithm", "forward", "input grad", "weight grad", "step", "peak"
    );
    for layer in 2..LAYERS.len() {
        for batch in env_list("ALEX_CONV_WINOGRAD_BATCHES", "1,32,128") {
            let case = Case { layer, batch };
            let mut rates = Vec::new();
            for algorithm in [ConvAlgorithm::Direct, ConvAlgorithm::Winograd] {
                let mut l = Layer::new(case).using(algorithm);
                let flops = l.forward_flops() as f64;
                let mut best = [f64::INFINITY; 4];
                let mut peak = 0.0f64;
                for _ in 0..rounds {
                    let parts: [fn(&mut Layer); 3] = [Layer::forward, Layer::backward_input, Layer::backward_weight];
                    let mut step = 0.0;
                    for (i, part) in parts.into_iter().enumerate() {
                        let (secs, p) = timed_with_peak(&mut || part(&mut l));
                        best[i] = best[i].min(secs);
                        peak = peak.max(p);
                        step += secs;
                    }
                    best[3] = best[3].min(step);
                }
                let cell = |flops: f64, secs: f64| {
                    let gflops = flops / secs / 1e9;
                    format!("{gflops:.1} ({:.0}%)", 100.0 * gflops / peak)
                };
                println!(
                    "{:<12} {:<9} {:>16} {:>16} {:>16} {:>16} {peak:>9.1}",
                    case.to_string(),
                    format!("{algorithm:?}").to_lowercase(),
                    cell(flops, best[0]),
                    cell(flops, best[1]),
                    cell(flops, best[2]),
                    cell(3.0 * flops, best[3]),
                );
                rates.push(best);
            }
            let speedup = |i: usize| rates[0][i] / rates[1][i];
            println!(
                "{:<12} {:<9} {:>15.2}x {:>15.2}x {:>15.2}x {:>15.2}x",
                "",
                "speedup",
                speedup(0),
                speedup(1),
                speedup(2),
                speedup(3)
            );
        }
    }
    println!("load average after: {}\n", load_average());
}

#[divan::bench(args = cases(), sample_count = 5, sample_size = 1)]
fn forward(bencher: Bencher<'_, '_>, case: Case) {
    let mut layer = Layer::new(case);
    bencher.counter(ItemsCount::new(layer.forward_flops())).bench_local(|| layer.forward());
}

#[divan::bench(args = cases(), sample_count = 5, sample_size = 1)]
fn backward(bencher: Bencher<'_, '_>, case: Case) {
    let mut layer = Layer::new(case);
    bencher.counter(ItemsCount::new(2 * layer.forward_flops())).bench_local(|| layer.backward());
}

/// Best of `rounds` for forward, backward and the FMA peak, interleaved per case; prints a
/// table with the fraction of peak and the averages over the five layers per batch size.
fn summary(rounds: usize) {
    let t = threads();
    println!("\nsummary: best of {rounds} rounds, {t} threads, GFLOP/s (fraction of the FMA peak measured alongside)");
    println!("{:<12} {:>18} {:>18} {:>10}", "case", "forward", "backward", "peak");
    let gflops_and_peak = |flops: u64, f: &mut dyn FnMut()| {
        let (secs, peak) = timed_with_peak(f);
        (flops as f64 / secs / 1e9, peak)
    };
    let mut totals: Vec<(usize, [f64; 4])> = Vec::new();
    for case in cases() {
        let mut layer = Layer::new(case);
        let flops = layer.forward_flops();
        let (mut fwd, mut bwd, mut peak) = (0.0f64, 0.0f64, 0.0f64);
        for _ in 0..rounds {
            let (f, p) = gflops_and_peak(flops, &mut || layer.forward());
            let (b, q) = gflops_and_peak(2 * flops, &mut || layer.backward());
            (fwd, bwd, peak) = (fwd.max(f), bwd.max(b), peak.max(p).max(q));
        }
        println!(
            "{:<12} {fwd:>9.1} ({:>4.0}%) {bwd:>9.1} ({:>4.0}%) {peak:>10.1}",
            case.to_string(),
            100.0 * fwd / peak,
            100.0 * bwd / peak
        );
        let row = [fwd, bwd, fwd / peak, bwd / peak];
        match totals.last_mut() {
            Some((batch, sums)) if *batch == case.batch => sums.iter_mut().zip(row).for_each(|(s, v)| *s += v),
            _ => totals.push((case.batch, row)),
        }
    }
    // Averages over the five layers: of the rates, and of the fractions of peak.
    for (batch, sums) in totals {
        let [fwd, bwd, fwd_frac, bwd_frac] = sums.map(|s| s / 5.0);
        println!(
            "{:<12} {fwd:>9.1} ({:>4.0}%) {bwd:>9.1} ({:>4.0}%)",
            format!("avg b{batch}"),
            100.0 * fwd_frac,
            100.0 * bwd_frac
        );
    }
    println!();
}

/// Peak f32 FMA throughput on `threads` threads over about `duration`, in GFLOP/s, and the
/// instruction set used.
fn fma_peak(threads: usize, duration: Duration) -> Option<(f64, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    {
        let (kernel, isa): (unsafe fn(u64) -> f32, _) = if is_x86_feature_detected!("avx512f") {
            (fma_loop_avx512, "AVX-512")
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            (fma_loop_avx2, "AVX2+FMA")
        } else {
            return None;
        };
        const CHUNK: u64 = 20_000;
        let flops_per_iteration = if isa == "AVX-512" { 12 * 16 * 2 } else { 12 * 8 * 2 };
        let start = Instant::now();
        let iterations: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = 0;
                        while start.elapsed() < duration {
                            // SAFETY: the instruction set was detected above.
                            black_box(unsafe { kernel(CHUNK) });
                            done += CHUNK;
                        }
                        done
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        Some(((iterations * flops_per_iteration) as f64 / start.elapsed().as_secs_f64() / 1e9, isa))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (threads, duration);
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
    println!("alexnet-conv bench: GEMM backend `{}`, {} threads", alexnet_conv::gemm::BACKEND, threads());
    for t in [1, 2] {
        match fma_peak(t, Duration::from_millis(500)) {
            Some((gflops, isa)) => println!("FMA peak ({isa}), {t} thread(s): {gflops:.0} GFLOP/s"),
            None => println!("FMA peak: not measured on this CPU"),
        }
    }
    if let Ok(rounds) = std::env::var("ALEX_CONV_SUMMARY") {
        summary(rounds.parse().expect("ALEX_CONV_SUMMARY: a number of rounds"));
    }
    if let Ok(rounds) = std::env::var("ALEX_CONV_WINOGRAD") {
        compare_winograd(rounds.parse().expect("ALEX_CONV_WINOGRAD: a number of rounds"));
    }
    divan::main();
}
