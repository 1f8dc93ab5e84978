//! The attachment cache: one JSON file per (network, container, interface) under
//! `<cache_dir>/results/`, holding the configuration and port mappings used for ADD and the
//! result. DEL replays exactly what ADD used, so teardown works after a daemon restart even if
//! the configuration changed, and after a crash halfway through setup (the entry is in place
//! before the first plugin runs).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::attachment::PortMapping;
use crate::config::NetworkConfig;
use crate::error::{Error, IoContext, Result};

const KIND: &str = "wharf-cni-cache/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    #[serde(rename = "ifName")]
    pub ifname: String,
    pub netns: String,
    pub network: NetworkConfig,
    #[serde(rename = "portMappings", default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub args: Vec<(String, String)>,
    /// `None` while ADD is running (or if it crashed halfway).
    #[serde(default)]
    pub result: Option<Value>,
}

impl Entry {
    pub(crate) fn new(
        network: &NetworkConfig,
        container_id: &str,
        ifname: &str,
        netns: &Path,
        ports: &[PortMapping],
        args: &[(String, String)],
    ) -> Entry {
        Entry {
            kind: KIND.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
            netns: netns.display().to_string(),
            network: network.clone(),
            ports: ports.to_vec(),
            args: args.to_vec(),
            result: None,
        }
    }
}

/// The entry's file. Network names and container ids cannot contain `+`, so the name is
/// unambiguous.
pub(crate) fn path(cache_dir: &Path, network: &str, container_id: &str, ifname: &str) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}+{container_id}+{ifname}.json"))
}

pub(crate) fn read(path: &Path) -> Result<Option<Entry>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io_path("read", path, e)),
    };
    let entry: Entry = serde_json::from_slice(&bytes)
        .map_err(|e| Error::Internal(format!("CNI cache {}: {e}", path.display())))?;
    if entry.kind != KIND {
        return Err(Error::Internal(format!(
            "CNI cache {}: unknown kind {:?}",
            path.display(),
            entry.kind
        )));
    }
    Ok(Some(entry))
}

/// Records the result of ADD in the entry at `path`, replacing it whole (temp file, rename).
/// The disk is not waited for: only a power loss could lose this write, and that also takes
/// the namespace and its interfaces; the entry [`sync`] flushed before then still holds the
/// configuration, and DEL runs without the result, as CNI allows.
pub(crate) fn record_result(path: &Path, entry: &Entry) -> Result<()> {
    replace(path, entry)
}

/// Claims `path` for a new attachment: false if an entry is there, else the entry is written
/// and renamed into place without waiting for the disk. It is then visible to every later
/// reader, a restarted daemon included; [`sync`] makes it survive a power loss too.
pub(crate) fn reserve(path: &Path, entry: &Entry) -> Result<bool> {
    if read(path)?.is_some() {
        return Ok(false);
    }
    replace(path, entry).map(|()| true)
}

/// Flushes the entry at `path` and the rename that put it there to disk.
pub(crate) fn sync(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("cache path {}", path.display())))?;
    for p in [path, dir] {
        fs::File::open(p)
            .and_then(|f| f.sync_all())
            .ctx(|| format!("sync {}", p.display()))?;
    }
    Ok(())
}

/// Writes the entry to a temp file in the same directory and renames it over `path`: readers
/// see the old entry or the new one, never part of one.
fn replace(path: &Path, entry: &Entry) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Internal(format!("cache path {}", path.display())))?;
    fs::create_dir_all(dir).ctx(|| format!("create {}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(entry)
        .map_err(|e| Error::Internal(format!("encode CNI cache entry: {e}")))?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, &bytes).ctx(|| format!("write {}", tmp.display()))?;
    fs::rename(&tmp, path).ctx(|| format!("rename {} to {}", tmp.display(), path.display()))
}

pub(crate) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io_path("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let net = crate::default_bridge("n", "b0", "10.1.0.0/24");
        let p = path(dir.path(), "n", "c1", "eth0");
        assert!(read(&p).unwrap().is_none());
        let mut e = Entry::new(
            &net,
            "c1",
            "eth0",
            Path::new("/x"),
            &[PortMapping::tcp(1, 2)],
            &[],
        );
        e.result = Some(serde_json::json!({"cniVersion": "1.0.0"}));
        record_result(&p, &e).unwrap();
        let back = read(&p).unwrap().unwrap();
        assert_eq!(back.network, net);
        assert_eq!(back.ports, e.ports);
        assert_eq!(back.result, e.result);
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert!(read(&p).unwrap().is_none());
    }
}
