//! `containerd.services.transfer.v1.Transfer`: what containerd 2.x's `ctr image
//! pull/push/import/export` and wharf's own CLI call, served by wharf-distribution. Transfers:
//! - `OCIRegistry` → `ImageStore`: pull, unpacked as the store asks;
//! - `ImageStore` → `OCIRegistry`: push;
//! - `ImageImportStream` → `ImageStore`: import of an OCI layout or docker save tarball (gzip or
//!   zstd compressed too) read from a stream opened with the Streaming service, then unpacked;
//! - `ImageStore` → `ImageExportStream`: export of the store's images as one tarball (OCI layout
//!   plus docker manifest.json) written to such a stream.
//!
//! When `TransferOptions.progress_stream` names a stream, containerd's progress events go to it
//! (per blob of a pull: "waiting", "downloading", "complete"; per image stored: "saved"), and
//! it is closed when the transfer ends.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use wharf_api::pb;
use wharf_api::transfer::transfer_server::Transfer;
use wharf_api::types::transfer as tt;
use wharf_core::filters::Filter;
use wharf_core::images::{self, Descriptor, Platform};
use wharf_distribution::archive::ImportOptions;
use wharf_distribution::client::ClientOptions;
use wharf_distribution::pull::{Progress, ProgressFn, PullOptions, TempLease, Unpack};
use wharf_distribution::push::PushOptions;

use crate::error::{dist_to_status, MapStatus};
use crate::namespace::{lease, namespace};
use crate::server::Daemon;
use crate::streams::{self, any, kind, Stream, TYPE_PROGRESS};

pub struct TransferService(pub Arc<Daemon>);

const OCI_REGISTRY: &str = "containerd.types.transfer.OCIRegistry";
const IMAGE_STORE: &str = "containerd.types.transfer.ImageStore";
const IMPORT_STREAM: &str = "containerd.types.transfer.ImageImportStream";
const EXPORT_STREAM: &str = "containerd.types.transfer.ImageExportStream";

fn decode<M: Message + Default>(a: &prost_types::Any) -> Result<M, Status> {
    M::decode(a.value.as_slice())
        .map_err(|e| Status::invalid_argument(format!("decode {}: {e}", a.type_url)))
}

fn platform(p: &wharf_api::types::Platform) -> Platform {
    Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
        ..Default::default()
    }
}

/// containerd's ref key of a descriptor (`remotes.MakeRefKey`): the names of progress events.
fn ref_key(d: &Descriptor) -> String {
    let kind = if images::is_index(&d.media_type) {
        "index"
    } else if images::is_manifest(&d.media_type) {
        "manifest"
    } else if images::is_layer(&d.media_type) {
        "layer"
    } else if d.media_type.contains("config") {
        "config"
    } else {
        "unknown"
    };
    format!("{kind}-{}", d.digest)
}

/// A blob of a pull as its progress events name it: (ref key, parents' ref keys, descriptor).
type Job = (String, Vec<String>, Descriptor);

/// Progress events for the client's progress stream; nothing without one.
#[derive(Clone, Default)]
struct Reporter(Option<mpsc::UnboundedSender<Result<prost_types::Any, Status>>>);

impl Reporter {
    fn send(&self, p: tt::Progress) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(Ok(any(TYPE_PROGRESS, &p)));
        }
    }

    /// An event about the whole transfer (no blob), like containerd's "Resolving from …".
    fn event(&self, event: String, name: &str) {
        self.send(tt::Progress {
            event,
            name: name.to_string(),
            ..Default::default()
        });
    }

    /// Maps a pull's reports to containerd's per-blob events, named by ref key with the ref
    /// key of the index or manifest that refers to the blob as parent.
    fn pull_fn(&self) -> Option<ProgressFn> {
        self.0.as_ref()?;
        let r = self.clone();
        let jobs: Mutex<HashMap<String, Job>> = Mutex::default();
        Some(Arc::new(move |p: Progress| {
            let Ok(mut jobs) = jobs.lock() else { return };
            let msg = |event: &str, (name, parents, desc): &Job, progress: i64, total: i64| {
                tt::Progress {
                    event: event.to_string(),
                    name: name.clone(),
                    parents: parents.clone(),
                    progress,
                    total,
                    desc: Some(crate::convert::oci_descriptor_pb(desc)),
                }
            };
            match p {
                Progress::Waiting { descriptor, parent } => {
                    if jobs.contains_key(&descriptor.digest) {
                        return;
                    }
                    let job = (
                        ref_key(&descriptor),
                        parent.as_ref().map(ref_key).into_iter().collect(),
                        descriptor.clone(),
                    );
                    r.send(msg("waiting", &job, 0, descriptor.size));
                    jobs.insert(descriptor.digest.clone(), job);
                }
                Progress::Resolved { reference, .. } => {
                    r.event(format!("Pulling from {reference}"), "");
                    r.event("fetching image content".into(), &reference);
                }
                Progress::Downloading {
                    digest,
                    offset,
                    size,
                } => {
                    if let Some(job) = jobs.get(&digest.to_string()) {
                        r.send(msg("downloading", job, offset as i64, size as i64));
                    }
                }
                Progress::Stored { digest, size, .. } => {
                    if let Some(job) = jobs.get(&digest.to_string()) {
                        r.send(msg("complete", job, size as i64, size as i64));
                    }
                }
                Progress::Unpacked { .. } => {}
            }
        }))
    }
}

impl TransferService {
    fn client(&self, reg: &tt::OciRegistry) -> ClientOptions {
        let hosts_dir = reg
            .resolver
            .as_ref()
            .map(|r| r.host_dir.clone())
            .filter(|d| !d.is_empty())
            .map(Into::into)
            .unwrap_or_else(|| self.0.registry_config_path.clone());
        ClientOptions {
            hosts_dir: Some(hosts_dir),
            credentials: wharf_distribution::auth::Credentials::from_docker_env(),
            ..Default::default()
        }
    }

    /// The unpack an image store asks for: (where, for which platform).
    fn unpack(&self, store: &tt::ImageStore) -> Result<Option<(Unpack, Platform)>, Status> {
        let Some(cfg) = store.unpacks.first() else {
            return Ok(None);
        };
        let name = Some(cfg.snapshotter.as_str())
            .filter(|s| !s.is_empty())
            .unwrap_or("overlayfs");
        let snapshotter = self
            .0
            .snapshotters
            .get(name)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("snapshotter {name}: not found")))?;
        let platform = cfg
            .platform
            .as_ref()
            .or(store.platforms.first())
            .map(platform)
            .unwrap_or_else(Platform::host);
        Ok(Some((
            Unpack {
                snapshotter,
                tmp: self.0.tmp_mounts.clone(),
            },
            platform,
        )))
    }

    async fn pull(
        &self,
        ns: &str,
        reg: tt::OciRegistry,
        store: tt::ImageStore,
        progress: &Reporter,
    ) -> Result<(), Status> {
        let unpack = self.unpack(&store)?;
        let platform = store
            .unpacks
            .first()
            .and_then(|u| u.platform.as_ref())
            .or(store.platforms.first())
            .map(platform);
        let opts = PullOptions {
            client: self.client(&reg),
            platform,
            unpack: unpack.map(|(u, _)| u),
            labels: store.labels.clone().into_iter().collect(),
            progress: progress.pull_fn(),
            ..Default::default()
        };
        progress.event(format!("Resolving from {}", reg.reference), "");
        let pulled = wharf_distribution::pull::pull(&self.0.db, ns, &reg.reference, &opts)
            .await
            .map_err(dist_to_status)?;
        // The store may name the image differently from the reference it came from.
        let mut name = pulled.image.name.clone();
        if !store.name.is_empty() && store.name != pulled.image.name {
            let mut img = pulled.image.clone();
            img.name = store.name.clone();
            match self.0.db.image_create(ns, img.clone()) {
                Ok(_) => {}
                Err(wharf_core::Error::AlreadyExists(_)) => {
                    self.0.db.image_update(ns, &img, &[]).map_status()?;
                }
                Err(e) => return Err(crate::error::to_status(e)),
            }
            name = store.name.clone();
        }
        progress.event("saved".into(), &name);
        progress.event(format!("Completed pull from {}", reg.reference), "");
        tracing::info!(namespace = %ns, reference = %reg.reference, manifest = %pulled.manifest, "pulled");
        Ok(())
    }

    async fn push(
        &self,
        ns: &str,
        store: tt::ImageStore,
        reg: tt::OciRegistry,
    ) -> Result<(), Status> {
        let opts = PushOptions {
            client: self.client(&reg),
            ..Default::default()
        };
        wharf_distribution::push::push(&self.0.db, ns, &store.name, &reg.reference, &opts)
            .await
            .map_err(dist_to_status)?;
        Ok(())
    }

    /// Imports the tarball the client streams, then unpacks what it named. On failure no image
    /// record created by this import is left behind.
    async fn import(
        &self,
        ns: &str,
        lease_id: Option<String>,
        src: tt::ImageImportStream,
        store: tt::ImageStore,
        progress: &Reporter,
    ) -> Result<(), Status> {
        let unpack = self.unpack(&store)?;
        let stream = self.0.streams.take(ns, &src.stream)?;
        // Without the client's lease, a temporary one holds the blobs until the records do.
        let temp = match &lease_id {
            Some(_) => None,
            None => Some(TempLease::create(&self.0.db, ns).map_err(dist_to_status)?),
        };
        let lease_id = lease_id.or_else(|| temp.as_ref().map(|l| l.id().to_string()));
        let base_name = store
            .extra_references
            .iter()
            .find(|r| r.is_prefix)
            .map(|r| r.name.clone())
            .or_else(|| Some(store.name.clone()).filter(|n| !n.is_empty()));
        let opts = ImportOptions {
            base_name,
            lease: lease_id.clone(),
        };
        let reader = streams::receive(stream);
        let (db, ns2) = (self.0.db.clone(), ns.to_string());
        let imported = tokio::task::spawn_blocking(move || {
            let input = decompress(reader).map_err(|e| {
                wharf_distribution::Error::io("read the archive from the stream", e)
            })?;
            wharf_distribution::archive::import(&db, &ns2, input, &opts)
        })
        .await
        .map_err(|e| Status::internal(format!("import task: {e}")))?
        .map_err(|e| {
            let s = dist_to_status(e.context("import"));
            // The tar reader quotes what it could not parse: keep the message one short line.
            let mut msg = s.message().split_whitespace().collect::<Vec<_>>().join(" ");
            if msg.len() > 512 {
                let cut = (0..=512)
                    .rev()
                    .find(|i| msg.is_char_boundary(*i))
                    .unwrap_or(0);
                msg.truncate(cut);
                msg.push('…');
            }
            Status::new(s.code(), msg)
        })?;
        if imported.is_empty() {
            return Err(Status::invalid_argument(
                "import: the archive names no image (give the store a name to record it under)",
            ));
        }
        if let Some((u, platform)) = unpack {
            let (db, ns2, lease2) = (self.0.db.clone(), ns.to_string(), lease_id.clone());
            let targets: Vec<_> = imported.iter().map(|i| i.target.clone()).collect();
            let unpacked = tokio::task::spawn_blocking(move || -> wharf_core::Result<()> {
                let mut done = BTreeSet::new();
                for t in targets {
                    let m = images::unpack::resolve_manifest(&db, &ns2, &t, &platform)?;
                    if done.insert(m.clone()) {
                        images::unpack::unpack(
                            &db,
                            &u.snapshotter,
                            &ns2,
                            &m,
                            lease2.as_deref(),
                            &u.tmp,
                        )?;
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| Status::internal(format!("unpack task: {e}")))?;
            if let Err(e) = unpacked {
                // Records this import created go again; ones it re-pointed stay (their old
                // target may be gone by now).
                for i in imported.iter().filter(|i| i.created_at == i.updated_at) {
                    let _ = self.0.db.image_delete(ns, &i.name);
                }
                self.0.gc.trigger();
                return Err(crate::error::to_status(e));
            }
        }
        for i in &imported {
            progress.event("saved".into(), &i.name);
            tracing::info!(namespace = %ns, image = %i.name, digest = %i.target.digest, "imported");
        }
        progress.event("Completed import".into(), "");
        drop(temp);
        Ok(())
    }

    /// Writes the store's images as one tarball to the client's stream.
    async fn export(
        &self,
        ns: &str,
        store: tt::ImageStore,
        dst: tt::ImageExportStream,
    ) -> Result<(), Status> {
        let mut names = Vec::new();
        if !store.name.is_empty() {
            names.push(store.name.clone());
        }
        for r in &store.extra_references {
            if r.is_prefix {
                let all = self.0.db.image_list(ns, &Filter::default()).map_status()?;
                names.extend(
                    all.into_iter()
                        .map(|i| i.name)
                        .filter(|n| n.starts_with(&r.name)),
                );
            } else {
                names.push(r.name.clone());
            }
        }
        let mut seen = BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        if names.is_empty() {
            return Err(Status::invalid_argument("export: no image named"));
        }
        for n in &names {
            self.0.db.image_get(ns, n).map_status()?;
        }
        let stream = self.0.streams.take(ns, &dst.stream)?;
        let platform = dst.platforms.first().map(platform);
        let (writer, sender) = streams::send(stream);
        let (db, ns2) = (self.0.db.clone(), ns.to_string());
        let exported = tokio::task::spawn_blocking(move || {
            let w =
                wharf_distribution::archive::export(&db, &ns2, &names, platform.as_ref(), writer)?;
            w.finish()
                .map_err(|e| wharf_distribution::Error::io("send the archive", e))
        })
        .await
        .map_err(|e| Status::internal(format!("export task: {e}")))?;
        let sent = sender
            .await
            .map_err(|e| Status::internal(format!("stream task: {e}")))?;
        exported.map_err(|e| dist_to_status(e.context("export")))?;
        sent
    }
}

/// The archive itself, whether the client sent it plain, gzip- or zstd-compressed.
fn decompress<R: std::io::Read + Send + 'static>(
    r: R,
) -> std::io::Result<Box<dyn std::io::Read + Send>> {
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(1 << 16, r);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn transfer(&self, req: Request<pb::TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let lease_id = lease(&req);
        let r = req.into_inner();
        let (Some(src), Some(dst)) = (r.source.as_ref(), r.destination.as_ref()) else {
            return Err(Status::invalid_argument(
                "transfer needs a source and a destination",
            ));
        };
        // The progress stream is held (and closed at the end) here; events go out through a
        // clone of its sender.
        let progress_stream: Option<Stream> = match r.options.as_ref() {
            Some(o) if !o.progress_stream.is_empty() => {
                Some(self.0.streams.take(&ns, &o.progress_stream)?)
            }
            _ => None,
        };
        let progress = Reporter(progress_stream.as_ref().map(|s| s.outgoing.clone()));
        let res = match (kind(src), kind(dst)) {
            (OCI_REGISTRY, IMAGE_STORE) => {
                self.pull(&ns, decode(src)?, decode(dst)?, &progress).await
            }
            (IMAGE_STORE, OCI_REGISTRY) => self.push(&ns, decode(src)?, decode(dst)?).await,
            (IMPORT_STREAM, IMAGE_STORE) => {
                self.import(&ns, lease_id, decode(src)?, decode(dst)?, &progress)
                    .await
            }
            (IMAGE_STORE, EXPORT_STREAM) => self.export(&ns, decode(src)?, decode(dst)?).await,
            (s, d) => Err(Status::unimplemented(format!(
                "transfer from {s} to {d} is not supported by wharfd (registry <-> image store, \
                 import stream -> image store, image store -> export stream)"
            ))),
        };
        drop(progress);
        drop(progress_stream);
        res.map(Response::new)
    }
}
