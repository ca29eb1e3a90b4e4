//! Test helpers: data, comparison against f64 references, and f64 gradient checks of the references.

use alexnet_core::Backend;

use crate::{ClBuffer, OpenClBackend};

/// The shared test backend, or `None` (skip printed) when no device exists.
pub(crate) fn backend() -> Option<OpenClBackend> {
    crate::test_backend()
}

/// One test backend per GEMM engine (both must be present with `ALEX_REQUIRE_OPENCL=1`).
pub(crate) fn backends() -> Vec<OpenClBackend> {
    [crate::GemmEngine::Own, crate::GemmEngine::ClBlast].into_iter().filter_map(crate::test_backend_with_gemm).collect()
}

/// `n` values in `[-1, 1)` from the core counter RNG.
pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
    (0..n).map(|i| alexnet_core::rng::uniform(seed, i as u64) * 2.0 - 1.0).collect()
}

pub(crate) fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

pub(crate) fn up(be: &OpenClBackend, host: &[f32]) -> ClBuffer {
    be.upload(host).expect("upload")
}

pub(crate) fn down(be: &OpenClBackend, buf: &ClBuffer) -> Vec<f32> {
    let mut host = vec![0.0; buf.len()];
    be.download(buf, &mut host).expect("download");
    host
}

/// Asserts `|got - want| <= rel * (|want| + max|want| / 100)` element-wise: relative, with a
/// floor of one percent of the largest magnitude for entries near zero (cancellation).
#[track_caller]
pub(crate) fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let floor = want.iter().fold(0.0f64, |m, w| m.max(w.abs())) / 100.0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(err <= rel * (w.abs() + floor) || err == 0.0, "{what}[{i}]: got {g}, want {w} (err {err:e})");
    }
}

/// Checks a reference vector-Jacobian product by f64 central differences:
/// `dx[i] == d/dx_i dot(dy, f(x))` for every `i`.
#[track_caller]
pub(crate) fn check_vjp(what: &str, f: impl Fn(&[f64]) -> Vec<f64>, x: &[f64], dy: &[f64], dx: &[f64]) {
    let h = 1e-6;
    let mut xp = x.to_vec();
    for i in 0..x.len() {
        xp[i] = x[i] + h;
        let plus: f64 = f(&xp).iter().zip(dy).map(|(a, b)| a * b).sum();
        xp[i] = x[i] - h;
        let minus: f64 = f(&xp).iter().zip(dy).map(|(a, b)| a * b).sum();
        xp[i] = x[i];
        let numeric = (plus - minus) / (2.0 * h);
        let err = (numeric - dx[i]).abs();
        assert!(err <= 1e-5 * (1.0 + dx[i].abs()), "{what}: d/dx[{i}] numeric {numeric}, analytic {}", dx[i]);
    }
}
