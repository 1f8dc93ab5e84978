//! Path safety for layer application: every tar entry is created relative to a directory file
//! descriptor that was opened *inside* the root with `openat2(RESOLVE_IN_ROOT)`, so `..`, absolute
//! paths and symlinks (including symlinks created earlier by the same layer) all resolve within
//! the root, exactly as if the root were `/`. Nothing is ever resolved against the host.
//!
//! The final component of an entry is never followed: it is created, replaced or removed with the
//! `*at` syscalls on its (pinned) parent directory.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// Lexically cleans a tar entry name into components relative to the root: `.` and empty parts
/// dropped, leading `/` ignored, `..` clamped at the root (as `filepath.Join("/", name)` does).
pub fn clean(name: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            p => out.push(p.to_vec()),
        }
    }
    out
}

fn cstr(b: &[u8]) -> Result<CString> {
    CString::new(b).map_err(|_| Error::InvalidArgument("path contains a NUL byte".into()))
}

fn errno_err(what: &str, path: &[u8]) -> Error {
    let e = std::io::Error::last_os_error();
    Error::io(format!("{what} {}", String::from_utf8_lossy(path)), e)
}

/// A root directory, opened once.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> Result<Root> {
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: plain syscall with a valid C string; the fd is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(errno_err("open root", path.as_os_str().as_bytes()));
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Root {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Opens `components` (a directory) inside the root, resolving every symlink within it.
    /// Missing directories are created (mode 0755) when `create` is set.
    pub fn open_dir(&self, components: &[Vec<u8>], create: bool) -> Result<OwnedFd> {
        if components.is_empty() {
            return self.reopen_root();
        }
        let joined = components.join(&b'/');
        match self.openat2(&joined, libc::O_DIRECTORY) {
            Ok(fd) => Ok(fd),
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                // Create the missing parents one level at a time, each resolved in the root.
                let parent = self.open_dir(&components[..components.len() - 1], true)?;
                let name = cstr(&components[components.len() - 1])?;
                // SAFETY: valid fd and C string.
                let rc = unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) };
                if rc < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                    return Err(errno_err("create directory", &joined));
                }
                self.openat2(&joined, libc::O_DIRECTORY).map_err(|e| {
                    Error::io(
                        format!(
                            "open directory {} in root",
                            String::from_utf8_lossy(&joined)
                        ),
                        e,
                    )
                })
            }
            Err(e) => Err(Error::io(
                format!(
                    "open directory {} in root",
                    String::from_utf8_lossy(&joined)
                ),
                e,
            )),
        }
    }

    fn reopen_root(&self) -> Result<OwnedFd> {
        self.openat2(b".", libc::O_DIRECTORY)
            .map_err(|e| Error::io(format!("open root {}", self.path.display()), e))
    }

    /// `openat2(root, path, RESOLVE_IN_ROOT)`.
    pub fn openat2(&self, path: &[u8], flags: i32) -> std::io::Result<OwnedFd> {
        let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: open_how is plain data; zeroed is a valid initial value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        loop {
            // SAFETY: valid fd, C string and open_how of the size we pass.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.fd.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const libc::open_how,
                    std::mem::size_of::<libc::open_how>(),
                )
            };
            if fd >= 0 {
                // SAFETY: fresh descriptor we own.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
            }
            let e = std::io::Error::last_os_error();
            // EAGAIN: a concurrent rename raced the lookup; retry as the man page says.
            if e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(e);
            }
        }
    }
}

/// The parent directory (pinned) and final name of an entry inside the root.
pub struct Target {
    pub dir: OwnedFd,
    pub name: CString,
    /// The cleaned path relative to the root, for messages and bookkeeping.
    pub rel: Vec<u8>,
}

impl Target {
    /// Resolves a tar entry name; None for the root itself (e.g. `./`).
    pub fn resolve(root: &Root, name: &[u8], create_parents: bool) -> Result<Option<Target>> {
        let comps = clean(name);
        let Some((last, parents)) = comps.split_last() else {
            return Ok(None);
        };
        let dir = root.open_dir(parents, create_parents)?;
        Ok(Some(Target {
            dir,
            name: cstr(last)?,
            rel: comps.join(&b'/'),
        }))
    }

    pub fn dirfd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// The path through `/proc/self/fd` of the pinned parent: safe for calls that lack an `*at`
    /// form (xattrs), since the parent cannot be swapped and the name is one component.
    pub fn proc_path(&self) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd()));
        p.push(OsStr::from_bytes(self.name.as_bytes()));
        p
    }

    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.rel).into_owned()
    }

    /// lstat of the entry, None if absent.
    pub fn lstat(&self) -> Result<Option<libc::stat>> {
        // SAFETY: zeroed stat is valid output storage.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, C string and out pointer.
        let rc = unsafe {
            libc::fstatat(
                self.dirfd(),
                self.name.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc == 0 {
            return Ok(Some(st));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(Error::io(format!("stat {}", self.display()), e))
        }
    }

    /// Removes the entry (recursively for directories); absent is fine.
    pub fn remove_all(&self) -> Result<()> {
        remove_at(self.dirfd(), &self.name, &self.rel)
    }
}

/// Removes `name` in `dirfd`, recursing into directories without following symlinks.
pub fn remove_at(dirfd: RawFd, name: &CString, rel: &[u8]) -> Result<()> {
    // SAFETY: valid fd and C string.
    if unsafe { libc::unlinkat(dirfd, name.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        Some(libc::EISDIR) | Some(libc::EPERM) => {
            // A directory: empty it through a descriptor, then remove it.
            // SAFETY: valid fd and C string.
            let fd = unsafe {
                libc::openat(
                    dirfd,
                    name.as_ptr(),
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                )
            };
            if fd < 0 {
                return Err(errno_err("open directory to remove", rel));
            }
            // SAFETY: fresh fd we own.
            let dir = unsafe { OwnedFd::from_raw_fd(fd) };
            for child in list_dir(&dir)? {
                let mut crel = rel.to_vec();
                crel.push(b'/');
                crel.extend_from_slice(child.as_bytes());
                remove_at(dir.as_raw_fd(), &child, &crel)?;
            }
            // SAFETY: valid fd and C string.
            if unsafe { libc::unlinkat(dirfd, name.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
                return Err(errno_err("remove directory", rel));
            }
            Ok(())
        }
        _ => Err(Error::io(
            format!("remove {}", String::from_utf8_lossy(rel)),
            e,
        )),
    }
}

/// Names in a directory (without `.` and `..`).
pub fn list_dir(dir: &OwnedFd) -> Result<Vec<CString>> {
    // Duplicate: fdopendir takes ownership of the descriptor it is given.
    // SAFETY: dup of a valid fd.
    let dupfd = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dupfd < 0 {
        return Err(Error::io(
            "dup directory fd",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: dupfd is a directory fd we own; the DIR takes it.
    let dp = unsafe { libc::fdopendir(dupfd) };
    if dp.is_null() {
        // SAFETY: dupfd still ours on failure.
        unsafe { libc::close(dupfd) };
        return Err(Error::io(
            "open directory stream",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: rewind so a reused description starts at the beginning.
    unsafe { libc::rewinddir(dp) };
    let mut out = Vec::new();
    loop {
        // SAFETY: dp is a valid DIR*.
        let ent = unsafe { libc::readdir64(dp) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside a valid dirent.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        let b = name.to_bytes();
        if b != b"." && b != b".." {
            out.push(name.to_owned());
        }
    }
    // SAFETY: closes the DIR and its fd.
    unsafe { libc::closedir(dp) };
    Ok(out)
}

/// True if `path` has only normal components (for callers building paths from trusted parts).
pub fn is_plain(path: &Path) -> bool {
    path.components().all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_clamps_at_root() {
        let c = |s: &str| {
            clean(s.as_bytes())
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap())
                .collect::<Vec<_>>()
                .join("/")
        };
        assert_eq!(c("../../etc/x"), "etc/x");
        assert_eq!(c("/abs/path"), "abs/path");
        assert_eq!(c("./a/./b/"), "a/b");
        assert_eq!(c("a/../../b"), "b");
        assert_eq!(c("./"), "");
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink("/", root.join("a")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("up")).unwrap();
        let r = Root::open(&root).unwrap();
        let tg = Target::resolve(&r, b"a/etc/passwd", true).unwrap().unwrap();
        // The parent is <root>/etc, created inside the root, never the host's /etc.
        assert!(root.join("etc").is_dir());
        assert_eq!(tg.name.as_bytes(), b"passwd");
        Target::resolve(&r, b"up/x/y", true).unwrap().unwrap();
        assert!(root.join("x").is_dir());
    }
}
