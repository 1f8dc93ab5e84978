//! Wiring of the CRI service (crate wharf-cri) into the daemon: its stores, and the hooks that
//! publish containerd's image events and trigger GC when CRI changes images.

use std::sync::Arc;

use wharf_api::image_events as ev;
use wharf_core::events::Exchange;
use wharf_core::metadata::Image;

use crate::convert::labels_pb;
use crate::events::publish;
use crate::gc::GcScheduler;

struct DaemonHooks {
    exchange: Exchange,
    gc: GcScheduler,
}

impl wharf_cri::Hooks for DaemonHooks {
    fn image_created(&self, ns: &str, image: &Image) {
        let e = ev::ImageCreate {
            name: image.name.clone(),
            labels: labels_pb(&image.labels),
        };
        publish(&self.exchange, ns, "/images/create", &e);
    }

    fn image_updated(&self, ns: &str, image: &Image) {
        let e = ev::ImageUpdate {
            name: image.name.clone(),
            labels: labels_pb(&image.labels),
        };
        publish(&self.exchange, ns, "/images/update", &e);
    }

    fn image_deleted(&self, ns: &str, name: &str) {
        let e = ev::ImageDelete {
            name: name.to_string(),
        };
        publish(&self.exchange, ns, "/images/delete", &e);
    }

    fn collect_garbage(&self) {
        self.gc.trigger();
    }
}

/// The daemon's parts the CRI service works on.
pub struct Parts<'a> {
    pub db: &'a wharf_core::metadata::Db,
    pub snapshotters: &'a std::collections::BTreeMap<String, wharf_core::snapshots::SnapshotStore>,
    pub tmp: &'a std::path::Path,
    pub registry_config_path: &'a std::path::Path,
    pub exchange: &'a Exchange,
    pub gc: &'a GcScheduler,
}

/// Builds the CRI service over the daemon's stores: images are unpacked into overlayfs (the
/// native snapshotter where the kernel has no overlayfs).
pub fn build(p: Parts<'_>, config: wharf_cri::Config) -> anyhow::Result<Arc<wharf_cri::Cri>> {
    let snapshotter = p
        .snapshotters
        .get("overlayfs")
        .or_else(|| p.snapshotters.get("native"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no snapshotter for CRI"))?;
    Ok(wharf_cri::Cri::new(wharf_cri::Options {
        db: p.db.clone(),
        snapshotter,
        tmp: p.tmp.to_path_buf(),
        registry_config_path: p.registry_config_path.to_path_buf(),
        config,
        hooks: Arc::new(DaemonHooks {
            exchange: p.exchange.clone(),
            gc: p.gc.clone(),
        }),
    }))
}
