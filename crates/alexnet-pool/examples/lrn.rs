//! Local response normalisation on AlexNet's first layer (96 x 55 x 55), forward and backward,
//! under the paper's and Caffe/PyTorch's alpha conventions, with the time each pass takes.
//!
//! `cargo run --release -p alexnet-pool --example lrn -- [batch] [threads]` (defaults: 32, all cores).

use std::time::Instant;

use alexnet_core::{AlphaConvention, LrnParams, Shape4};
use alexnet_pool::{lrn_backward, lrn_forward};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let batch = args.next().transpose()?.unwrap_or(32);
    let threads = args.next().transpose()?.unwrap_or(0); // 0: rayon's default, every core
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;

    let input = Shape4::new(batch, 96, 55, 55)?;
    let len = input.numel();
    // ReLU-like activations: non-negative, a few large enough for the sum term to matter.
    let x: Vec<f32> = (0..len as u64).map(|i| 40.0 * alexnet_core::rng::uniform(1, i).powi(3)).collect();
    let dy: Vec<f32> = (0..len as u64).map(|i| alexnet_core::rng::uniform(2, i) - 0.5).collect();
    let (mut y, mut scale, mut dx) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);

    println!("LRN on {input} ({:.0} MB per tensor), {} threads", len as f64 * 4e-6, pool.current_num_threads());
    for (name, params) in [
        ("paper (alpha * sum)", LrnParams::paper()),
        ("Caffe/PyTorch (alpha / n * sum)", LrnParams::new(5, 1e-4, 0.75, 2.0, AlphaConvention::PyTorchCaffe)?),
    ] {
        // Twice, timing the second: the first call also pays for the output pages' first
        // touch and for starting the threads.
        let (mut forward, mut backward) = (0.0, 0.0);
        for _ in 0..2 {
            let start = Instant::now();
            pool.install(|| lrn_forward(&params, input, &x, &mut y, &mut scale))?;
            forward = start.elapsed().as_secs_f64();
            let start = Instant::now();
            pool.install(|| lrn_backward(&params, input, &x, &y, &scale, &dy, &mut dx))?;
            backward = start.elapsed().as_secs_f64();
        }

        let largest = (0..len).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap_or(0);
        println!("{name}:");
        println!("  largest input {:.2} -> scale {:.4}, output {:.4}", x[largest], scale[largest], y[largest]);
        println!(
            "  forward  {:7.2} ms  {:6.1} GB/s  {:8.0} images/s",
            forward * 1e3,
            3.0 * 4.0 * len as f64 / forward / 1e9,
            batch as f64 / forward
        );
        println!(
            "  backward {:7.2} ms  {:6.1} GB/s  {:8.0} images/s",
            backward * 1e3,
            5.0 * 4.0 * len as f64 / backward / 1e9,
            batch as f64 / backward
        );
    }
    Ok(())
}
