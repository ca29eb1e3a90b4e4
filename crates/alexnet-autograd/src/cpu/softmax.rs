//! Fused softmax cross-entropy, one row per rayon task.

use rayon::prelude::*;

/// Probabilities, the mean of the row losses `-log p[label] = log sum exp(z - max) - (z[label]
/// - max)` (stable for logits of any magnitude), and the batch summary (`alexnet_core::XentSummary`'s
/// layout). `labels` are validated by the caller.
pub(crate) fn softmax_xent_forward(
    classes: usize,
    logits: &[f32],
    labels: &[usize],
    probs: &mut [f32],
    loss: &mut f32,
    summary: &mut [f32],
) {
    let mut row_loss = vec![0.0f32; labels.len()];
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
    *loss = (row_loss.iter().map(|&l| f64::from(l)).sum::<f64>() / labels.len().max(1) as f64) as f32;
    let ranks: Vec<usize> = logits.chunks_exact(classes).zip(labels).map(|(z, &l)| label_rank(z, l)).collect();
    let count = |limit: usize| ranks.iter().filter(|&&r| r < limit).count() as f32;
    summary.copy_from_slice(&[*loss, count(1), count(5), 0.0, 0.0, 0.0]);
}

/// The number of classes whose score beats the label's (ties count for lower indices only).
fn label_rank(scores: &[f32], label: usize) -> usize {
    let target = scores[label];
    scores.iter().enumerate().filter(|&(j, &s)| s > target || (s == target && j < label)).count()
}

/// `grad = scale * (probs - onehot(labels))`, in place over the probabilities.
pub(crate) fn probs_to_xent_grad(classes: usize, labels: &[usize], scale: f32, probs_to_grad: &mut [f32]) {
    probs_to_grad.par_chunks_mut(classes).zip(labels).for_each(|(row, &label)| {
        for (j, v) in row.iter_mut().enumerate() {
            *v = scale * (*v - if j == label { 1.0 } else { 0.0 });
        }
    });
}
