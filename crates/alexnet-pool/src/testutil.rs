//! Helpers shared by the unit tests: deterministic inputs, comparisons, gradient checks.

use alexnet_core::Shape4;
use alexnet_core::rng::{mix64, uniform};

pub fn shape(n: usize, c: usize, h: usize, w: usize) -> Shape4 {
    Shape4::new(n, c, h, w).unwrap()
}

/// `len` uniform draws in `[lo, hi)`.
pub fn uniform_vec(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len as u64).map(|i| lo + (hi - lo) * uniform(seed, i)).collect()
}

/// A random permutation of `0, step, 2 step, ...` shifted to be centred on zero: no two
/// values closer than `step`, so max pooling has no ties even after a finite-difference nudge.
pub fn distinct_vec(seed: u64, len: usize, step: f64) -> Vec<f64> {
    let mut order: Vec<(u64, usize)> = (0..len).map(|i| (mix64(seed, i as u64), i)).collect();
    order.sort_unstable();
    let mut values = vec![0.0; len];
    for (rank, &(_, i)) in order.iter().enumerate() {
        values[i] = (rank as f64 - len as f64 / 2.0) * step;
    }
    values
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| f64::from(a)).collect()
}

/// Asserts `|got - want| <= abs + rel * |want|` everywhere, naming the worst element.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64, abs: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (f64::from(g) - w).abs() - (abs + rel * w.abs());
        let bad = excess > 0.0 || excess.is_nan();
        if bad && worst.is_none_or(|(_, e)| excess > e) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!("{what}: element {i} is {} but should be {} (rel {rel}, abs {abs})", got[i], want[i]);
    }
}

/// Checks `analytic` (from the f32 backward, upstream gradient `dy`) against central
/// differences of the f64 `forward` at `x`, on every input index.
#[track_caller]
pub fn gradient_check(
    what: &str,
    forward: impl Fn(&[f64]) -> Vec<f64>,
    x: &[f64],
    dy: &[f64],
    analytic: &[f32],
    eps: f64,
    tolerance: f64,
) {
    let loss = |x: &[f64]| forward(x).iter().zip(dy).map(|(y, g)| y * g).sum::<f64>();
    let mut nudged = x.to_vec();
    let numeric: Vec<f64> = (0..x.len())
        .map(|i| {
            nudged[i] = x[i] + eps;
            let plus = loss(&nudged);
            nudged[i] = x[i] - eps;
            let minus = loss(&nudged);
            nudged[i] = x[i];
            (plus - minus) / (2.0 * eps)
        })
        .collect();
    let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the numeric gradient is all zero; the check would prove nothing");
    assert_close(what, analytic, &numeric, tolerance, tolerance * scale);
}

/// Runs `f` in a rayon pool of `threads` threads.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}
