//! Applying a layer while it downloads: the bytes the content writer stores are also fed to a
//! thread that decompresses and applies them into a new snapshot, so a layer costs about
//! max(download, apply) instead of their sum. The snapshot is committed only after the blob
//! itself was verified and committed; on any trouble it is removed and the layer is unpacked the
//! ordinary way from the stored blob.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use bytes::Bytes;
use wharf_core::images::{Descriptor, LABEL_UNCOMPRESSED};
use wharf_core::metadata::{Db, Labels};
use wharf_core::snapshots::SnapshotStore;
use wharf_core::Digest;

/// Chunks (as the HTTP client delivers them, ~16 KiB) buffered between download and apply.
const QUEUE: usize = 256;

/// Where one layer goes.
#[derive(Clone)]
pub(crate) struct Target {
    pub db: Db,
    pub ns: String,
    pub lease: String,
    pub snapshotter: SnapshotStore,
    pub layer: Descriptor,
    pub diff_id: Digest,
    pub chain: Digest,
    pub parent: Option<Digest>,
}

/// A `Read` over the chunks sent to the applier; EOF when the sender is dropped.
struct ChunkReader {
    rx: Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        self.cur = self.cur.slice(n..);
        Ok(n)
    }
}

/// An apply in progress alongside a download.
pub(crate) struct StreamApply {
    tx: Option<SyncSender<Bytes>>,
    abandoned: bool,
    finished: bool,
    applier: Option<std::thread::JoinHandle<wharf_core::Result<()>>>,
    key: String,
    t: Target,
}

impl StreamApply {
    /// Starts applying into a new snapshot when the parent snapshot is there and the layer is not
    /// unpacked yet; None otherwise (the layer is then unpacked after its download). Blocking.
    pub fn start(t: Target) -> Option<StreamApply> {
        let s = &t.snapshotter;
        if s.stat(&t.ns, &t.chain.to_string()).is_ok() {
            return None;
        }
        if let Some(p) = &t.parent {
            s.stat(&t.ns, &p.to_string()).ok()?;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let key = format!("extract-{nanos}-{}", t.chain);
        let parent = t.parent.as_ref().map(|p| p.to_string());
        if let Err(e) = s.prepare(
            &t.ns,
            &key,
            parent.as_deref(),
            Labels::new(),
            Some(&t.lease),
        ) {
            tracing::debug!(error = %e, chain = %t.chain, "no streaming apply: prepare failed");
            return None;
        }
        let (dir, mode) = match s.apply_target(&t.ns, &key) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "no streaming apply: no apply target");
                let _ = s.remove(&t.ns, &key);
                return None;
            }
        };
        let (tx, rx) = sync_channel::<Bytes>(QUEUE);
        let (media_type, diff_id) = (t.layer.media_type.clone(), t.diff_id.clone());
        let applier = std::thread::Builder::new()
            .name("wharf-stream-apply".into())
            .spawn(move || {
                let reader = ChunkReader {
                    rx,
                    cur: Bytes::new(),
                };
                wharf_core::diff::apply_layer(reader, &media_type, &dir, mode, Some(&diff_id))
                    .map(|_| ())
            });
        let applier = match applier {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(error = %e, "no streaming apply: no thread");
                let _ = s.remove(&t.ns, &key);
                return None;
            }
        };
        Some(StreamApply {
            tx: Some(tx),
            abandoned: false,
            finished: false,
            applier: Some(applier),
            key,
            t,
        })
    }

    /// Feeds the next bytes of the blob (blocking while the applier is behind). After the
    /// applier failed, bytes are no longer sent.
    pub fn feed(&mut self, b: &Bytes) {
        if let Some(tx) = &self.tx {
            if tx.send(b.clone()).is_err() {
                self.tx = None;
            }
        }
    }

    /// The download started over: what was applied so far cannot be used.
    pub fn abandon(&mut self) {
        self.abandoned = true;
        self.tx = None;
    }

    /// Ends the apply once the blob's fate is known. Commits the snapshot when both the blob
    /// (`blob_ok`) and the apply succeeded; otherwise removes it. Returns whether it committed.
    /// Blocking.
    pub fn finish(mut self, blob_ok: bool) -> bool {
        self.tx = None; // end of stream
        self.finished = true;
        let applied = self
            .applier
            .take()
            .map(|h| h.join())
            .unwrap_or(Ok(Err(wharf_core::Error::internal("no apply thread"))))
            .unwrap_or_else(|_| Err(wharf_core::Error::internal("apply thread panicked")));
        let (s, t) = (&self.t.snapshotter, &self.t);
        if !blob_ok || self.abandoned || applied.is_err() {
            if let Err(e) = &applied {
                tracing::debug!(error = %e, chain = %t.chain, "streaming apply failed, unpacking after the download");
            }
            let _ = s.remove(&t.ns, &self.key);
            return false;
        }
        let chain = t.chain.to_string();
        match s.commit(&t.ns, &chain, &self.key, Labels::new(), Some(&t.lease)) {
            Ok(()) => {}
            // Unpacked concurrently by another pull: theirs is as good.
            Err(wharf_core::Error::AlreadyExists(_)) => {
                let _ = s.remove(&t.ns, &self.key);
                return true;
            }
            Err(e) => {
                tracing::debug!(error = %e, "commit of a streamed snapshot failed");
                let _ = s.remove(&t.ns, &self.key);
                return false;
            }
        }
        let layer_d = Digest::parse(&t.layer.digest);
        let label = Labels::from([(LABEL_UNCOMPRESSED.to_string(), t.diff_id.to_string())]);
        if let Ok(d) = layer_d {
            let path = format!("labels.{LABEL_UNCOMPRESSED}");
            if let Err(e) = t.db.content_update(&t.ns, &d, &label, &[path]) {
                tracing::warn!(error = %e, digest = %d, "label a streamed layer");
            }
        }
        true
    }
}

/// A pull cancelled mid-download drops its apply unfinished: the snapshot is removed (the apply
/// thread sees the end of its stream and fails on its own).
impl Drop for StreamApply {
    fn drop(&mut self) {
        if !self.finished {
            self.tx = None;
            let _ = self.t.snapshotter.remove(&self.t.ns, &self.key);
        }
    }
}
