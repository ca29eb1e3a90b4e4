//! AlexNet's conv1 (96 x 11x11x3, stride 4) forward on a random batch: prints the shapes and
//! the speed.
//!
//! ```text
//! cargo run --release -p alexnet-conv --example conv_alexnet [batch] [threads]
//! ```

use std::time::Instant;

use alexnet_conv::{ConvWorkspace, conv2d_forward, gemm};
use alexnet_core::{Conv2dGeom, Rounding, Shape4, rng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let batch = args.next().transpose()?.unwrap_or(32);
    let threads = args.next().transpose()?.unwrap_or(2);

    let geom = Conv2dGeom::square(3, 96, 11, 4, 0, 1)?.with_rounding(Rounding::Exact);
    let input = Shape4::new(batch, 3, 227, 227)?;
    let output = geom.output_shape(input)?;
    let random = |seed, len| (0..len).map(|i| 2.0 * rng::uniform(seed, i as u64) - 1.0).collect::<Vec<f32>>();
    let (x, w, b) = (random(1, input.numel()), random(2, geom.weight_len()), random(3, geom.out_channels));
    let mut y = vec![0.0; output.numel()];
    let mut ws = ConvWorkspace::with_threads(threads);

    conv2d_forward(&geom, input, &x, &w, Some(&b), &mut y, &mut ws)?; // warm-up: sizes the workspace
    let runs = 5;
    let start = Instant::now();
    for _ in 0..runs {
        conv2d_forward(&geom, input, &x, &w, Some(&b), &mut y, &mut ws)?;
    }
    let seconds = start.elapsed().as_secs_f64() / f64::from(runs);
    let gflops = geom.forward_flops(input)? as f64 / seconds / 1e9;
    println!("conv1 {input} -> {output} with {threads} threads, GEMM `{}`", gemm::BACKEND);
    println!("{:.2} ms per batch, {gflops:.1} GFLOP/s, y[0] = {:.4}", seconds * 1e3, y[0]);
    Ok(())
}
