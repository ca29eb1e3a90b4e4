//! The backend-generic conformance suite of `alex-autograd` (every op against f64 formulas
//! and against the CPU backend within 1e-4 relative, plus gradient checks through this
//! backend), instantiated for OpenCL. Without a device each test returns early after
//! `test_backend` prints why (or fails, with `ALEX_REQUIRE_OPENCL=1`).

alex_autograd::backend_conformance_tests!(optional: alex_opencl::test_backend());
