//! An ingest: a resumable write of one blob, verified before it is renamed into the store.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use super::{Status, Store};
use crate::error::IoContext;
use crate::{Digest, Error, Result};

/// A writer holding the lock on its ref until dropped. Data written so far survives a drop (or a
/// crash) and is picked up again by the next writer on the same ref.
pub struct Writer {
    store: Store,
    reference: String,
    dir: PathBuf,
    file: File,
    hasher: Sha256,
    offset: u64,
    /// Offset up to which writeback has been started (see [`Writer::start_writeback`]).
    written_back: u64,
    total: u64,
    expected: Option<Digest>,
    started_at: SystemTime,
}

/// How much written data may wait in the page cache before its writeback is started.
pub const WRITEBACK_STEP: u64 = 4 << 20;

/// Starts (without waiting for) writeback of `len` bytes of `file` from `offset`
/// (`sync_file_range` with `SYNC_FILE_RANGE_WRITE`). Only a hint: an error is ignored, the
/// fsync that must follow reports real ones.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: a plain syscall on a descriptor `file` keeps open; no memory is passed.
    let _ = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos()
        .to_string()
}

fn read_small(p: &Path) -> Result<Option<String>> {
    match fs::read_to_string(p) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io_path("read", p, e)),
    }
}

/// Reads the status of the ingest in `dir`; None if `dir` is not a (complete) ingest.
pub(super) fn read_status(dir: &Path) -> Result<Option<Status>> {
    let Some(reference) = read_small(&dir.join("ref"))? else {
        return Ok(None);
    };
    let data = dir.join("data");
    let md = match fs::metadata(&data) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io_path("stat", &data, e)),
    };
    let started_at = read_small(&dir.join("startedat"))?
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|n| UNIX_EPOCH + Duration::from_nanos(n))
        .unwrap_or(UNIX_EPOCH);
    let total = read_small(&dir.join("total"))?
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let expected = read_small(&dir.join("expected"))?.and_then(|s| Digest::parse(s.trim()).ok());
    Ok(Some(Status {
        reference,
        offset: md.len(),
        total,
        expected,
        started_at,
        updated_at: md.modified().unwrap_or(started_at),
    }))
}

fn write_small(p: &Path, s: &str) -> Result<()> {
    fs::write(p, s).ctx(|| format!("write {}", p.display()))
}

impl Writer {
    pub(super) fn open(
        store: Store,
        reference: &str,
        dir: PathBuf,
        total: u64,
        expected: Option<Digest>,
    ) -> Result<Self> {
        let data = dir.join("data");
        let resumed = read_status(&dir)?;
        let (file, hasher, offset, started_at, total, expected) = match resumed {
            Some(st) => {
                // Resume: rehash what is already on disk so the digest covers the whole blob.
                let mut f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(&data)
                    .ctx(|| format!("open ingest {}", data.display()))?;
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut n_total = 0u64;
                loop {
                    let n = f
                        .read(&mut buf)
                        .ctx(|| format!("read ingest {}", data.display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                    n_total += n as u64;
                }
                let total = if total > 0 { total } else { st.total };
                let expected = expected.or(st.expected);
                if total > 0 {
                    write_small(&dir.join("total"), &total.to_string())?;
                }
                if let Some(e) = &expected {
                    write_small(&dir.join("expected"), &e.to_string())?;
                }
                (f, h, n_total, st.started_at, total, expected)
            }
            None => {
                // A half-created ingest dir (crash between mkdir and data) is simply started over.
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).ctx(|| format!("create ingest {}", dir.display()))?;
                let now = SystemTime::now();
                write_small(&dir.join("startedat"), &nanos(now))?;
                if total > 0 {
                    write_small(&dir.join("total"), &total.to_string())?;
                }
                if let Some(e) = &expected {
                    write_small(&dir.join("expected"), &e.to_string())?;
                }
                let f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .create(true)
                    .truncate(false)
                    .open(&data)
                    .ctx(|| format!("create ingest {}", data.display()))?;
                // The ref file is written last: its presence marks a complete ingest dir.
                write_small(&dir.join("ref"), reference)?;
                (f, Sha256::new(), 0, now, total, expected)
            }
        };
        Ok(Writer {
            store,
            reference: reference.to_string(),
            dir,
            file,
            hasher,
            offset,
            written_back: offset,
            total,
            expected,
            started_at,
        })
    }

    pub fn reference(&self) -> &str {
        &self.reference
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn status(&self) -> Status {
        Status {
            reference: self.reference.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: SystemTime::now(),
        }
    }

    /// Records the expected total size (0 = unknown).
    pub fn set_total(&mut self, total: u64) -> Result<()> {
        if total > 0 && total != self.total {
            self.total = total;
            write_small(&self.dir.join("total"), &total.to_string())?;
        }
        Ok(())
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_hasher(self.hasher.clone())
    }

    /// Discards everything written (containerd only supports truncating to 0).
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        if size != 0 {
            return Err(Error::InvalidArgument(
                "truncate only supports size 0".into(),
            ));
        }
        self.file
            .set_len(0)
            .ctx(|| format!("truncate ingest {}", self.reference))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        self.written_back = 0;
        Ok(())
    }

    /// Appends `data`, which must start at the current offset (offset 0 restarts the ingest).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        if offset == 0 && self.offset > 0 {
            self.truncate(0)?;
        } else if offset != self.offset {
            return Err(Error::OutOfRange(format!(
                "write @{offset} must occur at current offset {}",
                self.offset
            )));
        }
        self.write(data)
    }

    /// Appends `data` at the current offset.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(data)
            .ctx(|| format!("write ingest {}", self.reference))?;
        self.hasher.update(data);
        self.offset += data.len() as u64;
        self.start_writeback();
        Ok(())
    }

    /// The first half of a pipelined [`write`](Self::write): counts and hashes `data` as the
    /// next bytes, so the caller can answer its client before the disk write;
    /// [`persist`](Self::persist) with the same bytes must follow. If that fails the writer is
    /// unusable (the stream must fail; a later writer on the same ref re-reads the file).
    pub fn absorb(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.offset += data.len() as u64;
    }

    /// The second half of a pipelined write: the bytes [`absorb`](Self::absorb) counted.
    pub fn persist(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .ctx(|| format!("write ingest {}", self.reference))?;
        self.start_writeback();
        Ok(())
    }

    /// Starts the disk writes of what was written since the last call, once that is
    /// [`WRITEBACK_STEP`] or more. The disk then works while the rest of the blob arrives, and
    /// the fsync at commit has little left to wait for, instead of all of it (the kernel would
    /// otherwise hold a whole layer in dirty pages until that fsync).
    fn start_writeback(&mut self) {
        let pending = self.offset.saturating_sub(self.written_back);
        if pending >= WRITEBACK_STEP {
            start_writeback(&self.file, self.written_back, pending);
            self.written_back = self.offset;
        }
    }

    /// Verifies size and digest, then renames the data into the store. `size` 0 and `expected`
    /// None mean "whatever was written", checked against what the ingest was opened with.
    /// On a mismatch nothing is committed and the ingest is kept (the client may Abort it).
    pub fn commit(self, size: u64, expected: Option<Digest>) -> Result<Digest> {
        match self.commit_shared(size, expected)? {
            (d, true) => Ok(d),
            (d, false) => Err(Error::AlreadyExists(format!("content {d}"))),
        }
    }

    /// Like [`commit`](Self::commit), but a blob that is already in the store is not an error:
    /// returns the digest and whether this writer created the blob.
    pub fn commit_shared(self, size: u64, expected: Option<Digest>) -> Result<(Digest, bool)> {
        let want_size = if size > 0 { size } else { self.total };
        if want_size > 0 && want_size != self.offset {
            return Err(Error::FailedPrecondition(format!(
                "unexpected commit size {}, expected {want_size}",
                self.offset
            )));
        }
        let got = self.digest();
        for want in [expected.as_ref(), self.expected.as_ref()]
            .into_iter()
            .flatten()
        {
            if want != &got {
                return Err(Error::FailedPrecondition(format!(
                    "unexpected commit digest {got}, expected {want}"
                )));
            }
        }
        self.file
            .sync_all()
            .ctx(|| format!("sync ingest {}", self.reference))?;
        let target = self.store.blob_path(&got);
        let data = self.dir.join("data");
        if target.exists() {
            let _ = fs::remove_dir_all(&self.dir);
            return Ok((got, false));
        }
        let _ = fs::set_permissions(&data, fs::Permissions::from_mode(0o444));
        fs::rename(&data, &target)
            .ctx(|| format!("commit {} to {}", data.display(), target.display()))?;
        if let Some(parent) = target.parent() {
            File::open(parent)
                .and_then(|d| d.sync_all())
                .ctx(|| format!("sync {}", parent.display()))?;
        }
        let _ = fs::remove_dir_all(&self.dir);
        Ok((got, true))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.store.unlock(&self.reference);
    }
}
