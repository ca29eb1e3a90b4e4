//! Geometry of windowed ops: one struct per op family, each with one output-size function.
//!
//! Convolution and pooling share the per-axis arithmetic in [`window_output`], so every
//! kernel and every check agrees on it.

mod conv;
mod lrn;
mod pool;

pub use conv::Conv2dGeom;
pub use lrn::{AlphaConvention, LrnParams};
pub use pool::{PoolGeom, PoolKind};

use serde::{Deserialize, Serialize};

use crate::error::{Axis, Error, Result};

/// How an output extent is derived when the window does not tile the padded input exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Rounding {
    /// `floor((in + 2p - k) / s) + 1`: PyTorch's default; trailing inputs may be ignored.
    #[default]
    Floor,
    /// `ceil((in + 2p - k) / s) + 1`, dropping a last window that would start in the right
    /// padding: Caffe's pooling rule.
    Ceil,
    /// Like floor, but an error unless the arithmetic closes exactly (the paper's 227 -> 55).
    Exact,
}

/// The output extent along one axis of a window of `window` cells moving by `stride` over
/// `input` cells padded by `padding` on both sides.
///
/// Errors when a size is zero, when the window is larger than the padded input, or under
/// [`Rounding::Exact`] when the arithmetic does not close.
pub fn window_output(
    axis: Axis,
    input: usize,
    window: usize,
    stride: usize,
    padding: usize,
    rounding: Rounding,
) -> Result<usize> {
    crate::error::nonzero("input extent", input)?;
    crate::error::nonzero("window", window)?;
    crate::error::nonzero("stride", stride)?;
    let padded_input = input + 2 * padding;
    if window > padded_input {
        return Err(Error::WindowTooLarge { axis, window, input, padding, padded_input });
    }
    let span = padded_input - window;
    let floor = span / stride + 1;
    match rounding {
        Rounding::Floor => Ok(floor),
        Rounding::Exact if span.is_multiple_of(stride) => Ok(floor),
        Rounding::Exact => Err(Error::DoesNotClose {
            axis,
            input,
            window,
            stride,
            padding,
            nearest_exact: input + (stride - span % stride),
        }),
        Rounding::Ceil => {
            let mut out = span.div_ceil(stride) + 1;
            // A last window starting in the right padding or beyond sees no input: drop it
            // (Caffe and PyTorch).
            if (out - 1) * stride >= input + padding {
                out -= 1;
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_ceil_exact_agree_when_exact() {
        for r in [Rounding::Floor, Rounding::Ceil, Rounding::Exact] {
            assert_eq!(window_output(Axis::Height, 227, 11, 4, 0, r).unwrap(), 55);
        }
    }

    #[test]
    fn floor_and_ceil_differ_when_inexact() {
        // 224 input, 11 kernel, stride 4: (224 - 11) / 4 = 53.25.
        assert_eq!(window_output(Axis::Width, 224, 11, 4, 0, Rounding::Floor).unwrap(), 54);
        assert_eq!(window_output(Axis::Width, 224, 11, 4, 0, Rounding::Ceil).unwrap(), 55);
        let err = window_output(Axis::Width, 224, 11, 4, 0, Rounding::Exact).unwrap_err();
        assert_eq!(
            err,
            Error::DoesNotClose {
                axis: Axis::Width,
                input: 224,
                window: 11,
                stride: 4,
                padding: 0,
                nearest_exact: 227
            }
        );
        assert!(err.to_string().contains("227"), "{err}");
    }

    #[test]
    fn ceil_drops_window_starting_in_padding() {
        // in 5, k 2, s 2, p 1: padded 7, span 5, ceil(5/2)+1 = 4; window 3 would start at
        // padded index 6 = input + padding, entirely in padding, so Caffe keeps 3.
        assert_eq!(window_output(Axis::Height, 5, 2, 2, 1, Rounding::Ceil).unwrap(), 3);
        assert_eq!(window_output(Axis::Height, 5, 2, 2, 1, Rounding::Floor).unwrap(), 3);
        // in 6, k 3, s 2, p 0: floor 2, ceil 3 (last window hangs over the edge).
        assert_eq!(window_output(Axis::Height, 6, 3, 2, 0, Rounding::Floor).unwrap(), 2);
        assert_eq!(window_output(Axis::Height, 6, 3, 2, 0, Rounding::Ceil).unwrap(), 3);
        // in 2, k 1, s 3, p 0: ceil(1/3)+1 = 2, but the second window would start at 3,
        // past the input: it is dropped even without padding.
        assert_eq!(window_output(Axis::Height, 2, 1, 3, 0, Rounding::Ceil).unwrap(), 1);
    }

    #[test]
    fn window_larger_than_padded_input_is_an_error() {
        let err = window_output(Axis::Height, 4, 7, 1, 1, Rounding::Floor).unwrap_err();
        assert_eq!(err, Error::WindowTooLarge { axis: Axis::Height, window: 7, input: 4, padding: 1, padded_input: 6 });
        let msg = err.to_string();
        assert!(msg.contains('7') && msg.contains('6') && msg.contains("height"), "{msg}");
    }

    #[test]
    fn zero_sizes_are_errors() {
        for (input, window, stride, what) in [(0, 3, 1, "input extent"), (5, 0, 1, "window"), (5, 3, 0, "stride")] {
            assert_eq!(
                window_output(Axis::Width, input, window, stride, 0, Rounding::Floor),
                Err(Error::ZeroSize { what })
            );
        }
    }
}
