//! Persistent named network namespaces, laid out like `ip netns`: a new netns is bind-mounted
//! onto an empty file `<dir>/<name>`, and `<dir>` is made a shared mount point so the mounts
//! propagate to mount namespaces created later (containers that bind `<dir>`, for example).
//!
//! Namespace switches happen only in short-lived threads made for them: `unshare`/`setns`
//! change the calling thread, and a tokio worker or the caller's thread must never end up in
//! another network namespace.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{sys, Error, IoContext, Result};

/// `NSFS_MAGIC` from linux/magic.h: the filesystem type of `/proc/*/ns/*` and their bind mounts.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// Serialises making directories shared mount points, so two creates racing on a fresh
/// directory do not stack two bind mounts.
static SHARED_DIR: Mutex<()> = Mutex::new(());

/// A persistent network namespace: a bind mount of the namespace at `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    pub path: PathBuf,
}

impl Netns {
    /// Creates a new network namespace and pins it at `<dir>/<name>`.
    ///
    /// ```no_run
    /// # fn main() -> wharf_network::Result<()> {
    /// let ns = wharf_network::Netns::create(std::path::Path::new("/run/wharf/netns"), "cni-1234")?;
    /// ns.remove()?;
    /// # Ok(()) }
    /// ```
    pub fn create(dir: &Path, name: &str) -> Result<Netns> {
        validate_name(name)?;
        fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
        make_shared(dir)?;
        let path = dir.join(name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists(format!("netns {}", path.display()))
                } else {
                    Error::io_path("create", &path, e)
                }
            })?;
        let target = path.clone();
        let pinned = std::thread::Builder::new()
            .name("netns-create".into())
            .spawn(move || -> Result<()> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(|e| sys("unshare(CLONE_NEWNET)", e))?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|e| sys(format!("bind netns onto {}", target.display()), e))
            })
            .map_err(|e| Error::io("spawn netns thread", e))?
            .join()
            .unwrap_or_else(|_| Err(Error::Internal("netns thread panicked".into())));
        if let Err(e) = pinned {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Netns { path })
    }

    /// Opens an existing namespace; the path must be a mounted network namespace.
    pub fn open(path: impl Into<PathBuf>) -> Result<Netns> {
        let path = path.into();
        if !path.exists() {
            return Err(Error::NotFound(format!("netns {}", path.display())));
        }
        if !is_netns(&path) {
            return Err(Error::InvalidArgument(format!(
                "{} is not a network namespace",
                path.display()
            )));
        }
        Ok(Netns { path })
    }

    /// Unmounts and removes the namespace file. A missing or already unmounted file is fine.
    /// The namespace itself goes away when the last process in it exits.
    pub fn remove(&self) -> Result<()> {
        match umount2(&self.path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(sys(format!("unmount {}", self.path.display()), e)),
        }
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io_path("remove", &self.path, e)),
        }
    }

    /// Whether the path is (still) a mounted network namespace.
    pub fn exists(&self) -> bool {
        is_netns(&self.path)
    }

    /// Runs `f` in a new thread that has joined this namespace, and returns its result. Sockets
    /// made in `f` stay in the namespace after it returns (a listener can be handed back).
    pub fn run<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file =
            fs::File::open(&self.path).ctx(|| format!("open netns {}", self.path.display()))?;
        if !is_netns(&self.path) {
            return Err(Error::NotFound(format!("netns {}", self.path.display())));
        }
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(s, move || -> Result<T> {
                    setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| sys(format!("setns {}", self.path.display()), e))?;
                    Ok(f())
                })
                .map_err(|e| Error::io("spawn netns thread", e))?
                .join()
                .unwrap_or_else(|_| Err(Error::Internal("netns thread panicked".into())))
        })
    }

    /// Brings the loopback interface of the namespace up (what the CNI `loopback` plugin does).
    pub fn loopback_up(&self) -> Result<()> {
        self.run(set_lo_up)?
    }
}

/// Whether `path` is a bind mount of a namespace (nsfs). The type of namespace is not checked:
/// the paths this crate handles are only ever network namespaces.
pub(crate) fn is_netns(path: &Path) -> bool {
    match nix::sys::statfs::statfs(path) {
        // The width of f_type differs between targets.
        #[allow(clippy::unnecessary_cast)]
        Ok(st) => st.filesystem_type().0 as i64 == NSFS_MAGIC,
        Err(_) => false,
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(Error::InvalidArgument(format!("netns name {name:?}")));
    }
    Ok(())
}

/// Makes `dir` a shared mount point the way `ip netns add` does: mark it shared, and when it is
/// not a mount point yet, bind-mount it onto itself first.
fn make_shared(dir: &Path) -> Result<()> {
    let _guard = SHARED_DIR.lock().unwrap_or_else(|p| p.into_inner());
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(sys(format!("make {} shared", dir.display()), e)),
    }
    mount(
        Some(dir),
        dir,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| sys(format!("bind {} onto itself", dir.display()), e))?;
    shared().map_err(|e| sys(format!("make {} shared", dir.display()), e))
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
fn set_lo_up() -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::io("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags into `req`, which lives through the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(Error::io(
            "get flags of lo",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads `req`, which lives through the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(Error::io("set lo up", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        validate_name("cni-0123abcd").unwrap();
    }

    #[test]
    fn a_plain_file_is_not_a_netns() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        fs::write(&f, b"").unwrap();
        assert!(!is_netns(&f));
        assert!(!is_netns(&dir.path().join("missing")));
        assert!(Netns::open(&f).is_err());
        assert!(Netns::open(dir.path().join("missing"))
            .unwrap_err()
            .is_not_found());
    }
}
