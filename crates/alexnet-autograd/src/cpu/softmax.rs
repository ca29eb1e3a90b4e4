//! Fused softmax cross-entropy, one row per rayon task.

use rayon::prelude::*;

/// Probabilities and per-row loss `-log p[label] = log sum exp(z - max) - (z[label] - max)`,
/// stable for logits of any magnitude. `labels` are validated by the caller.
pub(crate) fn softmax_xent_forward(
    classes: usize,
    logits: &[f32],
    labels: &[usize],
    probs: &mut [f32],
    row_loss: &mut [f32],
) {
    probs.par_chunks_mut(classes).zip(row_loss.par_iter_mut()).enumerate().for_each(|(r, (p, loss))| {
        let z = &logits[r * classes..][..classes];
        let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0f64;
        for (p, &z) in p.iter_mut().zip(z) {
            let e = f64::from(z - max).exp();
            *p = e as f32;
            total += e;
        }
        let inv = 1.0 / total;
        p.iter_mut().for_each(|v| *v = (f64::from(*v) * inv) as f32);
        *loss = (total.ln() - f64::from(z[labels[r]] - max)) as f32;
    });
}

/// `dlogits = scale * (probs - onehot(labels))`.
pub(crate) fn softmax_xent_backward(classes: usize, probs: &[f32], labels: &[usize], scale: f32, dlogits: &mut [f32]) {
    dlogits.par_chunks_mut(classes).enumerate().for_each(|(r, d)| {
        let p = &probs[r * classes..][..classes];
        for (j, (d, &p)) in d.iter_mut().zip(p).enumerate() {
            *d = scale * (p - if j == labels[r] { 1.0 } else { 0.0 });
        }
    });
}
