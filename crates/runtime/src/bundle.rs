//! Bundle directories: `<state>/io.containerd.runtime.v2.task/<ns>/<id>` holding `config.json`
//! and the `rootfs` mount point (the shim mounts the rootfs there), plus a `work` link to
//! `<root>/io.containerd.runtime.v2.task/<ns>/<id>` for data that must outlive a reboot, as
//! containerd lays them out.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use wharf_core::error::IoContext;
use wharf_core::{identifiers, Error, Result};

pub struct Bundle {
    pub path: PathBuf,
    pub work: PathBuf,
}

impl Bundle {
    pub fn path_for(state: &Path, ns: &str, id: &str) -> Result<PathBuf> {
        identifiers::validate(ns)?;
        identifiers::validate(id)?;
        Ok(state.join(ns).join(id))
    }

    /// Creates the bundle for a new task; an existing one is AlreadyExists.
    pub fn create(state: &Path, root: &Path, ns: &str, id: &str, spec: &[u8]) -> Result<Bundle> {
        let path = Self::path_for(state, ns, id)?;
        let work = root.join(ns).join(id);
        if path.exists() {
            return Err(Error::AlreadyExists(format!("task {id}")));
        }
        let mk = |p: &Path, mode: u32| {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(mode)
                .create(p)
                .ctx(|| format!("create {}", p.display()))
        };
        mk(path.parent().unwrap_or(state), 0o711)?;
        fs::DirBuilder::new()
            .mode(0o711)
            .create(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Error::AlreadyExists(format!("task {id}"))
                } else {
                    Error::io_path("create bundle", &path, e)
                }
            })?;
        let b = Bundle { path, work };
        let res = (|| {
            mk(&b.work, 0o711)?;
            mk(&b.path.join("rootfs"), 0o711)?;
            let _ = fs::remove_file(b.path.join("work"));
            std::os::unix::fs::symlink(&b.work, b.path.join("work"))
                .ctx(|| "link bundle work dir".to_string())?;
            // Shims write their log to this FIFO (containerd's contract; the runc shim exits
            // without it).
            nix::unistd::mkfifo(
                &b.path.join("log"),
                nix::sys::stat::Mode::from_bits_truncate(0o700),
            )
            .map_err(|e| Error::Internal(format!("create shim log fifo: {e}")))?;
            let cfg = b.path.join("config.json");
            fs::write(&cfg, spec).ctx(|| format!("write {}", cfg.display()))?;
            fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644))
                .ctx(|| "chmod config.json".to_string())?;
            Ok(())
        })();
        if let Err(e) = res {
            b.remove();
            return Err(e);
        }
        Ok(b)
    }

    /// Removes the bundle and its work dir, unmounting a rootfs a dead shim left mounted.
    pub fn remove(&self) {
        let rootfs = self.path.join("rootfs");
        let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(bundle = %self.path.display(), error = %e, "remove bundle");
            }
        }
        let _ = fs::remove_dir_all(&self.work);
    }
}
