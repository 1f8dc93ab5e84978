//! Metadata in redb: namespaces, images, per-namespace content records, leases and their resources,
//! and the records later layers keep (containers, snapshots). Every change is one redb write
//! transaction, so a crash leaves either the whole change or none of it.
//!
//! As in containerd, this layer wraps the raw content [`Store`](crate::content::Store): blobs on disk
//! are shared, but each namespace sees only the content committed in it, with its own labels; what no
//! namespace references any more is removed by [`Db::gc`].

mod containers;
mod content;
mod gc;
mod images;
mod leases;
mod namespaces;
mod types;

use std::path::Path;
use std::sync::{Arc, RwLock};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use containers::{Container, Payload};
pub use content::ContentWriter;
pub use gc::GcStats;
pub use leases::add_resource_tx as add_lease_resource;
pub use namespaces::ensure as ensure_namespace;
pub use types::*;

use crate::{content::Store, Error, Result};

pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");
pub(crate) const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");
pub(crate) const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("content");
pub(crate) const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
/// (namespace, lease, resource type, resource id).
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");
/// (namespace, container id) → container record (JSON; written by the containers service).
pub const CONTAINERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("containers");
/// (namespace, snapshotter, key) → snapshot record (JSON; written by the snapshots service).
pub const SNAPSHOTS: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("snapshots");

/// The metadata database plus the content store it wraps. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    content: Store,
    /// Held shared by content commits and exclusively by GC's sweep of blobs on disk, so a blob
    /// committed concurrently with a GC is never deleted between its rename and its record.
    gc_lock: RwLock<()>,
    /// Bumped after every committed change to container records, so that readers can cache
    /// what they decoded from them (CRI lists from memory, as containerd's CRI does).
    containers_generation: std::sync::atomic::AtomicU64,
}

impl Db {
    /// Opens (creating) the metadata database at `path` over the content store `content`.
    pub fn open(path: &Path, content: Store) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io_path("create", dir, e))?;
        }
        let db = Database::create(path)
            .map_err(|e| Error::Internal(format!("open metadata {}: {e}", path.display())))?;
        // Create every table up front so read transactions never meet a missing table.
        let tx = db.begin_write()?;
        tx.open_table(NAMESPACES)?;
        tx.open_table(IMAGES)?;
        tx.open_table(CONTENT)?;
        tx.open_table(LEASES)?;
        tx.open_table(LEASE_RESOURCES)?;
        tx.open_table(CONTAINERS)?;
        tx.open_table(SNAPSHOTS)?;
        tx.commit()?;
        Ok(Db {
            inner: Arc::new(Inner {
                db,
                content,
                gc_lock: RwLock::new(()),
                containers_generation: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The raw content store (shared by all namespaces).
    pub fn content_store(&self) -> &Store {
        &self.inner.content
    }

    /// The underlying database, for the records of other services (containers, snapshots).
    pub fn database(&self) -> &Database {
        &self.inner.db
    }

    /// Changes whenever a container record was created, updated or deleted. Read it before
    /// listing: a list read after seeing generation `g` holds every change up to `g`.
    pub fn containers_generation(&self) -> u64 {
        self.inner
            .containers_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn containers_changed(&self) {
        self.inner
            .containers_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub(crate) fn read(&self) -> Result<redb::ReadTransaction> {
        Ok(self.inner.db.begin_read()?)
    }

    pub(crate) fn write(&self) -> Result<redb::WriteTransaction> {
        Ok(self.inner.db.begin_write()?)
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Internal(format!("encode record: {e}")))
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| Error::Internal(format!("decode record: {e}")))
}

/// Every (id, value) of namespace `ns` in a table keyed by (namespace, id).
pub(crate) fn scan_ns(
    t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for e in t.range((ns, "")..)? {
        let (k, v) = e?;
        let (kns, id) = k.value();
        if kns != ns {
            break;
        }
        out.push((id.to_string(), v.value().to_vec()));
    }
    Ok(out)
}

/// True when a table keyed by (namespace, id) holds anything in `ns`.
pub(crate) fn any_in_ns(
    t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    ns: &str,
) -> Result<bool> {
    match t.range((ns, "")..)?.next() {
        Some(e) => Ok(e?.0.value().0 == ns),
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests;
