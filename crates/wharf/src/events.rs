//! Readable bodies for the events `wharf events` prints.

use containerd_client::events as ev;
use containerd_client::services::v1 as pb;
use prost::Message;

fn show<M: Message + Default + std::fmt::Debug>(value: &[u8]) -> serde_json::Value {
    match M::decode(value) {
        Ok(m) => serde_json::json!(format!("{m:?}")),
        Err(_) => serde_json::Value::Null,
    }
}

/// Decodes the well-known event types; others are shown by type only.
pub fn decode(type_url: &str, value: &[u8]) -> serde_json::Value {
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    match name {
        "containerd.events.TaskCreate" => show::<ev::TaskCreate>(value),
        "containerd.events.TaskStart" => show::<ev::TaskStart>(value),
        "containerd.events.TaskExit" => show::<ev::TaskExit>(value),
        "containerd.events.TaskDelete" => show::<ev::TaskDelete>(value),
        "containerd.events.TaskOOM" => show::<ev::TaskOom>(value),
        "containerd.events.TaskExecAdded" => show::<ev::TaskExecAdded>(value),
        "containerd.events.TaskExecStarted" => show::<ev::TaskExecStarted>(value),
        "containerd.events.TaskPaused" => show::<ev::TaskPaused>(value),
        "containerd.events.TaskResumed" => show::<ev::TaskResumed>(value),
        "containerd.events.ContainerCreate" => show::<ev::ContainerCreate>(value),
        "containerd.events.ContainerUpdate" => show::<ev::ContainerUpdate>(value),
        "containerd.events.ContainerDelete" => show::<ev::ContainerDelete>(value),
        "containerd.services.images.v1.ImageCreate" => show::<pb::ImageCreate>(value),
        "containerd.services.images.v1.ImageUpdate" => show::<pb::ImageUpdate>(value),
        "containerd.services.images.v1.ImageDelete" => show::<pb::ImageDelete>(value),
        "containerd.events.NamespaceCreate" => show::<ev::NamespaceCreate>(value),
        "containerd.events.NamespaceDelete" => show::<ev::NamespaceDelete>(value),
        "containerd.events.SnapshotPrepare" => show::<ev::SnapshotPrepare>(value),
        "containerd.events.SnapshotCommit" => show::<ev::SnapshotCommit>(value),
        "containerd.events.SnapshotRemove" => show::<ev::SnapshotRemove>(value),
        _ => serde_json::json!(name),
    }
}
