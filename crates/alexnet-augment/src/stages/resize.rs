//! The paper's preprocessing: rescale so the shorter side is `size`, keep the central
//! `size` x `size` square; or compute only a rectangle of that square (the crop window).
//!
//! The resampling is separable bilinear convolution on 8-bit pixels with exactly the
//! arithmetic of `fast_image_resize`'s `ResizeAlg::Convolution(FilterType::Bilinear)`
//! (the same weights, widened for downscaling; the same fixed-point precision and
//! rounding; the vertical pass first, rounded to bytes, then the horizontal pass), so the
//! output is bit-identical to that library's (tested against it). Doing it here lets a
//! rectangle be computed with the weights of the whole image: `fast_image_resize` picks its
//! fixed-point precision from the largest weight of whatever it computes, so its own
//! cropped output can round differently from its whole output. The kernels are AVX2
//! (picked at run time) for RGB: a byte-shuffle + multiply-add horizontal pass for two-tap
//! filters (upscaling; `fast_image_resize`'s RGB horizontal pass stores pixels byte by
//! byte and took ~60% of its time on 224 -> 256), a gather one for wider filters, and a
//! 16-bit multiply-add vertical pass for two taps; scalar code otherwise.

use crate::Image;

/// Resize-shorter-side-then-centre-crop, done in one step: the source's central square is
/// mapped straight onto a `size` x `size` output, so no pixel outside the kept square is
/// ever computed. This is the continuous form of "resize so the shorter side is `size`,
/// then crop the centre": it does not round an intermediate size, so the kept region is
/// exactly the central square of the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeCentreCrop {
    /// Output side length (the paper: 256).
    pub size: usize,
}

/// A rectangle of the (virtual) `size` x `size` resized image, in its pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// First column.
    pub left: usize,
    /// First row.
    pub top: usize,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
}

/// Reusable buffers of the resize (one per worker): the vertically resampled rows, their
/// accumulators and the last image size's filters.
#[derive(Debug, Clone, Default)]
pub struct ResizeBuffers {
    rows: Vec<u8>,
    sums: Vec<i32>,
    // The last axes' filters: all images of one size share them.
    col_axis: Option<Axis>,
    row_axis: Option<Axis>,
}

impl Default for ResizeCentreCrop {
    fn default() -> Self {
        ResizeCentreCrop { size: 256 }
    }
}

impl ResizeCentreCrop {
    /// Resizes `image` (the whole `size` x `size` square).
    pub fn apply(&self, image: &Image, buffers: &mut ResizeBuffers) -> Result<Image, String> {
        let mut out = Image::empty(image.channels);
        let whole = Region { left: 0, top: 0, width: self.size, height: self.size };
        self.apply_region(image, whole, buffers, &mut out)?;
        Ok(out)
    }

    /// Computes only `region` of the resized image into `out` (reusing its buffer). Every
    /// output pixel gets the weights and rounding it has in the whole image (filter taps
    /// past the region's edge read the real neighbouring pixels), so the result equals
    /// the whole resized image cropped to `region`, bit for bit.
    pub fn apply_region(
        &self,
        image: &Image,
        region: Region,
        buffers: &mut ResizeBuffers,
        out: &mut Image,
    ) -> Result<(), String> {
        let c = image.channels;
        // Only a growing buffer is written here; the passes overwrite every byte.
        out.data.resize(region.width * region.height * c, 0);
        (out.width, out.height, out.channels) = (region.width, region.height, c);
        self.resample(image, region, buffers, Sink::Bytes(&mut out.data)).map(drop)
    }

    /// `region` of the resized RGB image written straight as normalised CHW `f32` (`out`
    /// holds `3 * width * height` values): channel `c` of each pixel becomes
    /// `byte * scale[c] + bias[c]`, mirrored left-right with `flip`. The same values, bit
    /// for bit, as [`ResizeCentreCrop::apply_region`] followed by the fused pass, without
    /// writing and re-reading the bytes. Returns `Ok(false)` (and writes nothing) where
    /// this path has no kernel: not RGB, no AVX2, or a filter wider than two taps
    /// (downscaling), or fewer than 8 columns. An error for a region outside the image or
    /// an `out` of the wrong length.
    pub fn apply_region_chw(
        &self,
        image: &Image,
        region: Region,
        buffers: &mut ResizeBuffers,
        affine: ChwAffine,
        out: &mut [f32],
    ) -> Result<bool, String> {
        if out.len() != 3 * region.width * region.height {
            return Err(format!(
                "a {}x{} RGB region needs {} output values, got {}",
                region.width,
                region.height,
                3 * region.width * region.height,
                out.len()
            ));
        }
        self.resample(image, region, buffers, Sink::Chw(affine, out))
    }

    fn resample(
        &self,
        image: &Image,
        region: Region,
        buffers: &mut ResizeBuffers,
        sink: Sink<'_>,
    ) -> Result<bool, String> {
        if region.left + region.width > self.size || region.top + region.height > self.size {
            return Err(format!(
                "region {}x{} at ({}, {}) lies outside the {size}x{size} resized image",
                region.width,
                region.height,
                region.left,
                region.top,
                size = self.size
            ));
        }
        let side = image.width.min(image.height);
        if side == 0 {
            return Err(format!("cannot resize a {}x{} image", image.width, image.height));
        }
        if region.width == 0 || region.height == 0 {
            return Ok(true);
        }
        let c = image.channels;
        let left = (image.width - side) as f64 / 2.0;
        let top = (image.height - side) as f64 / 2.0;
        let col_axis = Axis::cached(&mut buffers.col_axis, image.width, left, side as f64, self.size);
        let cols = Weights::new(col_axis, image.width, region.left, region.width);
        // Source columns the horizontal pass reads, and every tap's byte offset among them.
        let first = cols.index[0];
        let end = (0..region.width).map(|x| cols.index[x] + cols.sizes[x]).max().unwrap_or(first).max(first + 1);
        let row_len = (end - first) * c;
        let offsets: Vec<i32> = cols.index.iter().map(|&i| ((i.min(end - 1) - first) * c) as i32).collect();
        #[cfg(target_arch = "x86_64")]
        let blocks =
            if c == 3 && std::arch::is_x86_feature_detected!("avx2") { PairBlocks::new(&cols, &offsets) } else { None };
        #[cfg(not(target_arch = "x86_64"))]
        let blocks: Option<PairBlocks> = None;
        if matches!(sink, Sink::Chw(..)) && blocks.is_none() {
            return Ok(false);
        }
        let row_axis = Axis::cached(&mut buffers.row_axis, image.height, top, side as f64, self.size);
        let rows = Weights::new(row_axis, image.height, region.top, region.height);
        // Spare bytes: the kernels read 4 (gather) or 16 (pairs) bytes from a tap's offset.
        buffers.rows.resize(region.height * row_len + 16, 0);
        buffers.sums.resize(row_len, 0);
        for y in 0..region.height {
            let dst = &mut buffers.rows[y * row_len..][..row_len];
            vertical_row(image, &rows, y, first * c, dst, &mut buffers.sums);
        }
        let rows = &buffers.rows;
        match sink {
            Sink::Bytes(out) => horizontal(rows, row_len, c, &cols, &offsets, blocks.as_ref(), out),
            #[cfg(target_arch = "x86_64")]
            Sink::Chw(affine, out) => {
                let blocks = blocks.as_ref().expect("checked above");
                let plane = region.width * region.height;
                let (p0, rest) = out.split_at_mut(plane);
                let (p1, p2) = rest.split_at_mut(plane);
                let w = region.width;
                for y in 0..region.height {
                    // The output is usually a batch far larger than the caches: ask for the
                    // next rows' lines with intent to write while this row is computed.
                    if y + 2 < region.height {
                        for p in [&*p0, &*p1, &*p2] {
                            for line in p[(y + 2) * w..][..w].chunks(16) {
                                // SAFETY: a prefetch of a valid address; SSE is part of x86-64.
                                unsafe {
                                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(
                                        line.as_ptr().cast(),
                                    )
                                };
                            }
                        }
                    }
                    let planes = [&mut p0[y * w..][..w], &mut p1[y * w..][..w], &mut p2[y * w..][..w]];
                    // SAFETY: `blocks` exists only when the CPU supports AVX2.
                    unsafe {
                        horizontal_rgb_pairs_chw_avx2(&rows[y * row_len..], blocks, cols.precision, affine, planes)
                    };
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            Sink::Chw(..) => unreachable!("no CHW kernel off x86-64; refused above"),
        }
        Ok(true)
    }
}

/// The per-channel affine map of [`ResizeCentreCrop::apply_region_chw`]:
/// `byte * scale[c] + bias[c]` (multiply, then add, in `f32`), mirrored left-right when
/// `flip`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChwAffine {
    /// Per-channel factor.
    pub scale: [f32; 3],
    /// Per-channel offset.
    pub bias: [f32; 3],
    /// Mirror each row left-right.
    pub flip: bool,
}

/// Where the horizontal pass writes: interleaved bytes, or normalised CHW floats.
enum Sink<'a> {
    Bytes(&'a mut [u8]),
    Chw(ChwAffine, &'a mut [f32]),
}

/// The fixed-point filter of every output of one axis: a resize of the source span
/// `[in0, in0 + in_len)` (of `in_size` pixels) onto `out_size` pixels. Output `j` reads
/// `spans[j].1` taps from source pixel `spans[j].0` with weights `fixed[j * window..]`.
/// The precision is chosen from the largest weight of the whole axis.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    key: (usize, u64, u64, usize),
    window: usize,
    spans: Vec<(usize, usize)>,
    fixed: Vec<i32>,
    precision: u32,
}

impl Axis {
    /// `fast_image_resize`'s `precompute_coefficients` (bilinear, adaptive kernel size)
    /// and `Normalizer16`, step for step.
    fn new(in_size: usize, in0: f64, in_len: f64, out_size: usize) -> Axis {
        let scale = in_len / out_size as f64;
        let filter_scale = scale.max(1.0);
        let radius = filter_scale; // the bilinear filter's support is 1
        let window = radius.ceil() as usize * 2 + 1;
        let recip = 1.0 / filter_scale;
        let mut values: Vec<f64> = Vec::with_capacity(window * out_size);
        let mut spans = Vec::with_capacity(out_size);
        for out_x in 0..out_size {
            let in_center = in0 + (out_x as f64 + 0.5) * scale;
            let x_min = (in_center - radius).floor().max(0.0) as usize;
            let x_max = (in_center + radius).ceil().min(in_size as f64) as usize;
            let center = in_center - 0.5;
            let cur = values.len();
            let (mut start, mut end) = (x_min, x_max);
            let mut total = 0.0;
            for x in x_min..x_max {
                let w = (1.0 - ((x as f64 - center) * recip).abs()).max(0.0);
                if x == start && w == 0.0 {
                    start += 1;
                } else {
                    values.push(w);
                    total += w;
                }
            }
            // Trailing zero weights shorten the tap span (over the whole list, as there).
            for &v in values.iter().rev() {
                if end <= start || v != 0.0 {
                    break;
                }
                end -= 1;
            }
            if total != 0.0 {
                values[cur..].iter_mut().for_each(|w| *w /= total);
            }
            values.resize(cur + window, 0.0);
            spans.push((start, end.saturating_sub(start)));
        }
        let max_weight = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        // The largest precision below 22 bits whose doubled max weight still fits 15 bits.
        let mut precision = 0;
        for p in 0..22 {
            precision = p;
            if (max_weight * f64::from(1u32 << (p + 1))).round() as i32 >= 1 << 15 {
                break;
            }
        }
        let unit = f64::from(1u32 << precision);
        let fixed = values.iter().map(|&v| i32::from((v * unit).round() as i16)).collect();
        Axis { key: Self::key(in_size, in0, in_len, out_size), window, spans, fixed, precision }
    }

    fn key(in_size: usize, in0: f64, in_len: f64, out_size: usize) -> (usize, u64, u64, usize) {
        (in_size, in0.to_bits(), in_len.to_bits(), out_size)
    }

    /// The cached axis if it has these parameters, else a new one put in the cache.
    fn cached(cache: &mut Option<Axis>, in_size: usize, in0: f64, in_len: f64, out_size: usize) -> &Axis {
        let key = Self::key(in_size, in0, in_len, out_size);
        if cache.as_ref().is_none_or(|axis| axis.key != key) {
            *cache = Some(Axis::new(in_size, in0, in_len, out_size));
        }
        cache.as_ref().expect("just filled")
    }
}

/// The filter of `count` consecutive outputs of an [`Axis`] from output `first` on, tap
/// major: tap `k` of output `j` is source pixel `index[k * count + j]` with weight
/// `weights[k * count + j]`; taps past `sizes[j]` have weight 0 and an index clamped into
/// the image.
struct Weights {
    count: usize,
    taps: usize,
    index: Vec<usize>,
    sizes: Vec<usize>,
    weights: Vec<i32>,
    precision: u32,
}

impl Weights {
    fn new(axis: &Axis, in_size: usize, first: usize, count: usize) -> Weights {
        let spans = &axis.spans[first..first + count];
        let taps = spans.iter().map(|s| s.1).max().unwrap_or(0).max(1);
        let mut w = Weights {
            count,
            taps,
            index: vec![0; taps * count],
            sizes: spans.iter().map(|s| s.1).collect(),
            weights: vec![0; taps * count],
            precision: axis.precision,
        };
        for (j, &(start, size)) in spans.iter().enumerate() {
            for k in 0..taps {
                w.index[k * count + j] = (start + k).min(in_size - 1);
                if k < size {
                    w.weights[k * count + j] = axis.fixed[(first + j) * axis.window + k];
                }
            }
        }
        w
    }

    fn round(&self, sum: i32) -> u8 {
        (sum >> self.precision).clamp(0, 255) as u8
    }
}

/// The vertical pass: output row `y`, source columns from byte `from` on, `dst.len()`
/// bytes; vectorised for AVX2 when the CPU has it.
fn vertical_row(image: &Image, rows: &Weights, y: usize, from: usize, dst: &mut [u8], sums: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        unsafe { vertical_row_avx2(image, rows, y, from, dst, sums) };
        return;
    }
    vertical_row_generic(image, rows, y, from, dst, sums);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn vertical_row_avx2(image: &Image, rows: &Weights, y: usize, from: usize, dst: &mut [u8], sums: &mut [i32]) {
    use std::arch::x86_64::*;
    if rows.sizes[y] != 2 {
        vertical_row_generic(image, rows, y, from, dst, sums);
        return;
    }
    // Two taps (upscaling), 32 bytes per step: the two rows' bytes interleaved and widened
    // to 16-bit (a, b) pairs, one multiply-add with (w0, w1) per 8 pairs, then the
    // saturating packs, which clamp to 0..=255 as the scalar code does.
    let stride = image.width * image.channels;
    let row = |k: usize| &image.data[rows.index[k * rows.count + y] * stride + from..][..dst.len()];
    let (a, b) = (row(0), row(1));
    let (w0, w1) = (rows.weights[y], rows.weights[rows.count + y]);
    let pair = (w0 & 0xFFFF) | (w1 << 16);
    let weights = _mm256_set1_epi32(pair);
    let half = _mm256_set1_epi32(1 << (rows.precision - 1));
    let shift = _mm_cvtsi32_si128(rows.precision as i32);
    let zero = _mm256_setzero_si256();
    let n = dst.len();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `a`, `b` and `dst` hold `n >= i + 32` bytes.
        unsafe {
            let va = _mm256_loadu_si256(a.as_ptr().add(i).cast());
            let vb = _mm256_loadu_si256(b.as_ptr().add(i).cast());
            let (lo, hi) = (_mm256_unpacklo_epi8(va, vb), _mm256_unpackhi_epi8(va, vb));
            let sum =
                |pairs: __m256i| _mm256_sra_epi32(_mm256_add_epi32(half, _mm256_madd_epi16(pairs, weights)), shift);
            let s0 = sum(_mm256_unpacklo_epi8(lo, zero));
            let s1 = sum(_mm256_unpackhi_epi8(lo, zero));
            let s2 = sum(_mm256_unpacklo_epi8(hi, zero));
            let s3 = sum(_mm256_unpackhi_epi8(hi, zero));
            let bytes = _mm256_packus_epi16(_mm256_packs_epi32(s0, s1), _mm256_packs_epi32(s2, s3));
            _mm256_storeu_si256(dst.as_mut_ptr().add(i).cast(), bytes);
        }
        i += 32;
    }
    let precision = rows.precision;
    for ((d, &a), &b) in dst[i..].iter_mut().zip(&a[i..]).zip(&b[i..]) {
        *d = (((1 << (precision - 1)) + w0 * i32::from(a) + w1 * i32::from(b)) >> precision).clamp(0, 255) as u8;
    }
}

#[inline(always)]
fn vertical_row_generic(image: &Image, rows: &Weights, y: usize, from: usize, dst: &mut [u8], sums: &mut [i32]) {
    let stride = image.width * image.channels;
    let precision = rows.precision;
    let half = 1 << (precision - 1);
    let source_row = |k: usize| &image.data[rows.index[k * rows.count + y] * stride + from..][..dst.len()];
    if rows.sizes[y] == 2 {
        // The upscaling case, without the accumulator row's memory traffic.
        let (w0, w1) = (rows.weights[y], rows.weights[rows.count + y]);
        let pairs = source_row(0).iter().zip(source_row(1));
        for (d, (&a, &b)) in dst.iter_mut().zip(pairs) {
            *d = ((half + w0 * i32::from(a) + w1 * i32::from(b)) >> precision).clamp(0, 255) as u8;
        }
        return;
    }
    let sums = &mut sums[..dst.len()];
    sums.fill(half);
    for k in 0..rows.sizes[y] {
        let weight = rows.weights[k * rows.count + y];
        sums.iter_mut().zip(source_row(k)).for_each(|(s, &v)| *s += weight * i32::from(v));
    }
    dst.iter_mut().zip(sums.iter()).for_each(|(d, &s)| *d = (s >> precision).clamp(0, 255) as u8);
}

/// The horizontal pass from `rows` (`row_len` bytes per row) into interleaved bytes.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn horizontal(
    rows: &[u8],
    row_len: usize,
    c: usize,
    cols: &Weights,
    offsets: &[i32],
    blocks: Option<&PairBlocks>,
    out: &mut [u8],
) {
    #[cfg(target_arch = "x86_64")]
    if c == 3 && std::arch::is_x86_feature_detected!("avx2") {
        for (y, dst) in out.chunks_exact_mut(cols.count * 3).enumerate() {
            let row = &rows[y * row_len..];
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe {
                match blocks {
                    Some(blocks) => horizontal_rgb_pairs_avx2(row, blocks, cols, offsets, dst),
                    None => horizontal_rgb_gather_avx2(row, cols, offsets, dst),
                }
            }
        }
        return;
    }
    for (y, dst) in out.chunks_exact_mut(cols.count * c).enumerate() {
        horizontal_scalar_tail(&rows[y * row_len..][..row_len], cols, offsets, c, 0, dst);
    }
}

/// The RGB horizontal pass for outputs with at most two taps that lie close together (any
/// upscale): per 8-output block, the byte offsets where its two 4-output halves start
/// reading (16 bytes each), per channel a byte-shuffle mask that picks every output's two
/// tap bytes as a 16-bit pair, and the pairs' weights. `None` when some output does not
/// fit that pattern, or fewer than 8 outputs.
struct PairBlocks {
    firsts: Vec<usize>,
    bases: Vec<[usize; 2]>,
    masks: Vec<[[i8; 32]; 3]>,
    weights: Vec<[i16; 16]>,
}

impl PairBlocks {
    fn new(cols: &Weights, offsets: &[i32]) -> Option<PairBlocks> {
        let n = cols.count;
        if cols.taps > 2 || n < 8 {
            return None;
        }
        let mut blocks = PairBlocks { firsts: Vec::new(), bases: Vec::new(), masks: Vec::new(), weights: Vec::new() };
        // Blocks of 8 outputs; a last, overlapping block ends at `n` (it rewrites a few
        // outputs with the same values) so no output is left to scalar code when n >= 8.
        let mut firsts: Vec<usize> = (0..n / 8).map(|b| 8 * b).collect();
        if !n.is_multiple_of(8) && n >= 8 {
            firsts.push(n - 8);
        }
        for x0 in firsts {
            let mut bases = [0; 2];
            let mut masks = [[-128i8; 32]; 3];
            let mut weights = [0i16; 16];
            for half in 0..2 {
                let base = offsets[x0 + 4 * half];
                bases[half] = base as usize;
                for i in 0..4 {
                    let x = x0 + 4 * half + i;
                    for tap in 0..2 {
                        // A missing second tap reads the first one's bytes with weight 0.
                        let (offset, weight) = if tap < cols.taps {
                            (offsets[tap * n + x], cols.weights[tap * n + x])
                        } else {
                            (offsets[x], 0)
                        };
                        let rel = offset - base;
                        if !(0..=13).contains(&rel) {
                            return None;
                        }
                        for (c, mask) in masks.iter_mut().enumerate() {
                            mask[16 * half + 4 * i + 2 * tap] = (rel + c as i32) as i8;
                        }
                        weights[8 * half + 2 * i + tap] = i16::try_from(weight).ok()?;
                    }
                }
            }
            blocks.firsts.push(x0);
            blocks.bases.push(bases);
            blocks.masks.push(masks);
            blocks.weights.push(weights);
        }
        Some(blocks)
    }
}

/// Block `b`'s sums, per channel, for its 8 outputs: two 16-byte loads, then per channel
/// one byte shuffle into (tap 0, tap 1) 16-bit pairs and one multiply-add with the
/// weights; the same integer sums as the scalar code. `row` must hold 16 readable bytes
/// from each of the block's bases. A macro, for use inside AVX2 functions: a function
/// returning three vectors was not inlined and cost ~40% of the resize.
#[cfg(target_arch = "x86_64")]
macro_rules! pair_block_sums {
    ($row:expr, $blocks:expr, $b:expr, $half:expr) => {{
        let (bases, masks, weights) = (&$blocks.bases[$b], &$blocks.masks[$b], &$blocks.weights[$b]);
        let (lo, hi) = (&$row[bases[0]..][..16], &$row[bases[1]..][..16]);
        // SAFETY: `lo`, `hi`, the masks and the weights are 16 or 32 readable bytes.
        let (v, weights, masks) = unsafe {
            let v = _mm256_set_m128i(_mm_loadu_si128(hi.as_ptr().cast()), _mm_loadu_si128(lo.as_ptr().cast()));
            let weights = _mm256_loadu_si256(weights.as_ptr().cast());
            (v, weights, masks.map(|m| _mm256_loadu_si256(m.as_ptr().cast())))
        };
        masks.map(|m| _mm256_add_epi32($half, _mm256_madd_epi16(_mm256_shuffle_epi8(v, m), weights)))
    }};
}

/// The RGB horizontal pass with [`PairBlocks`] into interleaved bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_rgb_pairs_avx2(row: &[u8], blocks: &PairBlocks, cols: &Weights, offsets: &[i32], dst: &mut [u8]) {
    let n = cols.count;
    assert!(dst.len() == 3 * n && offsets.len() == cols.taps * n, "pair kernel lengths");
    use std::arch::x86_64::*;
    let half = _mm256_set1_epi32(1 << (cols.precision - 1));
    for b in 0..blocks.firsts.len() {
        let x0 = blocks.firsts[b];
        store_rgb8(pair_block_sums!(row, blocks, b, half), cols.precision, &mut dst[3 * x0..3 * x0 + 24]);
    }
}

/// The RGB horizontal pass with [`PairBlocks`] straight into one row of each CHW `f32`
/// plane: the rounded bytes, as 32-bit lanes, go through `byte * scale + bias` (multiply
/// then add, as the fused pass) and are stored in order or, mirrored, in reverse.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_rgb_pairs_chw_avx2(
    row: &[u8],
    blocks: &PairBlocks,
    precision: u32,
    affine: ChwAffine,
    planes: [&mut [f32]; 3],
) {
    use std::arch::x86_64::*;
    let n = planes[0].len();
    assert!(planes.iter().all(|p| p.len() == n), "CHW plane rows");
    let shift = _mm_cvtsi32_si128(precision as i32);
    let (zero, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
    let reverse = _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    let half = _mm256_set1_epi32(1 << (precision - 1));
    let scales = affine.scale.map(|v| _mm256_set1_ps(v));
    let biases = affine.bias.map(|v| _mm256_set1_ps(v));
    for b in 0..blocks.firsts.len() {
        let x0 = blocks.firsts[b];
        assert!(x0 + 8 <= n, "pair block inside the row");
        let sums = pair_block_sums!(row, blocks, b, half);
        let at = if affine.flip { n - 8 - x0 } else { x0 };
        for c in 0..3 {
            let bytes = _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(sums[c], shift), zero), top);
            let mut v = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(bytes), scales[c]), biases[c]);
            if affine.flip {
                v = _mm256_permutevar8x32_ps(v, reverse);
            }
            let dst = &mut planes[c][at..at + 8];
            // SAFETY: `dst` is 8 writable f32.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
        }
    }
}

/// Rounds three channels' sums for 8 pixels and stores them as 24 interleaved bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn store_rgb8(sums: [std::arch::x86_64::__m256i; 3], precision: u32, dst: &mut [u8]) {
    use std::arch::x86_64::*;
    let shift = _mm_cvtsi32_si128(precision as i32);
    let (zero, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(255));
    let [r, g, b] = sums.map(|s| _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(s, shift), zero), top));
    let px = _mm256_or_si256(r, _mm256_or_si256(_mm256_slli_epi32::<8>(g), _mm256_slli_epi32::<16>(b)));
    // Drops the fourth byte of each 32-bit pixel: 4 RGB pixels -> 12 bytes per 128-bit lane.
    #[rustfmt::skip]
    let pack = _mm256_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1,
    );
    let mut bytes = [0u8; 32];
    // SAFETY: `bytes` is 32 writable bytes.
    unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().cast(), _mm256_shuffle_epi8(px, pack)) };
    dst[..12].copy_from_slice(&bytes[..12]);
    dst[12..24].copy_from_slice(&bytes[16..28]);
}

/// Outputs `from..` of one row, one at a time.
fn horizontal_scalar_tail(row: &[u8], cols: &Weights, offsets: &[i32], c: usize, from: usize, dst: &mut [u8]) {
    for x in from..cols.count {
        for ch in 0..c {
            let mut sum = 1 << (cols.precision - 1);
            for k in 0..cols.taps {
                let at = k * cols.count + x;
                sum += cols.weights[at] * i32::from(row[offsets[at] as usize + ch]);
            }
            dst[x * c + ch] = cols.round(sum);
        }
    }
}

/// The RGB horizontal pass for any taps (downscales), 8 outputs per step: per tap one
/// gather of 4-byte words at the taps' pixel offsets yields all three channels (bytes
/// 0-2), multiplied by the weights in 32-bit lanes (the same integer sums as the scalar
/// code). `row` must hold 4 readable bytes from the largest offset on.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn horizontal_rgb_gather_avx2(row: &[u8], cols: &Weights, offsets: &[i32], dst: &mut [u8]) {
    use std::arch::x86_64::*;
    let n = cols.count;
    assert!(dst.len() == 3 * n && offsets.len() == cols.taps * n && cols.weights.len() == cols.taps * n);
    let max_offset = offsets.iter().copied().max().unwrap_or(0) as usize;
    assert!(row.len() >= max_offset + 4, "gather reads 4 bytes at each offset");
    let half = _mm256_set1_epi32(1 << (cols.precision - 1));
    let byte = _mm256_set1_epi32(0xFF);
    let mut x = 0;
    while x + 8 <= n {
        let mut sums = [half; 3];
        for k in 0..cols.taps {
            let at = k * n + x;
            // SAFETY: `at + 8 <= taps * n` (asserted lengths); every gathered word lies in
            // `row` (asserted above).
            let (words, weights) = unsafe {
                let idx = _mm256_loadu_si256(offsets[at..at + 8].as_ptr().cast());
                let words = _mm256_i32gather_epi32::<1>(row.as_ptr().cast(), idx);
                (words, _mm256_loadu_si256(cols.weights[at..at + 8].as_ptr().cast()))
            };
            sums[0] = _mm256_add_epi32(sums[0], _mm256_mullo_epi32(_mm256_and_si256(words, byte), weights));
            let g = _mm256_and_si256(_mm256_srli_epi32::<8>(words), byte);
            sums[1] = _mm256_add_epi32(sums[1], _mm256_mullo_epi32(g, weights));
            let b = _mm256_and_si256(_mm256_srli_epi32::<16>(words), byte);
            sums[2] = _mm256_add_epi32(sums[2], _mm256_mullo_epi32(b, weights));
        }
        store_rgb8(sums, cols.precision, &mut dst[3 * x..3 * x + 24]);
        x += 8;
    }
    horizontal_scalar_tail(row, cols, offsets, 3, x, dst);
}
