//! Pooling backward.

use alex_core::{PoolGeom, PoolKind, Shape4};
use rayon::prelude::*;

use super::{Planes, op_name, window_argmax};
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
        PoolKind::Avg => dx_dy.for_each(|(dx, dy)| {
            with_scratch(&F32_SCRATCH, planes.input.w + planes.phases_len(), |scratch| {
                let (spread, phases) = scratch.split_at_mut(planes.input.w);
                avg_planes(planes, dy, dx, spread, phases)
            })
        }),
    }
    Ok(())
}

/// Vector width of [`max_plane`]'s lanes: one AVX2 vector of `u32` indices.
const LANES: usize = 8;

/// No cell of the window equals its `y`.
const NOT_FOUND: u32 = u32::MAX;

/// The inner windows of a plane (inside the input on both axes) as one flat run of lanes:
/// lane `oh * row_lanes + j` is window `(inner_rows.start + oh, inner_cols.start + j)`, and a
/// row's lanes past `inner_cols.len()` are padding. The input is split by row and column
/// phase modulo the strides into `stride_h * stride_w` phase planes of `phase_rows x
/// row_lanes`, so that cell `(kh, kw)` of every inner window is one contiguous slice of them:
/// a whole plane's windows are then handled in long vector loops, however small the plane.
struct Lanes {
    row_lanes: usize,
    phase_rows: usize,
    /// Lanes of all inner windows, padding included, rounded up to whole vectors.
    total: usize,
    /// Floats of the phase planes, plus room for the last vector of a cell's slice.
    phases_len: usize,
}

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
    fn lanes(&self) -> Lanes {
        let row_lanes = self.phase_len();
        let phase_rows = self.inner_rows.len() + (self.geom.window_h - 1) / self.geom.stride_h;
        let phases = self.geom.stride_h * self.geom.stride_w * phase_rows * row_lanes;
        Lanes {
            row_lanes,
            phase_rows,
            total: (self.inner_rows.len() * row_lanes).next_multiple_of(LANES),
            phases_len: phases + row_lanes + LANES,
        }
    }

    /// The input row where the first inner window starts.
    fn inner_top(&self) -> usize {
        self.inner_rows.start * self.geom.stride_h - self.geom.pad_h
    }

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

    /// For each window cell `(kh, kw)` in row-major order: where its slice of the phase planes
    /// starts, and its offset from the window's top-left cell in the plane.
    fn lane_cells(&self, lanes: &Lanes, cells: &mut [[u32; 2]]) {
        let g = &self.geom;
        let phase_plane = lanes.phase_rows * lanes.row_lanes;
        let window = (0..g.window_h).flat_map(|kh| (0..g.window_w).map(move |kw| (kh, kw)));
        for ((kh, kw), cell) in window.zip(cells) {
            let phase = (kh % g.stride_h) * g.stride_w + kw % g.stride_w;
            let start = phase * phase_plane + kh / g.stride_h * lanes.row_lanes + kw / g.stride_w;
            *cell = [start as u32, (kh * self.input.w + kw) as u32];
        }
    }

    /// Splits the rows of `x` that inner windows cover into the phase planes of [`Lanes`].
    #[inline(always)]
    fn split_plane(&self, lanes: &Lanes, x: &[f32], phases: &mut [f32]) {
        let (stride_h, stride_w, width) = (self.geom.stride_h, self.geom.stride_w, self.input.w);
        let phase_plane = lanes.phase_rows * lanes.row_lanes;
        let top = self.inner_top();
        for (r, row) in x.chunks_exact(width).enumerate().skip(top).take(lanes.phase_rows * stride_h) {
            let (q, t) = ((r - top) / stride_h, (r - top) % stride_h);
            self.split_phases(row, &mut phases[t * stride_w * phase_plane + q * lanes.row_lanes..], phase_plane);
        }
    }
}

avx2_when_available! {
    /// Max pooling backward of consecutive planes.
    fn max_planes(planes: &Planes, scratch: &mut MaxScratch<'_>, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) => max_planes_kernel
}

#[inline(always)]
fn max_planes_kernel(planes: &Planes, scratch: &mut MaxScratch<'_>, x: &[f32], y: &[f32], dy: &[f32], dx: &mut [f32]) {
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
    let width = planes.input.w;
    for (oh, dy_row) in dy.chunks_exact(planes.output.w).enumerate() {
        let mut edge = |ow: usize| dx[window_argmax(x, width, planes.rows(oh), planes.cols(ow))] += dy_row[ow];
        if planes.inner_rows.contains(&oh) {
            planes.edge_cols().for_each(&mut edge);
        } else {
            (0..planes.output.w).for_each(&mut edge);
        }
    }
}

avx2_when_available! {
    /// Average pooling backward of consecutive planes.
    fn avg_planes(planes: &Planes, dy: &[f32], dx: &mut [f32], spread: &mut [f32], phases: &mut [f32]) => avg_planes_kernel
}

#[inline(always)]
fn avg_planes_kernel(planes: &Planes, dy: &[f32], dx: &mut [f32], spread: &mut [f32], phases: &mut [f32]) {
    for (dx, dy) in dx.chunks_exact_mut(planes.in_plane()).zip(dy.chunks_exact(planes.out_plane())) {
        avg_plane(planes, dy, dx, spread, phases);
    }
}

/// One plane, separably: spread an output row's shares over the columns into `spread` (the
/// inner windows' shares through the column phases, one window column at a time), then add
/// `spread` to each window row. Every inner loop runs over contiguous memory.
#[inline(always)]
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
