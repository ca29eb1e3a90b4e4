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
}
