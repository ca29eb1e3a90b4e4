//! One device's shared state: its context, the kernel program built once, and the kernels.
//!
//! Every backend instance on a device shares one [`DeviceContext`] (so the program is built
//! once per process and device) and owns its own command queue and buffer pool.

use std::sync::Mutex;

use opencl3::command_queue::CommandQueue;
use opencl3::context::Context;
use opencl3::device::Device;
use opencl3::kernel::Kernel;
use opencl3::memory::ClMem;
use opencl3::program::Program;

use crate::buffer::ClBuffer;
use crate::config::{DeviceLimits, KernelConfig};
use crate::device::DeviceInfo;
use crate::error::{ClResultExt, OpenClError};

/// The kernel sources, one file per op family, built together as one program.
const SOURCES: [&str; 9] = [
    include_str!("../kernels/elementwise.cl"),
    include_str!("../kernels/gemm.cl"),
    include_str!("../kernels/im2col.cl"),
    include_str!("../kernels/pool.cl"),
    include_str!("../kernels/lrn.cl"),
    include_str!("../kernels/dropout.cl"),
    include_str!("../kernels/batchnorm.cl"),
    include_str!("../kernels/softmax.cl"),
    include_str!("../kernels/sgd.cl"),
];

macro_rules! kernel_table {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// Every kernel of the program; the discriminant indexes [`DeviceContext::kernels`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Kern { $($variant),* }
        /// Kernel function names, in [`Kern`] order.
        const KERNEL_NAMES: &[&str] = &[$($name),*];
    };
}

kernel_table! {
    Fill => "fill",
    Axpy => "axpy",
    AddScaled => "add_scaled",
    Scale => "scale",
    Mul => "mul",
    ActivationForward => "activation_forward",
    ActivationBackward => "activation_backward",
    AddChannelBias => "add_channel_bias",
    ChannelBiasGrad => "channel_bias_grad",
    ReduceSum => "reduce_sum",
    GemmNN => "gemm_nn",
    GemmNT => "gemm_nt",
    GemmTN => "gemm_tn",
    GemmTT => "gemm_tt",
    Im2col => "im2col",
    Col2im => "col2im",
    SwapOuter => "swap_outer",
    MaxPoolForward => "max_pool_forward",
    MaxPoolBackward => "max_pool_backward",
    AvgPoolForward => "avg_pool_forward",
    AvgPoolBackward => "avg_pool_backward",
    LrnForward => "lrn_forward",
    LrnBackward => "lrn_backward",
    DropoutForward => "dropout_forward",
    BnStats => "bn_stats",
    BnNormalize => "bn_normalize",
    BnEval => "bn_eval",
    BnGradReduce => "bn_grad_reduce",
    BnBackwardDx => "bn_backward_dx",
    SoftmaxXentForward => "softmax_xent_forward",
    SoftmaxXentSummary => "softmax_xent_summary",
    SoftmaxXentBackward => "softmax_xent_backward",
    SgdStep => "sgd_step",
}

/// One kernel argument.
#[derive(Clone, Copy)]
pub(crate) enum Arg<'a> {
    /// A device buffer.
    Buf(&'a ClBuffer),
    /// A `uint`.
    U32(u32),
    /// A `float`.
    F32(f32),
    /// A `ulong`.
    U64(u64),
}

/// A device's context, built program and kernels, shared by all backends on that device.
pub(crate) struct DeviceContext {
    pub(crate) info: DeviceInfo,
    pub(crate) device: Device,
    pub(crate) context: Context,
    /// Kept alive for the kernels.
    _program: Program,
    /// `clSetKernelArg` on one kernel object is not thread-safe: each kernel sits behind a
    /// mutex held from its first argument to its enqueue.
    kernels: Vec<Mutex<Kernel>>,
    /// The work-group and tile sizes the program was built with.
    pub(crate) config: KernelConfig,
}

/// Compiles `source` for `device`; a failed build returns the compiler's log.
fn build_program(
    context: &Context,
    device: &Device,
    info: &DeviceInfo,
    source: &str,
    options: &str,
) -> Result<Program, OpenClError> {
    let mut program = Program::create_from_source(context, source).cl("clCreateProgramWithSource")?;
    if program.build(&[device.id()], options).is_err() {
        let log = program.get_build_log(device.id()).unwrap_or_else(|e| format!("(no build log: {e})"));
        return Err(OpenClError::Build { device: info.to_string(), log });
    }
    Ok(program)
}

/// The device's properties that size the kernels; the preferred work-group multiple is a
/// kernel property, so a one-line probe kernel is built to ask for it.
fn device_limits(context: &Context, device: &Device, info: &DeviceInfo) -> Result<DeviceLimits, OpenClError> {
    const PROBE: &str = "__kernel void probe(__global float* x) { x[get_global_id(0)] = 0.0f; }";
    let program = build_program(context, device, info, PROBE, "-cl-std=CL1.2")?;
    let probe = Kernel::create(&program, "probe").cl("clCreateKernel")?;
    let preferred_multiple =
        probe.get_work_group_size_multiple(device.id()).cl("clGetKernelWorkGroupInfo(PREFERRED_MULTIPLE)")?;
    Ok(DeviceLimits {
        is_gpu: info.is_gpu,
        max_work_group_size: info.max_work_group_size,
        local_mem_bytes: info.local_mem_bytes,
        preferred_multiple,
    })
}

impl DeviceContext {
    /// The device's context with the program built for its properties.
    pub(crate) fn new(info: DeviceInfo, device: Device, context: Context) -> Result<Self, OpenClError> {
        let config = KernelConfig::for_device(&device_limits(&context, &device, &info)?);
        Self::with_config(info, device, context, config)
    }

    /// The device's context with the program built for `config`.
    pub(crate) fn with_config(
        info: DeviceInfo,
        device: Device,
        context: Context,
        config: KernelConfig,
    ) -> Result<Self, OpenClError> {
        // One string: cl3 0.13's multi-source call passes `&str` fat pointers where C expects
        // `char*`s, which crashes for more than one source.
        let program = build_program(&context, &device, &info, &SOURCES.join("\n"), &config.build_options())?;
        let kernels = KERNEL_NAMES
            .iter()
            .map(|name| Kernel::create(&program, name).cl("clCreateKernel").map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { info, device, context, _program: program, kernels, config })
    }

    /// Sets `args` on kernel `kern` and enqueues it on `queue` over `global` work-items
    /// (each rounded up to a multiple of `local`, which the kernels bounds-check).
    pub(crate) fn launch(
        &self,
        queue: &CommandQueue,
        kern: Kern,
        global: &[usize],
        local: &[usize],
        args: &[Arg<'_>],
    ) -> Result<(), OpenClError> {
        assert_eq!(global.len(), local.len(), "work dimensions disagree");
        let rounded: Vec<usize> = global.iter().zip(local).map(|(g, l)| g.div_ceil(*l).max(1) * l).collect();
        let kernel = self.kernels[kern as usize].lock().unwrap_or_else(|e| e.into_inner());
        for (i, arg) in args.iter().enumerate() {
            let i = i as u32;
            // SAFETY: each argument's type matches the kernel's parameter (uint, float, ulong or
            // a __global float* as cl_mem); buffers outlive the enqueue because the queue is
            // in order and pooled buffers are only reused on the same queue.
            unsafe {
                match arg {
                    Arg::Buf(b) => kernel.set_arg(i, &b.mem().get()),
                    Arg::U32(v) => kernel.set_arg(i, v),
                    Arg::F32(v) => kernel.set_arg(i, v),
                    Arg::U64(v) => kernel.set_arg(i, v),
                }
            }
            .cl("clSetKernelArg")?;
        }
        // SAFETY: the kernel's arguments are all set above and the sizes are non-zero.
        unsafe {
            queue.enqueue_nd_range_kernel(
                kernel.get(),
                rounded.len() as u32,
                std::ptr::null(),
                rounded.as_ptr(),
                local.as_ptr(),
                &[],
            )
        }
        .cl(KERNEL_NAMES[kern as usize])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_errors_carry_the_compiler_log() {
        let Some(be) = crate::testing::backend() else { return };
        let ctx = be.context();
        let bad = "__kernel void broken(__global float* x) { x[0] = undeclared_name; }";
        let Err(err) = build_program(&ctx.context, &ctx.device, &ctx.info, bad, "") else { panic!("must not build") };
        let OpenClError::Build { log, .. } = &err else { panic!("{err}") };
        assert!(log.contains("undeclared_name"), "{log}");
        assert!(err.to_string().contains("kernel build failed"), "{err}");
    }

    /// This device's own choice, and the NVIDIA-like GPU choice built and run here: the larger
    /// GPU tile must compile and multiply correctly too.
    #[test]
    fn this_devices_config_and_a_gpu_config_build_and_multiply() {
        let Some(be) = crate::testing::backend() else { return };
        let ctx = be.context();
        let limits = device_limits(&ctx.context, &ctx.device, &ctx.info).expect("limits");
        ctx.config.check(&limits).unwrap_or_else(|e| panic!("{limits:?} -> {}: {e}", ctx.config));
        let gpu = KernelConfig::for_device(&crate::config::tests::NVIDIA_LIKE);
        assert_ne!(gpu, ctx.config, "the test must build another configuration");
        let context = Context::from_device(&ctx.device).expect("context");
        let gpu_ctx = DeviceContext::with_config(ctx.info.clone(), Device::new(ctx.device.id()), context, gpu)
            .expect("the GPU configuration builds");
        let on_gpu_config =
            crate::OpenClBackend::on_context(std::sync::Arc::new(gpu_ctx), crate::GemmEngine::Own).expect("backend");
        crate::ops::gemm::tests::all_transposes_on(&on_gpu_config);
    }

    #[test]
    fn backends_on_one_device_share_the_built_program() {
        let (Some(a), Some(b)) = (crate::testing::backend(), crate::testing::backend()) else { return };
        assert!(std::sync::Arc::ptr_eq(a.context(), b.context()));
    }
}
