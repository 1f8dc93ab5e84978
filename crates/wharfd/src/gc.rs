//! Schedules garbage collection: deletions trigger a collection shortly after (coalescing bursts
//! of deletions into one run), and `sync` deletions run one and wait for it, as containerd's GC
//! scheduler does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use wharf_core::metadata::{Db, GcStats};
use wharf_core::snapshots::SnapshotStore;

/// How long after a deletion the collection runs, so a burst of deletions costs one run.
const DELAY: Duration = Duration::from_millis(100);

#[derive(Clone)]
pub struct GcScheduler {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    /// Their directories are removed after GC dropped their records.
    snapshotters: Vec<SnapshotStore>,
    notify: Notify,
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
                running: Mutex::new(()),
            }),
        };
        let bg = s.clone();
        tokio::spawn(async move {
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

    /// Asks for a collection soon.
    pub fn trigger(&self) {
        self.inner.notify.notify_one();
    }

    /// Runs a collection now and waits for it.
    pub async fn run(&self) -> wharf_core::Result<GcStats> {
        let _one = self.inner.running.lock().await;
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
