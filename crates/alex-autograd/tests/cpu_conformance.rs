//! The backend conformance suite on the CPU backend: direct formulas and gradient checks.

alex_autograd::backend_conformance_tests!(alex_autograd::CpuBackend::new());
