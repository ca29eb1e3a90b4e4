//! Gradient checking by f64 central differences, against the backward of any backend.
//!
//! For a forward function `f` from inputs and the trainable parameters of a store to an
//! output `y`, the checker fixes random weights `r_i` in `[-1, 1)` and compares, for each
//! checked element `x_j` of every input and parameter,
//!
//! - the analytic `dL/dx_j` of `L = sum_i r_i y_i` from [`Tape::backward_with`] (seed `r`), and
//! - the numerical `(L(x_j + eps) - L(x_j - eps)) / ((x_j + eps) - (x_j - eps))`, with `x_j`
//!   perturbed in f32 (the forward runs in f32) but `L` accumulated in f64 from the
//!   downloaded `y`, and the step measured on the rounded f32 values.
//!
//! An element passes when `|analytic - numeric| <= atol + rtol * max(|analytic|, |numeric|)`.
//!
//! ## Choosing `eps` and the tolerances (the defaults)
//! The f32 forward rounds each output with relative error about `6e-8`; the difference of two
//! losses divided by `2 eps` then carries noise of about `sqrt(n) * |y| * 6e-8 / (2 eps)`,
//! i.e. `3e-6 * sqrt(n)` for `eps = 1e-2` and outputs of order one: below `atol = 1e-3` up to
//! `n = 1e5` outputs. The truncation error of central differences is `eps^2 / 6 * |f'''|`, about
//! `2e-5` for smooth ops with third derivatives of order one, well inside `rtol = 1e-2`.
//! Non-smooth ops (ReLU at 0, max-pool ties) have no derivative at their kinks: test inputs
//! must keep every kink more than `eps` away, as the conformance cases do.

use std::sync::Arc;

use alexnet_core::Backend;
use alexnet_core::rng::{mix64, uniform};

use crate::error::Result;
use crate::params::{ParamId, ParamStore};
use crate::tape::Tape;
use crate::tensor::{HostTensor, Tensor};

/// Step and tolerances of [`gradcheck()`]; see the module docs for the defaults' reasoning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradcheckConfig {
    /// Central-difference half-step, applied in f32.
    pub eps: f32,
    /// Relative tolerance.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// Seed of the output weights `r` and of the element sample.
    pub seed: u64,
    /// At most this many elements of each tensor are checked (a fixed random sample).
    pub max_points: usize,
}

impl Default for GradcheckConfig {
    fn default() -> Self {
        Self { eps: 1e-2, rtol: 1e-2, atol: 1e-3, seed: 0x5eed, max_points: 24 }
    }
}

/// One checked element.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// `input[k]` or the parameter name.
    pub tensor: String,
    /// Flat element index.
    pub index: usize,
    /// From backward.
    pub analytic: f64,
    /// From central differences.
    pub numeric: f64,
}

/// The outcome of [`gradcheck()`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GradcheckReport {
    /// Elements compared.
    pub checked: usize,
    /// Largest `|analytic - numeric|`.
    pub max_abs_error: f64,
    /// Largest error as a fraction of its tolerance (`<= 1` passes).
    pub max_tolerance_used: f64,
    /// Elements outside the tolerance.
    pub failures: Vec<Mismatch>,
}

impl GradcheckReport {
    /// Whether every element was within tolerance (and at least one was checked).
    pub fn passed(&self) -> bool {
        self.checked > 0 && self.failures.is_empty()
    }

    /// Panics with the failures listed unless [`GradcheckReport::passed`]; for tests.
    #[track_caller]
    pub fn assert_passed(&self, what: &str) {
        assert!(self.checked > 0, "gradcheck {what}: nothing was checked");
        assert!(
            self.failures.is_empty(),
            "gradcheck {what}: {} of {} elements off (max abs error {:.3e}); first: {:#?}",
            self.failures.len(),
            self.checked,
            self.max_abs_error,
            &self.failures[..self.failures.len().min(5)]
        );
    }

    fn record(&mut self, config: &GradcheckConfig, tensor: &str, index: usize, analytic: f64, numeric: f64) {
        let error = (analytic - numeric).abs();
        let tolerance = config.atol + config.rtol * analytic.abs().max(numeric.abs());
        self.checked += 1;
        self.max_abs_error = self.max_abs_error.max(error);
        self.max_tolerance_used = self.max_tolerance_used.max(error / tolerance);
        // NaN errors fail too.
        if error.is_nan() || error > tolerance {
            self.failures.push(Mismatch { tensor: tensor.to_owned(), index, analytic, numeric });
        }
    }
}

/// The elements of a tensor of `len` elements to check: all, or a fixed random sample.
fn sample(len: usize, max_points: usize, seed: u64) -> Vec<usize> {
    if len <= max_points {
        return (0..len).collect();
    }
    let mut picked: Vec<usize> = (0..max_points as u64 * 4).map(|j| (mix64(seed, j) % len as u64) as usize).collect();
    picked.sort_unstable();
    picked.dedup();
    picked.truncate(max_points);
    picked
}

/// Checks the gradients of `forward` with respect to every input (given on the host and
/// created as [`Tape::variable`]s) and every trainable parameter of `store`.
///
/// `forward` builds the graph on a training tape from the input tensors and returns the
/// output. It runs `1 + 2 * (checked elements)` times and must be deterministic (fixed
/// dropout seeds). Parameter values are restored afterwards.
pub fn gradcheck<B, F>(
    backend: &Arc<B>,
    store: &mut ParamStore<B>,
    inputs: &[HostTensor],
    config: &GradcheckConfig,
    mut forward: F,
) -> Result<GradcheckReport>
where
    B: Backend,
    F: FnMut(&mut Tape<B>, &mut ParamStore<B>, &[Tensor]) -> Result<Tensor>,
{
    let mut tape = Tape::train(Arc::clone(backend));
    let mut build = |tape: &mut Tape<B>, store: &mut ParamStore<B>, inputs: &[HostTensor]| -> Result<_> {
        tape.reset();
        let tensors = inputs.iter().map(|h| tape.variable(&h.data, &h.dims)).collect::<Result<Vec<_>>>()?;
        let y = forward(tape, store, &tensors)?;
        Ok((tensors, y))
    };

    // Analytic gradients.
    let (tensors, y) = build(&mut tape, store, inputs)?;
    let weights: Vec<f32> = (0..y.numel() as u64).map(|i| 2.0 * uniform(config.seed, i) - 1.0).collect();
    tape.backward_with(y, &weights, store)?;
    let mut analytic_inputs = Vec::with_capacity(tensors.len());
    for t in &tensors {
        analytic_inputs.push(tape.grad_to_host(*t)?.unwrap_or_else(|| vec![0.0; t.numel()]));
    }
    let params: Vec<ParamId> = store.trainable().collect();
    let mut analytic_params = Vec::with_capacity(params.len());
    for &id in &params {
        analytic_params.push(store.grad_to_host(store.name(id)?)?);
    }
    tape.reset();

    let mut loss = |tape: &mut Tape<B>, store: &mut ParamStore<B>, inputs: &[HostTensor]| -> Result<f64> {
        let (_, y) = build(tape, store, inputs)?;
        let values = tape.to_host(y)?;
        tape.reset();
        Ok(values.iter().zip(&weights).map(|(&y, &r)| f64::from(y) * f64::from(r)).sum())
    };
    let steps = |x: f32| (x + config.eps, x - config.eps);

    let mut report = GradcheckReport::default();
    let mut perturbed = inputs.to_vec();
    for (k, analytic) in analytic_inputs.iter().enumerate() {
        let name = format!("input[{k}]");
        for j in sample(inputs[k].data.len(), config.max_points, config.seed ^ (k as u64 + 1)) {
            let (plus, minus) = steps(inputs[k].data[j]);
            perturbed[k].data[j] = plus;
            let l_plus = loss(&mut tape, store, &perturbed)?;
            perturbed[k].data[j] = minus;
            let l_minus = loss(&mut tape, store, &perturbed)?;
            perturbed[k].data[j] = inputs[k].data[j];
            let numeric = (l_plus - l_minus) / (f64::from(plus) - f64::from(minus));
            report.record(config, &name, j, f64::from(analytic[j]), numeric);
        }
    }
    for (p, (&id, analytic)) in params.iter().zip(&analytic_params).enumerate() {
        let name = store.name(id)?.to_owned();
        let original = store.value_to_host(&name)?;
        let mut value = original.clone();
        for j in sample(original.len(), config.max_points, config.seed ^ (1 << 32) ^ p as u64) {
            let (plus, minus) = steps(original[j]);
            value[j] = plus;
            store.set_value_from_host(&name, &value)?;
            let l_plus = loss(&mut tape, store, inputs)?;
            value[j] = minus;
            store.set_value_from_host(&name, &value)?;
            let l_minus = loss(&mut tape, store, inputs)?;
            value[j] = original[j];
            let numeric = (l_plus - l_minus) / (f64::from(plus) - f64::from(minus));
            report.record(config, &name, j, f64::from(analytic[j]), numeric);
        }
        store.set_value_from_host(&name, &original)?;
    }
    Ok(report)
}
