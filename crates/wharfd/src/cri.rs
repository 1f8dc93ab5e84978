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

    fn task_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<wharf_cri::TaskEvent>> {
        use prost::Message;
        use wharf_api::events::{TaskExit, TaskOom};
        let filters = [
            format!(
                "namespace==\"{}\",topic==\"/tasks/exit\"",
                wharf_cri::NAMESPACE
            ),
            format!(
                "namespace==\"{}\",topic==\"/tasks/oom\"",
                wharf_cri::NAMESPACE
            ),
        ];
        let mut sub = match self.exchange.subscribe(&filters) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cri: cannot subscribe to task events");
                return None;
            }
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(e) = sub.next().await {
                let ev = match e.topic.as_str() {
                    "/tasks/exit" => TaskExit::decode(e.value.as_slice()).ok().map(|x| {
                        wharf_cri::TaskEvent::Exit {
                            container_id: x.container_id,
                            id: x.id,
                            exit_status: x.exit_status,
                            exited_at: x
                                .exited_at
                                .map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos)),
                        }
                    }),
                    _ => TaskOom::decode(e.value.as_slice()).ok().map(|x| {
                        wharf_cri::TaskEvent::Oom {
                            container_id: x.container_id,
                        }
                    }),
                };
                if let Some(ev) = ev {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
            }
        });
        Some(rx)
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
    pub runtime: &'a Arc<wharf_runtime::Manager>,
    pub root: &'a std::path::Path,
    pub state: &'a std::path::Path,
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
        runtime: p.runtime.clone(),
        root: p.root.to_path_buf(),
        state: p.state.to_path_buf(),
    }))
}
