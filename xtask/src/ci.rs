//! `cargo xtask ci`: the checks of `.ci/run`, run locally in the same order.

use std::path::Path;
use std::process::Command;

use clap::Args;

use crate::AnyResult;

/// Options of `ci`.
#[derive(Args, Debug)]
pub struct CiArgs {
    /// Require a working OpenCL driver in the tests (`ALEX_REQUIRE_OPENCL=1`), as CI does.
    #[arg(long)]
    require_opencl: bool,
    /// Skip the training smoke run.
    #[arg(long)]
    no_smoke: bool,
    /// Skip the `mpi` feature's checks (clippy, the distributed tests, the two-rank smoke
    /// run), which need Open MPI and libclang installed.
    #[arg(long)]
    no_mpi: bool,
}

/// Open MPI's flags for the smoke run: `--oversubscribe` (more ranks than cores) and, as
/// root, `--allow-run-as-root`.
fn mpirun_flags() -> Vec<&'static str> {
    let root = std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")));
    if root { vec!["--oversubscribe", "--allow-run-as-root"] } else { vec!["--oversubscribe"] }
}

fn step(name: &str, root: &Path, program: &str, args: &[&str], env: &[(&str, &str)]) -> AnyResult {
    println!("== {name}");
    let status = Command::new(program).args(args).envs(env.iter().copied()).current_dir(root).status()?;
    if status.success() { Ok(()) } else { Err(format!("{name} failed ({status})").into()) }
}

pub fn run(args: CiArgs, root: &Path) -> AnyResult {
    if args.require_opencl {
        // .ci/run installs it; the OpenCL tests run every GEMM on CLBlast too and fail without it.
        alexnet_opencl::GemmEngine::ClBlast
            .ensure_available()
            .map_err(|e| format!("{e} (the CI's OpenCL tests need it: `apt-get install libclblast1`)"))?;
    }
    if !args.no_mpi && Command::new("mpirun").arg("--version").output().is_err() {
        return Err("`mpirun` is not installed: the `mpi` feature's checks need Open MPI and libclang \
                    (`apt-get install openmpi-bin libopenmpi-dev libclang-dev`), or pass --no-mpi"
            .into());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step("cargo fmt", root, &cargo, &["fmt", "--all", "--", "--check"], &[])?;
    step("cargo clippy", root, &cargo, &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    if !args.no_mpi {
        let args = [
            "clippy",
            "-p",
            "alexnet",
            "-p",
            "xtask",
            "--all-targets",
            "--features",
            "xtask/mpi",
            "--",
            "-D",
            "warnings",
        ];
        step("cargo clippy, feature mpi", root, &cargo, &args, &[])?;
    }
    let opencl = if args.require_opencl { "1" } else { "0" };
    // Two PoCL CPU devices for the multi-device tests (other drivers ignore the variable);
    // every later step sees them too, as under .ci/run's export.
    let two_devices = ("POCL_DEVICES", "pthread pthread");
    let test_env = [("ALEX_REQUIRE_OPENCL", opencl), two_devices];
    step("cargo test --workspace", root, &cargo, &["test", "--workspace"], &test_env)?;
    // As .ci/run: each publishable crate packs, path dependencies resolved to the others'
    // packages; not rebuilt from them (a second full dependency build).
    let package = [
        "package",
        "--workspace",
        "--exclude",
        "xtask",
        "--exclude",
        "alexnet-integration-tests",
        "--no-verify",
        "--allow-dirty",
    ];
    step("cargo package", root, &cargo, &package, &[])?;
    if !args.no_mpi {
        // --workspace: features resolve as in the test step, so only what the feature changes
        // is built again.
        let test = ["test", "--workspace", "--features", "xtask/mpi", "--test", "distributed"];
        step("distributed tests (mpirun -np 2 and 3)", root, &cargo, &test, &test_env)?;
        if !args.no_smoke {
            let runs = root.join("target").join("ci-runs");
            let _ = std::fs::remove_dir_all(runs.join("smoke-mpi"));
            let runs = runs.to_string_lossy().into_owned();
            // The test build above left the mpi-enabled xtask in target/debug.
            let xtask = root.join("target").join("debug").join("xtask").to_string_lossy().into_owned();
            let mut mpirun = mpirun_flags();
            mpirun.extend(["-np", "2", &xtask, "train", "--distributed", "--quiet", "--epochs", "1"]);
            mpirun.extend([
                "--max-steps",
                "10",
                "--max-eval-images",
                "500",
                "--name",
                "smoke-mpi",
                "--runs-dir",
                &runs,
            ]);
            step("train --distributed (smoke: 2 ranks, 10 steps)", root, "mpirun", &mpirun, &[two_devices])?;
        }
    }
    if !args.no_smoke {
        let runs = root.join("target").join("ci-runs");
        // Only these smokes' own folders: the distributed smoke's run stays for inspection.
        for name in ["smoke", "smoke-split"] {
            let _ = std::fs::remove_dir_all(runs.join(name));
        }
        let runs = runs.to_string_lossy().into_owned();
        let exe = std::env::current_exe()?.to_string_lossy().into_owned();
        let smoke = ["train", "--quiet", "--epochs", "1", "--runs-dir", &runs];
        let one = [&smoke[..], &["--max-steps", "30", "--max-eval-images", "1000", "--name", "smoke"]].concat();
        step("cargo xtask train (smoke: 30 steps)", root, &exe, &one, &[two_devices])?;
        // Without a required OpenCL driver, two CPU backends stand for the two devices.
        let backend = if args.require_opencl { "opencl" } else { "cpu" };
        let split_flags = ["--max-steps", "10", "--max-eval-images", "200", "--lrn-groups", "2", "--backend", backend];
        let split =
            [&smoke[..], &split_flags, &["--devices", "0,1", "--parallel", "model", "--name", "smoke-split"]].concat();
        step("cargo xtask train (smoke: the model split on two devices)", root, &exe, &split, &[two_devices])?;
    }
    println!("== all checks passed");
    Ok(())
}
