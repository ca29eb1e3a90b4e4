//! Counter-based random numbers that every backend computes identically.
//!
//! Dropout masks must be the same on the CPU and on an OpenCL device so that runs on
//! either backend track each other. A counter-based generator needs no state: element
//! `index` of stream `seed` is a pure function of the two, computable in parallel on any
//! device. The mixing function is SplitMix64's finaliser (Steele, Lea, Flood 2014), which
//! OpenCL C can evaluate with `ulong` arithmetic exactly as written here.

/// SplitMix64's output function applied to `seed + (index + 1) * GOLDEN`.
pub fn mix64(seed: u64, index: u64) -> u64 {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut z = seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform draw in `[0, 1)` with 24 random bits, exactly representable in `f32`.
pub fn uniform(seed: u64, index: u64) -> f32 {
    (mix64(seed, index) >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Whether inverted dropout with drop probability `p` keeps element `index`.
pub fn dropout_keep(seed: u64, index: u64, p: f32) -> bool {
    uniform(seed, index) >= p
}

/// Where a buffer of rows (samples) sits inside the whole batch's tensor, so that a mask
/// element is keyed by its global position: a replica holding other samples of the batch
/// (data parallelism) or a device holding other features of a layer (the paper's model
/// split) draws exactly the masks one device draws for the whole batch.
///
/// Local element `i` of a buffer whose rows hold `row_len` elements is row `i / row_len`,
/// column `i % row_len`; its global index is
/// `(first_row + row) * total_row_len + first_col + column`.
///
/// ```
/// use alexnet_core::rng::MaskWindow;
/// // Samples 2.. of a batch whose rows have 5 features: local element 6 is sample 3,
/// // feature 1, global element 16.
/// assert_eq!(MaskWindow::rows(2, 5).global_index(6), 16);
/// // Features 3..5 of rows of 5, from sample 0: local element 2 is sample 1, feature 3.
/// let w = MaskWindow { first_row: 0, first_col: 3, row_len: 2, total_row_len: 5 };
/// assert_eq!(w.global_index(2), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskWindow {
    /// Global index of the buffer's first row.
    pub first_row: u64,
    /// Global index of the buffer's first column within a row.
    pub first_col: u64,
    /// Elements per row in the buffer.
    pub row_len: u64,
    /// Elements per row in the whole tensor.
    pub total_row_len: u64,
}

impl MaskWindow {
    /// The whole tensor, rows of `row_len` (global index = local index).
    pub fn whole(row_len: usize) -> Self {
        Self::rows(0, row_len)
    }

    /// Whole rows from global row `first_row` on.
    pub fn rows(first_row: u64, row_len: usize) -> Self {
        Self { first_row, first_col: 0, row_len: row_len as u64, total_row_len: row_len as u64 }
    }

    /// The global index of local element `i`.
    pub fn global_index(&self, i: u64) -> u64 {
        (self.first_row + i / self.row_len) * self.total_row_len + self.first_col + i % self.row_len
    }

    /// Checks the window describes `len` local elements: whole rows, inside the tensor's rows.
    pub fn check(&self, len: usize) -> crate::Result<()> {
        let bad = |reason| {
            Err(crate::Error::InvalidParameter { what: "dropout mask window", value: self.row_len as f64, reason })
        };
        if self.row_len == 0 || !(len as u64).is_multiple_of(self.row_len) {
            return bad("row length must be positive and divide the buffer length");
        }
        if self.first_col.checked_add(self.row_len).is_none_or(|end| end > self.total_row_len) {
            return bad("the window's columns must lie inside the tensor's rows");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // SplitMix64 seeded with 0 produces 0xE220A8397B1DCDAF first (reference C code).
        assert_eq!(mix64(0, 0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn uniform_is_in_range_and_roughly_uniform() {
        let n = 100_000;
        let draws: Vec<f32> = (0..n).map(|i| uniform(42, i)).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().map(|&u| f64::from(u)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let kept = (0..n).filter(|&i| dropout_keep(7, i, 0.5)).count();
        assert!((kept as f64 / n as f64 - 0.5).abs() < 0.01, "kept {kept}");
    }

    #[test]
    fn windows_tile_the_whole_tensor_exactly_once() {
        // A 6 x 10 tensor cut into 2 row shards x 2 column halves, against row-major order.
        let (rows, cols) = (6u64, 10u64);
        let mut seen = vec![0u32; (rows * cols) as usize];
        for first_row in [0, 3] {
            for first_col in [0, 5] {
                let w = MaskWindow { first_row, first_col, row_len: 5, total_row_len: cols };
                w.check(15).unwrap();
                for i in 0..15 {
                    let (r, c) = (first_row + i / 5, first_col + i % 5);
                    assert_eq!(w.global_index(i), r * cols + c);
                    seen[w.global_index(i) as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&k| k == 1));
        assert_eq!(
            (0..60).map(|i| MaskWindow::whole(10).global_index(i)).collect::<Vec<_>>(),
            (0..60).collect::<Vec<_>>()
        );
    }

    #[test]
    fn windows_that_do_not_fit_are_refused() {
        assert!(MaskWindow::rows(0, 4).check(10).is_err());
        assert!(MaskWindow { first_row: 0, first_col: 0, row_len: 0, total_row_len: 4 }.check(0).is_err());
        assert!(MaskWindow { first_row: 0, first_col: 3, row_len: 2, total_row_len: 4 }.check(4).is_err());
    }
}
