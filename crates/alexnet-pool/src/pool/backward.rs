//! Pooling backward.

use alexnet_core::{PoolGeom, PoolKind, Shape4};
use rayon::prelude::*;

use super::{LANES, Lanes, Planes, op_name, window_argmax};
use crate::error::Result;
use crate::{F32_SCRATCH, U32_SCRATCH, avx2_when_available, with_scratch};

/// The gradient `dx` of pooling from the output gradient `dy`; `dx` is overwritten.
///
/// `x` is the forward's input and `y` its output ([`pool_forward`](crate::pool_forward) of
/// `x`). Max pooling routes each gradient to its window's first maximum in row-major window
/// order, found as the first cell equal to the window's `y`, which needs no comparisons
/// between cells. A window whose `y` is none of its cells (NaN, or a `y` not computed from this
/// `x`) is searched in `x` instead, for its first maximum (its first NaN, if any), so no
/// gradient is lost. Average pooling reads neither `x` nor `y`, which are only checked for
/// their lengths. Overlapping windows accumulate. Runs in parallel over the `n x c` channel
/// planes of `dx` in the current rayon pool.
///
/// ```
/// use alexnet_core::{PoolGeom, PoolKind, Rounding, Shape4};
/// // Window 3 stride 2 over one row of 5: the windows overlap at column 2.
/// let geom = PoolGeom { window_h: 1, window_w: 3, stride_h: 1, stride_w: 2, pad_h: 0, pad_w: 0, rounding: Rounding::Floor };
/// let input = Shape4::new(1, 1, 1, 5)?;
/// let x = [1.0, 2.0, 9.0, 3.0, 4.0];
/// let y = [9.0, 9.0];
/// let mut dx = [0.0; 5];
/// alexnet_pool::pool_backward(PoolKind::Max, &geom, input, &x, &y, &[1.0, 10.0], &mut dx)?;
/// assert_eq!(dx, [0.0, 0.0, 11.0, 0.0, 0.0]);
/// # Ok::<(), alexnet_pool::PoolError>(())
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
    let (in_task, out_task) =
        (planes.planes_per_task() * planes.in_plane(), planes.planes_per_task() * planes.out_plane());
    let dx_dy = dx.par_chunks_mut(in_task).zip(dy.par_chunks(out_task));
    match kind {
        PoolKind::Max => {
            let lanes = planes.lanes();
            let cells = planes.geom.window_h * planes.geom.window_w;
            dx_dy.zip(x.par_chunks(in_task)).zip(y.par_chunks(out_task)).for_each(|(((dx, dy), x), y)| {
                with_scratch(&F32_SCRATCH, lanes.phases_len + lanes.total, |floats| {
                    let (phases, y_lanes) = floats.split_at_mut(lanes.phases_len);
                    with_scratch(&U32_SCRATCH, 2 * lanes.total + 2 * cells, |indices| {
                        let (base_at, indices) = indices.split_at_mut(lanes.total);
                        let (first_max, cells) = indices.split_at_mut(lanes.total);
                        let cells = cells.as_chunks_mut::<2>().0;
                        planes.lane_indices(&lanes, base_at);
                        planes.lane_cells(&lanes, cells);
                        let mut scratch = MaxScratch { lanes: &lanes, phases, y_lanes, base_at, cells, first_max };
                        max_planes(planes, &mut scratch, x, y, dy, dx)
                    })
                })
            })
        }
        PoolKind::Avg => {
            let row_phases = planes.row_phases();
            dx_dy.for_each(|(dx, dy)| {
                with_scratch(&F32_SCRATCH, planes.input.w + row_phases.len + row_phases.lanes, |scratch| {
                    let (spread, rest) = scratch.split_at_mut(planes.input.w);
                    let (phases, shares) = rest.split_at_mut(row_phases.len);
                    avg_planes(planes, dy, dx, spread, phases, shares)
                })
            })
        }
    }
    Ok(())
}

/// No cell of the window equals its `y`.
const NOT_FOUND: u32 = u32::MAX;

/// Working memory of [`max_inner_windows`].
struct MaxScratch<'a> {
    lanes: &'a Lanes,
    /// The phase planes of the current plane.
    phases: &'a mut [f32],
    /// Each lane's `y`.
    y_lanes: &'a mut [f32],
    /// Each lane's top-left plane index ([`Planes::lane_indices`]).
    base_at: &'a [u32],
    /// The window cells ([`Planes::lane_cells`]).
    cells: &'a [[u32; 2]],
    /// Each lane's first maximum, or [`NOT_FOUND`].
    first_max: &'a mut [u32],
}

impl Planes {
    /// The plane index of each lane's window's top-left cell.
    fn lane_indices(&self, lanes: &Lanes, base_at: &mut [u32]) {
        let (width, left, stride_w) = (self.input.w, self.inner_start(), self.geom.stride_w);
        for (oh, row) in base_at.chunks_mut(lanes.row_lanes).enumerate() {
            let row_at = (self.inner_top() + oh * self.geom.stride_h) * width + left;
            // Padding lanes may point past the plane: they are never used.
            for (j, at) in row.iter_mut().enumerate() {
                *at = (row_at + j * stride_w) as u32;
            }
        }
    }
}

avx2_when_available! {
    /// Max pooling backward of consecutive planes.
    fn max_planes(planes: &Planes, scratch: &mut MaxScratch<'_>, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
        let (in_plane, out_plane) = (planes.in_plane(), planes.out_plane());
        let each = dx.chunks_exact_mut(in_plane).zip(x.chunks_exact(in_plane));
        for ((dx, x), (y, dy)) in each.zip(y.chunks_exact(out_plane).zip(dy.chunks_exact(out_plane))) {
            dx.fill(0.0);
            if !planes.inner_rows.is_empty() && !planes.inner_cols.is_empty() {
                max_inner_windows(planes, scratch, x, y, dy, dx);
            }
            max_edge_windows(planes, x, dy, dx);
        }
    }
}

/// The inner windows of one plane, all at once (see [`Lanes`]): each lane keeps the smallest
/// plane index of the cells equal to its window's `y`, which is the first maximum in
/// row-major order; no cell is compared with another. Then each gradient is added at its
/// window's index; a window whose `y` is none of its cells (NaN, or a `y` not computed from
/// this `x`) is searched in `x` instead.
#[inline(always)]
fn max_inner_windows(planes: &Planes, scratch: &mut MaxScratch<'_>, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
    let MaxScratch { lanes, phases, y_lanes, base_at, cells, first_max } = scratch;
    let (width, out_width, row_lanes) = (planes.input.w, planes.output.w, lanes.row_lanes);
    let (rows, cols) = (planes.inner_rows.clone(), planes.inner_cols.clone());
    planes.split_plane(lanes, x, phases);
    // Padding lanes keep stale values: whatever they match is never used.
    let y_rows = y.chunks_exact(out_width).skip(rows.start).take(rows.len());
    for (lanes_row, y_row) in y_lanes.chunks_mut(row_lanes).zip(y_rows) {
        lanes_row[..cols.len()].copy_from_slice(&y_row[cols.clone()]);
    }
    // Vector by vector, all cells, so that each lane's index stays in a register.
    let chunks = first_max.as_chunks_mut::<LANES>().0.iter_mut().zip(base_at.as_chunks::<LANES>().0);
    for ((lane, (first_max, base)), max) in (0..).step_by(LANES).zip(chunks).zip(y_lanes.as_chunks::<LANES>().0) {
        let mut at = [NOT_FOUND; LANES];
        for &[start, cell] in cells.iter() {
            let v = phases[start as usize + lane..].first_chunk::<LANES>().expect("phases hold whole vectors");
            for l in 0..LANES {
                // Cells come in row-major order with increasing plane indices, so the first
                // match is the smallest index: a `min` rather than a select.
                let missed = u32::from(v[l] != max[l]).wrapping_neg();
                at[l] = at[l].min(base[l].wrapping_add(cell) | missed);
            }
        }
        *first_max = at;
    }
    let dy_rows = dy.chunks_exact(out_width).skip(rows.start);
    for ((oh, at_row), dy_row) in rows.zip(first_max.chunks(row_lanes)).zip(dy_rows) {
        let (at_row, dy_row) = (&at_row[..cols.len()], &dy_row[cols.clone()]);
        // NOT_FOUND is past every plane (`Planes::new` checks that plane indices fit in u32).
        for (&at, &g) in at_row.iter().zip(dy_row) {
            if let Some(d) = dx.get_mut(at as usize) {
                *d += g;
            }
        }
        if at_row.contains(&NOT_FOUND) {
            for ((ow, &at), &g) in cols.clone().zip(at_row).zip(dy_row) {
                if at == NOT_FOUND {
                    dx[window_argmax(x, width, planes.rows(oh), planes.cols(ow))] += g;
                }
            }
        }
    }
}

/// The windows of one plane that padding or a ceil overhang clips, one by one.
#[inline(always)]
fn max_edge_windows(planes: &Planes, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for (oh, ow) in planes.edge_windows() {
        dx[window_argmax(x, planes.input.w, planes.rows(oh), planes.cols(ow))] += dy[oh * planes.output.w + ow];
    }
}

avx2_when_available! {
    /// Average pooling backward of consecutive planes.
    fn avg_planes(
        planes: &Planes,
        dy: &[f32],
        dx: &mut [f32],
        spread: &mut [f32],
        phases: &mut [f32],
        shares: &mut [f32],
    ) {
        for (dx, dy) in dx.chunks_exact_mut(planes.in_plane()).zip(dy.chunks_exact(planes.out_plane())) {
            avg_plane(planes, dy, dx, spread, phases, shares);
        }
    }
}

/// One plane, separably. First every inner window's share (its gradient over its cell count)
/// is added to each of its window columns in the column phases of its output row (phase `p`
/// of row `oh` at `(p * out_h + oh) * row_lanes`), in 8-lane vectors over all rows' lanes.
/// Then, row by row, the phases are merged into `spread` with the edge windows' shares, and
/// `spread` is added to each window row. Every inner loop runs over contiguous memory.
#[inline(always)]
fn avg_plane(planes: &Planes, dy: &[f32], dx: &mut [f32], spread: &mut [f32], phases: &mut [f32], shares: &mut [f32]) {
    let (width, out_width, window) = (planes.input.w, planes.output.w, planes.geom.window_w);
    let (row_lanes, inner) = (planes.phase_len(), planes.inner_cols.clone());
    let phase_stride = planes.row_phases().stride;
    if !inner.is_empty() {
        // Padding lanes must share nothing: their cells overlap the next row's.
        shares.fill(0.0);
        for (oh, (lanes_row, dy_row)) in shares.chunks_mut(row_lanes).zip(dy.chunks_exact(out_width)).enumerate() {
            let cells = (planes.rows(oh).len() * window) as f32;
            for (share, &g) in lanes_row.iter_mut().zip(&dy_row[inner.clone()]) {
                *share = g / cells;
            }
        }
        phases.fill(0.0);
        for cells in planes.inner_cell_ranges(phase_stride) {
            let targets = phases[cells.start..].as_chunks_mut::<LANES>().0;
            for (target, share) in targets.iter_mut().zip(shares.as_chunks::<LANES>().0) {
                for l in 0..LANES {
                    target[l] += share[l];
                }
            }
        }
    }
    let mut zeroed = ZeroedRows::default();
    for (oh, dy_row) in dy.chunks_exact(out_width).enumerate() {
        let rows = planes.rows(oh);
        zeroed.up_to(rows.end, width, dx);
        spread.fill(0.0);
        if !inner.is_empty() {
            planes.merge_phases(&phases[oh * row_lanes..], spread, phase_stride);
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
