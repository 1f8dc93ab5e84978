//! Mount propagation of CRI host-path mounts, as containerd checks it: Bidirectional needs the
//! host path on a shared mount, HostToContainer on a shared or slave one (else the container
//! would silently see nothing), and either sets the container's root propagation so the
//! mount's events can cross (`rshared`, `rslave`).

use std::path::{Path, PathBuf};

use wharf_api::cri as pb;

use crate::{Error, Result};

/// What a mount's propagation needs of the host and of the container's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    None,
    /// HostToContainer: a shared or slave host mount; the root at least `rslave`.
    Slave,
    /// Bidirectional: a shared host mount; the root `rshared`.
    Shared,
}

impl Need {
    pub fn of(m: &pb::Mount) -> Need {
        match pb::MountPropagation::try_from(m.propagation) {
            Ok(pb::MountPropagation::PropagationBidirectional) => Need::Shared,
            Ok(pb::MountPropagation::PropagationHostToContainer) => Need::Slave,
            _ => Need::None,
        }
    }

    /// The container root's propagation for the strongest need of its mounts.
    pub fn rootfs(needs: impl Iterator<Item = Need>) -> Option<String> {
        match needs.max_by_key(|n| *n as u8) {
            Some(Need::Shared) => Some("rshared".into()),
            Some(Need::Slave) => Some("rslave".into()),
            _ => None,
        }
    }
}

/// One line of mountinfo: the mount point and its optional fields (`shared:N`, `master:N`...).
fn parse_line(line: &str) -> Option<(PathBuf, Vec<&str>)> {
    let mut f = line.split(' ');
    let point = f.nth(4)?;
    let _options = f.next()?;
    let optional: Vec<&str> = f.take_while(|x| *x != "-").collect();
    Some((PathBuf::from(unescape(point)), optional))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The optional fields of the mount `path` is on (the deepest mount point above it; the last
/// such line, as the last mount on a point is the visible one).
fn mount_of<'a>(mountinfo: &'a str, path: &Path) -> Option<(PathBuf, Vec<&'a str>)> {
    let mut best: Option<(PathBuf, Vec<&str>)> = None;
    for (point, optional) in mountinfo.lines().filter_map(parse_line) {
        if !path.starts_with(&point) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|(b, _)| point.components().count() >= b.components().count())
        {
            best = Some((point, optional));
        }
    }
    best
}

/// Checks that `src` (an existing host path) sits on a mount whose propagation lets `need`
/// work; `mountinfo` is the text of `/proc/self/mountinfo`.
pub fn check(mountinfo: &str, src: &Path, need: Need) -> Result<()> {
    if need == Need::None {
        return Ok(());
    }
    let real = std::fs::canonicalize(src)
        .map_err(|e| Error::Internal(format!("resolve host path {}: {e}", src.display())))?;
    let Some((point, optional)) = mount_of(mountinfo, &real) else {
        return Err(Error::Internal(format!(
            "no mount found for host path {}",
            real.display()
        )));
    };
    let shared = optional.iter().any(|o| o.starts_with("shared:"));
    let slave = optional.iter().any(|o| o.starts_with("master:"));
    match need {
        Need::Shared if !shared => Err(Error::InvalidArgument(format!(
            "path {:?} is mounted on {:?} but it is not a shared mount (Bidirectional \
             propagation needs one)",
            real, point
        ))),
        Need::Slave if !shared && !slave => Err(Error::InvalidArgument(format!(
            "path {:?} is mounted on {:?} but it is not a shared or slave mount \
             (HostToContainer propagation needs one)",
            real, point
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:25 / /run rw,nosuid - tmpfs tmpfs rw
41 22 254:0 /var/tmp/x /var/tmp/x rw,relatime shared:9 master:1 - ext4 /dev/vda rw
42 30 0:25 /s /run/sl rw master:3 - tmpfs tmpfs rw
43 22 254:0 /a\\040b /mnt/a\\040b rw - ext4 /dev/vda rw
";

    #[test]
    fn finds_the_mount_of_a_path() {
        let (p, o) = mount_of(INFO, Path::new("/var/tmp/x/y")).unwrap();
        assert_eq!(
            (p, o),
            (PathBuf::from("/var/tmp/x"), vec!["shared:9", "master:1"])
        );
        let (p, o) = mount_of(INFO, Path::new("/run/a")).unwrap();
        assert_eq!((p, o), (PathBuf::from("/run"), vec![]));
        // Component-wise: /var/tmp/xy is not under /var/tmp/x.
        assert_eq!(
            mount_of(INFO, Path::new("/var/tmp/xy")).unwrap().0,
            PathBuf::from("/")
        );
        assert_eq!(
            mount_of(INFO, Path::new("/mnt/a b/c")).unwrap().0,
            PathBuf::from("/mnt/a b")
        );
    }

    #[test]
    fn root_propagation_follows_the_strongest_need() {
        assert_eq!(Need::rootfs([Need::None, Need::None].into_iter()), None);
        assert_eq!(
            Need::rootfs([Need::Slave, Need::None].into_iter()).as_deref(),
            Some("rslave")
        );
        assert_eq!(
            Need::rootfs([Need::Slave, Need::Shared, Need::None].into_iter()).as_deref(),
            Some("rshared")
        );
    }

    #[test]
    fn needs_are_checked_against_the_mount() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let info = format!(
            "1 0 0:1 / / rw - ext4 x rw\n2 1 0:2 / {} rw master:4 - tmpfs t rw\n",
            p.canonicalize().unwrap().display()
        );
        assert!(check(&info, p, Need::None).is_ok());
        assert!(check(&info, p, Need::Slave).is_ok());
        let e = check(&info, p, Need::Shared).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("not a shared mount"), "{e}");
        let private = "1 0 0:1 / / rw - ext4 x rw\n";
        assert!(check(private, p, Need::Slave).is_err());
        let shared = "1 0 0:1 / / rw shared:1 - ext4 x rw\n";
        assert!(check(shared, p, Need::Shared).is_ok());
    }
}
