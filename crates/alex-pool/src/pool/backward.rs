//! Pooling backward.

use alex_core::{PoolGeom, PoolKind, Shape4};
use rayon::prelude::*;

use super::{Planes, op_name, window_argmax};
use crate::error::Result;

/// The gradient `dx` of pooling from the output gradient `dy`; `dx` is overwritten.
///
/// `x` is the forward's input and `y` its output. Max pooling recomputes each window's
/// first maximum (row-major window order) from `x`, so the routing never depends on `y`,
/// which is only checked for its length; average pooling reads neither. Overlapping
/// windows accumulate. Runs in parallel over the `n x c` channel planes of `dx` in the
/// current rayon pool.
///
/// ```
/// use alex_core::{PoolGeom, PoolKind, Rounding, Shape4};
/// // Window 3 stride 2 over one row of 5: the windows overlap at column 2.
/// let geom = PoolGeom { window_h: 1, window_w: 3, stride_h: 1, stride_w: 2, pad_h: 0, pad_w: 0, rounding: Rounding::Floor };
/// let input = Shape4::new(1, 1, 1, 5)?;
/// let x = [1.0, 2.0, 9.0, 3.0, 4.0];
/// let y = [9.0, 9.0];
/// let mut dx = [0.0; 5];
/// alex_pool::pool_backward(PoolKind::Max, &geom, input, &x, &y, &[1.0, 10.0], &mut dx)?;
/// assert_eq!(dx, [0.0, 0.0, 11.0, 0.0, 0.0]);
/// # Ok::<(), alex_pool::PoolError>(())
/// ```
pub fn pool_backward(
    kind: PoolKind,
    geom: &PoolGeom,
    input: Shape4,
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let planes = Planes::new(
        op_name(kind, true),
        geom,
        input,
        &[("x", x.len()), ("dx", dx.len())],
        &[("y", y.len()), ("dy", dy.len())],
    )?;
    let planes = &planes;
    dx.par_chunks_mut(planes.in_plane())
        .zip(x.par_chunks(planes.in_plane()))
        .zip(dy.par_chunks(planes.out_plane()))
        .for_each(|((dx, x), dy)| match kind {
            PoolKind::Max => max_plane(planes, x, dy, dx),
            PoolKind::Avg => avg_plane(planes, dy, dx),
        });
    Ok(())
}

fn max_plane(planes: &Planes, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    for (oh, dy_row) in dy.chunks_exact(planes.output.w).enumerate() {
        let rows = planes.rows(oh);
        for (ow, &g) in dy_row.iter().enumerate() {
            dx[window_argmax(x, planes.input.w, rows.clone(), planes.cols(ow))] += g;
        }
    }
}

fn avg_plane(planes: &Planes, dy: &[f32], dx: &mut [f32]) {
    let width = planes.input.w;
    dx.fill(0.0);
    for (oh, dy_row) in dy.chunks_exact(planes.output.w).enumerate() {
        let rows = planes.rows(oh);
        for (ow, &g) in dy_row.iter().enumerate() {
            let cols = planes.cols(ow);
            let share = g / (rows.len() * cols.len()) as f32;
            for r in rows.clone() {
                for d in &mut dx[r * width + cols.start..r * width + cols.end] {
                    *d += share;
                }
            }
        }
    }
}
