//! A pod's /dev/shm. The containers of a pod share its IPC namespace, so POSIX shared memory
//! (files in /dev/shm) must be shared too: as containerd does, each pod gets one tmpfs on the
//! host, under its sandbox directory, bound into the pause container and every container of
//! the pod; a pod with host IPC binds the host's /dev/shm instead. The tmpfs is unmounted when
//! the pod stops.

use std::path::{Path, PathBuf};

use wharf_core::snapshots::Mount;

use crate::{Cri, Error, Result};

/// The size containerd gives a pod's /dev/shm (docker's default).
const SIZE: &str = "size=65536k";

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
    let tmpfs = Mount {
        kind: "tmpfs".into(),
        source: "shm".into(),
        options: ["nosuid", "nodev", "noexec", "mode=1777", SIZE]
            .map(String::from)
            .to_vec(),
    };
    wharf_core::mount::mount_all(&[tmpfs], dir)
        .map_err(|e| Error::from(e).context("mount the pod's shm"))
}

/// Unmounts the tmpfs at `dir` if one is there (lazily if a process still holds a file in
/// it). Fine when there is nothing to unmount.
pub fn unmount(dir: &Path) -> Result<()> {
    wharf_core::mount::unmount(dir).map_err(|e| Error::from(e).context("unmount the pod's shm"))
}
