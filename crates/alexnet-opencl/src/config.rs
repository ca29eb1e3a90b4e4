//! Work-group and tile sizes of our kernels, chosen per device from its properties.
//!
//! The sizes are compile-time constants of the program (`-D RED_WG=...`), so each device's
//! program is built with its own [`KernelConfig`]. A GPU gets larger GEMM register tiles
//! (more rows per thread, as local memory allows) than a CPU driver, where work-groups are
//! loops over work-items and the smaller tile measured better; work-group sizes follow the
//! device's limit and its preferred multiple (the warp or wavefront width on GPUs).

use std::fmt;

/// The device properties that size the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceLimits {
    /// Whether the device reports itself as a GPU.
    pub(crate) is_gpu: bool,
    /// `CL_DEVICE_MAX_WORK_GROUP_SIZE`.
    pub(crate) max_work_group_size: usize,
    /// `CL_DEVICE_LOCAL_MEM_SIZE` in bytes.
    pub(crate) local_mem_bytes: u64,
    /// `CL_KERNEL_PREFERRED_WORK_GROUP_SIZE_MULTIPLE` of a probe kernel (32 on NVIDIA, 64 on
    /// AMD, 8 on PoCL).
    pub(crate) preferred_multiple: usize,
}

/// Our kernels' sizes on one device (the program's `-D` constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelConfig {
    /// Work-items per element-wise and reduction work-group (`RED_WG`, a power of two).
    pub(crate) wg: usize,
    /// GEMM threads per work-group side (`GEMM_RTS`).
    pub(crate) gemm_rts: usize,
    /// GEMM rows per thread (`GEMM_WPT`): a work-group's tile is `gemm_rts * gemm_wpt` rows by
    /// `4 * gemm_rts` columns (one float4 of columns per thread).
    pub(crate) gemm_wpt: usize,
    /// GEMM panel depth along `k` (`GEMM_TSK`).
    pub(crate) gemm_tsk: usize,
}

impl KernelConfig {
    /// The sizes for a device with `limits`.
    pub(crate) fn for_device(limits: &DeviceLimits) -> Self {
        let max = limits.max_work_group_size.max(1);
        let pow2_at_most = |n: usize| 1usize << n.max(1).ilog2();
        let wg = pow2_at_most(max.min(256));
        // 16 x 16 GEMM threads where allowed (a multiple of 32- and 64-wide warps), preferring
        // a side whose square is a multiple of the preferred multiple.
        let sides = [16, 8, 4, 2, 1].into_iter().filter(|r| r * r <= max);
        let gemm_rts = sides
            .clone()
            .find(|r| (r * r).is_multiple_of(limits.preferred_multiple.max(1)))
            .or_else(|| sides.clone().next())
            .unwrap_or(1);
        let gemm_tsk = 16;
        // GPUs: 8 rows per thread (a 128 x 64 tile for 16 x 16 threads: twice the arithmetic
        // per local-memory load) where local memory holds it; CPU drivers: 4.
        let wpts: &[usize] = if limits.is_gpu { &[8, 4, 2, 1] } else { &[4, 2, 1] };
        let with_wpt = |gemm_wpt: usize| Self { wg, gemm_rts, gemm_wpt, gemm_tsk };
        wpts.iter().map(|&w| with_wpt(w)).find(|c| c.check(limits).is_ok()).unwrap_or_else(|| with_wpt(1))
    }

    /// Local memory one GEMM work-group uses (its A and B panels), or a reduction's scratch.
    pub(crate) fn local_bytes(&self) -> u64 {
        let panels = self.gemm_tsk * (self.gemm_rts * self.gemm_wpt + 4 * self.gemm_rts);
        (panels.max(self.wg) * std::mem::size_of::<f32>()) as u64
    }

    /// Why this configuration cannot run on a device with `limits`, if it cannot.
    pub(crate) fn check(&self, limits: &DeviceLimits) -> Result<(), String> {
        let max = limits.max_work_group_size;
        let rts = self.gemm_rts;
        if !self.wg.is_power_of_two() || self.wg > max {
            return Err(format!("reduction work-group {} is not a power of two within {max}", self.wg));
        }
        if rts * rts > max {
            return Err(format!("GEMM work-group {rts} x {rts} exceeds {max}"));
        }
        if self.local_bytes() > limits.local_mem_bytes {
            return Err(format!("{} bytes of local memory exceed {}", self.local_bytes(), limits.local_mem_bytes));
        }
        // Every thread loads whole panels: the element counts must divide by the thread count.
        if !(self.gemm_tsk * self.gemm_wpt).is_multiple_of(rts) || !(4 * self.gemm_tsk).is_multiple_of(rts) {
            return Err(format!("GEMM panels of depth {} do not divide among {rts} x {rts} threads", self.gemm_tsk));
        }
        Ok(())
    }

    /// The program's build options.
    pub(crate) fn build_options(&self) -> String {
        format!(
            "-cl-std=CL1.2 -D RED_WG={} -D GEMM_RTS={} -D GEMM_WPT={} -D GEMM_TSK={}",
            self.wg, self.gemm_rts, self.gemm_wpt, self.gemm_tsk
        )
    }
}

impl fmt::Display for KernelConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "reductions {}-wide, GEMM {}x{} threads on {}x{} tiles, k panels of {}",
            self.wg,
            self.gemm_rts,
            self.gemm_rts,
            self.gemm_rts * self.gemm_wpt,
            4 * self.gemm_rts,
            self.gemm_tsk
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Property sets of devices we cannot run here: NVIDIA- and AMD-like GPUs, a small GPU, and
    /// a CPU driver like PoCL.
    pub(crate) const NVIDIA_LIKE: DeviceLimits =
        DeviceLimits { is_gpu: true, max_work_group_size: 1024, local_mem_bytes: 48 << 10, preferred_multiple: 32 };
    const AMD_LIKE: DeviceLimits =
        DeviceLimits { is_gpu: true, max_work_group_size: 256, local_mem_bytes: 64 << 10, preferred_multiple: 64 };
    const SMALL_GPU: DeviceLimits =
        DeviceLimits { is_gpu: true, max_work_group_size: 64, local_mem_bytes: 4 << 10, preferred_multiple: 16 };
    const POCL_LIKE: DeviceLimits =
        DeviceLimits { is_gpu: false, max_work_group_size: 4096, local_mem_bytes: 2 << 20, preferred_multiple: 8 };

    #[test]
    fn every_choice_fits_its_device() {
        for limits in [NVIDIA_LIKE, AMD_LIKE, SMALL_GPU, POCL_LIKE] {
            let config = KernelConfig::for_device(&limits);
            config.check(&limits).unwrap_or_else(|e| panic!("{limits:?} -> {config:?}: {e}"));
            let threads = config.gemm_rts * config.gemm_rts;
            assert!(threads.is_multiple_of(limits.preferred_multiple.min(threads)), "{limits:?} -> {config}");
        }
    }

    #[test]
    fn gpus_get_larger_tiles_than_cpus_and_small_devices_smaller_ones() {
        let gpu = KernelConfig::for_device(&NVIDIA_LIKE);
        assert_eq!((gpu.wg, gpu.gemm_rts, gpu.gemm_wpt), (256, 16, 8), "{gpu}");
        let cpu = KernelConfig::for_device(&POCL_LIKE);
        assert_eq!((cpu.wg, cpu.gemm_rts, cpu.gemm_wpt), (256, 16, 4), "{cpu}");
        let small = KernelConfig::for_device(&SMALL_GPU);
        assert_eq!((small.wg, small.gemm_rts), (64, 8), "{small}");
        assert!(small.local_bytes() <= SMALL_GPU.local_mem_bytes, "{small}");
    }

    #[test]
    fn impossible_configurations_are_named() {
        let too_big = KernelConfig { wg: 64, gemm_rts: 16, gemm_wpt: 8, gemm_tsk: 16 };
        assert!(too_big.check(&SMALL_GPU).unwrap_err().contains("exceeds 64"));
        let uneven = KernelConfig { wg: 64, gemm_rts: 8, gemm_wpt: 1, gemm_tsk: 4 };
        assert!(uneven.check(&POCL_LIKE).unwrap_err().contains("do not divide"));
    }
}
