//! The `Backend` trait: the kernels a device must provide to train AlexNet.
//!
//! Kernels come in forward/backward pairs so that a device runs one kernel per gradient.
//! Buffers are flat `f32` arrays owned by the backend; shapes travel beside them as
//! [`Shape4`] or plain extents, and every method checks the buffer lengths it is given,
//! returning [`crate::Error::BufferSize`] rather than panicking.
//!
//! Backward kernels *write* their gradient; summing the gradients of a tensor used more
//! than once is the autograd's job (with [`Backend::axpy`]).
//!
//! A backend is one device. Training on several devices (the paper's two-GPU split, data
//! parallelism, MPI) lives above this trait: each device has its own backend, and
//! [`MaskWindow`] lets dropout on a device's share of a batch draw the same masks as one
//! device would for the whole batch.

use crate::error::Result;
use crate::geom::{Conv2dGeom, LrnParams, PoolGeom, PoolKind};
use crate::rng::MaskWindow;
use crate::shape::Shape4;

/// Point-wise activation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// `max(0, x)`; the derivative at 0 is taken as 0.
    Relu,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
}

/// The layout that a per-channel vector (bias, batch-norm scale) is broadcast over:
/// `outer` blocks of `channels` channels of `inner` contiguous elements. NCHW activations
/// are `(n, c, h*w)`; dense activations are `(n, features, 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelLayout {
    /// Batch (outermost) extent.
    pub outer: usize,
    /// Channel extent.
    pub channels: usize,
    /// Contiguous elements per channel.
    pub inner: usize,
}

impl ChannelLayout {
    /// Total element count.
    pub fn numel(&self) -> usize {
        self.outer * self.channels * self.inner
    }
}

impl From<Shape4> for ChannelLayout {
    fn from(s: Shape4) -> Self {
        Self { outer: s.n, channels: s.c, inner: s.h * s.w }
    }
}

/// Hyper-parameters of one SGD step, the paper's update:
/// `v <- momentum * v - weight_decay * lr * w - lr * grad; w <- w + v`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f32,
    /// Momentum (paper: 0.9).
    pub momentum: f32,
    /// Weight decay (paper: 0.0005).
    pub weight_decay: f32,
}

/// Batch-normalisation constants.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormParams {
    /// Added to the variance before the square root.
    pub eps: f32,
    /// Running-average update: `running = (1 - momentum) * running + momentum * batch`.
    pub momentum: f32,
}

/// Elements of the summary that [`Backend::softmax_xent_forward`] writes; decode it with
/// [`XentSummary::from_values`].
pub const XENT_SUMMARY_LEN: usize = 6;

/// What [`Backend::softmax_xent_forward`] reports about a batch, small enough to read back with
/// the loss in one transfer: the loss and the classification counts that training metrics need.
///
/// Layout of the summary buffer: `[mean loss, top-1 correct, top-5 correct, invalid labels,
/// first invalid row, its label]`. A row's rank is the number of classes whose logit beats the
/// label's, ties counting only for lower class indices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XentSummary {
    /// Mean over the rows of `-log softmax(logits)[label]`.
    pub mean_loss: f32,
    /// Rows whose label has rank 0.
    pub top1_correct: usize,
    /// Rows whose label has rank below 5.
    pub top5_correct: usize,
}

impl XentSummary {
    /// Decodes a summary read from the device. A label that the device found invalid (not an
    /// integer in `0..classes`) is [`crate::Error::InvalidParameter`] naming it, as the CPU
    /// backend reports it at once.
    pub fn from_values(values: &[f32]) -> Result<Self> {
        crate::check_len("XentSummary::from_values", "summary", XENT_SUMMARY_LEN, values.len())?;
        if values[3] != 0.0 {
            return Err(crate::Error::InvalidParameter {
                what: "label",
                value: values[5].into(),
                reason: "must be a class index below classes",
            });
        }
        Ok(Self { mean_loss: values[0], top1_correct: values[1] as usize, top5_correct: values[2] as usize })
    }
}

/// What a device is, as far as sharing work with others goes. A multi-device run gives its
/// devices equal shares, so it refuses devices whose capabilities differ.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceCapabilities {
    /// The kind of device (two cards of one model report the same).
    pub model: String,
    /// Memory in bytes, where the device reports it.
    pub memory_bytes: Option<u64>,
    /// Parallel compute units (OpenCL compute units, CPU threads), where known.
    pub compute_units: Option<u32>,
}

impl std::fmt::Display for DeviceCapabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.model)?;
        if let Some(units) = self.compute_units {
            write!(f, ", {units} compute units")?;
        }
        if let Some(bytes) = self.memory_bytes {
            write!(f, ", {} MiB", bytes >> 20)?;
        }
        Ok(())
    }
}

/// A compute device able to run every op of AlexNet, forward and backward.
pub trait Backend: Send + Sync {
    /// Device storage of `f32` elements.
    type Buffer: Send + Sync;

    /// A short name for messages (`"cpu"`, `"opencl:<device>"`).
    fn name(&self) -> String;

    /// What the device is (by default: its name, nothing else known).
    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities { model: self.name(), memory_bytes: None, compute_units: None }
    }

    // ---- memory ------------------------------------------------------------------------

    /// A zero-filled buffer of `len` elements.
    fn zeros(&self, len: usize) -> Result<Self::Buffer>;
    /// A buffer holding a copy of `host`.
    fn upload(&self, host: &[f32]) -> Result<Self::Buffer>;
    /// Copies `host` into an existing buffer of the same length, so steady-state steps can
    /// refill pooled buffers instead of allocating. The default uploads to a temporary and
    /// copies; backends override it with a direct write.
    fn upload_into(&self, host: &[f32], buf: &mut Self::Buffer) -> Result<()> {
        let staged = self.upload(host)?;
        self.copy(&staged, buf)
    }
    /// Copies `buf` into `host` (same length).
    fn download(&self, buf: &Self::Buffer, host: &mut [f32]) -> Result<()>;
    /// Element count of `buf`.
    fn len(&self, buf: &Self::Buffer) -> usize;
    /// Waits for all queued work.
    fn synchronize(&self) -> Result<()>;

    // ---- element-wise ------------------------------------------------------------------

    /// `buf[i] = value`.
    fn fill(&self, buf: &mut Self::Buffer, value: f32) -> Result<()>;
    /// `dst[i] = src[i]`.
    fn copy(&self, src: &Self::Buffer, dst: &mut Self::Buffer) -> Result<()>;
    /// `y[i] += alpha * x[i]`.
    fn axpy(&self, alpha: f32, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;
    /// `out[i] = alpha * a[i] + beta * b[i]`.
    fn add_scaled(
        &self,
        alpha: f32,
        a: &Self::Buffer,
        beta: f32,
        b: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;
    /// `out[i] = alpha * x[i]`.
    fn scale(&self, alpha: f32, x: &Self::Buffer, out: &mut Self::Buffer) -> Result<()>;
    /// `out[i] = a[i] * b[i]`.
    fn mul(&self, a: &Self::Buffer, b: &Self::Buffer, out: &mut Self::Buffer) -> Result<()>;
    /// Sum of all elements, read back to the host.
    fn sum(&self, x: &Self::Buffer) -> Result<f32>;
    /// `y = f(x)`.
    fn activation_forward(&self, f: Activation, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;
    /// `dx = dy * f'(x)`, given the forward's input `x` and output `y`.
    fn activation_backward(
        &self,
        f: Activation,
        x: &Self::Buffer,
        y: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>;

    // ---- dense -------------------------------------------------------------------------

    /// `c = alpha * op(a) * op(b) + beta * c` with row-major `op(a)` of `m x k` and `op(b)`
    /// of `k x n`; `trans_a` / `trans_b` say that the stored matrix is the transpose.
    /// When `beta == 0` the old contents of `c` are never read (they may be stale or NaN).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &Self::Buffer,
        b: &Self::Buffer,
        beta: f32,
        c: &mut Self::Buffer,
    ) -> Result<()>;
    /// `y[o, c, i] += bias[c]`.
    fn add_channel_bias(&self, layout: ChannelLayout, bias: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;
    /// `dbias[c] = sum over o, i of dy[o, c, i]`.
    fn channel_bias_grad(&self, layout: ChannelLayout, dy: &Self::Buffer, dbias: &mut Self::Buffer) -> Result<()>;

    // ---- convolution -------------------------------------------------------------------

    /// `y = conv(x, w) + bias`; `y` has `geom.output_shape(input)`.
    fn conv2d_forward(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &Self::Buffer,
        w: &Self::Buffer,
        bias: Option<&Self::Buffer>,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// `dx` from the weights and the output gradient.
    fn conv2d_backward_input(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        w: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>;
    /// `dw` from the input and the output gradient. (The bias gradient is
    /// [`Backend::channel_bias_grad`] over the output shape.)
    fn conv2d_backward_weight(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &Self::Buffer,
        dy: &Self::Buffer,
        dw: &mut Self::Buffer,
    ) -> Result<()>;

    // ---- pooling and LRN ---------------------------------------------------------------

    /// Pooling forward; `y` has `geom.output_shape(input)`.
    fn pool_forward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// Pooling backward. Max pooling routes each output gradient to the first maximum of its
    /// window in row-major window order; overlapping windows accumulate.
    #[allow(clippy::too_many_arguments)]
    fn pool_backward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &Self::Buffer,
        y: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>;
    /// LRN forward; also writes `scale = k + alpha' * sum(a_j^2)` for the backward.
    fn lrn_forward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &Self::Buffer,
        y: &mut Self::Buffer,
        scale: &mut Self::Buffer,
    ) -> Result<()>;
    /// LRN backward from the forward's input, output and scale.
    #[allow(clippy::too_many_arguments)]
    fn lrn_backward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &Self::Buffer,
        y: &Self::Buffer,
        scale: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
    ) -> Result<()>;

    // ---- regularisation and normalisation ----------------------------------------------

    /// Inverted dropout: `mask[i] = keep ? 1 / (1 - p) : 0` with keep from
    /// [`crate::rng::dropout_keep`]`(seed, window.global_index(i), p)`, and `y = x * mask`.
    /// `window` places the buffer inside the whole batch's tensor
    /// ([`MaskWindow::whole`] for a buffer that is the whole tensor).
    fn dropout_forward(
        &self,
        p: f32,
        seed: u64,
        window: &MaskWindow,
        x: &Self::Buffer,
        mask: &mut Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// Batch normalisation in training mode: normalises with batch statistics (biased
    /// variance), updates the running averages (unbiased variance), and saves the batch mean
    /// and inverse standard deviation for the backward.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_train(
        &self,
        params: &BatchNormParams,
        layout: ChannelLayout,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        running_mean: &mut Self::Buffer,
        running_var: &mut Self::Buffer,
        saved_mean: &mut Self::Buffer,
        saved_inv_std: &mut Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// Batch normalisation in evaluation mode, with the running averages.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_forward_eval(
        &self,
        params: &BatchNormParams,
        layout: ChannelLayout,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        beta: &Self::Buffer,
        running_mean: &Self::Buffer,
        running_var: &Self::Buffer,
        y: &mut Self::Buffer,
    ) -> Result<()>;
    /// Batch normalisation backward (training mode): `dx`, `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    fn batch_norm_backward(
        &self,
        layout: ChannelLayout,
        x: &Self::Buffer,
        gamma: &Self::Buffer,
        saved_mean: &Self::Buffer,
        saved_inv_std: &Self::Buffer,
        dy: &Self::Buffer,
        dx: &mut Self::Buffer,
        dgamma: &mut Self::Buffer,
        dbeta: &mut Self::Buffer,
    ) -> Result<()>;

    // ---- loss and optimiser ------------------------------------------------------------

    /// Numerically stable softmax cross-entropy over `batch` rows of `classes` logits.
    /// `labels` holds class indices as `f32`. Writes the row probabilities, the mean loss
    /// (one element), and the [`XentSummary`] of the batch ([`XENT_SUMMARY_LEN`] elements), all
    /// on the device. An invalid label is an `Err` at once where the backend can see it (CPU),
    /// else recorded in the summary (and a NaN loss), so that reading the summary is the error.
    #[allow(clippy::too_many_arguments)]
    fn softmax_xent_forward(
        &self,
        batch: usize,
        classes: usize,
        logits: &Self::Buffer,
        labels: &Self::Buffer,
        probs: &mut Self::Buffer,
        loss: &mut Self::Buffer,
        summary: &mut Self::Buffer,
    ) -> Result<()>;
    /// `dlogits = dloss / batch * (probs - onehot(labels))`, the gradient of the mean loss
    /// scaled by its upstream gradient `dloss` (one element, read on the device).
    fn softmax_xent_backward(
        &self,
        batch: usize,
        classes: usize,
        probs: &Self::Buffer,
        labels: &Self::Buffer,
        dloss: &Self::Buffer,
        dlogits: &mut Self::Buffer,
    ) -> Result<()>;
    /// One SGD step with momentum and weight decay, in place on `w` and `velocity`.
    fn sgd_step(
        &self,
        step: &SgdStep,
        w: &mut Self::Buffer,
        grad: &Self::Buffer,
        velocity: &mut Self::Buffer,
    ) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_decodes_counts_and_reports_invalid_labels() {
        let ok = XentSummary::from_values(&[0.5, 3.0, 7.0, 0.0, 0.0, 0.0]).unwrap();
        assert_eq!(ok, XentSummary { mean_loss: 0.5, top1_correct: 3, top5_correct: 7 });
        let err = XentSummary::from_values(&[f32::NAN, 0.0, 0.0, 2.0, 4.0, 1000.0]).unwrap_err();
        assert!(matches!(err, crate::Error::InvalidParameter { what: "label", value, .. } if value == 1000.0), "{err}");
        assert!(matches!(XentSummary::from_values(&[0.0; 5]), Err(crate::Error::BufferSize { .. })));
    }
}
