//! The crate's error enum and its conversion into [`alexnet_core::Error`].

use opencl3::error_codes::ClError;
use thiserror::Error;

/// Everything that can go wrong in the OpenCL backend.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum OpenClError {
    /// `libOpenCL.so.1` (the ICD loader) could not be loaded.
    #[error(
        "the OpenCL runtime library (libOpenCL.so.1) could not be loaded; install an ICD loader and a driver \
         (Debian: `apt-get install ocl-icd-libopencl1 pocl-opencl-icd`)"
    )]
    NoRuntime,
    /// The loader works but reports no device.
    #[error("no OpenCL device found ({platforms} platform(s) present); install a driver such as pocl-opencl-icd")]
    NoDevice {
        /// How many platforms the loader reported.
        platforms: usize,
    },
    /// A device selector matched no device.
    #[error("OpenCL device selector `{selector}` matches no device; available: {available}")]
    DeviceNotFound {
        /// The selector as given (index or name fragment).
        selector: String,
        /// The devices that exist, one `index: description` each.
        available: String,
    },
    /// An OpenCL API call returned an error code.
    #[error("OpenCL call {call} failed with {code} ({name})")]
    Api {
        /// Which call (or which op) failed.
        call: &'static str,
        /// The raw OpenCL error code.
        code: i32,
        /// Its symbolic name.
        name: String,
    },
    /// The kernel program did not compile; `log` is the compiler's build log.
    #[error("OpenCL kernel build failed on {device}:\n{log}")]
    Build {
        /// The device description.
        device: String,
        /// The build log.
        log: String,
    },
    /// A buffer made by another backend instance was passed in.
    #[error("{op}: buffer `{buffer}` belongs to another OpenCL backend instance")]
    ForeignBuffer {
        /// The op that rejected the buffer.
        op: &'static str,
        /// Which buffer.
        buffer: &'static str,
    },
    /// CLBlast was asked for (by `ALEX_OPENCL_GEMM=clblast` or the API) but could not be loaded.
    #[error(
        "CLBlast was requested but could not be loaded ({reason}); install it (Debian: `apt-get install \
         libclblast1`), put libclblast.so.1 on LD_LIBRARY_PATH, or use our own GEMM (ALEX_OPENCL_GEMM=own)"
    )]
    ClBlastUnavailable {
        /// Each library name tried, with the loader's message.
        reason: String,
    },
    /// A CLBlast call returned an error status.
    #[error("{call} failed with status {status} ({name})")]
    ClBlast {
        /// The CLBlast function.
        call: &'static str,
        /// Its `CLBlastStatusCode`.
        status: i32,
        /// The code's name in clblast_c.h.
        name: &'static str,
    },
    /// `ALEX_OPENCL_GEMM` (or a parsed engine name) is neither `clblast`, `own` nor `auto`.
    #[error("GEMM engine `{value}` is unknown (ALEX_OPENCL_GEMM takes clblast, own or auto)")]
    InvalidGemmEngine {
        /// The text given.
        value: String,
    },
    /// A size exceeds what the kernels index with 32-bit integers.
    #[error("{what} = {value} exceeds the 32-bit index range of the OpenCL kernels")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its value.
        value: usize,
    },
}

impl OpenClError {
    /// Wraps an OpenCL error code from `call`, mapping a failed library load to [`OpenClError::NoRuntime`].
    pub(crate) fn api(call: &'static str, err: ClError) -> Self {
        if err.0 == opencl3::error_codes::DLOPEN_RUNTIME_LOAD_FAILED {
            return Self::NoRuntime;
        }
        Self::Api { call, code: err.0, name: err.to_string() }
    }
}

impl From<OpenClError> for alexnet_core::Error {
    fn from(e: OpenClError) -> Self {
        alexnet_core::Error::Backend { backend: "opencl".into(), message: e.to_string() }
    }
}

/// A helper that labels an opencl3 result with the call name.
pub(crate) trait ClResultExt<T> {
    /// Maps the error to [`OpenClError::Api`] naming `call`.
    fn cl(self, call: &'static str) -> Result<T, OpenClError>;
}

impl<T> ClResultExt<T> for Result<T, ClError> {
    fn cl(self, call: &'static str) -> Result<T, OpenClError> {
        self.map_err(|e| OpenClError::api(call, e))
    }
}
