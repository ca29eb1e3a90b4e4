//! # alexnet-conv
//!
//! 2-D convolution with groups on NCHW `f32` slices, forward and backward, by im2col + GEMM,
//! and by Winograd F(2x2, 3x3) for 3x3 stride-1 layers.
//! It depends on nothing else of alexnet-rs but `alexnet-core` (geometry and errors), and is the
//! CPU reference that other backends are checked against.
//!
//! - [`conv2d_forward`]: `y = conv(x, w) + bias`;
//! - [`conv2d_backward_input`], [`conv2d_backward_weight`], [`channel_bias_grad`]: the
//!   three gradients, each written into a caller-provided buffer (the bias gradient under the
//!   name and layout of `alexnet_core::Backend::channel_bias_grad`);
//! - [`ConvWorkspace`]: scratch (im2col columns, Winograd tiles) reused across calls, the
//!   thread count and the [`ConvAlgorithm`];
//! - [`gemm::sgemm`]: the row-major GEMM underneath, public for dense layers.
//!
//! **Winograd.** The forward pass and the input gradient of a 3x3 convolution at stride 1
//! (any padding, groups) run as Winograd F(2x2, 3x3) when the workspace's algorithm is
//! [`ConvAlgorithm::Auto`] (the default) and the layer has at least
//! [`WINOGRAD_MIN_CHANNELS`] (128) input and output channels per group (AlexNet's conv3-5) and
//! a batch of at least 256 output tiles of 2x2 per thread (6 images of 13x13 per thread; not
//! batch 1), or always with [`ConvAlgorithm::Winograd`]. The weight gradient is always im2col + GEMM.
//! Force direct with `ConvWorkspace::with_algorithm(ConvAlgorithm::Direct)` or, for every
//! workspace not given an algorithm (the `alexnet` CPU backend's), the environment variable
//! `ALEX_CONV_ALGO=direct` ([`ALGORITHM_ENV`]; `auto`, `direct`, `winograd`). Results agree
//! with direct convolution within 1e-4 relative on AlexNet's layers (rounding differs).
//!
//! ```
//! use alexnet_conv::{Conv2dGeom, ConvWorkspace, Shape4, conv2d_backward_input, conv2d_forward};
//!
//! // AlexNet's conv2: 96 -> 256 channels, 5x5, padding 2, two groups, on one 27x27 image.
//! let geom = Conv2dGeom::square(96, 256, 5, 1, 2, 2)?;
//! let input = Shape4::new(1, 96, 27, 27)?;
//! let output = geom.output_shape(input)?;
//! let x = vec![0.5; input.numel()];
//! let w = vec![0.01; geom.weight_len()];
//! let mut y = vec![0.0; output.numel()];
//! let mut ws = ConvWorkspace::new();
//! conv2d_forward(&geom, input, &x, &w, None, &mut y, &mut ws)?;
//! // Centre pixels see all 48 input channels of their group x 25 taps: 1200 * 0.5 * 0.01.
//! assert!((y[output.index(0, 0, 13, 13)] - 6.0).abs() < 1e-4);
//!
//! let mut dx = vec![0.0; input.numel()];
//! conv2d_backward_input(&geom, input, &w, &y, &mut dx, &mut ws)?;
//!
//! // A buffer of the wrong length is an error that names it.
//! let err = conv2d_forward(&geom, input, &x[1..], &w, None, &mut y, &mut ws).unwrap_err();
//! assert!(err.to_string().contains("`x` has 69983 elements, expected 69984"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod algorithm;
mod conv2d;
mod error;
pub mod gemm;
mod winograd;
mod workspace;

pub use alexnet_core::{ChannelLayout, Conv2dGeom, Rounding, Shape4};
pub use algorithm::{ALGORITHM_ENV, ConvAlgorithm};
pub use conv2d::{channel_bias_grad, conv2d_backward_input, conv2d_backward_weight, conv2d_forward};
pub use error::ConvError;
pub use winograd::WINOGRAD_MIN_CHANNELS;
pub use workspace::ConvWorkspace;

/// The README's code blocks, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
