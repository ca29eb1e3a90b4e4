//! The error type shared by geometry checks and backends.

use thiserror::Error;

/// Which spatial axis a geometry error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Rows (height).
    Height,
    /// Columns (width).
    Width,
}

impl std::fmt::Display for Axis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Axis::Height => "height",
            Axis::Width => "width",
        })
    }
}

/// Everything that can go wrong in `alexnet-core` and in a [`crate::Backend`].
#[derive(Debug, Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A size that must be positive was zero.
    #[error("{what} must be positive, got 0")]
    ZeroSize {
        /// The name of the size (e.g. `"stride height"`).
        what: &'static str,
    },
    /// A channel count is not divisible by the number of groups.
    #[error("{what} = {channels} is not divisible by groups = {groups}")]
    GroupsDoNotDivide {
        /// `"input channels"` or `"output channels"`.
        what: &'static str,
        /// The channel count.
        channels: usize,
        /// The group count.
        groups: usize,
    },
    /// The window (kernel) does not fit in the padded input.
    #[error(
        "{axis}: window {window} is larger than the padded input {padded_input} (input {input} + 2 x padding {padding})"
    )]
    WindowTooLarge {
        /// Axis concerned.
        axis: Axis,
        /// Window (kernel) extent.
        window: usize,
        /// Input extent.
        input: usize,
        /// Padding on each side.
        padding: usize,
        /// `input + 2 * padding`.
        padded_input: usize,
    },
    /// Padding is at least as large as the window, so some windows would see only padding.
    #[error("{axis}: padding {padding} must be smaller than the window {window}")]
    PaddingTooLarge {
        /// Axis concerned.
        axis: Axis,
        /// Padding on each side.
        padding: usize,
        /// Window extent.
        window: usize,
    },
    /// The window does not tile the padded input exactly where exactness was required.
    #[error(
        "{axis}: (input {input} + 2 x padding {padding} - window {window}) is not a multiple of stride {stride}; \
         the nearest input that closes exactly is {nearest_exact}"
    )]
    DoesNotClose {
        /// Axis concerned.
        axis: Axis,
        /// Input extent.
        input: usize,
        /// Window extent.
        window: usize,
        /// Stride.
        stride: usize,
        /// Padding on each side.
        padding: usize,
        /// The smallest input at least as large as `input` for which the arithmetic closes.
        nearest_exact: usize,
    },
    /// Local response normalisation needs an odd, positive window.
    #[error("LRN size must be odd and positive, got {size}")]
    LrnSize {
        /// The rejected size.
        size: usize,
    },
    /// A floating-point parameter is out of its valid range.
    #[error("{what} = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The parameter name.
        what: &'static str,
        /// Its value.
        value: f64,
        /// Why it is rejected.
        reason: &'static str,
    },
    /// Input tensor shape disagrees with what the op expects.
    #[error("{op}: expected shape {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// The op that rejected the shape.
        op: &'static str,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        got: Vec<usize>,
    },
    /// A buffer has the wrong number of elements.
    #[error("{op}: buffer `{buffer}` has {got} elements, expected {expected}")]
    BufferSize {
        /// The op that rejected the buffer.
        op: &'static str,
        /// Which buffer (e.g. `"weight"`).
        buffer: &'static str,
        /// Expected element count.
        expected: usize,
        /// Actual element count.
        got: usize,
    },
    /// A backend-specific failure (device lost, kernel build failed, ...).
    #[error("{backend} backend: {message}")]
    Backend {
        /// Backend name.
        backend: String,
        /// Human-readable description.
        message: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns [`Error::BufferSize`] unless `got == expected`.
pub fn check_len(op: &'static str, buffer: &'static str, expected: usize, got: usize) -> Result<()> {
    if got == expected { Ok(()) } else { Err(Error::BufferSize { op, buffer, expected, got }) }
}

/// Returns [`Error::ZeroSize`] if `value == 0`.
pub(crate) fn nonzero(what: &'static str, value: usize) -> Result<()> {
    if value == 0 { Err(Error::ZeroSize { what }) } else { Ok(()) }
}
