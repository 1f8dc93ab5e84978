//! The daemon's unix sockets: parent dirs 0711, sockets 0660, a stale socket replaced, a live one
//! refused.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tokio::net::UnixListener;

/// `<address>.ttrpc`, where containerd serves ttrpc for shims.
pub fn ttrpc_path(address: &Path) -> PathBuf {
    let mut s = address.as_os_str().to_owned();
    s.push(".ttrpc");
    PathBuf::from(s)
}

/// Makes the parent directory and clears a stale socket at `path`; fails if a server answers.
pub fn prepare(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .with_context(|| format!("create {}", dir.display()))?;
    }
    if std::fs::symlink_metadata(path).is_ok() {
        if UnixStream::connect(path).is_ok() {
            bail!("another daemon is already serving on {}", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    Ok(())
}

/// Socket permissions: 0660, group `gid` when not 0.
pub fn chmod(path: &Path, gid: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    if gid != 0 {
        nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
            .with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

/// Listens on `path` after [`prepare`].
pub fn listen(path: &Path, gid: u32) -> Result<UnixListener> {
    prepare(path)?;
    let l = UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))?;
    chmod(path, gid)?;
    Ok(l)
}
