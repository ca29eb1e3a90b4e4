//! The forward side of every op: shape checks, the forward kernel, and the record.

use alexnet_core::{
    Activation, BatchNormParams, ChannelLayout, Conv2dGeom, LrnParams, MaskWindow, PoolGeom, PoolKind, XENT_SUMMARY_LEN,
};

use alexnet_core::Backend;

use crate::error::{AutogradError, Result};
use crate::grad::Op;
use crate::params::ParamStore;
use crate::tape::{Tape, Value};
use crate::tensor::{Dims, Tensor};

fn expect_dims(op: &'static str, expected: &[usize], got: Dims) -> Result<()> {
    if got.as_slice() == expected {
        Ok(())
    } else {
        Err(AutogradError::Shape { op, expected: expected.to_vec(), got: got.to_vec() })
    }
}

impl<B: Backend> Tape<B> {
    /// 2-D convolution with groups: `x` is NCHW, `w` is `geom.weight_dims()`, `b` has
    /// `out_channels` elements.
    pub fn conv2d(&mut self, x: Tensor, w: Tensor, b: Option<Tensor>, geom: &Conv2dGeom) -> Result<Tensor> {
        let (xi, wi) = (self.check(x)?, self.check(w)?);
        let bi = b.map(|b| self.check(b)).transpose()?;
        let input = x.dims.shape4("conv2d")?;
        let output = geom.output_shape(input)?;
        expect_dims("conv2d weight", &geom.weight_dims(), w.dims)?;
        if let Some(b) = b {
            expect_dims("conv2d bias", &[geom.out_channels], b.dims)?;
        }
        let mut y = self.take(output.numel())?;
        let bias = bi.map(|b| self.buf(b)).transpose()?;
        self.backend.conv2d_forward(geom, input, self.buf(xi)?, self.buf(wi)?, bias, &mut y)?;
        let mut ids = vec![xi, wi];
        ids.extend(bi);
        let requires_grad = self.any_requires_grad(&ids);
        let op = Op::Conv2d { x: xi, w: wi, b: bi, geom: *geom, input, output };
        Ok(self.push(Value::Owned(y), output.into(), requires_grad, op))
    }

    /// Max or average pooling of an NCHW tensor.
    pub fn pool(&mut self, kind: PoolKind, x: Tensor, geom: &PoolGeom) -> Result<Tensor> {
        let xi = self.check(x)?;
        let input = x.dims.shape4("pool")?;
        let output = geom.output_shape(input)?;
        let mut y = self.take(output.numel())?;
        self.backend.pool_forward(kind, geom, input, self.buf(xi)?, &mut y)?;
        let requires_grad = self.any_requires_grad(&[xi]);
        Ok(self.push(Value::Owned(y), output.into(), requires_grad, Op::Pool { kind, geom: *geom, x: xi, input }))
    }

    /// Max pooling (see [`Tape::pool`]).
    pub fn max_pool(&mut self, x: Tensor, geom: &PoolGeom) -> Result<Tensor> {
        self.pool(PoolKind::Max, x, geom)
    }

    /// Average pooling (see [`Tape::pool`]).
    pub fn avg_pool(&mut self, x: Tensor, geom: &PoolGeom) -> Result<Tensor> {
        self.pool(PoolKind::Avg, x, geom)
    }

    /// Local response normalisation across channels of an NCHW tensor.
    pub fn lrn(&mut self, x: Tensor, params: &LrnParams) -> Result<Tensor> {
        let xi = self.check(x)?;
        params.validate()?;
        let input = x.dims.shape4("lrn")?;
        let mut y = self.take(input.numel())?;
        let mut scale = self.take(input.numel())?;
        self.backend.lrn_forward(params, input, self.buf(xi)?, &mut y, &mut scale)?;
        let requires_grad = self.any_requires_grad(&[xi]);
        Ok(self.push(Value::Owned(y), x.dims, requires_grad, Op::Lrn { params: *params, x: xi, input, scale }))
    }

    /// Local response normalisation within each of `groups` equal runs of channels: a
    /// channel's window is clipped to its own group, as on the paper's two GPUs, where each
    /// normalised only the maps it held. Channel group `g` of sample `n` is contiguous in
    /// NCHW, so this is [`Tape::lrn`] of `x` viewed as `[n * groups, c / groups, h, w]`.
    pub fn lrn_grouped(&mut self, x: Tensor, params: &LrnParams, groups: usize) -> Result<Tensor> {
        let input = x.dims.shape4("lrn")?;
        if groups == 0 || !input.c.is_multiple_of(groups) {
            return Err(AutogradError::InvalidArgument {
                op: "lrn",
                what: "groups",
                value: groups as f64,
                reason: "groups must be at least 1 and divide the channel count",
            });
        }
        if groups == 1 {
            return self.lrn(x, params);
        }
        let grouped = self.reshape(x, &[input.n * groups, input.c / groups, input.h, input.w])?;
        let y = self.lrn(grouped, params)?;
        self.reshape(y, &input.dims())
    }

    /// Fully connected layer `y = x w^T + b` with PyTorch's layout: `x` is `[rows, inputs]`,
    /// `w` is `[outputs, inputs]`, `b` is `[outputs]`. Flatten NCHW inputs first.
    pub fn linear(&mut self, x: Tensor, w: Tensor, b: Option<Tensor>) -> Result<Tensor> {
        let (xi, wi) = (self.check(x)?, self.check(w)?);
        let bi = b.map(|b| self.check(b)).transpose()?;
        if w.dims.rank() != 2 {
            return Err(AutogradError::InvalidDims {
                dims: w.dims.to_vec(),
                reason: "linear weight must be [outputs, inputs]",
            });
        }
        let (outputs, inputs) = (w.dims.as_slice()[0], w.dims.as_slice()[1]);
        let rows = x.dims.as_slice()[0];
        expect_dims("linear", &[rows, inputs], x.dims)?;
        if let Some(b) = b {
            expect_dims("linear bias", &[outputs], b.dims)?;
        }
        let mut y = self.take(rows * outputs)?;
        self.backend.gemm(false, true, rows, outputs, inputs, 1.0, self.buf(xi)?, self.buf(wi)?, 0.0, &mut y)?;
        if let Some(bi) = bi {
            let layout = ChannelLayout { outer: rows, channels: outputs, inner: 1 };
            self.backend.add_channel_bias(layout, self.buf(bi)?, &mut y)?;
        }
        let mut ids = vec![xi, wi];
        ids.extend(bi);
        let requires_grad = self.any_requires_grad(&ids);
        let dims = Dims::new(&[rows, outputs])?;
        Ok(self.push(Value::Owned(y), dims, requires_grad, Op::Linear { x: xi, w: wi, b: bi, rows, inputs, outputs }))
    }

    /// A point-wise activation.
    pub fn activation(&mut self, f: Activation, x: Tensor) -> Result<Tensor> {
        let xi = self.check(x)?;
        let mut y = self.take(x.numel())?;
        self.backend.activation_forward(f, self.buf(xi)?, &mut y)?;
        let requires_grad = self.any_requires_grad(&[xi]);
        Ok(self.push(Value::Owned(y), x.dims, requires_grad, Op::Activation { f, x: xi }))
    }

    /// `max(0, x)`.
    pub fn relu(&mut self, x: Tensor) -> Result<Tensor> {
        self.activation(Activation::Relu, x)
    }

    /// `1 / (1 + exp(-x))`.
    pub fn sigmoid(&mut self, x: Tensor) -> Result<Tensor> {
        self.activation(Activation::Sigmoid, x)
    }

    /// `tanh(x)`.
    pub fn tanh(&mut self, x: Tensor) -> Result<Tensor> {
        self.activation(Activation::Tanh, x)
    }

    /// The same elements with other dims (same element count); no copy.
    pub fn reshape(&mut self, x: Tensor, dims: &[usize]) -> Result<Tensor> {
        let xi = self.check(x)?;
        let new = Dims::new(dims)?;
        if new.numel() != x.numel() {
            return Err(AutogradError::Shape { op: "reshape", expected: x.dims.to_vec(), got: dims.to_vec() });
        }
        let requires_grad = self.any_requires_grad(&[xi]);
        Ok(self.push(Value::Alias(xi), new, requires_grad, Op::Reshape { x: xi }))
    }

    /// `[n, ...] -> [n, product of the rest]`.
    pub fn flatten(&mut self, x: Tensor) -> Result<Tensor> {
        let (rows, cols) = x.dims.rows_cols();
        self.reshape(x, &[rows, cols])
    }

    /// Inverted dropout with drop probability `p` in `[0, 1)`: on a training tape each
    /// element is kept (and scaled by `1 / (1 - p)`) by [`alexnet_core::rng::dropout_keep`]
    /// with `seed`; on an inference tape it is the identity.
    pub fn dropout(&mut self, x: Tensor, p: f32, seed: u64) -> Result<Tensor> {
        self.dropout_at(x, p, seed, MaskWindow::whole(x.numel().max(1)))
    }

    /// [`Tape::dropout`] of a part of a larger tensor: `window` says where `x`'s elements sit
    /// in the whole batch's tensor, so each element's mask is the one dropout of the whole
    /// tensor would draw there (a replica's share of the batch, a device's share of a layer).
    pub fn dropout_at(&mut self, x: Tensor, p: f32, seed: u64, window: MaskWindow) -> Result<Tensor> {
        let xi = self.check(x)?;
        if !(0.0..1.0).contains(&p) {
            return Err(AutogradError::InvalidArgument {
                op: "dropout",
                what: "p",
                value: p.into(),
                reason: "drop probability must be in [0, 1)",
            });
        }
        let requires_grad = self.any_requires_grad(&[xi]);
        if !self.is_recording() {
            return Ok(self.push(Value::Alias(xi), x.dims, false, Op::Untracked));
        }
        let mut mask = self.take(x.numel())?;
        let mut y = self.take(x.numel())?;
        self.backend.dropout_forward(p, seed, &window, self.buf(xi)?, &mut mask, &mut y)?;
        Ok(self.push(Value::Owned(y), x.dims, requires_grad, Op::Dropout { x: xi, mask }))
    }

    /// Batch normalisation of `[n, features]` or NCHW `x` with the entries
    /// `{prefix}.weight`, `{prefix}.bias` (trainable) and `{prefix}.running_mean`,
    /// `{prefix}.running_var` (state) of `store` (see [`ParamStore::insert_batch_norm`]).
    /// Training tapes normalise with batch statistics and update the running averages;
    /// inference tapes use the running averages.
    pub fn batch_norm(
        &mut self,
        x: Tensor,
        store: &mut ParamStore<B>,
        prefix: &str,
        params: &BatchNormParams,
    ) -> Result<Tensor> {
        let xi = self.check(x)?;
        let invalid = |what, value: f32, reason| AutogradError::InvalidArgument {
            op: "batch_norm",
            what,
            value: value.into(),
            reason,
        };
        if !(params.eps.is_finite() && params.eps > 0.0) {
            return Err(invalid("eps", params.eps, "must be finite and positive"));
        }
        if !(0.0..=1.0).contains(&params.momentum) {
            return Err(invalid("momentum", params.momentum, "must be in [0, 1]"));
        }
        let layout = match x.dims.rank() {
            2 => ChannelLayout { outer: x.dims.as_slice()[0], channels: x.dims.as_slice()[1], inner: 1 },
            4 => ChannelLayout::from(x.dims.shape4("batch_norm")?),
            _ => {
                return Err(AutogradError::InvalidDims {
                    dims: x.dims.to_vec(),
                    reason: "batch_norm needs [n, features] or NCHW",
                });
            }
        };
        let channels = [layout.channels];
        let gamma = self.param(store, &format!("{prefix}.weight"))?;
        let beta = self.param(store, &format!("{prefix}.bias"))?;
        expect_dims("batch_norm weight", &channels, gamma.dims)?;
        expect_dims("batch_norm bias", &channels, beta.dims)?;
        let mean_id = store.id(&format!("{prefix}.running_mean"))?;
        let var_id = store.id(&format!("{prefix}.running_var"))?;
        expect_dims("batch_norm running_mean", &channels, store.dims(mean_id)?)?;
        expect_dims("batch_norm running_var", &channels, store.dims(var_id)?)?;
        let (gi, bi) = (gamma.id, beta.id);
        let mut y = self.take(layout.numel())?;
        if !self.is_recording() {
            let (mean, var) = (store.value(mean_id)?, store.value(var_id)?);
            let (xb, gb, bb) = (self.buf(xi)?, self.buf(gi)?, self.buf(bi)?);
            self.backend.batch_norm_forward_eval(params, layout, xb, gb, bb, mean, var, &mut y)?;
            return Ok(self.push(Value::Owned(y), x.dims, false, Op::Untracked));
        }
        let mut saved_mean = self.take(layout.channels)?;
        let mut saved_inv_std = self.take(layout.channels)?;
        let (mean, var) = store.state_pair_mut(mean_id, var_id)?;
        let (xb, gb, bb) = (self.buf(xi)?, self.buf(gi)?, self.buf(bi)?);
        self.backend.batch_norm_forward_train(
            params,
            layout,
            xb,
            gb,
            bb,
            mean,
            var,
            &mut saved_mean,
            &mut saved_inv_std,
            &mut y,
        )?;
        let op = Op::BatchNorm { x: xi, gamma: gi, beta: bi, layout, saved_mean, saved_inv_std };
        Ok(self.push(Value::Owned(y), x.dims, true, op))
    }

    /// Mean over the batch of the softmax cross-entropy of `logits` (`[rows, classes]`)
    /// against class indices `labels` (one per row): a one-element tensor. Stable for
    /// logits of any magnitude (the row maximum is subtracted).
    pub fn softmax_cross_entropy(&mut self, logits: Tensor, labels: &[usize]) -> Result<Tensor> {
        const OP: &str = "softmax_cross_entropy";
        let li = self.check(logits)?;
        if logits.dims.rank() != 2 {
            return Err(AutogradError::InvalidDims {
                dims: logits.dims.to_vec(),
                reason: "logits must be [rows, classes]",
            });
        }
        let (rows, classes) = (logits.dims.as_slice()[0], logits.dims.as_slice()[1]);
        if labels.len() != rows {
            return Err(AutogradError::Shape { op: OP, expected: vec![rows], got: vec![labels.len()] });
        }
        if let Some((row, &label)) = labels.iter().enumerate().find(|&(_, &l)| l >= classes) {
            return Err(AutogradError::Label { op: OP, row, label, classes });
        }
        let host_labels: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        let labels = self.upload_pooled(&host_labels)?;
        let mut probs = self.take(rows * classes)?;
        let mut y = self.take(1)?;
        let mut summary = self.take(XENT_SUMMARY_LEN)?;
        self.backend.softmax_xent_forward(rows, classes, self.buf(li)?, &labels, &mut probs, &mut y, &mut summary)?;
        let requires_grad = self.any_requires_grad(&[li]);
        let op = Op::SoftmaxXent { logits: li, labels, probs, summary, rows, classes };
        Ok(self.push(Value::Owned(y), Dims::new(&[1])?, requires_grad, op))
    }

    /// `a + b` (same dims).
    pub fn add(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        let (ai, bi) = (self.check(a)?, self.check(b)?);
        expect_dims("add", a.dims.as_slice(), b.dims)?;
        let mut y = self.take(a.numel())?;
        self.backend.add_scaled(1.0, self.buf(ai)?, 1.0, self.buf(bi)?, &mut y)?;
        let requires_grad = self.any_requires_grad(&[ai, bi]);
        Ok(self.push(Value::Owned(y), a.dims, requires_grad, Op::Add { a: ai, b: bi }))
    }

    /// `alpha * x`.
    pub fn scale(&mut self, x: Tensor, alpha: f32) -> Result<Tensor> {
        let xi = self.check(x)?;
        let mut y = self.take(x.numel())?;
        self.backend.scale(alpha, self.buf(xi)?, &mut y)?;
        let requires_grad = self.any_requires_grad(&[xi]);
        Ok(self.push(Value::Owned(y), x.dims, requires_grad, Op::Scale { x: xi, alpha }))
    }

    /// Mean of all elements: a one-element tensor (computed on the device, no read-back).
    pub fn mean(&mut self, x: Tensor) -> Result<Tensor> {
        let xi = self.check(x)?;
        // The bias gradient of a single channel is the sum of all elements.
        let mut total = self.take(1)?;
        let whole = ChannelLayout { outer: 1, channels: 1, inner: x.numel() };
        self.backend.channel_bias_grad(whole, self.buf(xi)?, &mut total)?;
        let mut y = self.take(1)?;
        self.backend.scale(1.0 / x.numel() as f32, &total, &mut y)?;
        self.pool.give(&self.backend, total);
        let requires_grad = self.any_requires_grad(&[xi]);
        Ok(self.push(Value::Owned(y), Dims::new(&[1])?, requires_grad, Op::Mean { x: xi }))
    }
}
