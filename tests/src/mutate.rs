//! Property tests on stable Rust without a framework: a seeded mutation loop. Valid inputs
//! are damaged the way real files are (bit flips, truncation, spliced or repeated chunks,
//! header fields set to extreme values, random bytes) and handed to a reader, which must
//! return `Ok` or `Err`: never panic, hang, or allocate beyond its bound.
//!
//! Iterations are bounded (`ALEX_FUZZ_ITERATIONS`, default [`DEFAULT_ITERATIONS`] per
//! target, kept small for CI); the seed of each case is printed on failure, and
//! `ALEX_FUZZ_SEED` changes the whole sequence.

use alexnet_core::rng::mix64;

/// Iterations per target when `ALEX_FUZZ_ITERATIONS` is unset.
pub const DEFAULT_ITERATIONS: u64 = 200;

/// The number of cases to run per target.
pub fn iterations() -> u64 {
    std::env::var("ALEX_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ITERATIONS)
}

/// The base seed (`ALEX_FUZZ_SEED`, default 0).
pub fn base_seed() -> u64 {
    std::env::var("ALEX_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Values that break size arithmetic and bounds checks.
const EXTREMES: [u32; 10] = [0, 1, 2, 0x7F, 0xFF, 0xFFFF, 65_500, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF];

/// A deterministic stream of mutations.
#[derive(Debug, Clone)]
pub struct Mutator {
    seed: u64,
    counter: u64,
}

impl Mutator {
    /// A mutator whose choices all follow from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    fn next(&mut self) -> u64 {
        self.counter += 1;
        mix64(self.seed, self.counter)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `input` with one to four random mutations applied.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            self.mutate_once(&mut out);
        }
        out
    }

    fn mutate_once(&mut self, out: &mut Vec<u8>) {
        if out.is_empty() {
            out.extend((0..1 + self.below(64)).map(|_| self.next() as u8));
            return;
        }
        let at = self.below(out.len());
        match self.below(9) {
            0 => out[at] ^= 1 << self.below(8),
            1 => out[at] = EXTREMES[self.below(EXTREMES.len())] as u8,
            2 => {
                // A 32-bit field (big- or little-endian) set to an extreme value.
                let value = EXTREMES[self.below(EXTREMES.len())];
                let bytes = if self.below(2) == 0 { value.to_be_bytes() } else { value.to_le_bytes() };
                let end = (at + 4).min(out.len());
                out[at..end].copy_from_slice(&bytes[..end - at]);
            }
            3 => {
                let value = EXTREMES[self.below(EXTREMES.len())] as u16;
                let end = (at + 2).min(out.len());
                out[at..end].copy_from_slice(&value.to_be_bytes()[..end - at]);
            }
            4 => out.truncate(at),
            5 => {
                let len = 1 + self.below(out.len() - at);
                out.drain(at..at + len);
            }
            6 => {
                // Repeat a chunk in place.
                let len = 1 + self.below((out.len() - at).min(256));
                let chunk = out[at..at + len].to_vec();
                out.splice(at..at, chunk);
            }
            7 => {
                let fresh: Vec<u8> = (0..1 + self.below(16)).map(|_| self.next() as u8).collect();
                out.splice(at..at, fresh);
            }
            _ => {
                let end = (at + 1 + self.below(32)).min(out.len());
                for b in &mut out[at..end] {
                    *b = self.next() as u8;
                }
            }
        }
    }
}

/// Runs `check` on [`iterations`] mutations of the `valid` inputs (cycled), each case from
/// its own seed; a panic inside `check` is reported with the target and the case's seed
/// and re-raised.
pub fn for_each_mutation(target: &str, valid: &[Vec<u8>], mut check: impl FnMut(&[u8])) {
    assert!(!valid.is_empty(), "{target}: no valid inputs to mutate");
    let base = mix64(base_seed(), target.bytes().fold(0u64, |h, b| mix64(h, u64::from(b))));
    for case in 0..iterations() {
        let seed = mix64(base, case);
        let bytes = Mutator::new(seed).mutate(&valid[case as usize % valid.len()]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
        if let Err(panic) = outcome {
            eprintln!("{target}: case {case} (mutation seed {seed}, {} bytes) panicked", bytes.len());
            std::panic::resume_unwind(panic);
        }
    }
}
