//! Backward convolution: input gradient (GEMM + col2im), weight gradient (GEMM against the
//! im2col columns, summed over the batch) and bias gradient (sum of `dy` per channel).

use alexnet_core::{ChannelLayout, Conv2dGeom, Shape4, check_len};
use rayon::prelude::*;

use super::im2col::{col2im, im2col};
use super::{Plan, for_each_run, gather_columns};
use crate::gemm::{Strides, Transpose, sgemm_strided};
use crate::workspace::{Scratch, sized};
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
    let (slab, image_len) = (plan.slab_images(), plan.input_image_len());
    for_each_run(plan.batch, threads, scratch, dx, image_len, |first, dx_run, scratch, gemm_threads| {
        for (s, dx_slab) in dx_run.chunks_mut(slab * image_len).enumerate() {
            backward_input_slab(&plan, first + s * slab, w, dy, dx_slab, scratch, gemm_threads);
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

    // Whole images per thread into private accumulators, then their sum into `dw`; the
    // remaining `batch % threads` images go straight into `dw` with parallel GEMMs.
    let threads = ws.split_threads();
    let scratch = ws.workers(threads);
    let per_thread = plan.batch / threads;
    let split = per_thread * threads;
    let slab = plan.slab_images();
    // Images `first..end` summed into `acc` slab by slab; `accumulate` false overwrites.
    let add_images =
        |first: usize, end: usize, acc: &mut [f32], cols: &mut Vec<f32>, accumulate: bool, gemm_threads| {
            for start in (first..end).step_by(slab) {
                let images = start..(start + slab).min(end);
                weight_slab(&plan, images, x, dy, acc, cols, accumulate || start > first, gemm_threads);
            }
        };
    if per_thread > 0 {
        let run = |t: usize, scratch: &mut crate::workspace::Scratch| {
            let acc = sized(&mut scratch.dw, dw.len());
            add_images(t * per_thread, (t + 1) * per_thread, acc, &mut scratch.cols, false, 1);
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
    if split < plan.batch {
        add_images(split, plan.batch, dw, &mut scratch[0].cols, split > 0, threads);
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

/// The input gradient of the images from `first` on whose gradients `dx` holds (one slab,
/// [`Plan::slab_images`] or fewer): per group, their output gradients side by side, one
/// product into their columns, and col2im of each image's block.
fn backward_input_slab(
    plan: &Plan,
    first: usize,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    scratch: &mut Scratch,
    gemm_threads: usize,
) {
    let count = dx.len() / plan.input_image_len();
    let columns = count * plan.p;
    let m = plan.out_per_group;
    let dy = &dy[first * plan.output_image_len()..][..count * plan.output_image_len()];
    let (cols_len, gathered_len) = if count == 1 { (plan.cols_len(), 0) } else { (plan.k * columns, m * columns) };
    let (dcols, gathered) = sized(&mut scratch.cols, cols_len + gathered_len).split_at_mut(cols_len);
    for g in 0..plan.geom.groups {
        let dy_g: &[f32] = if count == 1 {
            &dy[g * plan.output_group_len()..][..plan.output_group_len()]
        } else {
            gather_columns(plan, dy, g, gathered);
            gathered
        };
        // dcols = W_g^T dY_g; for a 1x1 unpadded stride-1 kernel col2im is the identity.
        let in_place = count == 1 && plan.input_is_cols;
        let target: &mut [f32] =
            if in_place { &mut dx[g * plan.input_group_len()..][..plan.input_group_len()] } else { &mut *dcols };
        sgemm_strided(
            plan.k,
            columns,
            m,
            1.0,
            &w[g * plan.weight_group_len()..][..plan.weight_group_len()],
            Strides::row_major(plan.k, Transpose::Yes),
            dy_g,
            Strides::row_major(columns, Transpose::No),
            0.0,
            target,
            columns,
            gemm_threads,
        );
        if !in_place {
            for (i, dx_image) in dx.chunks_exact_mut(plan.input_image_len()).enumerate() {
                let dx_group = &mut dx_image[g * plan.input_group_len()..][..plan.input_group_len()];
                col2im(plan, &dcols[i * plan.p..], columns, dx_group, gemm_threads);
            }
        }
    }
}

/// `dW_g (+)= dY_g cols_g^T` over the images `images` (one slab, [`Plan::slab_images`] or
/// fewer), their columns and output gradients side by side; `accumulate` false overwrites
/// `acc`.
#[allow(clippy::too_many_arguments)]
fn weight_slab(
    plan: &Plan,
    images: std::ops::Range<usize>,
    x: &[f32],
    dy: &[f32],
    acc: &mut [f32],
    buf: &mut Vec<f32>,
    accumulate: bool,
    gemm_threads: usize,
) {
    let count = images.len();
    let columns = count * plan.p;
    let m = plan.out_per_group;
    let dy = &dy[images.start * plan.output_image_len()..][..count * plan.output_image_len()];
    let (cols_len, gathered_len) = if count == 1 { (plan.cols_len(), 0) } else { (plan.k * columns, m * columns) };
    let (cols, gathered) = sized(buf, cols_len + gathered_len).split_at_mut(cols_len);
    let x_group = |i: usize, g: usize| {
        &x[(images.start + i) * plan.input_image_len() + g * plan.input_group_len()..][..plan.input_group_len()]
    };
    for g in 0..plan.geom.groups {
        let cols: &[f32] = if count == 1 && plan.input_is_cols {
            x_group(0, g)
        } else {
            for i in 0..count {
                im2col(plan, x_group(i, g), &mut cols[i * plan.p..], columns, gemm_threads);
            }
            cols
        };
        let dy_g: &[f32] = if count == 1 {
            &dy[g * plan.output_group_len()..][..plan.output_group_len()]
        } else {
            gather_columns(plan, dy, g, gathered);
            gathered
        };
        sgemm_strided(
            m,
            plan.k,
            columns,
            1.0,
            dy_g,
            Strides::row_major(columns, Transpose::No),
            cols,
            Strides::row_major(columns, Transpose::Yes),
            if accumulate { 1.0 } else { 0.0 },
            &mut acc[g * plan.weight_group_len()..][..plan.weight_group_len()],
            plan.k,
            gemm_threads,
        );
    }
}
