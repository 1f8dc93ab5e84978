//! Task exits and OOM kills, as the daemon forwards them from shims: a container's exit is
//! recorded (code, time, reason Completed/Error/OOMKilled) and its task deleted, as
//! containerd's CRI event monitor does; a pause task's exit leaves its sandbox NOTREADY. At
//! start, records are reconciled with the tasks the shim manager restored.

use crate::store::{KIND_CONTAINER, KIND_SANDBOX, LABEL_KIND};
use crate::task::TaskStatus;
use crate::{Cri, NAMESPACE};

/// An event of a task in `k8s.io`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// A process exited; `id` is the exec id, equal to `container_id` for the task itself.
    /// The status and time are the event's: for a task whose shim died, the shim's clean-up
    /// reports 137, and the dead shim cannot be asked.
    Exit {
        container_id: String,
        id: String,
        exit_status: u32,
        /// Nanoseconds since the epoch; 0 if unknown.
        exited_at: i64,
    },
    Oom {
        container_id: String,
    },
}

impl Cri {
    pub(crate) async fn handle_events(
        &self,
        mut rx: tokio::sync::mpsc::UnboundedReceiver<TaskEvent>,
    ) {
        while let Some(e) = rx.recv().await {
            match e {
                TaskEvent::Oom { container_id } => {
                    if let Ok(mut s) = self.oom.lock() {
                        s.insert(container_id);
                    }
                }
                TaskEvent::Exit {
                    container_id,
                    id,
                    exit_status,
                    exited_at,
                } if container_id == id => {
                    if let Ok(mut s) = self.exits_seen.lock() {
                        s.insert(container_id.clone());
                    }
                    self.task_exited(&container_id, (exit_status, exited_at))
                        .await;
                    if let Ok(mut s) = self.exits_seen.lock() {
                        s.remove(&container_id);
                    }
                }
                TaskEvent::Exit { .. } => {}
            }
        }
    }

    async fn task_exited(&self, id: &str, exit: (u32, i64)) {
        let kind = match self.db.container_get(NAMESPACE, id) {
            Ok(c) => c.labels.get(LABEL_KIND).cloned().unwrap_or_default(),
            Err(_) => return,
        };
        match kind.as_str() {
            KIND_CONTAINER => self.finish_container(id, Some(exit)).await,
            KIND_SANDBOX => self.finish_sandbox(id).await,
            _ => {}
        }
    }

    /// Containers and sandboxes whose task ended while nobody listened get their exit recorded.
    pub(crate) async fn reconcile(&self) {
        if let Ok(containers) = self.containers() {
            for c in containers.iter() {
                if c.meta.started_at == 0 || c.meta.finished_at != 0 {
                    continue;
                }
                match self.task_state(c.id()).await {
                    Some(t) if t.status != TaskStatus::Stopped => {}
                    _ => self.finish_container(c.id(), None).await,
                }
            }
        }
        if let Ok(sandboxes) = self.sandboxes() {
            for s in sandboxes.iter() {
                if let Some(t) = self.task_state(s.id()).await {
                    if t.status == TaskStatus::Stopped {
                        self.finish_sandbox(s.id()).await;
                    }
                }
            }
        }
    }
}
