//! Mounts under wharf's root and state directories whose owner is gone: a task's rootfs (and
//! anything under its bundle) without the task, a container's or pod's pinned network namespace
//! without its task or record, a pod's shared /dev/shm without its record, a diff apply's
//! temporary mount after a crash. Mounts wharf does not make there are not judged.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Ctx, Facts, Kind};
use crate::server::Daemon;

/// Who a mount under root/state belongs to.
enum Owner {
    Task(String, String),
    /// A CRI pod sandbox (its netns under `<state>/cri/netns/<id>`, its shm under
    /// `<state>/cri/sandboxes/<id>/shm`).
    Pod(String),
    /// A diff apply in flight (`<root>/tmpmounts/<x>`).
    Apply,
    Unknown,
}

pub fn check(d: &Daemon, facts: &Facts, ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut points = mount_points().context("read /proc/self/mountinfo")?;
    // Deepest first, so nested mounts come off before what they sit on.
    points.sort_by(|a, b| (b.as_os_str().len(), a).cmp(&(a.as_os_str().len(), b)));
    points.dedup();
    let bundles = d.runtime.bundle_root();
    let mut seen = 0;
    for p in points {
        let owner = owner(d, bundles, &p);
        if matches!(owner, Owner::Unknown) {
            continue;
        }
        seen += 1;
        let stale = match &owner {
            Owner::Task(ns, id) => (!facts.live(ns, id)).then(|| format!("task {ns}/{id} is gone")),
            Owner::Pod(id) => (!facts.containers.contains(&("k8s.io".into(), id.clone())))
                .then(|| format!("pod sandbox {id} is gone")),
            Owner::Apply => ctx
                .opts
                .startup
                .then(|| "left by an apply a crash interrupted".to_string()),
            Owner::Unknown => None,
        };
        if let Some(why) = stale {
            let target = p.clone();
            ctx.found(Kind::StaleMount, p.display().to_string(), why, move || {
                nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH)
                    .with_context(|| format!("unmount {}", target.display()))
            });
        }
    }
    ctx.count("mounts", seen);
    Ok(())
}

fn owner(d: &Daemon, bundles: &Path, p: &Path) -> Owner {
    let two = |rest: &Path| {
        let mut c = rest
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        match (c.next(), c.next()) {
            (Some(ns), Some(id)) => Owner::Task(ns, id),
            _ => Owner::Unknown,
        }
    };
    if let Ok(rest) = p.strip_prefix(bundles) {
        return two(rest);
    }
    if let Ok(rest) = p.strip_prefix(d.state.join("netns")) {
        return two(rest);
    }
    if let Ok(rest) = p.strip_prefix(d.state.join("cri").join("netns")) {
        if let Some(id) = rest.components().next() {
            return Owner::Pod(id.as_os_str().to_string_lossy().into_owned());
        }
    }
    // A pod's shared /dev/shm (`<state>/cri/sandboxes/<id>/shm`).
    if let Ok(rest) = p.strip_prefix(d.state.join("cri").join("sandboxes")) {
        let mut c = rest.components().map(|c| c.as_os_str().to_string_lossy());
        if let (Some(id), Some(shm), None) = (c.next(), c.next(), c.next()) {
            if shm == "shm" {
                return Owner::Pod(id.into_owned());
            }
        }
    }
    if p.strip_prefix(&d.tmp_mounts)
        .is_ok_and(|r| r.components().next().is_some())
    {
        return Owner::Apply;
    }
    Owner::Unknown
}

/// Every mount point of this mount namespace.
pub fn mount_points() -> std::io::Result<Vec<PathBuf>> {
    Ok(wharf_core::mount::mountinfo()?
        .into_iter()
        .map(|m| m.point)
        .collect())
}
