//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong in `alexnet-conv`.
///
/// Geometry and buffer-length problems are reported through [`alexnet_core::Error`] (wrapped in
/// [`ConvError::Core`]) so that callers see the same structured variants
/// (`BufferSize { op, buffer, expected, got }`, `ShapeMismatch`, `WindowTooLarge`, ...) as in
/// the rest of the workspace.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConvError {
    /// Invalid geometry, shape or buffer length.
    #[error(transparent)]
    Core(#[from] alexnet_core::Error),
    /// A size computed from the inputs does not fit in `usize`.
    #[error("{op}: {what} overflows usize")]
    SizeOverflow {
        /// The op that computed the size.
        op: &'static str,
        /// Which size (e.g. `"a = m x k"`).
        what: &'static str,
    },
    /// A convolution algorithm name that is none of `auto`, `direct`, `winograd`.
    #[error("convolution algorithm `{value}` is unknown (ALEX_CONV_ALGO takes auto, direct or winograd)")]
    UnknownAlgorithm {
        /// The value given.
        value: String,
    },
}
