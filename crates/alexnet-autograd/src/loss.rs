//! Softmax cross-entropy on host slices, without a tape: for a training loop of your own
//! (your own layers, another autograd) that needs the loss and its gradient only.

use alexnet_core::XENT_SUMMARY_LEN;

use crate::cpu::softmax::{probs_to_xent_grad, softmax_xent_forward};
use crate::error::{AutogradError, Result};

/// The mean softmax cross-entropy of `logits` (`[rows, classes]`, row-major, one row per
/// label) against the class indices `labels`, returned, and its gradient with respect to the
/// logits written into `dlogits` (overwritten, the length of `logits`):
///
/// `loss = mean over rows r of (log sum_j exp z[r, j] - z[r, labels[r]])`,
/// `dlogits[r, j] = (softmax(z[r])[j] - [j == labels[r]]) / rows`.
///
/// The same kernels as the CPU backend and [`crate::Tape::softmax_cross_entropy`]: stable for
/// logits of any magnitude (each row's maximum is subtracted, sums in `f64`), rows in parallel
/// on the current rayon pool. Non-finite logits give a NaN loss, as in PyTorch.
///
/// ```
/// let logits = [2.0, 0.0, 0.0, /* row 2 */ 0.0, 0.0, 0.0];
/// let mut dlogits = [0.0; 6];
/// let loss = alexnet_autograd::softmax_cross_entropy(3, &logits, &[0, 2], &mut dlogits)?;
/// let uniform = 3.0f32.ln(); // row 2: every class equally likely
/// let row1 = (2.0f32.exp() + 2.0).ln() - 2.0;
/// assert!((loss - (row1 + uniform) / 2.0).abs() < 1e-6);
/// assert!((dlogits[5] - (1.0 / 3.0 - 1.0) / 2.0).abs() < 1e-6);
/// # Ok::<(), alexnet_autograd::AutogradError>(())
/// ```
///
/// # Errors
/// No rows or no classes ([`AutogradError::InvalidDims`]), `logits` or `dlogits` not
/// `labels.len() * classes` long ([`AutogradError::HostLength`]), a label not below
/// `classes` ([`AutogradError::Label`]).
pub fn softmax_cross_entropy(classes: usize, logits: &[f32], labels: &[usize], dlogits: &mut [f32]) -> Result<f32> {
    const OP: &str = "softmax_cross_entropy";
    let rows = labels.len();
    let dims = vec![rows, classes];
    if rows == 0 || classes == 0 {
        return Err(AutogradError::InvalidDims { dims, reason: "softmax cross-entropy needs rows and classes" });
    }
    let expected = rows
        .checked_mul(classes)
        .ok_or_else(|| AutogradError::InvalidDims { dims: dims.clone(), reason: "rows x classes overflows usize" })?;
    for (op, got) in [(OP, logits.len()), ("softmax_cross_entropy (dlogits)", dlogits.len())] {
        if got != expected {
            return Err(AutogradError::HostLength { op, dims: dims.clone(), expected, got });
        }
    }
    if let Some((row, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
        return Err(AutogradError::Label { op: OP, row, label, classes });
    }
    let mut loss = 0.0;
    softmax_xent_forward(classes, logits, labels, dlogits, &mut loss, &mut [0.0; XENT_SUMMARY_LEN]);
    probs_to_xent_grad(classes, labels, 1.0 / rows as f32, dlogits);
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mean cross-entropy by the formula, in f64.
    fn reference_loss(classes: usize, z: &[f64], labels: &[usize]) -> f64 {
        let rows = z.chunks_exact(classes).zip(labels);
        rows.map(|(row, &l)| row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[l]).sum::<f64>() / labels.len() as f64
    }

    fn logits(rows: usize, classes: usize) -> Vec<f32> {
        (0..rows * classes).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect()
    }

    #[test]
    fn loss_matches_the_formula_and_gradient_matches_central_differences() {
        for (rows, classes) in [(1, 1), (1, 5), (4, 3), (7, 10), (33, 1000)] {
            let z = logits(rows, classes);
            let labels: Vec<usize> = (0..rows).map(|r| (r * 7 + 3) % classes).collect();
            let mut grad = vec![f32::NAN; z.len()];
            let loss = softmax_cross_entropy(classes, &z, &labels, &mut grad).unwrap();
            let z64: Vec<f64> = z.iter().map(|&v| f64::from(v)).collect();
            let want = reference_loss(classes, &z64, &labels);
            assert!((f64::from(loss) - want).abs() <= 1e-5 * want.abs().max(1.0), "{rows}x{classes}: {loss} vs {want}");
            let h = 1e-5;
            for i in (0..z.len()).step_by((z.len() / 50).max(1)) {
                let mut plus = z64.clone();
                plus[i] += h;
                let mut minus = z64.clone();
                minus[i] -= h;
                let numeric =
                    (reference_loss(classes, &plus, &labels) - reference_loss(classes, &minus, &labels)) / (2.0 * h);
                assert!(
                    (f64::from(grad[i]) - numeric).abs() < 1e-6,
                    "{rows}x{classes} [{i}]: {} vs {numeric}",
                    grad[i]
                );
            }
        }
    }

    #[test]
    fn huge_logits_stay_finite() {
        let z = [1e4, -1e4, 0.0, -1e4, 1e4, 0.0];
        let mut grad = [0.0; 6];
        let loss = softmax_cross_entropy(3, &z, &[0, 0], &mut grad).unwrap();
        assert!((loss - 1e4).abs() < 1.0, "row 2 costs 2e4, row 1 nothing: {loss}");
        assert_eq!(grad, [0.0, 0.0, 0.0, -0.5, 0.5, 0.0]);
    }

    #[test]
    fn bad_input_is_an_error_naming_it() {
        let mut grad = [0.0; 6];
        assert_eq!(
            softmax_cross_entropy(3, &[0.0; 6], &[0, 3], &mut grad),
            Err(AutogradError::Label { op: "softmax_cross_entropy", row: 1, label: 3, classes: 3 })
        );
        assert_eq!(
            softmax_cross_entropy(3, &[0.0; 5], &[0, 1], &mut grad),
            Err(AutogradError::HostLength { op: "softmax_cross_entropy", dims: vec![2, 3], expected: 6, got: 5 })
        );
        assert_eq!(
            softmax_cross_entropy(3, &[0.0; 6], &[0, 1], &mut grad[..4]),
            Err(AutogradError::HostLength {
                op: "softmax_cross_entropy (dlogits)",
                dims: vec![2, 3],
                expected: 6,
                got: 4
            })
        );
        assert!(matches!(softmax_cross_entropy(0, &[], &[], &mut []), Err(AutogradError::InvalidDims { .. })));
    }
}
