//! Garbage collection with containerd's semantics: mark from the roots (images, containers,
//! unexpired leases, objects labelled `containerd.io/gc.root`), follow `containerd.io/gc.ref.*`
//! labels and snapshot parents, then sweep every record nothing reached and every blob on disk no
//! namespace records.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use redb::ReadableTable;

use super::leases::{delete_resources_tx, lease_expiry, list_resources};
use super::*;

/// What one collection removed.
#[derive(Debug, Default, Clone)]
pub struct GcStats {
    /// Content records removed, as (namespace, digest).
    pub content: Vec<(String, String)>,
    /// Blobs removed from disk.
    pub blobs: usize,
    /// Expired leases removed, as (namespace, id).
    pub leases: Vec<(String, String)>,
    /// Snapshot records removed, as (namespace, snapshotter, key), children before parents: the
    /// caller removes them from their snapshotters in this order.
    pub snapshots: Vec<(String, String, String)>,
    pub duration: Duration,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Node {
    Content(String, String),
    Snapshot(String, String, String),
}

/// The objects a set of labels references, in namespace `ns`.
fn label_refs(ns: &str, labels: &Labels, out: &mut Vec<Node>) {
    for (k, v) in labels {
        if k == LABEL_GC_REF_CONTENT || k.starts_with(&format!("{LABEL_GC_REF_CONTENT}.")) {
            out.push(Node::Content(ns.to_string(), v.clone()));
        } else if let Some(rest) = k.strip_prefix(LABEL_GC_REF_SNAPSHOT) {
            let snapshotter = rest.split('/').next().unwrap_or(rest);
            if !snapshotter.is_empty() {
                out.push(Node::Snapshot(
                    ns.to_string(),
                    snapshotter.to_string(),
                    v.clone(),
                ));
            }
        }
    }
}

impl Db {
    /// Runs one collection. Serialised against content commits, so a blob being committed is
    /// never swept between its rename and its record.
    pub fn gc(&self) -> Result<GcStats> {
        let start = Instant::now();
        let _excl = self
            .inner
            .gc_lock
            .write()
            .map_err(|_| Error::internal("gc lock poisoned"))?;
        let mut stats = GcStats::default();
        let now = SystemTime::now();
        let tx = self.write()?;
        {
            let namespaces: Vec<String> = {
                let t = tx.open_table(NAMESPACES)?;
                let mut v = Vec::new();
                for e in t.iter()? {
                    v.push(e?.0.value().to_string());
                }
                v
            };

            // Load the graph: labels of every content and snapshot record.
            let mut content_labels: HashMap<Node, Labels> = HashMap::new();
            let mut snap_info: HashMap<Node, SnapshotGcView> = HashMap::new();
            let mut roots: Vec<(Node, bool)> = Vec::new(); // (node, follow refs)
            {
                let ct = tx.open_table(CONTENT)?;
                for e in ct.iter()? {
                    let (k, v) = e?;
                    let (ns, d) = k.value();
                    let info: ContentInfo = decode(v.value())?;
                    let node = Node::Content(ns.to_string(), d.to_string());
                    if info.labels.contains_key(LABEL_GC_ROOT) {
                        roots.push((node.clone(), true));
                    }
                    content_labels.insert(node, info.labels);
                }
                let st = tx.open_table(SNAPSHOTS)?;
                for e in st.iter()? {
                    let (k, v) = e?;
                    let (ns, sn, key) = k.value();
                    let view: SnapshotGcView = decode(v.value()).unwrap_or_default();
                    let node = Node::Snapshot(ns.to_string(), sn.to_string(), key.to_string());
                    if view.labels.contains_key(LABEL_GC_ROOT) {
                        roots.push((node.clone(), true));
                    }
                    snap_info.insert(node, view);
                }
            }

            for ns in &namespaces {
                for (_, v) in scan_ns(&tx.open_table(IMAGES)?, ns)? {
                    let img: Image = decode(&v)?;
                    roots.push((Node::Content(ns.clone(), img.target.digest.clone()), true));
                    let mut refs = Vec::new();
                    label_refs(ns, &img.labels, &mut refs);
                    roots.extend(refs.into_iter().map(|n| (n, true)));
                }
                for (_, v) in scan_ns(&tx.open_table(CONTAINERS)?, ns)? {
                    let c: ContainerGcView = decode(&v).unwrap_or_default();
                    if !c.snapshotter.is_empty() && !c.snapshot_key.is_empty() {
                        roots.push((
                            Node::Snapshot(ns.clone(), c.snapshotter, c.snapshot_key),
                            true,
                        ));
                    }
                    let mut refs = Vec::new();
                    label_refs(ns, &c.labels, &mut refs);
                    roots.extend(refs.into_iter().map(|n| (n, true)));
                }
                let leases = scan_ns(&tx.open_table(LEASES)?, ns)?;
                for (id, v) in leases {
                    let l: Lease = decode(&v)?;
                    if lease_expiry(&l).is_some_and(|t| t <= now) {
                        tx.open_table(LEASES)?.remove((ns.as_str(), id.as_str()))?;
                        delete_resources_tx(&tx, ns, &id)?;
                        stats.leases.push((ns.clone(), id));
                        continue;
                    }
                    let flat = l.labels.contains_key(LABEL_GC_FLAT);
                    for r in list_resources(&tx.open_table(LEASE_RESOURCES)?, ns, &id)? {
                        if r.kind == "content" {
                            roots.push((Node::Content(ns.clone(), r.id), !flat));
                        } else if let Some(sn) = r.kind.strip_prefix("snapshots/") {
                            roots.push((Node::Snapshot(ns.clone(), sn.to_string(), r.id), !flat));
                        }
                    }
                }
            }

            // Mark.
            let mut marked: HashSet<Node> = HashSet::new();
            let mut queue: VecDeque<(Node, bool)> = roots.into_iter().collect();
            while let Some((node, follow)) = queue.pop_front() {
                if !marked.insert(node.clone()) || !follow {
                    continue;
                }
                let mut refs = Vec::new();
                match &node {
                    Node::Content(ns, _) => {
                        if let Some(labels) = content_labels.get(&node) {
                            label_refs(ns, labels, &mut refs);
                        }
                    }
                    Node::Snapshot(ns, sn, _) => {
                        if let Some(view) = snap_info.get(&node) {
                            if let Some(p) = view.parent.as_ref().filter(|p| !p.is_empty()) {
                                refs.push(Node::Snapshot(ns.clone(), sn.clone(), p.clone()));
                            }
                            label_refs(ns, &view.labels, &mut refs);
                        }
                    }
                }
                queue.extend(refs.into_iter().map(|n| (n, true)));
            }

            // Sweep records.
            {
                let mut ct = tx.open_table(CONTENT)?;
                for node in content_labels.keys() {
                    if let Node::Content(ns, d) = node {
                        if !marked.contains(node) {
                            ct.remove((ns.as_str(), d.as_str()))?;
                            stats.content.push((ns.clone(), d.clone()));
                        }
                    }
                }
            }
            {
                let mut st = tx.open_table(SNAPSHOTS)?;
                let mut dead: Vec<&Node> =
                    snap_info.keys().filter(|n| !marked.contains(*n)).collect();
                // Children before parents: a snapshot's depth is the length of its parent chain.
                let depth = |n: &Node| {
                    let mut d = 0usize;
                    let mut cur = n.clone();
                    while let Some(p) = snap_info.get(&cur).and_then(|v| v.parent.clone()) {
                        let Node::Snapshot(ns, sn, _) = &cur else {
                            break;
                        };
                        cur = Node::Snapshot(ns.clone(), sn.clone(), p);
                        d += 1;
                        if d > 4096 {
                            break;
                        }
                    }
                    d
                };
                dead.sort_by_key(|n| std::cmp::Reverse(depth(n)));
                for node in dead {
                    if let Node::Snapshot(ns, sn, key) = node {
                        st.remove((ns.as_str(), sn.as_str(), key.as_str()))?;
                        stats.snapshots.push((ns.clone(), sn.clone(), key.clone()));
                    }
                }
            }
        }
        // Which blobs some namespace still records, read inside the same transaction.
        let live: HashSet<String> = {
            let ct = tx.open_table(CONTENT)?;
            let mut s = HashSet::new();
            for e in ct.iter()? {
                s.insert(e?.0.value().1.to_string());
            }
            s
        };
        tx.commit()?;

        // Sweep blobs on disk (still under the exclusive lock).
        for info in self.content_store().walk()? {
            if !live.contains(&info.digest.to_string()) {
                match self.content_store().delete(&info.digest) {
                    Ok(()) => stats.blobs += 1,
                    Err(e) if e.is_not_found() => {}
                    Err(e) => tracing::warn!(digest = %info.digest, error = %e, "gc: remove blob"),
                }
            }
        }
        stats.duration = start.elapsed();
        tracing::info!(
            content = stats.content.len(),
            blobs = stats.blobs,
            leases = stats.leases.len(),
            snapshots = stats.snapshots.len(),
            duration_us = stats.duration.as_micros() as u64,
            "gc done"
        );
        Ok(stats)
    }
}
