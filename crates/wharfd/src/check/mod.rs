//! Consistency check of a daemon's stores against what is on disk (`wharf system check`, and
//! once at start, logged): content records against blobs, snapshot records against their
//! directories, and what tasks leave behind (mounts, bundles, cgroups) or writers (ingests).
//!
//! Each part finds inconsistencies and, when asked, repairs the safe ones: orphan directories,
//! stale mounts, bundles, cgroups and ingests are removed; a record whose blob is gone is dropped
//! (so the next pull fetches the blob again); a blob whose size or digest is wrong is only
//! reported (it is referenced: removing it is the user's call).
//!
//! At start nothing is in flight, so everything is judged at once and the kinds a crash
//! routinely leaves (orphan snapshot directories, mounts, bundles) are repaired there; at run
//! time what was touched in the last [`GRACE`] may belong to work in progress and is left alone.

mod content;
mod facts;
mod mounts;
mod snapshots;
mod tasks;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use facts::Facts;

use crate::server::Daemon;

/// At run time, bundles, cgroups and half-made ingests younger than this may be work in
/// progress (a task being created or deleted, a writer opening).
pub const GRACE: Duration = Duration::from_secs(30);

/// Ingests untouched for longer than this are abandoned: it is the lifetime wharf's pulls and
/// containerd's clients give the leases that hold what they fetch.
pub const INGEST_EXPIRY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A content record whose blob is not on disk.
    MissingBlob,
    /// A blob whose size differs from its record (truncated or overwritten).
    BlobSize,
    /// A blob that no longer hashes to its digest (`--deep`).
    CorruptBlob,
    /// A snapshot directory no record references.
    OrphanSnapshotDir,
    /// A snapshot record whose directory is gone.
    MissingSnapshotDir,
    /// A mount under the root or state directory whose owner (task, pod, apply) is gone.
    StaleMount,
    /// A task bundle (state side) without a task.
    StaleBundle,
    /// A bundle's work directory (root side) without a bundle or task.
    StaleWorkDir,
    /// An empty cgroup `/<namespace>/<id>` of a task that no longer exists.
    StaleCgroup,
    /// An ingest nobody writes to, past its expiry (or half-created by a crash).
    StaleIngest,
    /// A task (a shim) whose container record is gone: wharfd died while deleting it.
    OrphanTask,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::MissingBlob => "missing-blob",
            Kind::BlobSize => "blob-size",
            Kind::CorruptBlob => "corrupt-blob",
            Kind::OrphanSnapshotDir => "orphan-snapshot-dir",
            Kind::MissingSnapshotDir => "missing-snapshot-dir",
            Kind::StaleMount => "stale-mount",
            Kind::StaleBundle => "stale-bundle",
            Kind::StaleWorkDir => "stale-work-dir",
            Kind::StaleCgroup => "stale-cgroup",
            Kind::StaleIngest => "stale-ingest",
            Kind::OrphanTask => "orphan-task",
        }
    }

    /// What the start-up check repairs by itself: what a crash of wharfd leaves routinely.
    fn repaired_at_start(self) -> bool {
        matches!(
            self,
            Kind::OrphanSnapshotDir
                | Kind::StaleMount
                | Kind::StaleBundle
                | Kind::StaleWorkDir
                | Kind::StaleIngest
        )
    }
}

/// One inconsistency.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: Kind,
    pub subject: String,
    pub detail: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    None,
    /// The start-up subset ([`Kind::repaired_at_start`]).
    Startup,
    All,
}

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub deep: bool,
    pub repair: Repair,
    /// Start-up: nothing is in flight (no grace period, apply mounts are all stale).
    pub startup: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// What was looked at, by part.
    pub checked: BTreeMap<&'static str, u64>,
}

/// The findings so far and how to treat new ones; handed to each part.
pub(crate) struct Ctx {
    opts: Options,
    now: SystemTime,
    report: Report,
}

impl Ctx {
    /// True when `touched` is recent enough to belong to work in progress.
    fn young(&self, touched: SystemTime) -> bool {
        !self.opts.startup
            && self
                .now
                .duration_since(touched)
                .map(|age| age < GRACE)
                .unwrap_or(true)
    }

    fn count(&mut self, part: &'static str, n: u64) {
        *self.report.checked.entry(part).or_default() += n;
    }

    /// Records a finding, running `fix` when this check repairs its kind; a failed fix is part
    /// of the finding's detail.
    fn found(
        &mut self,
        kind: Kind,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl FnOnce() -> anyhow::Result<()>,
    ) {
        let mut detail = detail.into();
        let wanted = match self.opts.repair {
            Repair::None => false,
            Repair::Startup => kind.repaired_at_start(),
            Repair::All => true,
        };
        let repaired = wanted
            && match fix() {
                Ok(()) => true,
                Err(e) => {
                    detail.push_str(&format!(" (repair failed: {e:#})"));
                    false
                }
            };
        self.report.findings.push(Finding {
            kind,
            subject: subject.into(),
            detail,
            repaired,
        });
    }
}

/// Runs every part of the check (blocking work on the blocking pool).
pub async fn run(d: &Arc<Daemon>, opts: Options) -> anyhow::Result<Report> {
    // One check at a time: two repairs must not race over the same leftovers.
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ONE.lock().await;
    let facts = Facts::gather(d).await?;
    let d = d.clone();
    tokio::task::spawn_blocking(move || {
        let mut ctx = Ctx {
            opts,
            now: SystemTime::now(),
            report: Report::default(),
        };
        // Mounts first: bundles are only removed once nothing is mounted in them.
        mounts::check(&d, &facts, &mut ctx)?;
        tasks::check(&d, &facts, &mut ctx)?;
        snapshots::check(&d, &mut ctx)?;
        content::check(&d, &facts, &mut ctx)?;
        ctx.report
            .findings
            .sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
        Ok(ctx.report)
    })
    .await?
}

/// The check wharfd runs once at start, after shims were restored: every finding is logged, and
/// what a crash routinely leaves is repaired.
pub async fn startup(d: &Arc<Daemon>) {
    let opts = Options {
        deep: false,
        repair: Repair::Startup,
        startup: true,
    };
    match run(d, opts).await {
        Ok(r) => {
            for f in &r.findings {
                tracing::warn!(
                    kind = f.kind.as_str(),
                    subject = %f.subject,
                    repaired = f.repaired,
                    "start-up check: {}",
                    f.detail
                );
            }
            let left = r.findings.iter().filter(|f| !f.repaired).count();
            tracing::info!(
                findings = r.findings.len(),
                remaining = left,
                "start-up check done"
            );
        }
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "start-up check failed"),
    }
}
