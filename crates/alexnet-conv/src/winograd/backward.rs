//! Winograd input gradient: `dx` is the stride-1 convolution of `dy` with every kernel
//! flipped in both axes and input and output channels swapped, padded by `2 - pad` (a
//! negative padding crops).

use alexnet_core::{Conv2dGeom, Shape4};

use super::{Problem, run};
use crate::ConvWorkspace;

/// `dx` (overwritten) from `dy` for a 3x3, stride-1 `geom` whose buffers the caller checked.
pub(crate) fn backward_input(
    geom: &Conv2dGeom,
    input: Shape4,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    ws: &mut ConvWorkspace,
) {
    run(&Problem::new(geom, input, true), geom, w, dy, None, dx, ws);
}
