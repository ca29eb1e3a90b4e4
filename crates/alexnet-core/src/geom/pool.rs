use serde::{Deserialize, Serialize};

use super::{Rounding, window_output};
use crate::error::{Axis, Error, Result, nonzero};
use crate::shape::Shape4;

/// Which reduction a pooling window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PoolKind {
    /// Maximum; the backward routes each gradient to the first maximum in window order.
    Max,
    /// Average over the window cells that lie inside the input (padding not counted).
    Avg,
}

/// Geometry of 2-D pooling, applied to each channel plane independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PoolGeom {
    /// Window height.
    pub window_h: usize,
    /// Window width.
    pub window_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Padding above and below.
    pub pad_h: usize,
    /// Padding left and right.
    pub pad_w: usize,
    /// Floor (PyTorch), ceil (Caffe) or exact output size.
    pub rounding: Rounding,
}

impl PoolGeom {
    /// A square window with equal stride and padding on both axes.
    ///
    /// ```
    /// use alexnet_core::{PoolGeom, Rounding, Shape4};
    /// // AlexNet's overlapping pooling: window 3, stride 2.
    /// let pool = PoolGeom::square(3, 2, 0, Rounding::Floor)?;
    /// assert_eq!(pool.output_shape(Shape4::new(1, 96, 55, 55)?)?, Shape4::new(1, 96, 27, 27)?);
    /// # Ok::<(), alexnet_core::Error>(())
    /// ```
    pub fn square(window: usize, stride: usize, padding: usize, rounding: Rounding) -> Result<Self> {
        let geom = Self {
            window_h: window,
            window_w: window,
            stride_h: stride,
            stride_w: stride,
            pad_h: padding,
            pad_w: padding,
            rounding,
        };
        geom.validate()?;
        Ok(geom)
    }

    /// Checks everything that does not depend on the input.
    pub fn validate(&self) -> Result<()> {
        nonzero("window height", self.window_h)?;
        nonzero("window width", self.window_w)?;
        nonzero("stride height", self.stride_h)?;
        nonzero("stride width", self.stride_w)?;
        for (axis, padding, window) in
            [(Axis::Height, self.pad_h, self.window_h), (Axis::Width, self.pad_w, self.window_w)]
        {
            if padding >= window {
                return Err(Error::PaddingTooLarge { axis, padding, window });
            }
        }
        Ok(())
    }

    /// The output shape for `input`; the one output-size function of pooling.
    pub fn output_shape(&self, input: Shape4) -> Result<Shape4> {
        self.validate()?;
        let h = window_output(Axis::Height, input.h, self.window_h, self.stride_h, self.pad_h, self.rounding)?;
        let w = window_output(Axis::Width, input.w, self.window_w, self.stride_w, self.pad_w, self.rounding)?;
        Shape4::new(input.n, input.c, h, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n: usize, c: usize, h: usize, w: usize) -> Shape4 {
        Shape4::new(n, c, h, w).unwrap()
    }

    /// AlexNet's three pooling layers: 55 -> 27, 27 -> 13, 13 -> 6, in every rounding mode.
    #[test]
    fn alexnet_pool_shapes() {
        for rounding in [Rounding::Floor, Rounding::Ceil, Rounding::Exact] {
            let pool = PoolGeom::square(3, 2, 0, rounding).unwrap();
            assert_eq!(pool.output_shape(shape(4, 96, 55, 55)).unwrap(), shape(4, 96, 27, 27));
            assert_eq!(pool.output_shape(shape(4, 256, 27, 27)).unwrap(), shape(4, 256, 13, 13));
            assert_eq!(pool.output_shape(shape(4, 256, 13, 13)).unwrap(), shape(4, 256, 6, 6));
        }
    }

    #[test]
    fn floor_and_ceil_modes() {
        let floor = PoolGeom::square(2, 2, 0, Rounding::Floor).unwrap();
        let ceil = PoolGeom::square(2, 2, 0, Rounding::Ceil).unwrap();
        assert_eq!(floor.output_shape(shape(1, 1, 7, 7)).unwrap(), shape(1, 1, 3, 3));
        assert_eq!(ceil.output_shape(shape(1, 1, 7, 7)).unwrap(), shape(1, 1, 4, 4));
        let exact = PoolGeom::square(2, 2, 0, Rounding::Exact).unwrap();
        assert!(matches!(exact.output_shape(shape(1, 1, 7, 7)), Err(Error::DoesNotClose { nearest_exact: 8, .. })));
    }

    #[test]
    fn invalid_pool_geometry() {
        assert_eq!(PoolGeom::square(0, 2, 0, Rounding::Floor).unwrap_err(), Error::ZeroSize { what: "window height" });
        assert_eq!(PoolGeom::square(3, 0, 0, Rounding::Floor).unwrap_err(), Error::ZeroSize { what: "stride height" });
        assert_eq!(
            PoolGeom::square(3, 2, 3, Rounding::Floor).unwrap_err(),
            Error::PaddingTooLarge { axis: Axis::Height, padding: 3, window: 3 }
        );
        let pool = PoolGeom::square(5, 1, 0, Rounding::Floor).unwrap();
        assert!(matches!(pool.output_shape(shape(1, 1, 4, 8)), Err(Error::WindowTooLarge { window: 5, input: 4, .. })));
    }
}
