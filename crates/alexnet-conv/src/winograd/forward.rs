//! Winograd forward convolution.

use alexnet_core::{Conv2dGeom, Shape4};

use super::{Problem, run};
use crate::ConvWorkspace;

/// `y = conv(x, w) + bias` (overwritten) for a 3x3, stride-1 `geom` whose buffers the caller
/// checked.
pub(crate) fn forward(
    geom: &Conv2dGeom,
    input: Shape4,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    run(&Problem::new(geom, input, false), geom, w, x, bias, y, ws);
}
