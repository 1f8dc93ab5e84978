//! Pulls an image into a wharf root with the daemon's own pull, and prints what it did and how
//! long it took. For trying registries by hand and for pull benchmarks:
//!
//! `cargo run -p wharf-distribution --example pull -- ROOT REF [PLATFORM] [HOSTS_DIR]`
//!
//! ROOT gets `content/`, `meta.db` and `overlayfs/` as wharfd lays them out.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use wharf_core::content::Store;
use wharf_core::metadata::Db;
use wharf_core::snapshots::{Overlay, SnapshotStore};
use wharf_distribution::auth::Credentials;
use wharf_distribution::pull::{pull, Progress, PullOptions, Unpack};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(root), Some(reference)) = (args.first(), args.get(1)) else {
        bail!("usage: pull ROOT REF [PLATFORM] [HOSTS_DIR]");
    };
    let root = std::path::Path::new(root);
    let content = Store::open(root.join("content")).context("content store")?;
    let db = Db::open(&root.join("meta.db"), content).context("metadata")?;
    let snaps = SnapshotStore::open(
        "overlayfs",
        root.join("overlayfs"),
        db.clone(),
        Arc::new(Overlay),
    )
    .context("snapshotter")?;
    let mut opts = PullOptions {
        unpack: Some(Unpack {
            snapshotter: snaps,
            tmp: root.join("tmp"),
        }),
        progress: Some(Arc::new(|p| match p {
            Progress::Downloading { .. } => {}
            p => eprintln!("{p:?}"),
        })),
        ..Default::default()
    };
    opts.client.credentials = Credentials::from_docker_env();
    if let Some(p) = args.get(2).filter(|p| !p.is_empty()) {
        opts.platform = Some(wharf_core::images::Platform::parse(p)?);
    }
    opts.client.hosts_dir = args.get(3).map(Into::into);
    let start = Instant::now();
    let p = pull(&db, "default", reference, &opts).await?;
    println!(
        "{} {} chain {} in {:.3}s",
        p.image.name,
        p.manifest,
        p.chain_id.map(|c| c.to_string()).unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
