//! Tasks whose container record is gone, and what tasks leave behind: bundles (`<state>/io.containerd.runtime.v2.task/<ns>/<id>`), their
//! work directories (`<root>/io.containerd.runtime.v2.task/<ns>/<id>`) and cgroups
//! (`/<ns>/<id>` in each hierarchy, the path the shim gives a spec without one) of tasks that no
//! longer exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;

use super::{mounts::mount_points, Ctx, Facts, Kind};
use crate::server::Daemon;

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn check(d: &Arc<Daemon>, facts: &Facts, ctx: &mut Ctx) -> anyhow::Result<()> {
    for (ns, id) in &facts.tasks {
        // Read again now: a task being created or removed meanwhile is no finding.
        let still_task = tokio::runtime::Handle::current()
            .block_on(d.runtime.get(ns, id))
            .is_some();
        if facts.containers.contains(&(ns.clone(), id.clone()))
            || !still_task
            || d.db.container_get(ns, id).is_ok()
        {
            continue;
        }
        let (d2, ns2, id2) = (d.clone(), ns.clone(), id.clone());
        ctx.found(
            Kind::OrphanTask,
            format!("{ns}/{id}"),
            "a task (and its shim) whose container record is gone",
            move || {
                // Repairs run on the blocking pool, where waiting on the runtime is allowed.
                // As Tasks/Delete does: the task, then its network.
                let rt = tokio::runtime::Handle::current();
                rt.block_on(d2.runtime.delete(&ns2, &id2))
                    .with_context(|| format!("delete task {ns2}/{id2}"))?;
                rt.block_on(d2.network.release(&ns2, &id2));
                Ok(())
            },
        );
    }
    let bundles = d.runtime.bundle_root().to_path_buf();
    let works = d.runtime.work_root().to_path_buf();
    let mut n = 0;
    for (ns, id, path) in entries(&bundles) {
        n += 1;
        if facts.live(&ns, &id) || ctx.young(mtime(&path)) {
            continue;
        }
        let p = path.clone();
        ctx.found(
            Kind::StaleBundle,
            path.display().to_string(),
            format!("bundle of task {ns}/{id}, which does not exist"),
            move || remove_unmounted(&p),
        );
    }
    ctx.count("bundles", n);
    for (ns, id, path) in entries(&works) {
        if facts.live(&ns, &id) || bundles.join(&ns).join(&id).exists() || ctx.young(mtime(&path)) {
            continue;
        }
        let p = path.clone();
        ctx.found(
            Kind::StaleWorkDir,
            path.display().to_string(),
            format!("work directory of task {ns}/{id}, which does not exist"),
            move || remove_unmounted(&p),
        );
    }
    let mut n = 0;
    for h in hierarchies() {
        for ns in &facts.namespaces {
            for (id, path) in children(&h.join(ns)) {
                n += 1;
                if facts.live(ns, &id) || ctx.young(mtime(&path)) || !empty_cgroup(&path) {
                    continue;
                }
                let p = path.clone();
                ctx.found(
                    Kind::StaleCgroup,
                    path.display().to_string(),
                    format!("empty cgroup of task {ns}/{id}, which does not exist"),
                    move || {
                        std::fs::remove_dir(&p).with_context(|| format!("rmdir {}", p.display()))
                    },
                );
            }
        }
    }
    ctx.count("cgroups", n);
    Ok(())
}

/// `<dir>/<ns>/<id>` directories.
fn entries(dir: &Path) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(nss) = std::fs::read_dir(dir) else {
        return out;
    };
    for ns in nss.flatten() {
        if !ns.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let ns_name = ns.file_name().to_string_lossy().into_owned();
        for (id, path) in children(&ns.path()) {
            out.push((ns_name.clone(), id, path));
        }
    }
    out
}

/// Subdirectories (not symlinks) of `dir`, by name.
fn children(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect()
}

fn mtime(p: &Path) -> SystemTime {
    std::fs::symlink_metadata(p)
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// cgroup v2: the one hierarchy; v1 and hybrid: one per controller (symlinked aliases such as
/// `cpu` -> `cpu,cpuacct` skipped).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    children(root).into_iter().map(|(_, p)| p).collect()
}

/// No process and no child cgroup.
fn empty_cgroup(p: &Path) -> bool {
    let procs = std::fs::read_to_string(p.join("cgroup.procs")).unwrap_or_default();
    procs.trim().is_empty() && children(p).is_empty()
}

/// Removes a directory tree, refusing when something is still mounted in it (removing through a
/// mount would delete the mounted files).
fn remove_unmounted(p: &Path) -> anyhow::Result<()> {
    let points = mount_points().context("read /proc/self/mountinfo")?;
    if let Some(m) = points.iter().find(|m| m.starts_with(p)) {
        anyhow::bail!("{} is still mounted", m.display());
    }
    match std::fs::remove_dir_all(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", p.display())),
    }
}
