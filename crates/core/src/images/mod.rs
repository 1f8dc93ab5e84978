//! OCI and Docker image formats: manifests, indexes, configs, platform matching, chain IDs, and
//! unpacking an image's layers into snapshots.

mod platform;
pub mod unpack;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use platform::Platform;

use crate::{Digest, Error, Result};

pub const MEDIA_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Manifests and configs larger than this are refused (they are small JSON documents).
pub const MAX_MANIFEST_SIZE: u64 = 4 << 20;

/// containerd's label naming a layer's uncompressed digest.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct RootFs {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// The parts of an image config wharf uses (the rest is kept as raw JSON by callers).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    #[serde(default)]
    pub rootfs: RootFs,
}

/// Is this media type a manifest list / index?
pub fn is_index(media_type: &str) -> bool {
    media_type == MEDIA_OCI_INDEX || media_type == MEDIA_DOCKER_LIST
}

/// Is this media type an image manifest?
pub fn is_manifest(media_type: &str) -> bool {
    media_type == MEDIA_OCI_MANIFEST || media_type == MEDIA_DOCKER_MANIFEST
}

/// Is this media type a layer wharf can apply?
pub fn is_layer(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.oci.image.layer.")
        || media_type.starts_with("application/vnd.docker.image.rootfs.")
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, data: &[u8]) -> Result<T> {
    if data.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(Error::InvalidArgument(format!(
            "{what} is {} bytes, larger than the {MAX_MANIFEST_SIZE} byte limit",
            data.len()
        )));
    }
    serde_json::from_slice(data)
        .map_err(|e| Error::InvalidArgument(format!("malformed {what}: {e}")))
}

pub fn parse_manifest(data: &[u8]) -> Result<Manifest> {
    let m: Manifest = parse_json("manifest", data)?;
    if m.schema_version != 2 {
        return Err(Error::InvalidArgument(format!(
            "manifest schema version {} is not supported (schema 1 images are deprecated)",
            m.schema_version
        )));
    }
    Digest::parse(&m.config.digest)?;
    for l in &m.layers {
        Digest::parse(&l.digest)?;
    }
    Ok(m)
}

pub fn parse_index(data: &[u8]) -> Result<Index> {
    let i: Index = parse_json("index", data)?;
    for m in &i.manifests {
        Digest::parse(&m.digest)?;
    }
    Ok(i)
}

pub fn parse_config(data: &[u8]) -> Result<ImageConfig> {
    let c: ImageConfig = parse_json("image config", data)?;
    for d in &c.rootfs.diff_ids {
        Digest::parse(d)?;
    }
    Ok(c)
}

/// Chain IDs of a layer stack: `chain(0) = diff(0)`, `chain(n) = sha256(chain(n-1) + " " + diff(n))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => {
                let mut h = Sha256::new();
                h.update(format!("{prev} {d}").as_bytes());
                Digest::from_hasher(h)
            }
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_match_the_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn malformed_and_oversized_manifests_are_refused() {
        assert!(parse_manifest(b"{").is_err());
        assert!(
            parse_manifest(br#"{"schemaVersion":1,"config":{"digest":"sha256:00","size":1}}"#)
                .is_err()
        );
        let big = vec![b' '; (MAX_MANIFEST_SIZE + 1) as usize];
        assert!(parse_manifest(&big).is_err());
        let d = Digest::of(b"x");
        let ok = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{MEDIA_OCI_CONFIG}","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(parse_manifest(ok.as_bytes()).is_ok());
    }
}

#[cfg(test)]
mod unpack_tests {
    use std::io::Write;
    use std::sync::Arc;

    use super::*;
    use crate::content::Store;
    use crate::metadata::{Db, Labels};
    use crate::snapshots::{Backend, Native, Overlay, SnapshotStore};

    fn put(db: &Db, data: &[u8]) -> Digest {
        let mut w = db
            .content_writer("n", &format!("r{}", Digest::of(data)), 0, None, None)
            .unwrap();
        w.write(data).unwrap();
        w.commit(0, None, Labels::new()).unwrap()
    }

    fn layer(files: &[(&str, &str)]) -> (Vec<u8>, Digest) {
        let mut b = tar::Builder::new(Vec::new());
        for (p, c) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(c.len() as u64);
            b.append_data(&mut h, p, c.as_bytes()).unwrap();
        }
        let t = b.into_inner().unwrap();
        let d = Digest::of(&t);
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&t).unwrap();
        (e.finish().unwrap(), d)
    }

    fn image(db: &Db) -> (Digest, Vec<Digest>) {
        let (l1, d1) = layer(&[("a", "one"), ("keep", "k")]);
        let (l2, d2) = layer(&[(".wh.a", ""), ("b", "two")]);
        let (g1, g2) = (put(db, &l1), put(db, &l2));
        let cfg = serde_json::json!({"architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [d1.to_string(), d2.to_string()]}});
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let c = put(db, &cfg);
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": MEDIA_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_OCI_CONFIG, "digest": c.to_string(), "size": cfg.len()},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": g1.to_string(), "size": l1.len()},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": g2.to_string(), "size": l2.len()}]});
        (put(db, &serde_json::to_vec(&m).unwrap()), vec![d1, d2])
    }

    #[test]
    fn unpacks_into_both_snapshotters_and_skips_present_layers() {
        for (name, backend) in [
            ("overlayfs", Arc::new(Overlay) as Arc<dyn Backend>),
            ("native", Arc::new(Native)),
        ] {
            let t = tempfile::Builder::new()
                .prefix("wharf-unpack")
                .tempdir_in("/var/tmp")
                .unwrap();
            let db = Db::open(
                &t.path().join("m.db"),
                Store::open(t.path().join("c")).unwrap(),
            )
            .unwrap();
            let s = SnapshotStore::open(name, t.path().join(name), db.clone(), backend).unwrap();
            let (manifest, diffs) = image(&db);
            let top = unpack::unpack(&db, &s, "n", &manifest, None, &t.path().join("tmp")).unwrap();
            assert_eq!(top, chain_ids(&diffs)[1]);
            // A rootfs on top shows the flattened tree.
            s.prepare("n", "ctr", Some(&top.to_string()), Labels::new(), None)
                .unwrap();
            let m = s.mounts("n", "ctr").unwrap();
            let mnt = crate::mount::TempMount::new(&m, &t.path().join("tmp")).unwrap();
            assert!(!mnt.path().join("a").exists(), "{name}: whiteout");
            assert_eq!(
                std::fs::read_to_string(mnt.path().join("b")).unwrap(),
                "two"
            );
            assert_eq!(
                std::fs::read_to_string(mnt.path().join("keep")).unwrap(),
                "k"
            );
            drop(mnt);
            // Again: nothing to do, same result.
            let before = s
                .walk("n", &crate::filters::Filter::default())
                .unwrap()
                .len();
            assert_eq!(
                unpack::unpack(&db, &s, "n", &manifest, None, &t.path().join("tmp")).unwrap(),
                top
            );
            assert_eq!(
                s.walk("n", &crate::filters::Filter::default())
                    .unwrap()
                    .len(),
                before
            );
        }
    }
}
