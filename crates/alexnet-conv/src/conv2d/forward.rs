//! Forward convolution: `y[n, o] = bias[o] + sum over (c, ki, kj) of w[o, c, ki, kj] * x[...]`.

use alexnet_core::{Conv2dGeom, Shape4, check_len};

use super::im2col::im2col;
use super::{Plan, for_each_run, scatter_columns};
use crate::gemm::{Strides, Transpose, sgemm_strided};
use crate::workspace::{Scratch, sized};
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
    let (slab, image_len) = (plan.slab_images(), plan.output_image_len());
    for_each_run(plan.batch, threads, scratch, y, image_len, |first, y_run, scratch, gemm_threads| {
        for (s, y_slab) in y_run.chunks_mut(slab * image_len).enumerate() {
            forward_slab(&plan, first + s * slab, x, w, bias, y_slab, scratch, gemm_threads);
        }
    });
    Ok(())
}

/// The forward of the images from `first` on whose outputs `y` holds (one slab,
/// [`Plan::slab_images`] or fewer): per group, their columns side by side, one product, and
/// for several images the product's columns copied to each image's planes.
#[allow(clippy::too_many_arguments)]
fn forward_slab(
    plan: &Plan,
    first: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut Scratch,
    gemm_threads: usize,
) {
    let count = y.len() / plan.output_image_len();
    let columns = count * plan.p;
    let m = plan.out_per_group;
    let (cols_len, product_len) = if count == 1 { (plan.cols_len(), 0) } else { (plan.k * columns, m * columns) };
    let (cols, product) = sized(&mut scratch.cols, cols_len + product_len).split_at_mut(cols_len);
    let x_group = |i: usize, g: usize| {
        &x[(first + i) * plan.input_image_len() + g * plan.input_group_len()..][..plan.input_group_len()]
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
        let out: &mut [f32] =
            if count == 1 { &mut y[g * plan.output_group_len()..][..plan.output_group_len()] } else { &mut *product };
        sgemm_strided(
            m,
            columns,
            plan.k,
            1.0,
            &w[g * plan.weight_group_len()..][..plan.weight_group_len()],
            Strides::row_major(plan.k, Transpose::No),
            cols,
            Strides::row_major(columns, Transpose::No),
            0.0,
            out,
            columns,
            gemm_threads,
        );
        if count > 1 {
            scatter_columns(plan, product, g, y);
        }
    }
    if let Some(bias) = bias {
        for y_image in y.chunks_exact_mut(plan.output_image_len()) {
            for (plane, b) in y_image.chunks_exact_mut(plan.p).zip(bias) {
                plane.iter_mut().for_each(|v| *v += b);
            }
        }
    }
}
