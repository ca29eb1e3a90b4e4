//! Direct formulas in f64 for every op's forward: the plainest loops that define the op.

use alexnet_core::{Activation, Conv2dGeom, LrnParams, PoolGeom, PoolKind, Shape4};

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// `y[n, o, i, j] = b[o] + sum_{c in group(o), p, q} x[n, c, i*s - pad + p, j*s - pad + q] w[o, c', p, q]`.
pub fn conv2d(geom: &Conv2dGeom, input: Shape4, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f64> {
    let out = geom.output_shape(input).expect("reference conv2d: valid geometry");
    let (cin_g, cout_g) = (geom.in_per_group(), geom.out_per_group());
    let mut y = vec![0.0; out.numel()];
    for n in 0..out.n {
        for o in 0..out.c {
            let g = o / cout_g;
            for i in 0..out.h {
                for j in 0..out.w {
                    let mut acc = b.map_or(0.0, |b| f64::from(b[o]));
                    for c in 0..cin_g {
                        for p in 0..geom.kernel_h {
                            for q in 0..geom.kernel_w {
                                let (r, s) = (
                                    (i * geom.stride_h + p) as isize - geom.pad_h as isize,
                                    (j * geom.stride_w + q) as isize - geom.pad_w as isize,
                                );
                                if r < 0 || s < 0 || r >= input.h as isize || s >= input.w as isize {
                                    continue;
                                }
                                let xv = x[input.index(n, g * cin_g + c, r as usize, s as usize)];
                                let wv = w[((o * cin_g + c) * geom.kernel_h + p) * geom.kernel_w + q];
                                acc += f64::from(xv) * f64::from(wv);
                            }
                        }
                    }
                    y[out.index(n, o, i, j)] = acc;
                }
            }
        }
    }
    y
}

/// Max or average over the window cells inside the input (padding never counts).
pub fn pool(kind: PoolKind, geom: &PoolGeom, input: Shape4, x: &[f32]) -> Vec<f64> {
    let out = geom.output_shape(input).expect("reference pool: valid geometry");
    let mut y = vec![0.0; out.numel()];
    for n in 0..out.n {
        for c in 0..out.c {
            for i in 0..out.h {
                for j in 0..out.w {
                    let (mut max, mut sum, mut count) = (f64::NEG_INFINITY, 0.0, 0usize);
                    for p in 0..geom.window_h {
                        for q in 0..geom.window_w {
                            let (r, s) = (
                                (i * geom.stride_h + p) as isize - geom.pad_h as isize,
                                (j * geom.stride_w + q) as isize - geom.pad_w as isize,
                            );
                            if r < 0 || s < 0 || r >= input.h as isize || s >= input.w as isize {
                                continue;
                            }
                            let v = f64::from(x[input.index(n, c, r as usize, s as usize)]);
                            max = max.max(v);
                            sum += v;
                            count += 1;
                        }
                    }
                    y[out.index(n, c, i, j)] = match kind {
                        PoolKind::Max => max,
                        PoolKind::Avg => sum / count as f64,
                    };
                }
            }
        }
    }
    y
}

/// `b_i = a_i / (k + alpha' * sum_{j in window(i)} a_j^2)^beta`, the window clipped to the
/// run of `c / groups` channels that holds `i`.
pub fn lrn(params: &LrnParams, groups: usize, input: Shape4, x: &[f32]) -> Vec<f64> {
    let mut y = vec![0.0; input.numel()];
    let coef = f64::from(params.sum_coefficient());
    let per_group = input.c / groups;
    for n in 0..input.n {
        for c in 0..input.c {
            let first = c / per_group * per_group;
            let (lo, hi) = params.window(c - first, per_group);
            for i in 0..input.h {
                for j in 0..input.w {
                    let sum: f64 =
                        (first + lo..=first + hi).map(|d| f64::from(x[input.index(n, d, i, j)]).powi(2)).sum();
                    let denom = (f64::from(params.k) + coef * sum).powf(f64::from(params.beta));
                    y[input.index(n, c, i, j)] = f64::from(x[input.index(n, c, i, j)]) / denom;
                }
            }
        }
    }
    y
}

/// `y[r, o] = b[o] + sum_i x[r, i] w[o, i]`.
pub fn linear(rows: usize, x: &[f32], w: &[f32], outputs: usize, b: Option<&[f32]>) -> Vec<f64> {
    let inputs = x.len() / rows;
    let mut y = vec![0.0; rows * outputs];
    for r in 0..rows {
        for o in 0..outputs {
            let dot: f64 = (0..inputs).map(|i| f64::from(x[r * inputs + i]) * f64::from(w[o * inputs + i])).sum();
            y[r * outputs + o] = dot + b.map_or(0.0, |b| f64::from(b[o]));
        }
    }
    y
}

/// Point-wise activation.
pub fn activation(f: Activation, x: &[f32]) -> Vec<f64> {
    f64s(x)
        .into_iter()
        .map(|v| match f {
            Activation::Relu => v.max(0.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
            Activation::Tanh => v.tanh(),
        })
        .collect()
}

/// Inverted dropout with the shared counter RNG, element `i` keyed by
/// `(first_row + i / row_len) * total_row_len + first_col + i % row_len`.
pub fn dropout(p: f32, seed: u64, window: &alexnet_core::MaskWindow, x: &[f32]) -> Vec<f64> {
    let row_len = window.row_len as usize;
    let keep_scale = 1.0 / (1.0 - f64::from(p));
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let global = (window.first_row as usize + i / row_len) * window.total_row_len as usize
                + window.first_col as usize
                + i % row_len;
            if alexnet_core::rng::dropout_keep(seed, global as u64, p) { f64::from(v) * keep_scale } else { 0.0 }
        })
        .collect()
}

/// Batch normalisation with given per-channel mean and variance over `(outer, channels,
/// inner)`; `None` statistics mean the batch's own (biased variance).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm(
    outer: usize,
    channels: usize,
    inner: usize,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    stats: Option<(&[f32], &[f32])>,
) -> Vec<f64> {
    let idx = |o: usize, c: usize, i: usize| (o * channels + c) * inner + i;
    let count = (outer * inner) as f64;
    let mut y = vec![0.0; x.len()];
    for c in 0..channels {
        let values: Vec<f64> =
            (0..outer).flat_map(|o| (0..inner).map(move |i| (o, i))).map(|(o, i)| f64::from(x[idx(o, c, i)])).collect();
        let (mean, var) = match stats {
            Some((m, v)) => (f64::from(m[c]), f64::from(v[c])),
            None => {
                let mean = values.iter().sum::<f64>() / count;
                (mean, values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count)
            }
        };
        let inv_std = 1.0 / (var + f64::from(eps)).sqrt();
        for o in 0..outer {
            for i in 0..inner {
                y[idx(o, c, i)] =
                    f64::from(gamma[c]) * (f64::from(x[idx(o, c, i)]) - mean) * inv_std + f64::from(beta[c]);
            }
        }
    }
    y
}

/// Per-channel biased batch mean and variance over `(outer, channels, inner)`.
pub fn channel_stats(outer: usize, channels: usize, inner: usize, x: &[f32]) -> Vec<(f64, f64)> {
    (0..channels)
        .map(|c| {
            let values: Vec<f64> = (0..outer)
                .flat_map(|o| (0..inner).map(move |i| f64::from(x[(o * channels + c) * inner + i])))
                .collect();
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            (mean, values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64)
        })
        .collect()
}

/// Softmax probabilities of each row, from the exact `exp(z - max) / sum`.
pub fn softmax(rows: usize, logits: &[f32]) -> Vec<f64> {
    let classes = logits.len() / rows;
    let mut p = vec![0.0; logits.len()];
    for r in 0..rows {
        let z = &logits[r * classes..][..classes];
        let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
        let total: f64 = z.iter().map(|&v| (f64::from(v) - max).exp()).sum();
        for (j, &v) in z.iter().enumerate() {
            p[r * classes + j] = (f64::from(v) - max).exp() / total;
        }
    }
    p
}

/// Mean over rows of `-log softmax(z)[label]`, computed as `log sum exp(z - max) - (z_label - max)`.
pub fn softmax_cross_entropy(rows: usize, logits: &[f32], labels: &[usize]) -> f64 {
    let classes = logits.len() / rows;
    let total: f64 = (0..rows)
        .map(|r| {
            let z = &logits[r * classes..][..classes];
            let max = z.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let sum: f64 = z.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            sum.ln() - (f64::from(z[labels[r]]) - max)
        })
        .sum();
    total / rows as f64
}
