//! Pooling forward.

use alex_core::{PoolGeom, PoolKind, Shape4};
use rayon::prelude::*;

use super::{Planes, op_name};
use crate::error::Result;

/// Max or average pooling of the NCHW tensor `x` of shape `input` into `y`, whose shape is
/// `geom.output_shape(input)`. See the [module rules](crate::pool) for windows, padding and
/// NaN.
///
/// Runs in parallel over the `n x c` channel planes in the current rayon pool.
///
/// ```
/// use alex_core::{PoolGeom, PoolKind, Rounding, Shape4};
/// // 2x2 stride 2 over one 2x4 plane.
/// let geom = PoolGeom::square(2, 2, 0, Rounding::Floor)?;
/// let input = Shape4::new(1, 1, 2, 4)?;
/// let x = [1.0, 5.0, 2.0, 0.0, 3.0, 4.0, -1.0, 6.0];
/// let mut y = [0.0; 2];
/// alex_pool::pool_forward(PoolKind::Max, &geom, input, &x, &mut y)?;
/// assert_eq!(y, [5.0, 6.0]);
/// alex_pool::pool_forward(PoolKind::Avg, &geom, input, &x, &mut y)?;
/// assert_eq!(y, [3.25, 1.75]);
/// # Ok::<(), alex_pool::PoolError>(())
/// ```
pub fn pool_forward(kind: PoolKind, geom: &PoolGeom, input: Shape4, x: &[f32], y: &mut [f32]) -> Result<()> {
    let planes = Planes::new(op_name(kind, false), geom, input, &[("x", x.len())], &[("y", y.len())])?;
    let planes = &planes;
    y.par_chunks_mut(planes.out_plane()).zip(x.par_chunks(planes.in_plane())).for_each(|(y, x)| match kind {
        PoolKind::Max => max_plane(planes, x, y),
        PoolKind::Avg => avg_plane(planes, x, y),
    });
    Ok(())
}

fn max_plane(planes: &Planes, x: &[f32], y: &mut [f32]) {
    let width = planes.input.w;
    for (oh, y_row) in y.chunks_exact_mut(planes.output.w).enumerate() {
        let rows = planes.rows(oh);
        for (ow, out) in y_row.iter_mut().enumerate() {
            let cols = planes.cols(ow);
            let mut best = x[rows.start * width + cols.start];
            for r in rows.clone() {
                for &v in &x[r * width + cols.start..r * width + cols.end] {
                    // Same winner value as `window_argmax`: larger, or NaN.
                    if v > best || v.is_nan() {
                        best = v;
                    }
                }
            }
            *out = best;
        }
    }
}

fn avg_plane(planes: &Planes, x: &[f32], y: &mut [f32]) {
    let width = planes.input.w;
    for (oh, y_row) in y.chunks_exact_mut(planes.output.w).enumerate() {
        let rows = planes.rows(oh);
        for (ow, out) in y_row.iter_mut().enumerate() {
            let cols = planes.cols(ow);
            let mut sum = 0.0f32;
            for r in rows.clone() {
                sum += x[r * width + cols.start..r * width + cols.end].iter().sum::<f32>();
            }
            *out = sum / (rows.len() * cols.len()) as f32;
        }
    }
}
