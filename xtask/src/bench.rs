//! `cargo xtask bench train`: throughput of a full training step and of inference on
//! synthetic input, on one device or several (`--devices 0,1 --parallel data|model`), each
//! figure also as a fraction of this machine's measured FMA peak or copy bandwidth
//! ([`crate::machine`]); per-layer tables (`--per-layer`) and single-image latency
//! (`--latency`).

use std::sync::Arc;
use std::time::Instant;

use alexnet::parallel::PlacedModel;
use alexnet::profile::{StepProfile, Timed, profile_inference, profile_train_step};
use alexnet::{Architecture, BackendKind, Model, Parallelism, Preset, TensorMap, init::init_params};
use alexnet_autograd::Tape;
use alexnet_core::Backend;
use alexnet_opencl::Activity;
use clap::Args;

use crate::machine::{Machine, mib, peak_resident_bytes, reset_peak_resident};
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
    /// Also print each layer's forward and backward time, GFLOP/s (or GB/s for layers that
    /// only move memory) and share of a training step and of an inference batch (one device;
    /// every op waits for the device, so the profiled step is a little slower).
    #[arg(long)]
    per_layer: bool,
    /// Also time single-image inference (as `predict` runs it) against the time to read all
    /// the weights once at the measured copy bandwidth.
    #[arg(long)]
    latency: bool,
    /// Timed single images for --latency (after one warm-up); the median is reported.
    #[arg(long, default_value_t = 20)]
    latency_runs: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

pub fn run(args: BenchArgs) -> AnyResult {
    let kind = args.backend.backend.unwrap_or(BackendKind::Cpu);
    let devices = args.devices.clone().unwrap_or_else(|| vec![args.backend.device.unwrap_or(0)]);
    if args.per_layer && devices.len() > 1 {
        return Err("--per-layer profiles one device: drop --devices (or give one)".into());
    }
    if args.latency_runs == 0 {
        return Err("--latency-runs must be at least 1".into());
    }
    let threads = args
        .backend
        .threads
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    println!("load average before measuring: {}", load_average());
    let machine = Machine::measure(threads);
    println!("{}", machine.describe());
    if kind != BackendKind::Cpu {
        println!("(fractions below are of this CPU's figures, whatever device computes)");
    }
    // The measurement's buffers are not the model's memory.
    let peak_reset = reset_peak_resident();
    match make_backends(&args.backend, kind, &devices)? {
        AnyBackends::Cpu(list) => bench_on(list, &args, &machine, peak_reset, None),
        AnyBackends::OpenCl(list) => {
            let counted = list.clone();
            bench_on(list, &args, &machine, peak_reset, Some(&move || counted.iter().map(|b| b.activity()).collect()))
        }
    }
}

/// The 1, 5 and 15-minute load averages (`/proc/loadavg`), so that every figure says how
/// busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown (no /proc/loadavg)".into())
}

/// The process's peak resident memory, for printing.
fn peak_memory(reset: bool) -> String {
    match peak_resident_bytes() {
        Some(b) if reset => format!("{:.0} MiB", mib(b)),
        Some(b) => format!("{:.0} MiB (the machine measurement's 256 MiB included)", mib(b)),
        None => "unknown (no /proc/self/status)".into(),
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
    machine: &Machine,
    peak_reset: bool,
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
    let first = backends[0].clone();
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
    let rate = 3.0 * flops * ips;
    println!(
        "training, batch {n}: {ips:.1} images/s ({mean:.3} s/step over {} steps), {:.1} GFLOP/s (3x forward FLOPs) = \
         {:.1}% of peak; peak resident memory {}",
        args.steps,
        rate / 1e9,
        machine.of_peak(rate),
        peak_memory(peak_reset)
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
        "inference, batch {m}: {ips:.1} images/s ({mean:.3} s/batch over {} batches), {:.1} GFLOP/s = {:.1}% of peak; \
         peak resident memory so far {}",
        args.infer_steps,
        flops * ips / 1e9,
        machine.of_peak(flops * ips),
        peak_memory(peak_reset)
    );
    if args.latency {
        latency(&mut model, &arch, args.latency_runs, machine)?;
    }
    if args.per_layer {
        drop(model);
        per_layer(first, &arch, &params, args, machine)?;
    }
    println!("load average after: {}", load_average());
    Ok(())
}

/// Times single-image inference and compares it with reading every weight once at the
/// measured copy bandwidth (the floor for the dense layers, which are matrix-vector
/// products at batch 1).
fn latency(model: &mut PlacedModel, arch: &Architecture, runs: usize, machine: &Machine) -> AnyResult {
    let [c, h, w] = arch.input;
    let x = synthetic(c * h * w, 4);
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let started = Instant::now();
        model.logits(&x, &[1, c, h, w])?;
        if i > 0 {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let weight_bytes = 4.0 * arch.trainable_params() as f64;
    // The copy bandwidth counts every byte a copy moves (read or written); reading the
    // weights moves each byte once.
    let read = weight_bytes / machine.copy_all;
    println!(
        "latency, batch 1: {:.2} ms median of {runs} (best {:.2} ms); reading the {:.0} MB of weights once at the copy \
         bandwidth takes {:.2} ms: {:.2}x that",
        1e3 * median,
        1e3 * times[0],
        weight_bytes / 1e6,
        1e3 * read,
        median / read
    );
    Ok(())
}

/// Per-layer tables of a training step and an inference batch on one device (the mean of
/// `--steps` profiled steps after one warm-up).
fn per_layer<B: Backend + 'static>(
    backend: Arc<B>,
    arch: &Architecture,
    params: &TensorMap,
    args: &BenchArgs,
    machine: &Machine,
) -> AnyResult {
    let [c, h, w] = arch.input;
    let mut model = Model::from_params(arch.clone(), backend.clone(), params)?;
    let step = alexnet_core::SgdStep { lr: 1e-4, momentum: 0.9, weight_decay: 5e-4 };
    let n = args.batch;
    let x = synthetic(n * c * h * w, 2);
    let labels: Vec<usize> = (0..n).map(|i| i % arch.classes).collect();
    let mut tape = Tape::train(backend.clone());
    let mut profiles = Vec::new();
    for i in 0..=args.steps.max(1) {
        let p = profile_train_step(&mut model, &mut tape, &x, [n, c, h, w], &labels, i as u64, &step)?;
        if i > 0 {
            profiles.push(p);
        }
    }
    drop(tape);
    print!("{}", profile_table(&format!("training step, batch {n}"), &StepProfile::mean(&profiles), machine));

    let m = args.infer_batch;
    let x = synthetic(m * c * h * w, 3);
    let mut tape = Tape::inference(backend);
    let mut profiles = Vec::new();
    for i in 0..=args.infer_steps.max(1) {
        let p = profile_inference(&mut model, &mut tape, &x, [m, c, h, w])?;
        if i > 0 {
            profiles.push(p);
        }
    }
    print!("{}", profile_table(&format!("inference, batch {m}"), &StepProfile::mean(&profiles), machine));
    Ok(())
}

/// A profile as a table: per row forward and backward milliseconds, each half's rate
/// (GFLOP/s for products, GB/s for memory-bound work) as a percentage of the machine's
/// peak or bandwidth, and the row's share of the step.
fn profile_table(title: &str, profile: &StepProfile, machine: &Machine) -> String {
    let half = |t: Option<Timed>| match t {
        None => format!("{:>9} {:>17}", "-", ""),
        Some(t) if t.computes() => format!(
            "{:>9.2} {:>7.1} GF/s {:>3.0}%",
            1e3 * t.seconds,
            t.flops_per_second() / 1e9,
            machine.of_peak(t.flops_per_second())
        ),
        Some(t) if t.bytes > 0 => format!(
            "{:>9.2} {:>7.1} GB/s {:>3.0}%",
            1e3 * t.seconds,
            t.bytes_per_second() / 1e9,
            machine.of_bandwidth(t.bytes_per_second())
        ),
        Some(t) => format!("{:>9.2} {:>17}", 1e3 * t.seconds, ""),
    };
    let width = profile.rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(24);
    let mut out = format!(
        "\nper layer, {title} ({:.1} ms profiled, each op waited for; rates as % of FMA peak or copy bandwidth):\n",
        1e3 * profile.total_seconds
    );
    out += &format!("{:<width$} {:>9} {:>17} {:>9} {:>17} {:>6}\n", "layer", "fwd ms", "", "bwd ms", "", "share");
    for row in &profile.rows {
        out += &format!(
            "{:<width$} {} {} {:>5.1}%\n",
            row.name,
            half(row.forward),
            half(row.backward),
            profile.share(row.seconds())
        );
    }
    let other = profile.unattributed_seconds();
    out += &format!(
        "{:<width$} {:>9.2} {:>17} {:>9} {:>17} {:>5.1}%\n",
        "(between ops)",
        1e3 * other,
        "",
        "",
        "",
        profile.share(other)
    );
    out
}

#[cfg(test)]
mod tests {
    use alexnet::profile::ProfileRow;

    use super::*;

    #[test]
    fn table_prints_rates_against_the_machine_and_every_row() {
        let machine = Machine { isa: "test", threads: 2, peak_one: 50e9, peak_all: 100e9, copy_all: 10e9 };
        let timed = |seconds, flops, bytes| Some(Timed { seconds, flops, bytes });
        let profile = StepProfile {
            batch: 4,
            rows: vec![
                ProfileRow {
                    name: "conv1 (Conv 3x3/1, g1)".into(),
                    forward: timed(0.01, 500_000_000, 1),
                    backward: None,
                },
                ProfileRow { name: "Relu".into(), forward: timed(0.002, 0, 10_000_000), backward: timed(0.004, 0, 0) },
            ],
            total_seconds: 0.02,
        };
        let table = profile_table("test", &profile, &machine);
        let lines: Vec<&str> = table.lines().collect();
        // 50 GFLOP/s is 50% of the peak; 5 GB/s is 50% of the copy bandwidth.
        assert!(lines[3].starts_with("conv1 (Conv 3x3/1, g1)") && lines[3].contains("50.0 GF/s  50%"), "{table}");
        assert!(lines[3].trim_end().ends_with("50.0%"), "share of the step: {table}");
        assert!(lines[4].starts_with("Relu") && lines[4].contains("5.0 GB/s  50%"), "{table}");
        assert!(lines[4].trim_end().ends_with("30.0%"), "{table}");
        assert!(lines[5].starts_with("(between ops)") && lines[5].trim_end().ends_with("20.0%"), "{table}");
    }
}
