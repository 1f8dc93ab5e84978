//! Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus and
//! ListPodSandbox. A sandbox is a pause task in the pod's namespaces, its network namespace
//! joined through CNI, and a record (kind `sandbox`) carrying the request's config.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use wharf_api::cri as pb;
use wharf_core::metadata::Labels;

use crate::store::{self, Sandbox, SandboxMeta, KIND_SANDBOX};
use crate::task::TaskStatus;
use crate::{now_nanos, Cri, Error, Result, NAMESPACE};
use pb::ContainerEventType as Event;

/// What a failed RunPodSandbox has to undo.
#[derive(Default)]
struct Undo {
    netns: Option<SandboxMeta>,
    etc: bool,
    shm: bool,
    record: bool,
    snapshot: bool,
    task: bool,
}

impl Cri {
    /// RunPodSandbox: returns the new sandbox's ID.
    pub async fn run_pod_sandbox(
        &self,
        config: pb::PodSandboxConfig,
        handler: String,
    ) -> Result<String> {
        let started = Instant::now();
        let md = config.metadata.clone().unwrap_or_default();
        if md.name.is_empty() || md.namespace.is_empty() || md.uid.is_empty() {
            return Err(Error::InvalidArgument(
                "sandbox config must include metadata with name, namespace and uid".into(),
            ));
        }
        let image_id = self
            .ensure_sandbox_image()
            .await
            .map_err(|e| e.context("failed to get sandbox image"))?;
        let image = self
            .resolve_image(&image_id)?
            .ok_or_else(|| Error::NotFound(format!("sandbox image {image_id}")))?;
        let chain_id = image.chain_id.clone().ok_or_else(|| {
            Error::FailedPrecondition(format!("sandbox image {image_id} has no layers"))
        })?;
        let name = store::sandbox_name(&md);
        let id = store::new_id()?;
        let mut undo = Undo::default();
        let names = self.names.lock().await;
        if let Some(owner) = self.name_owner(KIND_SANDBOX, &name)? {
            return Err(Error::AlreadyExists(format!(
                "failed to reserve sandbox name {name:?}: name {name:?} is reserved for {owner:?}"
            )));
        }
        let result = self
            .run_sandbox_steps(
                &id,
                &name,
                &config,
                handler,
                &image,
                &chain_id.to_string(),
                &mut undo,
                names,
            )
            .await;
        match result {
            Ok(()) => {
                tracing::info!(id = %id, name = %name, elapsed_ms = started.elapsed().as_millis() as u64, "cri: RunPodSandbox");
                self.emit(&id, &id, Event::ContainerCreatedEvent).await;
                self.emit(&id, &id, Event::ContainerStartedEvent).await;
                Ok(id)
            }
            Err(e) => {
                self.undo_sandbox(&id, &config, undo).await;
                Err(e)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_sandbox_steps(
        &self,
        id: &str,
        name: &str,
        config: &pb::PodSandboxConfig,
        handler: String,
        image: &crate::images::CriImage,
        chain_id: &str,
        undo: &mut Undo,
        // Held until the record reserves the name.
        names: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<()> {
        let ns_opts = store::namespace_options(config.linux.as_ref());
        let host_net = ns_opts.network == pb::NamespaceMode::Node as i32;
        let host_ipc = ns_opts.ipc == pb::NamespaceMode::Node as i32;
        let md = config.metadata.clone().unwrap_or_default();
        let mut meta = SandboxMeta {
            config: store::encode_pb(config),
            name: name.to_string(),
            created_at: now_nanos(),
            runtime_handler: handler,
            ..Default::default()
        };
        let net = if host_net {
            None
        } else {
            // Where the namespace will be: the spec names it before it exists.
            meta.netns = self.pod_netns_path(id).display().to_string();
            Some(self.pod_network_config()?)
        };
        meta.shm = self.pod_shm_path(id, host_ipc).display().to_string();
        let opts = crate::spec::sandbox_options(id, config, &meta.netns, &meta.shm)?;
        let spec = wharf_core::spec::generate(&image.config, None, &opts)?;
        let spec = serde_json::to_vec(&spec).map_err(|e| Error::Internal(format!("spec: {e}")))?;
        // The record first, spec and all in one commit: it reserves the name and makes the
        // snapshot a GC root.
        let labels = store::labels(&config.labels, KIND_SANDBOX, name, &md, None);
        let record = store::record(
            id,
            labels,
            image
                .references
                .first()
                .map(String::as_str)
                .unwrap_or(&image.id),
            self.snapshotter.name(),
            "",
            spec.clone(),
        );
        self.db
            .container_create(NAMESPACE, store::with_sandbox_meta(record, &meta)?)?;
        undo.record = true;
        drop(names);

        // The pause container starts while CNI attaches its namespace (pause never uses the
        // network, and the pod is nobody's until this returns): a pod costs the longer of the
        // two, not their sum. The pause task waits only for the namespace to exist.
        let (netns_made, netns_ready) = tokio::sync::oneshot::channel::<()>();
        let (mut prepared, mut shm_mounted, mut created) = (false, false, false);
        let pause = async {
            let snapshotter = self.snapshotter.clone();
            let (key, parent) = (id.to_string(), chain_id.to_string());
            tokio::task::spawn_blocking(move || {
                snapshotter.prepare(NAMESPACE, &key, Some(&parent), Labels::new(), None)
            })
            .await
            .map_err(|e| Error::Internal(format!("prepare task: {e}")))??;
            prepared = true;
            if !host_ipc {
                crate::shm::mount(Path::new(&meta.shm))?;
                shm_mounted = true;
            }
            if !host_net && netns_ready.await.is_err() {
                return Err(Error::Internal(format!(
                    "sandbox {id}: no network namespace to start in"
                )));
            }
            let (shim, _) = self.create_task(id, spec, "", "", "").await?;
            created = true;
            shim.start("").await?;
            Ok::<(), Error>(())
        };
        let network = async {
            let Some(net) = net else {
                return Ok(None);
            };
            let ns = self.create_pod_netns(id, net).await?;
            let _ = netns_made.send(());
            match self.attach_pod_network(id, config, &ns).await {
                Ok(net) => Ok(Some(net)),
                Err(e) => {
                    // CNI DEL was tried already; a teardown now would fail the same way and
                    // keep the namespace for a retry nobody will make.
                    self.remove_pod_netns(ns).await;
                    Err(e)
                }
            }
        };
        let (paused, attached) = tokio::join!(pause, network);
        undo.snapshot = prepared;
        undo.shm = shm_mounted;
        undo.task = created;
        if let Ok(Some(net)) = &attached {
            meta.ip = net.ip.clone();
            meta.additional_ips = net.additional_ips.clone();
            meta.network = net.network.clone();
            undo.netns = Some(meta.clone());
        }
        attached?;
        paused?;
        meta.etc_dir = self
            .write_pod_etc(id, config, &meta.ip, host_net)?
            .display()
            .to_string();
        undo.etc = true;
        let mut sandbox = self.sandbox(id)?;
        sandbox.meta = meta;
        self.save_sandbox_meta(&sandbox)?;
        Ok(())
    }

    async fn undo_sandbox(&self, id: &str, config: &pb::PodSandboxConfig, undo: Undo) {
        if undo.task {
            let _ = self.stop_task(id, Duration::ZERO).await;
            let _ = self.delete_task(id).await;
        }
        if let Some(meta) = &undo.netns {
            if let Err(e) = self.teardown_pod_network(id, meta, config).await {
                tracing::warn!(id, error = %e, "cri: undo sandbox network");
            }
        }
        if undo.shm {
            if let Err(e) = crate::shm::unmount(&self.pod_shm_path(id, false)) {
                tracing::warn!(id, error = %e, "cri: undo sandbox shm");
            }
        }
        if undo.etc || undo.shm {
            let _ = std::fs::remove_dir_all(self.pod_dir(id));
        }
        if undo.snapshot {
            let _ = self.snapshotter.remove(NAMESPACE, id);
        }
        if undo.record {
            let _ = self.db.container_delete(NAMESPACE, id);
        }
    }

    /// StopPodSandbox: every container stopped, the pause task gone, the network torn down.
    /// Idempotent.
    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<()> {
        let mut s = self.sandbox(id)?;
        let id = s.id().to_string();
        for c in self.containers()?.iter() {
            if c.meta.sandbox_id == id {
                self.stop_container(c.id(), 0).await?;
            }
        }
        let lock = self.lock_of(&id);
        let held = lock.lock().await;
        // Whoever deletes the pause task reports the sandbox stopped (here or on its exit).
        let had_task = self.shim(&id).await.is_some();
        self.stop_task(&id, Duration::ZERO).await?;
        self.delete_task(&id).await?;
        // Every process of the pod is gone: its shared memory goes too (never the host's).
        crate::shm::unmount(&self.pod_shm_path(&id, false))?;
        if !s.meta.stopped {
            self.teardown_pod_network(&id, &s.meta, &s.config).await?;
            s.meta.stopped = true;
            self.save_sandbox_meta(&s)?;
        }
        drop(held);
        if had_task {
            self.emit(&id, &id, Event::ContainerStoppedEvent).await;
        }
        Ok(())
    }

    /// RemovePodSandbox: stops it if needed, then removes its containers, snapshot, record and
    /// files. A sandbox that is not there is fine.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<()> {
        let s = match self.sandbox(id) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let id = s.id().to_string();
        self.forget_cpu_sample(&id);
        self.stop_pod_sandbox(&id).await?;
        for c in self.containers()?.iter() {
            if c.meta.sandbox_id == id {
                self.remove_container(c.id()).await?;
            }
        }
        let lock = self.lock_of(&id);
        let _held = lock.lock().await;
        match self.snapshotter.remove(NAMESPACE, &id) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::from(e).context(format!("remove sandbox {id} snapshot"))),
        }
        // Made while the record is there: kubelet matches the event to the pod by its status.
        let deleted = self
            .container_event(&id, &id, Event::ContainerDeletedEvent)
            .await;
        match self.db.container_delete(NAMESPACE, &id) {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.send_container_event(deleted);
        let _ = std::fs::remove_dir_all(self.pod_dir(&id));
        drop(_held);
        self.forget_lock(&id);
        self.hooks.collect_garbage();
        Ok(())
    }

    /// Whether the sandbox is ready, and its pause pid.
    pub(crate) async fn sandbox_state(&self, s: &Sandbox) -> (pb::PodSandboxState, u32) {
        if s.meta.stopped {
            return (pb::PodSandboxState::SandboxNotready, 0);
        }
        match self.task_state(s.id()).await {
            Some(t) if t.status == TaskStatus::Running => {
                (pb::PodSandboxState::SandboxReady, t.pid)
            }
            _ => (pb::PodSandboxState::SandboxNotready, 0),
        }
    }

    pub async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<pb::PodSandboxStatusResponse> {
        let s = self.sandbox(id)?;
        let (state, pid) = self.sandbox_state(&s).await;
        let network =
            (!s.meta.stopped && !s.meta.ip.is_empty()).then(|| pb::PodSandboxNetworkStatus {
                ip: s.meta.ip.clone(),
                additional_ips: s
                    .meta
                    .additional_ips
                    .iter()
                    .map(|ip| pb::PodIp { ip: ip.clone() })
                    .collect(),
            });
        let mut info = HashMap::new();
        if verbose {
            let v = serde_json::json!({
                "pid": pid,
                "netNamespacePath": s.meta.netns,
                "image": s.record.image,
                "snapshotKey": s.record.snapshot_key,
                "snapshotter": s.record.snapshotter,
                "runtimeHandler": s.meta.runtime_handler,
                "runtimeType": store::RUNTIME,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(pb::PodSandboxStatusResponse {
            status: Some(pb::PodSandboxStatus {
                id: s.id().to_string(),
                metadata: Some(s.metadata()),
                state: state as i32,
                created_at: s.meta.created_at,
                network,
                linux: Some(pb::LinuxPodSandboxStatus {
                    namespaces: Some(pb::Namespace {
                        options: Some(store::namespace_options(s.config.linux.as_ref())),
                    }),
                }),
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.meta.runtime_handler.clone(),
            }),
            info,
            ..Default::default()
        })
    }

    pub async fn list_pod_sandbox(
        &self,
        filter: Option<pb::PodSandboxFilter>,
    ) -> Result<Vec<pb::PodSandbox>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for s in self.sandboxes()?.iter() {
            if !s.selected(&f.id, &f.label_selector) {
                continue;
            }
            let (state, _) = self.sandbox_state(s).await;
            if f.state.as_ref().is_some_and(|w| w.state != state as i32) {
                continue;
            }
            out.push(pb::PodSandbox {
                id: s.id().to_string(),
                metadata: Some(s.metadata()),
                state: state as i32,
                created_at: s.meta.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.meta.runtime_handler.clone(),
            });
        }
        Ok(out)
    }

    /// After the pause task exited: its task is deleted (the sandbox reads NOTREADY).
    pub(crate) async fn finish_sandbox(&self, id: &str) {
        let lock = self.lock_of(id);
        let held = lock.lock().await;
        let Some(t) = self.task_state(id).await else {
            return;
        };
        if t.status != TaskStatus::Stopped {
            return;
        }
        if let Err(e) = self.delete_task(id).await {
            tracing::warn!(id, error = %e, "cri: delete exited sandbox task");
        }
        drop(held);
        self.emit(id, id, Event::ContainerStoppedEvent).await;
    }
}
