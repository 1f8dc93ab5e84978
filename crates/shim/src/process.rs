//! One process of the task (the init, or an exec'd one): its state, exit status and the stdio
//! the shim keeps for it.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::SystemTime;

use containerd_shim_protos::api::{self, Status};
use tokio::sync::watch;

use crate::events::timestamp;
use crate::stdio::{Paths, TtyCopy};

pub struct Process {
    /// "" for the init process.
    pub exec_id: String,
    pub pid: i32,
    pub status: Status,
    pub exit_status: u32,
    pub exited_at: Option<SystemTime>,
    pub stdio: Paths,
    /// Becomes true when the process has exited and its status is recorded.
    pub exited: watch::Sender<bool>,
    /// Output FIFO read ends kept open while the process lives.
    pub keep: Vec<OwnedFd>,
    /// Disconnects when the log copiers of a formatted `file://` log, or the terminal's copier,
    /// have drained the output.
    pub drained: Option<std::sync::mpsc::Receiver<()>>,
    pub console: Option<OwnedFd>,
    pub tty: Option<TtyCopy>,
    /// An exec'd process's OCI Process spec, written by Exec, used by Start.
    pub spec_path: Option<PathBuf>,
}

impl Process {
    pub fn new(exec_id: &str, stdio: Paths) -> Process {
        Process {
            exec_id: exec_id.to_string(),
            pid: 0,
            status: Status::CREATED,
            exit_status: 0,
            exited_at: None,
            stdio,
            exited: watch::channel(false).0,
            keep: Vec::new(),
            drained: None,
            console: None,
            tty: None,
            spec_path: None,
        }
    }

    /// Records the exit (wait status already turned into containerd's exit status).
    pub fn set_exited(&mut self, status: u32) {
        self.status = Status::STOPPED;
        self.exit_status = status;
        self.exited_at = Some(SystemTime::now());
        self.keep.clear();
        if let Some(spec) = self.spec_path.take() {
            let _ = std::fs::remove_file(spec);
        }
        self.exited.send_replace(true);
    }

    pub fn exited_at(
        &self,
    ) -> Option<containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp> {
        self.exited_at.map(timestamp)
    }

    pub fn state(&self, id: &str, bundle: &str) -> api::StateResponse {
        api::StateResponse {
            id: id.to_string(),
            bundle: bundle.to_string(),
            pid: self.pid.max(0) as u32,
            status: self.status.into(),
            stdin: self.stdio.stdin.clone(),
            stdout: self.stdio.stdout.clone(),
            stderr: self.stdio.stderr.clone(),
            terminal: self.stdio.terminal,
            exit_status: self.exit_status,
            exited_at: self.exited_at().into(),
            exec_id: self.exec_id.clone(),
            ..Default::default()
        }
    }
}

/// containerd's exit status for a wait status: the code, or 128 + the signal.
pub fn exit_status(ws: nix::sys::wait::WaitStatus) -> Option<(i32, u32)> {
    use nix::sys::wait::WaitStatus;
    match ws {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), code as u32)),
        WaitStatus::Signaled(pid, sig, _) => Some((pid.as_raw(), 128 + sig as u32)),
        _ => None,
    }
}
