//! # alexnet-core
//!
//! The shared vocabulary of alexnet-rs: NCHW shapes ([`Shape4`]), the geometry of windowed
//! ops with one output-size function each ([`Conv2dGeom`], [`PoolGeom`], [`LrnParams`]),
//! the error type ([`Error`]), a counter-based RNG that every backend reproduces
//! ([`rng`]), and the [`Backend`] trait that the CPU and OpenCL backends implement.
//!
//! Invalid geometry is an `Err` that names the values:
//!
//! ```
//! use alexnet_core::{Conv2dGeom, PoolGeom, Rounding, Shape4};
//!
//! // AlexNet's first stage: 227 -> conv1 (11x11, stride 4) -> 55 -> pool 3/2 -> 27.
//! let conv1 = Conv2dGeom::square(3, 96, 11, 4, 0, 1)?.with_rounding(Rounding::Exact);
//! let pool = PoolGeom::square(3, 2, 0, Rounding::Floor)?;
//! let x = Shape4::new(128, 3, 227, 227)?;
//! let y = pool.output_shape(conv1.output_shape(x)?)?;
//! assert_eq!(y.dims(), [128, 96, 27, 27]);
//!
//! // The paper's nominal 224 does not close: the error says so and names 227.
//! let err = conv1.output_shape(Shape4::new(1, 3, 224, 224)?).unwrap_err();
//! assert!(err.to_string().contains("227"));
//! # Ok::<(), alexnet_core::Error>(())
//! ```

mod backend;
mod error;
mod geom;
pub mod rng;
mod shape;

pub use backend::{
    Activation, Backend, BatchNormParams, ChannelLayout, DeviceCapabilities, SgdStep, XENT_SUMMARY_LEN, XentSummary,
};
pub use error::{Axis, Error, Result, check_len};
pub use geom::{AlphaConvention, Conv2dGeom, LrnParams, PoolGeom, PoolKind, Rounding, window_output};
pub use rng::MaskWindow;
pub use shape::Shape4;

/// The README's code blocks, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
