//! `wharf cp`: copies files between the host and a running container's filesystem, through the
//! container's root (`/proc/<pid>/root`) opened once and every path inside it resolved with
//! openat2(RESOLVE_IN_ROOT), so a symlink in the container (absolute or `..`) can never lead the
//! copy out onto the host's files. Directories are copied recursively; symlinks are copied as
//! symlinks, never followed.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::client::Client;
use crate::containers;

/// `name:path` → (container, path); host paths have no colon before the first slash.
pub fn split(arg: &str) -> Option<(&str, &str)> {
    let (c, p) = arg.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

fn openat2(dir: RawFd, path: &Path, flags: i32, resolve: u64) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has a NUL byte")
    })?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = if flags & libc::O_CREAT != 0 { 0o644 } else { 0 };
    how.resolve = resolve;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Inside the container: resolved in its root, symlinks included, never above it.
fn open_in_root(root: &OwnedFd, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    let rel = path.strip_prefix("/").unwrap_or(path);
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(root.as_raw_fd(), rel, flags, libc::RESOLVE_IN_ROOT)
}

/// One entry below an already opened directory: no symlink followed, nothing outside it.
fn open_beneath(dir: &OwnedFd, name: &Path, flags: i32) -> std::io::Result<OwnedFd> {
    openat2(
        dir.as_raw_fd(),
        name,
        flags | libc::O_NOFOLLOW,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS,
    )
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub async fn cp(c: &Client, src: &str, dst: &str) -> Result<()> {
    let (id, into) = match (split(src), split(dst)) {
        (Some(_), Some(_)) => bail!("copying between two containers is not supported"),
        (None, None) => bail!("one of SRC and DEST must be CONTAINER:PATH"),
        (Some((id, _)), None) => (id.to_string(), false),
        (None, Some((id, _))) => (id.to_string(), true),
    };
    let task = containers::task(c, &id).await?;
    if !containers::running(&task) {
        bail!("container {id} is not running (cp needs a running container)");
    }
    let pid = task.map(|t| t.pid).unwrap_or(0);
    let root: OwnedFd = File::open(format!("/proc/{pid}/root"))
        .with_context(|| format!("open the root of container {id}"))?
        .into();
    if into {
        let path = split(dst).map(|(_, p)| p).unwrap_or("/");
        to_container(&root, Path::new(src), Path::new(path))
    } else {
        let path = split(src).map(|(_, p)| p).unwrap_or("/");
        from_container(&root, Path::new(path), Path::new(dst))
    }
}

/// Where a copy of `name` lands: inside `dst` when it is an existing directory, else `dst`.
fn host_target(dst: &Path, name: &std::ffi::OsStr) -> PathBuf {
    if dst.is_dir() {
        dst.join(name)
    } else {
        dst.to_path_buf()
    }
}

fn from_container(root: &OwnedFd, path: &Path, dst: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_owned())
        .unwrap_or_else(|| "root".into());
    let fd = open_in_root(root, path, libc::O_PATH)
        .with_context(|| format!("{} in the container", path.display()))?;
    copy_out(fd, &host_target(dst, &name))
}

fn copy_out(fd: OwnedFd, target: &Path) -> Result<()> {
    let md = std::fs::metadata(fd_path(&fd))?;
    if md.is_dir() {
        std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        let dir = File::open(fd_path(&fd))?;
        let dirfd: OwnedFd = dir.into();
        for entry in std::fs::read_dir(fd_path(&dirfd))? {
            let entry = entry?;
            let name = entry.file_name();
            let ft = entry.file_type()?;
            let out = target.join(&name);
            if ft.is_symlink() {
                let link = std::fs::read_link(fd_path(&dirfd).join(&name))?;
                let _ = std::fs::remove_file(&out);
                std::os::unix::fs::symlink(&link, &out)
                    .with_context(|| format!("symlink {}", out.display()))?;
            } else if ft.is_dir() || ft.is_file() {
                let child = open_beneath(&dirfd, Path::new(&name), libc::O_PATH)?;
                copy_out(child, &out)?;
            }
        }
        return Ok(());
    }
    if !md.is_file() {
        bail!("{} is not a regular file or directory", target.display());
    }
    let mut input = File::open(fd_path(&fd))?;
    let mut output =
        File::create(target).with_context(|| format!("create {}", target.display()))?;
    std::io::copy(&mut input, &mut output)?;
    output.set_permissions(std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    Ok(())
}

fn to_container(root: &OwnedFd, src: &Path, dst: &Path) -> Result<()> {
    let md = std::fs::symlink_metadata(src).with_context(|| format!("{}", src.display()))?;
    let name = src
        .file_name()
        .context("the source has no file name")?
        .to_owned();
    // The destination: into an existing directory, or as a new name in its parent.
    let (dir, name) = match open_in_root(root, dst, libc::O_DIRECTORY | libc::O_RDONLY) {
        Ok(d) => (d, name),
        Err(_) => {
            let parent = dst.parent().unwrap_or(Path::new("/"));
            let d = open_in_root(root, parent, libc::O_DIRECTORY | libc::O_RDONLY)
                .with_context(|| format!("{} in the container", parent.display()))?;
            (d, dst.file_name().context("bad destination")?.to_owned())
        }
    };
    copy_in(src, &md, &dir, Path::new(&name))
}

fn copy_in(src: &Path, md: &std::fs::Metadata, dir: &OwnedFd, name: &Path) -> Result<()> {
    let c = CString::new(name.as_os_str().as_bytes()).context("NUL in a name")?;
    if md.file_type().is_symlink() {
        let target = CString::new(std::fs::read_link(src)?.as_os_str().as_bytes())?;
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
        if unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), c.as_ptr()) } != 0 {
            return Err(std::io::Error::last_os_error())
                .context(format!("symlink {}", name.display()));
        }
        return Ok(());
    }
    if md.is_dir() {
        let r = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), md.mode() & 0o7777) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e).context(format!("mkdir {}", name.display()));
            }
        }
        let sub = open_beneath(dir, name, libc::O_DIRECTORY | libc::O_RDONLY)
            .with_context(|| format!("{} in the container", name.display()))?;
        for entry in std::fs::read_dir(src)? {
            let entry = entry?;
            let emd = entry.metadata()?;
            copy_in(&entry.path(), &emd, &sub, Path::new(&entry.file_name()))?;
        }
        return Ok(());
    }
    if !md.is_file() {
        bail!(
            "{} is not a regular file, directory or symlink",
            src.display()
        );
    }
    let out = open_beneath(dir, name, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)
        .with_context(|| format!("create {} in the container", name.display()))?;
    let mut out = File::from(out);
    let mut input = File::open(src)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
    }
    out.set_permissions(std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_container_paths() {
        assert_eq!(split("web:/etc/hosts"), Some(("web", "/etc/hosts")));
        assert_eq!(split("/tmp/a:b"), None);
        assert_eq!(split("./x"), None);
        assert_eq!(split(":/x"), None);
    }

    /// A symlink inside a "container root" pointing at an absolute host path resolves inside
    /// the root, never on the host.
    #[test]
    fn symlinks_stay_inside_the_root() {
        let root_dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(root_dir.path().join("etc")).unwrap();
        std::fs::write(root_dir.path().join("etc/passwd"), b"inside\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root_dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink("../../../../../etc", root_dir.path().join("up")).unwrap();
        let root: OwnedFd = File::open(root_dir.path()).unwrap().into();
        let out = tempfile::tempdir().unwrap();
        from_container(&root, Path::new("/link"), &out.path().join("a")).unwrap();
        assert_eq!(std::fs::read(out.path().join("a")).unwrap(), b"inside\n");
        from_container(&root, Path::new("/up/passwd"), &out.path().join("b")).unwrap();
        assert_eq!(std::fs::read(out.path().join("b")).unwrap(), b"inside\n");
        // Writing through the escaping symlink lands inside the root too.
        let src = out.path().join("new");
        std::fs::write(&src, b"payload").unwrap();
        to_container(&root, &src, Path::new("/up/")).unwrap();
        assert_eq!(
            std::fs::read(root_dir.path().join("etc/new")).unwrap(),
            b"payload"
        );
    }
}
