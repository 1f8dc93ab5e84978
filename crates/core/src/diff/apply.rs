//! Applying an OCI layer tar to a directory, with OCI whiteout semantics, verifying its
//! uncompressed digest (the diff ID) on the way. Every filesystem change goes through
//! [`safepath`](super::safepath), so a hostile tar cannot write outside the target.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::safepath::{list_dir, remove_at, Root, Target};
use crate::{Digest, Error, Result};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// How whiteouts are represented in the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// The target is an overlayfs upper dir whose lower layers are not mounted: a whiteout is a
    /// 0/0 character device, an opaque directory gets `trusted.overlay.opaque=y`.
    Overlay,
    /// The target is a whole root filesystem (a copy or a mounted overlay): whiteouts delete.
    Native,
}

/// What an apply produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyResult {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// The compression of a layer, decided by its media type (never by sniffing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(mt: &str) -> Result<Self> {
        let base = mt
            .strip_suffix("+encrypted")
            .map(|_| "encrypted")
            .unwrap_or(mt);
        match base {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            _ => Err(Error::NotImplemented(format!("layer media type {mt:?}"))),
        }
    }

    /// Wraps a compressed stream in its decompressor.
    pub fn reader<'a, R: Read + 'a>(self, r: R) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(1 << 20, r))
                    .map_err(|e| Error::io("start zstd decoder", e))?,
            ),
        })
    }
}

/// Applies the layer read from `compressed` (of media type `media_type`) to `target`.
/// A diff ID mismatch with `expected` fails after the stream was read; the caller discards the
/// target (a fresh snapshot) in that case.
pub fn apply_layer(
    compressed: impl Read + Send,
    media_type: &str,
    target: &Path,
    mode: ApplyMode,
    expected: Option<&Digest>,
) -> Result<ApplyResult> {
    let compression = Compression::from_media_type(media_type)?;
    // Decompression and hashing run on their own thread, one chunk ahead of the tar writer, so a
    // layer costs about max(decompress, write files) instead of their sum.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPE_CHUNKS);
    let (applied, streamed) = std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> io::Result<(Sha256, u64)> {
            let mut raw = compression
                .reader(BufReader::with_capacity(1 << 20, compressed))
                .map_err(|e| io::Error::other(e.to_string()))?;
            let (mut hasher, mut n) = (Sha256::new(), 0u64);
            loop {
                let mut buf = vec![0u8; PIPE_CHUNK];
                let len = read_full(&mut raw, &mut buf)?;
                if len == 0 {
                    return Ok((hasher, n));
                }
                buf.truncate(len);
                hasher.update(&buf);
                n += len as u64;
                if tx.send(buf).is_err() {
                    // The writer stopped (an error it reports itself).
                    return Ok((hasher, n));
                }
            }
        });
        let mut reader = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        let applied = {
            let mut archive = tar::Archive::new(&mut reader);
            apply_tar(&mut archive, target, mode)
        };
        // Whatever the outcome, let the producer finish: it reads the stream to its end (the
        // digest covers the tar's trailing blocks too) or stops when nobody listens.
        if applied.is_err() {
            drop(reader);
        } else {
            while reader.rx.recv().is_ok() {}
        }
        let streamed = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("decompression thread panicked")));
        (applied, streamed)
    });
    let corrupt = |e: io::Error| Error::InvalidArgument(format!("corrupt layer stream: {e}"));
    // A broken stream makes the tar reader fail too: report the stream's own error first.
    let (hasher, n) = match (applied, streamed) {
        (_, Err(e)) => return Err(corrupt(e)),
        (Err(e), _) => {
            return Err(match e {
                Error::Io { context, source }
                    if source.kind() == io::ErrorKind::InvalidInput
                        || source.kind() == io::ErrorKind::InvalidData
                        || source.kind() == io::ErrorKind::UnexpectedEof =>
                {
                    Error::InvalidArgument(format!("corrupt layer: {context}: {source}"))
                }
                e => e,
            })
        }
        (Ok(()), Ok(v)) => v,
    };
    let diff_id = Digest::from_hasher(hasher);
    if let Some(want) = expected {
        if want != &diff_id {
            return Err(Error::FailedPrecondition(format!(
                "layer content does not match its diff ID: expected {want}, got {diff_id}"
            )));
        }
    }
    Ok(ApplyResult {
        diff_id,
        uncompressed_size: n,
    })
}

const PIPE_CHUNK: usize = 256 << 10;
const PIPE_CHUNKS: usize = 8;

/// Reads until `buf` is full or the stream ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// The tar reader's end of the decompression pipe; a closed pipe reads as end of stream.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn io_ctx(what: &str, t: &Target) -> Error {
    Error::io(
        format!("{what} {}", t.display()),
        io::Error::last_os_error(),
    )
}

/// Applies an uncompressed tar stream.
pub fn apply_tar<R: Read>(
    archive: &mut tar::Archive<R>,
    target: &Path,
    mode: ApplyMode,
) -> Result<()> {
    let root = Root::open(target)?;
    // Paths this layer created: an opaque marker only hides what lower layers put there.
    let mut created: HashSet<Vec<u8>> = HashSet::new();
    // Directory mtimes are set last: creating entries inside would change them.
    let mut dir_times: Vec<(Vec<u8>, i64)> = Vec::new();
    let entries = archive.entries().map_err(|e| Error::io("read layer", e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::io("read layer entry", e))?;
        let name = entry.path_bytes().into_owned();
        let base = name
            .rsplit(|&b| b == b'/')
            .find(|s| !s.is_empty())
            .unwrap_or(&[])
            .to_vec();

        if base.starts_with(WHITEOUT_PREFIX) {
            whiteout(&root, &name, &base, mode, &created)?;
            continue;
        }
        let Some(t) = Target::resolve(&root, &name, true)? else {
            // The root itself (`./`): only its metadata.
            continue;
        };
        let header = entry.header().clone();
        let kind = header.entry_type();
        // Empty numeric fields mean 0, as Go's archive/tar (which writes most layers) reads them.
        let uid = header.uid().unwrap_or(0) as libc::uid_t;
        let gid = header.gid().unwrap_or(0) as libc::gid_t;
        let perm = header
            .mode()
            .map_err(|e| Error::io(format!("mode of {}", t.display()), e))?
            & 0o7777;
        let mtime = header.mtime().unwrap_or(0) as i64;
        let existing = t.lstat()?;
        let is_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;

        match kind {
            tar::EntryType::Directory => {
                match existing {
                    Some(st) if is_dir(&st) => {}
                    Some(_) => {
                        t.remove_all()?;
                        mkdir(&t, perm)?;
                    }
                    None => mkdir(&t, perm)?,
                }
                dir_times.push((t.rel.clone(), mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                if existing.is_some() {
                    t.remove_all()?;
                }
                // SAFETY: valid fd and C string; O_EXCL|O_NOFOLLOW never follows a planted link.
                let fd = unsafe {
                    libc::openat(
                        t.dirfd(),
                        t.name.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600,
                    )
                };
                if fd < 0 {
                    return Err(io_ctx("create", &t));
                }
                // SAFETY: fresh fd we own.
                let mut f = unsafe { File::from_raw_fd(fd) };
                io::copy(&mut entry, &mut f)
                    .map_err(|e| Error::io(format!("write {}", t.display()), e))?;
            }
            tar::EntryType::Symlink => {
                if existing.is_some() {
                    t.remove_all()?;
                }
                let link = entry.link_name_bytes().ok_or_else(|| {
                    Error::InvalidArgument(format!("symlink {} has no target", t.display()))
                })?;
                // The target is stored verbatim: it is only ever resolved inside the root.
                let c = CString::new(link.as_ref()).map_err(|_| {
                    Error::InvalidArgument(format!("symlink {} target has NUL", t.display()))
                })?;
                // SAFETY: valid C strings and fd.
                if unsafe { libc::symlinkat(c.as_ptr(), t.dirfd(), t.name.as_ptr()) } != 0 {
                    return Err(io_ctx("symlink", &t));
                }
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("hard link {} has no target", t.display()))
                    })?
                    .into_owned();
                let src = Target::resolve(&root, &link, false)
                    .map_err(|e| {
                        Error::NotFound(format!(
                            "hard link target {} of {}: {e}",
                            String::from_utf8_lossy(&link),
                            t.display()
                        ))
                    })?
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("hard link {} to the root", t.display()))
                    })?;
                if existing.is_some() {
                    t.remove_all()?;
                }
                // SAFETY: valid fds and C strings; flags 0 = do not follow a symlink source.
                if unsafe {
                    libc::linkat(
                        src.dirfd(),
                        src.name.as_ptr(),
                        t.dirfd(),
                        t.name.as_ptr(),
                        0,
                    )
                } != 0
                {
                    let e = io::Error::last_os_error();
                    return Err(Error::io(
                        format!(
                            "hard link {} to {}",
                            t.display(),
                            String::from_utf8_lossy(&link)
                        ),
                        e,
                    ));
                }
                // A hard link shares its target's metadata: nothing more to set.
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if existing.is_some() {
                    t.remove_all()?;
                }
                let fmt = match kind {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let dev = libc::makedev(major, minor);
                // SAFETY: valid fd and C string.
                if unsafe { libc::mknodat(t.dirfd(), t.name.as_ptr(), fmt | (perm & 0o7777), dev) }
                    != 0
                {
                    return Err(io_ctx("mknod", &t));
                }
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => {
                tracing::warn!(path = %t.display(), kind = ?other, "skipping unsupported tar entry type");
                continue;
            }
        }
        created.insert(t.rel.clone());

        // Ownership first: chown clears setuid/setgid, so the mode is set after it.
        // SAFETY: valid fd and C string.
        if unsafe {
            libc::fchownat(
                t.dirfd(),
                t.name.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            return Err(io_ctx("chown", &t));
        }
        if kind != tar::EntryType::Symlink {
            // SAFETY: valid fd and C string; the entry is not a symlink (checked above).
            if unsafe { libc::fchmodat(t.dirfd(), t.name.as_ptr(), perm as libc::mode_t, 0) } != 0 {
                return Err(io_ctx("chmod", &t));
            }
        }
        if let Some(exts) = entry.pax_extensions().ok().flatten() {
            for ext in exts.flatten() {
                let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                    continue;
                };
                set_xattr(&t, key, ext.value_bytes())?;
            }
        }
        if kind != tar::EntryType::Directory {
            set_mtime(t.dirfd(), &t.name, mtime)
                .map_err(|e| Error::io(format!("set times of {}", t.display()), e))?;
        }
    }
    // Deepest directories first, so setting a parent's time is not undone by its children.
    dir_times.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    for (rel, mtime) in dir_times {
        if let Some(t) = Target::resolve(&root, &rel, false)? {
            let _ = set_mtime(t.dirfd(), &t.name, mtime);
        }
    }
    Ok(())
}

fn mkdir(t: &Target, perm: u32) -> Result<()> {
    // SAFETY: valid fd and C string.
    if unsafe { libc::mkdirat(t.dirfd(), t.name.as_ptr(), (perm & 0o777) as libc::mode_t) } != 0 {
        return Err(io_ctx("mkdir", t));
    }
    Ok(())
}

fn set_mtime(dirfd: i32, name: &CString, mtime: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [ts, ts];
    // SAFETY: valid fd, C string and a two-element timespec array.
    if unsafe {
        libc::utimensat(
            dirfd,
            name.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_xattr(t: &Target, key: &[u8], value: &[u8]) -> Result<()> {
    let path = t.proc_path();
    let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::internal("proc path"))?;
    let k = CString::new(key)
        .map_err(|_| Error::InvalidArgument(format!("xattr name of {} has NUL", t.display())))?;
    // SAFETY: valid C strings and a value slice of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        let privileged = key.starts_with(b"trusted.") || key.starts_with(b"security.");
        if privileged && matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTSUP)) {
            tracing::warn!(path = %t.display(), xattr = %String::from_utf8_lossy(key), "xattr not supported here; skipped");
            return Ok(());
        }
        return Err(Error::io(
            format!(
                "set xattr {} on {}",
                String::from_utf8_lossy(key),
                t.display()
            ),
            e,
        ));
    }
    Ok(())
}

/// Handles `.wh.<name>` and `.wh..wh..opq` entries.
fn whiteout(
    root: &Root,
    name: &[u8],
    base: &[u8],
    mode: ApplyMode,
    created: &HashSet<Vec<u8>>,
) -> Result<()> {
    let parent_path = &name[..name.len() - base.len()];
    if base == OPAQUE {
        let comps = super::safepath::clean(parent_path);
        let dir = root.open_dir(&comps, true)?;
        let rel_parent = comps.join(&b'/');
        match mode {
            ApplyMode::Overlay => {
                let k = c"trusted.overlay.opaque";
                // SAFETY: valid fd (a real directory descriptor) and C string, one-byte value.
                if unsafe {
                    libc::fsetxattr(dir.as_raw_fd(), k.as_ptr(), b"y".as_ptr().cast(), 1, 0)
                } != 0
                {
                    return Err(Error::io(
                        format!("mark {} opaque", String::from_utf8_lossy(&rel_parent)),
                        io::Error::last_os_error(),
                    ));
                }
            }
            ApplyMode::Native => {
                for child in list_dir(&dir)? {
                    let mut rel = rel_parent.clone();
                    if !rel.is_empty() {
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(child.as_bytes());
                    if !created.contains(&rel) {
                        remove_at(dir.as_raw_fd(), &child, &rel)?;
                    }
                }
            }
        }
        return Ok(());
    }
    let victim = &base[WHITEOUT_PREFIX.len()..];
    if victim.is_empty() || victim == b"." || victim == b".." || victim.contains(&b'/') {
        return Err(Error::InvalidArgument(format!(
            "invalid whiteout {}",
            String::from_utf8_lossy(name)
        )));
    }
    let mut full = parent_path.to_vec();
    full.extend_from_slice(victim);
    let Some(t) = Target::resolve(root, &full, mode == ApplyMode::Overlay)? else {
        return Err(Error::InvalidArgument(format!(
            "whiteout of the root: {}",
            String::from_utf8_lossy(name)
        )));
    };
    match mode {
        ApplyMode::Native => t.remove_all(),
        ApplyMode::Overlay => {
            t.remove_all()?;
            // SAFETY: valid fd and C string; 0/0 char device is overlayfs' whiteout.
            if unsafe {
                libc::mknodat(
                    t.dirfd(),
                    t.name.as_ptr(),
                    libc::S_IFCHR,
                    libc::makedev(0, 0),
                )
            } != 0
            {
                return Err(io_ctx("create whiteout", &t));
            }
            Ok(())
        }
    }
}

/// Flushes the filesystem holding `path` once (cheaper than an fsync per file).
pub fn sync_fs(path: &Path) -> Result<()> {
    let f = File::open(path).map_err(|e| Error::io_path("open", path, e))?;
    // SAFETY: valid fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io_path("syncfs", path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Applies a layer straight into a snapshot directory `dir` (see [`ApplyMode`]); when that needs
/// the lower layers (a hard link to a file below) and `mounts` describe the snapshot mounted, the
/// fresh directory is emptied and the layer applied through a temporary mount under `tmp` instead.
/// On failure a directory that was empty before is emptied again, so nothing partial is ever
/// committed from it.
pub fn apply_to_snapshot(
    open: &dyn Fn() -> Result<File>,
    media_type: &str,
    dir: &Path,
    mode: ApplyMode,
    mounts: Option<&[crate::snapshots::Mount]>,
    tmp: &Path,
    expected: Option<&Digest>,
) -> Result<ApplyResult> {
    let fresh = std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    let clear = || -> Result<()> {
        for e in std::fs::read_dir(dir).map_err(|e| Error::io_path("read", dir, e))? {
            let e = e.map_err(|e| Error::io_path("read", dir, e))?;
            let p = e.path();
            let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| Error::io_path("remove", &p, e))?;
        }
        Ok(())
    };
    match apply_layer(open()?, media_type, dir, mode, expected) {
        Ok(r) => Ok(r),
        Err(e)
            if fresh
                && mode == ApplyMode::Overlay
                && e.is_not_found()
                && mounts.is_some_and(|m| m.iter().any(|m| m.kind == "overlay")) =>
        {
            tracing::debug!(error = %e, "layer needs its lower layers: applying through a mount");
            clear()?;
            let m = crate::mount::TempMount::new(mounts.unwrap_or_default(), tmp)?;
            apply_layer(open()?, media_type, m.path(), ApplyMode::Native, expected).inspect_err(
                |_| {
                    drop(m);
                    let _ = clear();
                },
            )
        }
        Err(e) => {
            if fresh {
                let _ = clear();
            }
            Err(e)
        }
    }
}
