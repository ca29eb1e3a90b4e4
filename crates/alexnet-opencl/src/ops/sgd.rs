//! The paper's SGD step with momentum and weight decay, in place.

use alexnet_core::{Result, SgdStep};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};

pub(crate) fn step(
    be: &OpenClBackend,
    step: &SgdStep,
    w: &mut ClBuffer,
    grad: &ClBuffer,
    velocity: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "sgd_step";
    let n = w.len();
    be.check(OP, "w", w, n)?;
    be.check(OP, "grad", grad, n)?;
    be.check(OP, "velocity", velocity, n)?;
    be.launch_1d(
        Kern::SgdStep,
        n,
        &[
            Arg::U32(u("length", n)?),
            Arg::F32(step.lr),
            Arg::F32(step.momentum),
            Arg::F32(step.weight_decay),
            Arg::Buf(w),
            Arg::Buf(grad),
            Arg::Buf(velocity),
        ],
    )
}

#[cfg(test)]
mod tests {
    use alexnet_core::{Backend, SgdStep};

    use crate::testing::{assert_close, backend, down, random, up};

    #[test]
    fn three_steps_match_the_paper_update() {
        let Some(be) = backend() else { return };
        let n = 1001;
        let (w0, g) = (random(n, 1), random(n, 2));
        let step = SgdStep { lr: 0.01, momentum: 0.9, weight_decay: 0.0005 };
        let (mut w, mut v) = (up(&be, &w0), be.zeros(n).unwrap());
        let gb = up(&be, &g);
        let (mut rw, mut rv): (Vec<f64>, Vec<f64>) = (w0.iter().map(|&x| x.into()).collect(), vec![0.0; n]);
        let (lr, mom, wd) = (f64::from(step.lr), f64::from(step.momentum), f64::from(step.weight_decay));
        for _ in 0..3 {
            be.sgd_step(&step, &mut w, &gb, &mut v).unwrap();
            for i in 0..n {
                rv[i] = mom * rv[i] - wd * lr * rw[i] - lr * f64::from(g[i]);
                rw[i] += rv[i];
            }
        }
        assert_close("velocity", &down(&be, &v), &rv, 1e-5);
        assert_close("weights", &down(&be, &w), &rw, 1e-6);
    }
}
