//! The daemon's shared state and the gRPC router over it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use tonic::transport::server::Router;
use tonic::transport::Server;
use tower::layer::util::{Identity, Stack};
use wharf_core::content::Store;
use wharf_core::events::Exchange;
use wharf_core::metadata::Db;
use wharf_core::snapshots::{Backend, Native, Overlay, SnapshotStore};

use crate::config::Config;
use crate::events::EventsService;
use crate::gc::GcScheduler;
use crate::services::{
    containers::ContainersService, content::ContentService, diff::DiffService,
    images::ImagesService, introspection::IntrospectionService, leases::LeasesService,
    namespaces::NamespacesService, snapshots::SnapshotsService, tasks::TasksService,
    version::VersionService,
};

/// Everything the services share.
pub struct Daemon {
    pub db: Db,
    pub exchange: Exchange,
    pub gc: GcScheduler,
    /// By name: `overlayfs` (when the kernel has it) and `native`.
    pub snapshotters: BTreeMap<String, SnapshotStore>,
    /// This daemon's identity, persisted in `<root>/uuid`.
    pub uuid: String,
    /// Where the diff service mounts what it cannot apply to directly.
    pub tmp_mounts: std::path::PathBuf,
    /// Tasks: one shim each.
    pub runtime: Arc<wharf_runtime::Manager>,
    /// Registry host configuration (`<dir>/<host>/hosts.toml`).
    pub registry_config_path: std::path::PathBuf,
    /// Networks of containers labelled by the CLI.
    pub network: crate::network::Networking,
    /// The Kubernetes CRI service (namespace `k8s.io`).
    pub cri: Arc<wharf_cri::Cri>,
    /// Streams clients opened with the Streaming service, for the Transfer service.
    pub streams: crate::streams::StreamManager,
    /// The Prometheus endpoint's figures; None (and no cost) unless `[metrics] address` is set.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The configured state directory (for consistency checks).
    pub state: std::path::PathBuf,
}

impl Daemon {
    /// Opens the stores under the configured root. Must run inside the tokio runtime (GC task).
    pub fn open(config: Config, ttrpc_address: &Path) -> Result<Arc<Daemon>> {
        let root = &config.root;
        create_dir(root, 0o711)?;
        create_dir(&config.state, 0o711)?;
        let content = Store::open(root.join("io.containerd.content.v1.content"))?;
        let db = Db::open(
            &root.join("io.containerd.metadata.v1.redb").join("meta.db"),
            content,
        )?;
        let mut snapshotters = BTreeMap::new();
        let mut backends: Vec<(&str, Arc<dyn Backend>)> = vec![("native", Arc::new(Native))];
        if Overlay::supported() {
            backends.push(("overlayfs", Arc::new(Overlay)));
        } else {
            tracing::warn!("overlayfs is not available: only the native snapshotter is served");
        }
        for (name, backend) in backends {
            let dir = root.join(format!("io.containerd.snapshotter.v1.{name}"));
            // Directories orphaned by a crash are removed by the start-up check.
            let s = SnapshotStore::open(name, dir, db.clone(), backend)?;
            snapshotters.insert(name.to_string(), s);
        }
        let gc = GcScheduler::start(db.clone(), snapshotters.values().cloned().collect());
        let uuid = load_uuid(&root.join("uuid"))?;
        // Mounts a crash left here are unmounted by the start-up check; their directories are
        // removed after it (`cleanup_tmp_mounts`).
        let tmp_mounts = root.join("tmpmounts");
        let runtime = Arc::new(
            wharf_runtime::Manager::new(&config.state, root, &config.grpc.address, ttrpc_address)
                .with_shims(config.runtime.shims.clone()),
        );
        let exchange = Exchange::new();
        let cri = crate::cri::build(
            crate::cri::Parts {
                db: &db,
                snapshotters: &snapshotters,
                tmp: &tmp_mounts,
                registry_config_path: &config.registry.config_path,
                exchange: &exchange,
                gc: &gc,
                runtime: &runtime,
                root,
                state: &config.state,
            },
            config.cri.clone(),
        )?;
        Ok(Arc::new(Daemon {
            state: config.state.clone(),
            metrics: crate::metrics::Metrics::new(&config.metrics),
            cri,
            registry_config_path: config.registry.config_path.clone(),
            network: crate::network::Networking::new(root, &config.state, &config.network),
            runtime,
            streams: crate::streams::StreamManager::default(),
            tmp_mounts,
            db,
            exchange,
            gc,
            snapshotters,
            uuid,
        }))
    }
}

/// Removes the empty directories of apply mounts a crash left (at start, after the start-up
/// check unmounted them).
pub fn cleanup_tmp_mounts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let _ = std::fs::remove_dir(e.path());
    }
}

fn create_dir(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(p)
        .with_context(|| format!("create {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

/// Reads the daemon's uuid, creating it on first start (written atomically).
fn load_uuid(path: &Path) -> Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim();
        if !s.is_empty() {
            return Ok(s.to_string());
        }
    }
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .context("read /dev/urandom")?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = wharf_hex(&b);
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    );
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &uuid).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename {}", path.display()))?;
    Ok(uuid)
}

fn wharf_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The gRPC router with every service wharfd serves.
pub fn router(d: Arc<Daemon>) -> Router<Stack<crate::metrics::grpc::Layer, Identity>> {
    use wharf_api::*;
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let (cri_runtime, cri_images) = d.cri.services();
    drop(health_reporter); // "" is SERVING by default.
    Server::builder()
        // HTTP/2's default 64 KiB windows make a 1 MiB Content/Write chunk wait for a dozen
        // window updates; larger windows let a chunk arrive in one go.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .trace_fn(|req| tracing::trace_span!("grpc", method = %req.uri().path()))
        // Request counts and latencies, when metrics are on (a pass-through otherwise).
        .layer(crate::metrics::grpc::Layer::new(
            d.metrics.as_ref().map(|m| m.grpc.clone()),
        ))
        .add_service(health)
        .add_service(version::version_server::VersionServer::new(VersionService))
        .add_service(
            introspection::introspection_server::IntrospectionServer::new(IntrospectionService(
                d.clone(),
            )),
        )
        .add_service(namespaces::namespaces_server::NamespacesServer::new(
            NamespacesService(d.clone()),
        ))
        .add_service(
            content::content_server::ContentServer::new(ContentService(d.clone()))
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .add_service(images::images_server::ImagesServer::new(ImagesService(
            d.clone(),
        )))
        .add_service(leases::leases_server::LeasesServer::new(LeasesService(
            d.clone(),
        )))
        .add_service(events_service::events_server::EventsServer::new(
            EventsService(d.clone()),
        ))
        .add_service(snapshots::snapshots_server::SnapshotsServer::new(
            SnapshotsService(d.clone()),
        ))
        .add_service(diff::diff_server::DiffServer::new(DiffService(d.clone())))
        .add_service(containers::containers_server::ContainersServer::new(
            ContainersService(d.clone()),
        ))
        .add_service(tasks::tasks_server::TasksServer::new(TasksService(
            d.clone(),
        )))
        .add_service(transfer::transfer_server::TransferServer::new(
            crate::services::transfer::TransferService(d.clone()),
        ))
        .add_service(streaming::streaming_server::StreamingServer::new(
            crate::services::streaming::StreamingService(d.clone()),
        ))
        // wharf's own: `wharf system check`.
        .add_service(check::check_server::CheckServer::new(
            crate::services::check::CheckService(d),
        ))
        // Kubernetes CRI runtime.v1 on the same socket, as containerd serves it.
        .add_service(cri_runtime)
        .add_service(cri_images)
}
