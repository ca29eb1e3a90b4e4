//! What this machine can do at best, measured in about a second, so that the benchmarks can
//! state every speed as a fraction of it: the peak of fused multiply-adds (single thread and
//! all threads) and the copy bandwidth of main memory; plus the process's peak resident
//! memory.

use std::hint::black_box;
use std::time::Instant;

/// The measured limits of this machine.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// The instruction set the peak was measured with.
    pub isa: &'static str,
    /// Threads used for the all-threads figures.
    pub threads: usize,
    /// FMA peak of one thread, FLOP/s (a multiply-add counts 2).
    pub peak_one: f64,
    /// FMA peak of all threads at once, FLOP/s.
    pub peak_all: f64,
    /// Copy bandwidth of all threads at once, bytes/s, counting bytes read plus bytes
    /// written (STREAM's convention).
    pub copy_all: f64,
}

impl Machine {
    /// Measures the machine with `threads` threads for the all-threads figures.
    pub fn measure(threads: usize) -> Self {
        let threads = threads.max(1);
        let isa = fma_isa();
        let peak_one = fma_peak(1);
        let peak_all = fma_peak(threads);
        let copy_all = copy_bandwidth(threads);
        Self { isa, threads, peak_one, peak_all, copy_all }
    }

    /// One line describing the figures.
    pub fn describe(&self) -> String {
        format!(
            "machine: FMA peak {:.1} GFLOP/s on {} threads ({:.1} on one; {}), copy bandwidth {:.1} GB/s (bytes read + \
             written, {} threads)",
            self.peak_all / 1e9,
            self.threads,
            self.peak_one / 1e9,
            self.isa,
            self.copy_all / 1e9,
            self.threads,
        )
    }

    /// `flops_per_s` as a percentage of the all-threads peak.
    pub fn of_peak(&self, flops_per_s: f64) -> f64 {
        100.0 * flops_per_s / self.peak_all
    }

    /// `bytes_per_s` as a percentage of the copy bandwidth.
    pub fn of_bandwidth(&self, bytes_per_s: f64) -> f64 {
        100.0 * bytes_per_s / self.copy_all
    }
}

/// Best of `trials` runs of `f`, each returning (work, seconds): the highest rate. Many short
/// runs, of which the best counts, see through other processes that share the machine for
/// part of the time (on a busy machine the figures still come out low: say so with them).
fn best_rate(trials: usize, mut f: impl FnMut() -> (f64, f64)) -> f64 {
    (0..trials).map(|_| f()).map(|(work, secs)| work / secs.max(1e-12)).fold(0.0, f64::max)
}

/// The widest FMA instruction set this CPU runs.
fn fma_isa() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return "AVX-512 FMA";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            return "AVX2 FMA";
        }
    }
    "scalar multiply-add (no SIMD FMA kernel for this CPU)"
}

/// Iterations of the FMA kernel per timed run (3-4 ms at the peak of an AVX2 core).
const FMA_ITERATIONS: u64 = 2_000_000;

/// FLOP/s of `threads` threads each running the FMA kernel at once (best of 40 runs).
fn fma_peak(threads: usize) -> f64 {
    best_rate(40, || {
        let started = Instant::now();
        let flops: f64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| fma_kernel(FMA_ITERATIONS))).collect();
            handles.into_iter().map(|h| h.join().expect("the FMA kernel does not panic")).sum()
        });
        (flops, started.elapsed().as_secs_f64())
    })
}

/// Runs `iterations` rounds of independent FMA chains on the widest instruction set; returns
/// the FLOPs done.
fn fma_kernel(iterations: u64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            return unsafe { x86::fma_avx512(iterations) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { x86::fma_avx2(iterations) };
        }
    }
    fma_scalar(iterations)
}

/// Independent accumulator chains: enough to cover an FMA latency of 4 cycles on 2 ports
/// (8 in flight), fewer than the 16 vector registers of AVX2.
const CHAINS: usize = 12;
/// Each chain computes `acc = acc * MUL + ADD`, which converges to a finite value (no
/// overflow or subnormals to slow it down).
const MUL: f32 = 0.999_999;
const ADD: f32 = 1e-6;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ADD, CHAINS, MUL};

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_avx2(iterations: u64) -> f64 {
        let (mul, add) = (_mm256_set1_ps(MUL), _mm256_set1_ps(ADD));
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        for _ in 0..iterations {
            for a in &mut acc {
                *a = _mm256_fmadd_ps(*a, mul, add);
            }
        }
        let mut total = _mm256_setzero_ps();
        for a in acc {
            total = _mm256_add_ps(total, a);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: `lanes` holds 8 floats; the store is unaligned.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), total) };
        std::hint::black_box(lanes);
        (iterations * CHAINS as u64 * 8 * 2) as f64
    }

    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_avx512(iterations: u64) -> f64 {
        let (mul, add) = (_mm512_set1_ps(MUL), _mm512_set1_ps(ADD));
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        for _ in 0..iterations {
            for a in &mut acc {
                *a = _mm512_fmadd_ps(*a, mul, add);
            }
        }
        let mut total = _mm512_setzero_ps();
        for a in acc {
            total = _mm512_add_ps(total, a);
        }
        std::hint::black_box(_mm512_reduce_add_ps(total));
        (iterations * CHAINS as u64 * 16 * 2) as f64
    }
}

/// The portable kernel: scalar multiply-adds in independent chains.
fn fma_scalar(iterations: u64) -> f64 {
    let mut acc = [0.0f32; CHAINS];
    let (mul, add) = (black_box(MUL), black_box(ADD));
    for _ in 0..iterations {
        for a in &mut acc {
            *a = *a * mul + add;
        }
    }
    black_box(acc);
    (iterations * CHAINS as u64 * 2) as f64
}

/// Bytes of each of the two copy buffers: far larger than any cache.
const COPY_BYTES: usize = 128 << 20;

/// Copy bandwidth of `threads` threads each copying its share of a large buffer (best of ten
/// runs), in bytes read plus bytes written per second.
fn copy_bandwidth(threads: usize) -> f64 {
    let len = COPY_BYTES / size_of::<f32>();
    // Written once before timing so that every page is mapped.
    let src = vec![1.0f32; len];
    let mut dst = vec![2.0f32; len];
    let share = len.div_ceil(threads);
    best_rate(10, || {
        let started = Instant::now();
        std::thread::scope(|s| {
            for (d, from) in dst.chunks_mut(share).zip(src.chunks(share)) {
                s.spawn(move || d.copy_from_slice(from));
            }
        });
        black_box(&mut dst);
        ((2 * COPY_BYTES) as f64, started.elapsed().as_secs_f64())
    })
}

/// Peak resident memory of this process so far (`VmHWM` of `/proc/self/status`), where the
/// system reports it (Linux).
pub fn peak_resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib * 1024)
}

/// Resets the peak that [`peak_resident_bytes`] reports to the current resident memory
/// (Linux: `5` into `/proc/self/clear_refs`), so that the buffers of [`Machine::measure`] do
/// not count. Returns whether it could.
pub fn reset_peak_resident() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// `bytes` as MiB for messages.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_count_what_they_run() {
        // Every chain does one multiply-add (2 FLOPs) per lane per iteration.
        let lanes = match fma_isa() {
            "AVX-512 FMA" => 16.0,
            "AVX2 FMA" => 8.0,
            _ => 1.0,
        };
        assert_eq!(fma_kernel(10), 10.0 * CHAINS as f64 * lanes * 2.0);
        assert_eq!(fma_scalar(3), 3.0 * CHAINS as f64 * 2.0);
    }

    #[test]
    fn peak_memory_reads_the_status_file() {
        if cfg!(target_os = "linux") {
            let before = peak_resident_bytes().expect("Linux reports VmHWM");
            let block = vec![1u8; 64 << 20];
            black_box(&block);
            assert!(peak_resident_bytes().unwrap() >= before.max(64 << 20), "a 64 MiB block counts");
        }
    }
}
