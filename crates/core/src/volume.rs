//! Seeding a volume with what an image holds at the volume's path (docker's and containerd's
//! "copy-up"), for the CRI's image volumes and the CLI's named and anonymous volumes.
//!
//! The path is resolved inside the mounted rootfs (`openat2(RESOLVE_IN_ROOT)`): an image whose
//! volume path is a symlink to `/etc` seeds from its own `/etc`, never the host's. The copy goes
//! to a temporary name beside the target and is renamed into place, so a volume is either whole
//! or still empty (a crash mid-copy never leaves a half-seeded volume to be mounted).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::diff::safepath::{self, Root};
use crate::{Error, Result};

/// `path` made absolute and lexically clean (`..` stops at the root), as a mount destination.
pub fn clean(path: &str) -> String {
    let parts = safepath::clean(path.as_bytes());
    format!("/{}", String::from_utf8_lossy(&parts.join(&b'/')))
}

/// The volume paths an image declares (`Volumes` in its config, a Dockerfile's `VOLUME`),
/// clean, without duplicates, in order. A malformed `Volumes` is refused.
pub fn image_paths(image: &crate::images::ImageConfig) -> Result<Vec<String>> {
    let Some(volumes) = image.config.as_ref().and_then(|c| c.get("Volumes")) else {
        return Ok(Vec::new());
    };
    let paths: Vec<&String> = match volumes {
        serde_json::Value::Null => return Ok(Vec::new()),
        serde_json::Value::Object(m) => m.keys().collect(),
        other => {
            return Err(Error::InvalidArgument(format!(
                "malformed image config: Volumes must be an object, not {other}"
            )))
        }
    };
    let mut out = Vec::new();
    for p in paths {
        if p.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "malformed image config: volume path {p:?}"
            )));
        }
        let dest = clean(p);
        if dest == "/" {
            return Err(Error::InvalidArgument(
                "image declares the root directory as a volume".into(),
            ));
        }
        out.push(dest);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// How [`seed`] left the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    /// The image's directory was copied in.
    Copied,
    /// The image has nothing at that path: the target is an empty directory.
    Empty,
    /// The target already held something: left as it was.
    Kept,
}

/// Makes `target` a copy of the directory at `dest` in the rootfs `root` (owners, modes, links
/// and xattrs kept), unless `target` already holds something. A missing or empty `target` is
/// filled; with nothing at `dest` it is left (or made) an empty directory. Blocking.
pub fn seed(root: &Root, dest: &str, target: &Path) -> Result<Seeded> {
    if !is_empty_or_missing(target)? {
        return Ok(Seeded::Kept);
    }
    let parent = target.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(|e| Error::io_path("create", parent, e))?;
    let comps = safepath::clean(dest.as_bytes());
    let src = match root.openat2(&comps.join(&b'/'), libc::O_PATH) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return match std::fs::create_dir(target) {
                Ok(()) => Ok(Seeded::Empty),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Seeded::Empty),
                Err(e) => Err(Error::io_path("create", target, e)),
            };
        }
        Err(e) => {
            return Err(Error::Internal(format!(
                "volume {dest}: open it in the image's rootfs: {e}"
            )))
        }
    };
    let fd_path = PathBuf::from(format!(
        "/proc/{}/fd/{}",
        std::process::id(),
        std::os::fd::AsRawFd::as_raw_fd(&src)
    ));
    let meta = std::fs::metadata(&fd_path)
        .map_err(|e| Error::Internal(format!("volume {dest}: stat it in the rootfs: {e}")))?;
    if !meta.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "volume {dest}: the image has a non-directory at that path"
        )));
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique, so that two seeds of one volume at once never share a copy.
    let partial = parent.join(format!(
        ".{name}.partial-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    // `cp -a src/. new` makes `new` a copy of the directory itself (owner and mode included) and
    // of everything in it; symlinks are copied as links, never followed.
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(fd_path.join("."))
        .arg(&partial)
        .output()
        .map_err(|e| Error::Internal(format!("run cp -a: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(Error::Internal(format!(
            "volume {dest}: copy the image's content: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // rename(2) replaces an empty directory, and refuses one another seed has just filled.
    match std::fs::rename(&partial, target) {
        Ok(()) => Ok(Seeded::Copied),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
            let _ = std::fs::remove_dir_all(&partial);
            Ok(Seeded::Kept)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(Error::io_path("rename into place", target, e))
        }
    }
}

fn is_empty_or_missing(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io_path("read", dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/a/b/"), "/a/b");
        assert_eq!(clean("a/./b"), "/a/b");
        assert_eq!(clean("/../../etc"), "/etc");
        assert_eq!(clean("/a/../../b"), "/b");
    }

    #[test]
    fn seeds_copies_keeps_and_stays_inside_the_rootfs() {
        let rootfs = tempfile::tempdir().unwrap();
        let data = rootfs.path().join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/file"), b"from the image").unwrap();
        std::os::unix::fs::symlink("/etc", rootfs.path().join("etc-link")).unwrap();
        std::fs::create_dir(rootfs.path().join("etc")).unwrap();
        std::fs::write(rootfs.path().join("etc/only-in-image"), b"x").unwrap();
        std::fs::write(rootfs.path().join("file"), b"not a dir").unwrap();
        let root = Root::open(rootfs.path()).unwrap();
        let vols = tempfile::tempdir().unwrap();

        let t = vols.path().join("a/_data");
        assert_eq!(seed(&root, "/data", &t).unwrap(), Seeded::Copied);
        assert_eq!(
            std::fs::read(t.join("sub/file")).unwrap(),
            b"from the image"
        );
        // Something there already: kept as it is.
        std::fs::write(t.join("mine"), b"1").unwrap();
        std::fs::remove_file(t.join("sub/file")).unwrap();
        assert_eq!(seed(&root, "/data", &t).unwrap(), Seeded::Kept);
        assert!(t.join("mine").exists() && !t.join("sub/file").exists());
        // An empty directory is filled.
        let e = vols.path().join("b");
        std::fs::create_dir(&e).unwrap();
        assert_eq!(seed(&root, "data/../data", &e).unwrap(), Seeded::Copied);
        assert!(e.join("sub/file").exists());
        // Nothing in the image there: an empty directory.
        let n = vols.path().join("c");
        assert_eq!(seed(&root, "/nothing", &n).unwrap(), Seeded::Empty);
        assert!(is_empty_or_missing(&n).unwrap() && n.is_dir());
        // A symlink resolves inside the rootfs.
        let l = vols.path().join("d");
        assert_eq!(seed(&root, "/etc-link", &l).unwrap(), Seeded::Copied);
        assert!(l.join("only-in-image").exists());
        assert!(!l.join("passwd").exists(), "seeded from the host's /etc");
        // Not a directory: refused, nothing left behind.
        let f = vols.path().join("e");
        assert!(matches!(
            seed(&root, "/file", &f),
            Err(Error::InvalidArgument(_))
        ));
        assert!(!f.exists());
        let left: Vec<_> = std::fs::read_dir(vols.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains("partial"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
