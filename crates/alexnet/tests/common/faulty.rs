//! A backend wrapper that fails on request after a given number of kernel launches (a
//! device lost mid-step), or reports other capabilities (a device of another kind).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use alexnet_core::{
    Activation, Backend, BatchNormParams, ChannelLayout, Conv2dGeom, DeviceCapabilities, Error, LrnParams, MaskWindow,
    PoolGeom, PoolKind, Result, SgdStep, Shape4,
};

/// `inner`, failing every launch once told to, or reporting another kind of device.
pub struct Faulty<B: Backend> {
    inner: Arc<B>,
    launches: AtomicUsize,
    fail_at: AtomicUsize,
    model: Option<String>,
}

impl<B: Backend> Faulty<B> {
    /// `inner`, healthy until [`Faulty::fail_after`].
    pub fn new(inner: Arc<B>) -> Self {
        Self { inner, launches: AtomicUsize::new(0), fail_at: AtomicUsize::new(usize::MAX), model: None }
    }

    /// Healthy, but reports itself as a device of kind `model`.
    pub fn of_model(inner: Arc<B>, model: &str) -> Self {
        Self { model: Some(model.to_string()), ..Self::new(inner) }
    }

    /// Fails every launch after `more` further ones.
    pub fn fail_after(&self, more: usize) {
        self.fail_at.store(self.launches.load(Ordering::SeqCst) + more, Ordering::SeqCst);
    }

    fn launch(&self) -> Result<()> {
        let n = self.launches.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_at.load(Ordering::SeqCst) {
            return Err(Error::Backend { backend: self.name(), message: format!("device lost at launch {n}") });
        }
        Ok(())
    }
}

impl<B: Backend> Backend for Faulty<B> {
    type Buffer = B::Buffer;

    fn name(&self) -> String {
        format!("faulty {}", self.inner.name())
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = self.inner.capabilities();
        if let Some(model) = &self.model {
            caps.model.clone_from(model);
        }
        caps
    }
    fn zeros(&self, len: usize) -> Result<B::Buffer> {
        self.launch()?;
        self.inner.zeros(len)
    }
    fn upload(&self, host: &[f32]) -> Result<B::Buffer> {
        self.launch()?;
        self.inner.upload(host)
    }
    fn upload_into(&self, host: &[f32], buf: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.upload_into(host, buf)
    }
    fn download(&self, buf: &B::Buffer, host: &mut [f32]) -> Result<()> {
        self.launch()?;
        self.inner.download(buf, host)
    }
    fn len(&self, buf: &B::Buffer) -> usize {
        self.inner.len(buf)
    }
    fn synchronize(&self) -> Result<()> {
        self.launch()?;
        self.inner.synchronize()
    }
    fn fill(&self, buf: &mut B::Buffer, value: f32) -> Result<()> {
        self.launch()?;
        self.inner.fill(buf, value)
    }
    fn copy(&self, src: &B::Buffer, dst: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.copy(src, dst)
    }
    fn axpy(&self, alpha: f32, x: &B::Buffer, y: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.axpy(alpha, x, y)
    }
    fn add_scaled(&self, alpha: f32, a: &B::Buffer, beta: f32, b: &B::Buffer, out: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.add_scaled(alpha, a, beta, b, out)
    }
    fn scale(&self, alpha: f32, x: &B::Buffer, out: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.scale(alpha, x, out)
    }
    fn mul(&self, a: &B::Buffer, b: &B::Buffer, out: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.mul(a, b, out)
    }
    fn sum(&self, x: &B::Buffer) -> Result<f32> {
        self.launch()?;
        self.inner.sum(x)
    }
    fn activation_forward(&self, f: Activation, x: &B::Buffer, y: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.activation_forward(f, x, y)
    }
    fn activation_backward(
        &self,
        f: Activation,
        x: &B::Buffer,
        y: &B::Buffer,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.activation_backward(f, x, y, dy, dx)
    }
    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &B::Buffer,
        b: &B::Buffer,
        beta: f32,
        c: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.gemm(trans_a, trans_b, m, n, k, alpha, a, b, beta, c)
    }
    fn add_channel_bias(&self, layout: ChannelLayout, bias: &B::Buffer, y: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.add_channel_bias(layout, bias, y)
    }
    fn channel_bias_grad(&self, layout: ChannelLayout, dy: &B::Buffer, dbias: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.channel_bias_grad(layout, dy, dbias)
    }
    fn conv2d_forward(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &B::Buffer,
        w: &B::Buffer,
        bias: Option<&B::Buffer>,
        y: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.conv2d_forward(geom, input, x, w, bias, y)
    }
    fn conv2d_backward_input(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        w: &B::Buffer,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.conv2d_backward_input(geom, input, w, dy, dx)
    }
    fn conv2d_backward_weight(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &B::Buffer,
        dy: &B::Buffer,
        dw: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.conv2d_backward_weight(geom, input, x, dy, dw)
    }
    fn pool_forward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &B::Buffer,
        y: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.pool_forward(kind, geom, input, x, y)
    }
    fn pool_backward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &B::Buffer,
        y: &B::Buffer,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.pool_backward(kind, geom, input, x, y, dy, dx)
    }
    fn lrn_forward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &B::Buffer,
        y: &mut B::Buffer,
        scale: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.lrn_forward(params, input, x, y, scale)
    }
    fn lrn_backward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &B::Buffer,
        y: &B::Buffer,
        scale: &B::Buffer,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.lrn_backward(params, input, x, y, scale, dy, dx)
    }
    fn dropout_forward(
        &self,
        p: f32,
        seed: u64,
        window: &MaskWindow,
        x: &B::Buffer,
        mask: &mut B::Buffer,
        y: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.dropout_forward(p, seed, window, x, mask, y)
    }
    fn batch_norm_forward_train(
        &self,
        params: &BatchNormParams,
        layout: ChannelLayout,
        x: &B::Buffer,
        gamma: &B::Buffer,
        beta: &B::Buffer,
        running_mean: &mut B::Buffer,
        running_var: &mut B::Buffer,
        saved_mean: &mut B::Buffer,
        saved_inv_std: &mut B::Buffer,
        y: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.batch_norm_forward_train(
            params,
            layout,
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            saved_mean,
            saved_inv_std,
            y,
        )
    }
    fn batch_norm_forward_eval(
        &self,
        params: &BatchNormParams,
        layout: ChannelLayout,
        x: &B::Buffer,
        gamma: &B::Buffer,
        beta: &B::Buffer,
        running_mean: &B::Buffer,
        running_var: &B::Buffer,
        y: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.batch_norm_forward_eval(params, layout, x, gamma, beta, running_mean, running_var, y)
    }
    fn batch_norm_backward(
        &self,
        layout: ChannelLayout,
        x: &B::Buffer,
        gamma: &B::Buffer,
        saved_mean: &B::Buffer,
        saved_inv_std: &B::Buffer,
        dy: &B::Buffer,
        dx: &mut B::Buffer,
        dgamma: &mut B::Buffer,
        dbeta: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.batch_norm_backward(layout, x, gamma, saved_mean, saved_inv_std, dy, dx, dgamma, dbeta)
    }
    fn softmax_xent_forward(
        &self,
        batch: usize,
        classes: usize,
        logits: &B::Buffer,
        labels: &B::Buffer,
        probs: &mut B::Buffer,
        loss: &mut B::Buffer,
        summary: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.softmax_xent_forward(batch, classes, logits, labels, probs, loss, summary)
    }
    fn softmax_xent_backward(
        &self,
        batch: usize,
        classes: usize,
        probs: &B::Buffer,
        labels: &B::Buffer,
        dloss: &B::Buffer,
        dlogits: &mut B::Buffer,
    ) -> Result<()> {
        self.launch()?;
        self.inner.softmax_xent_backward(batch, classes, probs, labels, dloss, dlogits)
    }
    fn sgd_step(&self, step: &SgdStep, w: &mut B::Buffer, grad: &B::Buffer, velocity: &mut B::Buffer) -> Result<()> {
        self.launch()?;
        self.inner.sgd_step(step, w, grad, velocity)
    }
}
