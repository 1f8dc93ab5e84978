//! `containerd.services.diff.v1.Diff`: Apply streams a layer from the content store into the
//! mounts the client gives. When those mounts are one of our own snapshots, the layer goes
//! straight into the snapshot's directory (no mount); anything else is mounted in a private
//! temporary directory first, as containerd's walking differ does.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::diff::diff_server::Diff;
use wharf_api::{pb, types};
use wharf_core::diff::{apply_layer, sync_fs, ApplyMode};
use wharf_core::images::LABEL_UNCOMPRESSED;
use wharf_core::mount::TempMount;
use wharf_core::snapshots::Mount;
use wharf_core::{Digest, Error};

use crate::error::MapStatus;
use crate::namespace::namespace;
use crate::server::Daemon;

pub struct DiffService(pub Arc<Daemon>);

const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

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

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

fn clear_dir(p: &Path) -> wharf_core::Result<()> {
    for e in std::fs::read_dir(p).map_err(|e| Error::io_path("read", p, e))? {
        let e = e.map_err(|e| Error::io_path("read", p, e))?;
        let path = e.path();
        let r = if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|e| Error::io_path("remove", &path, e))?;
    }
    Ok(())
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
                let res = apply_layer(store.open_blob(&d)?, &media_type, m.path(), ApplyMode::Native, expected.as_ref())?;
                if sync {
                    sync_fs(m.path())?;
                }
                Ok(res)
            };
            match target {
                Target::Direct(dir, mode, mounts) => {
                    let fresh = is_empty_dir(&dir);
                    match apply_layer(store.open_blob(&d)?, &media_type, &dir, mode, expected.as_ref()) {
                        Ok(res) => {
                            if sync {
                                sync_fs(&dir)?;
                            }
                            Ok(res)
                        }
                        // A hard link to a file of a lower layer needs the lower layers: start
                        // over through the mounted overlay, which copies the target up.
                        Err(e) if fresh && mode == ApplyMode::Overlay && e.is_not_found() && mounts[0].kind == "overlay" => {
                            tracing::debug!(error = %e, "direct apply needs the lower layers; applying mounted");
                            clear_dir(&dir)?;
                            apply_mounted(&mounts).inspect_err(|_| {
                                let _ = clear_dir(&dir);
                            })
                        }
                        Err(e) => {
                            // A fresh snapshot is left empty on failure, so nothing partial is
                            // ever committed from it.
                            if fresh {
                                let _ = clear_dir(&dir);
                            }
                            Err(e)
                        }
                    }
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
        _req: Request<pb::DiffRequest>,
    ) -> Result<Response<pb::DiffResponse>, Status> {
        Err(Status::unimplemented(
            "creating layers (Diff/Diff) is not implemented by wharfd yet",
        ))
    }
}
