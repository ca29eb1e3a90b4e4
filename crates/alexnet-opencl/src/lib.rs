//! # alexnet-opencl
//!
//! An OpenCL backend for alexnet-rs: [`OpenClBackend`] implements [`alexnet_core::Backend`], so
//! every AlexNet kernel (GEMM, convolution, pooling, LRN, dropout, batch norm, softmax
//! cross-entropy, the SGD step) runs on the device and all data stays there; the host reads
//! back only what it asks for.
//!
//! - Kernels live in `kernels/*.cl`, are built once per device and process (the build log is
//!   in the error when they do not compile), and are written for GPUs: the GEMM tiles through
//!   local memory with float4 register tiles; pooling and im2col backward are gathers, so no
//!   kernel needs atomics.
//! - `opencl3` loads `libOpenCL.so.1` at run time: this crate builds anywhere, and a machine
//!   without OpenCL gets [`OpenClError::NoRuntime`] or [`OpenClError::NoDevice`].
//! - Matrix products run on CLBlast, the tuned OpenCL BLAS, when `libclblast.so.1` loads (it is
//!   opened at run time too), else on this crate's own GEMM kernel; [`GEMM_ENV`] or
//!   [`OpenClBackend::with_gemm`] forces one ([`GemmEngine`]).
//! - Devices are chosen by index or name ([`DeviceSelector`], or the [`DEVICE_ENV`]
//!   environment variable) from [`list_devices`].
//! - Dropout masks are bit-identical to the CPU backend's (the counter RNG of
//!   [`alexnet_core::rng`] in `ulong` arithmetic).
//!
//! ```
//! use alexnet_core::Backend;
//!
//! // Skips (returns None with a printed reason) where no OpenCL device exists.
//! if let Some(cl) = alexnet_opencl::test_backend() {
//!     let a = cl.upload(&[1.0, 2.0, 3.0, 4.0])?; // 2 x 2
//!     let b = cl.upload(&[1.0, 0.0, 0.0, 1.0])?; // identity
//!     let mut c = cl.zeros(4)?;
//!     cl.gemm(false, false, 2, 2, 2, 1.0, &a, &b, 0.0, &mut c)?;
//!     let mut host = [0.0; 4];
//!     cl.download(&c, &mut host)?;
//!     assert_eq!(host, [1.0, 2.0, 3.0, 4.0]);
//! }
//! # Ok::<(), alexnet_core::Error>(())
//! ```

mod backend;
mod buffer;
mod clblast;
mod config;
mod context;
mod device;
mod error;
mod ops;
#[cfg(test)]
mod testing;

use std::io::Write as _;

pub use backend::{Activity, OpenClBackend};
pub use buffer::ClBuffer;
pub use clblast::{GEMM_ENV, GemmEngine};
pub use device::{DEVICE_ENV, DeviceInfo, DeviceSelector, list_devices};
pub use error::OpenClError;

/// Set to `1` to make [`test_backend`] panic instead of skipping when no device is found
/// (CI sets it so that a broken OpenCL install fails rather than passes silently).
pub const REQUIRE_ENV: &str = "ALEX_REQUIRE_OPENCL";

/// The backend for tests: the device from [`DEVICE_ENV`] (or the default) with the GEMM engine
/// of [`GEMM_ENV`] (or the default), or `None` after printing why it is skipped. With
/// `ALEX_REQUIRE_OPENCL=1` a missing device panics instead.
pub fn test_backend() -> Option<OpenClBackend> {
    test_backend_or_skip(OpenClBackend::from_env())
}

/// [`test_backend`] with GEMM engine `gemm` forced: `None` (skip printed) when the device or
/// CLBlast is missing, a panic instead with `ALEX_REQUIRE_OPENCL=1`.
pub fn test_backend_with_gemm(gemm: GemmEngine) -> Option<OpenClBackend> {
    test_backend_or_skip(OpenClBackend::with_gemm(&DeviceSelector::from_env(), Some(gemm)))
}

/// Backends on devices `0..count` for multi-device tests, or `None` after printing why they
/// are skipped (too few devices: PoCL lists two CPU devices with
/// `POCL_DEVICES="pthread pthread"`). With `ALEX_REQUIRE_OPENCL=1` too few devices panic.
pub fn test_backends(count: usize) -> Option<Vec<OpenClBackend>> {
    let found = list_devices().map(|list| list.len()).map_err(|e| skip_or_fail(&e.to_string())).ok()?;
    if found < count {
        skip_or_fail(&format!(
            "the test needs {count} OpenCL devices and {found} exist (with PoCL set \
             POCL_DEVICES=\"pthread pthread\" for two CPU devices)"
        ));
        return None;
    }
    (0..count).map(|i| test_backend_or_skip(OpenClBackend::new(&DeviceSelector::Index(i)))).collect()
}

fn test_backend_or_skip(made: Result<OpenClBackend, OpenClError>) -> Option<OpenClBackend> {
    made.map_err(|e| skip_or_fail(&e.to_string())).ok()
}

/// Panics with `reason` under [`REQUIRE_ENV`]`=1`; otherwise prints that the test is skipped.
fn skip_or_fail(reason: &str) {
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{REQUIRE_ENV}=1 but the OpenCL backend is unavailable: {reason}");
    }
    // Straight to stderr, past libtest's output capture, so that skips show in CI logs.
    let line = format!("skipping OpenCL test: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// The README's code blocks, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
