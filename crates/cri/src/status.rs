//! What CRI reports about containers: their state (from the recorded exit, else the task),
//! exit reasons (Completed, Error, OOMKilled), ListContainers and ContainerStatus.

use wharf_api::cri as pb;

use crate::store::{self, ContainerMeta, CriContainer};
use crate::task::TaskStatus;
use crate::{now_nanos, Cri, Result};

/// The CRI state, and for an exited container (code, reason, finished_at).
pub struct Observed {
    pub state: pb::ContainerState,
    pub exit_code: i32,
    pub reason: String,
    pub finished_at: i64,
}

fn reason(code: i32, oom: bool) -> String {
    if oom {
        "OOMKilled".into()
    } else if code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    }
}

/// The user the container's process runs as (from its spec).
fn user(c: &CriContainer) -> Option<pb::ContainerUser> {
    let spec: serde_json::Value = serde_json::from_slice(&c.record.spec.as_ref()?.value).ok()?;
    let u = &spec["process"]["user"];
    Some(pb::ContainerUser {
        linux: Some(pb::LinuxContainerUser {
            uid: u["uid"].as_i64()?,
            gid: u["gid"].as_i64()?,
            supplemental_groups: u["additionalGids"]
                .as_array()
                .map(|a| a.iter().filter_map(|g| g.as_i64()).collect())
                .unwrap_or_default(),
        }),
    })
}

/// Whether the container's cgroup saw an OOM kill (the cgroup stays until the task is deleted).
fn cgroup_oom(c: &CriContainer) -> bool {
    c.record
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice::<serde_json::Value>(&s.value).ok())
        .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(str::to_string))
        .is_some_and(|p| crate::spec::cgroup_oom_killed(&p))
}

/// The exit a record holds.
fn recorded(m: &ContainerMeta) -> Observed {
    Observed {
        state: pb::ContainerState::ContainerExited,
        exit_code: m.exit_code,
        reason: m.reason.clone(),
        finished_at: m.finished_at,
    }
}

impl Cri {
    /// The container's state as CRI reports it.
    pub(crate) async fn observe(&self, c: &CriContainer) -> Observed {
        let m = &c.meta;
        if m.finished_at != 0 {
            return recorded(m);
        }
        let running = |state| Observed {
            state,
            exit_code: 0,
            reason: String::new(),
            finished_at: 0,
        };
        match self.task_state(c.id()).await {
            Some(t) => match t.status {
                TaskStatus::Running => running(pb::ContainerState::ContainerRunning),
                TaskStatus::Created => running(pb::ContainerState::ContainerCreated),
                TaskStatus::Stopped => self.exited(c, t.exit_status, t.exited_at),
            },
            None if m.started_at != 0 => {
                // The exit handler records the exit, then deletes the task: a task gone since
                // `c` was read has its exit in the record now.
                if let Ok(now) = self.container(c.id()) {
                    if now.meta.finished_at != 0 {
                        return recorded(&now.meta);
                    }
                }
                Observed {
                    state: pb::ContainerState::ContainerExited,
                    exit_code: 255,
                    reason: "Unknown".into(),
                    finished_at: m.started_at,
                }
            }
            None => running(pb::ContainerState::ContainerCreated),
        }
    }

    /// The state ListContainers reports, from the records and the shim manager's table alone
    /// (no round trip to each shim: containerd's CRI lists from memory too). Exits are recorded
    /// by the task-exit handler; one seen but not recorded yet, or a daemon forwarding none,
    /// falls back to asking the shim.
    async fn listed_state(&self, c: &CriContainer) -> pb::ContainerState {
        let m = &c.meta;
        if m.finished_at != 0 {
            return pb::ContainerState::ContainerExited;
        }
        let seen = self
            .exits_seen
            .lock()
            .map(|s| s.contains(c.id()))
            .unwrap_or(true);
        if seen
            || !self
                .exits_forwarded
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return self.observe(c).await.state;
        }
        match (m.started_at != 0, self.shim(c.id()).await.is_some()) {
            (true, true) => pb::ContainerState::ContainerRunning,
            (true, false) => pb::ContainerState::ContainerExited,
            (false, _) => pb::ContainerState::ContainerCreated,
        }
    }

    /// An exit with its status and time (nanoseconds; 0 if unknown): the reason is OOMKilled
    /// when the kernel killed it for memory.
    pub(crate) fn exited(&self, c: &CriContainer, status: u32, exited_at: i64) -> Observed {
        let code = status as i32;
        let oom = self.oom_killed(c.id()) || (code == 137 && cgroup_oom(c));
        Observed {
            state: pb::ContainerState::ContainerExited,
            exit_code: code,
            reason: reason(code, oom),
            finished_at: if exited_at > 0 {
                exited_at
            } else {
                now_nanos()
            },
        }
    }

    fn oom_killed(&self, id: &str) -> bool {
        self.oom.lock().map(|s| s.contains(id)).unwrap_or(false)
    }

    fn container_pb(&self, c: &CriContainer, state: pb::ContainerState) -> pb::Container {
        pb::Container {
            id: c.id().to_string(),
            pod_sandbox_id: c.meta.sandbox_id.clone(),
            metadata: c.config.metadata.clone(),
            image: c.config.image.clone(),
            image_ref: c.meta.image_id.clone(),
            state: state as i32,
            created_at: c.meta.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            ..Default::default()
        }
    }

    pub async fn list_containers(
        &self,
        filter: Option<pb::ContainerFilter>,
    ) -> Result<Vec<pb::Container>> {
        let f = filter.unwrap_or_default();
        let all = self.containers()?;
        let selected: Vec<&CriContainer> = all
            .iter()
            .filter(|c| f.id.is_empty() || c.id().starts_with(&f.id))
            .filter(|c| {
                f.pod_sandbox_id.is_empty() || c.meta.sandbox_id.starts_with(&f.pod_sandbox_id)
            })
            .filter(|c| store::selects(&f.label_selector, &c.config.labels))
            .collect();
        let mut out = Vec::with_capacity(selected.len());
        for c in selected {
            let state = self.listed_state(c).await;
            if f.state.as_ref().is_none_or(|w| w.state == state as i32) {
                out.push(self.container_pb(c, state));
            }
        }
        Ok(out)
    }

    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<pb::ContainerStatusResponse> {
        let c = self.container(id)?;
        Ok(self.status_of(&c, verbose).await)
    }

    /// The statuses of the sandbox's containers (what container events carry).
    pub(crate) async fn pod_container_statuses(
        &self,
        sandbox_id: &str,
    ) -> Result<Vec<pb::ContainerStatus>> {
        let mut out = Vec::new();
        for c in self.containers()?.iter() {
            if c.meta.sandbox_id == sandbox_id {
                out.extend(self.status_of(c, false).await.status);
            }
        }
        Ok(out)
    }

    async fn status_of(&self, c: &CriContainer, verbose: bool) -> pb::ContainerStatusResponse {
        let o = self.observe(c).await;
        let mut info = std::collections::HashMap::new();
        if verbose {
            let pid = self.task_state(c.id()).await.map(|t| t.pid).unwrap_or(0);
            let v = serde_json::json!({
                "sandboxID": c.meta.sandbox_id,
                "pid": pid,
                "snapshotKey": c.record.snapshot_key,
                "snapshotter": c.record.snapshotter,
                "runtimeType": store::RUNTIME,
            });
            info.insert("info".to_string(), v.to_string());
        }
        let resources = c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| pb::ContainerResources {
                linux: Some(r),
                windows: None,
            });
        pb::ContainerStatusResponse {
            status: Some(pb::ContainerStatus {
                id: c.id().to_string(),
                metadata: c.config.metadata.clone(),
                state: o.state as i32,
                created_at: c.meta.created_at,
                started_at: c.meta.started_at,
                finished_at: o.finished_at,
                exit_code: o.exit_code,
                image: Some(pb::ImageSpec {
                    image: if c.meta.image_name.is_empty() {
                        c.meta.image_ref.clone()
                    } else {
                        c.meta.image_name.clone()
                    },
                    ..Default::default()
                }),
                // containerd's: the repo digest when the image has one.
                image_ref: if c.meta.repo_digest.is_empty() {
                    c.meta.image_id.clone()
                } else {
                    c.meta.repo_digest.clone()
                },
                image_id: c.meta.image_id.clone(),
                reason: o.reason,
                message: c.meta.message.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                mounts: c.config.mounts.clone(),
                log_path: c.meta.log_path.clone(),
                resources,
                user: user(c),
            }),
            info,
        }
    }
}
