//! Device nodes: the device-cgroup rules every container gets, host device passthrough (CRI
//! `Devices`, `--device`) and the host's devices for privileged containers.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};

use crate::{Error, Result};

/// A host device (or a directory of them) to expose in the container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceMapping {
    /// Device node or directory on the host.
    pub host_path: PathBuf,
    /// Where it appears in the container; empty = the host path.
    pub container_path: String,
    /// Cgroup access, a non-empty subset of `rwm`; empty = `rwm`.
    pub permissions: String,
}

fn cgroup_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(typ);
    r.set_major(major);
    r.set_minor(minor);
    r.set_access(Some(access.to_string()));
    r
}

/// Deny everything, then allow the character devices every container needs (containerd's list):
/// null, zero, full, tty, random, urandom, console, ptmx and the pts slaves.
pub fn default_cgroup_rules() -> Vec<LinuxDeviceCgroup> {
    let c = Some(LinuxDeviceType::C);
    let mut rules = vec![cgroup_rule(false, None, None, None, "rwm")];
    for (major, minor) in [
        (1, 3),
        (1, 5),
        (1, 7),
        (5, 0),
        (1, 8),
        (1, 9),
        (5, 1),
        (5, 2),
    ] {
        rules.push(cgroup_rule(true, c, Some(major), Some(minor), "rwm"));
    }
    rules.push(cgroup_rule(true, c, Some(136), None, "rwm"));
    rules
}

/// The single rule of a privileged container: every device.
pub fn allow_all_rule() -> LinuxDeviceCgroup {
    cgroup_rule(true, Some(LinuxDeviceType::A), None, None, "rwm")
}

fn device_of(md: &std::fs::Metadata) -> Option<(LinuxDeviceType, i64, i64)> {
    let ft = md.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return None;
    };
    let rdev = md.rdev();
    Some((
        typ,
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
    ))
}

fn linux_device(
    path: PathBuf,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    md: &std::fs::Metadata,
) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(path);
    d.set_typ(typ);
    d.set_major(major);
    d.set_minor(minor);
    d.set_file_mode(Some(md.mode() & 0o7777));
    d.set_uid(Some(md.uid()));
    d.set_gid(Some(md.gid()));
    d
}

fn check_permissions(p: &str) -> Result<String> {
    if p.is_empty() {
        return Ok("rwm".into());
    }
    if p.chars().all(|c| "rwm".contains(c)) {
        Ok(p.to_string())
    } else {
        Err(Error::InvalidArgument(format!(
            "device permissions {p:?} must be a subset of \"rwm\""
        )))
    }
}

/// Resolves a mapping to device nodes and their cgroup rules. A directory maps every device
/// below it (symlinks are not followed), keeping the relative layout under `container_path`.
pub fn resolve(m: &DeviceMapping) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let access = check_permissions(&m.permissions)?;
    let container = if m.container_path.is_empty() {
        m.host_path.clone()
    } else {
        PathBuf::from(&m.container_path)
    };
    if !container.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "device container path {} is not absolute",
            container.display()
        )));
    }
    let md = std::fs::metadata(&m.host_path)
        .map_err(|e| Error::io_path("stat device", &m.host_path, e))?;
    let mut found = Vec::new();
    if md.is_dir() {
        walk(&m.host_path, &m.host_path, &container, &mut found)?;
    } else if let Some((typ, major, minor)) = device_of(&md) {
        found.push(linux_device(container, typ, major, minor, &md));
    } else {
        return Err(Error::InvalidArgument(format!(
            "{} is not a device node",
            m.host_path.display()
        )));
    }
    let rules = found
        .iter()
        .map(|d| {
            cgroup_rule(
                true,
                Some(d.typ()),
                Some(d.major()),
                Some(d.minor()),
                &access,
            )
        })
        .collect();
    Ok((found, rules))
}

fn walk(root: &Path, dir: &Path, container: &Path, out: &mut Vec<LinuxDevice>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io_path("read device directory", dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io_path("read device directory", dir, e))?;
        let path = entry.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            walk(root, &path, container, out)?;
        } else if let Some((typ, major, minor)) = device_of(&md) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            out.push(linux_device(container.join(rel), typ, major, minor, &md));
        }
    }
    Ok(())
}

/// Nodes every OCI runtime creates in a container's /dev itself; listing them again makes
/// libcontainer's mknod fail with EEXIST.
const RUNTIME_DEFAULT_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
];

/// Directories of /dev that are per-container mounts or runtime bookkeeping, never passed through.
const HOST_DEV_SKIP: &[&str] = &["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];

/// Every device node of the host's `/dev` (for privileged containers, as containerd's
/// `WithHostDevices`), skipping per-container directories and `/dev/console`. Unreadable entries
/// are skipped: a device vanishing while we walk must not fail container creation.
pub fn host_devices() -> Vec<LinuxDevice> {
    let mut out = Vec::new();
    host_walk(Path::new("/dev"), &mut out);
    out
}

fn host_walk(dir: &Path, out: &mut Vec<LinuxDevice>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if md.is_dir() {
            let name = entry.file_name();
            if dir == Path::new("/dev") && HOST_DEV_SKIP.iter().any(|s| name == *s) {
                continue;
            }
            host_walk(&path, out);
        } else if path == Path::new("/dev/console")
            || RUNTIME_DEFAULT_DEVICES.iter().any(|d| path == Path::new(d))
        {
            continue;
        } else if let Some((typ, major, minor)) = device_of(&md) {
            out.push(linux_device(path, typ, major, minor, &md));
        }
    }
}
