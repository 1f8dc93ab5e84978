//! wharf-cri: the Kubernetes CRI `runtime.v1` service wharfd serves next to containerd's API
//! (RuntimeService and ImageService, [`Cri::services`]).
//!
//! It owns CRI's view of the `k8s.io` namespace: images recorded as containerd's CRI records
//! them (so `ctr -n k8s.io` sees the same), pulls with CRI's credentials unpacked into the
//! snapshotter, the built-in sandbox (pause) image, the `[cri]` configuration, pod sandboxes
//! (a pause task in a pinned network namespace joined through CNI) and their containers, each
//! a container record in `k8s.io` labelled as containerd's CRI labels them, with CRI's own
//! metadata in a record extension so a restarted wharfd still knows them; their container
//! events (GetContainerEvents) and stats, pods' too. Exec, Attach and PortForward answer URLs on the streaming server ([`streaming`]) that wharfd starts with
//! [`Cri::start_streaming`].
//!
//! It must not know wharfd's daemon: it gets the stores it works on, the shim manager and a
//! [`Hooks`] for what the daemon does around image changes (events, garbage collection) and the
//! task events it forwards, through [`Options`]. It does not know containerd's API messages
//! either. One file per gRPC service (thin adapters); statuses are made in `error.rs` only.

mod apparmor;
mod attach;
mod auth;
mod cgroup;
mod cni;
pub mod config;
mod container;
mod container_events;
mod error;
mod events;
mod exec;
mod exec_stream;
mod image_service;
pub mod images;
mod network;
pub mod pause;
mod pod_stats;
mod port_forward;
mod propagation;
mod runtime_service;
mod sandbox;
mod shm;
mod spec;
mod stats;
mod status;
mod store;
mod stream_requests;
pub mod streaming;
mod task;
mod volumes;

/// Pure checks of client input, exported for the fuzz targets (`fuzz/`) only.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::cgroup::HostLimits;
    pub use crate::container::log_path;
    pub use crate::spec::linux_resources;
}

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use wharf_api::cri::image_service_server::ImageServiceServer;
use wharf_api::cri::runtime_service_server::RuntimeServiceServer;
use wharf_core::metadata::{Db, Image};
use wharf_core::snapshots::SnapshotStore;

pub use config::Config;
pub use error::{Error, Result};
pub use events::TaskEvent;
pub use image_service::ImageService;
pub use runtime_service::RuntimeService;

/// The containerd namespace CRI's images, pods and containers live in.
pub const NAMESPACE: &str = "k8s.io";

/// The runtime name Version reports.
pub const RUNTIME_NAME: &str = "wharf";

/// What the daemon does when the CRI changes image records (all default to nothing).
pub trait Hooks: Send + Sync {
    fn image_created(&self, _ns: &str, _image: &Image) {}
    fn image_updated(&self, _ns: &str, _image: &Image) {}
    fn image_deleted(&self, _ns: &str, _name: &str) {}
    /// Images were removed: what they held may be collected.
    fn collect_garbage(&self) {}
    /// The exits and OOM kills of tasks in `k8s.io` from now on (what shims publish), or None
    /// when the daemon forwards none.
    fn task_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<TaskEvent>> {
        None
    }
}

/// No hooks (tests, tools).
pub struct NoHooks;
impl Hooks for NoHooks {}

/// What the CRI service works on.
pub struct Options {
    pub db: Db,
    /// Where CRI unpacks images (containerd's CRI default: overlayfs).
    pub snapshotter: SnapshotStore,
    /// Scratch space for layer application (mount points).
    pub tmp: PathBuf,
    /// containerd's `certs.d` layout for registry hosts.
    pub registry_config_path: PathBuf,
    pub config: Config,
    pub hooks: Arc<dyn Hooks>,
    /// The shim manager tasks of pods and containers run through.
    pub runtime: Arc<wharf_runtime::Manager>,
    /// The daemon's root (persistent: CNI cache) and state (`/run/wharf`: netns, pod files).
    pub root: PathBuf,
    pub state: PathBuf,
}

/// The CRI service's state, shared by its gRPC services.
pub struct Cri {
    db: Db,
    snapshotter: SnapshotStore,
    tmp: PathBuf,
    registry_config_path: PathBuf,
    config: Config,
    hooks: Arc<dyn Hooks>,
    /// Bumped whenever images change (see [`Cri::image_fs_usage`]).
    generation: AtomicU64,
    fs_usage: Mutex<Option<images::FsUsageCache>>,
    sandbox_image_lock: tokio::sync::Mutex<()>,
    started: tokio::sync::OnceCell<()>,
    runtime: Arc<wharf_runtime::Manager>,
    root: PathBuf,
    state: PathBuf,
    /// Serialises name reservation + record creation (sandbox and container names are unique).
    names: tokio::sync::Mutex<()>,
    /// The last CPU sample (time, usage in ns) of each container and sandbox, for usage_nano_cores.
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
    /// Sandbox and container records as last decoded.
    records_cache: store::RecordsCache,
    /// One lock per sandbox or container for state transitions (exit handling, stop, remove).
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Containers the kernel OOM-killed (until their exit is recorded).
    oom: Mutex<std::collections::HashSet<String>>,
    /// Tasks whose exit the daemon forwarded and that are not finished yet.
    exits_seen: Mutex<std::collections::HashSet<String>>,
    /// The daemon forwards task exits: records alone tell a listed container's state.
    exits_forwarded: std::sync::atomic::AtomicBool,
    /// The pod CIDR kubelet gave in UpdateRuntimeConfig.
    pod_cidr: Mutex<String>,
    background: std::sync::Once,
    /// GetContainerEvents' subscribers.
    container_events: container_events::Sender,
    /// The streaming server, once started.
    streaming: OnceLock<Arc<streaming::Server>>,
    /// The stdin FIFOs (write ends) of containers whose config asks for stdin.
    stdins: Mutex<HashMap<String, attach::Stdin>>,
    /// The host's AppArmor, for containers' profiles.
    apparmor: Arc<apparmor::AppArmor>,
}

impl Cri {
    pub fn new(o: Options) -> Arc<Cri> {
        let apparmor = Arc::new(apparmor::AppArmor::host(
            &o.state,
            o.config.disable_apparmor,
        ));
        Arc::new(Cri {
            apparmor,
            db: o.db,
            snapshotter: o.snapshotter,
            tmp: o.tmp,
            registry_config_path: o.registry_config_path,
            config: o.config,
            hooks: o.hooks,
            generation: AtomicU64::new(0),
            fs_usage: Mutex::new(None),
            sandbox_image_lock: tokio::sync::Mutex::new(()),
            started: tokio::sync::OnceCell::new(),
            runtime: o.runtime,
            root: o.root,
            state: o.state,
            names: tokio::sync::Mutex::new(()),
            records_cache: Default::default(),
            cpu_samples: Mutex::new(HashMap::new()),
            locks: Mutex::new(HashMap::new()),
            oom: Mutex::new(Default::default()),
            exits_seen: Mutex::new(Default::default()),
            exits_forwarded: std::sync::atomic::AtomicBool::new(false),
            pod_cidr: Mutex::new(String::new()),
            background: std::sync::Once::new(),
            container_events: container_events::channel(),
            streaming: OnceLock::new(),
            stdins: Mutex::new(HashMap::new()),
        })
    }

    /// Starts what runs for the daemon's lifetime: the handler of task exits and OOM kills,
    /// after reconciling records with the tasks the shim manager restored. Call once the
    /// runtime manager has restored its shims.
    pub fn run_background(self: &Arc<Self>) {
        self.background.call_once(|| {
            let events = self.hooks.task_events();
            self.exits_forwarded
                .store(events.is_some(), std::sync::atomic::Ordering::Release);
            let cri = self.clone();
            tokio::spawn(async move {
                cri.reconcile().await;
                if let Some(rx) = events {
                    cri.handle_events(rx).await;
                }
            });
        });
    }

    /// Starts the streaming server on `[cri] stream_server_address:stream_server_port`; its
    /// address. Exec, Attach and PortForward answer Unavailable until it runs.
    pub async fn start_streaming(self: &Arc<Self>) -> Result<std::net::SocketAddr> {
        if let Some(s) = self.streaming.get() {
            return Ok(s.addr());
        }
        let server = streaming::start(
            self.clone(),
            &self.config.stream_server_address,
            &self.config.stream_server_port,
        )
        .await?;
        let addr = server.addr();
        let _ = self.streaming.set(server);
        Ok(addr)
    }

    /// A URL on the streaming server for a validated request.
    pub(crate) fn stream_url(&self, r: streaming::Request) -> Result<String> {
        self.streaming
            .get()
            .ok_or_else(|| Error::Unavailable("the streaming server is not running".into()))?
            .url(r)
    }

    /// The lock of one sandbox or container.
    fn lock_of(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(id.to_string()).or_default().clone()
    }

    fn forget_lock(&self, id: &str) {
        let mut m = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(id);
    }

    /// Records the pod CIDR kubelet gives in UpdateRuntimeConfig (the CNI config decides
    /// addresses; it is kept for status).
    pub fn set_pod_cidr(&self, cidr: String) {
        if let Ok(mut c) = self.pod_cidr.lock() {
            if *c != cidr {
                tracing::info!(pod_cidr = %cidr, "cri: runtime config updated");
            }
            *c = cidr;
        }
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The name of the snapshotter images are unpacked into.
    pub fn snapshotter_name(&self) -> &str {
        self.snapshotter.name()
    }

    /// The two gRPC services, to add to the daemon's router.
    ///
    /// ```ignore
    /// let (runtime, images) = cri.services();
    /// Server::builder().add_service(runtime).add_service(images);
    /// ```
    pub fn services(
        self: &Arc<Self>,
    ) -> (
        RuntimeServiceServer<RuntimeService>,
        ImageServiceServer<ImageService>,
    ) {
        (
            RuntimeServiceServer::new(RuntimeService(self.clone())),
            ImageServiceServer::new(ImageService(self.clone())),
        )
    }

    /// Start-up work, done once, by the first CRI call (a daemon nobody uses through CRI keeps
    /// no `k8s.io` namespace): imports the built-in sandbox image when it is the configured
    /// one and is missing (a registry image is only pulled when a pod needs it). Failures are
    /// logged: the first RunPodSandbox tries again.
    pub async fn start(&self) {
        self.started
            .get_or_init(|| async {
                // Off the async workers and in the background: it may remove much data.
                let (db, root) = (self.db.clone(), self.root.clone());
                tokio::task::spawn_blocking(move || remove_orphan_volumes(&db, &root));
                let builtin = images::normalize(&self.config.sandbox_image)
                    .is_ok_and(|n| images::normalize(&pause::builtin_name()).is_ok_and(|b| b == n));
                if !builtin {
                    return;
                }
                if let Err(e) = self.ensure_sandbox_image().await {
                    tracing::warn!(error = %e, "cri: import the built-in sandbox image");
                }
            })
            .await;
    }
}

/// Removes the volume directories of containers whose records are gone (a crash between the
/// two in RemoveContainer, or a record deleted through the containers API).
fn remove_orphan_volumes(db: &Db, root: &std::path::Path) {
    let dirs = volumes::container_dirs(root);
    if dirs.is_empty() {
        return;
    }
    let containers = match db.container_list(NAMESPACE, &Default::default()) {
        Ok(c) => c,
        Err(e) if e.is_not_found() => Vec::new(),
        Err(e) => {
            tracing::warn!(error = %e, "cri: list containers for orphan volumes");
            return;
        }
    };
    for id in dirs {
        if containers.iter().any(|c| c.id == id) {
            continue;
        }
        match volumes::remove(root, &id) {
            Ok(()) => tracing::info!(id, "cri: removed the volumes of a container that is gone"),
            Err(e) => tracing::warn!(id, error = %e, "cri: remove orphan volumes"),
        }
    }
}

/// Nanoseconds since the epoch, as CRI timestamps are.
pub(crate) fn nanos(t: SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn now_nanos() -> i64 {
    nanos(SystemTime::now())
}
