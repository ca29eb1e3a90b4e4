//! im2col and its adjoint col2im for one group of one image.
//!
//! Column matrix layout: row `(c * kernel_h + ki) * kernel_w + kj`, column `oy * out_w + ox`,
//! holding `x[c, oy * stride_h + ki - pad_h, ox * stride_w + kj - pad_w]` (0 in the padding).

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

/// Calls `row(col_row, x_channel_index, valid_oy, ki, kj)` for every row of the column matrix.
fn for_each_row(plan: &Plan, mut row: impl FnMut(usize, usize, std::ops::Range<usize>, usize, usize)) {
    let g = &plan.geom;
    for c in 0..plan.in_per_group {
        for ki in 0..g.kernel_h {
            let oy_valid = valid_range(plan.out_h, plan.in_h, g.stride_h, ki as isize - g.pad_h as isize);
            for kj in 0..g.kernel_w {
                row((c * g.kernel_h + ki) * g.kernel_w + kj, c, oy_valid.clone(), ki, kj);
            }
        }
    }
}

/// Fills `cols` (`plan.k x plan.p`) from one group's input channels `x` (`in_per_group x h x w`).
pub(crate) fn im2col(plan: &Plan, x: &[f32], cols: &mut [f32]) {
    assert_eq!(x.len(), plan.in_per_group * plan.in_h * plan.in_w);
    assert_eq!(cols.len(), plan.k * plan.p);
    let g = &plan.geom;
    let (w, ow, sw) = (plan.in_w, plan.out_w, g.stride_w);
    for_each_row(plan, |r, c, oy_valid, ki, kj| {
        let offset_x = kj as isize - g.pad_w as isize;
        let ox_valid = valid_range(ow, w, sw, offset_x);
        let dst = &mut cols[r * plan.p..(r + 1) * plan.p];
        for (oy, out_row) in dst.chunks_exact_mut(ow).enumerate() {
            if !oy_valid.contains(&oy) || ox_valid.is_empty() {
                out_row.fill(0.0);
                continue;
            }
            let iy = oy * g.stride_h + ki - g.pad_h;
            let src = &x[(c * plan.in_h + iy) * w..][..w];
            out_row[..ox_valid.start].fill(0.0);
            out_row[ox_valid.end..].fill(0.0);
            let first = (ox_valid.start * sw) as isize + offset_x;
            let src = &src[first as usize..];
            let out = &mut out_row[ox_valid.clone()];
            if sw == 1 {
                out.copy_from_slice(&src[..out.len()]);
            } else {
                for (o, s) in out.iter_mut().zip(src.iter().step_by(sw)) {
                    *o = *s;
                }
            }
        }
    });
}

/// Adds the column matrix `cols` back into one group's input gradient `dx` (the adjoint of
/// [`im2col`]); `dx` must be zeroed (or hold what the sum should start from).
pub(crate) fn col2im(plan: &Plan, cols: &[f32], dx: &mut [f32]) {
    assert_eq!(dx.len(), plan.in_per_group * plan.in_h * plan.in_w);
    assert_eq!(cols.len(), plan.k * plan.p);
    let g = &plan.geom;
    let (w, ow, sw) = (plan.in_w, plan.out_w, g.stride_w);
    for_each_row(plan, |r, c, oy_valid, ki, kj| {
        let offset_x = kj as isize - g.pad_w as isize;
        let ox_valid = valid_range(ow, w, sw, offset_x);
        if ox_valid.is_empty() {
            return;
        }
        let src_rows = &cols[r * plan.p..(r + 1) * plan.p];
        for oy in oy_valid {
            let iy = oy * g.stride_h + ki - g.pad_h;
            let first = (ox_valid.start * sw) as isize + offset_x;
            let dst = &mut dx[(c * plan.in_h + iy) * w + first as usize..][..(ox_valid.len() - 1) * sw + 1];
            let src = &src_rows[oy * ow..][ox_valid.clone()];
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
