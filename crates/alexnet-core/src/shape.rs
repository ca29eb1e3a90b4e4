//! NCHW tensor shapes.

use serde::{Deserialize, Serialize};

use crate::error::{Result, nonzero};

/// The shape of a 4-D activation in NCHW order (batch, channels, height, width), row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shape4 {
    /// Batch size.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Shape4 {
    /// A shape; every extent must be positive.
    pub fn new(n: usize, c: usize, h: usize, w: usize) -> Result<Self> {
        nonzero("batch size", n)?;
        nonzero("channels", c)?;
        nonzero("height", h)?;
        nonzero("width", w)?;
        Ok(Self { n, c, h, w })
    }

    /// Total element count `n * c * h * w`.
    pub fn numel(&self) -> usize {
        self.n * self.c * self.h * self.w
    }

    /// Elements in one image: `c * h * w`.
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Elements in one channel plane: `h * w`.
    pub fn plane_len(&self) -> usize {
        self.h * self.w
    }

    /// The flat index of `(n, c, h, w)`.
    pub fn index(&self, n: usize, c: usize, h: usize, w: usize) -> usize {
        ((n * self.c + c) * self.h + h) * self.w + w
    }

    /// The shape as a `[n, c, h, w]` array, convenient for error messages.
    pub fn dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

impl std::fmt::Display for Shape4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}x{}", self.n, self.c, self.h, self.w)
    }
}
