//! What a scrape reports besides gRPC calls, gathered when it is asked for: each task's cgroup
//! figures from its shim's Stats, OOM events counted off the event exchange, the content store
//! and snapshot counts (a filesystem walk: off the async threads, cached briefly), GC and shims.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::Message;
use wharf_core::filters::Filter;

use super::text::{Encoder, Kind};
use crate::server::Daemon;

/// How long store figures are reused: walking the blobs on every scrape would cost more than
/// the scrape is worth.
const STORE_CACHE: Duration = Duration::from_secs(5);

/// A shim slower than this to answer Stats is left out of the scrape.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// OOM events seen per task (namespace, id), and in all.
#[derive(Default)]
pub struct OomCounts {
    per_task: Mutex<HashMap<(String, String), u64>>,
    total: std::sync::atomic::AtomicU64,
}

impl OomCounts {
    pub fn add(&self, ns: &str, id: &str) {
        self.total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut m) = self.per_task.lock() {
            *m.entry((ns.to_string(), id.to_string())).or_default() += 1;
        }
    }

    /// The count of a task; tasks not in `present` are forgotten.
    fn take_for(&self, present: &[(String, String)]) -> HashMap<(String, String), u64> {
        let Ok(mut m) = self.per_task.lock() else {
            return HashMap::new();
        };
        m.retain(|k, _| present.contains(k));
        m.clone()
    }
}

/// Content and snapshot figures, as of `at`.
#[derive(Clone, Default)]
pub struct StoreFigures {
    content_bytes: u64,
    content_blobs: u64,
    /// Snapshots per snapshotter, all namespaces.
    snapshots: Vec<(String, u64)>,
}

/// The last store figures and when they were taken; one walk at a time.
#[derive(Default)]
pub struct StoreCache(tokio::sync::Mutex<Option<(Instant, StoreFigures)>>);

/// A task's figures from its cgroup.
#[derive(Default, Debug, PartialEq)]
struct TaskFigures {
    cpu_seconds: f64,
    memory_bytes: u64,
    memory_limit_bytes: u64,
    pids: u64,
}

/// Decodes `io.containerd.cgroups.v1.Metrics` or `v2.Metrics` (what shims send in Stats).
fn task_figures(type_url: &str, value: &[u8]) -> Option<TaskFigures> {
    if type_url.ends_with("io.containerd.cgroups.v2.Metrics") {
        let m = v2::Metrics::parse_from_bytes(value).ok()?;
        return Some(TaskFigures {
            cpu_seconds: m.cpu.usage_usec as f64 / 1e6,
            memory_bytes: m.memory.usage,
            memory_limit_bytes: m.memory.usage_limit,
            pids: m.pids.current,
        });
    }
    if type_url.ends_with("io.containerd.cgroups.v1.Metrics") {
        let m = v1::Metrics::parse_from_bytes(value).ok()?;
        return Some(TaskFigures {
            cpu_seconds: m.cpu.usage.total as f64 / 1e9,
            memory_bytes: m.memory.usage.usage,
            memory_limit_bytes: m.memory.usage.limit,
            pids: m.pids.current,
        });
    }
    None
}

/// Shims, their tasks' cgroup figures and OOM counts.
pub async fn tasks(d: &Daemon, oom: &OomCounts, e: &mut Encoder) {
    let shims = d.runtime.all().await;
    let stats = futures::future::join_all(
        shims
            .iter()
            .map(|s| tokio::time::timeout(STATS_TIMEOUT, s.stats())),
    )
    .await;
    e.family(
        "wharfd_shims",
        Kind::Gauge,
        "Shim connections wharfd holds (one per task; the tasks of a pod share one shim process).",
    );
    e.sample("wharfd_shims", &[], shims.len() as f64);

    let figures: Vec<(&str, &str, TaskFigures)> = shims
        .iter()
        .zip(stats)
        .filter_map(|(s, r)| {
            let any = r.ok()?.ok()?.stats.into_option()?;
            let f = task_figures(&any.type_url, &any.value)?;
            Some((s.namespace.as_str(), s.id.as_str(), f))
        })
        .collect();
    type Field = fn(&TaskFigures) -> f64;
    let families: [(&str, Kind, &str, Field); 4] = [
        (
            "wharfd_task_cpu_usage_seconds_total",
            Kind::Counter,
            "CPU time the task's cgroup used.",
            |f| f.cpu_seconds,
        ),
        (
            "wharfd_task_memory_usage_bytes",
            Kind::Gauge,
            "Memory the task's cgroup uses.",
            |f| f.memory_bytes as f64,
        ),
        (
            "wharfd_task_memory_limit_bytes",
            Kind::Gauge,
            "Memory limit of the task's cgroup.",
            |f| f.memory_limit_bytes as f64,
        ),
        (
            "wharfd_task_pids",
            Kind::Gauge,
            "Processes in the task's cgroup.",
            |f| f.pids as f64,
        ),
    ];
    for (name, kind, help, field) in families {
        e.family(name, kind, help);
        for (ns, id, f) in &figures {
            e.sample(name, &[("namespace", ns), ("id", id)], field(f));
        }
    }

    let present: Vec<(String, String)> = shims
        .iter()
        .map(|s| (s.namespace.clone(), s.id.clone()))
        .collect();
    let counts = oom.take_for(&present);
    e.family(
        "wharfd_task_oom_events_total",
        Kind::Counter,
        "OOM events of the task (its shim's /tasks/oom events).",
    );
    for (ns, id) in &present {
        let n = counts.get(&(ns.clone(), id.clone())).copied().unwrap_or(0);
        e.sample(
            "wharfd_task_oom_events_total",
            &[("namespace", ns), ("id", id)],
            n as f64,
        );
    }
    e.family(
        "wharfd_oom_events_total",
        Kind::Counter,
        "OOM events of all tasks since wharfd started.",
    );
    e.sample(
        "wharfd_oom_events_total",
        &[],
        oom.total.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
}

/// Content store size and snapshot counts, from the cache when it is fresh.
pub async fn stores(d: &std::sync::Arc<Daemon>, cache: &StoreCache, e: &mut Encoder) {
    let figures = {
        let mut c = cache.0.lock().await;
        match &*c {
            Some((at, f)) if at.elapsed() < STORE_CACHE => f.clone(),
            _ => {
                let daemon = d.clone();
                match tokio::task::spawn_blocking(move || walk_stores(&daemon)).await {
                    Ok(f) => {
                        *c = Some((Instant::now(), f.clone()));
                        f
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "metrics: store walk");
                        return;
                    }
                }
            }
        }
    };
    e.family(
        "wharfd_content_bytes",
        Kind::Gauge,
        "Size of the blobs in the content store.",
    );
    e.sample("wharfd_content_bytes", &[], figures.content_bytes as f64);
    e.family(
        "wharfd_content_blobs",
        Kind::Gauge,
        "Blobs in the content store.",
    );
    e.sample("wharfd_content_blobs", &[], figures.content_blobs as f64);
    e.family(
        "wharfd_snapshots",
        Kind::Gauge,
        "Snapshots per snapshotter, all namespaces.",
    );
    for (name, n) in &figures.snapshots {
        e.sample("wharfd_snapshots", &[("snapshotter", name)], *n as f64);
    }
}

/// Blocking: stats every blob and reads every snapshot record.
fn walk_stores(d: &Daemon) -> StoreFigures {
    let mut f = StoreFigures::default();
    match d.db.content_store().walk() {
        Ok(blobs) => {
            f.content_blobs = blobs.len() as u64;
            f.content_bytes = blobs.iter().map(|b| b.size).sum();
        }
        Err(e) => tracing::warn!(error = %e, "metrics: content walk"),
    }
    let namespaces = d.db.namespace_list().unwrap_or_default();
    let all = Filter::default();
    for (name, s) in &d.snapshotters {
        let n = namespaces
            .iter()
            .map(|ns| s.walk(&ns.name, &all).map(|v| v.len() as u64).unwrap_or(0))
            .sum();
        f.snapshots.push((name.clone(), n));
    }
    f
}

/// Garbage collection: runs, failures, time spent.
pub fn gc(d: &Daemon, e: &mut Encoder) {
    let g = d.gc.figures();
    e.family(
        "wharfd_gc_runs_total",
        Kind::Counter,
        "Garbage collections run.",
    );
    e.sample("wharfd_gc_runs_total", &[], g.runs as f64);
    e.family(
        "wharfd_gc_failures_total",
        Kind::Counter,
        "Garbage collections that failed.",
    );
    e.sample("wharfd_gc_failures_total", &[], g.failures as f64);
    e.family(
        "wharfd_gc_duration_seconds",
        Kind::Summary,
        "Time garbage collections took.",
    );
    e.sample("wharfd_gc_duration_seconds_sum", &[], g.total.as_secs_f64());
    e.sample("wharfd_gc_duration_seconds_count", &[], g.runs as f64);
    e.family(
        "wharfd_gc_last_duration_seconds",
        Kind::Gauge,
        "Time the last garbage collection took.",
    );
    e.sample("wharfd_gc_last_duration_seconds", &[], g.last.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v1_and_v2_cgroup_metrics() {
        let mut m = v1::Metrics::new();
        m.memory
            .mut_or_insert_default()
            .usage
            .mut_or_insert_default()
            .usage = 4096;
        m.memory
            .mut_or_insert_default()
            .usage
            .mut_or_insert_default()
            .limit = 1 << 30;
        m.cpu
            .mut_or_insert_default()
            .usage
            .mut_or_insert_default()
            .total = 2_500_000_000;
        m.pids.mut_or_insert_default().current = 3;
        let f = task_figures(
            "io.containerd.cgroups.v1.Metrics",
            &m.write_to_bytes().unwrap(),
        );
        assert_eq!(
            f,
            Some(TaskFigures {
                cpu_seconds: 2.5,
                memory_bytes: 4096,
                memory_limit_bytes: 1 << 30,
                pids: 3
            })
        );
        let mut m = v2::Metrics::new();
        m.memory.mut_or_insert_default().usage = 8192;
        m.cpu.mut_or_insert_default().usage_usec = 1_500_000;
        let f = task_figures(
            "io.containerd.cgroups.v2.Metrics",
            &m.write_to_bytes().unwrap(),
        )
        .unwrap();
        assert_eq!((f.cpu_seconds, f.memory_bytes), (1.5, 8192));
        assert_eq!(task_figures("x.Other", &[]), None);
    }

    #[test]
    fn oom_counts_forget_gone_tasks() {
        let o = OomCounts::default();
        o.add("n", "a");
        o.add("n", "a");
        o.add("n", "b");
        let present = vec![("n".to_string(), "a".to_string())];
        assert_eq!(o.take_for(&present).get(&present[0]), Some(&2));
        assert_eq!(o.per_task.lock().unwrap().len(), 1);
        assert_eq!(o.total.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
