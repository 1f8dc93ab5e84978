//! containerd-shim-wharf-v2: one process per container (per pod for Kubernetes' containers, as
//! containerd's runc shim groups them), speaking containerd's shim v2 contract.
//!
//! `<shim> -namespace N -address A -publish-binary B -id ID start` binds the task socket, forks
//! the long-lived shim (no re-exec: the fork happens before any thread exists) and prints the
//! socket's address; `<shim> ... -bundle DIR delete` cleans up after a shim that died. The
//! long-lived shim serves `containerd.task.v2.Task` and `containerd.task.v3.Task` over ttrpc on a
//! single-threaded tokio runtime and runs the container in-process with libcontainer.

mod args;
mod cgroup;
mod daemon;
mod delete;
mod engine;
mod events;
mod exec_filter;
mod logfile;
mod process;
mod reaper;
mod service;
mod stdio;
mod threads;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("containerd-shim-wharf-v2: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match args.action.as_deref() {
        Some("start") => daemon::start(&args),
        Some("delete") => delete::run(&args),
        Some(other) => Err(format!("unknown action {other:?} (start, delete)")),
        None if args.version => {
            println!(
                "containerd-shim-wharf-v2:\n  Version: {}\n  Runtime: libcontainer (built in)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        None => Err("missing action (start, delete)".to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("containerd-shim-wharf-v2: {e}");
            ExitCode::FAILURE
        }
    }
}
