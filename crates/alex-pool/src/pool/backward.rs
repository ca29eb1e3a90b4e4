//! Pooling backward.

use alex_core::{PoolGeom, PoolKind, Shape4};
use rayon::prelude::*;

use super::{Planes, beats, op_name, window_argmax};
use crate::error::Result;
use crate::{F32_SCRATCH, U32_SCRATCH, with_scratch};

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
    let dx_dy = dx.par_chunks_mut(planes.in_plane()).zip(dy.par_chunks(planes.out_plane()));
    match kind {
        PoolKind::Max => dx_dy.zip(x.par_chunks(planes.in_plane())).for_each(|((dx, dy), x)| {
            let inner = planes.inner_cols.len();
            with_scratch(&F32_SCRATCH, inner + planes.phases_len(), |scratch| {
                let (best, phases) = scratch.split_at_mut(inner);
                with_scratch(&U32_SCRATCH, inner, |best_at| max_plane(planes, x, dy, dx, phases, best, best_at))
            })
        }),
        PoolKind::Avg => dx_dy.for_each(|(dx, dy)| {
            with_scratch(&F32_SCRATCH, planes.input.w + planes.phases_len(), |scratch| {
                let (spread, phases) = scratch.split_at_mut(planes.input.w);
                avg_plane(planes, dy, dx, spread, phases)
            })
        }),
    }
    Ok(())
}

/// One plane: the inner windows of an output row are searched together (`best`, `best_at`
/// hold their running maxima), the edge windows one by one; then each gradient is added at its
/// window's first maximum.
fn max_plane(
    planes: &Planes,
    x: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    phases: &mut [f32],
    best: &mut [f32],
    best_at: &mut [u32],
) {
    let width = planes.input.w;
    let mut zeroed = ZeroedRows::default();
    for (oh, dy_row) in dy.chunks_exact(planes.output.w).enumerate() {
        let rows = planes.rows(oh);
        zeroed.up_to(rows.end, width, dx);
        if !best.is_empty() {
            // Window cells in row-major order, each across all inner windows at once.
            let mut first_cell = true;
            for r in rows.clone() {
                planes.split_phases(&x[r * width..][..width], phases);
                for (kw, cells) in planes.inner_cell_ranges().enumerate() {
                    // Plane indices fit in u32 (checked by `Planes::new`); 32-bit lanes match
                    // the f32 lanes.
                    let (first_at, stride) =
                        ((r * width + planes.inner_start() + kw) as u32, planes.geom.stride_w as u32);
                    let windows = best.iter_mut().zip(best_at.iter_mut()).zip(&phases[cells]);
                    for (j, ((b, at), &v)) in (0u32..).zip(windows) {
                        // A bit mask rather than `if`: LLVM turns an `if` here into masked
                        // stores, which SSE2 can only do one lane at a time.
                        let take = u32::from(first_cell | beats(v, *b)).wrapping_neg();
                        *b = f32::from_bits((v.to_bits() & take) | (b.to_bits() & !take));
                        *at = ((first_at + j * stride) & take) | (*at & !take);
                    }
                    first_cell = false;
                }
            }
            for (&at, &g) in best_at.iter().zip(&dy_row[planes.inner_cols.clone()]) {
                dx[at as usize] += g;
            }
        }
        for ow in planes.edge_cols() {
            dx[window_argmax(x, width, rows.clone(), planes.cols(ow))] += dy_row[ow];
        }
    }
    zeroed.up_to(planes.input.h, width, dx);
}

/// One plane, separably: spread an output row's shares over the columns into `spread` (the
/// inner windows' shares through the column phases, one window column at a time), then add
/// `spread` to each window row. Every inner loop runs over contiguous memory.
fn avg_plane(planes: &Planes, dy: &[f32], dx: &mut [f32], spread: &mut [f32], phases: &mut [f32]) {
    let (width, window) = (planes.input.w, planes.geom.window_w);
    let mut zeroed = ZeroedRows::default();
    for (oh, dy_row) in dy.chunks_exact(planes.output.w).enumerate() {
        let rows = planes.rows(oh);
        zeroed.up_to(rows.end, width, dx);
        spread.fill(0.0);
        let inner_dy = &dy_row[planes.inner_cols.clone()];
        if !inner_dy.is_empty() {
            phases.fill(0.0);
            let cells = (rows.len() * window) as f32;
            for cell in planes.inner_cell_ranges() {
                for (p, &g) in phases[cell].iter_mut().zip(inner_dy) {
                    *p += g / cells;
                }
            }
            planes.merge_phases(phases, spread);
        }
        for ow in planes.edge_cols() {
            let cols = planes.cols(ow);
            let share = dy_row[ow] / (rows.len() * cols.len()) as f32;
            spread[cols].iter_mut().for_each(|s| *s += share);
        }
        for r in rows {
            for (d, &s) in dx[r * width..][..width].iter_mut().zip(&*spread) {
                *d += s;
            }
        }
    }
    zeroed.up_to(planes.input.h, width, dx);
}

/// Zeroes a plane's gradient rows just before windows first reach them, so that each row is
/// written while it is about to be used (one pass over the plane, cache-warm), and the rest at
/// the end.
#[derive(Default)]
struct ZeroedRows(usize);

impl ZeroedRows {
    fn up_to(&mut self, rows: usize, width: usize, dx: &mut [f32]) {
        if rows > self.0 {
            dx[self.0 * width..rows * width].fill(0.0);
            self.0 = rows;
        }
    }
}
