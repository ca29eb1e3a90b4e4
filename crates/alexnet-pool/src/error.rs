//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong in `alexnet-pool`.
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum PoolError {
    /// Invalid geometry, LRN parameters, shape or buffer length, as reported by `alexnet-core`
    /// (e.g. [`alexnet_core::Error::WindowTooLarge`], [`alexnet_core::Error::LrnSize`],
    /// [`alexnet_core::Error::BufferSize`]).
    #[error(transparent)]
    Core(#[from] alexnet_core::Error),
    /// The element count of a shape does not fit in `usize`.
    #[error("{op}: shape {dims:?} has more elements than fit in usize")]
    TooLarge {
        /// The op that rejected the shape.
        op: &'static str,
        /// The shape as `[n, c, h, w]`.
        dims: [usize; 4],
    },
    /// A pooling plane has more cells than a `u32` plane-local index can address.
    #[error("{op}: an input plane of {h} x {w} cells is larger than u32 indices address")]
    PlaneTooLarge {
        /// The op that rejected the shape.
        op: &'static str,
        /// Plane height.
        h: usize,
        /// Plane width.
        w: usize,
    },
}

/// `Result` with [`PoolError`].
pub type Result<T, E = PoolError> = std::result::Result<T, E>;
