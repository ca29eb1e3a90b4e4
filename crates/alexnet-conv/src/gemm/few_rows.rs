//! Products with a few rows whose `op(B)` columns are contiguous: a dense layer at batch 1
//! to 4, `y = x W^T` with `W` stored `[outputs, inputs]`. Such a product is bound by reading
//! `B` (fc6 of AlexNet: 151 MB), so each column of `B` is read once for all rows of `A`,
//! straight from where it is stored (no packing), and the columns are split across threads
//! so that the whole memory bandwidth streams them.

use rayon::prelude::*;

use super::Strides;

/// The most rows of `A` this path takes; above it the GEMM library's blocking pays.
const MAX_ROWS: usize = 4;

/// Below this many elements of `B` the product runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 16;

/// Whether [`sgemm`] takes this product: few rows, rows of `A` and columns of `op(B)`
/// contiguous.
pub(super) fn applies(m: usize, a_strides: Strides, b_strides: Strides) -> bool {
    m <= MAX_ROWS && a_strides.col == 1 && b_strides.row == 1
}

/// `C = alpha * A * op(B) + beta * C` for a product that [`applies`]; bounds were checked
/// by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    a_strides: Strides,
    b: &[f32],
    b_strides: Strides,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
    threads: usize,
) {
    let rows: Vec<&[f32]> = (0..m).map(|i| &a[i * a_strides.row..][..k]).collect();
    // Output columns per task: several tasks per thread, at least a few columns each.
    let parallel = threads > 1 && n * k >= PARALLEL_MIN;
    let block = if parallel { n.div_ceil(8 * threads).max(4) } else { n };
    // Block `t` of every row of C, gathered so that each task owns its parts.
    let mut blocks: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(block)).map(|_| Vec::with_capacity(m)).collect();
    for row in c.chunks_mut(ldc).take(m) {
        for (t, part) in row[..n].chunks_mut(block).enumerate() {
            blocks[t].push(part);
        }
    }
    let run = |(t, mut parts): (usize, Vec<&mut [f32]>)| {
        // Column by column, every row of A against it while it is in cache.
        for jj in 0..parts[0].len() {
            let column = &b[(t * block + jj) * b_strides.col..][..k];
            for (row, part) in rows.iter().zip(&mut parts) {
                let value = alpha * dot(row, column);
                let out = &mut part[jj];
                *out = if beta == 0.0 { value } else { value + beta * *out };
            }
        }
    };
    if parallel {
        blocks.into_par_iter().enumerate().for_each(run);
    } else {
        blocks.into_iter().enumerate().for_each(run);
    }
}

/// `sum x[i] * y[i]` in sixteen independent lanes, which compile to vector code.
fn dot(x: &[f32], y: &[f32]) -> f32 {
    const LANES: usize = 16;
    let (xs, x_tail) = x.as_chunks::<LANES>();
    let (ys, y_tail) = y.as_chunks::<LANES>();
    let mut acc = [0.0f32; LANES];
    for (xv, yv) in xs.iter().zip(ys) {
        for l in 0..LANES {
            acc[l] += xv[l] * yv[l];
        }
    }
    let tail: f32 = x_tail.iter().zip(y_tail).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}
