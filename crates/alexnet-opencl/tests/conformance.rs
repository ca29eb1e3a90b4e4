//! The backend-generic conformance suite of `alexnet-autograd` (every op against f64 formulas
//! and against the CPU backend within 1e-4 relative, plus gradient checks through this
//! backend), instantiated for OpenCL. Without a device each test returns early after
//! `test_backend` prints why (or fails, with `ALEX_REQUIRE_OPENCL=1`).

alexnet_autograd::backend_conformance_tests!(optional: alexnet_opencl::test_backend());
