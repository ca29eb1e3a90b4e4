//! `train --distributed`: this process is one rank of an MPI job started by `mpirun`
//! (xtask built with `--features mpi`; docs/distributed.md).

use crate::{AnyResult, TrainArgs};

/// An observer for ranks other than 0: rank 0 draws the progress; the others only report
/// what happened to them (their own skipped files), marked with their rank.
pub struct RankNotes(pub usize);

impl alexnet::Observer for RankNotes {
    fn note(&mut self, message: &str) {
        println!("[rank {}] {message}", self.0);
    }
}

#[cfg(not(feature = "mpi"))]
pub fn train(_args: TrainArgs) -> AnyResult {
    Err("this xtask was built without MPI; build it with `cargo build --release -p xtask --features mpi` \
         (needs an MPI library and libclang, see docs/distributed.md) and start it with `mpirun`"
        .into())
}

#[cfg(feature = "mpi")]
pub fn train(args: TrainArgs) -> AnyResult {
    use std::time::Duration;

    use alexnet::parallel::Mpi;
    use alexnet::{BackendKind, Placement};
    use alexnet_core::Backend;

    use crate::{make_backend, resolve_run, session_backend};

    let mpi = Mpi::init()?;
    let (rank, size) = (mpi.rank(), mpi.size());
    let result = (|| -> AnyResult {
        if !(args.collective_timeout > 0.0 && args.collective_timeout.is_finite()) {
            return Err(format!(
                "--collective-timeout {}: must be a positive number of seconds",
                args.collective_timeout
            )
            .into());
        }
        let (mut config, resume_dir) = resolve_run(&args)?;
        // Rank 0's choices where ranks could choose apart (the first free run name while
        // rank 0 creates it; the newest run), so that all ranks name one run.
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).map_err(|e| format!("rank 0's run name: {e}"));
        config.name = text(mpi.broadcast_bytes(config.name.as_bytes()))?;
        let resume_dir = match resume_dir {
            Some(dir) => Some(std::path::PathBuf::from(text(mpi.broadcast_bytes(dir.to_string_lossy().as_bytes()))?)),
            None => None,
        };
        let (mut backend_args, kind) = session_backend(&args, &config);
        if args.devices.as_ref().is_some_and(|d| d.len() > 1) {
            return Err("--distributed runs one device per rank: drop --devices and start one rank per device \
                        (OpenCL device = the rank's index on its machine, or --device)"
                .into());
        }
        // Each rank its own device: OpenCL device = its rank on its machine (unless
        // --device or --devices picks one); CPU ranks on one machine share its cores.
        backend_args.device = args.backend.device.or(args.devices.as_ref().map(|d| d[0])).or(Some(mpi.local_rank()));
        if kind == BackendKind::Cpu && backend_args.threads.is_none_or(|t| t == 0) {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            backend_args.threads = Some((cores / mpi.local_size()).max(1));
        }
        let group = Box::new(mpi.group(Duration::from_secs_f64(args.collective_timeout))?);
        let threads = backend_args.threads.map(|t| format!(", {t} threads")).unwrap_or_default();
        dispatch!(make_backend(&backend_args, kind)?, b => {
            println!("rank {rank} of {size} on {} (pid {}): {}{threads}", mpi.host(), std::process::id(), b.name());
            crate::train_on(Placement::Distributed { backend: b, group }, config, resume_dir, &args)
        })
    })();
    match result {
        Ok(()) => Ok(()),
        // The others would wait for this rank: end them all (errors inside training did so already).
        Err(e) => mpi.abort(&e.to_string()),
    }
}
