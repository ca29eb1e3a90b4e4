//! Max and average pooling over each channel plane, forward and backward.
//!
//! Window rules, shared by forward and backward:
//! - The output size is [`PoolGeom::output_shape`]'s (floor, ceil or exact rounding).
//! - Padding is never read: a window covers only the cells of the input it overlaps. A ceil-mode
//!   window that hangs over the right or bottom edge is clipped the same way. `alex-core`'s
//!   geometry guarantees every window overlaps at least one input cell.
//! - Max: the output is the largest cell; NaN wins (a window holding a NaN outputs NaN). The
//!   backward routes each output gradient to the **first** maximum in row-major window order
//!   (top row first, left to right), i.e. to the first NaN if there is one, so ties are
//!   deterministic; overlapping windows accumulate into the same input cell.
//! - Average: the sum over the overlapped input cells divided by their number (padding
//!   excluded), as PyTorch's `count_include_pad=False`; the backward spreads each gradient
//!   evenly over the same cells.

mod backward;
mod forward;
#[cfg(test)]
mod tests;

use std::ops::Range;

use alex_core::{PoolGeom, PoolKind, Shape4};

pub use backward::pool_backward;
pub use forward::pool_forward;

use crate::error::Result;
use crate::{check_buffer, checked_numel};

/// The per-plane geometry of one pooling call, validated against its input.
#[derive(Debug, Clone, Copy)]
struct Planes {
    geom: PoolGeom,
    input: Shape4,
    output: Shape4,
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
        for &(name, len) in input_sized {
            check_buffer(op, name, in_len, len)?;
        }
        for &(name, len) in output_sized {
            check_buffer(op, name, out_len, len)?;
        }
        Ok(Self { geom: *geom, input, output })
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
    v > best || (v.is_nan() && !best.is_nan())
}

/// The plane-local index of the first maximum of `rows x cols` in row-major order.
#[inline]
fn window_argmax(plane: &[f32], width: usize, rows: Range<usize>, cols: Range<usize>) -> usize {
    let mut best_at = rows.start * width + cols.start;
    let mut best = plane[best_at];
    for r in rows {
        let row_start = r * width;
        for (i, &v) in plane[row_start + cols.start..row_start + cols.end].iter().enumerate() {
            if beats(v, best) {
                best = v;
                best_at = row_start + cols.start + i;
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
