//! CLBlast, the tuned OpenCL BLAS, loaded at run time and used for GEMM when present.
//!
//! Like `opencl3` with `libOpenCL.so.1`, nothing links against `libclblast.so.1`: it is opened
//! with `libloading` on first use, so the crate builds and runs without it. CLBlast enqueues its
//! kernels on our command queue and reads and writes our buffers, so its GEMMs are ordered with
//! every other kernel of a backend like our own launches.

use std::ffi::c_void;
use std::fmt;
use std::sync::OnceLock;

use libloading::Library;

use crate::error::OpenClError;

/// The environment variable that forces a GEMM engine: `clblast` or `own` (unset or `auto`:
/// CLBlast when it loads, our kernels otherwise).
pub const GEMM_ENV: &str = "ALEX_OPENCL_GEMM";

/// Which implementation runs the backend's matrix products (dense layers and convolutions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemmEngine {
    /// This crate's tiled kernel (`kernels/gemm.cl`), sized for the device.
    Own,
    /// CLBlast's `SGEMM` / `SGEMMSTRIDEDBATCHED`, tuned per device by its authors.
    ClBlast,
}

impl GemmEngine {
    /// Parses `clblast`, `own` (`None` for `auto`), case-insensitively.
    pub fn parse(text: &str) -> Result<Option<Self>, OpenClError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "clblast" => Ok(Some(Self::ClBlast)),
            "own" => Ok(Some(Self::Own)),
            "auto" | "" => Ok(None),
            _ => Err(OpenClError::InvalidGemmEngine { value: text.to_string() }),
        }
    }

    /// The engine forced by [`GEMM_ENV`], or `None` when it is unset or `auto`.
    pub fn from_env() -> Result<Option<Self>, OpenClError> {
        std::env::var(GEMM_ENV).map_or(Ok(None), |v| Self::parse(&v))
    }

    /// Checks that the engine can run here: CLBlast must load (ours always can).
    pub fn ensure_available(self) -> Result<(), OpenClError> {
        match self {
            Self::Own => Ok(()),
            Self::ClBlast => clblast().map(|_| ()),
        }
    }

    /// The engine a backend uses when `forced` is `None`: CLBlast when it loads, else our own.
    pub(crate) fn resolve(forced: Option<Self>) -> Result<Self, OpenClError> {
        match forced {
            Some(Self::ClBlast) => clblast().map(|_| Self::ClBlast),
            Some(Self::Own) => Ok(Self::Own),
            None => Ok(if clblast().is_ok() { Self::ClBlast } else { Self::Own }),
        }
    }
}

impl fmt::Display for GemmEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Own => "own",
            Self::ClBlast => "clblast",
        })
    }
}

/// Raw OpenCL handles as CLBlast's C API takes them.
type ClMem = *mut c_void;
type ClQueue = *mut c_void;
type ClEvent = *mut c_void;

const ROW_MAJOR: i32 = 101;
const TRANSPOSE_NO: i32 = 111;
const TRANSPOSE_YES: i32 = 112;

/// `CLBlastSgemm` (clblast_c.h).
type SgemmFn = unsafe extern "C" fn(
    layout: i32,
    a_transpose: i32,
    b_transpose: i32,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: ClMem,
    a_offset: usize,
    a_ld: usize,
    b: ClMem,
    b_offset: usize,
    b_ld: usize,
    beta: f32,
    c: ClMem,
    c_offset: usize,
    c_ld: usize,
    queue: *mut ClQueue,
    event: *mut ClEvent,
) -> i32;

/// `CLBlastSgemmStridedBatched` (clblast_c.h).
type SgemmStridedBatchedFn = unsafe extern "C" fn(
    layout: i32,
    a_transpose: i32,
    b_transpose: i32,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: ClMem,
    a_offset: usize,
    a_ld: usize,
    a_stride: usize,
    b: ClMem,
    b_offset: usize,
    b_ld: usize,
    b_stride: usize,
    beta: f32,
    c: ClMem,
    c_offset: usize,
    c_ld: usize,
    c_stride: usize,
    batch_count: usize,
    queue: *mut ClQueue,
    event: *mut ClEvent,
) -> i32;

/// The loaded library and the two entry points we call.
pub(crate) struct ClBlast {
    sgemm: SgemmFn,
    sgemm_strided_batched: SgemmStridedBatchedFn,
    /// Keeps the entry points valid for the life of the process.
    _library: Library,
}

/// One matrix operand: a `cl_mem`, the offset of its first element, its leading dimension,
/// and the distance between consecutive batch items (elements).
#[derive(Clone, Copy)]
pub(crate) struct RawMatrix {
    pub(crate) mem: ClMem,
    pub(crate) offset: usize,
    pub(crate) ld: usize,
    pub(crate) stride: usize,
}

/// The library names tried, in order: Debian's runtime package ships only the versioned name.
fn library_names() -> [std::ffi::OsString; 2] {
    ["libclblast.so.1".into(), libloading::library_filename("clblast")]
}

/// CLBlast, loaded once per process; the error says what was tried and why it failed.
pub(crate) fn clblast() -> Result<&'static ClBlast, OpenClError> {
    static LOADED: OnceLock<Result<ClBlast, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| ClBlast::load(&library_names()))
        .as_ref()
        .map_err(|reason| OpenClError::ClBlastUnavailable { reason: reason.clone() })
}

impl ClBlast {
    /// The first of `names` that loads, or every name with its loader message.
    fn load(names: &[std::ffi::OsString]) -> Result<Self, String> {
        let mut failures = Vec::new();
        for name in names {
            // SAFETY: loading CLBlast runs only its (and the C++ runtime's) initialisers.
            match unsafe { Library::new(name) } {
                Ok(library) => return Self::from_library(library).map_err(|e| format!("{}: {e}", name.display())),
                Err(e) => failures.push(format!("{}: {e}", name.display())),
            }
        }
        Err(failures.join("; "))
    }

    fn from_library(library: Library) -> Result<Self, libloading::Error> {
        // SAFETY: the symbol types are the C prototypes of clblast_c.h (CLBlast 1.x: enums are
        // C ints, sizes are size_t, handles are pointers).
        unsafe {
            let sgemm = *library.get::<SgemmFn>("CLBlastSgemm")?;
            let sgemm_strided_batched = *library.get::<SgemmStridedBatchedFn>("CLBlastSgemmStridedBatched")?;
            Ok(Self { sgemm, sgemm_strided_batched, _library: library })
        }
    }

    /// Enqueues `c = alpha * op(a) * op(b) + beta * c` (row-major) for `batch` items on `queue`.
    ///
    /// # Safety
    /// `queue` and the three `mem`s must be live handles of one context, and every batch item
    /// of every operand must lie inside its buffer (CLBlast checks sizes, not ownership).
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn gemm(
        &self,
        queue: ClQueue,
        (trans_a, trans_b): (bool, bool),
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        a: RawMatrix,
        b: RawMatrix,
        beta: f32,
        c: RawMatrix,
        batch: usize,
    ) -> Result<(), OpenClError> {
        let t = |trans: bool| if trans { TRANSPOSE_YES } else { TRANSPOSE_NO };
        let mut queue = queue;
        // SAFETY: the caller guarantees live handles and in-bounds operands; no event is asked for.
        let status = unsafe {
            if batch == 1 {
                (self.sgemm)(
                    ROW_MAJOR,
                    t(trans_a),
                    t(trans_b),
                    m,
                    n,
                    k,
                    alpha,
                    a.mem,
                    a.offset,
                    a.ld,
                    b.mem,
                    b.offset,
                    b.ld,
                    beta,
                    c.mem,
                    c.offset,
                    c.ld,
                    &mut queue,
                    std::ptr::null_mut(),
                )
            } else {
                (self.sgemm_strided_batched)(
                    ROW_MAJOR,
                    t(trans_a),
                    t(trans_b),
                    m,
                    n,
                    k,
                    alpha,
                    a.mem,
                    a.offset,
                    a.ld,
                    a.stride,
                    b.mem,
                    b.offset,
                    b.ld,
                    b.stride,
                    beta,
                    c.mem,
                    c.offset,
                    c.ld,
                    c.stride,
                    batch,
                    &mut queue,
                    std::ptr::null_mut(),
                )
            }
        };
        if status == 0 {
            Ok(())
        } else {
            let call = if batch == 1 { "CLBlastSgemm" } else { "CLBlastSgemmStridedBatched" };
            Err(OpenClError::ClBlast { call, status, name: status_name(status) })
        }
    }
}

/// The symbolic name of a CLBlast status code (clblast_c.h's `CLBlastStatusCode`).
fn status_name(status: i32) -> &'static str {
    match status {
        -3 => "OpenCLCompilerNotAvailable",
        -4 => "TempBufferAllocFailure",
        -5 => "OpenCLOutOfResources",
        -6 => "OpenCLOutOfHostMemory",
        -11 => "OpenCLBuildProgramFailure",
        -30 => "InvalidValue",
        -36 => "InvalidCommandQueue",
        -38 => "InvalidMemObject",
        -54 => "InvalidLocalThreadsTotal",
        -59 => "InvalidOperation",
        -61 => "InvalidBufferSize",
        -1024 => "NotImplemented",
        -1017 => "InvalidDimension",
        -1016 => "InvalidLeadDimA",
        -1015 => "InvalidLeadDimB",
        -1014 => "InvalidLeadDimC",
        -1011 => "InsufficientMemoryA",
        -1010 => "InsufficientMemoryB",
        -1009 => "InsufficientMemoryC",
        -2049 => "InvalidBatchCount",
        -2046 => "InvalidLocalMemUsage",
        -2041 => "DatabaseError",
        -2040 => "UnknownError",
        -2039 => "UnexpectedError",
        _ => "see clblast_c.h",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_names_parse() {
        assert_eq!(GemmEngine::parse("CLBlast").unwrap(), Some(GemmEngine::ClBlast));
        assert_eq!(GemmEngine::parse(" own ").unwrap(), Some(GemmEngine::Own));
        assert_eq!(GemmEngine::parse("auto").unwrap(), None);
        let err = GemmEngine::parse("cublas").unwrap_err();
        assert!(err.to_string().contains("`cublas`") && err.to_string().contains(GEMM_ENV), "{err}");
    }

    #[test]
    fn a_missing_library_names_what_was_tried() {
        let Err(reason) = ClBlast::load(&["libclblast-missing.so.9".into()]) else { panic!("must not load") };
        assert!(reason.contains("libclblast-missing.so.9"), "{reason}");
        let err = OpenClError::ClBlastUnavailable { reason };
        assert!(err.to_string().contains("libclblast1") && err.to_string().contains("ALEX_OPENCL_GEMM=own"), "{err}");
    }

    #[test]
    fn status_codes_have_names() {
        assert_eq!(status_name(-1009), "InsufficientMemoryC");
        assert_eq!(status_name(-7), "see clblast_c.h");
    }
}
