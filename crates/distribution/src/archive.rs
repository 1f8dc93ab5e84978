//! Image archives, both ways, streaming (blobs are copied between the tar stream and the content
//! store in pieces, never held whole): OCI image layout tarballs (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) and `docker save` tarballs (`manifest.json` with `RepoTags`). Export writes
//! both indexes into one tarball, as containerd does, so `docker load` and OCI tools read it.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};
use wharf_core::images::{self, Descriptor, Platform};
use wharf_core::metadata::{self, Db, Labels, LABEL_GC_REF_CONTENT};
use wharf_core::Digest;

use crate::reference::Reference;
use crate::{Error, Result};

/// containerd's annotation naming the image of an index.json entry.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// OCI's annotation with the tag (or full reference) of an index.json entry.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const MEDIA_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const MEDIA_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// index.json, manifest.json and friends are small; refuse absurd ones.
const MAX_INDEX_SIZE: u64 = 16 << 20;

/// One entry of a docker `manifest.json`.
#[derive(Debug, Serialize, Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn meta_desc(d: &metadata::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        ..Default::default()
    }
}

fn read_doc(db: &Db, ns: &str, d: &Digest) -> Result<Vec<u8>> {
    db.content_info(ns, d)?;
    Ok(db.content_store().read_at(d, 0, 0)?)
}

/// The blobs of an image reachable in the store (index children that were never pulled are
/// left out), and the manifest for `platform` with its config and layers, for manifest.json.
struct Walk {
    blobs: Vec<Digest>,
    docker: Option<(Digest, Vec<Digest>)>,
}

fn walk(db: &Db, ns: &str, target: &Descriptor, platform: &Platform) -> Result<Walk> {
    let mut blobs = vec![Digest::parse(&target.digest)?];
    let mut manifests = Vec::new();
    if images::is_index(&target.media_type) {
        let index = images::parse_index(&read_doc(db, ns, &blobs[0])?)?;
        let mut chosen = None;
        for m in &index.manifests {
            let d = Digest::parse(&m.digest)?;
            if !images::is_manifest(&m.media_type) || db.content_info(ns, &d).is_err() {
                continue;
            }
            if chosen.is_none() && m.platform.as_ref().is_some_and(|p| platform.matches(p)) {
                chosen = Some(manifests.len());
            }
            manifests.push(d);
        }
        if manifests.is_empty() {
            return Err(Error::NotFound(format!(
                "none of the manifests of index {} is in the store",
                target.digest
            )));
        }
        let mut docker = None;
        for (i, d) in manifests.iter().enumerate() {
            let (cfg, layers) = manifest_blobs(db, ns, d)?;
            if Some(i) == chosen {
                docker = Some((cfg.clone(), layers.clone()));
            }
            blobs.push(d.clone());
            blobs.push(cfg);
            blobs.extend(layers);
        }
        return Ok(Walk { blobs, docker });
    }
    if !images::is_manifest(&target.media_type) {
        return Err(Error::InvalidArgument(format!(
            "cannot export media type {:?}",
            target.media_type
        )));
    }
    let (cfg, layers) = manifest_blobs(db, ns, &blobs[0])?;
    blobs.push(cfg.clone());
    blobs.extend(layers.iter().cloned());
    Ok(Walk {
        blobs,
        docker: Some((cfg, layers)),
    })
}

fn manifest_blobs(db: &Db, ns: &str, d: &Digest) -> Result<(Digest, Vec<Digest>)> {
    let m = images::parse_manifest(&read_doc(db, ns, d)?)?;
    let cfg = Digest::parse(&m.config.digest)?;
    let layers = m
        .layers
        .iter()
        .map(|l| Digest::parse(&l.digest))
        .collect::<wharf_core::Result<Vec<_>>>()?;
    for b in std::iter::once(&cfg).chain(layers.iter()) {
        db.content_info(ns, b)
            .map_err(|_| Error::NotFound(format!("content {b} needed by manifest {d}")))?;
    }
    Ok((cfg, layers))
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, path: &str, data: &[u8]) -> Result<()> {
    b.append_data(&mut header(data.len() as u64), path, data)
        .map_err(|e| Error::io(format!("write {path} to the archive"), e))
}

/// Writes images `names` of namespace `ns` as one tarball (OCI layout plus docker manifest.json,
/// the latter with the manifest of `platform` for indexes).
pub fn export<W: Write>(
    db: &Db,
    ns: &str,
    names: &[String],
    platform: Option<&Platform>,
    out: W,
) -> Result<W> {
    let platform = platform.cloned().unwrap_or_else(Platform::host);
    let mut b = tar::Builder::new(out);
    let mut written = BTreeSet::new();
    let mut index = Vec::new();
    let mut docker = Vec::new();
    for name in names {
        let img = db.image_get(ns, name)?;
        let target = meta_desc(&img.target);
        let w =
            walk(db, ns, &target, &platform).map_err(|e| e.context(format!("export {name}")))?;
        for d in &w.blobs {
            if !written.insert(d.clone()) {
                continue;
            }
            let mut f = db.content_store().open_blob(d)?;
            let size = f
                .metadata()
                .map_err(|e| Error::io(format!("stat content {d}"), e))?
                .len();
            b.append_data(&mut header(size), blob_path(d), &mut f)
                .map_err(|e| Error::io(format!("write {d} to the archive"), e))?;
        }
        let mut entry = target.clone();
        entry
            .annotations
            .insert(ANNOTATION_IMAGE_NAME.into(), img.name.clone());
        if let Ok(r) = Reference::parse(&img.name) {
            if let Some(tag) = r.tag() {
                entry
                    .annotations
                    .insert(ANNOTATION_REF_NAME.into(), tag.to_string());
            }
            if let Some((cfg, layers)) = w.docker {
                docker.push(DockerEntry {
                    config: blob_path(&cfg),
                    repo_tags: r.tag().map(|t| vec![format!("{}:{t}", r.name())]),
                    layers: layers.iter().map(blob_path).collect(),
                });
            }
        }
        index.push(entry);
    }
    let json = |v: &serde_json::Value| {
        serde_json::to_vec(v).map_err(|e| Error::Internal(format!("encode index: {e}")))
    };
    append_bytes(
        &mut b,
        "oci-layout",
        &json(&serde_json::json!({"imageLayoutVersion": "1.0.0"}))?,
    )?;
    append_bytes(
        &mut b,
        "index.json",
        &json(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": images::MEDIA_OCI_INDEX,
            "manifests": index,
        }))?,
    )?;
    let manifest_json = serde_json::to_vec(&docker)
        .map_err(|e| Error::Internal(format!("encode manifest.json: {e}")))?;
    append_bytes(&mut b, "manifest.json", &manifest_json)?;
    b.into_inner()
        .map_err(|e| Error::io("finish the archive", e))
}

/// Options of [`import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Name for index.json entries that carry only a tag (or nothing): `<base>:<tag>` / `<base>`.
    pub base_name: Option<String>,
    /// A lease holding the blobs while they are stored (nothing refers to them until the image
    /// records are written, so a collection in between would take them).
    pub lease: Option<String>,
}

/// Reads an OCI layout or docker save tarball into namespace `ns`; returns the image records
/// created or updated. Every blob is verified against its digest when the archive names it.
pub fn import<R: Read>(
    db: &Db,
    ns: &str,
    input: R,
    opts: &ImportOptions,
) -> Result<Vec<metadata::Image>> {
    let mut ar = tar::Archive::new(input);
    // Archive path -> (digest, size) of every blob stored.
    let mut files: HashMap<String, (Digest, u64)> = HashMap::new();
    let mut docs: HashMap<String, Vec<u8>> = HashMap::new();
    let entries = ar.entries().map_err(|e| Error::io("read the archive", e))?;
    for (i, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| match i {
            0 => Error::InvalidArgument(format!("the data is not a tar archive: {e}")),
            _ => Error::io("read the archive", e),
        })?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| Error::io("read an archive path", e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let size = entry
            .header()
            .size()
            .map_err(|e| Error::io(format!("size of {path}"), e))?;
        if matches!(
            path.as_str(),
            "index.json" | "manifest.json" | "oci-layout" | "repositories"
        ) {
            if size > MAX_INDEX_SIZE {
                return Err(Error::FailedPrecondition(format!(
                    "{path} in the archive is {size} bytes, larger than {MAX_INDEX_SIZE}"
                )));
            }
            let mut buf = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(format!("read {path}"), e))?;
            docs.insert(path, buf);
            continue;
        }
        let expected = path
            .strip_prefix("blobs/sha256/")
            .map(|h| Digest::parse(&format!("sha256:{h}")))
            .transpose()
            .map_err(|e| Error::InvalidArgument(format!("archive entry {path}: {e}")))?;
        let d = store_blob(
            db,
            ns,
            &format!("import-{i}-{}", Digest::of(path.as_bytes()).hex()),
            &mut entry,
            size,
            expected,
            opts.lease.as_deref(),
        )
        .map_err(|e| e.context(format!("archive entry {path}")))?;
        files.insert(path, (d, size));
    }
    if let Some(index) = docs.get("index.json") {
        import_oci(db, ns, index, &files, opts)
    } else if let Some(manifest) = docs.get("manifest.json") {
        import_docker(db, ns, manifest, &files, opts.lease.as_deref())
    } else {
        Err(Error::InvalidArgument(
            "the archive has neither index.json (OCI layout) nor manifest.json (docker save)"
                .into(),
        ))
    }
}

/// Copies one blob from the archive into the store; returns its digest.
fn store_blob(
    db: &Db,
    ns: &str,
    reference: &str,
    src: &mut impl Read,
    size: u64,
    expected: Option<Digest>,
    lease: Option<&str>,
) -> Result<Digest> {
    let mut w = match db.content_writer(ns, reference, size, expected.clone(), lease) {
        Ok(w) => w,
        Err(wharf_core::Error::AlreadyExists(_)) => {
            if let Some(d) = expected {
                // Present already: skip its bytes.
                std::io::copy(src, &mut std::io::sink())
                    .map_err(|e| Error::io("skip a stored blob", e))?;
                return Ok(d);
            }
            return Err(Error::Internal("unexpected AlreadyExists".into()));
        }
        Err(e) => return Err(e.into()),
    };
    if w.offset() > 0 {
        w.write_at(0, &[])?; // a stale ingest of the same ref: start over
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| Error::io("read from the archive", e))?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
        read += n as u64;
    }
    if read < size {
        drop(w);
        let _ = db.content_abort(ns, reference);
        return Err(Error::InvalidArgument(format!(
            "the archive ends early ({read} of {size} bytes of this entry): it is truncated"
        )));
    }
    let d = w.digest();
    match w.commit(size, expected, Labels::new()) {
        Ok(_) | Err(wharf_core::Error::AlreadyExists(_)) => Ok(d),
        Err(e) => {
            let _ = db.content_abort(ns, reference);
            Err(Error::FailedPrecondition(format!(
                "blob verification failed, nothing was stored: {e}"
            )))
        }
    }
}

/// Adds containerd's gc.ref labels from an index or manifest to what it references.
fn label_children(db: &Db, ns: &str, desc: &Descriptor) -> Result<()> {
    let d = Digest::parse(&desc.digest)?;
    let bytes = read_doc(db, ns, &d)?;
    let mut labels = Labels::new();
    if images::is_index(&desc.media_type) {
        let index = images::parse_index(&bytes)?;
        for (i, m) in index.manifests.iter().enumerate() {
            if db.content_info(ns, &Digest::parse(&m.digest)?).is_ok() {
                labels.insert(format!("{LABEL_GC_REF_CONTENT}.m.{i}"), m.digest.clone());
                label_children(db, ns, m)?;
            }
        }
    } else if images::is_manifest(&desc.media_type) {
        let m = images::parse_manifest(&bytes)?;
        labels.insert(
            format!("{LABEL_GC_REF_CONTENT}.config"),
            m.config.digest.clone(),
        );
        for (i, l) in m.layers.iter().enumerate() {
            labels.insert(format!("{LABEL_GC_REF_CONTENT}.l.{i}"), l.digest.clone());
        }
    }
    if labels.is_empty() {
        return Ok(());
    }
    let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
    db.content_update(ns, &d, &labels, &paths)?;
    Ok(())
}

fn record(db: &Db, ns: &str, name: String, target: &Descriptor) -> Result<metadata::Image> {
    let now = std::time::SystemTime::now();
    let image = metadata::Image {
        name,
        labels: Labels::new(),
        target: metadata::Descriptor {
            media_type: target.media_type.clone(),
            digest: target.digest.clone(),
            size: target.size,
            annotations: Labels::new(),
        },
        created_at: now,
        updated_at: now,
    };
    match db.image_create(ns, image.clone()) {
        Ok(i) => Ok(i),
        Err(wharf_core::Error::AlreadyExists(_)) => {
            Ok(db.image_update(ns, &image, &["target".to_string()])?)
        }
        Err(e) => Err(e.into()),
    }
}

fn import_oci(
    db: &Db,
    ns: &str,
    index: &[u8],
    files: &HashMap<String, (Digest, u64)>,
    opts: &ImportOptions,
) -> Result<Vec<metadata::Image>> {
    let index = images::parse_index(index)?;
    let mut out = Vec::new();
    for m in &index.manifests {
        let d = Digest::parse(&m.digest)?;
        if !files.contains_key(&blob_path(&d)) && db.content_info(ns, &d).is_err() {
            return Err(Error::NotFound(format!(
                "index.json names {d}, which the archive does not contain"
            )));
        }
        label_children(db, ns, m)?;
        let name = match (
            m.annotations.get(ANNOTATION_IMAGE_NAME),
            m.annotations.get(ANNOTATION_REF_NAME),
            &opts.base_name,
        ) {
            (Some(n), _, _) => n.clone(),
            // A ref name may be a full reference or just a tag.
            (None, Some(r), base) => match (Reference::parse(r), base) {
                (Ok(full), _) if r.contains('/') => full.to_string(),
                (_, Some(b)) => format!("{b}:{r}"),
                _ => Reference::parse(r)?.to_string(),
            },
            (None, None, Some(b)) => b.clone(),
            (None, None, None) => {
                tracing::info!(digest = %d, "index.json entry without a name, not recorded");
                continue;
            }
        };
        out.push(record(db, ns, name, m)?);
    }
    Ok(out)
}

/// A docker layer's media type from its first bytes (gzip or plain tar).
fn docker_layer_type(db: &Db, d: &Digest) -> Result<&'static str> {
    let head = db.content_store().read_at(d, 0, 2)?;
    Ok(if head == [0x1f, 0x8b] {
        MEDIA_DOCKER_LAYER_GZIP
    } else {
        MEDIA_DOCKER_LAYER
    })
}

fn import_docker(
    db: &Db,
    ns: &str,
    manifest: &[u8],
    files: &HashMap<String, (Digest, u64)>,
    lease: Option<&str>,
) -> Result<Vec<metadata::Image>> {
    let entries: Vec<DockerEntry> = serde_json::from_slice(manifest)
        .map_err(|e| Error::InvalidArgument(format!("malformed manifest.json: {e}")))?;
    let find = |p: &str| {
        files
            .get(p.trim_start_matches("./"))
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "manifest.json names {p}, which the archive does not contain"
                ))
            })
    };
    let mut out = Vec::new();
    for e in entries {
        let (cfg, cfg_size) = find(&e.config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (d, size) = find(l)?;
            layers.push(serde_json::json!({
                "mediaType": docker_layer_type(db, &d)?,
                "size": size,
                "digest": d.to_string(),
            }));
        }
        let m = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": images::MEDIA_DOCKER_MANIFEST,
            "config": {"mediaType": images::MEDIA_DOCKER_CONFIG, "size": cfg_size, "digest": cfg.to_string()},
            "layers": layers,
        }))
        .map_err(|e| Error::Internal(format!("encode manifest: {e}")))?;
        let md = Digest::of(&m);
        store_blob(
            db,
            ns,
            &format!("import-manifest-{}", md.hex()),
            &mut m.as_slice(),
            m.len() as u64,
            Some(md.clone()),
            lease,
        )?;
        let desc = Descriptor {
            media_type: images::MEDIA_DOCKER_MANIFEST.into(),
            digest: md.to_string(),
            size: m.len() as i64,
            ..Default::default()
        };
        label_children(db, ns, &desc)?;
        for tag in e.repo_tags.unwrap_or_default() {
            let name = Reference::parse(&tag)?.to_string();
            out.push(record(db, ns, name, &desc)?);
        }
    }
    Ok(out)
}
