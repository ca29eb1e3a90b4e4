//! The backend-generic conformance suite of `alexnet-autograd` (every op against f64 formulas
//! and against the CPU backend within 1e-4 relative, plus gradient checks through this
//! backend), instantiated twice for OpenCL: with our own GEMM kernel and with CLBlast. Without
//! a device (or without CLBlast, for the second) each test returns early after printing why,
//! or fails with `ALEX_REQUIRE_OPENCL=1`.

mod own_gemm {
    alexnet_autograd::backend_conformance_tests!(
        optional: alexnet_opencl::test_backend_with_gemm(alexnet_opencl::GemmEngine::Own)
    );
}

mod clblast_gemm {
    alexnet_autograd::backend_conformance_tests!(
        optional: alexnet_opencl::test_backend_with_gemm(alexnet_opencl::GemmEngine::ClBlast)
    );
}
