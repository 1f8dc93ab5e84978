//! System-wide commands: version, system info/df/prune, events, namespaces.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use containerd_client::services::v1 as pb;
use futures::StreamExt;

use crate::client::{Client, Explain};
use crate::table::{human_size, Table};

pub async fn version(c: &Client) -> Result<()> {
    println!("Client:\n  Version: {}", env!("CARGO_PKG_VERSION"));
    match c.version().version(c.req(())).await {
        Ok(v) => {
            let v = v.into_inner();
            println!(
                "Server:\n  Version: {}\n  Revision: {}",
                v.version, v.revision
            );
            Ok(())
        }
        Err(e) => Err(c.explain(e, "")),
    }
}

pub async fn info(c: &Client) -> Result<()> {
    let v = c.version().version(c.req(())).await.explain(c, "")?;
    let plugins = c
        .introspection()
        .plugins(c.req(pb::PluginsRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .plugins;
    let containers = c
        .containers()
        .list(c.req(pb::ListContainersRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .containers
        .len();
    let running = c
        .tasks()
        .list(c.req(pb::ListTasksRequest {
            filter: String::new(),
        }))
        .await
        .explain(c, "")?
        .tasks
        .iter()
        .filter(|t| t.status == containerd_client::types::v1::Status::Running as i32)
        .count();
    let images = c
        .images()
        .list(c.req(pb::ListImagesRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .images
        .len();
    let uts = nix::sys::utsname::uname().ok();
    println!("Server Version: {}", v.version);
    println!("Address: {}", c.address);
    println!("Namespace: {}", c.ns);
    println!("Containers: {containers} (running {running})");
    println!("Images: {images}");
    println!(
        "Cgroup Version: {}",
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            2
        } else {
            1
        }
    );
    if let Some(u) = uts {
        println!("Kernel Version: {}", u.release().to_string_lossy());
    }
    println!("Plugins:");
    for p in plugins {
        println!("  {}.{}", p.r#type, p.id);
    }
    Ok(())
}

/// Disk usage: images (content), containers (writable snapshots).
pub async fn df(c: &Client, data_root: &std::path::Path) -> Result<()> {
    let content = c
        .content()
        .list(c.req(pb::ListContentRequest { filters: vec![] }))
        .await
        .explain(c, "")?;
    let mut stream = content;
    let mut blobs = 0i64;
    let mut count = 0;
    while let Some(r) = stream.next().await {
        for i in r.map_err(|e| c.explain(e, ""))?.info {
            blobs += i.size;
            count += 1;
        }
    }
    let containers = c
        .containers()
        .list(c.req(pb::ListContainersRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .containers;
    let mut writable = 0i64;
    for ctr in &containers {
        if let Ok(u) = c
            .snapshots()
            .usage(c.req(pb::snapshots::UsageRequest {
                snapshotter: ctr.snapshotter.clone(),
                key: ctr.snapshot_key.clone(),
            }))
            .await
        {
            writable += u.into_inner().size;
        }
    }
    let mut t = Table::new(&["TYPE", "TOTAL", "SIZE"]);
    t.row(vec![
        "Content (blobs)".into(),
        count.to_string(),
        human_size(blobs.max(0) as u64),
    ]);
    t.row(vec![
        "Containers (writable layers)".into(),
        containers.len().to_string(),
        human_size(writable.max(0) as u64),
    ]);
    let store = crate::volumes::Store::new(data_root, &c.ns);
    let vols = store.list()?;
    // What the volumes take on disk (as the snapshotter counts a writable layer's usage).
    let size: i64 = vols
        .iter()
        .filter_map(|v| wharf_core::snapshots::disk_usage(&v.mountpoint).ok())
        .map(|u| u.size)
        .sum();
    t.row(vec![
        "Volumes".into(),
        vols.len().to_string(),
        human_size(size.max(0) as u64),
    ]);
    print!("{}", t.render());
    Ok(())
}

/// Removes stopped containers and images no container uses (with --all), then collects garbage.
pub async fn prune(c: &Client, all_images: bool, data_root: &std::path::Path) -> Result<()> {
    let containers = c
        .containers()
        .list(c.req(pb::ListContainersRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .containers;
    let mut kept_images = std::collections::HashSet::new();
    for ctr in containers {
        let t = crate::containers::task(c, &ctr.id).await?;
        if crate::containers::running(&t) {
            kept_images.insert(ctr.image.clone());
            continue;
        }
        crate::containers::remove(c, &ctr.id, false, false, data_root).await?;
        println!("Deleted container: {}", ctr.id);
    }
    // Logs of containers removed without the CLI (auto-removed by wharfd, or by another client).
    let live: std::collections::HashSet<String> = c
        .containers()
        .list(c.req(pb::ListContainersRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .containers
        .into_iter()
        .map(|x| x.id)
        .collect();
    if let Ok(dirs) = std::fs::read_dir(data_root.join(&c.ns)) {
        for d in dirs.flatten() {
            let id = d.file_name().to_string_lossy().into_owned();
            if !live.contains(&id) && d.path().is_dir() {
                std::fs::remove_dir_all(d.path())
                    .with_context(|| format!("remove {}", d.path().display()))?;
                println!("Deleted logs of removed container: {id}");
            }
        }
    }
    if all_images {
        let images = c
            .images()
            .list(c.req(pb::ListImagesRequest { filters: vec![] }))
            .await
            .explain(c, "")?
            .images;
        for i in images
            .into_iter()
            .filter(|i| !kept_images.contains(&i.name))
        {
            c.images()
                .delete(c.req(pb::DeleteImageRequest {
                    name: i.name.clone(),
                    sync: true,
                    target: None,
                }))
                .await
                .explain(c, "")?;
            println!("Deleted image: {}", i.name);
        }
    }
    Ok(())
}

pub async fn events(c: &Client, filters: Vec<String>, format: Option<&str>) -> Result<()> {
    let mut stream = c
        .events()
        .subscribe(c.req(pb::SubscribeRequest { filters }))
        .await
        .explain(c, "")?;
    while let Some(ev) = stream.next().await {
        let env = ev.map_err(|e| c.explain(e, ""))?;
        let when = env
            .timestamp
            .map(|t| {
                chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                    .unwrap_or_default()
                    .to_rfc3339()
            })
            .unwrap_or_default();
        let body = env
            .event
            .as_ref()
            .map(|a| crate::events::decode(&a.type_url, &a.value))
            .unwrap_or_default();
        let row = BTreeMap::from([
            ("Time".to_string(), serde_json::json!(when)),
            ("Namespace".to_string(), serde_json::json!(env.namespace)),
            ("Topic".to_string(), serde_json::json!(env.topic)),
            ("Event".to_string(), body.clone()),
        ]);
        match format {
            Some("json") => println!("{}", serde_json::to_string(&row)?),
            Some(t) if t.contains("{{") => println!("{}", crate::table::template(t, &row)?),
            _ => println!("{when} {} {} {}", env.namespace, env.topic, body),
        }
    }
    Ok(())
}

pub async fn namespaces_ls(c: &Client) -> Result<()> {
    let list = c
        .namespaces()
        .list(c.req(pb::ListNamespacesRequest {
            filter: String::new(),
        }))
        .await
        .explain(c, "")?
        .namespaces;
    let mut t = Table::new(&["NAME", "LABELS"]);
    for n in list {
        let labels: Vec<String> = n.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![n.name, labels.join(",")]);
    }
    print!("{}", t.render());
    Ok(())
}

pub async fn namespaces_create(c: &Client, name: &str) -> Result<()> {
    c.namespaces()
        .create(c.req(pb::CreateNamespaceRequest {
            namespace: Some(pb::Namespace {
                name: name.to_string(),
                labels: Default::default(),
            }),
        }))
        .await
        .explain(c, "")
        .with_context(|| format!("create namespace {name}"))?;
    println!("{name}");
    Ok(())
}

pub async fn namespaces_rm(c: &Client, names: &[String]) -> Result<()> {
    for n in names {
        c.namespaces()
            .delete(c.req(pb::DeleteNamespaceRequest { name: n.clone() }))
            .await
            .explain(c, "")?;
        println!("{n}");
    }
    Ok(())
}
