//! im2col and its adjoint col2im for one group of one image.
//!
//! Column matrix layout: row `(c * kernel_h + ki) * kernel_w + kj`, column `oy * out_w + ox`,
//! holding `x[c, oy * stride_h + ki - pad_h, ox * stride_w + kj - pad_w]` (0 in the padding).
//! Both work channel by channel, so channels can go to different threads.

use rayon::prelude::*;

use super::Plan;

/// Output indices `o` in `0..out_len` whose input index `o * stride + offset` lies in
/// `0..in_len`; they form one contiguous range.
fn valid_range(out_len: usize, in_len: usize, stride: usize, offset: isize) -> std::ops::Range<usize> {
    let (stride_i, in_i) = (stride as isize, in_len as isize);
    let lo = if offset >= 0 { 0 } else { (-offset + stride_i - 1) / stride_i };
    let hi = if in_i - offset <= 0 { 0 } else { (in_i - offset + stride_i - 1) / stride_i };
    let hi = (hi as usize).min(out_len);
    (lo as usize).min(hi)..hi
}

/// Runs `f(index, chunk)` over the `chunk`-element chunks of `data`, on up to `threads`
/// threads of the rayon pool.
fn for_each_chunk(threads: usize, data: &mut [f32], chunk: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    if threads > 1 {
        data.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// The taps `(ki, kj)` of one channel with the rows `oy` and columns `ox` of the output whose
/// input pixel is inside the image; `first_x` is the input column of output column
/// `ox_valid.start`.
struct Tap {
    ki: usize,
    oy_valid: std::ops::Range<usize>,
    ox_valid: std::ops::Range<usize>,
    first_x: usize,
}

fn taps(plan: &Plan) -> impl Iterator<Item = Tap> + '_ {
    let g = &plan.geom;
    (0..g.kernel_h * g.kernel_w).map(move |r| {
        let (ki, kj) = (r / g.kernel_w, r % g.kernel_w);
        let offset_x = kj as isize - g.pad_w as isize;
        let ox_valid = valid_range(plan.out_w, plan.in_w, g.stride_w, offset_x);
        Tap {
            ki,
            oy_valid: valid_range(plan.out_h, plan.in_h, g.stride_h, ki as isize - g.pad_h as isize),
            first_x: ((ox_valid.start * g.stride_w) as isize + offset_x).max(0) as usize,
            ox_valid,
        }
    })
}

/// Fills `cols` from one group's input channels `x` (`in_per_group x h x w`), channels split
/// over up to `threads` threads: a `plan.k x plan.p` matrix whose rows lie `row_stride` apart
/// (row `r` is `cols[r * row_stride..][..plan.p]`), so that several images' columns can sit
/// side by side in one matrix, each image's block starting `plan.p` further into `cols`.
pub(crate) fn im2col(plan: &Plan, x: &[f32], cols: &mut [f32], row_stride: usize, threads: usize) {
    let plane = plan.in_h * plan.in_w;
    assert_eq!(x.len(), plan.in_per_group * plane);
    assert!(row_stride >= plan.p && cols.len() >= (plan.k - 1) * row_stride + plan.p, "cols too short");
    let g = &plan.geom;
    let (w, ow, sw) = (plan.in_w, plan.out_w, g.stride_w);
    let cols = &mut cols[..(plan.k - 1) * row_stride + plan.p];
    for_each_chunk(threads, cols, g.kernel_h * g.kernel_w * row_stride, |c, rows| {
        let x_plane = &x[c * plane..][..plane];
        for (tap, row) in taps(plan).zip(rows.chunks_mut(row_stride)) {
            for (oy, out_row) in row[..plan.p].chunks_exact_mut(ow).enumerate() {
                if !tap.oy_valid.contains(&oy) || tap.ox_valid.is_empty() {
                    out_row.fill(0.0);
                    continue;
                }
                let iy = oy * g.stride_h + tap.ki - g.pad_h;
                out_row[..tap.ox_valid.start].fill(0.0);
                out_row[tap.ox_valid.end..].fill(0.0);
                let src = &x_plane[iy * w + tap.first_x..(iy + 1) * w];
                let out = &mut out_row[tap.ox_valid.clone()];
                if sw == 1 {
                    out.copy_from_slice(&src[..out.len()]);
                } else {
                    for (o, s) in out.iter_mut().zip(src.iter().step_by(sw)) {
                        *o = *s;
                    }
                }
            }
        }
    });
}

/// Writes into one group's input gradient `dx` the column matrix `cols` summed back onto the
/// pixels it was gathered from (the adjoint of [`im2col`], rows `row_stride` apart as there);
/// `dx` is overwritten. Channels are split over up to `threads` threads.
pub(crate) fn col2im(plan: &Plan, cols: &[f32], row_stride: usize, dx: &mut [f32], threads: usize) {
    let plane = plan.in_h * plan.in_w;
    assert_eq!(dx.len(), plan.in_per_group * plane);
    assert!(row_stride >= plan.p && cols.len() >= (plan.k - 1) * row_stride + plan.p, "cols too short");
    let g = &plan.geom;
    let (w, ow, sw) = (plan.in_w, plan.out_w, g.stride_w);
    let channel_rows = g.kernel_h * g.kernel_w * row_stride;
    for_each_chunk(threads, dx, plane, |c, dx_plane| {
        dx_plane.fill(0.0);
        let rows = &cols[c * channel_rows..];
        for (tap, row) in taps(plan).zip(rows.chunks(row_stride)) {
            if tap.ox_valid.is_empty() {
                continue;
            }
            for oy in tap.oy_valid.clone() {
                let iy = oy * g.stride_h + tap.ki - g.pad_h;
                let dst = &mut dx_plane[iy * w + tap.first_x..][..(tap.ox_valid.len() - 1) * sw + 1];
                let src = &row[oy * ow..][tap.ox_valid.clone()];
                if sw == 1 {
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d += *s;
                    }
                } else {
                    for (d, s) in dst.iter_mut().step_by(sw).zip(src) {
                        *d += *s;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    #[test]
    fn valid_range_by_hand() {
        // in 5, stride 1, offset -2 (pad 2): o in 2..7 valid, clipped to out 5 -> 2..5.
        assert_eq!(valid_range(5, 5, 1, -2), 2..5);
        // offset +2 (kernel col 4, pad 2), in 5: o + 2 < 5 -> 0..3.
        assert_eq!(valid_range(5, 5, 1, 2), 0..3);
        // stride 4, offset -3: o*4 - 3 >= 0 -> o >= 1; o*4 - 3 < 10 -> o < 3.25 -> 1..4, out 3 -> 1..3.
        assert_eq!(valid_range(3, 10, 4, -3), 1..3);
        // nothing valid.
        assert_eq!(valid_range(4, 2, 1, 5), 0..0);
        assert_eq!(valid_range(2, 3, 3, -7), 2..2);
    }
}
