//! A pod's /dev/shm. The containers of a pod share its IPC namespace, so POSIX shared memory
//! (files in /dev/shm) must be shared too: as containerd does, each pod gets one tmpfs on the
//! host, under its sandbox directory, bound into the pause container and every container of
//! the pod; a pod with host IPC binds the host's /dev/shm instead. The tmpfs is unmounted when
//! the pod stops.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::{Cri, Error, Result};

/// The size containerd gives a pod's /dev/shm (docker's default).
const SIZE: &str = "65536k";

impl Cri {
    /// Where the pod's /dev/shm comes from.
    pub(crate) fn pod_shm_path(&self, id: &str, host_ipc: bool) -> PathBuf {
        if host_ipc {
            PathBuf::from("/dev/shm")
        } else {
            self.pod_dir(id).join("shm")
        }
    }
}

/// Mounts a fresh tmpfs at `dir` (made if missing).
pub fn mount(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
    nix::mount::mount(
        Some("shm"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size={SIZE}").as_str()),
    )
    .map_err(|e| Error::Internal(format!("mount the pod's shm at {}: {e}", dir.display())))
}

/// Unmounts the tmpfs at `dir` if one is there (detached: a process still holding a file in
/// it keeps it alive, not the mount point). Fine when there is nothing to unmount.
pub fn unmount(dir: &Path) -> Result<()> {
    match nix::mount::umount2(dir, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::Internal(format!(
            "unmount the pod's shm at {}: {e}",
            dir.display()
        ))),
    }
}
