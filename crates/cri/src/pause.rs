//! The built-in sandbox image: wharf's own pause program (`pause/pause.c`, built static by the
//! build script and embedded here) as a one-layer OCI image, `wharf.local/pause:<version>`.
//! [`Cri::ensure_sandbox_image`] imports and unpacks it into the `k8s.io` namespace when it is
//! missing, so pods start without a registry. The image is built the same way every time
//! (fixed tar headers, no timestamps), so its ID only changes with the program.

use std::path::Path;

use wharf_core::images::{
    self, Platform, LABEL_UNCOMPRESSED, MEDIA_OCI_CONFIG, MEDIA_OCI_MANIFEST,
};
use wharf_core::metadata::{
    self, Db, Labels, LeaseResource, LABEL_GC_EXPIRE, LABEL_GC_REF_CONTENT,
};
use wharf_core::snapshots::SnapshotStore;
use wharf_core::Digest;

use crate::images::{normalize, LABEL_IMAGE_MANAGED, LABEL_IMAGE_PINNED};
use crate::{Cri, Error, Result, NAMESPACE};

/// The static pause executable.
pub const BINARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pause"));

/// The repository of the built-in image.
pub const BUILTIN_REPOSITORY: &str = "wharf.local/pause";

/// The layer's media type: an uncompressed tar (the layer digest is its diff ID).
const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// `wharf.local/pause:<wharf version>`, the default `sandbox_image`.
pub fn builtin_name() -> String {
    format!("{BUILTIN_REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// The blobs of the built-in image.
pub struct BuiltinImage {
    pub layer: Vec<u8>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
}

impl BuiltinImage {
    /// Builds the image (in memory; about the size of the program).
    pub fn build() -> Result<BuiltinImage> {
        let layer = layer_tar()?;
        let diff_id = Digest::of(&layer);
        let platform = Platform::host();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "config": {
                "Entrypoint": ["/pause"],
                "WorkingDir": "/",
                // As Kubernetes' pause image: nobody needs root to wait for signals.
                "User": "65535:65535",
                "Labels": {"io.wharf.builtin": "pause"},
            },
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created_by": "wharf: built-in pause image", "comment": env!("CARGO_PKG_VERSION")}],
        }))
        .map_err(|e| Error::Internal(format!("encode pause image config: {e}")))?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_OCI_MANIFEST,
            "config": {
                "mediaType": MEDIA_OCI_CONFIG,
                "digest": Digest::of(&config).to_string(),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": MEDIA_LAYER_TAR,
                "digest": diff_id.to_string(),
                "size": layer.len(),
            }],
        }))
        .map_err(|e| Error::Internal(format!("encode pause image manifest: {e}")))?;
        Ok(BuiltinImage {
            layer,
            config,
            manifest,
        })
    }

    /// The image ID (config digest).
    pub fn id(&self) -> Digest {
        Digest::of(&self.config)
    }

    pub fn manifest_digest(&self) -> Digest {
        Digest::of(&self.manifest)
    }

    /// The top (only) layer's chain ID, the key of its snapshot.
    pub fn chain_id(&self) -> Digest {
        Digest::of(&self.layer)
    }

    pub fn target(&self) -> metadata::Descriptor {
        metadata::Descriptor {
            media_type: MEDIA_OCI_MANIFEST.to_string(),
            digest: self.manifest_digest().to_string(),
            size: self.manifest.len() as i64,
            annotations: Labels::new(),
        }
    }
}

/// A tar holding `/pause` (root-owned, 0755, mtime 0).
fn layer_tar() -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(BINARY.len() as u64);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "pause", BINARY)
        .and_then(|()| b.into_inner())
        .map_err(|e| Error::Internal(format!("build pause layer: {e}")))
}

impl Cri {
    /// Makes sure the configured sandbox image is in the `k8s.io` namespace, unpacked, and
    /// returns its ID: the built-in image is imported from wharfd itself, any other is pulled
    /// when missing. Cheap when it is there already.
    pub async fn ensure_sandbox_image(&self) -> Result<String> {
        let _one_at_a_time = self.sandbox_image_lock.lock().await;
        let name = normalize(&self.config.sandbox_image)?;
        if name == normalize(&builtin_name())? {
            return self.import_builtin(&name).await;
        }
        if let Some(img) = self.resolve_image(&name)? {
            return Ok(img.id);
        }
        let pinned = Labels::from([(LABEL_IMAGE_PINNED.to_string(), "pinned".to_string())]);
        self.pull_labelled(&name, None, pinned).await
    }

    async fn import_builtin(&self, name: &str) -> Result<String> {
        let img = BuiltinImage::build()?;
        let id = img.id().to_string();
        let repo_digest = format!("{BUILTIN_REPOSITORY}@{}", img.manifest_digest());
        let names = [name.to_string(), repo_digest, id.clone()];
        if self.builtin_present(&img, &names) {
            return Ok(id);
        }
        let (db, snapshotter, tmp) = (self.db.clone(), self.snapshotter.clone(), self.tmp.clone());
        let lease = TempLease::create(&db)?;
        let lease_id = lease.id.clone();
        let blobs = tokio::task::spawn_blocking(move || {
            write_blobs(&db, &img, &lease_id)?;
            Ok::<_, Error>(img)
        })
        .await
        .map_err(|e| Error::Internal(format!("import task: {e}")))??;
        let labels = Labels::from([
            (LABEL_IMAGE_MANAGED.to_string(), "managed".to_string()),
            (LABEL_IMAGE_PINNED.to_string(), "pinned".to_string()),
        ]);
        for n in &names {
            self.record(n, &blobs.target(), &labels)?;
        }
        let (db, manifest, lease_id) = (self.db.clone(), blobs.manifest_digest(), lease.id.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            unpack(&db, &snapshotter, &manifest, &lease_id, &tmp)
        })
        .await
        .map_err(|e| Error::Internal(format!("unpack task: {e}")))?;
        drop(lease);
        self.images_changed();
        unpacked.map_err(|e| e.context(format!("unpack built-in sandbox image {name}")))?;
        tracing::info!(image = %name, id = %id, "cri: imported the built-in sandbox image");
        Ok(id)
    }

    /// Are the records, the config and the unpacked snapshot of `img` all there?
    fn builtin_present(&self, img: &BuiltinImage, names: &[String]) -> bool {
        let target = img.manifest_digest().to_string();
        names.iter().all(|n| {
            self.db
                .image_get(NAMESPACE, n)
                .is_ok_and(|i| i.target.digest == target)
        }) && self.db.content_info(NAMESPACE, &img.id()).is_ok()
            && self
                .snapshotter
                .stat(NAMESPACE, &img.chain_id().to_string())
                .is_ok()
    }
}

fn unpack(
    db: &Db,
    snapshotter: &SnapshotStore,
    manifest: &Digest,
    lease: &str,
    tmp: &Path,
) -> Result<()> {
    images::unpack::unpack(db, snapshotter, NAMESPACE, manifest, Some(lease), tmp)?;
    Ok(())
}

/// Writes the layer, config and manifest (children first, so the manifest's gc.ref labels point
/// at stored content), each held by `lease` until the image records hold them.
fn write_blobs(db: &Db, img: &BuiltinImage, lease: &str) -> Result<()> {
    let layer_d = Digest::of(&img.layer);
    let manifest_labels = Labels::from([
        (
            format!("{LABEL_GC_REF_CONTENT}.config"),
            img.id().to_string(),
        ),
        (format!("{LABEL_GC_REF_CONTENT}.l.0"), layer_d.to_string()),
    ]);
    let layer_labels = Labels::from([(LABEL_UNCOMPRESSED.to_string(), layer_d.to_string())]);
    for (data, labels) in [
        (&img.layer, layer_labels),
        (&img.config, Labels::new()),
        (&img.manifest, manifest_labels),
    ] {
        let d = Digest::of(data);
        let reference = format!("wharf-builtin-{}", d.hex());
        match db.content_writer(
            NAMESPACE,
            &reference,
            data.len() as u64,
            Some(d.clone()),
            Some(lease),
        ) {
            Ok(mut w) => {
                w.write(data)?;
                w.commit(data.len() as u64, Some(d), labels)?;
            }
            Err(wharf_core::Error::AlreadyExists(_)) => {
                // Already stored: the lease holds it too until the records do.
                db.lease_add_resource(
                    NAMESPACE,
                    lease,
                    &LeaseResource {
                        id: d.to_string(),
                        kind: "content".into(),
                    },
                )?;
                if !labels.is_empty() {
                    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
                    db.content_update(NAMESPACE, &d, &labels, &paths)?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A lease for the import (expiring on its own should wharfd die meanwhile).
struct TempLease {
    db: Db,
    id: String,
}

impl TempLease {
    fn create(db: &Db) -> Result<TempLease> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let id = format!("wharf-cri-import-{nanos}-{}", std::process::id());
        let expire = chrono::Utc::now() + chrono::Duration::hours(1);
        let labels = Labels::from([(LABEL_GC_EXPIRE.to_string(), expire.to_rfc3339())]);
        db.lease_create(NAMESPACE, &id, labels)?;
        Ok(TempLease { db: db.clone(), id })
    }
}

impl Drop for TempLease {
    fn drop(&mut self) {
        if let Err(e) = self.db.lease_delete(NAMESPACE, &self.id) {
            tracing::warn!(lease = %self.id, error = %e, "cri: delete import lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_image_is_reproducible_and_well_formed() {
        let a = BuiltinImage::build().unwrap();
        let b = BuiltinImage::build().unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.manifest_digest(), b.manifest_digest());
        let m = images::parse_manifest(&a.manifest).unwrap();
        assert_eq!(m.config.digest, a.id().to_string());
        assert_eq!(m.layers.len(), 1);
        let c = images::parse_config(&a.config).unwrap();
        assert_eq!(c.rootfs.diff_ids, vec![a.chain_id().to_string()]);
        let mut ar = tar::Archive::new(a.layer.as_slice());
        let entries: Vec<_> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                    e.header().size().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![("pause".to_string(), 0o755, BINARY.len() as u64)]
        );
        // A static ELF: no program interpreter (PT_INTERP) among its program headers.
        assert_eq!(&BINARY[..4], b"\x7fELF");
        assert!(!has_interp(BINARY));
    }

    /// Whether a 64-bit little-endian ELF has a PT_INTERP program header.
    fn has_interp(elf: &[u8]) -> bool {
        let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&elf[o..o + 8]);
            u64::from_le_bytes(b) as usize
        };
        let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
        (0..phnum).any(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes([elf[o], elf[o + 1], elf[o + 2], elf[o + 3]]) == 3
        })
    }
}
