//! The alexnet-rs runner: `cargo xtask train | eval | predict | summary | devices | bench |
//! ablate | ci`. The work lives in the `alexnet` library; this binary parses arguments, picks the
//! backend, draws progress bars and turns errors into one line and a non-zero exit code.

/// Expands to `$body` with `$b` bound to the concrete backend of `$any`.
macro_rules! dispatch {
    ($any:expr, $b:ident => $body:expr) => {
        match $any {
            $crate::AnyBackend::Cpu($b) => $body,
            $crate::AnyBackend::OpenCl($b) => $body,
        }
    };
}

mod ablate;
mod bench;
mod ci;
mod distributed;
mod machine;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use alexnet::{Architecture, BackendKind, InitScheme, Parallelism, Placement, Preset, RunConfig, Schedule, Trainer};
use alexnet_autograd::CpuBackend;
use alexnet_core::Backend;
use clap::{Args, Parser, Subcommand};

/// AlexNet (Krizhevsky et al. 2012) in Rust: train, evaluate, predict, inspect, benchmark.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model. Without arguments: the `mini` preset on the embedded Fashion-MNIST.
    ///
    /// To stop a run cleanly from outside, create a file named STOP in its folder
    /// (`touch runs/<name>/STOP`): it stops before the next step with a checkpoint there, and
    /// `--resume runs/<name>` continues exactly where it stopped. `--time-budget` does the same
    /// after a given time; the `paper` schedule stops by itself when the validation error
    /// stalls after its last reduction (early stopping).
    Train(Box<TrainArgs>),
    /// Evaluate a checkpoint on its run's test (or validation) data.
    Eval(EvalArgs),
    /// Print the top-5 classes of images with their probabilities.
    Predict(PredictArgs),
    /// Print a Keras-style table of a preset's layers, shapes and parameters.
    Summary(SummaryArgs),
    /// Write a checkpoint (or a PyTorch state_dict) as an ONNX model.
    Export(ExportArgs),
    /// List the OpenCL devices.
    Devices,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Measure the paper's claims (ReLU, LRN, overlapping pooling, PCA noise, dropout, crops
    /// and flips, ten-crop testing) as matched runs of a small network.
    ///
    /// Each claim trains the paper's network and the same network without that one part,
    /// with the same seeds (initial weights, data order, augmentation, dropout masks) and
    /// schedule. Writes `runs/ablate-N/`: report.md (the verdict rule, then a table: claim,
    /// the paper's figure, ours as mean ± sd over seeds, verdict), one PNG per claim (both
    /// arms' training and held-out error against epochs and seconds), runs.jsonl and
    /// epochs.csv (every epoch of every run, written as each run finishes), and each run's
    /// folder. `--budget quick` on the embedded Fashion-MNIST takes about 15 minutes on two
    /// cores.
    Ablate(Box<ablate::AblateArgs>),
    /// Run the CI checks locally: fmt, clippy, tests, and a short training smoke run.
    Ci(ci::CiArgs),
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Training (forward + backward + SGD step) and inference throughput on synthetic input.
    Train(bench::BenchArgs),
}

/// Backend selection shared by the commands that compute.
#[derive(Args, Debug, Clone)]
struct BackendArgs {
    /// Compute backend: cpu or opencl [default: cpu; a run's own when resuming or evaluating].
    #[arg(long)]
    backend: Option<BackendKind>,
    /// OpenCL device index (see `cargo xtask devices`) [default: 0].
    #[arg(long)]
    device: Option<usize>,
    /// Compute threads for the CPU backend [default: 0, all cores].
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Training data: an ImageNet-style folder (one sub-folder per class), an IDX folder or a
    /// CIFAR-10 binary folder [default: the embedded Fashion-MNIST].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Model preset: paper, caffenet, keras-bn, mini or torchvision [default: mini, or the
    /// config file's]. Where a default below differs by preset, each preset's value is listed.
    #[arg(long)]
    preset: Option<Preset>,
    /// Validation data (same layout as --data) [default: none; --val-fraction holds some out].
    #[arg(long)]
    val: Option<PathBuf>,
    #[arg(long, help = preset_default("Hold out this fraction of the training data for validation when --val is absent", |c| c.data.val_fraction.to_string()))]
    val_fraction: Option<f64>,
    /// Test data, evaluated at the end [default: none; IDX and CIFAR folders bring their own].
    #[arg(long)]
    test: Option<PathBuf>,
    #[arg(long, help = preset_default("Epochs to train", |c| c.optim.epochs.to_string()))]
    epochs: Option<usize>,
    #[arg(long, help = preset_default("Images per SGD step", |c| c.optim.batch_size.to_string()))]
    batch_size: Option<usize>,
    #[arg(long, help = preset_default("Base learning rate", |c| c.optim.lr.to_string()))]
    lr: Option<f32>,
    #[arg(long, help = preset_default("SGD momentum (the paper's v <- m v - wd lr w - lr grad)", |c| c.optim.momentum.to_string()))]
    momentum: Option<f32>,
    #[arg(long, help = preset_default("Weight decay", |c| c.optim.weight_decay.to_string()))]
    weight_decay: Option<f32>,
    #[arg(
        long,
        value_name = "SCHEDULE",
        help = preset_default(
            "Learning-rate schedule: constant, paper (divide by 10 on a validation plateau, 3 times), or a TOML \
             table such as '{ kind = \"step\", every = 30, factor = 0.1 }', '{ kind = \"cosine\", final_factor = 0.02 }', \
             '{ kind = \"plateau\", patience = 2, factor = 0.1, max_reductions = 3, min_delta = 0.0 }'",
            |c| c.optim.schedule.to_string(),
        )
    )]
    schedule: Option<Schedule>,
    #[arg(long, help = preset_default("Weight initialisation: paper (N(0, 0.01^2), biases 1 in conv2/4/5 and the hidden dense layers) or he", |c| format!("{:?}", c.init).to_lowercase()))]
    init: Option<InitScheme>,
    #[arg(long, value_name = "BOOL", help = preset_default("Random crops and flips (and PCA lighting on colour images) while training", |c| c.data.augment.to_string()))]
    augment: Option<bool>,
    #[arg(long, value_name = "BOOL", help = preset_default("The paper's PCA colour augmentation (colour images only)", |c| c.data.pca_lighting.to_string()))]
    pca_lighting: Option<bool>,
    #[arg(long, help = preset_default("Seed of initialisation, data order, augmentation and dropout", |c| c.seed.to_string()))]
    seed: Option<u64>,
    /// A TOML configuration file (command-line options override it) [default: none; see
    /// configs/ for examples].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run name: the folder under the runs folder [default: the config file's `name`, else
    /// <preset>-<n>, the first free].
    #[arg(long)]
    name: Option<String>,
    #[arg(long, help = preset_default("Parent folder of run folders", |c| c.output.runs_dir.display().to_string()))]
    runs_dir: Option<PathBuf>,
    /// Continue a run from its newest checkpoint: a run folder, or without a value (or
    /// `latest`) the newest run under the runs folder. The run keeps its own configuration
    /// (data, preset, batch size, learning rate, seed), so those options are refused here;
    /// `--epochs` may extend it [default: none, a new run].
    #[arg(
        long,
        num_args = 0..=1,
        default_missing_value = "latest",
        value_name = "RUN_DIR",
        conflicts_with_all = ["data", "preset", "val", "val_fraction", "test", "batch_size", "lr", "momentum", "weight_decay", "schedule", "init", "augment", "pca_lighting", "seed", "config", "name", "max_steps", "checkpoint_minutes", "log_every_steps", "max_train_images", "max_eval_images", "workers", "max_image_pixels", "lrn_groups", "weights"]
    )]
    resume: Option<PathBuf>,
    /// Train on several devices: OpenCL indices such as `0,1` (see `cargo xtask devices`);
    /// with the CPU backend, one replica per entry. May change when resuming [default:
    /// --device alone].
    #[arg(long, value_delimiter = ',', value_name = "I,J,...")]
    devices: Option<Vec<usize>>,
    /// How several devices divide the work: `data` (a replica on each, gradients summed)
    /// or `model` (the paper's split of every layer across two devices; LRN in two
    /// channel groups, the `paper` preset's default, `--lrn-groups 2` for the others)
    /// [default: data].
    #[arg(long)]
    parallel: Option<Parallelism>,
    /// Channel groups the LRN layers normalise apart [default: the preset's, 2 for
    /// `paper` as on the paper's two GPUs, 1 for the others].
    #[arg(long)]
    lrn_groups: Option<usize>,
    /// Start from these weights instead of a random initialisation: a safetensors file
    /// with the preset's parameter names (an alexnet-rs checkpoint, or a PyTorch
    /// `state_dict`, e.g. torchvision's AlexNet with `--preset torchvision`) [default: none,
    /// a random initialisation].
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// With --weights: draw a new last layer for the data's class count instead of
    /// loading the file's (fine-tuning to other classes).
    #[arg(long, requires = "weights")]
    new_head: bool,
    /// With --weights: train only the last layer; the others keep the file's values.
    #[arg(long, requires = "weights")]
    freeze: bool,
    /// Stop after this many steps (smoke runs), with a checkpoint there that `--resume`
    /// continues from [default: no limit].
    #[arg(long)]
    max_steps: Option<u64>,
    /// Also checkpoint inside epochs every this many minutes (0: at epoch ends only), so that
    /// a crash loses at most this much training [default: 30].
    #[arg(long, value_name = "MINUTES")]
    checkpoint_minutes: Option<f64>,
    /// Stop this session after this many minutes, with a checkpoint that `--resume`
    /// continues from (also when resuming) [default: no limit].
    #[arg(long, value_name = "MINUTES", value_parser = positive_minutes)]
    time_budget: Option<f64>,
    #[arg(long, value_name = "STEPS", help = preset_default("Append mean loss, learning rate and images/s to the run's steps.jsonl every this many steps (0: never)", |c| c.output.log_every_steps.to_string()))]
    log_every_steps: Option<u64>,
    /// Use at most this many training images [default: all].
    #[arg(long)]
    max_train_images: Option<usize>,
    /// Use at most this many validation/test images [default: all].
    #[arg(long)]
    max_eval_images: Option<usize>,
    #[arg(long, help = preset_default("Data loader worker threads", |c| c.data.workers.to_string()))]
    workers: Option<usize>,
    /// Skip (and report) images larger than this many pixels, read from their headers
    /// before decoding [default: 64000000].
    #[arg(long, value_name = "PIXELS")]
    max_image_pixels: Option<u64>,
    /// No progress bars (one line per epoch).
    #[arg(long)]
    quiet: bool,
    /// Train as one rank of an MPI job: `mpirun -np N target/release/xtask train
    /// --distributed ...`, with xtask built with `--features mpi`. Every rank takes its
    /// share of each batch on its own device (OpenCL: its index among the ranks on its
    /// machine, unless --device; CPU: the machine's cores shared among its ranks); rank 0
    /// writes the run files. See docs/distributed.md.
    #[arg(long)]
    distributed: bool,
    /// With --distributed: a rank that waits this long in one exchange for the others ends
    /// the job (a rank is stuck or gone). Must exceed how long rank 0 may lag behind the
    /// others (it alone writes checkpoints).
    #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
    collective_timeout: f64,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A checkpoint's .safetensors (or .state.json), best.safetensors, or a run folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Evaluate every image of this folder (for an IDX or CIFAR-10 folder: its test files)
    /// instead of the checkpoint's run's test split [default: the run's test split].
    #[arg(long)]
    data: Option<PathBuf>,
    /// The paper's ten-crop evaluation: average the softmax of four corners, centre and
    /// their reflections.
    #[arg(long)]
    ten_crop: bool,
    /// Evaluate the validation split instead of the test split.
    #[arg(long, conflicts_with = "data")]
    val: bool,
    /// Skip (and report) images larger than this many pixels [default: the run's setting].
    #[arg(long, value_name = "PIXELS")]
    max_image_pixels: Option<u64>,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Args, Debug)]
struct PredictArgs {
    /// A checkpoint's .safetensors, best.safetensors, or a run folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Refuse images larger than this many pixels, read from their headers before decoding.
    #[arg(long, value_name = "PIXELS", default_value_t = alexnet::config::DEFAULT_MAX_IMAGE_PIXELS)]
    max_image_pixels: u64,
    #[command(flatten)]
    backend: BackendArgs,
}

#[derive(Args, Debug)]
struct SummaryArgs {
    /// Model preset: paper, caffenet, keras-bn, mini or torchvision.
    #[arg(long, default_value = "paper")]
    preset: Preset,
    /// Number of classes [default: the preset's].
    #[arg(long)]
    classes: Option<usize>,
    /// Input as CxHxW, e.g. 3x227x227 [default: the preset's].
    #[arg(long, value_parser = parse_input)]
    input: Option<[usize; 3]>,
    /// Channel groups the LRN layers normalise apart [default: the preset's].
    #[arg(long)]
    lrn_groups: Option<usize>,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// A run folder (its best weights), a checkpoint's .safetensors or .state.json, or a
    /// PyTorch state_dict in safetensors (then --preset is needed).
    #[arg(long, value_name = "RUN_OR_FILE")]
    checkpoint: PathBuf,
    /// The ONNX file to write.
    #[arg(long, value_name = "FILE")]
    onnx: PathBuf,
    /// The preset of a file without an alexnet-rs model description (a PyTorch
    /// state_dict, e.g. torchvision's AlexNet: torchvision).
    #[arg(long)]
    preset: Option<Preset>,
}

/// `text` and its default under each preset, presets with the same value together:
/// `Base learning rate [default: 0.01 (paper, caffenet, keras-bn); 0.05 (mini)]`.
fn preset_default(text: &str, value: impl Fn(&RunConfig) -> String) -> String {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for preset in Preset::ALL {
        let v = value(&RunConfig::for_preset(preset));
        match groups.iter_mut().find(|(g, _)| *g == v) {
            Some((_, names)) => names.push(preset.name()),
            None => groups.push((v, vec![preset.name()])),
        }
    }
    let defaults = match groups.as_slice() {
        [(only, _)] => only.clone(),
        _ => groups.iter().map(|(v, names)| format!("{v} ({})", names.join(", "))).collect::<Vec<_>>().join("; "),
    };
    format!("{text} [default: {defaults}]")
}

/// A positive, finite number of minutes.
fn positive_minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m.is_finite() && m > 0.0 && m < 1e9 => Ok(m),
        Ok(m) => Err(format!("{m} minutes: expected a positive number of minutes")),
        Err(e) => Err(format!("{s}: {e}")),
    }
}

fn parse_input(s: &str) -> Result<[usize; 3], String> {
    let parts: Vec<usize> = s.split('x').map(str::parse).collect::<Result<_, _>>().map_err(|e| format!("{s}: {e}"))?;
    parts.try_into().map_err(|_| format!("{s}: expected CxHxW, e.g. 3x227x227"))
}

/// The workspace root (xtask's parent folder).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// The embedded Fashion-MNIST.
fn embedded_data() -> PathBuf {
    workspace_root().join("datasets").join("fashion-mnist")
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type AnyResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn run(cli: Cli) -> AnyResult {
    match cli.command {
        Command::Train(args) => train(*args),
        Command::Eval(args) => with_backend(&args.backend.clone(), |b| eval(args, b)),
        Command::Predict(args) => with_backend(&args.backend.clone(), |b| predict(args, b)),
        Command::Summary(args) => {
            let input = args.input.unwrap_or(args.preset.default_input());
            let classes = args.classes.unwrap_or(args.preset.default_classes());
            let arch = Architecture::new(args.preset, input, classes)?;
            let groups = args.lrn_groups.unwrap_or(args.preset.default_lrn_groups());
            print!("{}", arch.with_lrn_groups(groups)?.summary());
            Ok(())
        }
        Command::Export(args) => {
            let r = alexnet::export::export_checkpoint(&args.checkpoint, args.preset, &args.onnx)?;
            let [c, h, w] = r.info.input;
            println!(
                "{} -> {} ({} preset, {} nodes, {:.1} MB): input `{}` [batch, {c}, {h}, {w}] float normalised with \
                 mean {:?} and std {:?}, output `{}` [batch, {}] logits",
                r.weights.display(),
                r.onnx.display(),
                r.info.preset,
                r.nodes,
                r.bytes as f64 / 1e6,
                alexnet::export::INPUT_NAME,
                r.info.mean,
                r.info.std,
                alexnet::export::OUTPUT_NAME,
                r.info.class_names.len()
            );
            Ok(())
        }
        Command::Devices => devices(),
        Command::Bench { what: BenchCommand::Train(args) } => bench::run(args),
        Command::Ablate(args) => ablate::run(*args),
        Command::Ci(args) => ci::run(args, &workspace_root()),
    }
}

/// A backend chosen at run time.
enum AnyBackend {
    Cpu(Arc<CpuBackend>),
    OpenCl(Arc<alexnet_opencl::OpenClBackend>),
}

/// Backends of one kind, one per device of a run.
enum AnyBackends {
    Cpu(Vec<Arc<CpuBackend>>),
    OpenCl(Vec<Arc<alexnet_opencl::OpenClBackend>>),
}

/// One backend of `kind` per device in `devices` (CPU replicas share the threads).
fn make_backends(args: &BackendArgs, kind: BackendKind, devices: &[usize]) -> AnyResult<AnyBackends> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let (mut cpu, mut opencl) = (Vec::new(), Vec::new());
    for &device in devices {
        let mut one = BackendArgs { backend: Some(kind), device: Some(device), ..args.clone() };
        if devices.len() > 1 {
            one.threads = Some((args.threads.filter(|&t| t > 0).unwrap_or(cores) / devices.len()).max(1));
        }
        match make_backend(&one, kind)? {
            AnyBackend::Cpu(b) => cpu.push(b),
            AnyBackend::OpenCl(b) => opencl.push(b),
        }
    }
    Ok(if kind == BackendKind::Cpu { AnyBackends::Cpu(cpu) } else { AnyBackends::OpenCl(opencl) })
}

fn make_backend(args: &BackendArgs, default: BackendKind) -> AnyResult<AnyBackend> {
    alexnet::config::check_thread_count("threads", args.threads.unwrap_or(0))?;
    match args.backend.unwrap_or(default) {
        BackendKind::Cpu => {
            let cpu = match args.threads {
                Some(t) if t > 0 => CpuBackend::with_threads(t)?,
                _ => CpuBackend::new(),
            };
            Ok(AnyBackend::Cpu(Arc::new(cpu)))
        }
        BackendKind::Opencl => {
            let selector = match args.device {
                Some(i) => alexnet_opencl::DeviceSelector::Index(i),
                None => alexnet_opencl::DeviceSelector::Default,
            };
            let backend = alexnet_opencl::OpenClBackend::new(&selector)
                .map_err(|e| format!("{e}; install an OpenCL driver (e.g. pocl-opencl-icd) or use --backend cpu"))?;
            Ok(AnyBackend::OpenCl(Arc::new(backend)))
        }
    }
}

fn with_backend(args: &BackendArgs, f: impl FnOnce(AnyBackend) -> AnyResult) -> AnyResult {
    f(make_backend(args, BackendKind::Cpu)?)
}

fn resolve_config(args: &TrainArgs) -> AnyResult<RunConfig> {
    let (mut config, named_in_file) = match &args.config {
        Some(path) => (RunConfig::load(path, args.preset)?, RunConfig::file_names_run(path)?),
        None => (RunConfig::for_preset(args.preset.unwrap_or(Preset::Mini)), false),
    };
    let d = &mut config.data;
    // Relative paths of a config file mean the folder the run was started from.
    for path in [&mut d.train, &mut d.val, &mut d.test].into_iter().flatten() {
        *path = absolute(path);
    }
    if let Some(p) = &args.data {
        d.train = Some(absolute(p));
    }
    if d.train.is_none() {
        d.train = Some(embedded_data());
    }
    if let Some(p) = &args.val {
        d.val = Some(absolute(p));
    }
    if let Some(f) = args.val_fraction {
        d.val_fraction = f;
    }
    if let Some(p) = &args.test {
        d.test = Some(absolute(p));
    }
    d.max_train_images = args.max_train_images.or(d.max_train_images);
    d.max_eval_images = args.max_eval_images.or(d.max_eval_images);
    if let Some(w) = args.workers {
        d.workers = w;
    }
    d.augment = args.augment.unwrap_or(d.augment);
    d.pca_lighting = args.pca_lighting.unwrap_or(d.pca_lighting);
    d.max_image_pixels = args.max_image_pixels.unwrap_or(d.max_image_pixels);
    let o = &mut config.optim;
    o.epochs = args.epochs.unwrap_or(o.epochs);
    o.batch_size = args.batch_size.unwrap_or(o.batch_size);
    o.lr = args.lr.unwrap_or(o.lr);
    o.momentum = args.momentum.unwrap_or(o.momentum);
    o.weight_decay = args.weight_decay.unwrap_or(o.weight_decay);
    o.schedule = args.schedule.unwrap_or(o.schedule);
    config.init = args.init.unwrap_or(config.init);
    o.max_steps = args.max_steps.or(o.max_steps);
    config.seed = args.seed.unwrap_or(config.seed);
    config.lrn_groups = args.lrn_groups.or(config.lrn_groups);
    config.backend = args.backend.backend.unwrap_or(config.backend);
    config.device = args.backend.device.unwrap_or(config.device);
    config.devices = args.devices.clone().unwrap_or(config.devices);
    config.parallel = args.parallel.unwrap_or(config.parallel);
    config.threads = args.backend.threads.unwrap_or(config.threads);
    if let Some(dir) = &args.runs_dir {
        config.output.runs_dir = dir.clone();
    }
    if let Some(file) = &args.weights {
        config.weights =
            Some(alexnet::StartWeights { file: absolute(file), new_head: args.new_head, freeze: args.freeze });
    }
    if let Some(minutes) = args.checkpoint_minutes {
        config.output.checkpoint_minutes = minutes;
    }
    config.output.log_every_steps = args.log_every_steps.unwrap_or(config.output.log_every_steps);
    // A name given (--name, or the config file's `name`) is used as it is: a folder that
    // already holds a run is refused by the trainer, never replaced by another name.
    match &args.name {
        Some(name) => config.name = name.clone(),
        None if !named_in_file => {
            let base = config.preset.name();
            let free = (1..).map(|n| format!("{base}-{n}")).find(|n| !config.output.runs_dir.join(n).exists());
            config.name = free.expect("some name is free");
        }
        None => {}
    }
    config.validate()?;
    Ok(config)
}

/// The newest run folder (by modification time) under `runs_dir` that has a complete
/// checkpoint (runs stopped before their first one are passed over).
fn newest_run(runs_dir: &Path) -> AnyResult<PathBuf> {
    let entries = std::fs::read_dir(runs_dir).map_err(|e| format!("{}: {e}; nothing to resume", runs_dir.display()))?;
    let newest = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            alexnet::checkpoint::has_checkpoint(&p.join("checkpoints"))
                && p.join(alexnet::trainer::CONFIG_FILE).exists()
        })
        .max_by_key(|p| p.join("checkpoints").metadata().and_then(|m| m.modified()).ok());
    newest.ok_or_else(|| format!("no run with checkpoints under {}; pass --resume RUN_DIR", runs_dir.display()).into())
}

/// The run to train: a fresh configuration, or a run folder to resume with its own.
fn resolve_run(args: &TrainArgs) -> AnyResult<(RunConfig, Option<PathBuf>)> {
    let (mut config, resume_dir) = match &args.resume {
        Some(dir) => {
            let dir = if dir.as_os_str() == "latest" && !dir.exists() {
                newest_run(args.runs_dir.as_deref().unwrap_or(Path::new("runs")))?
            } else {
                dir.clone()
            };
            (RunConfig::load_run(&dir)?, Some(dir))
        }
        None => (resolve_config(args)?, None),
    };
    // Where a session runs may differ from where the run started.
    config.devices = args.devices.clone().unwrap_or(config.devices);
    config.parallel = args.parallel.unwrap_or(config.parallel);
    Ok((config, resume_dir))
}

/// This session's backend options (the command line over the run's configuration) and kind.
fn session_backend(args: &TrainArgs, config: &RunConfig) -> (BackendArgs, BackendKind) {
    let backend_args = BackendArgs {
        backend: args.backend.backend.or(Some(config.backend)),
        device: args.backend.device.or(Some(config.device)),
        threads: args.backend.threads.or(Some(config.threads)),
    };
    let kind = backend_args.backend.unwrap_or(config.backend);
    (backend_args, kind)
}

fn train(args: TrainArgs) -> AnyResult {
    if args.distributed {
        return distributed::train(args);
    }
    let (config, resume_dir) = resolve_run(&args)?;
    let (backend_args, kind) = session_backend(&args, &config);
    let devices =
        if config.devices.is_empty() { vec![backend_args.device.unwrap_or(0)] } else { config.devices.clone() };
    match make_backends(&backend_args, kind, &devices)? {
        AnyBackends::Cpu(list) => train_on(placement(list, config.parallel)?, config, resume_dir, &args),
        AnyBackends::OpenCl(list) => train_on(placement(list, config.parallel)?, config, resume_dir, &args),
    }
}

/// How `backends` (one per listed device) share the run.
fn placement<B: Backend>(mut backends: Vec<Arc<B>>, parallel: Parallelism) -> AnyResult<Placement<B>> {
    match (backends.len(), parallel) {
        (1, _) => Ok(Placement::Single(backends.remove(0))),
        (_, Parallelism::Data) => Ok(Placement::Data(backends)),
        (_, Parallelism::Model) => Ok(Placement::Split(backends)),
    }
}

fn train_on<B: Backend + 'static>(
    placement: Placement<B>,
    config: RunConfig,
    resume_dir: Option<PathBuf>,
    args: &TrainArgs,
) -> AnyResult {
    let backend_name = placement.describe();
    let (rank, _) = placement.process();
    let mut trainer = match &resume_dir {
        Some(dir) => Trainer::resume(dir, placement, args.epochs)?,
        None => Trainer::new(config, placement)?,
    };
    if rank > 0 {
        // Rank 0 reports for the group.
        trainer.fit(&mut distributed::RankNotes(rank))?;
        return Ok(());
    }
    let c = trainer.config();
    let (train_n, val_n, test_n) = trainer.split_sizes();
    println!(
        "{} {} on {} ({} train, {} validation, {} test images), {} parameters, backend {backend_name}",
        if resume_dir.is_some() { "resuming" } else { "training" },
        c.preset,
        c.data.train.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        train_n,
        val_n.unwrap_or(0),
        test_n.unwrap_or(0),
        alexnet::preset::group_thousands(trainer.arch().trainable_params()),
    );
    if let Some(w) = &c.weights {
        let head = if w.new_head { "a new last layer" } else { "its last layer" };
        let trained = if w.freeze { "training only the last layer" } else { "training every layer" };
        println!("weights from {} with {head}, {trained}", w.file.display());
    }
    if resume_dir.is_some() {
        println!("continuing after epoch {} (step {})", trainer.epochs_done(), trainer.step());
    }
    trainer.set_time_budget(args.time_budget.map(|minutes| std::time::Duration::from_secs_f64(minutes * 60.0)));
    println!(
        "to stop cleanly: touch {} (then --resume continues)",
        trainer.config().run_dir().join(alexnet::trainer::STOP_FILE).display()
    );
    let mut bars = progress::Bars::new(args.quiet);
    let result = trainer.fit(&mut bars)?;
    bars.finish();
    if let Some(reason) = &result.stopped_early {
        println!("stopped early: {reason}");
    }
    if let Some(v) = result.val {
        println!(
            "final validation: top-1 error {:.2}%, top-5 error {:.2}%",
            100.0 * v.top1_error,
            100.0 * v.top5_error
        );
    }
    match result.test {
        Some(t) => println!(
            "test accuracy: {:.2}% (top-1 error {:.2}%, top-5 error {:.2}%) on {} images after {} epochs, {:.0} s",
            100.0 * (1.0 - t.top1_error),
            100.0 * t.top1_error,
            100.0 * t.top5_error,
            t.images,
            result.epochs,
            result.seconds
        ),
        None => println!("no test set; {} epochs in {:.0} s", result.epochs, result.seconds),
    }
    if let Some(exchange) = trainer.exchange_stats().filter(|x| x.steps > 0) {
        println!("{exchange}");
    }
    let files = ["config.toml", "metrics.jsonl", "steps.jsonl", "curves.png", "result.json", "checkpoints/"];
    let present: Vec<&str> = files.into_iter().filter(|f| result.run_dir.join(f).exists()).collect();
    println!("run files: {}/ ({})", result.run_dir.display(), present.join(", "));
    Ok(())
}

fn eval(args: EvalArgs, any: AnyBackend) -> AnyResult {
    dispatch!(any, b => {
        let request = alexnet::trainer::EvalRequest {
            data: args.data.clone(),
            validation: args.val,
            ten_crop: args.ten_crop,
            max_image_pixels: args.max_image_pixels,
        };
        let report = alexnet::trainer::evaluate_checkpoint(&args.checkpoint, &request, b, &mut progress::Bars::new(false))?;
        println!("{report}");
        Ok(())
    })
}

fn predict(args: PredictArgs, any: AnyBackend) -> AnyResult {
    dispatch!(any, b => {
        let predictions = alexnet::trainer::predict_files(&args.checkpoint, &args.images, args.max_image_pixels, b)?;
        let mut failed = 0;
        for (path, prediction) in args.images.iter().zip(predictions) {
            match prediction {
                Ok(top5) => {
                    println!("{}", path.display());
                    for (name, p) in top5 {
                        println!("  {:>6.2}%  {name}", 100.0 * p);
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    failed += 1;
                }
            }
        }
        match failed {
            0 => Ok(()),
            n => Err(format!("{n} of {} images could not be predicted", args.images.len()).into()),
        }
    })
}

fn devices() -> AnyResult {
    match alexnet_opencl::list_devices() {
        Ok(list) if list.is_empty() => println!("no OpenCL devices"),
        Ok(list) => {
            for d in list {
                println!("{d}");
            }
        }
        Err(e) => println!("no OpenCL devices: {e}"),
    }
    Ok(())
}
