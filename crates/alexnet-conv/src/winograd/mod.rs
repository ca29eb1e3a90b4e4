//! Winograd convolution for 3x3 kernels at stride 1: the forward pass and the input gradient
//! (itself a stride-1 3x3 convolution, of `dy` with the flipped, transposed kernel).
//!
//! For each block of images and each group: the input planes are cut into overlapping
//! `a x a` tiles (stride `m`, zero outside the image), every tile is transformed (`B^T d B`),
//! then for each of the `a * a` tile elements one GEMM multiplies the transformed weights
//! (`[out][in]`) with the transformed tiles (`[in][tiles]`), and each result tile goes back
//! through `A^T M A` into `m x m` outputs. Blocks of images go to threads as the direct
//! convolution's images do ([`for_each_run`](crate::conv2d::for_each_run)).

mod backward;
mod forward;
#[cfg(test)]
mod tests;
mod transform;

pub(crate) use backward::backward_input;
pub(crate) use forward::forward;

use alexnet_core::{Conv2dGeom, Shape4};
use rayon::prelude::*;
use transform::{LANES, Lanes, input_tile, kernel_tile, output_tile};

use crate::conv2d::for_each_run;
use crate::gemm::{Strides, Transpose, sgemm_strided};
use crate::workspace::{Scratch, sized};
use crate::{ConvAlgorithm, ConvWorkspace};

/// Fewest input and output channels per group for which [`ConvAlgorithm::Auto`] picks
/// Winograd. The crate's `conv` bench (`ALEX_CONV_WINOGRAD`) measured AlexNet's conv3-5
/// (128-384 channels per group) faster by Winograd, and the `mini` preset's 3x3 layers
/// (48-96 per group, 6x6 maps) no faster, some slower: there the tile transforms cost about as
/// much as the multiplies they save.
pub const WINOGRAD_MIN_CHANNELS: usize = 128;

/// The variant used: F(2x2, 3x3). F(4x4, 3x3) (4x fewer multiplies instead of 2.25x, but 36
/// GEMMs of fewer tiles instead of 16 and costlier transforms) measured no faster on
/// AlexNet's conv3-5, and rounds worse.
type Chosen = transform::F2;
const M: usize = 2;
const A: usize = M + 2;

/// Tiles (over the images of a block) transformed and multiplied together: enough columns
/// for efficient GEMMs, few enough that a block's tiles stay in cache (256-512 measured
/// best on AlexNet's conv3-5; 32 and 1024 slower).
const BLOCK_TILES: usize = 256;

/// Whether `algorithm` computes `geom` on `input` by Winograd, with the batch split over
/// `threads` workers.
///
/// `Auto` also wants a full block of [`BLOCK_TILES`] tiles per worker: below that (batch 1,
/// say) the GEMMs are too narrow and the transforms run on one thread, and the bench measured
/// Winograd 2.5-4x slower than direct at batch 1 on conv3-5.
pub(crate) fn applies(geom: &Conv2dGeom, input: Shape4, threads: usize, algorithm: ConvAlgorithm) -> bool {
    let eligible = geom.kernel_h == 3 && geom.kernel_w == 3 && geom.stride_h == 1 && geom.stride_w == 1;
    let wide = || geom.in_per_group() >= WINOGRAD_MIN_CHANNELS && geom.out_per_group() >= WINOGRAD_MIN_CHANNELS;
    let tiles_per_worker =
        || geom.output_shape(input).map_or(0, |out| input.n / threads.max(1) * out.h.div_ceil(M) * out.w.div_ceil(M));
    match algorithm {
        ConvAlgorithm::Direct => false,
        ConvAlgorithm::Winograd => eligible,
        ConvAlgorithm::Auto => eligible && wide() && tiles_per_worker() >= BLOCK_TILES,
    }
}

/// One stride-1 3x3 convolution as the Winograd kernels see it: `out[n, o] = bias[o] + sum
/// over c of in[n, c] * kernel[o, c]`, input row `r` of output row 0 at `r - pad_h`.
#[derive(Debug, Clone, Copy)]
struct Problem {
    batch: usize,
    in_channels: usize,
    out_channels: usize,
    groups: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    /// Signed: the input gradient's padding `2 - pad` is negative when `pad > 2`.
    pad_h: isize,
    pad_w: isize,
    /// The input gradient of a forward convolution: its kernels are the forward ones
    /// flipped, and its transformed weights (in the forward layout `[in][out]` from this
    /// problem's side) are read transposed.
    input_gradient: bool,
}

impl Problem {
    /// The forward convolution `geom` on `input` (validated by the caller), or its input
    /// gradient: `dy` in, `dx` out, channels and map sizes swapped, padding `2 - pad`.
    fn new(geom: &Conv2dGeom, input: Shape4, input_gradient: bool) -> Self {
        let out = geom.output_shape(input).expect("geometry validated by the caller");
        let (x, y) = ((geom.in_channels, input.h, input.w), (geom.out_channels, out.h, out.w));
        let ((in_channels, in_h, in_w), (out_channels, out_h, out_w)) = if input_gradient { (y, x) } else { (x, y) };
        let pad = |p: usize| if input_gradient { 2 - p as isize } else { p as isize };
        Self {
            batch: input.n,
            in_channels,
            out_channels,
            groups: geom.groups,
            in_h,
            in_w,
            out_h,
            out_w,
            pad_h: pad(geom.pad_h),
            pad_w: pad(geom.pad_w),
            input_gradient,
        }
    }

    fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    fn tiles_h(&self) -> usize {
        self.out_h.div_ceil(M)
    }

    fn tiles_w(&self) -> usize {
        self.out_w.div_ceil(M)
    }

    fn tiles_per_image(&self) -> usize {
        self.tiles_h() * self.tiles_w()
    }

    /// Rows and columns of a zero-padded input plane that every tile fits in.
    fn plane_dims(&self) -> (usize, usize) {
        (self.tiles_h() * M + 2, self.tiles_w() * M + 2)
    }

    fn in_image_len(&self) -> usize {
        self.in_channels * self.in_h * self.in_w
    }

    fn out_image_len(&self) -> usize {
        self.out_channels * self.out_h * self.out_w
    }

    /// Images per block: about [`BLOCK_TILES`] tiles, at least one image.
    fn block_images(&self) -> usize {
        (BLOCK_TILES / self.tiles_per_image()).max(1)
    }
}

/// Transforms every 3x3 kernel of `w` (`[out][in / groups][3][3]` of `geom`), flipped if
/// `flip`, into `u`: `[out][tile element][in / groups]`, output channels in parallel; returns
/// the length. (Each tile element's `[out][in]` matrix of a group is then a strided view.)
fn transform_weights(geom: &Conv2dGeom, w: &[f32], flip: bool, u: &mut Vec<f32>) -> usize {
    let cg = geom.in_per_group();
    let u = sized(u, geom.out_channels * A * A * cg);
    u.par_chunks_exact_mut(A * A * cg).zip(w.par_chunks_exact(cg * 9)).for_each(|(row, kernels)| {
        for (c, kernel) in kernels.chunks_exact(9).enumerate() {
            let t = kernel_tile::<M, A, Chosen>(kernel, flip);
            for (e, &v) in t.iter().flatten().enumerate() {
                row[e * cg + c] = v as f32;
            }
        }
    });
    u.len()
}

/// Runs `problem` on `input` into `out` (overwritten): transforms the weights `w` of the
/// forward convolution `geom` into the workspace, then the images, split over its workers.
fn run(
    problem: &Problem,
    geom: &Conv2dGeom,
    w: &[f32],
    input: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    // Taken out of the workspace for the call, so that the workers' scratch can be borrowed.
    let mut u = std::mem::take(&mut ws.winograd_weights);
    let len = transform_weights(geom, w, problem.input_gradient, &mut u);
    let threads = ws.split_threads();
    convolve(problem, input, &u[..len], bias, out, ws.workers(threads));
    ws.winograd_weights = u;
}

/// Runs `problem` on `input` into `out` (overwritten) with the transformed weights `u` and an
/// optional bias, splitting the batch over `scratch.len()` workers.
fn convolve(
    problem: &Problem,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut [Scratch],
) {
    assert_eq!(input.len(), problem.batch * problem.in_image_len());
    assert_eq!(u.len(), A * A * problem.in_channels * problem.out_per_group());
    let threads = scratch.len();
    for_each_run(problem.batch, threads, scratch, out, problem.out_image_len(), |first, run, scratch, gemm_threads| {
        let images = run.len() / problem.out_image_len();
        let block = problem.block_images();
        for start in (0..images).step_by(block) {
            let count = block.min(images - start);
            let input = &input[(first + start) * problem.in_image_len()..][..count * problem.in_image_len()];
            let out = &mut run[start * problem.out_image_len()..][..count * problem.out_image_len()];
            convolve_block(problem, count, input, u, bias, out, scratch, gemm_threads);
        }
    });
}

/// [`convolve`] on one block of `count` images.
#[allow(clippy::too_many_arguments)]
fn convolve_block(
    p: &Problem,
    count: usize,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    scratch: &mut Scratch,
    gemm_threads: usize,
) {
    let (cg, og) = (p.in_per_group(), p.out_per_group());
    let tiles = count * p.tiles_per_image();
    // Tile rows are padded to whole lanes so that transforms always load and store all lanes.
    let stride = tiles.next_multiple_of(LANES);
    let (ph, pw) = p.plane_dims();
    let planes = sized(&mut scratch.planes, count * ph * pw);
    let tiles_in = sized(&mut scratch.tiles_in, A * A * cg * stride);
    let tiles_out = sized(&mut scratch.tiles_out, A * A * og * stride);
    // Per forward output channel, `A * A` rows of its input channels (see `transform_weights`).
    let forward_cg = if p.input_gradient { og } else { cg };
    let kernel_row = A * A * forward_cg;
    let weights_stride =
        if p.input_gradient { Strides { row: 1, col: kernel_row } } else { Strides { row: kernel_row, col: 1 } };
    for g in 0..p.groups {
        for c in 0..cg {
            let channel = g * cg + c;
            for (n, plane) in planes.chunks_exact_mut(ph * pw).enumerate() {
                let src = &input[(n * p.in_channels + channel) * p.in_h * p.in_w..][..p.in_h * p.in_w];
                pad_plane(p, src, plane);
            }
            transform_input(p, planes, tiles, &mut tiles_in[c * stride..], cg * stride);
        }
        let u_group = &u[g * A * A * og * cg..][..A * A * og * cg];
        for e in 0..A * A {
            sgemm_strided(
                og,
                tiles,
                cg,
                1.0,
                &u_group[e * forward_cg..],
                weights_stride,
                &tiles_in[e * cg * stride..][..cg * stride],
                Strides::row_major(stride, Transpose::No),
                0.0,
                &mut tiles_out[e * og * stride..][..og * stride],
                stride,
                gemm_threads,
            );
        }
        for o in 0..og {
            let channel = g * og + o;
            let b = bias.map_or(0.0, |b| b[channel]);
            transform_output(p, count, &tiles_out[o * stride..], og * stride, b, out, channel);
        }
    }
}

/// Copies one input plane into `plane` (`ph x pw`), shifted by the padding, zero elsewhere.
fn pad_plane(p: &Problem, src: &[f32], plane: &mut [f32]) {
    let (_, pw) = p.plane_dims();
    plane.fill(0.0);
    // Plane row `r` holds input row `r - pad_h`; likewise for columns.
    let first_col = p.pad_w.max(0) as usize;
    let skip_cols = (-p.pad_w).max(0) as usize;
    let cols = p.in_w.saturating_sub(skip_cols).min(pw.saturating_sub(first_col));
    for (r, row) in plane.chunks_exact_mut(pw).enumerate() {
        let y = r as isize - p.pad_h;
        if y < 0 || y >= p.in_h as isize || cols == 0 {
            continue;
        }
        let src_row = &src[y as usize * p.in_w + skip_cols..][..cols];
        row[first_col..first_col + cols].copy_from_slice(src_row);
    }
}

/// Transforms the `tiles` tiles of one channel's padded planes (one plane per image) into
/// `dst`: element `e` of tile `t` at `dst[e * element_stride + t]`.
fn transform_input(p: &Problem, planes: &[f32], tiles: usize, dst: &mut [f32], element_stride: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features `avx2::transform_input` is compiled for.
        return unsafe { avx2::transform_input(p, planes, tiles, dst, element_stride) };
    }
    transform_input_lanes(p, planes, tiles, dst, element_stride);
}

/// [`transform_input`] as compiled for the caller's target features.
#[inline(always)]
fn transform_input_lanes(p: &Problem, planes: &[f32], tiles: usize, dst: &mut [f32], element_stride: usize) {
    let (tw, per_image) = (p.tiles_w(), p.tiles_per_image());
    let (ph, pw) = p.plane_dims();
    for t0 in (0..tiles).step_by(LANES) {
        let mut d = [[Lanes::ZERO; A]; A];
        for l in 0..LANES.min(tiles - t0) {
            let t = t0 + l;
            let (n, ty, tx) = (t / per_image, t % per_image / tw, t % tw);
            let origin = n * ph * pw + ty * M * pw + tx * M;
            for (i, row) in d.iter_mut().enumerate() {
                for (j, v) in row.iter_mut().enumerate() {
                    v.0[l] = planes[origin + i * pw + j];
                }
            }
        }
        let v = input_tile::<M, A, Chosen>(&d);
        for (e, lanes) in v.iter().flatten().enumerate() {
            dst[e * element_stride + t0..][..LANES].copy_from_slice(&lanes.0);
        }
    }
}

/// Transforms the result tiles of output channel `channel` (element `e` of tile `t` at
/// `src[e * element_stride + t]`) back into its output planes in `out` (the block's images),
/// adding `bias`.
fn transform_output(
    p: &Problem,
    count: usize,
    src: &[f32],
    element_stride: usize,
    bias: f32,
    out: &mut [f32],
    channel: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has the features `avx2::transform_output` is compiled for.
        return unsafe { avx2::transform_output(p, count, src, element_stride, bias, out, channel) };
    }
    transform_output_lanes(p, count, src, element_stride, bias, out, channel);
}

/// [`transform_output`] as compiled for the caller's target features.
#[inline(always)]
fn transform_output_lanes(
    p: &Problem,
    count: usize,
    src: &[f32],
    element_stride: usize,
    bias: f32,
    out: &mut [f32],
    channel: usize,
) {
    let (tw, per_image) = (p.tiles_w(), p.tiles_per_image());
    let tiles = count * per_image;
    let plane = p.out_h * p.out_w;
    for t0 in (0..tiles).step_by(LANES) {
        let m: [[Lanes; A]; A] = std::array::from_fn(|i| {
            std::array::from_fn(|j| {
                let e = i * A + j;
                Lanes(src[e * element_stride + t0..][..LANES].try_into().expect("LANES elements"))
            })
        });
        let y = output_tile::<M, A, Chosen>(&m);
        for l in 0..LANES.min(tiles - t0) {
            let t = t0 + l;
            let (n, ty, tx) = (t / per_image, t % per_image / tw, t % tw);
            let dst = &mut out[(n * p.out_channels + channel) * plane..][..plane];
            for (i, row) in y.iter().enumerate().take(p.out_h - ty * M) {
                let oy = ty * M + i;
                for (j, v) in row.iter().enumerate().take(p.out_w - tx * M) {
                    dst[oy * p.out_w + tx * M + j] = v.0[l] + bias;
                }
            }
        }
    }
}

/// Whether the CPU runs AVX2 and FMA (detected once, then cached by the standard library).
#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// The transforms compiled for AVX2 + FMA: the build targets baseline x86-64 (SSE2), on which
/// their [`LANES`]-wide arithmetic would take two instructions per operation.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Problem;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transform_input(p: &Problem, planes: &[f32], tiles: usize, dst: &mut [f32], element_stride: usize) {
        super::transform_input_lanes(p, planes, tiles, dst, element_stride);
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn transform_output(
        p: &Problem,
        count: usize,
        src: &[f32],
        element_stride: usize,
        bias: f32,
        out: &mut [f32],
        channel: usize,
    ) {
        super::transform_output_lanes(p, count, src, element_stride, bias, out, channel);
    }
}
