//! LRN forward.

use alexnet_core::{LrnParams, Shape4};
use rayon::prelude::*;

use super::{InversePower, check, with_inverse_power};
use crate::avx2_when_available;
use crate::error::Result;

/// Local response normalisation of the NCHW tensor `x` (shape `input`) into `y`; also writes
/// `scale = k + alpha' * sum_{j in window(i)} a_j^2` (same shape), which [`lrn_backward`]
/// needs. See the [module formula](crate::lrn).
///
/// Runs in parallel over the `n x c` output planes in the current rayon pool.
///
/// ```
/// use alexnet_core::{AlphaConvention, LrnParams, Shape4};
/// // One pixel, three channels a = [1, 2, 3], window 3, k = 2, alpha = 1, beta = 0.75:
/// // the middle channel's scale is 2 + 1 + 4 + 9 = 16, and 16^-0.75 = 1/8.
/// let params = LrnParams::new(3, 1.0, 0.75, 2.0, AlphaConvention::Paper)?;
/// let input = Shape4::new(1, 3, 1, 1)?;
/// let (mut y, mut scale) = ([0.0; 3], [0.0; 3]);
/// alexnet_pool::lrn_forward(&params, input, &[1.0, 2.0, 3.0], &mut y, &mut scale)?;
/// assert_eq!(scale, [7.0, 16.0, 15.0]);
/// assert_eq!(y[1], 0.25);
/// # Ok::<(), alexnet_pool::PoolError>(())
/// ```
///
/// [`lrn_backward`]: crate::lrn_backward
pub fn lrn_forward(params: &LrnParams, input: Shape4, x: &[f32], y: &mut [f32], scale: &mut [f32]) -> Result<()> {
    check("lrn_forward", params, input, &[("x", x.len()), ("y", y.len()), ("scale", scale.len())])?;
    let (channels, plane) = (input.c, input.plane_len());
    let (k, coefficient) = (params.k, params.sum_coefficient());
    with_inverse_power!(params.beta, |power| {
        y.par_chunks_mut(plane).zip(scale.par_chunks_mut(plane)).enumerate().for_each(|(index, (y, scale))| {
            let image = &x[(index / channels) * channels * plane..][..channels * plane];
            let c = index % channels;
            let (lo, hi) = params.window(c, channels);
            forward_plane(
                power,
                k,
                coefficient,
                &image[lo * plane..(hi + 1) * plane],
                &image[c * plane..][..plane],
                scale,
                y,
            );
        })
    });
    Ok(())
}

/// Pixels per step of the window sum in [`forward_plane`].
const CHUNK: usize = 256;

avx2_when_available! {
    /// One output plane: `scale = k + alpha' * sum of the squares of the `window` planes`,
    /// then `y = a * scale^-beta`.
    #[allow(clippy::too_many_arguments)]
    fn forward_plane<P: InversePower>(
        power: P,
        k: f32,
        coefficient: f32,
        window: &[f32],
        a: &[f32],
        scale: &mut [f32],
        y: &mut [f32],
    ) {
        // The window sum goes through a small stack buffer, chunk by chunk, so that `scale` and
        // `y` are each written once, right when computed.
        let plane = a.len();
        let mut sum = [0.0f32; CHUNK];
        for (start, (scale, y)) in (0..).step_by(CHUNK).zip(scale.chunks_mut(CHUNK).zip(y.chunks_mut(CHUNK))) {
            let sum = &mut sum[..y.len()];
            let mut planes = window.chunks_exact(plane).map(|a_j| &a_j[start..][..y.len()]);
            let first = planes.next().expect("an LRN window holds at least one channel");
            sum.iter_mut().zip(first).for_each(|(t, &v)| *t = v * v);
            for a_j in planes {
                sum.iter_mut().zip(a_j).for_each(|(t, &v)| *t += v * v);
            }
            for (((y, s), &t), &v) in y.iter_mut().zip(scale).zip(&*sum).zip(&a[start..]) {
                *s = k + coefficient * t;
                *y = v * power.of(*s);
            }
        }
    }
}
