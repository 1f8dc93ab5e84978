//! Fetching a pull's blobs into the content store of one namespace: small documents whole,
//! layers streamed into resumable ingests (and, when asked, into a streaming apply), each
//! verified before commit, with the pull's lease and containerd's labels.

use std::sync::Arc;

use tokio::sync::mpsc;
use wharf_core::images::{self, Descriptor};
use wharf_core::metadata::{self, Db, Labels};
use wharf_core::Digest;

use crate::client::{Chunk, RepoClient};
use crate::pull::{Progress, ProgressFn, PROGRESS_STEP};
use crate::stream::{StreamApply, Target};
use crate::{Error, Result};

/// Fetches into the content store of one namespace, with the pull's lease and source label.
#[derive(Clone)]
pub(crate) struct Fetcher {
    pub db: Db,
    pub ns: String,
    pub lease: String,
    pub client: Arc<RepoClient>,
    /// containerd's distribution.source label: (key, repository).
    pub source: (String, String),
    pub progress: Option<ProgressFn>,
}

/// containerd's ingest ref for a descriptor (`layer-sha256:…`, `manifest-sha256:…`).
fn ingest_ref(desc: &Descriptor) -> String {
    let kind = if images::is_index(&desc.media_type) {
        "index"
    } else if images::is_manifest(&desc.media_type) {
        "manifest"
    } else if images::is_layer(&desc.media_type) {
        "layer"
    } else {
        "config"
    };
    format!("{kind}-{}", desc.digest)
}

/// How long to wait for another pull that holds the ingest of the same blob.
const LOCKED_WAIT: std::time::Duration = std::time::Duration::from_millis(100);
const LOCKED_TRIES: u32 = 6000;

impl Fetcher {
    pub(crate) fn report(&self, p: Progress) {
        if let Some(f) = &self.progress {
            f(p);
        }
    }

    /// A small document: from the store when present (in this namespace or, shared by the
    /// blobs on disk, another), else fetched and verified (not stored yet).
    pub(crate) async fn small(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let d = Digest::parse(&desc.digest)?;
        if self.db.content_info(&self.ns, &d).is_ok() || self.db.content_store().exists(&d) {
            let (db, d2) = (self.db.clone(), d.clone());
            let bytes = tokio::task::spawn_blocking(move || db.content_store().read_at(&d2, 0, 0))
                .await
                .map_err(|e| Error::Internal(format!("read task: {e}")))??;
            if let Ok(size) = u64::try_from(desc.size) {
                crate::client::verify(&format!("stored {d}"), &bytes, &d, size)?;
            }
            return Ok(bytes);
        }
        self.client.fetch_small(desc).await
    }

    /// Stores verified bytes of a small document with its labels (or adds the labels if stored).
    pub(crate) async fn store_small(
        &self,
        desc: &Descriptor,
        bytes: &[u8],
        labels: Labels,
    ) -> Result<()> {
        let (f, desc, bytes) = (self.clone(), desc.clone(), bytes.to_vec());
        tokio::task::spawn_blocking(move || {
            let d = Digest::parse(&desc.digest)?;
            let mut labels = labels;
            let (k, v) = &f.source;
            match f.open_writer(&desc, &d)? {
                Some(mut w) => {
                    labels.insert(k.clone(), v.clone());
                    if w.offset() > 0 {
                        w.write_at(0, &bytes)?;
                    } else {
                        w.write(&bytes)?;
                    }
                    w.commit(bytes.len() as u64, Some(d.clone()), labels)?;
                    f.report(Progress::Stored {
                        digest: d,
                        size: bytes.len() as u64,
                        fetched: true,
                    });
                    Ok(())
                }
                None => {
                    f.add_labels(&d, labels)?;
                    f.report(Progress::Stored {
                        digest: d,
                        size: bytes.len() as u64,
                        fetched: false,
                    });
                    Ok(())
                }
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("store task: {e}")))?
    }

    /// Opens the ingest of `desc`; None when the blob is already in this namespace (or was shared
    /// into it from another). Waits while another pull holds the same ingest.
    fn open_writer(
        &self,
        desc: &Descriptor,
        d: &Digest,
    ) -> Result<Option<metadata::ContentWriter>> {
        let size = u64::try_from(desc.size)
            .map_err(|_| Error::InvalidArgument(format!("{d}: negative size")))?;
        let reference = ingest_ref(desc);
        for _ in 0..LOCKED_TRIES {
            match self.db.content_writer(
                &self.ns,
                &reference,
                size,
                Some(d.clone()),
                Some(&self.lease),
            ) {
                Ok(w) => return Ok(Some(w)),
                Err(wharf_core::Error::AlreadyExists(_)) => return Ok(None),
                Err(wharf_core::Error::Unavailable(_)) => std::thread::sleep(LOCKED_WAIT),
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(format!(
            "{d}: another pull kept its download locked for too long"
        )))
    }

    /// Adds `labels` and the source label to stored content, keeping other repositories already
    /// named in the source label (comma-separated, as containerd does).
    fn add_labels(&self, d: &Digest, mut labels: Labels) -> Result<()> {
        let info = self.db.content_info(&self.ns, d)?;
        let (k, v) = &self.source;
        let merged = match info.labels.get(k) {
            Some(cur) if cur.split(',').any(|r| r == v) => cur.clone(),
            Some(cur) if !cur.is_empty() => format!("{cur},{v}"),
            _ => v.clone(),
        };
        labels.insert(k.clone(), merged);
        labels.retain(|k, v| info.labels.get(k) != Some(v));
        if labels.is_empty() {
            return Ok(());
        }
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.db.content_update(&self.ns, d, &labels, &paths)?;
        // The lease holds it too, in case it is only referenced by what this pull stores later.
        let r = metadata::LeaseResource {
            id: d.to_string(),
            kind: "content".into(),
        };
        self.db.lease_add_resource(&self.ns, &self.lease, &r)?;
        Ok(())
    }

    /// Downloads a layer blob into the store (resuming a previous partial download), verified by
    /// the content writer's commit. A blob that fails verification leaves no ingest behind. With
    /// `target`, a fresh download is also applied to its snapshot as it arrives (see `stream`).
    pub(crate) async fn blob(&self, desc: &Descriptor, target: Option<Target>) -> Result<()> {
        let d = Digest::parse(&desc.digest)?;
        let f = self.clone();
        let (desc2, d2) = (desc.clone(), d.clone());
        let w = tokio::task::spawn_blocking(move || f.open_writer(&desc2, &d2))
            .await
            .map_err(|e| Error::Internal(format!("open task: {e}")))??;
        let size = desc.size as u64;
        let Some(mut w) = w else {
            let f = self.clone();
            let d2 = d.clone();
            tokio::task::spawn_blocking(move || f.add_labels(&d2, Labels::new()))
                .await
                .map_err(|e| Error::Internal(format!("label task: {e}")))??;
            self.report(Progress::Stored {
                digest: d,
                size,
                fetched: false,
            });
            return Ok(());
        };
        let offset = w.offset();
        self.report(Progress::Downloading {
            digest: d.clone(),
            offset,
            size,
        });
        let (tx, mut rx) = mpsc::channel::<Chunk>(32);
        let mut labels = Labels::new();
        labels.insert(self.source.0.clone(), self.source.1.clone());
        // The store is synchronous: a blocking task writes what the download streams to it (and
        // to the streaming apply, which needs the blob from its first byte).
        let (f, d3) = (self.clone(), d.clone());
        let writer = tokio::task::spawn_blocking(
            move || -> Result<(metadata::ContentWriter, Option<StreamApply>)> {
                let mut stream = target.filter(|_| offset == 0).and_then(StreamApply::start);
                let mut copy = || -> Result<()> {
                    let mut reported = offset;
                    while let Some(c) = rx.blocking_recv() {
                        match c {
                            Chunk::Data(b) => {
                                w.write(&b)?;
                                if let Some(s) = &mut stream {
                                    s.feed(&b);
                                }
                            }
                            // write_at(0) truncates the ingest.
                            Chunk::Reset => {
                                w.write_at(0, &[])?;
                                if let Some(s) = &mut stream {
                                    s.abandon();
                                }
                            }
                        }
                        let now = w.offset();
                        if now < reported || now - reported >= PROGRESS_STEP {
                            reported = now;
                            f.report(Progress::Downloading {
                                digest: d3.clone(),
                                offset: now,
                                size,
                            });
                        }
                    }
                    Ok(())
                };
                match copy() {
                    Ok(()) => Ok((w, stream)),
                    Err(e) => {
                        if let Some(s) = stream {
                            s.finish(false);
                        }
                        Err(e)
                    }
                }
            },
        );
        let fetched = self.client.fetch_blob(desc, offset, &tx).await;
        drop(tx);
        let (w, stream) = writer
            .await
            .map_err(|e| Error::Internal(format!("write task: {e}")))??;
        let (db, ns, reference) = (self.db.clone(), self.ns.clone(), ingest_ref(desc));
        if let Err(e) = fetched {
            // A broken download is kept for resuming; bytes the registry got wrong are not.
            drop(w);
            if let Some(s) = stream {
                let _ = tokio::task::spawn_blocking(move || s.finish(false)).await;
            }
            if e.kind() == crate::Kind::FailedPrecondition {
                let _ = db.content_abort(&ns, &reference);
            }
            return Err(e);
        }
        let d2 = d.clone();
        let f = self.clone();
        tokio::task::spawn_blocking(move || {
            let committed = w.commit(size, Some(d2.clone()), labels);
            if let Some(s) = stream {
                // Only now, with the blob verified, may its snapshot be committed.
                s.finish(committed.is_ok());
            }
            match committed {
                Ok(_) => {
                    f.report(Progress::Stored {
                        digest: d2,
                        size,
                        fetched: true,
                    });
                    Ok(())
                }
                Err(e) => {
                    // Bad bytes must not be resumed from by the next attempt.
                    let _ = db.content_abort(&ns, &reference);
                    Err(Error::FailedPrecondition(format!(
                        "blob {d2}: verification failed, nothing was stored: {e}"
                    )))
                }
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("commit task: {e}")))?
    }
}
