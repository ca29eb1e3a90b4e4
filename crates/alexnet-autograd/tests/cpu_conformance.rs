//! The backend conformance suite on the CPU backend: direct formulas and gradient checks.

alexnet_autograd::backend_conformance_tests!(alexnet_autograd::CpuBackend::new());
