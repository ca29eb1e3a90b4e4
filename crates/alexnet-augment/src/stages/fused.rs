//! The fused pass: crop, flip, colour offset, normalisation and the HWC -> CHW `f32` write
//! in one sweep over the output, with an AVX2 build picked at run time.
//!
//! Per channel `c`, `out = byte * scale[c] + bias[c] - mean_image * inv_std[c]` with
//! `scale = 1 / (255 std)` and `bias = (offset - mean) / std`; pixels in the padding are
//! bytes of 0. The plain, stage-by-stage reference is [`crate::Transform::apply_reference`].

use crate::{Image, MeanImage, Window};

/// Per-view constants of the fused pass.
pub(crate) struct Affine<'a> {
    pub scale: [f32; 3],
    pub bias: [f32; 3],
    pub inv_std: [f32; 3],
    pub mean_image: Option<&'a MeanImage>,
}

/// Writes one view of `src` as CHW `f32` into `out` (`channels * height * width` values).
pub(crate) fn write_view(src: &Image, window: &Window, affine: &Affine<'_>, out: &mut [f32]) {
    assert_eq!(out.len(), src.channels * window.width * window.height, "fused: output length");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { write_view_avx2(src, window, affine, out) };
        return;
    }
    write_view_generic(src, window, affine, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn write_view_avx2(src: &Image, window: &Window, affine: &Affine<'_>, out: &mut [f32]) {
    write_view_generic(src, window, affine, out);
}

#[inline(always)]
fn write_view_generic(src: &Image, window: &Window, affine: &Affine<'_>, out: &mut [f32]) {
    match src.channels {
        3 => write_channels::<3>(src, window, affine, out),
        1 => write_channels::<1>(src, window, affine, out),
        c => unreachable!("images have 1 or 3 channels, not {c}"),
    }
}

#[inline(always)]
fn write_channels<const C: usize>(src: &Image, window: &Window, affine: &Affine<'_>, out: &mut [f32]) {
    let (w, h) = (window.width, window.height);
    let plane = w * h;
    let (scale, bias, inv_std) = (affine.scale, affine.bias, affine.inv_std);
    for y in 0..h {
        let sy = window.top + y as isize;
        // The output columns whose source column lies inside the image.
        let (lo, hi) = if (0..src.height as isize).contains(&sy) {
            let first = (-window.left).clamp(0, w as isize) as usize;
            let last = (src.width as isize - window.left).clamp(0, w as isize) as usize;
            (first, last.max(first))
        } else {
            (0, 0)
        };
        // In output order the valid span is [lo, hi); mirrored, it lands at [w - hi, w - lo).
        let (out_lo, out_hi) = if window.flip { (w - hi, w - lo) } else { (lo, hi) };
        for c in 0..C {
            let row = &mut out[c * plane + y * w..][..w];
            row[..out_lo].fill(bias[c]);
            row[out_hi..].fill(bias[c]);
        }
        if lo == hi {
            continue;
        }
        let sx0 = (window.left + lo as isize) as usize;
        let src_row = &src.data[(sy as usize * src.width + sx0) * C..][..(hi - lo) * C];
        let [r0, r1, r2] = split_rows::<C>(out, plane, y * w + out_lo, hi - lo);
        let span: &mut [&mut [f32]] = &mut [r0, r1, r2][..C];
        match (affine.mean_image, window.flip) {
            (None, false) => affine_span::<C, false>(src_row, span, scale, bias),
            (None, true) => affine_span::<C, true>(src_row, span, scale, bias),
            (Some(m), flip) => affine_span_mean::<C>(
                src_row,
                &m.data[(sy as usize * m.width + sx0) * C..][..(hi - lo) * C],
                span,
                flip,
                scale,
                bias,
                inv_std,
            ),
        }
    }
}

/// Disjoint `len`-long slices of the first three channel planes starting at `offset`
/// (empty slices for channels beyond `C`).
fn split_rows<const C: usize>(out: &mut [f32], plane: usize, offset: usize, len: usize) -> [&mut [f32]; 3] {
    if C == 1 {
        return [&mut out[offset..][..len], &mut [], &mut []];
    }
    let (p0, rest) = out.split_at_mut(plane);
    let (p1, p2) = rest.split_at_mut(plane);
    [&mut p0[offset..][..len], &mut p1[offset..][..len], &mut p2[offset..][..len]]
}

#[inline(always)]
fn affine_span<const C: usize, const FLIP: bool>(src: &[u8], dst: &mut [&mut [f32]], scale: [f32; 3], bias: [f32; 3]) {
    // Iterators rather than indices: no bounds checks, so the loops vectorise.
    let pixels = src.chunks_exact(C);
    if C == 1 {
        let row = &mut *dst[0];
        let (s, b) = (scale[0], bias[0]);
        if FLIP {
            row.iter_mut().zip(src.iter().rev()).for_each(|(o, &v)| *o = f32::from(v) * s + b);
        } else {
            row.iter_mut().zip(src).for_each(|(o, &v)| *o = f32::from(v) * s + b);
        }
        return;
    }
    let [r0, r1, r2] = dst else { unreachable!("three channel rows") };
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { rgb_span_avx2::<FLIP>(src, r0, r1, r2, scale, bias) };
        return;
    }
    let outs = r0.iter_mut().zip(r1.iter_mut()).zip(r2.iter_mut());
    let write = |((o0, o1), o2): ((&mut f32, &mut f32), &mut f32), px: &[u8]| {
        *o0 = f32::from(px[0]) * scale[0] + bias[0];
        *o1 = f32::from(px[1]) * scale[1] + bias[1];
        *o2 = f32::from(px[2]) * scale[2] + bias[2];
    };
    if FLIP {
        outs.zip(pixels.rev()).for_each(|(o, px)| write(o, px));
    } else {
        outs.zip(pixels).for_each(|(o, px)| write(o, px));
    }
}

#[inline(always)]
fn affine_span_mean<const C: usize>(
    src: &[u8],
    mean: &[f32],
    dst: &mut [&mut [f32]],
    flip: bool,
    scale: [f32; 3],
    bias: [f32; 3],
    inv_std: [f32; 3],
) {
    let n = src.len() / C;
    for c in 0..C {
        let row = &mut dst[c][..n];
        for (x, o) in row.iter_mut().enumerate() {
            let sx = if flip { n - 1 - x } else { x };
            *o = f32::from(src[sx * C + c]) * scale[c] + bias[c] - mean[sx * C + c] * inv_std[c];
        }
    }
}

/// The RGB span with AVX2: 8 pixels per step, de-interleaved by byte shuffles straight into
/// 32-bit lanes, converted, scaled and stored to the three planes. Multiply then add, as
/// the scalar code does, so both give identical bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rgb_span_avx2<const FLIP: bool>(
    src: &[u8],
    r0: &mut [f32],
    r1: &mut [f32],
    r2: &mut [f32],
    scale: [f32; 3],
    bias: [f32; 3],
) {
    use std::arch::x86_64::*;
    let n = r0.len();
    assert!(src.len() == 3 * n && r1.len() == n && r2.len() == n, "rgb span lengths");
    // Byte indices of channel 0 for four pixels in a 12-byte group, in output order; -128
    // zeroes the three upper bytes of each 32-bit lane.
    let order: [i8; 4] = if FLIP { [9, 6, 3, 0] } else { [0, 3, 6, 9] };
    let mask = |c: i8| {
        let mut m = [-128i8; 32];
        for (i, &o) in order.iter().enumerate() {
            m[4 * i] = o + c;
            m[16 + 4 * i] = o + c;
        }
        // SAFETY: `m` is 32 readable bytes.
        unsafe { _mm256_loadu_si256(m.as_ptr().cast()) }
    };
    let masks = [mask(0), mask(1), mask(2)];
    let scales = scale.map(|v| _mm256_set1_ps(v));
    let biases = bias.map(|v| _mm256_set1_ps(v));
    // Twelve bytes (four pixels) at `at` into the low 12 bytes of a register, no over-read.
    let load12 = |at: usize| {
        let b = &src[at..at + 12];
        let lo = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let hi = u32::from_le_bytes(b[8..].try_into().expect("4 bytes"));
        _mm_set_epi64x(i64::from(hi), lo as i64)
    };
    let mut x = 0;
    while x + 8 <= n {
        // Output x..x+8 reads pixels first..first+8, in reverse when mirrored.
        let first = if FLIP { n - 8 - x } else { x };
        let (a, b) = (load12(3 * first), load12(3 * first + 12));
        let v = if FLIP { _mm256_set_m128i(a, b) } else { _mm256_set_m128i(b, a) };
        for (c, row) in [&mut *r0, &mut *r1, &mut *r2].into_iter().enumerate() {
            let f = _mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, masks[c]));
            let out = _mm256_add_ps(_mm256_mul_ps(f, scales[c]), biases[c]);
            let dst = &mut row[x..x + 8];
            // SAFETY: `dst` is 8 writable f32.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), out) };
        }
        x += 8;
    }
    for x in x..n {
        let p = if FLIP { n - 1 - x } else { x };
        r0[x] = f32::from(src[3 * p]) * scale[0] + bias[0];
        r1[x] = f32::from(src[3 * p + 1]) * scale[1] + bias[1];
        r2[x] = f32::from(src[3 * p + 2]) * scale[2] + bias[2];
    }
}
