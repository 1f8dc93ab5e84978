//! Volumes, as docker and nerdctl keep them: directories under the CLI's data root
//! (`<data-root>/_volumes/<namespace>/<name>/_data`; `_` starts no namespace name, so this
//! never meets a namespace's log directory) that `run -v NAME:/path` mounts, made on
//! first use and seeded with what the image holds at that path. `-v /path` and an image's
//! `VOLUME` get an anonymous volume of their own, removed with the container by `rm -v` and
//! `run --rm`. A volume a container uses (its `io.wharf.volumes` label) is never removed.
//!
//! A volume is made under a temporary name and renamed into place, and removed by renaming it
//! away first, so a crash never leaves half a volume under its name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use containerd_client::services::v1 as pb;
use serde::{Deserialize, Serialize};
use wharf_core::labels;

use crate::client::{Client, Explain};
use crate::table::Table;

const META: &str = "volume.json";

/// What `volume.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Meta {
    pub created_at: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub anonymous: bool,
}

#[derive(Debug, Clone)]
pub struct Volume {
    pub name: String,
    /// The directory containers mount (`…/<name>/_data`).
    pub mountpoint: PathBuf,
    pub meta: Meta,
}

/// The volumes of one namespace.
pub struct Store {
    dir: PathBuf,
}

/// docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Store {
    pub fn new(data_root: &Path, ns: &str) -> Store {
        Store {
            dir: data_root.join("_volumes").join(ns),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The volume `name`, made if it does not exist.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume> {
        if !valid_name(name) {
            bail!("invalid volume name {name:?}: want letters, digits, '_', '.' or '-', starting with a letter or digit");
        }
        if let Some(v) = self.get_opt(name)? {
            return Ok(v);
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create {}", self.dir.display()))?;
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&self.dir)
            .with_context(|| format!("create a directory in {}", self.dir.display()))?;
        std::fs::create_dir(tmp.path().join("_data"))
            .with_context(|| format!("create {}", tmp.path().join("_data").display()))?;
        let meta = Meta {
            created_at: chrono::Utc::now().to_rfc3339(),
            labels,
            anonymous,
        };
        std::fs::write(tmp.path().join(META), serde_json::to_vec_pretty(&meta)?)
            .context("write the volume's metadata")?;
        let tmp = tmp.keep();
        if let Err(e) = std::fs::rename(&tmp, self.path(name)) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Made meanwhile by another run: use that one.
            if !matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) {
                return Err(e).with_context(|| format!("create volume {name}"));
            }
        }
        self.get(name)
    }

    fn get_opt(&self, name: &str) -> Result<Option<Volume>> {
        if !valid_name(name) {
            return Ok(None);
        }
        let dir = self.path(name);
        let meta = match std::fs::read(dir.join(META)) {
            Ok(b) => serde_json::from_slice(&b)
                .with_context(|| format!("volume {name}: malformed {}", META))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !dir.exists() {
                    return Ok(None);
                }
                Meta::default()
            }
            Err(e) => return Err(e).with_context(|| format!("read volume {name}")),
        };
        Ok(Some(Volume {
            name: name.to_string(),
            mountpoint: dir.join("_data"),
            meta,
        }))
    }

    pub fn get(&self, name: &str) -> Result<Volume> {
        self.get_opt(name)?
            .ok_or_else(|| anyhow::anyhow!("no such volume: {name}"))
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(v) = self.get_opt(&name)? {
                out.push(v);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes what a crash left of a volume being made or removed (`.new-*`, `.rm-*`), once
    /// it is old enough that no run is still at it.
    fn remove_leftovers(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < old);
            if (name.starts_with(".new-") || name.starts_with(".rm-")) && stale {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// Removes a volume and its data (the caller checked it is unused).
    pub fn remove(&self, name: &str) -> Result<()> {
        let dir = self.path(name);
        let gone = self
            .dir
            .join(format!(".rm-{name}-{:08x}", rand::random::<u32>()));
        std::fs::rename(&dir, &gone).with_context(|| format!("remove volume {name}"))?;
        std::fs::remove_dir_all(&gone).with_context(|| format!("remove {}", gone.display()))
    }
}

/// A container's volumes (names) from its labels.
fn names(labels: &HashMap<String, String>, key: &str) -> Vec<String> {
    labels
        .get(key)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Volume name → the containers that use it, in this namespace.
async fn users(c: &Client) -> Result<BTreeMap<String, Vec<String>>> {
    let list = c
        .containers()
        .list(c.req(pb::ListContainersRequest {
            filters: vec![format!("labels.\"{}\"", labels::VOLUMES)],
        }))
        .await
        .explain(c, "")?
        .containers;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ctr in list {
        for n in names(&ctr.labels, labels::VOLUMES) {
            out.entry(n).or_default().push(ctr.id.clone());
        }
    }
    Ok(out)
}

pub async fn create(
    c: &Client,
    data_root: &Path,
    name: Option<&str>,
    label: &[String],
) -> Result<()> {
    let mut labels = BTreeMap::new();
    for l in label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("invalid --label {l:?}: want KEY=VALUE");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    let (name, anonymous) = match name {
        Some(n) => (n.to_string(), false),
        None => (anonymous_name(), true),
    };
    let v = Store::new(data_root, &c.ns).create(&name, labels, anonymous)?;
    println!("{}", v.name);
    Ok(())
}

/// A fresh name for an anonymous volume (64 hex digits, as docker's).
pub fn anonymous_name() -> String {
    (0..4)
        .map(|_| format!("{:016x}", rand::random::<u64>()))
        .collect()
}

pub async fn ls(c: &Client, data_root: &Path, quiet: bool, format: Option<&str>) -> Result<()> {
    let vols = Store::new(data_root, &c.ns).list()?;
    if quiet {
        for v in &vols {
            println!("{}", v.name);
        }
        return Ok(());
    }
    let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
    let mut rows = Vec::new();
    for v in &vols {
        t.row(vec!["local".into(), v.name.clone()]);
        rows.push(BTreeMap::from([
            ("Driver".to_string(), serde_json::json!("local")),
            ("Name".to_string(), serde_json::json!(v.name)),
            (
                "Mountpoint".to_string(),
                serde_json::json!(v.mountpoint.display().to_string()),
            ),
            ("Labels".to_string(), serde_json::json!(v.meta.labels)),
        ]));
    }
    crate::table::output(format, &rows, t)
}

pub async fn inspect(c: &Client, data_root: &Path, names: &[String]) -> Result<()> {
    let store = Store::new(data_root, &c.ns);
    let mut out = Vec::new();
    for n in names {
        let v = store.get(n)?;
        out.push(serde_json::json!({
            "Name": v.name,
            "Driver": "local",
            "Mountpoint": v.mountpoint.display().to_string(),
            "CreatedAt": v.meta.created_at,
            "Labels": v.meta.labels,
            "Scope": "local",
            "Anonymous": v.meta.anonymous,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `volume rm`: refuses a volume in use, as docker does.
pub async fn rm(c: &Client, data_root: &Path, names: &[String], force: bool) -> Result<()> {
    let store = Store::new(data_root, &c.ns);
    let users = users(c).await?;
    let mut failed = false;
    for n in names {
        let r = match (store.get_opt(n)?, users.get(n)) {
            (None, _) if force => Ok(()),
            (None, _) => Err(anyhow::anyhow!("no such volume: {n}")),
            (Some(_), Some(u)) => Err(anyhow::anyhow!(
                "volume {n} is in use by container {}: remove the container first",
                u.join(", ")
            )),
            (Some(_), None) => store.remove(n).map(|()| println!("{n}")),
        };
        if let Err(e) = r {
            eprintln!("wharf: {e:#}");
            failed = true;
        }
    }
    if failed {
        bail!("some volumes were not removed");
    }
    Ok(())
}

/// `volume prune`: unused anonymous volumes, or with `all` every unused one.
pub async fn prune(c: &Client, data_root: &Path, all: bool) -> Result<()> {
    let store = Store::new(data_root, &c.ns);
    store.remove_leftovers();
    let users = users(c).await?;
    for v in store.list()? {
        if users.contains_key(&v.name) || !(all || v.meta.anonymous) {
            continue;
        }
        store.remove(&v.name)?;
        println!("{}", v.name);
    }
    Ok(())
}

/// Removes the anonymous volumes of a container that is gone (`rm -v`, `run --rm`); one that
/// another container mounts too (`--volumes-from` style sharing by name) stays.
pub async fn remove_anonymous(
    c: &Client,
    data_root: &Path,
    container_labels: &HashMap<String, String>,
) -> Result<()> {
    let anon = names(container_labels, labels::ANONYMOUS_VOLUMES);
    if anon.is_empty() {
        return Ok(());
    }
    let store = Store::new(data_root, &c.ns);
    let users = users(c).await?;
    for n in anon {
        if users.contains_key(&n) || store.get_opt(&n)?.is_none() {
            continue;
        }
        store.remove(&n)?;
    }
    Ok(())
}
