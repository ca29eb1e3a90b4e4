//! `cargo xtask bench train`: throughput of a full training step and of inference on
//! synthetic input, on one device or several (`--devices 0,1 --parallel data|model`).

use std::sync::Arc;
use std::time::Instant;

use alexnet::parallel::PlacedModel;
use alexnet::{Architecture, BackendKind, Parallelism, Preset, init::init_params};
use alexnet_core::Backend;
use alexnet_opencl::Activity;
use clap::Args;

use crate::{AnyBackends, AnyResult, BackendArgs, make_backends, placement};

/// Options of `bench train`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model preset.
    #[arg(long, default_value = "paper")]
    preset: Preset,
    /// Channel groups the LRN layers normalise apart (the model split needs 2) [default: the
    /// preset's].
    #[arg(long)]
    lrn_groups: Option<usize>,
    /// Training batch size (the global batch, over all devices).
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Inference batch size.
    #[arg(long, default_value_t = 32)]
    infer_batch: usize,
    /// Timed training steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Timed inference batches (after one warm-up batch).
    #[arg(long, default_value_t = 5)]
    infer_steps: usize,
    /// Several devices: OpenCL indices such as `0,1`; with the CPU backend, one per entry
    /// [default: --device alone].
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    devices: Option<Vec<usize>>,
    /// How several devices divide the work: `data` or `model` (the paper's split).
    #[arg(long, default_value = "data")]
    parallel: Parallelism,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run(args: BenchArgs) -> AnyResult {
    let kind = args.backend.backend.unwrap_or(BackendKind::Cpu);
    let devices = args.devices.clone().unwrap_or_else(|| vec![args.backend.device.unwrap_or(0)]);
    match make_backends(&args.backend, kind, &devices)? {
        AnyBackends::Cpu(list) => bench_on(list, &args, None),
        AnyBackends::OpenCl(list) => {
            let counted = list.clone();
            bench_on(list, &args, Some(&move || counted.iter().map(|b| b.activity()).collect()))
        }
    }
}

/// Prints what one training step enqueued and transferred on each device, averaged over
/// `steps` steps.
fn print_activity(devices: &[Activity], steps: usize) {
    let per = |v: u64| v as f64 / steps as f64;
    for (device, activity) in devices.iter().enumerate() {
        let which = if devices.len() > 1 { format!(", device {device}") } else { String::new() };
        println!(
            "per training step{which}: {:.0} kernel launches + {:.0} CLBlast calls + {:.0} device copies; \
             {:.0} uploads ({:.1} MB), {:.0} downloads ({:.0} bytes)",
            per(activity.launches),
            per(activity.library_calls),
            per(activity.device_copies),
            per(activity.uploads),
            per(activity.upload_bytes) / 1e6,
            per(activity.downloads),
            per(activity.download_bytes),
        );
    }
}

fn synthetic(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64).map(|i| alexnet_core::rng::uniform(seed, i) * 2.0 - 1.0).collect()
}

/// Times training and inference on `backends` (one per device); `activity` (OpenCL) reads
/// each device's launch and transfer counters, reported per training step.
fn bench_on<B: Backend + 'static>(
    backends: Vec<Arc<B>>,
    args: &BenchArgs,
    activity: Option<&dyn Fn() -> Vec<Activity>>,
) -> AnyResult {
    let mut arch = Architecture::default_for(args.preset)?;
    if let Some(groups) = args.lrn_groups {
        arch = arch.with_lrn_groups(groups)?;
    }
    let [c, h, w] = arch.input;
    let classes = arch.classes;
    let flops = arch.forward_flops() as f64;
    let all = backends.clone();
    let placement = placement(backends, args.parallel)?;
    println!(
        "{} ({} parameters, {:.2} GFLOP forward per image) on {}",
        args.preset,
        alexnet::preset::group_thousands(arch.trainable_params()),
        flops / 1e9,
        placement.describe()
    );
    let params = init_params(&arch, args.preset.default_init(), 1);
    let mut model = PlacedModel::new(&arch, placement, &params)?;
    let sync_all = || -> AnyResult {
        for b in &all {
            b.synchronize()?;
        }
        Ok(())
    };

    let n = args.batch;
    let x = synthetic(n * c * h * w, 2);
    let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    let step = alexnet_core::SgdStep { lr: 1e-4, momentum: 0.9, weight_decay: 5e-4 };
    let (mut exchange_before, mut activity_before) = (None, None);
    let mut seconds = 0.0;
    for i in 0..=args.steps {
        if i == 1 {
            exchange_before = model.exchange_stats();
            activity_before = activity.map(|read| read());
        }
        let started = Instant::now();
        let loss = model.train_step(&x, [n, c, h, w], &labels, i as u64, &step)?;
        sync_all()?;
        if !loss.is_finite() {
            return Err(format!("training step {i}: non-finite loss {loss}").into());
        }
        if i > 0 {
            seconds += started.elapsed().as_secs_f64();
        }
    }
    let steps = args.steps.max(1);
    let mean = seconds / steps as f64;
    let ips = n as f64 / mean;
    // Forward + backward (input and weight gradients) is three forward passes of work.
    println!(
        "training, batch {n}: {ips:.1} images/s ({mean:.3} s/step over {} steps), {:.1} GFLOP/s (3x forward FLOPs)",
        args.steps,
        3.0 * flops * ips / 1e9
    );
    if let (Some(before), Some(now)) = (exchange_before, model.exchange_stats()) {
        let exchange_steps = (now.steps - before.steps).max(1) as f64;
        let moving = (now.wait_seconds - before.wait_seconds) / exchange_steps;
        let what = match args.parallel {
            Parallelism::Data => "gradients summed per step by each replica; waiting for sums after backward",
            Parallelism::Model => "activations and gradients crossing between the devices per step; moving them",
        };
        println!(
            "exchange: {:.1} MB {what}: {:.1} ms per step ({:.1}% of the step)",
            now.bytes_per_step as f64 / 1e6,
            1e3 * moving,
            100.0 * moving / mean
        );
    }
    if let (Some(read), Some(before)) = (activity, activity_before) {
        let since: Vec<Activity> = read().iter().zip(&before).map(|(now, then)| now.since(then)).collect();
        print_activity(&since, steps);
    }

    let m = args.infer_batch;
    let x = synthetic(m * c * h * w, 3);
    let mut seconds = 0.0;
    for i in 0..=args.infer_steps {
        let started = Instant::now();
        model.logits(&x, &[m, c, h, w])?;
        if i > 0 {
            seconds += started.elapsed().as_secs_f64();
        }
    }
    let mean = seconds / args.infer_steps.max(1) as f64;
    let ips = m as f64 / mean;
    println!(
        "inference, batch {m}: {ips:.1} images/s ({mean:.3} s/batch over {} batches), {:.1} GFLOP/s",
        args.infer_steps,
        flops * ips / 1e9
    );
    Ok(())
}
