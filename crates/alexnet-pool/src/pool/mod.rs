//! Max and average pooling over each channel plane, forward and backward.
//!
//! Window rules, shared by forward and backward:
//! - The output size is [`PoolGeom::output_shape`]'s (floor, ceil or exact rounding).
//! - Padding is never read: a window covers only the cells of the input it overlaps. A ceil-mode
//!   window that hangs over the right or bottom edge is clipped the same way. `alexnet-core`'s
//!   geometry guarantees every window overlaps at least one input cell.
//! - Max: the output is the largest cell; NaN wins (a window holding a NaN outputs NaN). The
//!   backward routes each output gradient to the **first** maximum in row-major window order
//!   (top row first, left to right), i.e. to the first NaN if there is one, so ties are
//!   deterministic; overlapping windows accumulate into the same input cell.
//! - Average: the sum over the overlapped input cells divided by their number (padding
//!   excluded), as PyTorch's `count_include_pad=False`; the backward spreads each gradient
//!   evenly over the same cells.
//!
//! The windows wholly inside the input (all but the edge ones) are computed as vectors: input
//! rows (or, in the forward, rows already folded over the window rows) are split by column
//! phase modulo the stride, which makes each window cell's values for all windows of a row
//! contiguous, and the phases of all rows of a plane sit side by side, so one loop of 8-lane
//! vectors covers every window of the plane. Edge windows are computed one by one.

mod backward;
mod forward;
#[cfg(test)]
mod tests;

use std::ops::Range;

use alexnet_core::{PoolGeom, PoolKind, Shape4};

pub use backward::pool_backward;
pub use forward::pool_forward;

use crate::error::{PoolError, Result};
use crate::{check_buffer, checked_numel};

/// The per-plane geometry of one pooling call, validated against its input.
#[derive(Debug, Clone)]
struct Planes {
    geom: PoolGeom,
    input: Shape4,
    output: Shape4,
    /// Output rows whose windows lie wholly inside the input's height.
    inner_rows: Range<usize>,
    /// Output columns whose windows lie wholly inside the input's width.
    inner_cols: Range<usize>,
}

impl Planes {
    /// Validates `geom` against `input` and checks the lengths of the input-sized and
    /// output-sized buffers.
    fn new(
        op: &'static str,
        geom: &PoolGeom,
        input: Shape4,
        input_sized: &[(&'static str, usize)],
        output_sized: &[(&'static str, usize)],
    ) -> Result<Self> {
        let in_len = checked_numel(op, input)?;
        let output = geom.output_shape(input)?;
        let out_len = checked_numel(op, output)?;
        let inner_rows = inner_windows(input.h, output.h, geom.stride_h, geom.pad_h, geom.window_h);
        let inner_cols = inner_windows(input.w, output.w, geom.stride_w, geom.pad_w, geom.window_w);
        let planes = Self { geom: *geom, input, output, inner_rows, inner_cols };
        // Plane indices and phase-plane offsets are kept as u32 (half the vector width of usize).
        if u32::try_from(input.plane_len()).is_err() || u32::try_from(planes.lanes().phases_len).is_err() {
            return Err(PoolError::PlaneTooLarge { op, h: input.h, w: input.w });
        }
        for &(name, len) in input_sized {
            check_buffer(op, name, in_len, len)?;
        }
        for &(name, len) in output_sized {
            check_buffer(op, name, out_len, len)?;
        }
        Ok(planes)
    }

    /// Channel planes per parallel task: enough to amortise the per-task cost on small planes
    /// (pool5's are 13x13), few enough to give every thread several tasks.
    fn planes_per_task(&self) -> usize {
        /// Input floats per task worth a task of its own.
        const TASK_FLOATS: usize = 16 * 1024;
        let by_size = TASK_FLOATS.div_ceil(self.in_plane());
        let by_count = (self.input.n * self.input.c).div_ceil(4 * rayon::current_num_threads());
        by_size.min(by_count).max(1)
    }

    fn in_plane(&self) -> usize {
        self.input.plane_len()
    }

    fn out_plane(&self) -> usize {
        self.output.plane_len()
    }

    /// Input rows overlapped by output row `oh`.
    fn rows(&self, oh: usize) -> Range<usize> {
        clipped(oh, self.geom.stride_h, self.geom.pad_h, self.geom.window_h, self.input.h)
    }

    /// Input columns overlapped by output column `ow`.
    fn cols(&self, ow: usize) -> Range<usize> {
        clipped(ow, self.geom.stride_w, self.geom.pad_w, self.geom.window_w, self.input.w)
    }

    /// The output columns whose windows are clipped by the left or right edge.
    fn edge_cols(&self) -> impl Iterator<Item = usize> {
        (0..self.inner_cols.start).chain(self.inner_cols.end..self.output.w)
    }

    /// The output windows outside the inner ones (clipped by padding or a ceil overhang), as
    /// `(oh, ow)` in row-major order.
    fn edge_windows(&self) -> impl Iterator<Item = (usize, usize)> {
        // Most geometries (AlexNet's) have none: skip the row walk then.
        let all_inner = self.inner_rows.len() == self.output.h && self.inner_cols.len() == self.output.w;
        let rows = if all_inner { 0..0 } else { 0..self.output.h };
        rows.flat_map(move |oh| {
            let inner_row = self.inner_rows.contains(&oh);
            let whole_row = if inner_row { 0..0 } else { 0..self.output.w };
            let edges = inner_row.then(|| self.edge_cols()).into_iter().flatten();
            whole_row.chain(edges).map(move |ow| (oh, ow))
        })
    }

    /// The input column where the first inner window starts.
    fn inner_start(&self) -> usize {
        self.inner_cols.start * self.geom.stride_w - self.geom.pad_w
    }

    /// The layout of every output row's column phases side by side, as the forward and the
    /// average backward keep them (phase `p` of row `oh` at `p * stride + oh * phase_len`):
    /// the phase stride, the floats to hold them plus the last vector of a cell's slice, and
    /// the lanes of all rows rounded up to whole vectors.
    fn row_phases(&self) -> RowPhases {
        let stride = self.output.h * self.phase_len();
        RowPhases {
            stride,
            len: self.geom.stride_w * stride + self.phase_len() + LANES,
            lanes: stride.next_multiple_of(LANES),
        }
    }

    /// Values per column phase of a row: the inner windows plus the phase's overhang.
    fn phase_len(&self) -> usize {
        self.inner_cols.len() + (self.geom.window_w - 1) / self.geom.stride_w
    }

    /// Splits the inner part of an input row by column phase modulo the stride, so that cell
    /// `kw` of every inner window is one contiguous slice ([`Planes::inner_cell_ranges`]): the
    /// window loops then run over contiguous memory and compile to vector code for any stride.
    /// Phase `p` goes to `phases[p * phase_stride..]` ([`Planes::phase_len`] values).
    #[inline(always)]
    fn split_phases(&self, row: &[f32], phases: &mut [f32], phase_stride: usize) {
        let (stride, len) = (self.geom.stride_w, self.phase_len());
        let row = &row[self.inner_start()..];
        // Entries past the row's end stay stale: no inner window reads them.
        match stride {
            1 => phases[..row.len().min(len)].copy_from_slice(&row[..row.len().min(len)]),
            // AlexNet's stride, as pairs, which compiles to vector shuffles.
            2 => {
                let (even, odd) = phases.split_at_mut(phase_stride);
                let (even, odd) = (&mut even[..len], &mut odd[..len]);
                // Whole vectors first, as fixed-size arrays (which compile to shuffles), then the
                // rest pair by pair.
                let pairs = row.as_chunks::<{ 2 * LANES }>().0;
                let vectors = pairs.len().min(len / LANES);
                let (even_vectors, odd_vectors) = (even.as_chunks_mut::<LANES>().0, odd.as_chunks_mut::<LANES>().0);
                for ((pair, e), o) in pairs.iter().zip(even_vectors).zip(odd_vectors).take(vectors) {
                    for l in 0..LANES {
                        (e[l], o[l]) = (pair[2 * l], pair[2 * l + 1]);
                    }
                }
                let done = vectors * LANES;
                for ((pair, e), o) in row[2 * done..].chunks_exact(2).zip(&mut even[done..]).zip(&mut odd[done..]) {
                    (*e, *o) = (pair[0], pair[1]);
                }
                if row.len() % 2 == 1 && row.len() / 2 < len {
                    even[row.len() / 2] = row[row.len() - 1];
                }
            }
            _ => {
                for phase in 0..stride {
                    let out = &mut phases[phase * phase_stride..][..len];
                    for (o, &v) in out.iter_mut().zip(row.iter().skip(phase).step_by(stride)) {
                        *o = v;
                    }
                }
            }
        }
    }

    /// The inverse of [`Planes::split_phases`]: writes the phases (phase `p` at
    /// `phases[p * phase_stride..]`) back into the inner part of `row` (up to the row's end).
    #[inline(always)]
    fn merge_phases(&self, phases: &[f32], row: &mut [f32], phase_stride: usize) {
        let (stride, len) = (self.geom.stride_w, self.phase_len());
        let row = &mut row[self.inner_start()..];
        match stride {
            1 => {
                let n = row.len().min(len);
                row[..n].copy_from_slice(&phases[..n]);
            }
            2 => {
                let (even, odd) = (&phases[..len], &phases[phase_stride..][..len]);
                for ((pair, &e), &o) in row.chunks_exact_mut(2).zip(even).zip(odd) {
                    (pair[0], pair[1]) = (e, o);
                }
                if row.len() % 2 == 1 && row.len() / 2 < len {
                    row[row.len() - 1] = even[row.len() / 2];
                }
            }
            _ => {
                for phase in 0..stride {
                    let from = &phases[phase * phase_stride..][..len];
                    for (r, &v) in row.iter_mut().skip(phase).step_by(stride).zip(from) {
                        *r = v;
                    }
                }
            }
        }
    }

    /// For each window column `kw` in order, where that cell of every inner window lives in
    /// split phases whose phase `p` starts at `p * phase_stride`: phase `kw % stride`, from
    /// offset `kw / stride`.
    fn inner_cell_ranges(&self, phase_stride: usize) -> impl Iterator<Item = Range<usize>> + use<> {
        let (stride, windows) = (self.geom.stride_w, self.inner_cols.len());
        (0..self.geom.window_w).map(move |kw| {
            let start = (kw % stride) * phase_stride + kw / stride;
            start..start + windows
        })
    }
}

/// Vector width of the [`Lanes`] loops: one AVX2 vector of `f32` or `u32`.
const LANES: usize = 8;

/// The inner windows of a plane (inside the input on both axes) as one flat run of lanes:
/// lane `oh * row_lanes + j` is window `(inner_rows.start + oh, inner_cols.start + j)`, and a
/// row's lanes past `inner_cols.len()` are padding. The input is split by row and column
/// phase modulo the strides into `stride_h * stride_w` phase planes of `phase_rows x
/// row_lanes`, so that cell `(kh, kw)` of every inner window is one contiguous slice of them:
/// a whole plane's windows are then handled in long vector loops, however small the plane.
struct Lanes {
    /// Lanes per inner output row.
    row_lanes: usize,
    /// Rows of each phase plane.
    phase_rows: usize,
    /// Lanes of all inner windows, padding included, rounded up to whole vectors.
    total: usize,
    /// Floats of the phase planes, plus room for the last vector of a cell's slice.
    phases_len: usize,
}

impl Planes {
    /// The lane layout of this geometry.
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
        // Row `top + q * stride_h + t` goes to row `q` of the phase planes of row phase `t`.
        for q in 0..lanes.phase_rows {
            for t in 0..stride_h {
                let Some(row) = x.get((top + q * stride_h + t) * width..).and_then(|rest| rest.get(..width)) else {
                    return;
                };
                self.split_phases(row, &mut phases[t * stride_w * phase_plane + q * lanes.row_lanes..], phase_plane);
            }
        }
    }
}

/// See [`Planes::row_phases`].
struct RowPhases {
    stride: usize,
    len: usize,
    lanes: usize,
}

/// The windows along one axis that lie wholly inside the input (no padding, no ceil overhang).
fn inner_windows(input: usize, output: usize, stride: usize, pad: usize, window: usize) -> Range<usize> {
    let first = pad.div_ceil(stride).min(output);
    let end = if input + pad >= window { ((input + pad - window) / stride + 1).min(output) } else { 0 };
    first..end.max(first)
}

/// The input cells `start..end` that window `o` covers along one axis, padding removed.
#[inline]
fn clipped(o: usize, stride: usize, pad: usize, window: usize, input: usize) -> Range<usize> {
    let start = o * stride;
    let range = start.saturating_sub(pad)..(start + window - pad).min(input);
    debug_assert!(!range.is_empty(), "window {o} covers no input: the geometry checks missed it");
    range
}

/// Whether `v` replaces `best` as the running maximum: strictly larger, or the first NaN.
#[inline(always)]
fn beats(v: f32, best: f32) -> bool {
    // `!(v <= best)` is `v > best` or either is NaN; a NaN `best` is never beaten. Two vector
    // compares and an `and` (non-short-circuit, so that loops over this stay branch-free).
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let larger_or_unordered = !(v <= best);
    larger_or_unordered & !best.is_nan()
}

/// The larger of `a` and `b`, or NaN if either is NaN: the value of the [`beats`] winner.
#[inline(always)]
fn max_or_nan(a: f32, b: f32) -> f32 {
    // A NaN comes out as all-ones bits (a NaN) OR-ed over the larger, not as a select: in
    // `*acc = max_or_nan(v, *acc)` loops LLVM turns a select that may keep `*acc` into masked
    // stores, which are slow on AMD.
    let larger = if a > b { a } else { b };
    let unordered = u32::from(a.is_nan() | b.is_nan()).wrapping_neg();
    f32::from_bits(larger.to_bits() | unordered)
}

/// The plane-local index of the first maximum of `rows x cols` in row-major order.
#[inline]
fn window_argmax(plane: &[f32], width: usize, rows: Range<usize>, cols: Range<usize>) -> usize {
    let mut best_at = rows.start * width + cols.start;
    let mut best = plane[best_at];
    for r in rows {
        let row_start = r * width + cols.start;
        for (at, &v) in (row_start..).zip(&plane[row_start..row_start + cols.len()]) {
            if beats(v, best) {
                best = v;
                best_at = at;
            }
        }
    }
    best_at
}

/// Which reduction, for error messages.
fn op_name(kind: PoolKind, backward: bool) -> &'static str {
    match (kind, backward) {
        (PoolKind::Max, false) => "max_pool_forward",
        (PoolKind::Max, true) => "max_pool_backward",
        (PoolKind::Avg, false) => "avg_pool_forward",
        (PoolKind::Avg, true) => "avg_pool_backward",
    }
}
