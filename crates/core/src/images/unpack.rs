//! Unpacking an image into snapshots: each layer is applied straight into a new snapshot on top
//! of the previous one and committed under its chain ID; layers already unpacked are skipped.
//! Used by the daemon's own pulls (distribution, CRI); `ctr` 1.6 unpacks client-side through the
//! Snapshots and Diff services instead.

use std::path::Path;

use super::{
    chain_ids, is_index, parse_config, parse_index, parse_manifest, Platform, LABEL_UNCOMPRESSED,
};
use crate::diff::apply_to_snapshot;
use crate::metadata::{Db, Descriptor, Labels};
use crate::snapshots::SnapshotStore;
use crate::{Digest, Error, Result};

/// Resolves `target` (a manifest, or an index to pick from by `platform`) to its manifest digest.
pub fn resolve_manifest(
    db: &Db,
    ns: &str,
    target: &Descriptor,
    platform: &Platform,
) -> Result<Digest> {
    let mut d = Digest::parse(&target.digest)?;
    let mut media_type = target.media_type.clone();
    for _ in 0..4 {
        if !is_index(&media_type) {
            return Ok(d);
        }
        db.content_info(ns, &d)?;
        let index = parse_index(&db.content_store().read_at(&d, 0, 0)?)?;
        let m = index
            .manifests
            .iter()
            .find(|m| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| {
                Error::NotFound(format!("manifest for platform {platform} in index {d}"))
            })?;
        d = Digest::parse(&m.digest)?;
        media_type = m.media_type.clone();
    }
    Err(Error::InvalidArgument(format!(
        "index nesting too deep at {d}"
    )))
}

/// One layer to unpack: its descriptor, uncompressed digest, and where it goes in the chain.
pub struct Layer<'a> {
    pub desc: &'a super::Descriptor,
    pub diff_id: &'a Digest,
    pub chain: &'a Digest,
    /// The chain ID of the layer below (committed before this one is unpacked).
    pub parent: Option<&'a Digest>,
}

/// Applies one layer (whose blob is in the content store) into a new snapshot on `parent` and
/// commits it as its chain ID; nothing to do when that snapshot exists. Lets a pull unpack each
/// layer as soon as it and the layers below it are there, while later layers still download.
pub fn unpack_layer(
    db: &Db,
    snapshotter: &SnapshotStore,
    ns: &str,
    layer: &Layer<'_>,
    lease: Option<&str>,
    tmp: &Path,
) -> Result<()> {
    let chain = layer.chain.to_string();
    if snapshotter.stat(ns, &chain).is_ok() {
        return Ok(());
    }
    let layer_d = Digest::parse(&layer.desc.digest)?;
    db.content_info(ns, &layer_d)?;
    let parent = layer.parent.map(|p| p.to_string());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let key = format!("extract-{nanos}-{chain}");
    let mounts = snapshotter.prepare(ns, &key, parent.as_deref(), Labels::new(), lease)?;
    let applied = snapshotter.apply_target(ns, &key).and_then(|(dir, mode)| {
        let open = || db.content_store().open_blob(&layer_d);
        apply_to_snapshot(
            &open,
            &layer.desc.media_type,
            &dir,
            mode,
            Some(&mounts),
            tmp,
            Some(layer.diff_id),
        )
    });
    if let Err(e) = applied {
        let _ = snapshotter.remove(ns, &key);
        return Err(Error::FailedPrecondition(format!(
            "apply layer {layer_d}: {e}"
        )));
    }
    match snapshotter.commit(ns, &chain, &key, Labels::new(), lease) {
        Ok(()) => {}
        // Unpacked concurrently by someone else: theirs is as good.
        Err(Error::AlreadyExists(_)) => snapshotter.remove(ns, &key)?,
        Err(e) => {
            let _ = snapshotter.remove(ns, &key);
            return Err(e);
        }
    }
    let label = Labels::from([(LABEL_UNCOMPRESSED.to_string(), layer.diff_id.to_string())]);
    db.content_update(
        ns,
        &layer_d,
        &label,
        &[format!("labels.{LABEL_UNCOMPRESSED}")],
    )?;
    Ok(())
}

/// Unpacks the image whose manifest is `manifest` into `snapshotter`; returns the top chain ID.
pub fn unpack(
    db: &Db,
    snapshotter: &SnapshotStore,
    ns: &str,
    manifest: &Digest,
    lease: Option<&str>,
    tmp: &Path,
) -> Result<Digest> {
    db.content_info(ns, manifest)?;
    let m = parse_manifest(&db.content_store().read_at(manifest, 0, 0)?)?;
    let config_d = Digest::parse(&m.config.digest)?;
    db.content_info(ns, &config_d)?;
    let config = parse_config(&db.content_store().read_at(&config_d, 0, 0)?)?;
    let diff_ids = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>>>()?;
    if diff_ids.len() != m.layers.len() {
        return Err(Error::InvalidArgument(format!(
            "image {manifest} has {} layers but its config lists {} diff IDs",
            m.layers.len(),
            diff_ids.len()
        )));
    }
    let chains = chain_ids(&diff_ids);
    for (i, layer) in m.layers.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| &chains[p]);
        let layer = Layer {
            desc: layer,
            diff_id: &diff_ids[i],
            chain: &chains[i],
            parent,
        };
        unpack_layer(db, snapshotter, ns, &layer, lease, tmp)?;
    }
    let top = chains
        .last()
        .cloned()
        .ok_or_else(|| Error::InvalidArgument(format!("image {manifest} has no layers")))?;
    let key = format!("containerd.io/gc.ref.snapshot.{}", snapshotter.name());
    let label = Labels::from([(key.clone(), top.to_string())]);
    db.content_update(ns, &config_d, &label, &[format!("labels.{key}")])?;
    Ok(top)
}
