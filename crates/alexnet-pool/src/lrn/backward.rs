//! LRN backward.

use alexnet_core::{LrnParams, Shape4};
use rayon::prelude::*;

use super::{InversePower, check, with_inverse_power};
use crate::error::Result;
use crate::{F32_SCRATCH, avx2_when_available, with_scratch};

/// The gradient `dx` of local response normalisation from `dy`; `dx` is overwritten.
///
/// `x`, `y` and `scale` are the forward's input, output and scale (see [`lrn_forward`]):
/// `dx_i = dy_i * s_i^-beta - 2 alpha' beta x_i * sum_{j in window(i)} dy_j * y_j / s_j`.
///
/// Runs in parallel over images and, when there are fewer images than about four per thread,
/// over blocks of channels within an image, in the current rayon pool. Each `dy_j * y_j / s_j`
/// is computed once per block (neighbouring blocks recompute the `n - 1` channels at their
/// edges) into a per-thread ring of `n` planes that is allocated on a thread's first call and
/// reused after. The result does not depend on the number of threads.
///
/// ```
/// use alexnet_core::{LrnParams, Shape4};
/// let params = LrnParams::paper();
/// let input = Shape4::new(1, 8, 2, 2)?;
/// let x: Vec<f32> = (0..32).map(|i| i as f32 / 4.0).collect();
/// let (mut y, mut scale) = (vec![0.0; 32], vec![0.0; 32]);
/// alexnet_pool::lrn_forward(&params, input, &x, &mut y, &mut scale)?;
/// let mut dx = vec![0.0; 32];
/// alexnet_pool::lrn_backward(&params, input, &x, &y, &scale, &vec![1.0; 32], &mut dx)?;
/// // With the paper's small alpha the gradient is close to the diagonal term s^-0.75.
/// assert!((dx[0] - scale[0].powf(-0.75)).abs() < 1e-3);
/// # Ok::<(), alexnet_pool::PoolError>(())
/// ```
///
/// [`lrn_forward`]: crate::lrn_forward
#[allow(clippy::too_many_arguments)]
pub fn lrn_backward(
    params: &LrnParams,
    input: Shape4,
    x: &[f32],
    y: &[f32],
    scale: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    check(
        "lrn_backward",
        params,
        input,
        &[("x", x.len()), ("y", y.len()), ("scale", scale.len()), ("dy", dy.len()), ("dx", dx.len())],
    )?;
    let (channels, plane) = (input.c, input.plane_len());
    let image_len = channels * plane;
    let block = channel_block(input.n, channels, params.size);
    let cross = 2.0 * params.sum_coefficient() * params.beta;
    with_inverse_power!(params.beta, |power| {
        dx.par_chunks_mut(image_len).enumerate().for_each(|(n, dx)| {
            let image = |t| image_of(t, n, image_len);
            let views = Image { x: image(x), y: image(y), scale: image(scale), dy: image(dy), channels, plane };
            dx.par_chunks_mut(block * plane).enumerate().for_each(|(b, dx)| {
                with_scratch(&F32_SCRATCH, params.size * plane, |ring| {
                    backward_block(params, power, cross, &views, b * block, dx, ring)
                })
            })
        })
    });
    Ok(())
}

/// Channels per work unit: whole images when there are enough of them, else blocks small
/// enough to give every thread about four units (but at least `n`, to bound the work
/// recomputed at block edges).
fn channel_block(images: usize, channels: usize, size: usize) -> usize {
    let blocks_per_image = (4 * rayon::current_num_threads()).div_ceil(images).clamp(1, channels);
    channels.div_ceil(blocks_per_image).max(size).min(channels)
}

/// Pixels per step of the window sum in [`backward_block`].
const CHUNK: usize = 256;

/// Image `n` of an NCHW tensor whose images hold `len` elements.
fn image_of(tensor: &[f32], n: usize, len: usize) -> &[f32] {
    &tensor[n * len..][..len]
}

/// One image's forward tensors and incoming gradient.
struct Image<'a> {
    x: &'a [f32],
    y: &'a [f32],
    scale: &'a [f32],
    dy: &'a [f32],
    channels: usize,
    plane: usize,
}

impl Image<'_> {
    fn plane_of<'t>(&self, tensor: &'t [f32], c: usize) -> &'t [f32] {
        &tensor[c * self.plane..][..self.plane]
    }
}

avx2_when_available! {
    /// `dx` for channels `first..first + dx.len() / plane` of one image.
    fn backward_block<P: InversePower>(
        params: &LrnParams,
        power: P,
        cross: f32,
        image: &Image<'_>,
        first: usize,
        dx: &mut [f32],
        ring: &mut [f32],
    ) {
        let (plane, slots) = (image.plane, params.size);
        // Channel j's ratio lives in ring slot j % n; a window spans at most n channels, so a
        // slot is overwritten only once its channel has left every window still to come.
        let mut next_ratio = params.window(first, image.channels).0;
        for (i, dx) in (first..).zip(dx.chunks_exact_mut(plane)) {
            let (lo, hi) = params.window(i, image.channels);
            while next_ratio <= hi {
                let slot = &mut ring[(next_ratio % slots) * plane..][..plane];
                let (dy, y, s) = (
                    image.plane_of(image.dy, next_ratio),
                    image.plane_of(image.y, next_ratio),
                    image.plane_of(image.scale, next_ratio),
                );
                for (((r, &g), &b), &s) in slot.iter_mut().zip(dy).zip(y).zip(s) {
                    *r = g * b / s;
                }
                next_ratio += 1;
            }
            // The window sum goes through a small stack buffer, chunk by chunk: a plane-sized
            // copy into `dx` would be a `memcpy` whose string-move path measured several times
            // slower here once the tensors are out of cache.
            let (x, dy, s) = (image.plane_of(image.x, i), image.plane_of(image.dy, i), image.plane_of(image.scale, i));
            let mut sum = [0.0f32; CHUNK];
            for (start, dx) in (0..).step_by(CHUNK).zip(dx.chunks_mut(CHUNK)) {
                let sum = &mut sum[..dx.len()];
                let slot = |j: usize| &ring[(j % slots) * plane + start..][..dx.len()];
                sum.copy_from_slice(slot(lo));
                for j in lo + 1..=hi {
                    sum.iter_mut().zip(slot(j)).for_each(|(t, &r)| *t += r);
                }
                let (x, dy, s) = (&x[start..][..dx.len()], &dy[start..][..dx.len()], &s[start..][..dx.len()]);
                for ((((d, &t), &a), &g), &s) in dx.iter_mut().zip(&*sum).zip(x).zip(dy).zip(s) {
                    *d = g * power.of(s) - cross * a * t;
                }
            }
        }
    }
}
