//! Pooling forward.

use std::ops::Range;

use alexnet_core::{PoolGeom, PoolKind, Shape4};
use rayon::prelude::*;

use super::{LANES, Planes, max_or_nan, op_name};
use crate::error::Result;
use crate::{F32_SCRATCH, avx2_when_available, with_scratch};

/// Max or average pooling of the NCHW tensor `x` of shape `input` into `y`, whose shape is
/// `geom.output_shape(input)`. See the [module rules](crate::pool) for windows, padding and
/// NaN.
///
/// Runs in parallel over the `n x c` channel planes in the current rayon pool.
///
/// ```
/// use alexnet_core::{PoolGeom, PoolKind, Rounding, Shape4};
/// // 2x2 stride 2 over one 2x4 plane.
/// let geom = PoolGeom::square(2, 2, 0, Rounding::Floor)?;
/// let input = Shape4::new(1, 1, 2, 4)?;
/// let x = [1.0, 5.0, 2.0, 0.0, 3.0, 4.0, -1.0, 6.0];
/// let mut y = [0.0; 2];
/// alexnet_pool::pool_forward(PoolKind::Max, &geom, input, &x, &mut y)?;
/// assert_eq!(y, [5.0, 6.0]);
/// alexnet_pool::pool_forward(PoolKind::Avg, &geom, input, &x, &mut y)?;
/// assert_eq!(y, [3.25, 1.75]);
/// # Ok::<(), alexnet_pool::PoolError>(())
/// ```
pub fn pool_forward(kind: PoolKind, geom: &PoolGeom, input: Shape4, x: &[f32], y: &mut [f32]) -> Result<()> {
    let planes = Planes::new(op_name(kind, false), geom, input, &[("x", x.len())], &[("y", y.len())])?;
    match kind {
        PoolKind::Max => forward::<Max>(&planes, x, y),
        PoolKind::Avg => forward::<Mean>(&planes, x, y),
    }
    Ok(())
}

/// A window reduction that can be done rows first, then columns.
trait Reduction {
    /// Folds `v` into the running value `acc`.
    fn fold(acc: f32, v: f32) -> f32;
    /// The output from the folded value of `cells` input cells.
    fn finish(acc: f32, cells: usize) -> f32;
}

struct Max;

impl Reduction for Max {
    #[inline(always)]
    fn fold(acc: f32, v: f32) -> f32 {
        max_or_nan(v, acc)
    }

    #[inline(always)]
    fn finish(acc: f32, _cells: usize) -> f32 {
        acc
    }
}

struct Mean;

impl Reduction for Mean {
    #[inline(always)]
    fn fold(acc: f32, v: f32) -> f32 {
        acc + v
    }

    #[inline(always)]
    fn finish(acc: f32, cells: usize) -> f32 {
        acc / cells as f32
    }
}

fn forward<R: Reduction>(planes: &Planes, x: &[f32], y: &mut [f32]) {
    let tasks = planes.planes_per_task();
    let row_phases = planes.row_phases();
    y.par_chunks_mut(tasks * planes.out_plane()).zip(x.par_chunks(tasks * planes.in_plane())).for_each(|(y, x)| {
        with_scratch(&F32_SCRATCH, planes.input.w + row_phases.len + row_phases.lanes, |scratch| {
            let (column_fold, rest) = scratch.split_at_mut(planes.input.w);
            let (phases, folds) = rest.split_at_mut(row_phases.len);
            forward_planes::<R>(planes, x, y, column_fold, phases, folds)
        })
    });
}

avx2_when_available! {
    /// Pooling forward of consecutive planes.
    fn forward_planes<R: Reduction>(
        planes: &Planes,
        x: &[f32],
        y: &mut [f32],
        column_fold: &mut [f32],
        phases: &mut [f32],
        folds: &mut [f32],
    ) {
        for (y, x) in y.chunks_exact_mut(planes.out_plane()).zip(x.chunks_exact(planes.in_plane())) {
            forward_plane::<R>(planes, x, y, column_fold, phases, folds);
        }
    }
}

/// One plane, separably. For each output row, fold its window rows into `column_fold`,
/// finish the edge windows from it, and split it by column phase into `phases` (phase `p` of
/// row `oh` at `(p * out_h + oh) * row_lanes`). Then every inner window of the plane is folded
/// over its window columns at once, in 8-lane vectors over all rows' lanes (even 13x13 planes
/// give long vectors), and written out row by row.
#[inline(always)]
fn forward_plane<R: Reduction>(
    planes: &Planes,
    x: &[f32],
    y: &mut [f32],
    column_fold: &mut [f32],
    phases: &mut [f32],
    folds: &mut [f32],
) {
    let (width, out_width, row_lanes) = (planes.input.w, planes.output.w, planes.phase_len());
    let phase_stride = planes.row_phases().stride;
    let inner = planes.inner_cols.clone();
    for (oh, y_row) in y.chunks_exact_mut(out_width).enumerate() {
        let rows = planes.rows(oh);
        column_fold.copy_from_slice(&x[rows.start * width..][..width]);
        for r in rows.start + 1..rows.end {
            for (acc, &v) in column_fold.iter_mut().zip(&x[r * width..][..width]) {
                *acc = R::fold(*acc, v);
            }
        }
        if !inner.is_empty() {
            planes.split_phases(column_fold, &mut phases[oh * row_lanes..], phase_stride);
        }
        for ow in planes.edge_cols() {
            let cols = planes.cols(ow);
            let edge = &column_fold[cols.clone()];
            y_row[ow] = R::finish(edge[1..].iter().fold(edge[0], |acc, &v| R::fold(acc, v)), rows.len() * cols.len());
        }
    }
    if inner.is_empty() {
        return;
    }
    for (lane, out) in (0..).step_by(LANES).zip(folds.as_chunks_mut::<LANES>().0) {
        let cell = |cells: Range<usize>| {
            *phases[cells.start + lane..].first_chunk::<LANES>().expect("phases hold whole vectors")
        };
        let mut cells = planes.inner_cell_ranges(phase_stride);
        let mut acc = cell(cells.next().expect("windows have a column"));
        for start in cells {
            let v = cell(start);
            for l in 0..LANES {
                acc[l] = R::fold(acc[l], v[l]);
            }
        }
        *out = acc;
    }
    for (oh, (y_row, row_folds)) in y.chunks_exact_mut(out_width).zip(folds.chunks(row_lanes)).enumerate() {
        let cells = planes.rows(oh).len() * planes.geom.window_w;
        for (out, &acc) in y_row[inner.clone()].iter_mut().zip(row_folds) {
            *out = R::finish(acc, cells);
        }
    }
}
