//! Containers of a pod: CreateContainer (record + snapshot + the image's volumes),
//! StartContainer (the task, logging in CRI format to the pod's log directory), StopContainer,
//! RemoveContainer (with the exit recorded on the way), ReopenContainerLog and
//! UpdateContainerResources. What is reported about
//! them is `status.rs`.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use wharf_api::cri as pb;
use wharf_core::metadata::Labels;
use wharf_runtime::api;

use crate::spec::PodContext;
use crate::store::{self, ContainerMeta, KIND_CONTAINER};
use crate::{now_nanos, Cri, Error, Result, NAMESPACE};
use pb::ContainerEventType as Event;

/// The absolute log path: `dir` + `rel`, refusing anything that leaves `dir`.
pub fn log_path(dir: &str, rel: &str) -> Result<String> {
    if dir.is_empty() || rel.is_empty() {
        return Ok(String::new());
    }
    let bad = || {
        Error::InvalidArgument(format!(
            "log path {rel:?} must stay inside the log directory {dir:?}"
        ))
    };
    let mut out = PathBuf::from(dir);
    let base_len = out.components().count();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir => {
                if out.components().count() <= base_len {
                    return Err(bad());
                }
                out.pop();
            }
            Component::RootDir | Component::Prefix(_) => return Err(bad()),
        }
    }
    if out.components().count() <= base_len {
        return Err(bad());
    }
    Ok(out.display().to_string())
}

impl Cri {
    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: pb::ContainerConfig,
    ) -> Result<String> {
        let started = Instant::now();
        let sandbox = self
            .sandbox(sandbox_id)
            .map_err(|e| e.context(format!("failed to find sandbox {sandbox_id:?}")))?;
        let (state, pause_pid) = self.sandbox_state(&sandbox).await;
        if state != pb::PodSandboxState::SandboxReady {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {} is not ready",
                sandbox.id()
            )));
        }
        let cmd = config.metadata.clone().unwrap_or_default();
        if cmd.name.is_empty() {
            return Err(Error::InvalidArgument(
                "container config must include metadata with a name".into(),
            ));
        }
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        let image = self
            .resolve_image(&image_name)?
            .ok_or_else(|| Error::NotFound(format!("image {image_name:?}")))
            .map_err(|e| e.context(format!("failed to resolve image {image_name:?}")))?;
        let log = log_path(&sandbox.config.log_directory, &config.log_path)?;
        let pod_md = sandbox.metadata();
        let name = store::container_name(&cmd, &pod_md);
        let id = store::new_id()?;
        let mut opts = crate::spec::container_options(
            &id,
            &config,
            &PodContext {
                sandbox: &sandbox,
                pause_pid,
                image_name: &image_name,
            },
            crate::cgroup::host_limits(),
        )?;
        // Image-declared volumes: a directory of the container's own at each, seeded below.
        let volumes = if self.config.ignore_image_defined_volumes {
            Vec::new()
        } else {
            crate::volumes::plan(
                &image.config,
                &config.mounts,
                &crate::volumes::container_dir(&self.root, &id),
            )
            .map_err(|e| e.context(format!("image {image_name:?}")))?
        };
        for v in &volumes {
            opts.mounts.push(crate::spec::bind_mount(
                &v.dest,
                &v.host,
                &["rbind", "rprivate", "rw"],
            ));
        }
        let security = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.clone())
            .unwrap_or_default();
        opts.apparmor_profile = if self.apparmor.enabled() {
            let apparmor = self.apparmor.clone();
            tokio::task::spawn_blocking(move || apparmor.profile_for(&security))
                .await
                .map_err(|e| Error::Internal(format!("apparmor: {e}")))??
        } else {
            self.apparmor.profile_for(&security)?
        };
        let meta = ContainerMeta {
            config: store::encode_pb(&config),
            name: name.clone(),
            sandbox_id: sandbox.id().to_string(),
            log_path: log,
            image_ref: image_name.clone(),
            image_id: image.id.clone(),
            image_name: image
                .repo_tags()
                .into_iter()
                .next()
                .unwrap_or_else(|| image_name.clone()),
            repo_digest: image
                .repo_digests()
                .into_iter()
                .next()
                .unwrap_or_else(|| image.id.clone()),
            created_at: now_nanos(),
            ..Default::default()
        };
        let labels = store::labels(
            &config.labels,
            KIND_CONTAINER,
            &name,
            &pod_md,
            Some(&cmd.name),
        );
        // The spec before the record, so that the record is one commit: user names resolve
        // against the image's own layers, which is what the new snapshot will show.
        let parent = image.chain_id.as_ref().map(|c| c.to_string());
        let layers = match &parent {
            Some(p) => self
                .snapshotter
                .chain_dirs(NAMESPACE, p)
                .map_err(|e| Error::from(e).context(format!("image {image_name:?}")))?,
            None => Vec::new(),
        };
        let root = crate::spec::passwd_root(&layers);
        let mut spec = wharf_core::spec::generate(&image.config, root.as_deref(), &opts)?;
        crate::spec::adjust_for_pod_pid(&mut spec, &opts);
        let spec = serde_json::to_vec(&spec).map_err(|e| Error::Internal(format!("spec: {e}")))?;
        {
            let _names = self.names.lock().await;
            if let Some(owner) = self.name_owner(KIND_CONTAINER, &name)? {
                return Err(Error::AlreadyExists(format!(
                    "failed to reserve container name {name:?}: name {name:?} is reserved for {owner:?}"
                )));
            }
            // The record first: it reserves the name and makes the snapshot a GC root.
            let record = store::record(
                &id,
                labels,
                image
                    .references
                    .first()
                    .map(String::as_str)
                    .unwrap_or(&image.id),
                self.snapshotter.name(),
                sandbox.id(),
                spec,
            );
            self.db
                .container_create(NAMESPACE, store::with_container_meta(record, &meta)?)?;
        }
        let snapshotter = self.snapshotter.clone();
        let key = id.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            snapshotter.prepare(NAMESPACE, &key, parent.as_deref(), Labels::new(), None)
        })
        .await
        .map_err(|e| Error::Internal(format!("prepare task: {e}")))
        .and_then(|r| r.map_err(Error::from));
        let seeded = match prepared {
            Ok(mounts) if !volumes.is_empty() => {
                let tmp = self.tmp.clone();
                tokio::task::spawn_blocking(move || crate::volumes::seed(&volumes, &mounts, &tmp))
                    .await
                    .map_err(|e| Error::Internal(format!("seed volumes task: {e}")))
                    .and_then(|r| r)
                    .map_err(|e| e.context("failed to set up the image's volumes"))
            }
            other => other.map(|_| ()),
        };
        if let Err(e) = seeded {
            let _ = self.snapshotter.remove(NAMESPACE, &id);
            if let Err(e) = crate::volumes::remove(&self.root, &id) {
                tracing::warn!(id, error = %e, "cri: undo container volumes");
            }
            let _ = self.db.container_delete(NAMESPACE, &id);
            return Err(e);
        }
        tracing::info!(id = %id, name = %name, elapsed_ms = started.elapsed().as_millis() as u64, "cri: CreateContainer");
        self.emit(&id, sandbox.id(), Event::ContainerCreatedEvent)
            .await;
        Ok(id)
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        let started = Instant::now();
        let mut c = self.container(id)?;
        let id = c.id().to_string();
        let lock = self.lock_of(&id);
        let _held = lock.lock().await;
        c = self.container(&id)?;
        if c.meta.started_at != 0 || self.shim(&id).await.is_some() {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is not in created state"
            )));
        }
        let sandbox = self.sandbox(&c.meta.sandbox_id)?;
        let (state, _) = self.sandbox_state(&sandbox).await;
        if state != pb::PodSandboxState::SandboxReady {
            return Err(Error::FailedPrecondition(format!(
                "sandbox container {} is not running",
                sandbox.id()
            )));
        }
        let uri = if c.meta.log_path.is_empty() {
            String::new()
        } else {
            let p = Path::new(&c.meta.log_path);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::Internal(format!("create log directory {}: {e}", dir.display()))
                })?;
            }
            format!("file://{}?format=cri", c.meta.log_path)
        };
        let spec = c
            .record
            .spec
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let stdin = if c.config.stdin {
            self.open_container_stdin(&id)?
        } else {
            String::new()
        };
        let ran = match self.create_task(&id, spec, &stdin, &uri, &uri).await {
            Ok((shim, _)) => {
                let start_time = now_nanos();
                match shim.start("").await {
                    Ok(_) => Ok(start_time),
                    Err(e) => {
                        let _ = self.delete_task(&id).await;
                        Err(Error::from(e).context(format!("failed to start container {id:?}")))
                    }
                }
            }
            Err(e) => Err(e),
        };
        let start_time = match ran {
            Ok(t) => t,
            Err(e) => {
                // A start that fails at any step leaves the container exited with StartError,
                // as containerd records it (kubelet then replaces it).
                self.drop_container_stdin(&id);
                c.meta.finished_at = now_nanos();
                c.meta.started_at = c.meta.finished_at;
                c.meta.exit_code = 128;
                c.meta.reason = "StartError".into();
                c.meta.message = e.to_string();
                if let Err(se) = self.save_container_meta(&c) {
                    tracing::warn!(id = %id, error = %se, "cri: record start error");
                }
                return Err(e);
            }
        };
        c.meta.started_at = start_time;
        self.save_container_meta(&c)?;
        drop(_held);
        tracing::info!(id = %id, elapsed_ms = started.elapsed().as_millis() as u64, "cri: StartContainer");
        self.emit(&id, &c.meta.sandbox_id, Event::ContainerStartedEvent)
            .await;
        Ok(())
    }

    /// StopContainer: SIGTERM, `timeout` seconds, SIGKILL; then its exit is recorded.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<()> {
        let c = self.container(id)?;
        let id = c.id().to_string();
        self.stop_task(&id, Duration::from_secs(timeout.max(0) as u64))
            .await?;
        self.finish_container(&id, None).await;
        Ok(())
    }

    /// RemoveContainer: stops it if running, removes task, snapshot and record (not its log).
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let c = match self.container(id) {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = c.id().to_string();
        self.forget_cpu_sample(&id);
        self.stop_task(&id, Duration::ZERO).await?;
        self.finish_container(&id, None).await;
        let lock = self.lock_of(&id);
        let held = lock.lock().await;
        self.delete_task(&id).await?;
        match self.snapshotter.remove(NAMESPACE, &id) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::from(e).context(format!("remove container {id} snapshot"))),
        }
        // Before the record: a crash in between leaves a record to remove again, not a
        // directory nobody knows.
        crate::volumes::remove(&self.root, &id)?;
        match self.db.container_delete(NAMESPACE, &id) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        drop(held);
        self.forget_lock(&id);
        self.emit(&id, &c.meta.sandbox_id, Event::ContainerDeletedEvent)
            .await;
        self.drop_container_stdin(&id);
        Ok(())
    }

    /// Records the exit of a container whose task stopped (or vanished) and deletes the task.
    /// `exit` is the exit event's status and time (nanoseconds), when one reported it.
    pub(crate) async fn finish_container(&self, id: &str, exit: Option<(u32, i64)>) {
        let lock = self.lock_of(id);
        let held = lock.lock().await;
        let Ok(mut c) = self.container(id) else {
            return;
        };
        let mut stopped = false;
        if c.meta.finished_at == 0 && c.meta.started_at != 0 {
            // The exit event's status, as containerd records it; without one, the shim's.
            let o = match exit {
                Some((status, at)) => self.exited(&c, status, at),
                None => self.observe(&c).await,
            };
            if o.state != pb::ContainerState::ContainerExited {
                return;
            }
            c.meta.finished_at = o.finished_at;
            c.meta.exit_code = o.exit_code;
            c.meta.reason = o.reason;
            if let Err(e) = self.save_container_meta(&c) {
                tracing::warn!(id, error = %e, "cri: record container exit");
                return;
            }
            if let Ok(mut oom) = self.oom.lock() {
                oom.remove(id);
            }
            stopped = true;
        }
        if c.meta.finished_at != 0 {
            if let Err(e) = self.delete_task(id).await {
                tracing::warn!(id, error = %e, "cri: delete exited container task");
            }
            self.drop_container_stdin(id);
        }
        drop(held);
        if stopped {
            self.emit(id, &c.meta.sandbox_id, Event::ContainerStoppedEvent)
                .await;
        }
    }
    /// ReopenContainerLog: after kubelet renamed the log, a new file is made at the path; the
    /// shim notices the rename and writes there from its next line (within a second).
    pub async fn reopen_container_log(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if self.observe(&c).await.state != pb::ContainerState::ContainerRunning {
            return Err(Error::FailedPrecondition(format!(
                "container {} is not running",
                c.id()
            )));
        }
        if c.meta.log_path.is_empty() {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&c.meta.log_path)
            .map(|_| ())
            .map_err(|e| Error::Internal(format!("reopen log {}: {e}", c.meta.log_path)))
    }

    /// UpdateContainerResources: the shim applies them to a running task; the record keeps
    /// them for the next start.
    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: Option<pb::LinuxContainerResources>,
    ) -> Result<()> {
        let Some(r) = resources else {
            return Ok(());
        };
        let mut c = self.container(id)?;
        let id = c.id().to_string();
        let lock = self.lock_of(&id);
        let _held = lock.lock().await;
        let json = crate::spec::linux_resources(&r, crate::cgroup::host_limits())?;
        if let Some(shim) = self.shim(&id).await {
            let value = serde_json::to_vec(&json)
                .map_err(|e| Error::Internal(format!("resources: {e}")))?;
            let req = api::UpdateTaskRequest {
                id: id.clone(),
                resources: MessageField::some(Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
                        .into(),
                    value,
                    ..Default::default()
                }),
                ..Default::default()
            };
            shim.update(&req)
                .await
                .map_err(|e| Error::from(e).context("failed to update resources"))?;
        }
        // The spec and the config keep the new values.
        if let Some(spec) = c.record.spec.as_mut() {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&spec.value) {
                if let Some(res) = v
                    .get_mut("linux")
                    .and_then(|l| l.get_mut("resources"))
                    .and_then(|r| r.as_object_mut())
                {
                    if let Some(obj) = json.as_object() {
                        for (k, val) in obj {
                            res.insert(k.clone(), val.clone());
                        }
                    }
                }
                if let Ok(b) = serde_json::to_vec(&v) {
                    spec.value = b;
                }
            }
        }
        self.save_spec(&c.record)?;
        let mut linux = c.config.linux.clone().unwrap_or_default();
        linux.resources = Some(r);
        c.config.linux = Some(linux);
        c.meta.config = store::encode_pb(&c.config);
        self.save_container_meta(&c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_inside() {
        assert_eq!(
            log_path("/var/log/pods/p", "c/0.log").unwrap(),
            "/var/log/pods/p/c/0.log"
        );
        assert_eq!(
            log_path("/var/log/pods/p", "c/../d/0.log").unwrap(),
            "/var/log/pods/p/d/0.log"
        );
        assert!(log_path("/var/log/pods/p", "../x.log").is_err());
        assert!(log_path("/var/log/pods/p", "c/../../x.log").is_err());
        assert!(log_path("/var/log/pods/p", "/etc/passwd").is_err());
        assert!(log_path("/var/log/pods/p", ".").is_err());
        assert_eq!(log_path("", "x.log").unwrap(), "");
    }
}
