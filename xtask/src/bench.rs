//! `cargo xtask bench train`: throughput of a full training step and of inference on
//! synthetic input.

use std::sync::Arc;
use std::time::Instant;

use alexnet::{Architecture, Model, Preset};
use alexnet_autograd::Tape;
use alexnet_core::Backend;
use clap::Args;

use alexnet_opencl::Activity;

use crate::{AnyBackend, AnyResult, BackendArgs, make_backend};

/// Options of `bench train`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model preset.
    #[arg(long, default_value = "paper")]
    preset: Preset,
    /// Training batch size.
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
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run(args: BenchArgs) -> AnyResult {
    match make_backend(&args.backend, alexnet::BackendKind::Cpu)? {
        AnyBackend::Cpu(b) => bench_on(b, &args, None),
        AnyBackend::OpenCl(b) => {
            let counted = Arc::clone(&b);
            bench_on(b, &args, Some(&move || counted.activity()))
        }
    }
}

/// Prints what one training step enqueued and transferred, averaged over `steps` steps.
fn print_activity(activity: &Activity, steps: usize) {
    let per = |v: u64| v as f64 / steps as f64;
    println!(
        "per training step: {:.0} kernel launches + {:.0} CLBlast calls + {:.0} device copies; \
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

fn synthetic(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64).map(|i| alexnet_core::rng::uniform(seed, i) * 2.0 - 1.0).collect()
}

/// Times training and inference on `backend`; `activity` (OpenCL) reads its launch and
/// transfer counters, reported per training step.
fn bench_on<B: Backend + 'static>(
    backend: Arc<B>,
    args: &BenchArgs,
    activity: Option<&dyn Fn() -> Activity>,
) -> AnyResult {
    let arch = Architecture::default_for(args.preset)?;
    let [c, h, w] = arch.input;
    let classes = arch.classes;
    let flops = arch.forward_flops() as f64;
    println!(
        "{} ({} parameters, {:.2} GFLOP forward per image) on {}",
        args.preset,
        alexnet::preset::group_thousands(arch.trainable_params()),
        flops / 1e9,
        backend.name()
    );
    let mut model = Model::init(arch, backend.clone(), args.preset.default_init(), 1)?;

    let n = args.batch;
    let x = synthetic(n * c * h * w, 2);
    let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
    let step = alexnet_core::SgdStep { lr: 1e-4, momentum: 0.9, weight_decay: 5e-4 };
    let mut tape = Tape::train(backend.clone());
    let mut times = Vec::new();
    let mut before = None;
    for i in 0..=args.steps {
        if i == 1 {
            before = activity.map(|read| read());
        }
        let t = Instant::now();
        // The trainer's step: its only read-back (the loss summary) waits for the backward.
        let summary = model.train_step(&mut tape, &x, &[n, c, h, w], &labels, i as u64, &step)?;
        backend.synchronize()?;
        if !summary.mean_loss.is_finite() {
            return Err(format!("training step {i}: non-finite loss {}", summary.mean_loss).into());
        }
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let ips = n as f64 / mean;
    // Forward + backward (input and weight gradients) is three forward passes of work.
    println!(
        "training, batch {n}: {ips:.1} images/s ({:.3} s/step over {} steps), {:.1} GFLOP/s (3x forward FLOPs)",
        mean,
        times.len(),
        3.0 * flops * ips / 1e9
    );
    if let (Some(read), Some(before)) = (activity, before) {
        print_activity(&read().since(&before), times.len());
    }

    let m = args.infer_batch;
    let x = synthetic(m * c * h * w, 3);
    let mut tape = Tape::inference(backend.clone());
    let mut times = Vec::new();
    for i in 0..=args.infer_steps {
        let t = Instant::now();
        tape.reset();
        let input = tape.input(&x, &[m, c, h, w])?;
        let logits = model.forward(&mut tape, input, 0)?;
        let _ = tape.to_host(logits)?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    let ips = m as f64 / mean;
    println!(
        "inference, batch {m}: {ips:.1} images/s ({:.3} s/batch over {} batches), {:.1} GFLOP/s",
        mean,
        times.len(),
        flops * ips / 1e9
    );
    Ok(())
}
