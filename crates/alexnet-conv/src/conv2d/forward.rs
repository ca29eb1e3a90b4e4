//! Forward convolution: `y[n, o] = bias[o] + sum over (c, ki, kj) of w[o, c, ki, kj] * x[...]`.

use alexnet_core::{Conv2dGeom, Shape4, check_len};

use super::im2col::im2col;
use super::{Plan, for_each_image};
use crate::gemm::{Strides, Transpose, sgemm_strided};
use crate::workspace::sized;
use crate::{ConvError, ConvWorkspace, winograd};

/// Forward 2-D convolution with groups on NCHW `f32`, written into `y` (overwritten).
///
/// im2col + GEMM, or Winograd for 3x3 stride-1 layers as the workspace's
/// [`ConvAlgorithm`](crate::ConvAlgorithm) decides.
///
/// `x` has shape `input`, `w` is `[out_channels, in_channels / groups, kernel_h, kernel_w]`,
/// `bias` (if any) has `out_channels` elements, and `y` has shape `geom.output_shape(input)`.
///
/// ```
/// use alexnet_conv::{ConvWorkspace, conv2d_forward};
/// use alexnet_core::{Conv2dGeom, Shape4};
///
/// // One 2x2 kernel of ones over a 3x3 image, stride 1, no padding: 2x2 sums of windows.
/// let geom = Conv2dGeom::square(1, 1, 2, 1, 0, 1)?;
/// let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
/// let mut y = [0.0; 4];
/// let mut ws = ConvWorkspace::new();
/// conv2d_forward(&geom, Shape4::new(1, 1, 3, 3)?, &x, &[1.0; 4], Some(&[0.5]), &mut y, &mut ws)?;
/// assert_eq!(y, [12.5, 16.5, 24.5, 28.5]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
/// Invalid geometry for `input` (see [`Conv2dGeom::output_shape`]) or a buffer of the wrong
/// length ([`alexnet_core::Error::BufferSize`] naming the buffer), wrapped in [`ConvError::Core`];
/// [`ConvError::UnknownAlgorithm`] if the workspace reads a bad `ALEX_CONV_ALGO`.
pub fn conv2d_forward(
    geom: &Conv2dGeom,
    input: Shape4,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    ws: &mut ConvWorkspace,
) -> Result<(), ConvError> {
    const OP: &str = "conv2d_forward";
    let plan = Plan::new(OP, geom, input)?;
    check_len(OP, "x", input.numel(), x.len())?;
    check_len(OP, "w", geom.weight_len(), w.len())?;
    if let Some(bias) = bias {
        check_len(OP, "bias", geom.out_channels, bias.len())?;
    }
    check_len(OP, "y", plan.batch * plan.output_image_len(), y.len())?;
    if winograd::applies(geom, input, ws.split_threads(), ws.algorithm()?) {
        winograd::forward(geom, input, x, w, bias, y, ws);
        return Ok(());
    }

    let threads = ws.split_threads();
    let scratch = ws.workers(threads);
    for_each_image(&plan, threads, scratch, y, plan.output_image_len(), |n, y_image, scratch, gemm_threads| {
        let x_image = &x[n * plan.input_image_len()..][..plan.input_image_len()];
        let cols = sized(&mut scratch.cols, plan.cols_len());
        for g in 0..geom.groups {
            let x_group = &x_image[g * plan.input_group_len()..][..plan.input_group_len()];
            let cols: &[f32] = if plan.input_is_cols {
                x_group
            } else {
                im2col(&plan, x_group, cols, gemm_threads);
                cols
            };
            let y_group = &mut y_image[g * plan.output_group_len()..][..plan.output_group_len()];
            sgemm_strided(
                plan.out_per_group,
                plan.p,
                plan.k,
                1.0,
                &w[g * plan.weight_group_len()..][..plan.weight_group_len()],
                Strides::row_major(plan.k, Transpose::No),
                cols,
                Strides::row_major(plan.p, Transpose::No),
                0.0,
                y_group,
                plan.p,
                gemm_threads,
            );
        }
        if let Some(bias) = bias {
            for (plane, b) in y_image.chunks_exact_mut(plan.p).zip(bias) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
    });
    Ok(())
}
