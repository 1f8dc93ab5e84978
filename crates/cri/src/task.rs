//! The tasks of sandboxes and containers through the shim manager: create from a record,
//! state, stop (signal, grace period, SIGKILL), delete.

use std::sync::Arc;
use std::time::Duration;

use wharf_runtime::{api, NewTask, Shim};

use crate::store::RUNTIME;
use crate::{Cri, Error, Result, NAMESPACE};

const SIGKILL: u32 = 9;
const SIGTERM: u32 = 15;
/// How long a SIGKILLed task may take to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A task's state as CRI needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    Created,
    Running,
    Stopped,
}

#[derive(Debug, Clone)]
pub struct TaskState {
    pub status: TaskStatus,
    pub pid: u32,
    pub exit_status: u32,
    /// Nanoseconds since the epoch; 0 if unknown.
    pub exited_at: i64,
}

impl Cri {
    pub(crate) async fn shim(&self, id: &str) -> Option<Arc<Shim>> {
        self.runtime.get(NAMESPACE, id).await
    }

    /// Creates the task of a record whose snapshot is prepared.
    pub(crate) async fn create_task(
        &self,
        id: &str,
        spec: Vec<u8>,
        stdin: &str,
        stdout: &str,
        stderr: &str,
    ) -> Result<(Arc<Shim>, u32)> {
        let rootfs = self
            .snapshotter
            .mounts(NAMESPACE, id)?
            .into_iter()
            .map(|m| api::Mount {
                type_: m.kind,
                source: m.source,
                options: m.options,
                ..Default::default()
            })
            .collect();
        let request = api::CreateTaskRequest {
            rootfs,
            stdin: stdin.to_string(),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
            ..Default::default()
        };
        Ok(self
            .runtime
            .create(NewTask {
                namespace: NAMESPACE.to_string(),
                id: id.to_string(),
                runtime: RUNTIME.to_string(),
                spec,
                request,
            })
            .await?)
    }

    /// The task's state; None when it has no task. A shim that is gone reads as stopped
    /// (killed).
    pub(crate) async fn task_state(&self, id: &str) -> Option<TaskState> {
        let shim = self.shim(id).await?;
        Some(match shim.state("").await {
            Ok(s) => TaskState {
                status: if s.status == api::Status::RUNNING.into()
                    || s.status == api::Status::PAUSED.into()
                    || s.status == api::Status::PAUSING.into()
                {
                    TaskStatus::Running
                } else if s.status == api::Status::CREATED.into() {
                    TaskStatus::Created
                } else {
                    TaskStatus::Stopped
                },
                pid: s.pid,
                exit_status: s.exit_status,
                exited_at: s
                    .exited_at
                    .as_ref()
                    .map(|t| t.seconds * 1_000_000_000 + t.nanos as i64)
                    .unwrap_or(0),
            },
            // Its shim is gone, and the clean-up after a dead shim kills what is left: 137,
            // what that clean-up reports and containerd records.
            Err(_) => TaskState {
                status: TaskStatus::Stopped,
                pid: 0,
                exit_status: 128 + SIGKILL,
                exited_at: 0,
            },
        })
    }

    /// Signals the task to stop: SIGTERM and `grace` to exit, then SIGKILL. Returns once it
    /// exited (or has no task).
    pub(crate) async fn stop_task(&self, id: &str, grace: Duration) -> Result<()> {
        let Some(shim) = self.shim(id).await else {
            return Ok(());
        };
        match self.task_state(id).await {
            None => return Ok(()),
            Some(s) if s.status == TaskStatus::Stopped => return Ok(()),
            _ => {}
        }
        if !grace.is_zero() {
            if let Err(e) = shim.kill("", SIGTERM, false).await {
                if !e.is_not_found() {
                    tracing::debug!(id, error = %e, "SIGTERM");
                }
            }
            if tokio::time::timeout(grace, shim.wait("")).await.is_ok() {
                return Ok(());
            }
        }
        if let Err(e) = shim.kill("", SIGKILL, true).await {
            if !e.is_not_found() && !matches!(e, wharf_core::Error::Unavailable(_)) {
                return Err(Error::from(e).context(format!("kill task {id}")));
            }
        }
        match tokio::time::timeout(KILL_WAIT, shim.wait("")).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "task {id} did not exit {}s after SIGKILL",
                KILL_WAIT.as_secs()
            ))),
        }
    }

    /// Deletes the task (its shim goes with it); fine when there is none.
    pub(crate) async fn delete_task(&self, id: &str) -> Result<()> {
        if self.shim(id).await.is_none() {
            return Ok(());
        }
        match self.runtime.delete(NAMESPACE, id).await {
            Ok(_) => Ok(()),
            Err(wharf_core::Error::Unavailable(_)) => {
                self.runtime.reap(NAMESPACE, id).await;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(Error::from(e).context(format!("delete task {id}"))),
        }
    }
}
