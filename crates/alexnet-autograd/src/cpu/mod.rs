//! The CPU backend: element-wise work on ndarray/rayon, GEMM and convolution from
//! `alexnet-conv`, pooling and LRN from `alexnet-pool`.

mod channels;
mod elementwise;
pub(crate) mod softmax;

use std::sync::Mutex;

use alexnet_conv::ConvWorkspace;
use alexnet_conv::gemm::{Transpose, sgemm};
use alexnet_core::{
    Activation, Backend, BatchNormParams, ChannelLayout, Conv2dGeom, Error, LrnParams, MaskWindow, PoolGeom, PoolKind,
    Result, SgdStep, Shape4, XENT_SUMMARY_LEN, check_len,
};

/// The CPU [`Backend`]: buffers are `Vec<f32>`; work runs on the current rayon pool, or on
/// a pool of the backend's own ([`CpuBackend::with_threads`]).
pub struct CpuBackend {
    threads: Option<rayon::ThreadPool>,
    /// Convolution scratch, one per concurrent caller, reused across calls.
    workspaces: Mutex<Vec<ConvWorkspace>>,
}

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBackend({} threads)", self.thread_count())
    }
}

fn conv_error(e: alexnet_conv::ConvError) -> Error {
    match e {
        alexnet_conv::ConvError::Core(core) => core,
        other => Error::Backend { backend: "cpu".into(), message: other.to_string() },
    }
}

fn pool_error(e: alexnet_pool::PoolError) -> Error {
    match e {
        alexnet_pool::PoolError::Core(core) => core,
        other => Error::Backend { backend: "cpu".into(), message: other.to_string() },
    }
}

fn transpose(t: bool) -> Transpose {
    if t { Transpose::Yes } else { Transpose::No }
}

/// Class indices from `f32` labels, rejecting non-integers and out-of-range classes.
fn labels_to_indices(op: &'static str, batch: usize, classes: usize, labels: &[f32]) -> Result<Vec<usize>> {
    check_len(op, "labels", batch, labels.len())?;
    labels
        .iter()
        .map(|&l| {
            if l >= 0.0 && l.fract() == 0.0 && (l as usize) < classes {
                Ok(l as usize)
            } else {
                Err(Error::InvalidParameter {
                    what: "label",
                    value: l.into(),
                    reason: "must be a class index below classes",
                })
            }
        })
        .collect()
}

impl CpuBackend {
    /// A backend using the global rayon pool (one thread per core by default).
    pub fn new() -> Self {
        Self { threads: None, workspaces: Mutex::new(Vec::new()) }
    }

    /// A backend running every kernel on its own pool of `threads` threads.
    pub fn with_threads(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build().map_err(|e| Error::Backend {
            backend: "cpu".into(),
            message: format!("cannot start {threads} threads: {e}"),
        })?;
        Ok(Self { threads: Some(pool), workspaces: Mutex::new(Vec::new()) })
    }

    /// Threads a kernel may use.
    pub fn thread_count(&self) -> usize {
        self.threads.as_ref().map_or_else(rayon::current_num_threads, rayon::ThreadPool::current_num_threads)
    }

    /// Runs `f` on the backend's threads.
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.threads {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// Runs `f` with a convolution workspace (taken from the free list, returned after).
    fn with_workspace<R: Send>(&self, f: impl FnOnce(&mut ConvWorkspace) -> R + Send) -> R {
        let taken = self.workspaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
        let mut ws = taken.unwrap_or_else(|| ConvWorkspace::with_threads(self.thread_count()));
        let result = self.run(|| f(&mut ws));
        self.workspaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(ws);
        result
    }
}

impl Backend for CpuBackend {
    type Buffer = Vec<f32>;

    fn name(&self) -> String {
        "cpu".into()
    }

    fn capabilities(&self) -> alexnet_core::DeviceCapabilities {
        let threads = u32::try_from(self.thread_count()).unwrap_or(u32::MAX);
        alexnet_core::DeviceCapabilities { model: "cpu".into(), memory_bytes: None, compute_units: Some(threads) }
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn upload_into(&self, host: &[f32], buf: &mut Vec<f32>) -> Result<()> {
        check_len("upload_into", "buffer", host.len(), buf.len())?;
        buf.copy_from_slice(host);
        Ok(())
    }

    fn download(&self, buf: &Vec<f32>, host: &mut [f32]) -> Result<()> {
        check_len("download", "host", buf.len(), host.len())?;
        host.copy_from_slice(buf);
        Ok(())
    }

    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn fill(&self, buf: &mut Vec<f32>, value: f32) -> Result<()> {
        self.run(|| elementwise::fill(buf, value));
        Ok(())
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        check_len("copy", "dst", src.len(), dst.len())?;
        self.run(|| elementwise::map1(dst, src, |x| x));
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        check_len("axpy", "y", x.len(), y.len())?;
        // map2 writes a fresh output, so accumulate through a view of y's own values.
        self.run(|| {
            let parallel = y.len() >= elementwise::PARALLEL_MIN;
            let zip =
                ndarray::Zip::from(ndarray::ArrayViewMut1::from(&mut y[..])).and(ndarray::ArrayView1::from(&x[..]));
            if parallel { zip.par_for_each(|y, &x| *y += alpha * x) } else { zip.for_each(|y, &x| *y += alpha * x) }
        });
        Ok(())
    }

    fn add_scaled(&self, alpha: f32, a: &Vec<f32>, beta: f32, b: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        check_len("add_scaled", "b", a.len(), b.len())?;
        check_len("add_scaled", "out", a.len(), out.len())?;
        self.run(|| elementwise::map2(out, a, b, |a, b| alpha * a + beta * b));
        Ok(())
    }

    fn scale(&self, alpha: f32, x: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        check_len("scale", "out", x.len(), out.len())?;
        self.run(|| elementwise::map1(out, x, |x| alpha * x));
        Ok(())
    }

    fn mul(&self, a: &Vec<f32>, b: &Vec<f32>, out: &mut Vec<f32>) -> Result<()> {
        check_len("mul", "b", a.len(), b.len())?;
        check_len("mul", "out", a.len(), out.len())?;
        self.run(|| elementwise::map2(out, a, b, |a, b| a * b));
        Ok(())
    }

    fn sum(&self, x: &Vec<f32>) -> Result<f32> {
        Ok(self.run(|| elementwise::sum(x)) as f32)
    }

    fn activation_forward(&self, f: Activation, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        check_len("activation_forward", "y", x.len(), y.len())?;
        self.run(|| elementwise::activation_forward(f, x, y));
        Ok(())
    }

    fn activation_backward(
        &self,
        f: Activation,
        x: &Vec<f32>,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        const OP: &str = "activation_backward";
        check_len(OP, "y", x.len(), y.len())?;
        check_len(OP, "dy", x.len(), dy.len())?;
        check_len(OP, "dx", x.len(), dx.len())?;
        self.run(|| elementwise::activation_backward(f, x, y, dy, dx));
        Ok(())
    }

    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &Vec<f32>,
        b: &Vec<f32>,
        beta: f32,
        c: &mut Vec<f32>,
    ) -> Result<()> {
        let threads = self.thread_count();
        self.run(|| sgemm(transpose(trans_a), transpose(trans_b), m, n, k, alpha, a, b, beta, c, threads))
            .map_err(conv_error)
    }

    fn add_channel_bias(&self, layout: ChannelLayout, bias: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        check_len("add_channel_bias", "bias", layout.channels, bias.len())?;
        check_len("add_channel_bias", "y", layout.numel(), y.len())?;
        self.run(|| channels::add_channel_bias(layout, bias, y));
        Ok(())
    }

    fn channel_bias_grad(&self, layout: ChannelLayout, dy: &Vec<f32>, dbias: &mut Vec<f32>) -> Result<()> {
        self.run(|| alexnet_conv::channel_bias_grad(layout, dy, dbias)).map_err(conv_error)
    }

    fn conv2d_forward(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &Vec<f32>,
        w: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        let bias = bias.map(Vec::as_slice);
        self.with_workspace(|ws| alexnet_conv::conv2d_forward(geom, input, x, w, bias, y, ws)).map_err(conv_error)
    }

    fn conv2d_backward_input(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        w: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        self.with_workspace(|ws| alexnet_conv::conv2d_backward_input(geom, input, w, dy, dx, ws)).map_err(conv_error)
    }

    fn conv2d_backward_weight(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &Vec<f32>,
        dy: &Vec<f32>,
        dw: &mut Vec<f32>,
    ) -> Result<()> {
        self.with_workspace(|ws| alexnet_conv::conv2d_backward_weight(geom, input, x, dy, dw, ws)).map_err(conv_error)
    }

    fn pool_forward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        self.run(|| alexnet_pool::pool_forward(kind, geom, input, x, y)).map_err(pool_error)
    }

    fn pool_backward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &Vec<f32>,
        y: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        self.run(|| alexnet_pool::pool_backward(kind, geom, input, x, y, dy, dx)).map_err(pool_error)
    }

    fn lrn_forward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        scale: &mut Vec<f32>,
    ) -> Result<()> {
        self.run(|| alexnet_pool::lrn_forward(params, input, x, y, scale)).map_err(pool_error)
    }

    fn lrn_backward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &Vec<f32>,
        y: &Vec<f32>,
        scale: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
    ) -> Result<()> {
        self.run(|| alexnet_pool::lrn_backward(params, input, x, y, scale, dy, dx)).map_err(pool_error)
    }

    fn dropout_forward(
        &self,
        p: f32,
        seed: u64,
        window: &MaskWindow,
        x: &Vec<f32>,
        mask: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidParameter { what: "dropout p", value: p.into(), reason: "must be in [0, 1)" });
        }
        check_len("dropout_forward", "mask", x.len(), mask.len())?;
        check_len("dropout_forward", "y", x.len(), y.len())?;
        window.check(x.len())?;
        self.run(|| elementwise::dropout_forward(p, seed, window, x, mask, y));
        Ok(())
    }

    fn batch_norm_forward_train(
        &self,
        params: &BatchNormParams,
        layout: ChannelLayout,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        running_mean: &mut Vec<f32>,
        running_var: &mut Vec<f32>,
        saved_mean: &mut Vec<f32>,
        saved_inv_std: &mut Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        const OP: &str = "batch_norm_forward_train";
        check_len(OP, "x", layout.numel(), x.len())?;
        check_len(OP, "y", layout.numel(), y.len())?;
        for (name, len) in [
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("running_mean", running_mean.len()),
            ("running_var", running_var.len()),
            ("saved_mean", saved_mean.len()),
            ("saved_inv_std", saved_inv_std.len()),
        ] {
            check_len(OP, name, layout.channels, len)?;
        }
        self.run(|| {
            channels::batch_norm_forward_train(
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
        });
        Ok(())
    }

    fn batch_norm_forward_eval(
        &self,
        params: &BatchNormParams,
        layout: ChannelLayout,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        running_mean: &Vec<f32>,
        running_var: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        const OP: &str = "batch_norm_forward_eval";
        check_len(OP, "x", layout.numel(), x.len())?;
        check_len(OP, "y", layout.numel(), y.len())?;
        for (name, len) in [
            ("gamma", gamma.len()),
            ("beta", beta.len()),
            ("running_mean", running_mean.len()),
            ("running_var", running_var.len()),
        ] {
            check_len(OP, name, layout.channels, len)?;
        }
        self.run(|| channels::batch_norm_forward_eval(params, layout, x, gamma, beta, running_mean, running_var, y));
        Ok(())
    }

    fn batch_norm_backward(
        &self,
        layout: ChannelLayout,
        x: &Vec<f32>,
        gamma: &Vec<f32>,
        saved_mean: &Vec<f32>,
        saved_inv_std: &Vec<f32>,
        dy: &Vec<f32>,
        dx: &mut Vec<f32>,
        dgamma: &mut Vec<f32>,
        dbeta: &mut Vec<f32>,
    ) -> Result<()> {
        const OP: &str = "batch_norm_backward";
        for (name, len) in [("x", x.len()), ("dy", dy.len()), ("dx", dx.len())] {
            check_len(OP, name, layout.numel(), len)?;
        }
        for (name, len) in [
            ("gamma", gamma.len()),
            ("saved_mean", saved_mean.len()),
            ("saved_inv_std", saved_inv_std.len()),
            ("dgamma", dgamma.len()),
            ("dbeta", dbeta.len()),
        ] {
            check_len(OP, name, layout.channels, len)?;
        }
        self.run(|| channels::batch_norm_backward(layout, x, gamma, saved_mean, saved_inv_std, dy, dx, dgamma, dbeta));
        Ok(())
    }

    fn softmax_xent_forward(
        &self,
        batch: usize,
        classes: usize,
        logits: &Vec<f32>,
        labels: &Vec<f32>,
        probs: &mut Vec<f32>,
        loss: &mut Vec<f32>,
        summary: &mut Vec<f32>,
    ) -> Result<()> {
        const OP: &str = "softmax_xent_forward";
        check_len(OP, "logits", batch * classes, logits.len())?;
        check_len(OP, "probs", batch * classes, probs.len())?;
        check_len(OP, "loss", 1, loss.len())?;
        check_len(OP, "summary", XENT_SUMMARY_LEN, summary.len())?;
        if classes == 0 {
            return Err(Error::ZeroSize { what: "classes" });
        }
        let labels = labels_to_indices(OP, batch, classes, labels)?;
        self.run(|| softmax::softmax_xent_forward(classes, logits, &labels, probs, &mut loss[0], summary));
        Ok(())
    }

    fn softmax_xent_backward(
        &self,
        batch: usize,
        classes: usize,
        probs: &Vec<f32>,
        labels: &Vec<f32>,
        dloss: &Vec<f32>,
        dlogits: &mut Vec<f32>,
    ) -> Result<()> {
        const OP: &str = "softmax_xent_backward";
        check_len(OP, "probs", batch * classes, probs.len())?;
        check_len(OP, "dloss", 1, dloss.len())?;
        check_len(OP, "dlogits", batch * classes, dlogits.len())?;
        let labels = labels_to_indices(OP, batch, classes, labels)?;
        let scale = dloss[0] / batch as f32;
        dlogits.copy_from_slice(probs);
        self.run(|| softmax::probs_to_xent_grad(classes, &labels, scale, dlogits));
        Ok(())
    }

    fn sgd_step(&self, step: &SgdStep, w: &mut Vec<f32>, grad: &Vec<f32>, velocity: &mut Vec<f32>) -> Result<()> {
        check_len("sgd_step", "grad", w.len(), grad.len())?;
        check_len("sgd_step", "velocity", w.len(), velocity.len())?;
        self.run(|| elementwise::sgd_step(step, w, grad, velocity));
        Ok(())
    }
}
