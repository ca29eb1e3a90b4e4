//! im2col + GEMM 2-D convolution with groups, forward and backward, on NCHW f32 slices.
//!
//! Under construction.
