//! Pull: resolve a reference, fetch its index/manifest/config and layers into the content store
//! (layers in parallel), record the image, and unpack it into a snapshotter. A layer is applied
//! to its snapshot while it downloads when the layers below it are unpacked by then (see
//! `stream`), else as soon as it and they are there, while later layers still download.
//!
//! Every blob is verified against its digest before it is committed, and a snapshot made from a
//! blob only after that; blobs already in the store are skipped and interrupted downloads
//! continue from their ingest, so a pull can be repeated after any failure. A lease (the caller's
//! or a temporary one) keeps what was fetched from GC until the image record holds it.

use std::path::PathBuf;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use wharf_core::images::{self, Descriptor, Platform};
use wharf_core::metadata::{self, Db, Labels, LABEL_GC_EXPIRE};
use wharf_core::snapshots::SnapshotStore;
use wharf_core::Digest;

use crate::client::{ClientOptions, RepoClient};
use crate::fetch::Fetcher;
use crate::reference::Reference;
use crate::stream::Target;
use crate::{Error, Result};

/// containerd's label naming the registry and repository a blob came from.
pub const LABEL_DISTRIBUTION_SOURCE: &str = "containerd.io/distribution.source";

/// What a pull reports as it goes (for the Transfer service's progress events and CLIs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// A blob this pull needs, announced before it is fetched (or found in the store), with the
    /// index or manifest that refers to it (containerd's progress "waiting" jobs and parents).
    Waiting {
        descriptor: Descriptor,
        parent: Option<Descriptor>,
    },
    Resolved {
        reference: String,
        descriptor: Descriptor,
    },
    /// `offset` of `size` bytes of a blob are stored; a resumed download starts above 0. Sent
    /// when a download starts and then about every [`PROGRESS_STEP`] bytes.
    Downloading {
        digest: Digest,
        offset: u64,
        size: u64,
    },
    /// A blob is in the store: downloaded by this pull (`fetched`), or already there.
    Stored {
        digest: Digest,
        size: u64,
        fetched: bool,
    },
    Unpacked {
        chain_id: Digest,
    },
}

/// Bytes between two [`Progress::Downloading`] reports of one blob.
pub const PROGRESS_STEP: u64 = 1 << 20;

/// Receives [`Progress`] reports; called from async and blocking tasks, so it must be quick.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Where to unpack a pulled image.
#[derive(Clone)]
pub struct Unpack {
    pub snapshotter: SnapshotStore,
    /// Scratch space for layer application (mount points), on the same machine.
    pub tmp: PathBuf,
}

/// What to pull and how.
#[derive(Clone)]
pub struct PullOptions {
    pub client: ClientOptions,
    /// The platform to pick from an index; the host's (linux/amd64 here) when None.
    pub platform: Option<Platform>,
    /// Layers fetched at once.
    pub concurrency: usize,
    /// Also fetch the other platforms' manifests of the top index (only the chosen one is
    /// unpacked; the chosen platform must still be in the index).
    pub all_platforms: bool,
    pub unpack: Option<Unpack>,
    pub progress: Option<ProgressFn>,
    /// A lease of the caller to hold what is fetched (else a temporary one is used and deleted:
    /// the image record then holds the content).
    pub lease: Option<String>,
    /// Labels of the image record (e.g. CRI's `io.cri-containerd.image=managed`).
    pub labels: Labels,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            client: ClientOptions::default(),
            platform: None,
            concurrency: 3,
            all_platforms: false,
            unpack: None,
            progress: None,
            lease: None,
            labels: Labels::new(),
        }
    }
}

/// The outcome of a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub image: metadata::Image,
    /// The manifest that was chosen (the target itself, or the index entry for the platform).
    pub manifest: Digest,
    pub config: Digest,
    pub layers: Vec<Digest>,
    /// The top chain ID, when unpacked.
    pub chain_id: Option<Digest>,
}

/// Pulls `reference` into namespace `ns` of `db`. See the module doc for what is guaranteed.
///
/// ```no_run
/// # async fn f(db: wharf_core::metadata::Db) -> wharf_distribution::Result<()> {
/// let opts = wharf_distribution::pull::PullOptions::default();
/// let p = wharf_distribution::pull::pull(&db, "default", "busybox", &opts).await?;
/// println!("{} -> {}", p.image.name, p.manifest);
/// # Ok(()) }
/// ```
pub async fn pull(db: &Db, ns: &str, reference: &str, opts: &PullOptions) -> Result<Pulled> {
    let r = Reference::parse(reference)?;
    let what = format!("pull {r}");
    if let Some(l) = &opts.lease {
        // The caller's lease (a client's, as containerd's clients pass one) holds everything.
        db.lease_get(ns, l)
            .map_err(|e| Error::from(e).context(&what))?;
        return pull_inner(db, ns, &r, opts, l)
            .await
            .map_err(|e| e.context(&what));
    }
    let lease = TempLease::create(db, ns).map_err(|e| e.context(&what))?;
    let res = pull_inner(db, ns, &r, opts, lease.id()).await;
    drop(lease);
    res.map_err(|e| e.context(&what))
}

async fn pull_inner(
    db: &Db,
    ns: &str,
    r: &Reference,
    opts: &PullOptions,
    lease: &str,
) -> Result<Pulled> {
    let client = Arc::new(RepoClient::new(r, &opts.client)?);
    let fetch = Fetcher {
        db: db.clone(),
        ns: ns.to_string(),
        lease: lease.to_string(),
        client: client.clone(),
        source: (
            format!("{LABEL_DISTRIBUTION_SOURCE}.{}", r.domain()),
            r.path().to_string(),
        ),
        progress: opts.progress.clone(),
    };
    let target = client.resolve(r).await?;
    fetch.report(Progress::Resolved {
        reference: r.to_string(),
        descriptor: target.clone(),
    });
    let platform = opts.platform.clone().unwrap_or_else(Platform::host);
    tracing::info!(reference = %r, digest = %target.digest, media_type = %target.media_type, "resolved");

    // Walk index levels down to the manifest for the platform, storing each level.
    let mut desc = target.clone();
    let mut chain = Vec::new();
    let mut others = Vec::new();
    let mut parent: Option<Descriptor> = None;
    for level in 0..4 {
        if !images::is_index(&desc.media_type) {
            break;
        }
        fetch.report(Progress::Waiting {
            descriptor: desc.clone(),
            parent: parent.replace(desc.clone()),
        });
        let bytes = fetch.small(&desc).await?;
        let index = images::parse_index(&bytes)?;
        let (i, m) = index
            .manifests
            .iter()
            .enumerate()
            .find(|(_, m)| m.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "manifest for platform {platform} in index {}",
                    desc.digest
                ))
            })?;
        let mut labels = Labels::from([(
            format!("{}.m.{i}", metadata::LABEL_GC_REF_CONTENT),
            m.digest.clone(),
        )]);
        if opts.all_platforms && level == 0 {
            for (j, o) in index.manifests.iter().enumerate() {
                if j != i && images::is_manifest(&o.media_type) {
                    labels.insert(
                        format!("{}.m.{j}", metadata::LABEL_GC_REF_CONTENT),
                        o.digest.clone(),
                    );
                    others.push(o.clone());
                }
            }
        }
        chain.push((desc.clone(), labels, bytes));
        desc = m.clone();
    }
    if !images::is_manifest(&desc.media_type) {
        return Err(Error::FailedPrecondition(format!(
            "{}: unsupported manifest media type {:?}",
            desc.digest, desc.media_type
        )));
    }
    let manifest = fetch_image(
        &fetch,
        &desc,
        parent.as_ref(),
        opts.concurrency,
        opts.unpack.as_ref(),
    )
    .await?;
    for o in &others {
        fetch_image(&fetch, o, parent.as_ref(), opts.concurrency, None).await?;
    }
    let manifest_d = Digest::parse(&desc.digest)?;
    for (d, labels, bytes) in chain.iter().rev() {
        fetch.store_small(d, bytes, labels.clone()).await?;
    }

    let image = record_image(db, ns, r, &target, &opts.labels)?;
    // Layers were unpacked as they arrived; this pass checks the chain and labels the config
    // with its snapshot (a pull that resumed after a crash may also finish layers here).
    let chain_id = match &opts.unpack {
        Some(u) => {
            let (db, ns, u, m, lease) = (
                db.clone(),
                ns.to_string(),
                u.clone(),
                manifest_d.clone(),
                lease.to_string(),
            );
            let top = tokio::task::spawn_blocking(move || {
                images::unpack::unpack(&db, &u.snapshotter, &ns, &m, Some(&lease), &u.tmp)
            })
            .await
            .map_err(|e| Error::Internal(format!("unpack task: {e}")))??;
            fetch.report(Progress::Unpacked {
                chain_id: top.clone(),
            });
            Some(top)
        }
        None => None,
    };
    Ok(Pulled {
        image,
        manifest: manifest_d,
        config: Digest::parse(&manifest.config.digest)?,
        layers: manifest
            .layers
            .iter()
            .map(|l| Digest::parse(&l.digest))
            .collect::<wharf_core::Result<_>>()?,
        chain_id,
    })
}

/// Fetches one image manifest's config and layers (layers in parallel), then stores the config
/// and the manifest: children first, so a parent's gc.ref labels always point at stored content.
/// With `unpack`, each layer is applied as soon as it and the layers below it are stored, while
/// later layers still download.
async fn fetch_image(
    fetch: &Fetcher,
    desc: &Descriptor,
    parent: Option<&Descriptor>,
    concurrency: usize,
    unpack: Option<&Unpack>,
) -> Result<images::Manifest> {
    fetch.report(Progress::Waiting {
        descriptor: desc.clone(),
        parent: parent.cloned(),
    });
    let manifest_bytes = fetch.small(desc).await?;
    let manifest = images::parse_manifest(&manifest_bytes)?;
    for d in std::iter::once(&manifest.config).chain(manifest.layers.iter()) {
        fetch.report(Progress::Waiting {
            descriptor: d.clone(),
            parent: Some(desc.clone()),
        });
    }
    let config = fetch.small(&manifest.config).await?;
    let parsed = images::parse_config(&config)?;
    for l in &manifest.layers {
        if !images::is_layer(&l.media_type) {
            return Err(Error::NotImplemented(format!(
                "layer {} has media type {:?}, which wharf cannot unpack",
                l.digest, l.media_type
            )));
        }
    }
    let diff_ids = parsed
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<wharf_core::Result<Vec<_>>>()?;
    if unpack.is_some() && diff_ids.len() != manifest.layers.len() {
        return Err(Error::InvalidArgument(format!(
            "image {} has {} layers but its config lists {} diff IDs",
            desc.digest,
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let chains = images::chain_ids(&diff_ids);
    let (done_tx, done_rx): (Vec<_>, Vec<_>) = manifest
        .layers
        .iter()
        .map(|_| tokio::sync::oneshot::channel::<()>())
        .unzip();
    // With unpacking, each download may also apply its layer as it arrives (when the layer
    // below is unpacked by then); the unpacker below does the others after their download.
    let targets: Vec<Option<Target>> = (0..manifest.layers.len())
        .map(|i| {
            unpack.map(|u| Target {
                db: fetch.db.clone(),
                ns: fetch.ns.clone(),
                lease: fetch.lease.clone(),
                snapshotter: u.snapshotter.clone(),
                layer: manifest.layers[i].clone(),
                diff_id: diff_ids[i].clone(),
                chain: chains[i].clone(),
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
            })
        })
        .collect();
    // Owned descriptors: a stream of futures borrowing them trips rustc's higher-ranked
    // lifetime check when callers need the whole pull future to be Send (tonic handlers).
    let layers: Vec<Descriptor> = manifest.layers.clone();
    let downloads = futures::stream::iter(layers.into_iter().zip(done_tx).zip(targets).map(
        |((l, done), target)| async move {
            fetch.blob(&l, target).await?;
            let _ = done.send(());
            Ok::<(), Error>(())
        },
    ))
    .buffer_unordered(concurrency.max(1))
    .try_collect::<Vec<()>>();
    let unpacker = async {
        let Some(u) = unpack else {
            return Ok(());
        };
        for (i, done) in done_rx.into_iter().enumerate() {
            if done.await.is_err() {
                // That download failed: its error is the one reported.
                return Ok(());
            }
            let (db, ns, u, lease) = (
                fetch.db.clone(),
                fetch.ns.clone(),
                u.clone(),
                fetch.lease.clone(),
            );
            let (layer, diff_id, chain) = (
                manifest.layers[i].clone(),
                diff_ids[i].clone(),
                chains[i].clone(),
            );
            let parent = i.checked_sub(1).map(|p| chains[p].clone());
            tokio::task::spawn_blocking(move || {
                let l = images::unpack::Layer {
                    desc: &layer,
                    diff_id: &diff_id,
                    chain: &chain,
                    parent: parent.as_ref(),
                };
                images::unpack::unpack_layer(&db, &u.snapshotter, &ns, &l, Some(&lease), &u.tmp)
            })
            .await
            .map_err(|e| Error::Internal(format!("unpack task: {e}")))??;
        }
        Ok::<(), Error>(())
    };
    tokio::try_join!(downloads, unpacker)?;
    let mut labels = Labels::from([(
        format!("{}.config", metadata::LABEL_GC_REF_CONTENT),
        manifest.config.digest.clone(),
    )]);
    for (i, l) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("{}.l.{i}", metadata::LABEL_GC_REF_CONTENT),
            l.digest.clone(),
        );
    }
    fetch
        .store_small(&manifest.config, &config, Labels::new())
        .await?;
    fetch.store_small(desc, &manifest_bytes, labels).await?;
    Ok(manifest)
}

/// Creates the image record, or points an existing one at the new target.
fn record_image(
    db: &Db,
    ns: &str,
    r: &Reference,
    target: &Descriptor,
    labels: &Labels,
) -> Result<metadata::Image> {
    let now = std::time::SystemTime::now();
    let image = metadata::Image {
        name: r.to_string(),
        labels: labels.clone(),
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
            let mut paths = vec!["target".to_string()];
            paths.extend(labels.keys().map(|k| format!("labels.{k}")));
            Ok(db.image_update(ns, &image, &paths)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// A lease held for the duration of a pull or an import (expiring on its own should the daemon
/// die); deleted when dropped.
pub struct TempLease {
    db: Db,
    ns: String,
    id: String,
}

impl TempLease {
    pub fn create(db: &Db, ns: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        // Unique among concurrent pulls of this process, and across restarts.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("wharf-pull-{nanos}-{}-{seq}", std::process::id());
        let expire = chrono::Utc::now() + chrono::Duration::hours(24);
        let labels = Labels::from([(LABEL_GC_EXPIRE.to_string(), expire.to_rfc3339())]);
        db.lease_create(ns, &id, labels)?;
        Ok(TempLease {
            db: db.clone(),
            ns: ns.to_string(),
            id,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Also when the pull's future is dropped (cancelled): what it fetched is left to GC.
impl Drop for TempLease {
    fn drop(&mut self) {
        if let Err(e) = self.db.lease_delete(&self.ns, &self.id) {
            tracing::warn!(lease = %self.id, error = %e, "delete pull lease");
        }
    }
}
