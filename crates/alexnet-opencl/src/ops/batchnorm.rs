//! Batch normalisation: training forward (batch statistics, running averages), evaluation
//! forward, and the training-mode backward.

use alexnet_core::{BatchNormParams, ChannelLayout, Error, Result};

use crate::backend::{OpenClBackend, u};
use crate::buffer::ClBuffer;
use crate::context::{Arg, Kern};

fn validate(params: &BatchNormParams) -> Result<()> {
    if !(params.eps.is_finite() && params.eps >= 0.0) {
        return Err(Error::InvalidParameter {
            what: "batch-norm eps",
            value: params.eps.into(),
            reason: "must be finite and non-negative",
        });
    }
    if !(0.0..=1.0).contains(&params.momentum) {
        return Err(Error::InvalidParameter {
            what: "batch-norm momentum",
            value: params.momentum.into(),
            reason: "must be in [0, 1]",
        });
    }
    Ok(())
}

/// (outer, channels, inner) as kernel arguments.
fn layout_args(layout: ChannelLayout) -> Result<[Arg<'static>; 3]> {
    Ok([
        Arg::U32(u("outer", layout.outer)?),
        Arg::U32(u("channels", layout.channels)?),
        Arg::U32(u("inner", layout.inner)?),
    ])
}

/// (length, channels, inner) as kernel arguments for the element-wise kernels.
fn elementwise_args(layout: ChannelLayout) -> Result<[Arg<'static>; 3]> {
    Ok([
        Arg::U32(u("length", layout.numel())?),
        Arg::U32(u("channels", layout.channels)?),
        Arg::U32(u("inner", layout.inner)?),
    ])
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_train(
    be: &OpenClBackend,
    params: &BatchNormParams,
    layout: ChannelLayout,
    x: &ClBuffer,
    gamma: &ClBuffer,
    beta: &ClBuffer,
    running_mean: &mut ClBuffer,
    running_var: &mut ClBuffer,
    saved_mean: &mut ClBuffer,
    saved_inv_std: &mut ClBuffer,
    y: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "batch_norm_forward_train";
    validate(params)?;
    let c = layout.channels;
    be.check(OP, "x", x, layout.numel())?;
    be.check(OP, "y", y, layout.numel())?;
    for (name, buf) in
        [("gamma", gamma), ("beta", beta), ("running_mean", &*running_mean), ("running_var", &*running_var)]
    {
        be.check(OP, name, buf, c)?;
    }
    be.check(OP, "saved_mean", saved_mean, c)?;
    be.check(OP, "saved_inv_std", saved_inv_std, c)?;
    let mut args = layout_args(layout)?.to_vec();
    args.extend([
        Arg::F32(params.eps),
        Arg::F32(params.momentum),
        Arg::Buf(x),
        Arg::Buf(running_mean),
        Arg::Buf(running_var),
        Arg::Buf(saved_mean),
        Arg::Buf(saved_inv_std),
    ]);
    be.launch_groups(Kern::BnStats, c, &args)?;
    let mut args = elementwise_args(layout)?.to_vec();
    args.extend([
        Arg::Buf(x),
        Arg::Buf(saved_mean),
        Arg::Buf(saved_inv_std),
        Arg::Buf(gamma),
        Arg::Buf(beta),
        Arg::Buf(y),
    ]);
    be.launch_1d(Kern::BnNormalize, layout.numel(), &args)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_eval(
    be: &OpenClBackend,
    params: &BatchNormParams,
    layout: ChannelLayout,
    x: &ClBuffer,
    gamma: &ClBuffer,
    beta: &ClBuffer,
    running_mean: &ClBuffer,
    running_var: &ClBuffer,
    y: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "batch_norm_forward_eval";
    validate(params)?;
    be.check(OP, "x", x, layout.numel())?;
    be.check(OP, "y", y, layout.numel())?;
    for (name, buf) in [("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)]
    {
        be.check(OP, name, buf, layout.channels)?;
    }
    let mut args = elementwise_args(layout)?.to_vec();
    args.extend([
        Arg::F32(params.eps),
        Arg::Buf(x),
        Arg::Buf(gamma),
        Arg::Buf(beta),
        Arg::Buf(running_mean),
        Arg::Buf(running_var),
        Arg::Buf(y),
    ]);
    be.launch_1d(Kern::BnEval, layout.numel(), &args)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    be: &OpenClBackend,
    layout: ChannelLayout,
    x: &ClBuffer,
    gamma: &ClBuffer,
    saved_mean: &ClBuffer,
    saved_inv_std: &ClBuffer,
    dy: &ClBuffer,
    dx: &mut ClBuffer,
    dgamma: &mut ClBuffer,
    dbeta: &mut ClBuffer,
) -> Result<()> {
    const OP: &str = "batch_norm_backward";
    let c = layout.channels;
    for (name, buf) in [("x", x), ("dy", dy), ("dx", &*dx)] {
        be.check(OP, name, buf, layout.numel())?;
    }
    for (name, buf) in [
        ("gamma", gamma),
        ("saved_mean", saved_mean),
        ("saved_inv_std", saved_inv_std),
        ("dgamma", &*dgamma),
        ("dbeta", &*dbeta),
    ] {
        be.check(OP, name, buf, c)?;
    }
    let mut args = layout_args(layout)?.to_vec();
    args.extend([
        Arg::Buf(x),
        Arg::Buf(saved_mean),
        Arg::Buf(saved_inv_std),
        Arg::Buf(dy),
        Arg::Buf(dgamma),
        Arg::Buf(dbeta),
    ]);
    be.launch_groups(Kern::BnGradReduce, c, &args)?;
    let mut args = elementwise_args(layout)?.to_vec();
    args.extend([
        Arg::F32((layout.outer * layout.inner) as f32),
        Arg::Buf(x),
        Arg::Buf(gamma),
        Arg::Buf(saved_mean),
        Arg::Buf(saved_inv_std),
        Arg::Buf(dy),
        Arg::Buf(dgamma),
        Arg::Buf(dbeta),
        Arg::Buf(dx),
    ]);
    be.launch_1d(Kern::BnBackwardDx, layout.numel(), &args)
}

#[cfg(test)]
mod tests {
    use alexnet_core::{Backend, BatchNormParams, ChannelLayout};

    use crate::testing::{assert_close, backend, check_vjp, down, random, to_f64, up};

    /// Per-channel element indices of an (outer, channels, inner) layout.
    fn channel_indices(l: ChannelLayout, c: usize) -> impl Iterator<Item = usize> {
        (0..l.outer).flat_map(move |o| (0..l.inner).map(move |i| (o * l.channels + c) * l.inner + i))
    }

    /// y, batch mean, biased variance.
    fn ref_forward(
        l: ChannelLayout,
        eps: f64,
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let count = (l.outer * l.inner) as f64;
        let mut y = vec![0.0; x.len()];
        let (mut means, mut vars) = (vec![0.0; l.channels], vec![0.0; l.channels]);
        for c in 0..l.channels {
            let mean = channel_indices(l, c).map(|i| x[i]).sum::<f64>() / count;
            let var = channel_indices(l, c).map(|i| (x[i] - mean).powi(2)).sum::<f64>() / count;
            for i in channel_indices(l, c) {
                y[i] = (x[i] - mean) / (var + eps).sqrt() * gamma[c] + beta[c];
            }
            (means[c], vars[c]) = (mean, var);
        }
        (y, means, vars)
    }

    /// The textbook backward: dx, dgamma, dbeta.
    fn ref_backward(
        l: ChannelLayout,
        eps: f64,
        x: &[f64],
        gamma: &[f64],
        dy: &[f64],
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (_, means, vars) = ref_forward(l, eps, x, gamma, &vec![0.0; l.channels]);
        let count = (l.outer * l.inner) as f64;
        let mut dx = vec![0.0; x.len()];
        let (mut dgamma, mut dbeta) = (vec![0.0; l.channels], vec![0.0; l.channels]);
        for c in 0..l.channels {
            let inv = 1.0 / (vars[c] + eps).sqrt();
            let xhat = |i: usize| (x[i] - means[c]) * inv;
            dbeta[c] = channel_indices(l, c).map(|i| dy[i]).sum();
            dgamma[c] = channel_indices(l, c).map(|i| dy[i] * xhat(i)).sum();
            for i in channel_indices(l, c) {
                dx[i] = gamma[c] * inv / count * (count * dy[i] - dbeta[c] - xhat(i) * dgamma[c]);
            }
        }
        (dx, dgamma, dbeta)
    }

    #[test]
    fn train_eval_backward_match_reference() {
        let Some(be) = backend() else { return };
        let params = BatchNormParams { eps: 1e-5, momentum: 0.1 };
        let eps = f64::from(params.eps);
        for l in [
            ChannelLayout { outer: 4, channels: 3, inner: 5 },
            ChannelLayout { outer: 8, channels: 16, inner: 1 },
            ChannelLayout { outer: 2, channels: 4, inner: 300 },
        ] {
            let n = l.numel();
            let x: Vec<f32> = random(n, 1).iter().map(|v| 3.0 * v + 1.0).collect();
            let (gamma, beta, dy) = (random(l.channels, 2), random(l.channels, 3), random(n, 4));
            let (rm0, rv0) =
                (random(l.channels, 5), random(l.channels, 6).iter().map(|v| v.abs() + 0.5).collect::<Vec<_>>());
            let (xd, gd, bd, dyd) = (to_f64(&x), to_f64(&gamma), to_f64(&beta), to_f64(&dy));
            let (xb, gb, bb) = (up(&be, &x), up(&be, &gamma), up(&be, &beta));
            let (mut rm, mut rv) = (up(&be, &rm0), up(&be, &rv0));
            let (mut sm, mut sinv, mut y) =
                (be.zeros(l.channels).unwrap(), be.zeros(l.channels).unwrap(), be.zeros(n).unwrap());
            be.batch_norm_forward_train(&params, l, &xb, &gb, &bb, &mut rm, &mut rv, &mut sm, &mut sinv, &mut y)
                .unwrap();
            let (ry, means, vars) = ref_forward(l, eps, &xd, &gd, &bd);
            assert_close("bn y", &down(&be, &y), &ry, 1e-4);
            assert_close("bn saved mean", &down(&be, &sm), &means, 1e-5);
            assert_close(
                "bn saved inv std",
                &down(&be, &sinv),
                &vars.iter().map(|v| 1.0 / (v + eps).sqrt()).collect::<Vec<_>>(),
                1e-5,
            );
            let count = (l.outer * l.inner) as f64;
            let m = f64::from(params.momentum);
            let want_rm: Vec<f64> = rm0.iter().zip(&means).map(|(&r, mu)| (1.0 - m) * f64::from(r) + m * mu).collect();
            let want_rv: Vec<f64> =
                rv0.iter().zip(&vars).map(|(&r, v)| (1.0 - m) * f64::from(r) + m * v * count / (count - 1.0)).collect();
            assert_close("bn running mean", &down(&be, &rm), &want_rm, 1e-5);
            assert_close("bn running var", &down(&be, &rv), &want_rv, 1e-5);

            let mut ye = be.zeros(n).unwrap();
            be.batch_norm_forward_eval(&params, l, &xb, &gb, &bb, &rm, &rv, &mut ye).unwrap();
            let want_eval: Vec<f64> = (0..n)
                .map(|i| {
                    let c = (i / l.inner) % l.channels;
                    (xd[i] - want_rm[c]) / (want_rv[c] + eps).sqrt() * gd[c] + bd[c]
                })
                .collect();
            assert_close("bn eval", &down(&be, &ye), &want_eval, 1e-4);

            let (mut dx, mut dg, mut db) =
                (be.zeros(n).unwrap(), be.zeros(l.channels).unwrap(), be.zeros(l.channels).unwrap());
            be.batch_norm_backward(l, &xb, &gb, &sm, &sinv, &up(&be, &dy), &mut dx, &mut dg, &mut db).unwrap();
            let (rdx, rdg, rdb) = ref_backward(l, eps, &xd, &gd, &dyd);
            assert_close("bn dx", &down(&be, &dx), &rdx, 1e-4);
            assert_close("bn dgamma", &down(&be, &dg), &rdg, 1e-4);
            assert_close("bn dbeta", &down(&be, &db), &rdb, 1e-4);
            if n <= 64 {
                check_vjp("bn reference dx", |x| ref_forward(l, eps, x, &gd, &bd).0, &xd, &dyd, &rdx);
                check_vjp("bn reference dgamma", |g| ref_forward(l, eps, &xd, g, &bd).0, &gd, &dyd, &rdg);
            }
        }
    }

    #[test]
    fn invalid_params_are_errors() {
        let Some(be) = backend() else { return };
        let l = ChannelLayout { outer: 1, channels: 1, inner: 2 };
        let (x, g, b, rm, rv) = (
            be.zeros(2).unwrap(),
            be.zeros(1).unwrap(),
            be.zeros(1).unwrap(),
            be.zeros(1).unwrap(),
            be.zeros(1).unwrap(),
        );
        let mut y = be.zeros(2).unwrap();
        let err = be
            .batch_norm_forward_eval(&BatchNormParams { eps: -1.0, momentum: 0.1 }, l, &x, &g, &b, &rm, &rv, &mut y)
            .unwrap_err();
        assert!(matches!(err, alexnet_core::Error::InvalidParameter { what: "batch-norm eps", .. }), "{err}");
    }
}
