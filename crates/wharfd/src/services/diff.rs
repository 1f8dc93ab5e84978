//! `containerd.services.diff.v1.Diff`: Apply streams a layer from the content store into the
//! mounts the client gives. When those mounts are one of our own snapshots, the layer goes
//! straight into the snapshot's directory (no mount); anything else is mounted in a private
//! temporary directory first, as containerd's walking differ does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::diff::diff_server::Diff;
use wharf_api::{pb, types};
use wharf_core::diff::{
    apply_layer, apply_to_snapshot, sync_fs, write_diff, ApplyMode, Compression, HashingWriter,
};
use wharf_core::images::LABEL_UNCOMPRESSED;
use wharf_core::mount::TempMount;
use wharf_core::snapshots::Mount;
use wharf_core::{Digest, Error};

use crate::error::MapStatus;
use crate::namespace::namespace;
use crate::server::Daemon;

pub struct DiffService(pub Arc<Daemon>);

const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const MEDIA_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Lets a content writer sit at the end of a chain of `io::Write`rs.
struct WriterSink(wharf_core::metadata::ContentWriter);

impl std::io::Write for WriterSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a layer is applied.
enum Target {
    /// Straight into a snapshot directory of ours (with the mounts, should that fail).
    Direct(PathBuf, ApplyMode, Vec<Mount>),
    /// Mounted in a temporary directory.
    Mounted(Vec<Mount>),
}

impl DiffService {
    /// The snapshot directory `p` is, if it is one of ours (`<root>/snapshots/<id>/fs`).
    fn own_snapshot_dir(&self, p: &str) -> Option<(PathBuf, ApplyMode)> {
        let p = Path::new(p);
        for s in self.0.snapshotters.values() {
            if let Ok(rest) = p.strip_prefix(s.root().join("snapshots")) {
                let parts: Vec<_> = rest.components().collect();
                let plain = rest
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
                if plain && parts.len() == 2 && parts[1].as_os_str() == "fs" && p.is_dir() {
                    return Some((p.to_path_buf(), s.apply_mode()));
                }
            }
        }
        None
    }

    fn target(&self, mounts: &[types::Mount]) -> Result<Target, Status> {
        if mounts.is_empty() {
            return Err(Status::invalid_argument("apply needs at least one mount"));
        }
        let core_mounts: Vec<Mount> = mounts
            .iter()
            .map(|m| Mount {
                kind: m.r#type.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        if let [m] = mounts {
            if m.r#type == "bind" {
                if let Some((dir, mode)) = self.own_snapshot_dir(&m.source) {
                    return Ok(Target::Direct(dir, mode, core_mounts));
                }
            }
            if m.r#type == "overlay" {
                if let Some(upper) = m.options.iter().find_map(|o| o.strip_prefix("upperdir=")) {
                    if let Some((dir, _)) = self.own_snapshot_dir(upper) {
                        // Applying into the upper dir of an overlay is what the mounted overlay
                        // would do, with whiteouts in overlay's own representation.
                        return Ok(Target::Direct(dir, ApplyMode::Overlay, core_mounts));
                    }
                }
            }
        }
        Ok(Target::Mounted(core_mounts))
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let desc = r
            .diff
            .ok_or_else(|| Status::invalid_argument("diff descriptor must be set"))?;
        let d = Digest::parse(&desc.digest).map_status()?;
        let info = self.0.db.content_info(&ns, &d).map_status()?;
        let expected = match info.labels.get(LABEL_UNCOMPRESSED) {
            Some(v) => Some(Digest::parse(v).map_status()?),
            None => None,
        };
        let target = self.target(&r.mounts)?;
        let store = self.0.db.content_store().clone();
        let tmp_parent = self.0.tmp_mounts.clone();
        let media_type = desc.media_type.clone();
        let sync = r.sync_fs;
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || -> wharf_core::Result<_> {
            let apply_mounted = |mounts: &[Mount]| -> wharf_core::Result<_> {
                let m = TempMount::new(mounts, &tmp_parent)?;
                let res = apply_layer(
                    store.open_blob(&d)?,
                    &media_type,
                    m.path(),
                    ApplyMode::Native,
                    expected.as_ref(),
                )?;
                if sync {
                    sync_fs(m.path())?;
                }
                Ok(res)
            };
            match target {
                Target::Direct(dir, mode, mounts) => {
                    let open = || store.open_blob(&d);
                    let res = apply_to_snapshot(
                        &open,
                        &media_type,
                        &dir,
                        mode,
                        Some(&mounts),
                        &tmp_parent,
                        expected.as_ref(),
                    )?;
                    if sync {
                        sync_fs(&dir)?;
                    }
                    Ok(res)
                }
                Target::Mounted(mounts) => apply_mounted(&mounts),
            }
        })
        .await
        .map_err(|e| Status::internal(format!("apply: {e}")))?
        .map_status()?;
        tracing::debug!(
            namespace = %ns,
            digest = %desc.digest,
            diff_id = %result.diff_id,
            bytes = result.uncompressed_size,
            ms = started.elapsed().as_millis() as u64,
            "layer applied"
        );
        Ok(Response::new(pb::ApplyResponse {
            applied: Some(types::Descriptor {
                media_type: MEDIA_LAYER_TAR.into(),
                digest: result.diff_id.to_string(),
                size: result.uncompressed_size as i64,
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(
        &self,
        req: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        let ns = namespace(&req)?;
        let lease = crate::namespace::lease(&req);
        let r = req.into_inner();
        let media_type = if r.media_type.is_empty() {
            MEDIA_LAYER_GZIP.to_string()
        } else {
            r.media_type
        };
        let compression = Compression::from_media_type(&media_type).map_status()?;
        if r.right.is_empty() {
            return Err(Status::invalid_argument(
                "diff needs the mounts of the new tree (right)",
            ));
        }
        let reference = if r.r#ref.is_empty() {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            format!("diff-{}", now.as_nanos())
        } else {
            r.r#ref
        };
        let ro = |ms: Vec<types::Mount>| -> Vec<Mount> {
            ms.into_iter()
                .map(|m| {
                    let mut options = m.options;
                    options.retain(|o| o != "rw");
                    options.push("ro".into());
                    Mount {
                        kind: m.r#type,
                        source: m.source,
                        options,
                    }
                })
                .collect()
        };
        let (left, right) = (ro(r.left), ro(r.right));
        let mut labels: wharf_core::metadata::Labels = r.labels.into_iter().collect();
        let db = self.0.db.clone();
        let tmp = self.0.tmp_mounts.clone();
        let mt = media_type.clone();
        let (digest, size) =
            tokio::task::spawn_blocking(move || -> wharf_core::Result<(Digest, u64)> {
                std::fs::create_dir_all(&tmp).map_err(|e| Error::io_path("create", &tmp, e))?;
                let empty = tempfile::Builder::new()
                    .prefix("empty-")
                    .tempdir_in(&tmp)
                    .map_err(|e| Error::io_path("create temp dir in", &tmp, e))?;
                let lower = if left.is_empty() {
                    None
                } else {
                    Some(TempMount::new(&left, &tmp)?)
                };
                let upper = TempMount::new(&right, &tmp)?;
                let lower_path = lower
                    .as_ref()
                    .map(|m| m.path().to_path_buf())
                    .unwrap_or_else(|| empty.path().to_path_buf());
                let w = db.content_writer(&ns, &reference, 0, None, lease.as_deref())?;
                let sink = WriterSink(w);
                let (sink, diff_id) = match compression {
                    Compression::Gzip => {
                        let enc =
                            flate2::write::GzEncoder::new(sink, flate2::Compression::default());
                        let h = write_diff(&lower_path, upper.path(), HashingWriter::new(enc))?;
                        let (enc, diff_id, _) = h.finish();
                        (
                            enc.finish().map_err(|e| Error::io("finish gzip", e))?,
                            diff_id,
                        )
                    }
                    Compression::Zstd => {
                        let enc = zstd::stream::write::Encoder::new(sink, 3)
                            .map_err(|e| Error::io("start zstd", e))?;
                        let h = write_diff(&lower_path, upper.path(), HashingWriter::new(enc))?;
                        let (enc, diff_id, _) = h.finish();
                        (
                            enc.finish().map_err(|e| Error::io("finish zstd", e))?,
                            diff_id,
                        )
                    }
                    Compression::None => {
                        let h = write_diff(&lower_path, upper.path(), HashingWriter::new(sink))?;
                        let (sink, diff_id, _) = h.finish();
                        (sink, diff_id)
                    }
                };
                labels.insert(LABEL_UNCOMPRESSED.into(), diff_id.to_string());
                let size = sink.0.offset();
                let d = sink.0.commit(0, None, labels)?;
                Ok((d, size))
            })
            .await
            .map_err(|e| Status::internal(format!("diff: {e}")))?
            .map_status()?;
        Ok(Response::new(pb::DiffResponse {
            diff: Some(types::Descriptor {
                media_type: mt,
                digest: digest.to_string(),
                size: size as i64,
                annotations: Default::default(),
            }),
        }))
    }
}
