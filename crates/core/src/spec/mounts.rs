//! The default mounts of a container (containerd's default spec plus docker's cgroup mount) and
//! merging the user's mounts over them.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use crate::{Error, Result};

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

/// `/proc`, `/dev` (+ pts, shm, mqueue), `/sys` and `/sys/fs/cgroup`. Privileged containers get
/// `/sys` and the cgroup filesystem read-write (docker's behaviour, needed for nested runtimes).
pub fn default_mounts(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
    ]
}

/// A mount destination in canonical form: absolute, no `.`/`..`, no trailing slash, not `/`.
pub fn clean_destination(dest: &Path) -> Result<PathBuf> {
    if !dest.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "mount destination {} is not an absolute path",
            dest.display()
        )));
    }
    let mut out = PathBuf::from("/");
    for c in dest.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::InvalidArgument(format!(
                    "mount destination {} must not contain '..'",
                    dest.display()
                )))
            }
        }
    }
    if out == Path::new("/") {
        return Err(Error::InvalidArgument(
            "mount destination / would hide the container's rootfs".into(),
        ));
    }
    Ok(out)
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// Checks a user mount and returns it with a clean destination. Bind sources must be absolute host
/// paths (relative ones would resolve against the shim's working directory).
pub fn validate(m: &Mount) -> Result<Mount> {
    let mut m = m.clone();
    let dest = clean_destination(m.destination())?;
    if is_bind(&m) {
        match m.source() {
            Some(s) if s.is_absolute() => {}
            Some(s) => {
                return Err(Error::InvalidArgument(format!(
                    "bind mount source {} is not an absolute path",
                    s.display()
                )))
            }
            None => {
                return Err(Error::InvalidArgument(format!(
                    "bind mount to {} has no source",
                    dest.display()
                )))
            }
        }
    }
    m.set_destination(dest);
    Ok(m)
}

/// Default mounts overlaid by the user's: a default is dropped when a user mount has the same
/// destination or one of its parents (a user `/dev` bind replaces `/dev/pts` too). The result is
/// ordered by depth so parents are mounted before what lies under them.
pub fn merge(defaults: Vec<Mount>, user: &[Mount]) -> Result<Vec<Mount>> {
    let user = user.iter().map(validate).collect::<Result<Vec<_>>>()?;
    let mut out: Vec<Mount> = defaults
        .into_iter()
        .filter(|d| {
            !user
                .iter()
                .any(|u| d.destination().starts_with(u.destination()))
        })
        .collect();
    out.extend(user);
    out.sort_by_key(|m| m.destination().components().count());
    Ok(out)
}
