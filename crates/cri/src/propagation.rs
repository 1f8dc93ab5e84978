//! Mount propagation of CRI host-path mounts, as containerd checks it: Bidirectional needs the
//! host path on a shared mount, HostToContainer on a shared or slave one (else the container
//! would silently see nothing), and either sets the container's root propagation so the
//! mount's events can cross (`rshared`, `rslave`).

use std::path::Path;

use wharf_core::mount::MountInfo;

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

/// The mount `path` is on: the deepest mount point above it (the last such, as the last mount
/// on a point is the visible one).
fn mount_of<'a>(mounts: &'a [MountInfo], path: &Path) -> Option<&'a MountInfo> {
    let mut best: Option<&MountInfo> = None;
    for m in mounts.iter().filter(|m| path.starts_with(&m.point)) {
        if best.is_none_or(|b| m.point.components().count() >= b.point.components().count()) {
            best = Some(m);
        }
    }
    best
}

/// Checks that `src` (an existing host path) sits on a mount whose propagation lets `need`
/// work; `mounts` is the mount table (`wharf_core::mount::mountinfo`).
pub fn check(mounts: &[MountInfo], src: &Path, need: Need) -> Result<()> {
    if need == Need::None {
        return Ok(());
    }
    let real = std::fs::canonicalize(src)
        .map_err(|e| Error::Internal(format!("resolve host path {}: {e}", src.display())))?;
    let Some(m) = mount_of(mounts, &real) else {
        return Err(Error::Internal(format!(
            "no mount found for host path {}",
            real.display()
        )));
    };
    let (point, optional) = (&m.point, &m.optional);
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
    use wharf_core::mount::parse_mountinfo;

    const INFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:25 / /run rw,nosuid - tmpfs tmpfs rw
41 22 254:0 /var/tmp/x /var/tmp/x rw,relatime shared:9 master:1 - ext4 /dev/vda rw
42 30 0:25 /s /run/sl rw master:3 - tmpfs tmpfs rw
43 22 254:0 /a\\040b /mnt/a\\040b rw - ext4 /dev/vda rw
";

    #[test]
    fn finds_the_mount_of_a_path() {
        let info = parse_mountinfo(INFO);
        let of = |p: &str| {
            let m = mount_of(&info, Path::new(p)).unwrap();
            (m.point.display().to_string(), m.optional.clone())
        };
        assert_eq!(
            of("/var/tmp/x/y"),
            (
                "/var/tmp/x".into(),
                vec!["shared:9".into(), "master:1".into()]
            )
        );
        assert_eq!(of("/run/a"), ("/run".into(), vec![]));
        // Component-wise: /var/tmp/xy is not under /var/tmp/x.
        assert_eq!(of("/var/tmp/xy").0, "/");
        assert_eq!(of("/mnt/a b/c").0, "/mnt/a b");
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
        let info = parse_mountinfo(&info);
        assert!(check(&info, p, Need::None).is_ok());
        assert!(check(&info, p, Need::Slave).is_ok());
        let e = check(&info, p, Need::Shared).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("not a shared mount"), "{e}");
        let private = parse_mountinfo("1 0 0:1 / / rw - ext4 x rw\n");
        assert!(check(&private, p, Need::Slave).is_err());
        let shared = parse_mountinfo("1 0 0:1 / / rw shared:1 - ext4 x rw\n");
        assert!(check(&shared, p, Need::Shared).is_ok());
    }
}
