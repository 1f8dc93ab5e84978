//! Mounting containerd mount descriptions (bind and overlay) on a target, and unmounting, for the
//! diff service and the runtime. Requires CAP_SYS_ADMIN.

use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::snapshots::Mount;
use crate::{Error, Result};

/// Splits containerd-style options into mount flags and filesystem data.
fn parse_options(options: &[String]) -> (MsFlags, bool, String) {
    let mut flags = MsFlags::empty();
    let mut ro = false;
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => ro = true,
            "rw" | "defaults" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "private" => flags |= MsFlags::MS_PRIVATE,
            "rprivate" => flags |= MsFlags::MS_PRIVATE | MsFlags::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    (flags, ro, data.join(","))
}

/// Mounts every mount in order on `target`.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        let (mut flags, ro, data) = parse_options(&m.options);
        let bind = m.kind == "bind" || flags.contains(MsFlags::MS_BIND);
        if ro && !bind {
            flags |= MsFlags::MS_RDONLY;
        }
        let fstype = if bind { None } else { Some(m.kind.as_str()) };
        let data_opt = if data.is_empty() || bind {
            None
        } else {
            Some(data.as_str())
        };
        mount(Some(m.source.as_str()), target, fstype, flags, data_opt).map_err(|e| {
            Error::Internal(format!(
                "mount {} ({}) on {} with options {:?}: {e}",
                m.source,
                m.kind,
                target.display(),
                m.options
            ))
        })?;
        if bind && ro {
            // A bind mount only becomes read-only with a remount.
            let rflags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(e) = mount(None::<&str>, target, None::<&str>, rflags, None::<&str>) {
                let _ = unmount(target);
                return Err(Error::Internal(format!(
                    "remount {} read-only: {e}",
                    target.display()
                )));
            }
        }
    }
    Ok(())
}

/// Unmounts `target` (lazily if busy).
pub fn unmount(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EBUSY) => umount2(target, MntFlags::MNT_DETACH)
            .map_err(|e| Error::Internal(format!("unmount {}: {e}", target.display()))),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::Internal(format!(
            "unmount {}: {e}",
            target.display()
        ))),
    }
}

/// A temporary mount of `mounts`, unmounted and removed on drop.
pub struct TempMount {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl TempMount {
    /// Mounts `mounts` on a fresh directory under `parent`.
    pub fn new(mounts: &[Mount], parent: &Path) -> Result<Self> {
        std::fs::create_dir_all(parent).map_err(|e| Error::io_path("create", parent, e))?;
        let dir = tempfile::Builder::new()
            .prefix("mount-")
            .tempdir_in(parent)
            .map_err(|e| Error::io_path("create temp dir in", parent, e))?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount { dir, mounted: true })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = unmount(self.dir.path()) {
                tracing::warn!(error = %e, "unmount temp mount");
            }
        }
    }
}
