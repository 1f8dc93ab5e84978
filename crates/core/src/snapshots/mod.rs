//! Snapshots: the `Snapshotter` API of containerd (prepare, view, commit, mounts, remove, stat,
//! update, walk, usage, cleanup) over two storage backends, overlayfs and native (copy).
//!
//! As in containerd, records are namespaced metadata (redb table `snapshots`, keyed by namespace,
//! snapshotter and key) while storage is global: each snapshot owns a numbered directory
//! `<root>/snapshots/<id>/{fs,work}`. A change writes the directory before the record and removes the
//! record before the directory, so a crash leaves at worst an orphan directory, which
//! [`SnapshotStore::cleanup`] removes.

mod native;
mod overlay;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub use native::Native;
pub use overlay::Overlay;

use crate::error::IoContext;
use crate::filters::{label_field, Adaptor, Filter};
use crate::metadata::{update_labels, validate_labels, Db, Labels, SNAPSHOTS};
use crate::{Error, Result};

/// Last snapshot directory number handed out (global across namespaces).
const SEQUENCE: TableDefinition<&str, u64> = TableDefinition::new("snapshot_sequence");

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

/// A snapshot record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Info {
    pub name: String,
    /// The parent's key (same namespace and snapshotter).
    #[serde(default)]
    pub parent: Option<String>,
    pub kind: Kind,
    #[serde(default)]
    pub labels: Labels,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// The storage directory number.
    pub id: String,
}

impl Adaptor for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "name" => Some(self.name.clone()),
            "parent" => self.parent.clone(),
            "kind" => Some(self.kind.as_str().to_string()),
            "labels" => label_field(&self.labels, path),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// A mount as containerd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Where a backend stores one snapshot and how it is mounted.
pub trait Backend: Send + Sync {
    /// Makes the storage for a new snapshot whose parents' fs dirs are `parents` (nearest first).
    fn create(&self, dir: &Path, parents: &[PathBuf], kind: Kind) -> Result<()>;
    /// The mounts of a snapshot.
    fn mounts(&self, dir: &Path, parents: &[PathBuf], kind: Kind) -> Vec<Mount>;
    /// How a layer is applied straight into a snapshot's own `fs` directory.
    fn apply_mode(&self) -> crate::diff::ApplyMode;
}

/// One snapshotter: its records in metadata plus its backend's directories.
#[derive(Clone)]
pub struct SnapshotStore {
    name: String,
    root: PathBuf,
    db: Db,
    backend: Arc<dyn Backend>,
    /// Held while a snapshot is between its directory and its record, and by cleanup, so cleanup
    /// never takes a directory being created for an orphan. It guards the last directory number
    /// handed out, which starts above both the stored sequence and every directory on disk, so
    /// an id is never reused, not even one a crash left as an orphan; the record's own
    /// transaction stores the sequence, so handing out an id costs no commit.
    create_lock: Arc<std::sync::Mutex<u64>>,
}

fn not_found(key: &str) -> Error {
    Error::NotFound(format!("snapshot {key}"))
}

impl SnapshotStore {
    /// Opens a snapshotter named `name` storing under `root`.
    pub fn open(
        name: &str,
        root: impl Into<PathBuf>,
        db: Db,
        backend: Arc<dyn Backend>,
    ) -> Result<Self> {
        let root = root.into();
        let snaps = root.join("snapshots");
        fs::create_dir_all(&snaps).ctx(|| format!("create {}", snaps.display()))?;
        let tx = db.database().begin_write()?;
        let stored = tx
            .open_table(SEQUENCE)?
            .get(name)?
            .map(|v| v.value())
            .unwrap_or(0);
        tx.commit()?;
        let mut last = stored;
        for e in fs::read_dir(&snaps).ctx(|| format!("read {}", snaps.display()))? {
            let e = e.ctx(|| format!("read {}", snaps.display()))?;
            if let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                last = last.max(n);
            }
        }
        Ok(SnapshotStore {
            name: name.to_string(),
            root,
            db,
            backend,
            create_lock: Arc::new(std::sync::Mutex::new(last)),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the snapshot with storage id `id`.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    fn get(&self, ns: &str, key: &str) -> Result<Info> {
        let tx = self.db.database().begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let v = t
            .get((ns, self.name.as_str(), key))?
            .ok_or_else(|| not_found(key))?;
        decode(v.value())
    }

    /// The fs dirs of `parent` and its ancestors, nearest first.
    fn parent_dirs(&self, ns: &str, parent: Option<&str>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut cur = parent.map(str::to_string);
        while let Some(k) = cur {
            let info = self.get(ns, &k)?;
            out.push(self.dir(&info.id).join("fs"));
            cur = info.parent;
            if out.len() > 500 {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot chain of {k} is too deep"
                )));
            }
        }
        Ok(out)
    }

    /// The `fs` directories of snapshot `key` and its parents, `key`'s own first: what a view
    /// of `key` shows, layer by layer, without making one.
    pub fn chain_dirs(&self, ns: &str, key: &str) -> Result<Vec<PathBuf>> {
        self.parent_dirs(ns, Some(key))
    }

    pub fn stat(&self, ns: &str, key: &str) -> Result<Info> {
        self.get(ns, key)
    }

    /// Updates labels (`labels`, `labels.<k>`); other fields are read-only as in containerd.
    pub fn update(
        &self,
        ns: &str,
        key: &str,
        labels: &Labels,
        fieldpaths: &[String],
    ) -> Result<Info> {
        for p in fieldpaths {
            if p != "labels" && !p.starts_with("labels.") {
                return Err(Error::InvalidArgument(format!(
                    "cannot update {p:?} field on snapshot {key}"
                )));
            }
        }
        let tx = self.db.database().begin_write()?;
        let info = {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let mut info: Info = match t.get((ns, self.name.as_str(), key))? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(key)),
            };
            update_labels(&mut info.labels, labels, fieldpaths)?;
            info.updated_at = SystemTime::now();
            t.insert((ns, self.name.as_str(), key), encode(&info)?.as_slice())?;
            info
        };
        tx.commit()?;
        Ok(info)
    }

    pub fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>> {
        let info = self.get(ns, key)?;
        if info.kind == Kind::Committed {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key} is committed: only active and view snapshots have mounts"
            )));
        }
        let parents = self.parent_dirs(ns, info.parent.as_deref())?;
        Ok(self
            .backend
            .mounts(&self.dir(&info.id), &parents, info.kind))
    }

    /// Creates an active snapshot (writable) on `parent`.
    pub fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, labels, lease, Kind::Active)
    }

    /// Creates a read-only view of `parent`.
    pub fn view(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        lease: Option<&str>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, labels, lease, Kind::View)
    }

    fn create(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        lease: Option<&str>,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        crate::identifiers::validate(ns)?;
        if key.is_empty() {
            return Err(Error::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        validate_labels(&labels)?;
        let parent = parent.filter(|p| !p.is_empty());
        if let Some(p) = parent {
            let pi = self.get(ns, p).map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound(format!("parent snapshot {p}")),
                e => e,
            })?;
            if pi.kind != Kind::Committed {
                return Err(Error::InvalidArgument(format!(
                    "parent {p} is not a committed snapshot"
                )));
            }
        }
        if self.get(ns, key).is_ok() {
            return Err(Error::AlreadyExists(format!("snapshot {key}")));
        }
        let parents = self.parent_dirs(ns, parent)?;
        let mut last_id = self
            .create_lock
            .lock()
            .map_err(|_| Error::internal("snapshot lock poisoned"))?;
        *last_id += 1;
        let n = *last_id;
        let id = n.to_string();
        let dir = self.dir(&id);
        // A new directory, never one already there: ids are unique, and an existing directory
        // would be some other writer's.
        fs::create_dir(&dir).ctx(|| format!("create {}", dir.display()))?;
        // Storage first, then the record: a crash in between leaves an orphan dir for cleanup.
        if let Err(e) = self.backend.create(&dir, &parents, kind) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let now = SystemTime::now();
        let info = Info {
            name: key.to_string(),
            parent: parent.map(str::to_string),
            kind,
            labels,
            created_at: now,
            updated_at: now,
            id,
        };
        let res = (|| {
            let tx = self.db.database().begin_write()?;
            crate::metadata::ensure_namespace(&tx, ns)?;
            {
                let mut t = tx.open_table(SNAPSHOTS)?;
                if t.get((ns, self.name.as_str(), key))?.is_some() {
                    return Err(Error::AlreadyExists(format!("snapshot {key}")));
                }
                t.insert((ns, self.name.as_str(), key), encode(&info)?.as_slice())?;
            }
            {
                let mut seq = tx.open_table(SEQUENCE)?;
                let stored = seq.get(self.name.as_str())?.map(|v| v.value()).unwrap_or(0);
                if n > stored {
                    seq.insert(self.name.as_str(), n)?;
                }
            }
            if let Some(l) = lease {
                crate::metadata::add_lease_resource(
                    &tx,
                    ns,
                    l,
                    &format!("snapshots/{}", self.name),
                    key,
                )?;
            }
            tx.commit()?;
            Ok(())
        })();
        if let Err(e) = res {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(self.backend.mounts(&dir, &parents, kind))
    }

    /// Commits the active snapshot `key` as `name`; the active one is gone afterwards.
    pub fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: Labels,
        lease: Option<&str>,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "snapshot name must not be empty".into(),
            ));
        }
        validate_labels(&labels)?;
        let tx = self.db.database().begin_write()?;
        {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let mut info: Info = match t.get((ns, self.name.as_str(), key))? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(key)),
            };
            if info.kind != Kind::Active {
                return Err(Error::FailedPrecondition(format!(
                    "snapshot {key} is {}: only active snapshots can be committed",
                    info.kind.as_str()
                )));
            }
            if t.get((ns, self.name.as_str(), name))?.is_some() {
                return Err(Error::AlreadyExists(format!("snapshot {name}")));
            }
            t.remove((ns, self.name.as_str(), key))?;
            let now = SystemTime::now();
            info.name = name.to_string();
            info.kind = Kind::Committed;
            info.labels.extend(labels);
            info.updated_at = now;
            t.insert((ns, self.name.as_str(), name), encode(&info)?.as_slice())?;
        }
        if let Some(l) = lease {
            crate::metadata::add_lease_resource(
                &tx,
                ns,
                l,
                &format!("snapshots/{}", self.name),
                name,
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Where a layer can be applied into the snapshot `key` without mounting anything (its own
    /// `fs` directory), and how.
    pub fn apply_target(&self, ns: &str, key: &str) -> Result<(PathBuf, crate::diff::ApplyMode)> {
        let info = self.get(ns, key)?;
        if info.kind != Kind::Active {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {key} is not active"
            )));
        }
        Ok((self.dir(&info.id).join("fs"), self.backend.apply_mode()))
    }

    /// The backend's apply mode for its snapshot directories.
    pub fn apply_mode(&self) -> crate::diff::ApplyMode {
        self.backend.apply_mode()
    }

    /// Removes a snapshot that has no children.
    pub fn remove(&self, ns: &str, key: &str) -> Result<()> {
        let tx = self.db.database().begin_write()?;
        let info = {
            let mut t = tx.open_table(SNAPSHOTS)?;
            let info: Info = match t.get((ns, self.name.as_str(), key))? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(key)),
            };
            for e in t.range((ns, self.name.as_str(), "")..)? {
                let (k, v) = e?;
                let (kns, ksn, _) = k.value();
                if kns != ns || ksn != self.name {
                    break;
                }
                let child: Info = decode(v.value())?;
                if child.parent.as_deref() == Some(key) {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot remove snapshot {key}: snapshot {} depends on it",
                        child.name
                    )));
                }
            }
            t.remove((ns, self.name.as_str(), key))?;
            info
        };
        tx.commit()?;
        self.remove_dir(&info.id);
        Ok(())
    }

    fn remove_dir(&self, id: &str) {
        let dir = self.dir(id);
        if let Err(e) = remove_tree(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "remove snapshot dir (cleanup will retry)");
        }
    }

    /// Snapshots of a namespace matching `filter`.
    pub fn walk(&self, ns: &str, filter: &Filter) -> Result<Vec<Info>> {
        let tx = self.db.database().begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for e in t.range((ns, self.name.as_str(), "")..)? {
            let (k, v) = e?;
            let (kns, ksn, _) = k.value();
            if kns != ns || ksn != self.name {
                break;
            }
            let info: Info = decode(v.value())?;
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Disk usage of a snapshot's own directory (not its parents), counting each inode once.
    pub fn usage(&self, ns: &str, key: &str) -> Result<Usage> {
        let info = self.get(ns, key)?;
        disk_usage(&self.dir(&info.id).join("fs"))
    }

    /// Removes snapshot directories no record references (after GC or a crash).
    pub fn cleanup(&self) -> Result<usize> {
        let _no_creates = self
            .create_lock
            .lock()
            .map_err(|_| Error::internal("snapshot lock poisoned"))?;
        let orphans = self.orphans_locked()?;
        for name in &orphans {
            self.remove_dir(name);
        }
        Ok(orphans.len())
    }

    /// Snapshot directories no record references (names under `<root>/snapshots`).
    pub fn orphans(&self) -> Result<Vec<String>> {
        let _no_creates = self
            .create_lock
            .lock()
            .map_err(|_| Error::internal("snapshot lock poisoned"))?;
        self.orphans_locked()
    }

    /// Removes one directory if it is (still) an orphan; true when it was removed.
    pub fn remove_orphan(&self, name: &str) -> Result<bool> {
        let _no_creates = self
            .create_lock
            .lock()
            .map_err(|_| Error::internal("snapshot lock poisoned"))?;
        if !self.orphans_locked()?.iter().any(|n| n == name) {
            return Ok(false);
        }
        remove_tree(&self.dir(name))?;
        Ok(true)
    }

    /// Records (namespace, key, directory) whose directory is missing from disk.
    pub fn missing_dirs(&self) -> Result<Vec<(String, String, String)>> {
        let _no_creates = self
            .create_lock
            .lock()
            .map_err(|_| Error::internal("snapshot lock poisoned"))?;
        let tx = self.db.database().begin_read()?;
        let t = tx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (k, v) = e?;
            let (ns, sn, key) = k.value();
            if sn != self.name {
                continue;
            }
            let info: Info = decode(v.value())?;
            if !self.dir(&info.id).join("fs").is_dir() {
                out.push((ns.to_string(), key.to_string(), info.id));
            }
        }
        Ok(out)
    }

    /// Orphan directory names; the caller holds `create_lock`.
    fn orphans_locked(&self) -> Result<Vec<String>> {
        let live: std::collections::HashSet<String> = {
            let tx = self.db.database().begin_read()?;
            let t = tx.open_table(SNAPSHOTS)?;
            let mut s = std::collections::HashSet::new();
            for e in t.iter()? {
                let (k, v) = e?;
                if k.value().1 == self.name {
                    let info: Info = decode(v.value())?;
                    s.insert(info.id);
                }
            }
            s
        };
        let dir = self.root.join("snapshots");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let e = e.ctx(|| format!("read {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().to_string();
            if !live.contains(&name) {
                out.push(name);
            }
        }
        Ok(out)
    }
}

fn encode(i: &Info) -> Result<Vec<u8>> {
    serde_json::to_vec(i).map_err(|e| Error::Internal(format!("encode snapshot: {e}")))
}

fn decode(b: &[u8]) -> Result<Info> {
    serde_json::from_slice(b).map_err(|e| Error::Internal(format!("decode snapshot: {e}")))
}

/// Removes a directory tree (missing is fine).
fn remove_tree(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path("remove", dir, e)),
    }
}

/// Size and inode count of a tree, each inode counted once.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut u = Usage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io_path("stat", &p, e)),
        };
        if seen.insert((md.dev(), md.ino())) {
            u.inodes += 1;
            u.size += (md.blocks() * 512) as i64;
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).ctx(|| format!("read {}", p.display()))? {
                stack.push(e.ctx(|| format!("read {}", p.display()))?.path());
            }
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests;
