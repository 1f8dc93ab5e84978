//! Schedules garbage collection the way containerd's scheduler does with its default settings:
//! one collection shortly after start, one whenever enough deletions and reference changes have
//! accumulated (`MUTATION_THRESHOLD`), and one on demand for `sync` deletions, which wait for it.
//! Collecting after *every* deletion would also collect what clients created without a lease a
//! moment ago (e.g. `ctr snapshots view`), which containerd leaves alone until its next run.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use wharf_core::metadata::{Db, GcStats};
use wharf_core::snapshots::SnapshotStore;

/// How long after the threshold is reached the collection runs, so a burst costs one run.
const DELAY: Duration = Duration::from_millis(100);

/// Deletions and reference changes that trigger a collection (containerd's `mutation_threshold`).
const MUTATION_THRESHOLD: usize = 100;

#[derive(Clone)]
pub struct GcScheduler {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// Their directories are removed after GC dropped their records.
    snapshotters: Vec<SnapshotStore>,
    notify: Notify,
    mutations: std::sync::atomic::AtomicUsize,
    /// One collection at a time.
    running: Mutex<()>,
}

impl GcScheduler {
    /// Starts the background task on the current runtime.
    pub fn start(db: Db, snapshotters: Vec<SnapshotStore>) -> Self {
        let s = GcScheduler {
            inner: Arc::new(Inner {
                db,
                snapshotters,
                notify: Notify::new(),
                mutations: std::sync::atomic::AtomicUsize::new(0),
                running: Mutex::new(()),
            }),
        };
        let bg = s.clone();
        tokio::spawn(async move {
            // One collection at start: whatever a crash left unreferenced.
            tokio::time::sleep(DELAY).await;
            if let Err(e) = bg.run().await {
                tracing::warn!(error = %e, "garbage collection failed");
            }
            loop {
                bg.inner.notify.notified().await;
                tokio::time::sleep(DELAY).await;
                if let Err(e) = bg.run().await {
                    tracing::warn!(error = %e, "garbage collection failed");
                }
            }
        });
        s
    }

    /// Records a deletion or reference change; enough of them schedule a collection.
    pub fn trigger(&self) {
        let n = self
            .inner
            .mutations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n >= MUTATION_THRESHOLD {
            self.inner.notify.notify_one();
        }
    }

    /// Runs a collection now and waits for it.
    pub async fn run(&self) -> wharf_core::Result<GcStats> {
        let _one = self.inner.running.lock().await;
        self.inner
            .mutations
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let stats = inner.db.gc()?;
            if !stats.snapshots.is_empty() {
                for s in &inner.snapshotters {
                    s.cleanup()?;
                }
            }
            Ok(stats)
        })
        .await
        .map_err(|e| wharf_core::Error::internal(format!("gc task: {e}")))?
    }
}
