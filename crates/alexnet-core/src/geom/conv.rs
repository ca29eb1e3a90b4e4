use serde::{Deserialize, Serialize};

use super::{Rounding, window_output};
use crate::error::{Axis, Error, Result, nonzero};
use crate::shape::Shape4;

/// Geometry of a 2-D convolution with groups.
///
/// The weight is laid out `[out_channels, in_channels / groups, kernel_h, kernel_w]`; output
/// channel `o` belongs to group `o / (out_channels / groups)` and sees input channels
/// `g * in_per_group .. (g + 1) * in_per_group` of that group `g`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2dGeom {
    /// Input channels (all groups together).
    pub in_channels: usize,
    /// Output channels (all groups together).
    pub out_channels: usize,
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero padding above and below.
    pub pad_h: usize,
    /// Zero padding left and right.
    pub pad_w: usize,
    /// Number of groups (AlexNet: 2 on conv2, conv4, conv5).
    pub groups: usize,
    /// How the output size is rounded.
    pub rounding: Rounding,
}

impl Conv2dGeom {
    /// A square-kernel convolution with equal stride and padding on both axes, floor rounding.
    ///
    /// ```
    /// use alexnet_core::{Conv2dGeom, Shape4};
    /// // AlexNet conv2: 256 x 5x5x48, pad 2, two groups.
    /// let conv2 = Conv2dGeom::square(96, 256, 5, 1, 2, 2)?;
    /// let out = conv2.output_shape(Shape4::new(1, 96, 27, 27)?)?;
    /// assert_eq!(out, Shape4::new(1, 256, 27, 27)?);
    /// assert_eq!(conv2.param_count(true), 307_456);
    /// # Ok::<(), alexnet_core::Error>(())
    /// ```
    pub fn square(
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
    ) -> Result<Self> {
        let geom = Self {
            in_channels,
            out_channels,
            kernel_h: kernel,
            kernel_w: kernel,
            stride_h: stride,
            stride_w: stride,
            pad_h: padding,
            pad_w: padding,
            groups,
            rounding: Rounding::Floor,
        };
        geom.validate()?;
        Ok(geom)
    }

    /// The same geometry with another rounding rule.
    pub fn with_rounding(self, rounding: Rounding) -> Self {
        Self { rounding, ..self }
    }

    /// Checks everything that does not depend on the input's spatial size.
    pub fn validate(&self) -> Result<()> {
        nonzero("input channels", self.in_channels)?;
        nonzero("output channels", self.out_channels)?;
        nonzero("kernel height", self.kernel_h)?;
        nonzero("kernel width", self.kernel_w)?;
        nonzero("stride height", self.stride_h)?;
        nonzero("stride width", self.stride_w)?;
        nonzero("groups", self.groups)?;
        for (what, channels) in [("input channels", self.in_channels), ("output channels", self.out_channels)] {
            if !channels.is_multiple_of(self.groups) {
                return Err(Error::GroupsDoNotDivide { what, channels, groups: self.groups });
            }
        }
        Ok(())
    }

    /// The output shape for `input`; the one output-size function of convolution.
    pub fn output_shape(&self, input: Shape4) -> Result<Shape4> {
        self.validate()?;
        if input.c != self.in_channels {
            return Err(Error::ShapeMismatch {
                op: "conv2d",
                expected: vec![input.n, self.in_channels, input.h, input.w],
                got: input.dims().to_vec(),
            });
        }
        let h = window_output(Axis::Height, input.h, self.kernel_h, self.stride_h, self.pad_h, self.rounding)?;
        let w = window_output(Axis::Width, input.w, self.kernel_w, self.stride_w, self.pad_w, self.rounding)?;
        Shape4::new(input.n, self.out_channels, h, w)
    }

    /// Input channels seen by each output channel.
    pub fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }

    /// Output channels per group.
    pub fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }

    /// Weight dimensions `[out_channels, in_channels / groups, kernel_h, kernel_w]`.
    pub fn weight_dims(&self) -> [usize; 4] {
        [self.out_channels, self.in_per_group(), self.kernel_h, self.kernel_w]
    }

    /// Number of weight elements.
    pub fn weight_len(&self) -> usize {
        self.weight_dims().iter().product()
    }

    /// Weights plus (optionally) one bias per output channel.
    pub fn param_count(&self, bias: bool) -> usize {
        self.weight_len() + if bias { self.out_channels } else { 0 }
    }

    /// Multiply-adds x 2 for one forward pass over `input` (bias excluded).
    pub fn forward_flops(&self, input: Shape4) -> Result<u64> {
        let out = self.output_shape(input)?;
        let per_output = (self.in_per_group() * self.kernel_h * self.kernel_w) as u64;
        Ok(2 * out.numel() as u64 * per_output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n: usize, c: usize, h: usize, w: usize) -> Shape4 {
        Shape4::new(n, c, h, w).unwrap()
    }

    /// AlexNet's five convolutions (spec section 1), with their parameter counts.
    #[test]
    fn alexnet_conv_shapes_and_params() {
        let exact = |g: Conv2dGeom| g.with_rounding(Rounding::Exact);
        let cases = [
            (
                exact(Conv2dGeom::square(3, 96, 11, 4, 0, 1).unwrap()),
                shape(2, 3, 227, 227),
                shape(2, 96, 55, 55),
                34_944,
            ),
            (
                exact(Conv2dGeom::square(96, 256, 5, 1, 2, 2).unwrap()),
                shape(2, 96, 27, 27),
                shape(2, 256, 27, 27),
                307_456,
            ),
            (
                exact(Conv2dGeom::square(256, 384, 3, 1, 1, 1).unwrap()),
                shape(2, 256, 13, 13),
                shape(2, 384, 13, 13),
                885_120,
            ),
            (
                exact(Conv2dGeom::square(384, 384, 3, 1, 1, 2).unwrap()),
                shape(2, 384, 13, 13),
                shape(2, 384, 13, 13),
                663_936,
            ),
            (
                exact(Conv2dGeom::square(384, 256, 3, 1, 1, 2).unwrap()),
                shape(2, 384, 13, 13),
                shape(2, 256, 13, 13),
                442_624,
            ),
        ];
        for (geom, input, expected, params) in cases {
            assert_eq!(geom.output_shape(input).unwrap(), expected, "{geom:?}");
            assert_eq!(geom.param_count(true), params, "{geom:?}");
        }
    }

    #[test]
    fn conv1_rejects_224_naming_227() {
        let conv1 = Conv2dGeom::square(3, 96, 11, 4, 0, 1).unwrap().with_rounding(Rounding::Exact);
        let err = conv1.output_shape(shape(1, 3, 224, 224)).unwrap_err();
        assert!(matches!(err, Error::DoesNotClose { nearest_exact: 227, .. }), "{err:?}");
    }

    #[test]
    fn groups_must_divide_channels() {
        assert_eq!(
            Conv2dGeom::square(96, 256, 5, 1, 2, 5).unwrap_err(),
            Error::GroupsDoNotDivide { what: "input channels", channels: 96, groups: 5 }
        );
        assert_eq!(
            Conv2dGeom::square(96, 250, 5, 1, 2, 3).unwrap_err(),
            Error::GroupsDoNotDivide { what: "output channels", channels: 250, groups: 3 }
        );
    }

    #[test]
    fn zero_sizes_are_rejected() {
        assert_eq!(Conv2dGeom::square(0, 4, 3, 1, 0, 1).unwrap_err(), Error::ZeroSize { what: "input channels" });
        assert_eq!(Conv2dGeom::square(3, 0, 3, 1, 0, 1).unwrap_err(), Error::ZeroSize { what: "output channels" });
        assert_eq!(Conv2dGeom::square(3, 4, 0, 1, 0, 1).unwrap_err(), Error::ZeroSize { what: "kernel height" });
        assert_eq!(Conv2dGeom::square(3, 4, 3, 0, 0, 1).unwrap_err(), Error::ZeroSize { what: "stride height" });
        assert_eq!(Conv2dGeom::square(3, 4, 3, 1, 0, 0).unwrap_err(), Error::ZeroSize { what: "groups" });
        assert_eq!(Shape4::new(1, 3, 0, 4).unwrap_err(), Error::ZeroSize { what: "height" });
    }

    #[test]
    fn kernel_larger_than_padded_input() {
        let g = Conv2dGeom::square(3, 4, 7, 1, 1, 1).unwrap();
        assert!(matches!(g.output_shape(shape(1, 3, 4, 9)), Err(Error::WindowTooLarge { axis: Axis::Height, .. })));
    }

    #[test]
    fn channel_mismatch_names_both_shapes() {
        let g = Conv2dGeom::square(3, 4, 3, 1, 1, 1).unwrap();
        let err = g.output_shape(shape(1, 5, 8, 8)).unwrap_err();
        assert_eq!(err, Error::ShapeMismatch { op: "conv2d", expected: vec![1, 3, 8, 8], got: vec![1, 5, 8, 8] });
    }

    #[test]
    fn flops_counts_multiply_adds_twice() {
        let g = Conv2dGeom::square(2, 4, 3, 1, 0, 2).unwrap();
        // out 1x4x2x2 = 16 outputs, each 1 channel x 3 x 3 = 9 MACs.
        assert_eq!(g.forward_flops(shape(1, 2, 4, 4)).unwrap(), 2 * 16 * 9);
    }
}
