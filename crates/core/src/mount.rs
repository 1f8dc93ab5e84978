//! Mounting containerd mount descriptions (bind and overlay) on a target, and unmounting, for the
//! diff service and the runtime (requires CAP_SYS_ADMIN); reading the mount table.

use std::path::{Path, PathBuf};

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

/// One line of `/proc/self/mountinfo`: where it is mounted, and its optional fields
/// (`shared:N`, `master:N`... : its propagation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub point: PathBuf,
    pub optional: Vec<String>,
}

/// Parses the text of a mountinfo file (lines that do not parse are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let point = f.nth(4)?;
            let _options = f.next()?;
            Some(MountInfo {
                point: PathBuf::from(unescape_mountinfo(point)),
                optional: f.take_while(|x| *x != "-").map(str::to_string).collect(),
            })
        })
        .collect()
}

/// This mount namespace's mounts, in mount order.
pub fn mountinfo() -> std::io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            out.push(
                d.iter()
                    .fold(0u8, |n, c| n.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod mountinfo_tests {
    use super::*;

    #[test]
    fn mountinfo_lines_and_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
        let m = parse_mountinfo(
            "41 22 254:0 /x /var/tmp/a\\040b rw,relatime shared:9 master:1 - ext4 /dev/vda rw\n\
             30 22 0:25 / /run rw,nosuid - tmpfs tmpfs rw\nbroken\n",
        );
        assert_eq!(
            m,
            [
                MountInfo {
                    point: "/var/tmp/a b".into(),
                    optional: vec!["shared:9".into(), "master:1".into()],
                },
                MountInfo {
                    point: "/run".into(),
                    optional: vec![],
                },
            ]
        );
    }
}
