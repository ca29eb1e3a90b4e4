//! The closed set of recorded ops and every gradient, in one place.

use alexnet_core::{Activation, Backend, ChannelLayout, Conv2dGeom, LrnParams, PoolGeom, PoolKind, Shape4};

use crate::buffer_pool::BufferPool;
use crate::error::Result;
use crate::params::ParamId;
use crate::tape::{Node, node_value};

/// What produced a tensor, with what its backward needs. Indices refer to tape nodes.
pub(crate) enum Op<B: Backend> {
    /// A host or device input.
    Input,
    /// A parameter of the store.
    Param {
        id: ParamId,
    },
    /// Produced on an inference tape: no backward.
    Untracked,
    Conv2d {
        x: usize,
        w: usize,
        b: Option<usize>,
        geom: Conv2dGeom,
        input: Shape4,
        output: Shape4,
    },
    Pool {
        kind: PoolKind,
        geom: PoolGeom,
        x: usize,
        input: Shape4,
    },
    Lrn {
        params: LrnParams,
        x: usize,
        input: Shape4,
        scale: B::Buffer,
    },
    /// `y[rows, outputs] = x[rows, inputs] * w[outputs, inputs]^T + b`.
    Linear {
        x: usize,
        w: usize,
        b: Option<usize>,
        rows: usize,
        inputs: usize,
        outputs: usize,
    },
    Activation {
        f: Activation,
        x: usize,
    },
    /// Same elements, other dims.
    Reshape {
        x: usize,
    },
    Dropout {
        x: usize,
        mask: B::Buffer,
    },
    BatchNorm {
        x: usize,
        gamma: usize,
        beta: usize,
        layout: ChannelLayout,
        saved_mean: B::Buffer,
        saved_inv_std: B::Buffer,
    },
    /// Mean over rows of `-log softmax(logits)[label]`.
    /// `summary` is the batch's [`alexnet_core::XentSummary`], read by [`crate::Tape::xent_summary`].
    SoftmaxXent {
        logits: usize,
        labels: B::Buffer,
        probs: B::Buffer,
        summary: B::Buffer,
        rows: usize,
        classes: usize,
    },
    Add {
        a: usize,
        b: usize,
    },
    Scale {
        x: usize,
        alpha: f32,
    },
    /// Mean of all elements.
    Mean {
        x: usize,
    },
}

impl<B: Backend> Op<B> {
    /// The buffers the op saved for its backward.
    pub(crate) fn into_buffers(self) -> impl Iterator<Item = B::Buffer> {
        let (first, second, third) = match self {
            Op::Lrn { scale, .. } => (Some(scale), None, None),
            Op::Dropout { mask, .. } => (Some(mask), None, None),
            Op::BatchNorm { saved_mean, saved_inv_std, .. } => (Some(saved_mean), Some(saved_inv_std), None),
            Op::SoftmaxXent { labels, probs, summary, .. } => (Some(labels), Some(probs), Some(summary)),
            _ => (None, None, None),
        };
        first.into_iter().chain(second).chain(third)
    }

    /// A one-line description for printing the tape.
    pub(crate) fn describe(&self) -> String {
        match self {
            Op::Input => "input".into(),
            Op::Param { id } => format!("param #{}", id.0),
            Op::Untracked => "(untracked)".into(),
            Op::Conv2d { x, w, b, geom, .. } => format!(
                "conv2d(#{x}, #{w}, {b:?}) k{}x{} s{}x{} p{}x{} g{}",
                geom.kernel_h, geom.kernel_w, geom.stride_h, geom.stride_w, geom.pad_h, geom.pad_w, geom.groups
            ),
            Op::Pool { kind, geom, x, .. } => {
                format!("{kind:?} pool(#{x}) w{}x{} s{}x{}", geom.window_h, geom.window_w, geom.stride_h, geom.stride_w)
            }
            Op::Lrn { params, x, .. } => format!("lrn(#{x}) n={}", params.size),
            Op::Linear { x, w, b, .. } => format!("linear(#{x}, #{w}, {b:?})"),
            Op::Activation { f, x } => format!("{f:?}(#{x})"),
            Op::Reshape { x } => format!("reshape(#{x})"),
            Op::Dropout { x, .. } => format!("dropout(#{x})"),
            Op::BatchNorm { x, gamma, beta, .. } => format!("batch_norm(#{x}, #{gamma}, #{beta})"),
            Op::SoftmaxXent { logits, .. } => format!("softmax_cross_entropy(#{logits})"),
            Op::Add { a, b } => format!("add(#{a}, #{b})"),
            Op::Scale { x, alpha } => format!("scale(#{x}, {alpha})"),
            Op::Mean { x } => format!("mean(#{x})"),
        }
    }
}

/// The gradients of node `i`'s inputs from its output gradient `dy` (consumed), pushed as
/// `(input node, gradient)` onto `out`. Inputs that need no gradient get none.
pub(crate) fn backward_node<B: Backend>(
    backend: &B,
    nodes: &[Node<B>],
    pool: &mut BufferPool<B>,
    i: usize,
    dy: B::Buffer,
    out: &mut Vec<(usize, B::Buffer)>,
) -> Result<()> {
    let wants = |j: usize| nodes[j].requires_grad;
    let value = |j: usize| node_value(nodes, j);
    let numel = |j: usize| nodes[j].dims.numel();
    match &nodes[i].op {
        Op::Input | Op::Param { .. } => unreachable!("leaves are handled by the tape"),
        Op::Untracked => unreachable!("inference tapes refuse backward"),
        Op::Conv2d { x, w, b, geom, input, output } => {
            if wants(*x) {
                let mut dx = pool.take(backend, input.numel())?;
                backend.conv2d_backward_input(geom, *input, value(*w)?, &dy, &mut dx)?;
                out.push((*x, dx));
            }
            if wants(*w) {
                let mut dw = pool.take(backend, geom.weight_len())?;
                backend.conv2d_backward_weight(geom, *input, value(*x)?, &dy, &mut dw)?;
                out.push((*w, dw));
            }
            if let Some(b) = b.filter(|&b| wants(b)) {
                let mut db = pool.take(backend, geom.out_channels)?;
                backend.channel_bias_grad(ChannelLayout::from(*output), &dy, &mut db)?;
                out.push((b, db));
            }
        }
        Op::Pool { kind, geom, x, input } => {
            if wants(*x) {
                let mut dx = pool.take(backend, input.numel())?;
                backend.pool_backward(*kind, geom, *input, value(*x)?, value(i)?, &dy, &mut dx)?;
                out.push((*x, dx));
            }
        }
        Op::Lrn { params, x, input, scale } => {
            if wants(*x) {
                let mut dx = pool.take(backend, input.numel())?;
                backend.lrn_backward(params, *input, value(*x)?, value(i)?, scale, &dy, &mut dx)?;
                out.push((*x, dx));
            }
        }
        Op::Linear { x, w, b, rows, inputs, outputs } => {
            let (rows, inputs, outputs) = (*rows, *inputs, *outputs);
            if wants(*x) {
                // dx[rows, inputs] = dy[rows, outputs] * w[outputs, inputs]
                let mut dx = pool.take(backend, rows * inputs)?;
                backend.gemm(false, false, rows, inputs, outputs, 1.0, &dy, value(*w)?, 0.0, &mut dx)?;
                out.push((*x, dx));
            }
            if wants(*w) {
                // dw[outputs, inputs] = dy^T * x
                let mut dw = pool.take(backend, outputs * inputs)?;
                backend.gemm(true, false, outputs, inputs, rows, 1.0, &dy, value(*x)?, 0.0, &mut dw)?;
                out.push((*w, dw));
            }
            if let Some(b) = b.filter(|&b| wants(b)) {
                let mut db = pool.take(backend, outputs)?;
                let layout = ChannelLayout { outer: rows, channels: outputs, inner: 1 };
                backend.channel_bias_grad(layout, &dy, &mut db)?;
                out.push((b, db));
            }
        }
        Op::Activation { f, x } => {
            if wants(*x) {
                let mut dx = pool.take(backend, numel(*x))?;
                backend.activation_backward(*f, value(*x)?, value(i)?, &dy, &mut dx)?;
                out.push((*x, dx));
            }
        }
        Op::Reshape { x } => {
            if wants(*x) {
                out.push((*x, dy));
                return Ok(());
            }
        }
        Op::Dropout { x, mask } => {
            if wants(*x) {
                let mut dx = pool.take(backend, numel(*x))?;
                backend.mul(&dy, mask, &mut dx)?;
                out.push((*x, dx));
            }
        }
        Op::BatchNorm { x, gamma, beta, layout, saved_mean, saved_inv_std } => {
            let mut dx = pool.take(backend, layout.numel())?;
            let mut dgamma = pool.take(backend, layout.channels)?;
            let mut dbeta = pool.take(backend, layout.channels)?;
            backend.batch_norm_backward(
                *layout,
                value(*x)?,
                value(*gamma)?,
                saved_mean,
                saved_inv_std,
                &dy,
                &mut dx,
                &mut dgamma,
                &mut dbeta,
            )?;
            for (j, g) in [(*x, dx), (*gamma, dgamma), (*beta, dbeta)] {
                if wants(j) { out.push((j, g)) } else { pool.give(backend, g) }
            }
        }
        Op::SoftmaxXent { logits, labels, probs, rows, classes, .. } => {
            if wants(*logits) {
                let mut dlogits = pool.take(backend, rows * classes)?;
                backend.softmax_xent_backward(*rows, *classes, probs, labels, &dy, &mut dlogits)?;
                out.push((*logits, dlogits));
            }
        }
        Op::Add { a, b } => {
            for j in [*a, *b] {
                if wants(j) {
                    let mut d = pool.take(backend, numel(j))?;
                    backend.copy(&dy, &mut d)?;
                    out.push((j, d));
                }
            }
        }
        Op::Scale { x, alpha } => {
            if wants(*x) {
                let mut dx = pool.take(backend, numel(*x))?;
                backend.scale(*alpha, &dy, &mut dx)?;
                out.push((*x, dx));
            }
        }
        Op::Mean { x } => {
            if wants(*x) {
                // dx = dy / n everywhere: a zero buffer plus dy / n as the bias of one channel.
                let n = numel(*x);
                let mut share = pool.take(backend, 1)?;
                backend.scale(1.0 / n as f32, &dy, &mut share)?;
                let mut dx = pool.take(backend, n)?;
                backend.fill(&mut dx, 0.0)?;
                backend.add_channel_bias(ChannelLayout { outer: 1, channels: 1, inner: n }, &share, &mut dx)?;
                pool.give(backend, share);
                out.push((*x, dx));
            }
        }
    }
    pool.give(backend, dy);
    Ok(())
}
