//! wharf-cri: the Kubernetes CRI `runtime.v1` service wharfd serves next to containerd's API
//! (RuntimeService and ImageService, [`Cri::services`]).
//!
//! It owns CRI's view of the `k8s.io` namespace: images recorded as containerd's CRI records
//! them (so `ctr -n k8s.io` sees the same), pulls with CRI's credentials unpacked into the
//! snapshotter, the built-in sandbox (pause) image, and the `[cri]` configuration. Pod
//! sandboxes, containers and streaming are not served yet: they answer Unimplemented.
//!
//! It must not know wharfd's daemon: it gets the stores it works on and a [`Hooks`] for what the
//! daemon does around image changes (events, garbage collection) through [`Options`]. It does
//! not know containerd's API messages either. One file per gRPC service (thin adapters);
//! statuses are made in `error.rs` only.

mod auth;
mod cni;
pub mod config;
mod error;
mod image_service;
pub mod images;
pub mod pause;
mod runtime_service;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use wharf_api::cri::image_service_server::ImageServiceServer;
use wharf_api::cri::runtime_service_server::RuntimeServiceServer;
use wharf_core::metadata::{Db, Image};
use wharf_core::snapshots::SnapshotStore;

pub use config::Config;
pub use error::{Error, Result};
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
}

impl Cri {
    pub fn new(o: Options) -> Arc<Cri> {
        Arc::new(Cri {
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
        })
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
