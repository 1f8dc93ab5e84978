//! Reaps every child (the shim is a subreaper) on SIGCHLD and hands exits to the service.
//!
//! libcontainer waits for its own helper processes inside its blocking calls; those run on the
//! runtime's only thread, so this loop never runs concurrently with them and cannot steal their
//! wait statuses.

use std::sync::Arc;

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::Signal;

use crate::process::exit_status;
use crate::service::Service;

pub async fn run(svc: Arc<Service>, mut sigchld: Signal) {
    loop {
        reap(&svc);
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

fn reap(svc: &Service) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(ws) => {
                if let Some((pid, status)) = exit_status(ws) {
                    svc.process_exited(pid, status);
                }
            }
        }
    }
}
