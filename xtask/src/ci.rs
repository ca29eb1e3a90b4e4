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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    step("cargo fmt", root, &cargo, &["fmt", "--all", "--", "--check"], &[])?;
    step("cargo clippy", root, &cargo, &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[])?;
    let opencl = if args.require_opencl { "1" } else { "0" };
    step("cargo test --workspace", root, &cargo, &["test", "--workspace"], &[("ALEX_REQUIRE_OPENCL", opencl)])?;
    if !args.no_smoke {
        let runs = root.join("target").join("ci-runs");
        let _ = std::fs::remove_dir_all(&runs);
        let runs = runs.to_string_lossy().into_owned();
        let exe = std::env::current_exe()?;
        step(
            "cargo xtask train (smoke: 30 steps)",
            root,
            &exe.to_string_lossy(),
            &[
                "train",
                "--quiet",
                "--epochs",
                "1",
                "--max-steps",
                "30",
                "--max-eval-images",
                "1000",
                "--name",
                "smoke",
                "--runs-dir",
                &runs,
            ],
            &[],
        )?;
    }
    println!("== all checks passed");
    Ok(())
}
