//! Image-declared volumes (`Volumes` in the image config, a Dockerfile's `VOLUME`), as
//! containerd's CRI makes them: every such path that no CRI mount covers gets a directory of
//! the container's own under `<root>/cri/containers/<id>/volumes/`, bound read-write there (so
//! it stays writable on a read-only rootfs), seeded at CreateContainer with what the image holds
//! at that path (owners, modes, links and xattrs kept) and removed with the container.
//!
//! The seed is copied from the container's freshly prepared snapshot, mounted read-only, by
//! `wharf_core::volume::seed` (the path resolved inside that rootfs; a copy renamed into place,
//! so a crash mid-copy leaves no half-seeded volume for StartContainer to mount).

use std::path::{Path, PathBuf};

use wharf_api::cri as pb;
use wharf_core::diff::safepath::Root;
use wharf_core::digest::Digest;
use wharf_core::images::ImageConfig;
use wharf_core::snapshots::Mount;
use wharf_core::volume::clean;

use crate::{Error, Result};

/// One image volume of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Where it is mounted in the container (absolute, clean).
    pub dest: String,
    /// The container's own directory for it.
    pub host: PathBuf,
}

/// The directory that holds a container's volumes (and nothing of anyone else).
pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join("cri").join("containers").join(id)
}

/// The image's volumes that no CRI mount covers, in path order, each with its directory under
/// `dir` (the container's, see [`container_dir`]). A malformed `Volumes` is refused.
pub fn plan(image: &ImageConfig, mounts: &[pb::Mount], dir: &Path) -> Result<Vec<Volume>> {
    let covered: Vec<String> = mounts.iter().map(|m| clean(&m.container_path)).collect();
    let out = wharf_core::volume::image_paths(image)?
        .into_iter()
        .filter(|dest| !covered.contains(dest))
        .map(|dest| Volume {
            host: dir
                .join("volumes")
                .join(&Digest::of(dest.as_bytes()).hex()[..16]),
            dest,
        })
        .collect();
    Ok(out)
}

/// Makes each volume's directory, seeded from the snapshot `mounts` (mounted read-only under
/// `tmp` for the copy). Blocking: run it off the async workers.
pub fn seed(volumes: &[Volume], mounts: &[Mount], tmp: &Path) -> Result<()> {
    if volumes.is_empty() {
        return Ok(());
    }
    let mut ro = mounts.to_vec();
    for m in &mut ro {
        m.options.retain(|o| o != "rw");
        m.options.push("ro".into());
    }
    let rootfs = wharf_core::mount::TempMount::new(&ro, tmp)?;
    let root = Root::open(rootfs.path())?;
    for v in volumes {
        seed_one(&root, v)?;
    }
    Ok(())
}

fn seed_one(root: &Root, v: &Volume) -> Result<()> {
    if v.host.exists() {
        return Ok(());
    }
    wharf_core::volume::seed(root, &v.dest, &v.host)?;
    Ok(())
}

/// Removes a container's directory and its volumes (gone already is fine).
pub fn remove(root: &Path, id: &str) -> Result<()> {
    let dir = container_dir(root, id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Internal(format!("remove {}: {e}", dir.display()))),
    }
}

/// The ids that have a container directory. Listed before the records are read, a directory
/// whose id has no record is an orphan: directories are made after their record is committed.
pub fn container_dirs(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("cri").join("containers")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(volumes: serde_json::Value) -> ImageConfig {
        ImageConfig {
            config: Some(serde_json::json!({ "Volumes": volumes })),
            ..Default::default()
        }
    }

    fn mount(path: &str) -> pb::Mount {
        pb::Mount {
            container_path: path.into(),
            host_path: "/srv".into(),
            ..Default::default()
        }
    }

    #[test]
    fn volumes_not_covered_by_mounts_get_a_directory_each() {
        let dir = Path::new("/r/cri/containers/c1");
        let img = image(serde_json::json!({
            "/data": {}, "/logs/": {}, "cache": {}, "/a/../data": {}, "/var/lib/x": {}
        }));
        let v = plan(&img, &[mount("/logs"), mount("/var/lib/x/")], dir).unwrap();
        let dests: Vec<&str> = v.iter().map(|v| v.dest.as_str()).collect();
        assert_eq!(dests, ["/cache", "/data"]);
        for v in &v {
            assert!(v.host.starts_with(dir.join("volumes")), "{v:?}");
        }
        assert_ne!(v[0].host, v[1].host);
        // The same path always names the same directory.
        let again = plan(&img, &[], dir).unwrap();
        assert_eq!(again.iter().find(|x| x.dest == "/data"), Some(&v[1]));
    }

    #[test]
    fn images_without_volumes_and_malformed_ones() {
        let dir = Path::new("/r");
        assert!(plan(&ImageConfig::default(), &[], dir).unwrap().is_empty());
        assert!(plan(&image(serde_json::Value::Null), &[], dir)
            .unwrap()
            .is_empty());
        assert!(matches!(
            plan(&image(serde_json::json!(["/data"])), &[], dir),
            Err(Error::Core(wharf_core::Error::InvalidArgument(_)))
        ));
        assert!(matches!(
            plan(&image(serde_json::json!({"/../": {}})), &[], dir),
            Err(Error::Core(wharf_core::Error::InvalidArgument(_)))
        ));
    }
}
