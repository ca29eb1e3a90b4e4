//! Backward convolution: input gradient (GEMM + col2im), weight gradient (GEMM against the
//! im2col columns, summed over the batch) and bias gradient (sum of `dy` per channel).

use alexnet_core::{ChannelLayout, Conv2dGeom, Shape4, check_len};
use rayon::prelude::*;

use super::im2col::{col2im, im2col};
use super::{Plan, for_each_image};
use crate::gemm::{Strides, Transpose, sgemm_strided};
use crate::workspace::sized;
use crate::{ConvError, ConvWorkspace, winograd};

/// Gradient of the loss with respect to the input, written into `dx` (overwritten).
///
/// `w` is the forward weight, `dy` the gradient with respect to the output (shape
/// `geom.output_shape(input)`), `dx` has shape `input`. GEMM + col2im, or Winograd for 3x3
/// stride-1 layers, as for [`conv2d_forward`](crate::conv2d_forward).
///
/// # Errors
/// As [`conv2d_forward`](crate::conv2d_forward): invalid geometry, a buffer of the wrong
/// length naming the buffer, or a bad `ALEX_CONV_ALGO`.
pub fn conv2d_backward_input(
    geom: &Conv2dGeom,
    input: Shape4,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    ws: &mut ConvWorkspace,
) -> Result<(), ConvError> {
    const OP: &str = "conv2d_backward_input";
    let plan = Plan::new(OP, geom, input)?;
    check_len(OP, "w", geom.weight_len(), w.len())?;
    check_len(OP, "dy", plan.batch * plan.output_image_len(), dy.len())?;
    check_len(OP, "dx", input.numel(), dx.len())?;
    if winograd::applies(geom, input, ws.split_threads(), ws.algorithm()?) {
        winograd::backward_input(geom, input, w, dy, dx, ws);
        return Ok(());
    }

    let threads = ws.split_threads();
    let scratch = ws.workers(threads);
    for_each_image(&plan, threads, scratch, dx, plan.input_image_len(), |n, dx_image, scratch, gemm_threads| {
        let dy_image = &dy[n * plan.output_image_len()..][..plan.output_image_len()];
        let dcols = sized(&mut scratch.cols, plan.cols_len());
        for g in 0..geom.groups {
            let dx_group = &mut dx_image[g * plan.input_group_len()..][..plan.input_group_len()];
            // dcols = W_g^T dY_g; for a 1x1 unpadded stride-1 kernel col2im is the identity.
            let target: &mut [f32] = if plan.input_is_cols { dx_group } else { dcols };
            sgemm_strided(
                plan.k,
                plan.p,
                plan.out_per_group,
                1.0,
                &w[g * plan.weight_group_len()..][..plan.weight_group_len()],
                Strides::row_major(plan.k, Transpose::Yes),
                &dy_image[g * plan.output_group_len()..][..plan.output_group_len()],
                Strides::row_major(plan.p, Transpose::No),
                0.0,
                target,
                plan.p,
                gemm_threads,
            );
            if !plan.input_is_cols {
                let dx_group = &mut dx_image[g * plan.input_group_len()..][..plan.input_group_len()];
                col2im(&plan, dcols, dx_group, gemm_threads);
            }
        }
    });
    Ok(())
}

/// Gradient of the loss with respect to the weight, summed over the batch and written into
/// `dw` (overwritten; layout `[out_channels, in_channels / groups, kernel_h, kernel_w]`).
///
/// # Errors
/// As [`conv2d_forward`](crate::conv2d_forward): invalid geometry or a buffer of the wrong
/// length, naming the buffer.
pub fn conv2d_backward_weight(
    geom: &Conv2dGeom,
    input: Shape4,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    ws: &mut ConvWorkspace,
) -> Result<(), ConvError> {
    const OP: &str = "conv2d_backward_weight";
    let plan = Plan::new(OP, geom, input)?;
    check_len(OP, "x", input.numel(), x.len())?;
    check_len(OP, "dy", plan.batch * plan.output_image_len(), dy.len())?;
    check_len(OP, "dw", geom.weight_len(), dw.len())?;

    // dW_g (+)= dY_g * cols^T for one image; `accumulate` false overwrites.
    let add_image = |n: usize, acc: &mut [f32], cols: &mut Vec<f32>, accumulate: bool, gemm_threads: usize| {
        let x_image = &x[n * plan.input_image_len()..][..plan.input_image_len()];
        let dy_image = &dy[n * plan.output_image_len()..][..plan.output_image_len()];
        let cols = sized(cols, plan.cols_len());
        for g in 0..geom.groups {
            let x_group = &x_image[g * plan.input_group_len()..][..plan.input_group_len()];
            let cols: &[f32] = if plan.input_is_cols {
                x_group
            } else {
                im2col(&plan, x_group, cols, gemm_threads);
                cols
            };
            sgemm_strided(
                plan.out_per_group,
                plan.k,
                plan.p,
                1.0,
                &dy_image[g * plan.output_group_len()..][..plan.output_group_len()],
                Strides::row_major(plan.p, Transpose::No),
                cols,
                Strides::row_major(plan.p, Transpose::Yes),
                if accumulate { 1.0 } else { 0.0 },
                &mut acc[g * plan.weight_group_len()..][..plan.weight_group_len()],
                plan.k,
                gemm_threads,
            );
        }
    };

    // Whole images per thread into private accumulators, then their sum into `dw`; the
    // remaining `batch % threads` images go straight into `dw` with parallel GEMMs.
    let threads = ws.split_threads();
    let scratch = ws.workers(threads);
    let per_thread = plan.batch / threads;
    let split = per_thread * threads;
    if per_thread > 0 {
        let run = |t: usize, scratch: &mut crate::workspace::Scratch| {
            let acc = sized(&mut scratch.dw, dw.len());
            for i in 0..per_thread {
                add_image(t * per_thread + i, acc, &mut scratch.cols, i > 0, 1);
            }
        };
        if threads == 1 {
            run(0, &mut scratch[0]);
        } else {
            scratch.par_iter_mut().enumerate().for_each(|(t, s)| run(t, s));
        }
        dw.copy_from_slice(&scratch[0].dw[..dw.len()]);
        for other in &scratch[1..] {
            dw.iter_mut().zip(&other.dw).for_each(|(d, o)| *d += o);
        }
    }
    for n in split..plan.batch {
        add_image(n, dw, &mut scratch[0].cols, n > 0, threads);
    }
    Ok(())
}

/// Gradient of the loss with respect to a per-channel bias: `dbias[c] = sum over o, i of
/// dy[o, c, i]` for `dy` laid out as `layout` (`[outer, channels, inner]`), written into
/// `dbias` (overwritten, `channels` elements). Sums are accumulated in `f64`. The same name
/// and layout as `alexnet_core::Backend::channel_bias_grad`: for a convolution,
/// `ChannelLayout::from(geom.output_shape(input)?)`; for a dense layer's `[n, out]` output,
/// `ChannelLayout { outer: n, channels: out, inner: 1 }`. Runs in the current rayon pool,
/// channels in parallel when `dy` is large.
///
/// # Errors
/// `dy` / `dbias` of the wrong length, naming the buffer; a layout whose element count
/// overflows `usize`.
pub fn channel_bias_grad(layout: ChannelLayout, dy: &[f32], dbias: &mut [f32]) -> Result<(), ConvError> {
    const OP: &str = "channel_bias_grad";
    let ChannelLayout { outer, channels, inner } = layout;
    let numel = outer
        .checked_mul(channels)
        .and_then(|n| n.checked_mul(inner))
        .ok_or(ConvError::SizeOverflow { op: OP, what: "dy elements" })?;
    check_len(OP, "dy", numel, dy.len())?;
    check_len(OP, "dbias", channels, dbias.len())?;
    let channel_sum = |c: usize| -> f32 {
        (0..outer).map(|o| plane_sum(&dy[(o * channels + c) * inner..][..inner])).sum::<f64>() as f32
    };
    // Below this many elements a parallel split costs more than it saves.
    const PARALLEL_MIN: usize = 1 << 15;
    if numel >= PARALLEL_MIN {
        dbias.par_iter_mut().enumerate().for_each(|(c, db)| *db = channel_sum(c));
    } else {
        dbias.iter_mut().enumerate().for_each(|(c, db)| *db = channel_sum(c));
    }
    Ok(())
}

/// Sum of `values` in `f64`, eight independent lanes so that it vectorises.
fn plane_sum(values: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = values.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| f64::from(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(v);
        }
    }
    lanes.iter().sum::<f64>() + tail
}
