//! Schedules garbage collection the way containerd's scheduler does with its default settings:
//! one collection shortly after start, one whenever enough deletions and reference changes have
//! accumulated (`MUTATION_THRESHOLD`), and one on demand for `sync` deletions, which wait for it.
//! Collecting after *every* deletion would also collect what clients created without a lease a
//! moment ago (e.g. `ctr snapshots view`), which containerd leaves alone until its next run.

use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Collections run so far and how they went, for the metrics endpoint.
    counters: Counters,
}

/// What the collections so far cost (a few atomics: free when nobody reads them).
#[derive(Default)]
struct Counters {
    runs: AtomicU64,
    failures: AtomicU64,
    nanos: AtomicU64,
    last_nanos: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GcFigures {
    /// Collections run, failed ones included.
    pub runs: u64,
    pub failures: u64,
    /// Time spent collecting, in total and in the last run.
    pub total: Duration,
    pub last: Duration,
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
                counters: Counters::default(),
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
        let start = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let stats = inner.db.gc()?;
            if !stats.snapshots.is_empty() {
                for s in &inner.snapshotters {
                    s.cleanup()?;
                }
            }
            Ok(stats)
        })
        .await
        .map_err(|e| wharf_core::Error::internal(format!("gc task: {e}")))
        .and_then(|r| r);
        let c = &self.inner.counters;
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        c.runs.fetch_add(1, Ordering::Relaxed);
        c.nanos.fetch_add(nanos, Ordering::Relaxed);
        c.last_nanos.store(nanos, Ordering::Relaxed);
        if result.is_err() {
            c.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Collections so far: how many, how many failed, how long they took.
    pub fn figures(&self) -> GcFigures {
        let c = &self.inner.counters;
        GcFigures {
            runs: c.runs.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            total: Duration::from_nanos(c.nanos.load(Ordering::Relaxed)),
            last: Duration::from_nanos(c.last_nanos.load(Ordering::Relaxed)),
        }
    }
}
