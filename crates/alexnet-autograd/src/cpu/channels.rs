//! Per-channel kernels over a [`ChannelLayout`]: bias add and batch normalisation (the bias
//! gradient is `alexnet_conv::channel_bias_grad`).

use alexnet_core::{BatchNormParams, ChannelLayout};
use rayon::prelude::*;

use super::elementwise::PARALLEL_MIN;

/// Calls `f(channel, run)` for every contiguous run of `inner` elements of `y`, in parallel
/// over batch blocks when the tensor is large.
fn for_each_run(layout: ChannelLayout, y: &mut [f32], f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    let block = layout.channels * layout.inner;
    let per_block = |block_data: &mut [f32]| {
        for (c, run) in block_data.chunks_mut(layout.inner).enumerate() {
            f(c, run);
        }
    };
    if y.len() >= PARALLEL_MIN {
        y.par_chunks_mut(block).for_each(per_block);
    } else {
        y.chunks_mut(block).for_each(per_block);
    }
}

/// `f(channel)` for every channel, in parallel when the tensor is large.
fn per_channel<T: Send>(layout: ChannelLayout, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if layout.numel() >= PARALLEL_MIN {
        (0..layout.channels).into_par_iter().map(f).collect()
    } else {
        (0..layout.channels).map(f).collect()
    }
}

/// Sum over the runs of channel `c` of `g(x values)` in f64.
fn channel_sum(layout: ChannelLayout, c: usize, mut g: impl FnMut(usize) -> f64) -> f64 {
    let mut total = 0.0;
    for o in 0..layout.outer {
        let start = (o * layout.channels + c) * layout.inner;
        for i in start..start + layout.inner {
            total += g(i);
        }
    }
    total
}

/// `y[o, c, i] += bias[c]`.
pub(crate) fn add_channel_bias(layout: ChannelLayout, bias: &[f32], y: &mut [f32]) {
    for_each_run(layout, y, |c, run| run.iter_mut().for_each(|v| *v += bias[c]));
}

/// Training-mode batch normalisation (see `Backend::batch_norm_forward_train`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_forward_train(
    params: &BatchNormParams,
    layout: ChannelLayout,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &mut [f32],
    running_var: &mut [f32],
    saved_mean: &mut [f32],
    saved_inv_std: &mut [f32],
    y: &mut [f32],
) {
    let count = (layout.outer * layout.inner) as f64;
    let stats = per_channel(layout, |c| {
        let mean = channel_sum(layout, c, |i| f64::from(x[i])) / count;
        let var = channel_sum(layout, c, |i| (f64::from(x[i]) - mean).powi(2)) / count;
        (mean, var)
    });
    let momentum = f64::from(params.momentum);
    // Unbiased running variance; a single element per channel has no spread to correct.
    let unbias = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
    for (c, &(mean, var)) in stats.iter().enumerate() {
        saved_mean[c] = mean as f32;
        saved_inv_std[c] = (1.0 / (var + f64::from(params.eps)).sqrt()) as f32;
        running_mean[c] = ((1.0 - momentum) * f64::from(running_mean[c]) + momentum * mean) as f32;
        running_var[c] = ((1.0 - momentum) * f64::from(running_var[c]) + momentum * var * unbias) as f32;
    }
    normalise(layout, x, gamma, beta, saved_mean, saved_inv_std, y);
}

/// `y = gamma * (x - mean) * inv_std + beta` per channel.
fn normalise(
    layout: ChannelLayout,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    y: &mut [f32],
) {
    y.copy_from_slice(x);
    for_each_run(layout, y, |c, run| {
        let (m, s, g, b) = (mean[c], inv_std[c], gamma[c], beta[c]);
        run.iter_mut().for_each(|v| *v = g * (*v - m) * s + b);
    });
}

/// Evaluation-mode batch normalisation with the running averages.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_forward_eval(
    params: &BatchNormParams,
    layout: ChannelLayout,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
    y: &mut [f32],
) {
    let inv_std: Vec<f32> =
        running_var.iter().map(|&v| (1.0 / (f64::from(v) + f64::from(params.eps)).sqrt()) as f32).collect();
    normalise(layout, x, gamma, beta, running_mean, &inv_std, y);
}

/// Training-mode batch-normalisation backward:
/// `dbeta = sum dy`, `dgamma = sum dy * xhat`,
/// `dx = gamma * inv_std / M * (M * dy - dbeta - xhat * dgamma)` with `M` elements per channel.
#[allow(clippy::too_many_arguments)]
pub(crate) fn batch_norm_backward(
    layout: ChannelLayout,
    x: &[f32],
    gamma: &[f32],
    saved_mean: &[f32],
    saved_inv_std: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let sums = per_channel(layout, |c| {
        let (m, s) = (f64::from(saved_mean[c]), f64::from(saved_inv_std[c]));
        let db = channel_sum(layout, c, |i| f64::from(dy[i]));
        let dg = channel_sum(layout, c, |i| f64::from(dy[i]) * (f64::from(x[i]) - m) * s);
        (db, dg)
    });
    for (c, &(db, dg)) in sums.iter().enumerate() {
        dbeta[c] = db as f32;
        dgamma[c] = dg as f32;
    }
    let count = (layout.outer * layout.inner) as f32;
    // dx holds x first so that each run can be rewritten in place without indexing x.
    dx.copy_from_slice(x);
    let block = layout.channels * layout.inner;
    let per_block = |(o, block_data): (usize, &mut [f32])| {
        for (c, run) in block_data.chunks_mut(layout.inner).enumerate() {
            let (m, s, g) = (saved_mean[c], saved_inv_std[c], gamma[c]);
            let (db, dg) = (dbeta[c], dgamma[c]);
            let start = (o * layout.channels + c) * layout.inner;
            for (v, &d) in run.iter_mut().zip(&dy[start..start + layout.inner]) {
                let xhat = (*v - m) * s;
                *v = g * s / count * (count * d - db - xhat * dg);
            }
        }
    };
    if dx.len() >= PARALLEL_MIN {
        dx.par_chunks_mut(block).enumerate().for_each(per_block);
    } else {
        dx.chunks_mut(block).enumerate().for_each(per_block);
    }
}
