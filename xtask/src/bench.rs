//! `cargo xtask bench train`: throughput of a full training step and of inference on
//! synthetic input.

use std::sync::Arc;
use std::time::Instant;

use alexnet::{Architecture, Model, Preset};
use alexnet_autograd::Tape;
use alexnet_core::Backend;
use clap::Args;

use crate::{AnyResult, BackendArgs, make_backend};

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
    let any = make_backend(&args.backend, alexnet::BackendKind::Cpu)?;
    dispatch!(any, b => bench_on(b, &args))
}

fn synthetic(len: usize, seed: u64) -> Vec<f32> {
    (0..len as u64).map(|i| alexnet_core::rng::uniform(seed, i) * 2.0 - 1.0).collect()
}

fn bench_on<B: Backend + 'static>(backend: Arc<B>, args: &BenchArgs) -> AnyResult {
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
    for i in 0..=args.steps {
        let t = Instant::now();
        tape.reset();
        let input = tape.input(&x, &[n, c, h, w])?;
        let logits = model.forward(&mut tape, input, i as u64)?;
        let loss = tape.softmax_cross_entropy(logits, &labels)?;
        tape.backward(loss, &mut model.store)?;
        model.store.sgd_step(&step)?;
        backend.synchronize()?;
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
