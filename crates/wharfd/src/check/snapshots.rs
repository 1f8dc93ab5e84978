//! Snapshot records against their directories, for every snapshotter.

use anyhow::Context;

use super::{Ctx, Kind};
use crate::server::Daemon;

pub fn check(d: &Daemon, ctx: &mut Ctx) -> anyhow::Result<()> {
    for s in d.snapshotters.values() {
        let orphans = s
            .orphans()
            .with_context(|| format!("snapshotter {}", s.name()))?;
        for name in orphans {
            let path = s.dir(&name);
            let s2 = s.clone();
            ctx.found(
                Kind::OrphanSnapshotDir,
                path.display().to_string(),
                format!("no {} snapshot record uses directory {name}", s.name()),
                move || {
                    s2.remove_orphan(&name)?;
                    Ok(())
                },
            );
        }
        let missing = s
            .missing_dirs()
            .with_context(|| format!("snapshotter {}", s.name()))?;
        for (ns, key, id) in missing {
            // Not repairable here: the record may be a parent others build on.
            ctx.found(
                Kind::MissingSnapshotDir,
                format!("{ns}/{}/{key}", s.name()),
                format!("its directory {} is gone", s.dir(&id).display()),
                || anyhow::bail!("not repairable: remove the snapshot (and what uses it)"),
            );
        }
        let records = std::fs::read_dir(s.root().join("snapshots"))
            .map(|r| r.count() as u64)
            .unwrap_or(0);
        ctx.count("snapshot dirs", records);
    }
    Ok(())
}
