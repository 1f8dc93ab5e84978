//! Networking of containers the `wharf` CLI runs, driven by labels on the container record
//! (`io.wharf.network`, `io.wharf.ports`, …): wharfd, not the CLI, owns it, because it outlives
//! the CLI — teardown after crashes, restarts and restart policies all happen here.
//!
//! On task create, a labelled container gets a pinned network namespace under
//! `<state>/netns/<ns>/<id>` joined to wharf's default bridge network through CNI (with port
//! mappings), and generated `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` bind-mounted
//! from `<state>/etc/<ns>/<id>/`. On task delete (and at start-up, for tasks that are gone) all
//! of it is released. Containers without the label (ctr's) are left exactly as their spec says.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use wharf_core::metadata::Container;
use wharf_core::{labels, Error, Result};
use wharf_network::{Attachment, BridgeOptions, Cni, Netns, NetworkConfig, PortMapping};

pub struct Networking {
    cni: Cni,
    bridge: NetworkConfig,
    netns_dir: PathBuf,
    etc_dir: PathBuf,
}

fn net_err(e: wharf_network::Error) -> Error {
    if e.is_not_found() {
        Error::NotFound(e.to_string())
    } else {
        Error::Internal(format!("network: {e}"))
    }
}

impl Networking {
    /// Allocations and the CNI cache live under the root (they must survive a reboot to be
    /// released); namespaces and generated files under the state dir.
    pub fn new(root: &Path, state: &Path, bridge: &crate::config::Network) -> Networking {
        // The CLI's network is built in: no configuration directory is read.
        let mut cni = Cni::new(PathBuf::new(), root.join("cni").join("cache"));
        if !bridge.cni_bin_dirs.is_empty() {
            cni.bin_dirs = bridge.cni_bin_dirs.iter().map(PathBuf::from).collect();
        }
        let net = BridgeOptions::new(&bridge.name, &bridge.bridge, &bridge.subnet)
            .ipam_data_dir(root.join("cni").join("networks"))
            .build();
        Networking {
            cni,
            bridge: net,
            netns_dir: state.join("netns"),
            etc_dir: state.join("etc"),
        }
    }

    fn cni_id(ns: &str, id: &str) -> String {
        format!("wharf-{ns}-{id}")
    }

    fn netns_path(&self, ns: &str, id: &str) -> PathBuf {
        self.netns_dir.join(ns).join(id)
    }

    /// Sets up the container's network if its labels ask for one, and returns its spec with the
    /// namespace path and the generated /etc files in place.
    pub async fn prepare(
        &self,
        ns: &str,
        c: &Container,
        spec: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let Some(mode) = c.labels.get(labels::NETWORK).cloned() else {
            return Ok((spec, None));
        };
        let mut spec: Value = serde_json::from_slice(&spec)
            .map_err(|e| Error::InvalidArgument(format!("container {} spec: {e}", c.id)))?;
        let hostname = c
            .labels
            .get(labels::HOSTNAME)
            .cloned()
            .or_else(|| spec["hostname"].as_str().map(str::to_string))
            .unwrap_or_else(|| c.id.clone());
        let extra: Vec<(String, String)> = c
            .labels
            .get(labels::EXTRA_HOSTS)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let dns: Vec<String> = c
            .labels
            .get(labels::DNS)
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let ports: Vec<PortMapping> = match c.labels.get(labels::PORTS) {
            Some(v) => serde_json::from_str(v)
                .map_err(|e| Error::InvalidArgument(format!("label {}: {e}", labels::PORTS)))?,
            None => Vec::new(),
        };
        let mut ip = None;
        match mode.as_str() {
            "host" => {}
            "none" | "bridge" => {
                let dir = self.netns_dir.join(ns);
                let netns = {
                    let dir = dir.clone();
                    let id = c.id.clone();
                    tokio::task::spawn_blocking(move || {
                        let _ = Netns::open(dir.join(&id)).and_then(|n| n.remove());
                        Netns::create(&dir, &id)
                    })
                    .await
                    .map_err(|e| Error::Internal(format!("netns: {e}")))?
                    .map_err(net_err)?
                };
                if mode == "none" {
                    let n = netns.clone();
                    let up = tokio::task::spawn_blocking(move || n.loopback_up()).await;
                    if !matches!(up, Ok(Ok(()))) {
                        let _ = netns.remove();
                        return Err(Error::Internal("netns: loopback up failed".into()));
                    }
                } else {
                    let mut att = Attachment::new(Self::cni_id(ns, &c.id), &netns.path);
                    att.ports = ports;
                    match self.cni.setup(&self.bridge, &att).await {
                        Ok(r) => {
                            ip = r
                                .ips
                                .iter()
                                .find(|i| i.is_ipv4())
                                .map(|i| i.ip().to_string())
                        }
                        Err(e) => {
                            let _ = self.cni.teardown(&self.bridge, &att).await;
                            let _ = netns.remove();
                            return Err(net_err(e));
                        }
                    }
                }
                set_netns(&mut spec, &netns.path);
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "label {}={other:?}: want bridge, host or none",
                    labels::NETWORK
                )))
            }
        }
        let files = self.write_etc(ns, &c.id, &mode, &hostname, ip.as_deref(), &extra, &dns);
        match files {
            Ok(dir) => add_etc_mounts(&mut spec, &dir),
            Err(e) => {
                self.release(ns, &c.id).await;
                return Err(e);
            }
        }
        let out = serde_json::to_vec(&spec).map_err(|e| Error::Internal(format!("spec: {e}")))?;
        Ok((out, ip))
    }

    #[allow(clippy::too_many_arguments)]
    fn write_etc(
        &self,
        ns: &str,
        id: &str,
        mode: &str,
        hostname: &str,
        ip: Option<&str>,
        extra: &[(String, String)],
        dns: &[String],
    ) -> Result<PathBuf> {
        let dir = self.etc_dir.join(ns).join(id);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io_path("create", &dir, e))?;
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let (hosts, resolv) = if mode == "host" {
            let mut h = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for (n, a) in extra {
                h.push_str(&format!("{a}\t{n}\n"));
            }
            let r = if dns.is_empty() {
                host_resolv
            } else {
                wharf_core::spec::etc::resolv_conf(&host_resolv, dns, &[], &[])
            };
            (h, r)
        } else {
            (
                wharf_core::spec::etc::hosts(hostname, ip, extra),
                wharf_core::spec::etc::resolv_conf(&host_resolv, dns, &[], &[]),
            )
        };
        for (name, text) in [
            ("hosts", hosts),
            ("hostname", format!("{hostname}\n")),
            ("resolv.conf", resolv),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io_path("write", &p, e))?;
        }
        Ok(dir)
    }

    /// Releases whatever `prepare` made for the container; idempotent.
    pub async fn release(&self, ns: &str, id: &str) {
        let path = self.netns_path(ns, id);
        if path.exists() {
            let att = Attachment::new(Self::cni_id(ns, id), &path);
            if let Err(e) = self.cni.teardown(&self.bridge, &att).await {
                tracing::warn!(namespace = ns, id, error = %e, "network teardown");
            }
            if let Ok(n) = Netns::open(&path) {
                let _ = tokio::task::spawn_blocking(move || n.remove()).await;
            }
        }
        let etc = self.etc_dir.join(ns).join(id);
        if etc.exists() {
            let _ = std::fs::remove_dir_all(&etc);
        }
    }

    /// Every (namespace, id) with network state left, for the start-up sweep.
    pub fn leftovers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for dir in [&self.netns_dir, &self.etc_dir] {
            let Ok(nss) = std::fs::read_dir(dir) else {
                continue;
            };
            for ns in nss.flatten() {
                let Ok(ids) = std::fs::read_dir(ns.path()) else {
                    continue;
                };
                for id in ids.flatten() {
                    let key = (
                        ns.file_name().to_string_lossy().into_owned(),
                        id.file_name().to_string_lossy().into_owned(),
                    );
                    if !out.contains(&key) {
                        out.push(key);
                    }
                }
            }
        }
        out
    }
}

/// Points the spec's network namespace at `path` (adding one if the spec had none).
fn set_netns(spec: &mut Value, path: &Path) {
    let entry = json!({"type": "network", "path": path.display().to_string()});
    let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) else {
        spec["linux"] = json!({"namespaces": [entry]});
        return;
    };
    let list = linux.entry("namespaces").or_insert_with(|| json!([]));
    if let Some(arr) = list.as_array_mut() {
        arr.retain(|n| n["type"] != "network");
        arr.push(entry);
    }
}

/// Bind-mounts the generated files unless the spec already mounts something there.
fn add_etc_mounts(spec: &mut Value, dir: &Path) {
    if !spec["mounts"].is_array() {
        spec["mounts"] = json!([]);
    }
    let Some(mounts) = spec["mounts"].as_array_mut() else {
        return;
    };
    for name in ["hosts", "hostname", "resolv.conf"] {
        let dest = format!("/etc/{name}");
        if mounts.iter().any(|m| m["destination"] == dest.as_str()) {
            continue;
        }
        mounts.push(json!({
            "destination": dest,
            "type": "bind",
            "source": dir.join(name).display().to_string(),
            "options": ["rbind", "rprivate", "rw"],
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_gets_netns_and_etc_mounts() {
        let mut spec = json!({
            "linux": {"namespaces": [{"type": "pid"}, {"type": "network"}]},
            "mounts": [{"destination": "/etc/resolv.conf", "type": "bind", "source": "/x"}],
        });
        set_netns(&mut spec, Path::new("/run/wharf/netns/default/web"));
        add_etc_mounts(&mut spec, Path::new("/run/wharf/etc/default/web"));
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert_eq!(ns.len(), 2);
        assert_eq!(ns[1]["path"], "/run/wharf/netns/default/web");
        let dests: Vec<&str> = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            vec!["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]
        );
    }
}
