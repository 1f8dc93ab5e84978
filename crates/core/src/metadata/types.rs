//! Records kept in metadata, with containerd's validation rules for labels.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::filters::{label_field, Adaptor};
use crate::{Error, Result};

pub type Labels = BTreeMap<String, String>;

/// GC label prefixes (containerd's).
pub const LABEL_GC_ROOT: &str = "containerd.io/gc.root";
pub const LABEL_GC_REF_CONTENT: &str = "containerd.io/gc.ref.content";
pub const LABEL_GC_REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";
pub const LABEL_GC_FLAT: &str = "containerd.io/gc.flat";

/// containerd's limit on a label's key + value.
const MAX_LABEL_SIZE: usize = 4096;

/// Validates labels as containerd does: non-empty keys, key+value at most 4096 bytes.
pub fn validate_labels(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::InvalidArgument("label key must not be empty".into()));
        }
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(Error::InvalidArgument(format!(
                "label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {}",
                k.chars().take(10).collect::<String>()
            )));
        }
    }
    Ok(())
}

/// Applies an update to `labels` the containerd way: with no field paths, the new labels replace
/// the old; `labels` replaces all; `labels.<key>` sets or (empty value) removes one key.
pub fn update_labels(current: &mut Labels, new: &Labels, fieldpaths: &[String]) -> Result<bool> {
    if fieldpaths.is_empty() {
        *current = new.clone();
        return Ok(true);
    }
    let mut touched = false;
    for p in fieldpaths {
        if p == "labels" {
            *current = new.clone();
            touched = true;
        } else if let Some(key) = p.strip_prefix("labels.") {
            match new.get(key) {
                Some(v) if !v.is_empty() => {
                    current.insert(key.to_string(), v.clone());
                }
                _ => {
                    current.remove(key);
                }
            }
            touched = true;
        }
    }
    validate_labels(current)?;
    Ok(touched)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
}

/// An OCI descriptor as images record it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub annotations: Labels,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    pub target: Descriptor,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Adaptor for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "name" => Some(self.name.clone()),
            "labels" => label_field(&self.labels, path),
            "target" => match path.get(1)?.as_str() {
                "digest" => Some(self.target.digest.clone()),
                "mediatype" | "media_type" => Some(self.target.media_type.clone()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A blob as one namespace sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContentInfo {
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Adaptor for ContentInfo {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "digest" => Some(self.digest.clone()),
            "size" => Some(self.size.to_string()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: SystemTime,
}

impl Adaptor for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "id" => Some(self.id.clone()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

/// A resource held by a lease: `kind` is `content`, `ingests` or `snapshots/<snapshotter>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseResource {
    pub id: String,
    pub kind: String,
}

/// The fields of a container record GC needs (the containers service owns the full record).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct ContainerGcView {
    #[serde(default)]
    pub snapshotter: String,
    #[serde(default)]
    pub snapshot_key: String,
    #[serde(default)]
    pub labels: Labels,
}

/// The fields of a snapshot record GC needs (the snapshots service owns the full record).
#[derive(Debug, Clone, Deserialize, Default)]
pub struct SnapshotGcView {
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub labels: Labels,
}
