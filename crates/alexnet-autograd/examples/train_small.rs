//! Trains the small AlexNet-shaped net on a synthetic task for 50 steps with one tape,
//! printing the loss, images/s, the buffer pool's allocations and the peak RSS (VmHWM) so
//! that a flat memory profile after warm-up is visible.
//!
//! `cargo run --release -p alexnet-autograd --example train_small`

use std::sync::Arc;
use std::time::Instant;

use alexnet_autograd::small_net::SmallConvNet;
use alexnet_autograd::{CpuBackend, ParamStore, Tape};
use alexnet_core::SgdStep;

/// Peak resident set size in KiB from /proc/self/status (Linux), if available.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let backend = Arc::new(CpuBackend::new());
    let net = SmallConvNet::new(32)?;
    let mut store = ParamStore::new(backend.clone());
    net.init(&mut store, 1)?;
    let mut tape = Tape::train(backend.clone());
    let step = SgdStep { lr: 0.02, momentum: 0.9, weight_decay: 5e-4 };
    println!("{} trainable parameters on cpu ({} threads)", store.trainable_elements(), backend.thread_count());
    let start = Instant::now();
    for i in 0..50u64 {
        let (images, labels) = net.synthetic_batch(i);
        let value = net.train_step(&mut tape, &mut store, &images, &labels, i, &step)?;
        if i % 5 == 0 || i == 49 {
            let stats = tape.pool_stats();
            println!(
                "step {i:2}  loss {value:.4}  pool allocations {:4}  reuses {:6}  peak RSS {} KiB",
                stats.allocations,
                stats.reuses,
                peak_rss_kib().map_or("?".into(), |k| k.to_string())
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("{:.1} images/s (forward + backward + SGD, batch {})", 50.0 * net.batch as f64 / seconds, net.batch);
    Ok(())
}
