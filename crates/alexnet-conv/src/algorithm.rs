//! Which convolution algorithm a call uses: im2col + GEMM (direct) or Winograd.

use crate::ConvError;

/// The environment variable that sets [`ConvAlgorithm`] for workspaces that were not given
/// one ([`ConvWorkspace::with_algorithm`](crate::ConvWorkspace::with_algorithm)): `auto`,
/// `direct` or `winograd`.
pub const ALGORITHM_ENV: &str = "ALEX_CONV_ALGO";

/// How [`conv2d_forward`](crate::conv2d_forward) and
/// [`conv2d_backward_input`](crate::conv2d_backward_input) compute a convolution.
///
/// Winograd applies only to 3x3 kernels at stride 1 (any padding, groups, rounding); every
/// other layer, and the weight gradient, always runs im2col + GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConvAlgorithm {
    /// Winograd where it applies and the crate's rule, from its benchmark, expects it to be
    /// faster: 3x3, stride 1, at least [`WINOGRAD_MIN_CHANNELS`](crate::WINOGRAD_MIN_CHANNELS)
    /// input and output channels per group, and a batch that gives every thread at least 256
    /// output tiles of 2x2 (not batch 1); im2col + GEMM otherwise.
    #[default]
    Auto,
    /// Always im2col + GEMM.
    Direct,
    /// Winograd wherever it applies (3x3, stride 1), however small the layer.
    Winograd,
}

impl ConvAlgorithm {
    /// Parses `auto`, `direct` or `winograd` (case-insensitive).
    ///
    /// # Errors
    /// [`ConvError::UnknownAlgorithm`] naming the value.
    pub fn parse(value: &str) -> Result<Self, ConvError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "direct" => Ok(Self::Direct),
            "winograd" => Ok(Self::Winograd),
            _ => Err(ConvError::UnknownAlgorithm { value: value.to_string() }),
        }
    }

    /// The algorithm [`ALGORITHM_ENV`] names, or [`ConvAlgorithm::Auto`] when it is unset.
    ///
    /// # Errors
    /// [`ConvError::UnknownAlgorithm`] if the variable holds anything else.
    pub fn from_env() -> Result<Self, ConvError> {
        std::env::var(ALGORITHM_ENV).map_or(Ok(Self::Auto), |v| Self::parse(&v))
    }
}
