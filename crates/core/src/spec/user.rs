//! Resolving a docker-style `user` string (`uid`, `uid:gid`, `name`, `name:group`) against the
//! container's own `/etc/passwd` and `/etc/group`, the way runc's `user.GetExecUser` does.

use std::io::Read;
use std::path::Path;

use crate::diff::safepath::Root;
use crate::{Error, Result};

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The largest passwd/group file read: they are small, and a hostile image must not make the
/// daemon read gigabytes.
const MAX_DB_SIZE: u64 = 16 << 20;

/// Reads a file under the rootfs; a missing file is an empty database (many minimal images have no
/// `/etc/group`). The path is resolved with `openat2(RESOLVE_IN_ROOT)`, as the container itself
/// would resolve it: a symlink anywhere on the way (`/etc -> /host/etc`, `passwd -> ../../../x`)
/// stays inside the rootfs and never reads a host file. Only regular files are read (a FIFO
/// would block the caller forever).
fn read_db(rootfs: &Path, rel: &str) -> Result<String> {
    let what = || format!("{} in {}", rel, rootfs.display());
    let root = Root::open(rootfs)?;
    let fd = match root.openat2(rel.as_bytes(), libc::O_RDONLY | libc::O_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(String::new())
        }
        Err(e) => return Err(Error::io(format!("open {}", what()), e)),
    };
    let file = std::fs::File::from(fd);
    let meta = file
        .metadata()
        .map_err(|e| Error::io(format!("stat {}", what()), e))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!(
            "{} is not a regular file",
            what()
        )));
    }
    let mut data = String::new();
    file.take(MAX_DB_SIZE)
        .read_to_string(&mut data)
        .map_err(|e| Error::io(format!("read {}", what()), e))?;
    Ok(data)
}

fn parse_passwd(data: &str) -> Vec<PasswdEntry> {
    data.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.trim().to_string();
            let _pw = f.next()?;
            let uid = f.next()?.trim().parse().ok()?;
            let gid = f.next()?.trim().parse().ok()?;
            (!name.is_empty()).then_some(PasswdEntry { name, uid, gid })
        })
        .collect()
}

fn parse_group(data: &str) -> Vec<GroupEntry> {
    data.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.trim().to_string();
            let _pw = f.next()?;
            let gid = f.next()?.trim().parse().ok()?;
            let members = f
                .next()
                .unwrap_or("")
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect();
            (!name.is_empty()).then_some(GroupEntry { name, gid, members })
        })
        .collect()
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves `user` to `(uid, gid, supplementary gids)`.
///
/// Numeric ids work without a rootfs (and without an entry in `/etc/passwd`; the gid then defaults
/// to the passwd entry's or 0, as with docker). Names need the rootfs. Supplementary groups are the
/// groups of `/etc/group` listing the user's name as a member (not including the primary gid),
/// and only when the group was not given explicitly — the docker/runc behaviour.
///
/// ```
/// # use wharf_core::spec::resolve_user;
/// assert_eq!(resolve_user(None, "1000:1000").unwrap(), (1000, 1000, vec![]));
/// ```
pub fn resolve_user(rootfs: Option<&Path>, user: &str) -> Result<(u32, u32, Vec<u32>)> {
    let user = user.trim();
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() || g == Some("") {
        return Err(Error::InvalidArgument(format!(
            "invalid user {user:?}: expected uid, uid:gid, name or name:group"
        )));
    }

    let (passwd, group) = match rootfs {
        Some(root) => (
            parse_passwd(&read_db(root, "etc/passwd")?),
            parse_group(&read_db(root, "etc/group")?),
        ),
        None => (Vec::new(), Vec::new()),
    };

    let (uid, mut gid, name) = match parse_id(u) {
        Some(uid) => match passwd.iter().find(|p| p.uid == uid) {
            Some(p) => (uid, p.gid, Some(p.name.clone())),
            None => (uid, 0, None),
        },
        None => {
            if rootfs.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "unable to find user {u}: a user name needs the container's rootfs to look up /etc/passwd"
                )));
            }
            match passwd.iter().find(|p| p.name == u) {
                Some(p) => (p.uid, p.gid, Some(p.name.clone())),
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "unable to find user {u}: no matching entries in passwd file"
                    )))
                }
            }
        }
    };

    if let Some(g) = g {
        gid = match parse_id(g) {
            Some(gid) => gid,
            None => {
                if rootfs.is_none() {
                    return Err(Error::InvalidArgument(format!(
                        "unable to find group {g}: a group name needs the container's rootfs to look up /etc/group"
                    )));
                }
                match group.iter().find(|e| e.name == g) {
                    Some(e) => e.gid,
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "unable to find group {g}: no matching entries in group file"
                        )))
                    }
                }
            }
        };
    }

    let mut extra = Vec::new();
    if let (Some(name), None) = (name, g) {
        for e in &group {
            if e.gid != gid && e.members.contains(&name) && !extra.contains(&e.gid) {
                extra.push(e.gid);
            }
        }
    }
    Ok((uid, gid, extra))
}

/// Resolves a group given by name or number (for `--group-add`).
pub fn resolve_group(rootfs: Option<&Path>, group: &str) -> Result<u32> {
    if let Some(gid) = parse_id(group) {
        return Ok(gid);
    }
    let Some(root) = rootfs else {
        return Err(Error::InvalidArgument(format!(
            "unable to find group {group}: a group name needs the container's rootfs"
        )));
    };
    parse_group(&read_db(root, "etc/group")?)
        .into_iter()
        .find(|e| e.name == group)
        .map(|e| e.gid)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unable to find group {group}: no matching entries in group file"
            ))
        })
}
