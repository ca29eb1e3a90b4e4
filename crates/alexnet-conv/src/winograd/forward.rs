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
    let out = geom.output_shape(input).expect("geometry validated by the caller");
    let problem = Problem {
        batch: input.n,
        in_channels: geom.in_channels,
        out_channels: geom.out_channels,
        groups: geom.groups,
        in_h: input.h,
        in_w: input.w,
        out_h: out.h,
        out_w: out.w,
        pad_h: geom.pad_h as isize,
        pad_w: geom.pad_w as isize,
        input_gradient: false,
    };
    run(&problem, geom, w, x, bias, y, ws);
}
