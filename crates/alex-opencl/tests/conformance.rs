//! The backend-generic conformance suite of `alex-autograd` (every op against f64 formulas
//! and against the CPU backend within 1e-4 relative, plus gradient checks through this
//! backend), instantiated for OpenCL.

use std::io::Write as _;

/// The backend, or — with no device and without `ALEX_REQUIRE_OPENCL=1` — a skip of this
/// whole test binary: the macro takes a backend value, not an `Option`, so the only way to
/// skip is to end the process successfully after printing the reason.
fn backend_or_skip() -> alex_opencl::OpenClBackend {
    alex_opencl::test_backend().unwrap_or_else(|| {
        // Past libtest's output capture, which exiting would otherwise swallow.
        let _ = writeln!(std::io::stderr(), "no OpenCL device: conformance tests skipped");
        std::process::exit(0)
    })
}

alex_autograd::backend_conformance_tests!(backend_or_skip());
