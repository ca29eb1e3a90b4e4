//! 2-D convolution with groups on NCHW `f32`: im2col + GEMM forward, col2im backward.
//!
//! Every public function checks geometry and buffer lengths first and returns an error naming
//! the values; past that point the work is split across threads as follows: with `t` threads
//! and a batch of `n`, the first `n / t * t` images go `n / t` per thread (each thread with its
//! own column buffer and single-threaded GEMMs), and the last `n % t` images run together
//! with `t`-thread GEMMs and im2col/col2im split by channel. So batch 1 uses parallel
//! GEMM, larger batches whole images.
//! (With the `matrixmultiply` backend, which threads every product itself, all images run
//! together.)
//!
//! Small maps make narrow products (a 6x6 map: 36 columns), which GEMM kernels run slowly,
//! so a thread's images go in slabs ([`Plan::slab_images`]): the columns of a few images side
//! by side in one column matrix, one product per group, and the product's columns copied to
//! (or, backward, the output gradients gathered from) each image's planes.

mod backward;
mod forward;
mod im2col;
#[cfg(test)]
pub(crate) mod tests;

pub use backward::{channel_bias_grad, conv2d_backward_input, conv2d_backward_weight};
pub use forward::conv2d_forward;

use alexnet_core::{Conv2dGeom, Shape4};
use rayon::prelude::*;

use crate::ConvError;
use crate::workspace::Scratch;

/// Everything the kernels need, derived once from a validated geometry and input shape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    geom: Conv2dGeom,
    batch: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    in_per_group: usize,
    out_per_group: usize,
    /// Rows of the column matrix: `in_per_group * kernel_h * kernel_w`.
    k: usize,
    /// Output pixels per channel: `out_h * out_w`.
    p: usize,
    /// A 1x1, stride-1, unpadded kernel: the input already is its column matrix.
    input_is_cols: bool,
}

impl Plan {
    /// Validates `geom` against `input`; `op` names the caller in errors.
    fn new(op: &'static str, geom: &Conv2dGeom, input: Shape4) -> Result<Self, ConvError> {
        let out = geom.output_shape(input)?;
        // Sizes that would overflow are rejected before anything indexes with them.
        let product = |what, dims: &[usize]| {
            dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or(ConvError::SizeOverflow { op, what })
        };
        product("input elements", &input.dims())?;
        product("output elements", &out.dims())?;
        let k = product("weight elements", &geom.weight_dims())? / geom.out_channels;
        product("im2col columns", &[k, out.h, out.w])?;
        Ok(Self {
            geom: *geom,
            batch: input.n,
            in_h: input.h,
            in_w: input.w,
            out_h: out.h,
            out_w: out.w,
            in_per_group: geom.in_per_group(),
            out_per_group: geom.out_per_group(),
            k,
            p: out.plane_len(),
            input_is_cols: geom.kernel_h == 1
                && geom.kernel_w == 1
                && geom.stride_h == 1
                && geom.stride_w == 1
                && geom.pad_h == 0
                && geom.pad_w == 0,
        })
    }

    fn input_image_len(&self) -> usize {
        self.geom.in_channels * self.in_h * self.in_w
    }

    fn input_group_len(&self) -> usize {
        self.in_per_group * self.in_h * self.in_w
    }

    fn output_image_len(&self) -> usize {
        self.geom.out_channels * self.p
    }

    fn output_group_len(&self) -> usize {
        self.out_per_group * self.p
    }

    fn weight_group_len(&self) -> usize {
        self.out_per_group * self.k
    }

    /// Elements of the column buffer (none when the input is used in place).
    fn cols_len(&self) -> usize {
        if self.input_is_cols { 0 } else { self.k * self.p }
    }

    /// Images whose columns go side by side into one product (a slab): enough for about
    /// [`SLAB_COLUMNS`] columns, so that small maps (13x13, 6x6) still give the GEMM kernels
    /// wide products; 1 for larger maps and for 1x1 kernels that use the input in place.
    fn slab_images(&self) -> usize {
        if self.input_is_cols { 1 } else { (SLAB_COLUMNS / self.p).max(1) }
    }
}

/// Columns a product should have at least, where images are small enough to join
/// ([`Plan::slab_images`]): at 36 columns (a 6x6 map) the GEMM kernels run at a third of
/// their speed at a few hundred.
const SLAB_COLUMNS: usize = 256;

/// Copies group `g` of a slab's product (`out_per_group x count * p`, image `i`'s columns at
/// `i * p`) to each image's output planes in `y` (`count` images, NCHW).
fn scatter_columns(plan: &Plan, product: &[f32], g: usize, y: &mut [f32]) {
    let count = y.len() / plan.output_image_len();
    let columns = count * plan.p;
    for (i, y_image) in y.chunks_exact_mut(plan.output_image_len()).enumerate() {
        let planes = &mut y_image[g * plan.output_group_len()..][..plan.output_group_len()];
        for (o, plane) in planes.chunks_exact_mut(plan.p).enumerate() {
            plane.copy_from_slice(&product[o * columns + i * plan.p..][..plan.p]);
        }
    }
}

/// The inverse of [`scatter_columns`]: group `g` of `count` images' planes in `dy` gathered
/// into `gathered` (`out_per_group x count * p`).
fn gather_columns(plan: &Plan, dy: &[f32], g: usize, gathered: &mut [f32]) {
    let count = dy.len() / plan.output_image_len();
    let columns = count * plan.p;
    for (i, dy_image) in dy.chunks_exact(plan.output_image_len()).enumerate() {
        let planes = &dy_image[g * plan.output_group_len()..][..plan.output_group_len()];
        for (o, plane) in planes.chunks_exact(plan.p).enumerate() {
            gathered[o * columns + i * plan.p..][..plan.p].copy_from_slice(plane);
        }
    }
}

/// Splits a batch of `batch` images as described in the module docs and runs
/// `per_run(first_image, out_run, scratch, gemm_threads)` on each run of consecutive images:
/// one run of `batch / threads` images per thread (`gemm_threads` 1), then the `batch %
/// threads` images left as one run with `gemm_threads == threads`. `out` holds
/// `out_per_image` elements per image; `out_run` is the part of it for the run's images.
pub(crate) fn for_each_run(
    batch: usize,
    threads: usize,
    scratch: &mut [Scratch],
    out: &mut [f32],
    out_per_image: usize,
    per_run: impl Fn(usize, &mut [f32], &mut Scratch, usize) + Sync,
) {
    assert_eq!(scratch.len(), threads);
    assert_eq!(out.len(), batch * out_per_image);
    let per_thread = batch / threads;
    let split = per_thread * threads;
    let (whole, rest) = out.split_at_mut(split * out_per_image);
    if per_thread > 0 {
        if threads == 1 {
            per_run(0, whole, &mut scratch[0], 1);
        } else {
            whole
                .par_chunks_exact_mut(per_thread * out_per_image)
                .zip(scratch.par_iter_mut())
                .enumerate()
                .for_each(|(t, (run, scratch))| per_run(t * per_thread, run, scratch, 1));
        }
    }
    if !rest.is_empty() {
        per_run(split, rest, &mut scratch[0], threads);
    }
}
