//! Local response normalisation across channels, forward and backward.
//!
//! `b_i = a_i * s_i^-beta` with `s_i = k + alpha' * sum_{j in window(i)} a_j^2`, where the
//! window is [`LrnParams::window`] (`n` channels centred on `i`, clipped at the first and last
//! channel as in the paper) and `alpha'` is [`LrnParams::sum_coefficient`]: `alpha` under the
//! paper's convention, `alpha / n` under Caffe/PyTorch's.
//!
//! The forward writes the scale `s` for the backward:
//! `da_i = db_i * s_i^-beta - 2 alpha' beta a_i * sum_{j in window(i)} db_j * b_j / s_j`
//! (the window is symmetric, so `i in window(j)` exactly when `j in window(i)`).
//!
//! Each scale is the direct sum of the window's squares, `n` multiply-adds per element over
//! contiguous `h x w` rows; no running sum that adds and subtracts across channels, whose f32
//! cancellation would corrupt small channels that follow large ones. For `beta = 0.75` the
//! power is `1 / (sqrt(s) * sqrt(sqrt(s)))` instead of `powf`.

mod backward;
mod forward;
#[cfg(test)]
mod tests;

use alexnet_core::{LrnParams, Shape4};

pub use backward::lrn_backward;
pub use forward::lrn_forward;

use crate::error::Result;
use crate::{check_buffer, checked_numel};

/// Validates `params` and `input` and checks that every buffer has the input's length.
fn check(op: &'static str, params: &LrnParams, input: Shape4, buffers: &[(&'static str, usize)]) -> Result<()> {
    params.validate()?;
    let len = checked_numel(op, input)?;
    for &(name, got) in buffers {
        check_buffer(op, name, len, got)?;
    }
    Ok(())
}

/// `s^-beta`, as a type so that each variant of a kernel is compiled (and vectorised) on
/// its own instead of branching per element.
trait InversePower: Copy + Send + Sync {
    fn of(self, s: f32) -> f32;
}

/// `s^-0.75 = 1 / (sqrt(s) * sqrt(sqrt(s)))`: two square roots and a division, several times
/// cheaper than `powf`.
#[derive(Clone, Copy)]
struct ThreeQuarters;

impl InversePower for ThreeQuarters {
    #[inline(always)]
    fn of(self, s: f32) -> f32 {
        let root = s.sqrt();
        1.0 / (root * root.sqrt())
    }
}

/// Any other `beta`, through `powf`.
#[derive(Clone, Copy)]
struct AnyBeta {
    neg_beta: f32,
}

impl InversePower for AnyBeta {
    #[inline(always)]
    fn of(self, s: f32) -> f32 {
        s.powf(self.neg_beta)
    }
}

/// Runs `kernel!(power)` with the fast power for `beta = 0.75`, the generic one otherwise.
macro_rules! with_inverse_power {
    ($beta:expr, |$power:ident| $body:expr) => {
        if $beta == 0.75 {
            let $power = $crate::lrn::ThreeQuarters;
            $body
        } else {
            let $power = $crate::lrn::AnyBeta { neg_beta: -$beta };
            $body
        }
    };
}
use with_inverse_power;
