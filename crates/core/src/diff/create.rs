//! Creating an OCI layer from the changes between two directory trees (containerd's "walking"
//! differ): added and modified entries are written, deleted ones become `.wh.` whiteouts, hard
//! links inside the new tree stay hard links, and ownership, modes, times, devices and xattrs are
//! kept. Lookups in the old tree go through [`safepath`](super::safepath), so its symlinks can
//! never lead outside it.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::safepath::{Root, Target};
use crate::{Digest, Error, Result};

/// Writes a tar of the changes from `lower` to `upper` into `out`.
pub fn write_diff<W: Write>(lower: &Path, upper: &Path, out: W) -> Result<W> {
    let lower_root = Root::open(lower)?;
    let upper_root = Root::open(upper)?;
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(false);
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    walk_upper(&mut b, &lower_root, upper, "", &mut links)?;
    walk_deleted(&mut b, &upper_root, lower, "")?;
    b.into_inner().map_err(|e| Error::io("finish layer tar", e))
}

fn entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .map_err(|e| Error::io_path("read", dir, e))?
        .collect::<io::Result<_>>()
        .map_err(|e| Error::io_path("read", dir, e))?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

fn lstat_in(root: &Root, rel: &str) -> Result<Option<libc::stat>> {
    match Target::resolve(root, rel.as_bytes(), false) {
        Ok(Some(t)) => t.lstat(),
        Ok(None) => Ok(None),
        Err(e) if e.is_not_found() => Ok(None),
        // A parent that is not a directory in the other tree: the entry does not exist there.
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

fn same(md: &fs::Metadata, st: &libc::stat) -> bool {
    md.mode() == st.st_mode
        && md.uid() == st.st_uid
        && md.gid() == st.st_gid
        && (md.is_dir()
            || (md.size() as i64 == st.st_size
                && md.mtime() == st.st_mtime
                && md.mtime_nsec() == st.st_mtime_nsec))
        && md.rdev() == st.st_rdev
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return vec![];
    };
    let mut names = vec![0u8; 4096];
    // SAFETY: valid C string and buffer of the given size.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n <= 0 {
        return vec![];
    }
    let mut out = Vec::new();
    for name in names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
    {
        let Ok(cn) = CString::new(name) else { continue };
        let mut val = vec![0u8; 65536];
        // SAFETY: valid C strings and buffer.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m >= 0 {
            val.truncate(m as usize);
            out.push((String::from_utf8_lossy(name).into_owned(), val));
        }
    }
    out
}

fn header_for(md: &fs::Metadata, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(md.uid() as u64);
    h.set_gid(md.gid() as u64);
    h.set_mtime(md.mtime().max(0) as u64);
    h.set_size(size);
    h
}

fn walk_upper<W: Write>(
    b: &mut tar::Builder<W>,
    lower: &Root,
    upper: &Path,
    rel: &str,
    links: &mut HashMap<(u64, u64), String>,
) -> Result<()> {
    for e in entries(&upper.join(rel))? {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let erel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let path = upper.join(&erel);
        let md = fs::symlink_metadata(&path).map_err(|e| Error::io_path("stat", &path, e))?;
        let ft = md.file_type();
        let old = lstat_in(lower, &erel)?;
        let changed = match &old {
            None => true,
            Some(st) => {
                !same(&md, st)
                    || (ft.is_symlink() && {
                        let a = fs::read_link(&path).ok();
                        let b = fs::read_link(lower.path().join(&erel)).ok();
                        a != b
                    })
            }
        };
        if changed {
            let x = xattrs(&path);
            if !x.is_empty() {
                let pax: Vec<(String, &[u8])> = x
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), v.as_slice()))
                    .collect();
                b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
                    .map_err(|e| Error::io(format!("write xattrs of {erel}"), e))?;
            }
            let werr = |e: io::Error| Error::io(format!("write {erel} to layer"), e);
            if ft.is_dir() {
                let mut h = header_for(&md, tar::EntryType::Directory, 0);
                b.append_data(&mut h, format!("{erel}/"), io::empty())
                    .map_err(werr)?;
            } else if ft.is_symlink() {
                let target =
                    fs::read_link(&path).map_err(|e| Error::io_path("readlink", &path, e))?;
                let mut h = header_for(&md, tar::EntryType::Symlink, 0);
                b.append_link(&mut h, &erel, &target).map_err(werr)?;
            } else if ft.is_file() {
                let key = (md.dev(), md.ino());
                if md.nlink() > 1 {
                    if let Some(first) = links.get(&key) {
                        let mut h = header_for(&md, tar::EntryType::Link, 0);
                        b.append_link(&mut h, &erel, first).map_err(werr)?;
                        continue;
                    }
                    links.insert(key, erel.clone());
                }
                let f = fs::File::open(&path).map_err(|e| Error::io_path("open", &path, e))?;
                let mut h = header_for(&md, tar::EntryType::Regular, md.size());
                b.append_data(&mut h, &erel, f).map_err(werr)?;
            } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
                // An overlay whiteout (0/0 char device) in an upper dir means "deleted".
                if ft.is_char_device() && md.rdev() == 0 {
                    let (dir, base) = erel
                        .rsplit_once('/')
                        .map(|(d, b)| (format!("{d}/"), b))
                        .unwrap_or((String::new(), &erel));
                    let mut h = header_for(&md, tar::EntryType::Regular, 0);
                    b.append_data(&mut h, format!("{dir}.wh.{base}"), io::empty())
                        .map_err(werr)?;
                    continue;
                }
                let kind = if ft.is_char_device() {
                    tar::EntryType::Char
                } else if ft.is_block_device() {
                    tar::EntryType::Block
                } else {
                    tar::EntryType::Fifo
                };
                let mut h = header_for(&md, kind, 0);
                let rdev = md.rdev();
                h.set_device_major(libc::major(rdev)).map_err(werr)?;
                h.set_device_minor(libc::minor(rdev)).map_err(werr)?;
                b.append_data(&mut h, &erel, io::empty()).map_err(werr)?;
            }
        }
        if ft.is_dir() {
            walk_upper(b, lower, upper, &erel, links)?;
        }
    }
    Ok(())
}

fn walk_deleted<W: Write>(
    b: &mut tar::Builder<W>,
    upper: &Root,
    lower: &Path,
    rel: &str,
) -> Result<()> {
    for e in entries(&lower.join(rel))? {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let erel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        match lstat_in(upper, &erel)? {
            None => {
                let wh = if rel.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{rel}/.wh.{name}")
                };
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(0);
                h.set_mtime(0);
                b.append_data(&mut h, &wh, io::empty())
                    .map_err(|e| Error::io(format!("write whiteout {wh}"), e))?;
            }
            Some(st) => {
                let both_dirs = st.st_mode & libc::S_IFMT == libc::S_IFDIR
                    && e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if both_dirs {
                    walk_deleted(b, upper, lower, &erel)?;
                }
            }
        }
    }
    Ok(())
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    pub inner: W,
    hasher: Sha256,
    pub written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn finish(self) -> (W, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
