//! [`OpenClBackend`]: construction, buffer management, launch helpers and the
//! [`alexnet_core::Backend`] implementation (which delegates each op to its module in `ops`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alexnet_core::{
    Activation, Backend, BatchNormParams, ChannelLayout, Conv2dGeom, LrnParams, MaskWindow, PoolGeom, PoolKind, Result,
    SgdStep, Shape4, check_len,
};
use opencl3::command_queue::CommandQueue;
use opencl3::event::{CL_COMPLETE, Event};
use opencl3::types::{CL_BLOCKING, CL_NON_BLOCKING};

use crate::buffer::{ClBuffer, Pool};
use crate::clblast::GemmEngine;
use crate::config::KernelConfig;
use crate::context::{Arg, DeviceContext, Kern};
use crate::device::{DeviceInfo, DeviceSelector, device_context};
use crate::error::{ClResultExt, OpenClError};
use crate::ops;

/// An OpenCL device that runs every AlexNet kernel, forward and backward.
///
/// Instances on the same device share one context and one built program; each instance owns
/// an in-order command queue and a pool of recycled buffers. Kernels are enqueued without
/// waiting, and uploads too (from a staging copy of the host data): only
/// [`Backend::download`], [`Backend::sum`] and [`Backend::synchronize`] block.
/// Buffers belong to the instance that made them; passing one to another instance is an error.
pub struct OpenClBackend {
    ctx: Arc<DeviceContext>,
    queue: CommandQueue,
    pool: Arc<Pool>,
    gemm: GemmEngine,
    /// Elements of convolution scratch (columns) one call may hold; see [`Self::scratch_budget`].
    scratch_budget: usize,
    counters: Counters,
    /// Host copies of uploads still in flight, kept alive until their write completes.
    staged: Mutex<Vec<Staged>>,
}

/// A non-blocking upload's source data and the event of its write.
struct Staged {
    write: Event,
    _data: Vec<f32>,
}

impl Staged {
    fn done(&self) -> bool {
        // Negative statuses are errors: the write is over either way.
        self.write.command_execution_status().map_or(true, |s| s.0 <= CL_COMPLETE)
    }
}

impl Drop for OpenClBackend {
    fn drop(&mut self) {
        // Staged host data must outlive the writes that read it.
        let _ = self.queue.finish();
    }
}

impl std::fmt::Debug for OpenClBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenClBackend")
            .field("device", &self.ctx.info)
            .field("gemm", &self.gemm)
            .finish_non_exhaustive()
    }
}

impl OpenClBackend {
    /// A backend on the selected device, with the GEMM engine that [`crate::GEMM_ENV`] forces
    /// or else CLBlast when it loads. The first call per device builds the kernels (about half
    /// a second on PoCL; drivers cache the binaries afterwards).
    pub fn new(selector: &DeviceSelector) -> Result<Self, OpenClError> {
        Self::with_gemm(selector, GemmEngine::from_env()?)
    }

    /// A backend on the selected device with GEMM engine `gemm` (`None`: CLBlast when it
    /// loads, our kernels otherwise). A forced CLBlast that does not load is
    /// [`OpenClError::ClBlastUnavailable`].
    pub fn with_gemm(selector: &DeviceSelector, gemm: Option<GemmEngine>) -> Result<Self, OpenClError> {
        let gemm = GemmEngine::resolve(gemm)?;
        Self::on_context(device_context(selector)?, gemm)
    }

    /// A backend on an existing device context (its own queue and buffer pool).
    pub(crate) fn on_context(ctx: Arc<DeviceContext>, gemm: GemmEngine) -> Result<Self, OpenClError> {
        // clCreateCommandQueue is the OpenCL 1.2 call (deprecated in 2.0 but present
        // everywhere); the 2.0 replacement is missing on 1.2-only platforms.
        #[allow(deprecated)]
        // SAFETY: the context and device are valid and belong together.
        let queue = unsafe { CommandQueue::create(&ctx.context, ctx.device.id(), 0) }.cl("clCreateCommandQueue")?;
        // Keep at most a quarter of device memory in free, pooled buffers.
        let pool = Arc::new(Pool::new(ctx.info.global_mem_bytes / 4));
        // A sixteenth of device memory (within one allocation) for convolution scratch: the whole
        // batch in one chunk on large GPUs, chunks of images on small devices.
        let scratch_bytes = (ctx.info.global_mem_bytes / 16).min(ctx.info.max_alloc_bytes);
        let scratch_budget = usize::try_from(scratch_bytes / 4).unwrap_or(usize::MAX).min(u32::MAX as usize);
        Ok(Self {
            ctx,
            queue,
            pool,
            gemm,
            scratch_budget,
            counters: Counters::default(),
            staged: Mutex::new(Vec::new()),
        })
    }

    /// A backend on the device named by [`crate::DEVICE_ENV`], or the default device.
    pub fn from_env() -> Result<Self, OpenClError> {
        Self::new(&DeviceSelector::from_env())
    }

    /// The device this backend runs on.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.ctx.info
    }

    /// The engine that runs this backend's matrix products.
    pub fn gemm_engine(&self) -> GemmEngine {
        self.gemm
    }

    /// Commands and transfers enqueued so far: compare two readings to count a training step's.
    pub fn activity(&self) -> Activity {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Activity {
            launches: get(&c.launches),
            library_calls: get(&c.library_calls),
            device_copies: get(&c.device_copies),
            uploads: get(&c.uploads),
            upload_bytes: get(&c.upload_bytes),
            downloads: get(&c.downloads),
            download_bytes: get(&c.download_bytes),
        }
    }

    /// Elements of scratch (im2col columns and a transposed output) one convolution call uses
    /// at most; larger batches run in chunks of images.
    pub(crate) fn scratch_budget(&self) -> usize {
        self.scratch_budget
    }

    /// Makes convolutions run in small chunks, to test the chunk loop.
    #[cfg(test)]
    pub(crate) fn set_scratch_budget(&mut self, elements: usize) {
        self.scratch_budget = elements;
    }

    /// Counts one CLBlast call.
    pub(crate) fn count_library_call(&self) {
        self.counters.library_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// The in-order queue every op of this backend is enqueued on.
    pub(crate) fn queue(&self) -> &CommandQueue {
        &self.queue
    }

    /// Bytes held in free, pooled buffers.
    pub fn pooled_bytes(&self) -> u64 {
        self.pool.pooled_bytes()
    }

    /// Returns every free pooled buffer to the driver.
    pub fn release_pool(&self) {
        self.pool.clear();
    }

    /// An uninitialised device buffer from the pool.
    pub(crate) fn scratch(&self, len: usize) -> Result<ClBuffer> {
        if len > u32::MAX as usize {
            return Err(OpenClError::TooLarge { what: "buffer length", value: len }.into());
        }
        Ok(self.pool.take(&self.ctx.context, len)?)
    }

    /// Checks that `buf` belongs to this backend and holds `expected` elements.
    pub(crate) fn check(&self, op: &'static str, name: &'static str, buf: &ClBuffer, expected: usize) -> Result<()> {
        if !buf.belongs_to(&self.pool) {
            return Err(OpenClError::ForeignBuffer { op, buffer: name }.into());
        }
        check_len(op, name, expected, buf.len())
    }

    /// Enqueues `kern` over `global` work-items in work-groups of `local`.
    pub(crate) fn launch(&self, kern: Kern, global: &[usize], local: &[usize], args: &[Arg<'_>]) -> Result<()> {
        self.ctx.launch(&self.queue, kern, global, local, args)?;
        self.counters.launches.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Enqueues a one-dimensional kernel over `n` work-items (nothing when `n == 0`).
    pub(crate) fn launch_1d(&self, kern: Kern, n: usize, args: &[Arg<'_>]) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.launch(kern, &[n], &[self.ctx.config.wg], args)
    }

    /// Enqueues a reduction kernel with one work-group of [`DeviceContext::wg`] items per group index.
    pub(crate) fn launch_groups(&self, kern: Kern, groups: usize, args: &[Arg<'_>]) -> Result<()> {
        if groups == 0 {
            return Ok(());
        }
        let wg = self.ctx.config.wg;
        self.launch(kern, &[groups * wg], &[wg], args)
    }

    /// The shared device context.
    #[cfg(test)]
    pub(crate) fn context(&self) -> &Arc<DeviceContext> {
        &self.ctx
    }

    /// Work-group size of reductions.
    pub(crate) fn wg(&self) -> usize {
        self.ctx.config.wg
    }

    /// The work-group and tile sizes of this device's kernels.
    pub(crate) fn kernel_config(&self) -> KernelConfig {
        self.ctx.config
    }
}

/// Running totals behind [`OpenClBackend::activity`].
#[derive(Default)]
struct Counters {
    launches: AtomicU64,
    library_calls: AtomicU64,
    device_copies: AtomicU64,
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    downloads: AtomicU64,
    download_bytes: AtomicU64,
}

impl Counters {
    fn transfer(&self, count: &AtomicU64, bytes: &AtomicU64, elements: usize) {
        count.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add((elements * std::mem::size_of::<f32>()) as u64, Ordering::Relaxed);
    }
}

/// What a backend has enqueued since it was made ([`OpenClBackend::activity`]); the difference
/// of two readings ([`Activity::since`]) is what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// Our own kernels enqueued.
    pub launches: u64,
    /// CLBlast calls (each enqueues one or a few kernels of its own).
    pub library_calls: u64,
    /// Device-to-device buffer copies.
    pub device_copies: u64,
    /// Host-to-device writes.
    pub uploads: u64,
    /// Bytes written to the device.
    pub upload_bytes: u64,
    /// Device-to-host reads.
    pub downloads: u64,
    /// Bytes read from the device.
    pub download_bytes: u64,
}

impl Activity {
    /// The activity between an `earlier` reading and this one.
    pub fn since(&self, earlier: &Activity) -> Activity {
        Activity {
            launches: self.launches - earlier.launches,
            library_calls: self.library_calls - earlier.library_calls,
            device_copies: self.device_copies - earlier.device_copies,
            uploads: self.uploads - earlier.uploads,
            upload_bytes: self.upload_bytes - earlier.upload_bytes,
            downloads: self.downloads - earlier.downloads,
            download_bytes: self.download_bytes - earlier.download_bytes,
        }
    }
}

/// `v` as a kernel `uint`, or [`OpenClError::TooLarge`].
pub(crate) fn u(what: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| OpenClError::TooLarge { what, value: v }.into())
}

impl Backend for OpenClBackend {
    type Buffer = ClBuffer;

    fn name(&self) -> String {
        format!("opencl:{} ({} GEMM)", self.ctx.info.name, self.gemm)
    }

    fn capabilities(&self) -> alexnet_core::DeviceCapabilities {
        let info = &self.ctx.info;
        alexnet_core::DeviceCapabilities {
            model: format!("opencl:{} / {}", info.platform, info.name),
            memory_bytes: Some(info.global_mem_bytes),
            compute_units: Some(info.compute_units),
        }
    }

    fn zeros(&self, len: usize) -> Result<ClBuffer> {
        let mut buf = self.scratch(len)?;
        self.fill(&mut buf, 0.0)?;
        Ok(buf)
    }

    fn upload(&self, host: &[f32]) -> Result<ClBuffer> {
        let mut buf = self.scratch(host.len())?;
        self.upload_into(host, &mut buf)?;
        Ok(buf)
    }

    /// Copies `host` to a staging vector and enqueues a non-blocking write: a blocking write
    /// on an in-order queue would wait for every kernel queued before it.
    fn upload_into(&self, host: &[f32], buf: &mut ClBuffer) -> Result<()> {
        self.check("upload_into", "buffer", buf, host.len())?;
        if !host.is_empty() {
            let data = host.to_vec();
            // SAFETY: writes exactly data.len() elements into a buffer of that capacity; `data`
            // stays alive in `staged` until the write's event completes (or the queue finishes).
            let write = unsafe { self.queue.enqueue_write_buffer(buf.mem_mut(), CL_NON_BLOCKING, 0, &data, &[]) }
                .cl("clEnqueueWriteBuffer")?;
            self.queue.flush().cl("clFlush")?;
            self.counters.transfer(&self.counters.uploads, &self.counters.upload_bytes, host.len());
            let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
            staged.retain(|s| !s.done());
            staged.push(Staged { write, _data: data });
        }
        Ok(())
    }

    fn download(&self, buf: &ClBuffer, host: &mut [f32]) -> Result<()> {
        self.check("download", "buffer", buf, host.len())?;
        if !host.is_empty() {
            // SAFETY: blocking read of exactly host.len() elements; the queue is in order, so
            // every kernel that writes `buf` has finished first.
            unsafe { self.queue.enqueue_read_buffer(buf.mem(), CL_BLOCKING, 0, host, &[]) }
                .cl("clEnqueueReadBuffer")?;
            self.counters.transfer(&self.counters.downloads, &self.counters.download_bytes, host.len());
        }
        Ok(())
    }

    fn len(&self, buf: &ClBuffer) -> usize {
        buf.len()
    }

    fn synchronize(&self) -> Result<()> {
        self.queue.finish().cl("clFinish")?;
        self.staged.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }

    fn fill(&self, buf: &mut ClBuffer, value: f32) -> Result<()> {
        ops::elementwise::fill(self, buf, value)
    }

    fn copy(&self, src: &ClBuffer, dst: &mut ClBuffer) -> Result<()> {
        ops::elementwise::copy(self, &self.queue, src, dst)?;
        self.counters.device_copies.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn axpy(&self, alpha: f32, x: &ClBuffer, y: &mut ClBuffer) -> Result<()> {
        ops::elementwise::axpy(self, alpha, x, y)
    }

    fn add_scaled(&self, alpha: f32, a: &ClBuffer, beta: f32, b: &ClBuffer, out: &mut ClBuffer) -> Result<()> {
        ops::elementwise::add_scaled(self, alpha, a, beta, b, out)
    }

    fn scale(&self, alpha: f32, x: &ClBuffer, out: &mut ClBuffer) -> Result<()> {
        ops::elementwise::scale(self, alpha, x, out)
    }

    fn mul(&self, a: &ClBuffer, b: &ClBuffer, out: &mut ClBuffer) -> Result<()> {
        ops::elementwise::mul(self, a, b, out)
    }

    fn sum(&self, x: &ClBuffer) -> Result<f32> {
        ops::elementwise::sum(self, x)
    }

    fn activation_forward(&self, f: Activation, x: &ClBuffer, y: &mut ClBuffer) -> Result<()> {
        ops::elementwise::activation_forward(self, f, x, y)
    }

    fn activation_backward(
        &self,
        f: Activation,
        x: &ClBuffer,
        y: &ClBuffer,
        dy: &ClBuffer,
        dx: &mut ClBuffer,
    ) -> Result<()> {
        ops::elementwise::activation_backward(self, f, x, y, dy, dx)
    }

    fn gemm(
        &self,
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &ClBuffer,
        b: &ClBuffer,
        beta: f32,
        c: &mut ClBuffer,
    ) -> Result<()> {
        ops::gemm::gemm(self, trans_a, trans_b, m, n, k, alpha, a, b, beta, c)
    }

    fn add_channel_bias(&self, layout: ChannelLayout, bias: &ClBuffer, y: &mut ClBuffer) -> Result<()> {
        ops::elementwise::add_channel_bias(self, layout, bias, y)
    }

    fn channel_bias_grad(&self, layout: ChannelLayout, dy: &ClBuffer, dbias: &mut ClBuffer) -> Result<()> {
        ops::elementwise::channel_bias_grad(self, layout, dy, dbias)
    }

    fn conv2d_forward(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &ClBuffer,
        w: &ClBuffer,
        bias: Option<&ClBuffer>,
        y: &mut ClBuffer,
    ) -> Result<()> {
        ops::conv::forward(self, geom, input, x, w, bias, y)
    }

    fn conv2d_backward_input(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        w: &ClBuffer,
        dy: &ClBuffer,
        dx: &mut ClBuffer,
    ) -> Result<()> {
        ops::conv::backward_input(self, geom, input, w, dy, dx)
    }

    fn conv2d_backward_weight(
        &self,
        geom: &Conv2dGeom,
        input: Shape4,
        x: &ClBuffer,
        dy: &ClBuffer,
        dw: &mut ClBuffer,
    ) -> Result<()> {
        ops::conv::backward_weight(self, geom, input, x, dy, dw)
    }

    fn pool_forward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &ClBuffer,
        y: &mut ClBuffer,
    ) -> Result<()> {
        ops::pool::forward(self, kind, geom, input, x, y)
    }

    fn pool_backward(
        &self,
        kind: PoolKind,
        geom: &PoolGeom,
        input: Shape4,
        x: &ClBuffer,
        y: &ClBuffer,
        dy: &ClBuffer,
        dx: &mut ClBuffer,
    ) -> Result<()> {
        ops::pool::backward(self, kind, geom, input, x, y, dy, dx)
    }

    fn lrn_forward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &ClBuffer,
        y: &mut ClBuffer,
        scale: &mut ClBuffer,
    ) -> Result<()> {
        ops::lrn::forward(self, params, input, x, y, scale)
    }

    fn lrn_backward(
        &self,
        params: &LrnParams,
        input: Shape4,
        x: &ClBuffer,
        y: &ClBuffer,
        scale: &ClBuffer,
        dy: &ClBuffer,
        dx: &mut ClBuffer,
    ) -> Result<()> {
        ops::lrn::backward(self, params, input, x, y, scale, dy, dx)
    }

    fn dropout_forward(
        &self,
        p: f32,
        seed: u64,
        window: &MaskWindow,
        x: &ClBuffer,
        mask: &mut ClBuffer,
        y: &mut ClBuffer,
    ) -> Result<()> {
        ops::dropout::forward(self, p, seed, window, x, mask, y)
    }

    fn batch_norm_forward_train(
        &self,
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
        ops::batchnorm::forward_train(
            self,
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
        x: &ClBuffer,
        gamma: &ClBuffer,
        beta: &ClBuffer,
        running_mean: &ClBuffer,
        running_var: &ClBuffer,
        y: &mut ClBuffer,
    ) -> Result<()> {
        ops::batchnorm::forward_eval(self, params, layout, x, gamma, beta, running_mean, running_var, y)
    }

    fn batch_norm_backward(
        &self,
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
        ops::batchnorm::backward(self, layout, x, gamma, saved_mean, saved_inv_std, dy, dx, dgamma, dbeta)
    }

    fn softmax_xent_forward(
        &self,
        batch: usize,
        classes: usize,
        logits: &ClBuffer,
        labels: &ClBuffer,
        probs: &mut ClBuffer,
        loss: &mut ClBuffer,
        summary: &mut ClBuffer,
    ) -> Result<()> {
        ops::softmax::forward(self, batch, classes, logits, labels, probs, loss, summary)
    }

    fn softmax_xent_backward(
        &self,
        batch: usize,
        classes: usize,
        probs: &ClBuffer,
        labels: &ClBuffer,
        dloss: &ClBuffer,
        dlogits: &mut ClBuffer,
    ) -> Result<()> {
        ops::softmax::backward(self, batch, classes, probs, labels, dloss, dlogits)
    }

    fn sgd_step(&self, step: &SgdStep, w: &mut ClBuffer, grad: &ClBuffer, velocity: &mut ClBuffer) -> Result<()> {
        ops::sgd::step(self, step, w, grad, velocity)
    }
}

#[cfg(test)]
mod tests {
    use alexnet_core::Backend;

    use crate::testing::backend;

    #[test]
    fn dropped_buffers_are_pooled_and_reused() {
        let Some(be) = backend() else { return };
        let first = be.zeros(1234).unwrap();
        drop(first);
        assert_eq!(be.pooled_bytes(), 1234 * 4);
        // The same length comes back out of the pool, zeroed by `zeros`.
        let again = be.zeros(1234).unwrap();
        assert_eq!(be.pooled_bytes(), 0);
        let mut host = vec![1.0; 1234];
        be.download(&again, &mut host).unwrap();
        assert!(host.iter().all(|&v| v == 0.0));
        drop(again);
        be.release_pool();
        assert_eq!(be.pooled_bytes(), 0);
    }

    /// Uploads are non-blocking from a staging copy: the caller may reuse its slice at once,
    /// and a recycled buffer's new contents arrive only after the kernels queued before them.
    #[test]
    fn uploads_are_staged_and_ordered_after_earlier_kernels() {
        let Some(be) = backend() else { return };
        let n = 100_000;
        let mut host: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let x = be.upload(&host).unwrap();
        let mut y = be.zeros(n).unwrap();
        be.scale(2.0, &x, &mut y).unwrap();
        // Reuse the host slice and the device buffer immediately.
        host.iter_mut().for_each(|v| *v = -1.0);
        drop(x);
        let recycled = be.upload(&host).unwrap();
        assert_eq!(be.pooled_bytes(), 0, "the upload must take the recycled buffer");
        let mut got = vec![0.0; n];
        be.download(&y, &mut got).unwrap();
        assert!(got.iter().enumerate().all(|(i, &v)| v == 2.0 * i as f32), "scale saw the later upload");
        be.download(&recycled, &mut got).unwrap();
        assert!(got.iter().all(|&v| v == -1.0));
    }
}
