//! The content-addressable store on disk, shared by all namespaces (the metadata layer adds
//! namespaces, labels and GC on top, as containerd's does).
//!
//! Layout, as containerd's: `<root>/blobs/sha256/<hex>` for committed blobs and
//! `<root>/ingest/<sha256(ref)>/{ref,data,total,expected,startedat}` for writes in progress. A blob
//! only becomes visible by `rename` after its digest and size were verified and the data fsynced, so a
//! crash at any moment leaves either a committed blob or a resumable ingest, never a corrupt blob.

mod writer;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
#[cfg(test)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

pub use writer::{start_writeback, Writer, WRITEBACK_STEP};

use crate::error::IoContext;
use crate::{Digest, Error, Result};

/// What the store knows of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// The state of an ingest (a write in progress).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub reference: String,
    pub offset: u64,
    pub total: u64,
    pub expected: Option<Digest>,
    pub started_at: SystemTime,
    pub updated_at: SystemTime,
}

/// An ingest directory as found on disk.
#[derive(Debug, Clone)]
pub struct IngestDir {
    pub path: PathBuf,
    /// None for a directory a crash left half-created.
    pub status: Option<Status>,
    pub updated_at: SystemTime,
}

/// The on-disk content store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Refs with an open writer: a second writer on the same ref is refused (Unavailable).
    locked: Mutex<HashSet<String>>,
}

impl Store {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for d in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&d).ctx(|| format!("create {}", d.display()))?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                root,
                locked: Mutex::new(HashSet::new()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Where a committed blob lives.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.inner
            .root
            .join("blobs")
            .join(d.algorithm())
            .join(d.hex())
    }

    fn not_found(d: &Digest) -> Error {
        Error::NotFound(format!("content {d}"))
    }

    /// Info of a committed blob, from the filesystem.
    pub fn info(&self, d: &Digest) -> Result<Info> {
        let p = self.blob_path(d);
        let md = match fs::metadata(&p) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Self::not_found(d)),
            Err(e) => return Err(Error::io_path("stat", &p, e)),
        };
        let updated_at = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Info {
            digest: d.clone(),
            size: md.len(),
            created_at: md.created().unwrap_or(updated_at),
            updated_at,
        })
    }

    pub fn exists(&self, d: &Digest) -> bool {
        self.blob_path(d).exists()
    }

    /// Opens a committed blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.blob_path(d);
        File::open(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Self::not_found(d)
            } else {
                Error::io_path("open", &p, e)
            }
        })
    }

    /// Reads up to `size` bytes at `offset` (size 0 = to the end). Reading at or past the end of the
    /// blob is OutOfRange-like: InvalidArgument unless offset == size (an empty read).
    pub fn read_at(&self, d: &Digest, offset: u64, size: u64) -> Result<Vec<u8>> {
        let mut f = self.open_blob(d)?;
        let len = f.metadata().ctx(|| format!("stat content {d}"))?.len();
        if offset > len {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} beyond the end of content {d} (size {len})"
            )));
        }
        let want = if size == 0 {
            len - offset
        } else {
            size.min(len - offset)
        };
        f.seek(SeekFrom::Start(offset))
            .ctx(|| format!("seek content {d}"))?;
        let mut buf = Vec::with_capacity(want as usize);
        f.take(want)
            .read_to_end(&mut buf)
            .ctx(|| format!("read content {d}"))?;
        Ok(buf)
    }

    /// Removes a committed blob.
    pub fn delete(&self, d: &Digest) -> Result<()> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Self::not_found(d)),
            Err(e) => Err(Error::io_path("remove", &p, e)),
        }
    }

    /// Every committed blob. Files whose names are not digests are ignored.
    pub fn walk(&self) -> Result<Vec<Info>> {
        let dir = self.inner.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read {}", dir.display()))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let Ok(d) = Digest::parse(&format!("sha256:{name}")) else {
                continue;
            };
            match self.info(&d) {
                Ok(i) => out.push(i),
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Re-reads a blob and checks it still hashes to its name (corruption on disk).
    pub fn verify(&self, d: &Digest) -> Result<()> {
        let mut f = self.open_blob(d)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).ctx(|| format!("read content {d}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got = Digest::from_hasher(h);
        if &got != d {
            return Err(Error::FailedPrecondition(format!(
                "content {d} is corrupt on disk: it hashes to {got}"
            )));
        }
        Ok(())
    }

    fn ingest_dir(&self, reference: &str) -> PathBuf {
        // Refs are arbitrary client strings: hash them so they can never form a path.
        self.inner
            .root
            .join("ingest")
            .join(hex::encode(Sha256::digest(reference.as_bytes())))
    }

    /// Opens a writer for `reference`, resuming an existing ingest of the same ref. `total` and
    /// `expected` are recorded when given (0 / None = unknown). Only one writer per ref at a time.
    pub fn writer(&self, reference: &str, total: u64, expected: Option<Digest>) -> Result<Writer> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument("ref must not be empty".into()));
        }
        if let Some(d) = &expected {
            if self.exists(d) {
                return Err(Error::AlreadyExists(format!("content {d}")));
            }
        }
        self.lock(reference)?;
        match Writer::open(
            self.clone(),
            reference,
            self.ingest_dir(reference),
            total,
            expected,
        ) {
            Ok(w) => Ok(w),
            Err(e) => {
                self.unlock(reference);
                Err(e)
            }
        }
    }

    fn lock(&self, reference: &str) -> Result<()> {
        let mut l = self
            .inner
            .locked
            .lock()
            .map_err(|_| Error::internal("ingest lock poisoned"))?;
        if !l.insert(reference.to_string()) {
            return Err(Error::Unavailable(format!("ref {reference} locked")));
        }
        Ok(())
    }

    fn unlock(&self, reference: &str) {
        if let Ok(mut l) = self.inner.locked.lock() {
            l.remove(reference);
        }
    }

    /// True while a writer holds `reference`.
    pub fn is_locked(&self, reference: &str) -> bool {
        self.inner
            .locked
            .lock()
            .map(|l| l.contains(reference))
            .unwrap_or(false)
    }

    /// Status of an ingest.
    pub fn status(&self, reference: &str) -> Result<Status> {
        writer::read_status(&self.ingest_dir(reference))?
            .filter(|s| s.reference == reference)
            .ok_or_else(|| Error::NotFound(format!("ref {reference}")))
    }

    /// Every ingest in progress.
    pub fn list_statuses(&self) -> Result<Vec<Status>> {
        let dir = self.inner.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read {}", dir.display()))?;
            if let Some(s) = writer::read_status(&entry.path())? {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Every ingest directory on disk, complete or not, with when it was last written (for
    /// consistency checks: a crash can leave a half-created one that `list_statuses` skips).
    pub fn ingest_dirs(&self) -> Result<Vec<IngestDir>> {
        let dir = self.inner.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read {}", dir.display()))?;
            let path = entry.path();
            let status = writer::read_status(&path)?;
            let updated_at = match &status {
                Some(s) => s.updated_at,
                None => entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            };
            out.push(IngestDir {
                path,
                status,
                updated_at,
            });
        }
        Ok(out)
    }

    /// Removes an ingest directory found by [`Store::ingest_dirs`], unless a writer holds it.
    pub fn remove_ingest_dir(&self, d: &IngestDir) -> Result<()> {
        if let Some(s) = &d.status {
            if self.is_locked(&s.reference) {
                return Err(Error::Unavailable(format!("ref {} locked", s.reference)));
            }
        }
        match fs::remove_dir_all(&d.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io_path("remove ingest", &d.path, e)),
        }
    }

    /// Abandons an ingest and removes its data.
    pub fn abort(&self, reference: &str) -> Result<()> {
        if self.is_locked(reference) {
            return Err(Error::Unavailable(format!("ref {reference} locked")));
        }
        let dir = self.ingest_dir(reference);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("ref {reference}")))
            }
            Err(e) => Err(Error::io_path("remove ingest", &dir, e)),
        }
    }
}

#[cfg(test)]
mod tests;
