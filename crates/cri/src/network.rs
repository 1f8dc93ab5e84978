//! Pod networking: a network namespace pinned under `<state>/cri/netns/<sandbox id>`, joined to
//! the first CNI network of `[cri] cni_conf_dir` (with kubelet's CNI_ARGS and port mappings),
//! and the pod's /etc/hosts, /etc/hostname and /etc/resolv.conf under
//! `<state>/cri/sandboxes/<id>/`.

use std::path::{Path, PathBuf};

use wharf_api::cri as pb;
use wharf_network::{Attachment, Cni, Netns, NetworkConfig, PortMapping};

use crate::store::SandboxMeta;
use crate::{Cri, Error, Result};

/// What setting up a pod's network gave.
#[derive(Debug, Default)]
pub struct PodNetwork {
    pub ip: String,
    pub additional_ips: Vec<String>,
    /// The network configuration used (JSON).
    pub network: String,
}

/// A pod's network namespace and the CNI network it is to join.
pub(crate) struct PodNetns {
    net: NetworkConfig,
    netns: Netns,
}

impl PodNetns {
    pub(crate) fn path(&self) -> String {
        self.netns.path.display().to_string()
    }
}

fn attachment(id: &str, netns: &Path, config: &pb::PodSandboxConfig) -> Attachment {
    let m = config.metadata.clone().unwrap_or_default();
    let mut att = Attachment::new(id, netns);
    att.args = vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAMESPACE".into(), m.namespace),
        ("K8S_POD_NAME".into(), m.name),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), id.to_string()),
        ("K8S_POD_UID".into(), m.uid),
    ];
    att.ports = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0 && p.container_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port as u16,
            container_port: p.container_port as u16,
            protocol: match pb::Protocol::try_from(p.protocol) {
                Ok(pb::Protocol::Udp) => "udp".into(),
                Ok(pb::Protocol::Sctp) => "sctp".into(),
                _ => "tcp".into(),
            },
            host_ip: p.host_ip.clone(),
        })
        .collect();
    att
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> wharf_network::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("network task: {e}")))?
        .map_err(Error::from)
}

impl Cri {
    fn cni(&self) -> Cni {
        let mut cni = Cni::new(
            self.config.cni_conf_dir.clone(),
            self.root.join("cri").join("cni-cache"),
        );
        if !self.config.cni_bin_dirs.is_empty() {
            cni.bin_dirs = self.config.cni_bin_dirs.clone();
        }
        cni
    }

    fn netns_dir(&self) -> PathBuf {
        self.state.join("cri").join("netns")
    }

    /// Where the network namespace of pod `id` is pinned.
    pub(crate) fn pod_netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir().join(id)
    }

    pub(crate) fn pod_dir(&self, id: &str) -> PathBuf {
        self.state.join("cri").join("sandboxes").join(id)
    }

    /// The CNI network pods join: the first of `cni_conf_dir`. Checked before a pod is made,
    /// so that a machine with no CNI configuration fails a pod before creating anything.
    pub(crate) fn pod_network_config(&self) -> Result<NetworkConfig> {
        let cni = self.cni();
        cni.load_conf_dir()
            .map_err(|e| e.to_string())
            .and_then(|n| {
                n.ok_or_else(|| format!("no network config found in {}", cni.conf_dir.display()))
            })
            .map_err(|e| Error::FailedPrecondition(format!("cni plugin not initialized: {e}")))
    }

    /// A new network namespace for a pod, at [`Cri::pod_netns_path`], not on `net` yet: the
    /// pause container can be created in it while CNI attaches it ([`Cri::attach_pod_network`]).
    pub(crate) async fn create_pod_netns(&self, id: &str, net: NetworkConfig) -> Result<PodNetns> {
        let dir = self.netns_dir();
        let name = id.to_string();
        let netns = blocking(move || Netns::create(&dir, &name)).await?;
        Ok(PodNetns { net, netns })
    }

    /// Removes a namespace that never joined the network.
    pub(crate) async fn remove_pod_netns(&self, ns: PodNetns) {
        let path = ns.path();
        if let Err(e) = blocking(move || ns.netns.remove()).await {
            tracing::warn!(netns = %path, error = %e, "cri: remove pod network namespace");
        }
    }

    /// CNI ADD of the pod's namespace. On failure the attachment is undone (CNI DEL); the
    /// namespace is the caller's to remove ([`Cri::teardown_pod_network`] does both).
    pub(crate) async fn attach_pod_network(
        &self,
        id: &str,
        config: &pb::PodSandboxConfig,
        ns: &PodNetns,
    ) -> Result<PodNetwork> {
        let cni = self.cni();
        let att = attachment(id, &ns.netns.path, config);
        match cni.setup(&ns.net, &att).await {
            Ok(r) => {
                let mut ips = r.ips.iter().map(|i| i.ip().to_string());
                let mut v4: Vec<String> = Vec::new();
                let mut v6: Vec<String> = Vec::new();
                for ip in ips.by_ref() {
                    if ip.contains(':') {
                        v6.push(ip)
                    } else {
                        v4.push(ip)
                    }
                }
                v4.extend(v6);
                let mut all = v4.into_iter();
                Ok(PodNetwork {
                    ip: all.next().unwrap_or_default(),
                    additional_ips: all.collect(),
                    network: String::from_utf8_lossy(&ns.net.to_bytes()?).into_owned(),
                })
            }
            Err(e) => {
                let _ = cni.teardown(&ns.net, &att).await;
                Err(Error::from(e).context(format!("failed to setup network for sandbox {id:?}")))
            }
        }
    }

    /// CNI DEL and the namespace removed; idempotent.
    pub(crate) async fn teardown_pod_network(
        &self,
        id: &str,
        meta: &SandboxMeta,
        config: &pb::PodSandboxConfig,
    ) -> Result<()> {
        if meta.netns.is_empty() {
            return Ok(());
        }
        let path = PathBuf::from(&meta.netns);
        let cni = self.cni();
        let net = match NetworkConfig::from_conflist(meta.network.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => cni.load_conf_dir().ok().flatten(),
        };
        if let Some(net) = net {
            let att = attachment(id, &path, config);
            cni.teardown(&net, &att)
                .await
                .map_err(|e| Error::from(e).context(format!("teardown network of {id}")))?;
        }
        let ns = Netns { path };
        blocking(move || ns.remove()).await?;
        Ok(())
    }

    /// Writes the pod's /etc files; returns their directory.
    pub(crate) fn write_pod_etc(
        &self,
        id: &str,
        config: &pb::PodSandboxConfig,
        ip: &str,
        host_network: bool,
    ) -> Result<PathBuf> {
        let dir = self.pod_dir(id);
        let io = |what: &str, p: &Path, e: std::io::Error| {
            Error::Internal(format!("{what} {}: {e}", p.display()))
        };
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let hostname = if host_network {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let dns = config.dns_config.clone().unwrap_or_default();
        let resolv = if host_network && dns.servers.is_empty() && dns.searches.is_empty() {
            host_resolv
        } else {
            wharf_core::spec::etc::resolv_conf(
                &host_resolv,
                &dns.servers,
                &dns.searches,
                &dns.options,
            )
        };
        let hosts = if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            wharf_core::spec::etc::hosts(&hostname, (!ip.is_empty()).then_some(ip), &[])
        };
        for (name, text) in [
            ("hosts", hosts),
            ("hostname", format!("{hostname}\n")),
            ("resolv.conf", resolv),
        ] {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| io("write", &p, e))?;
        }
        Ok(dir)
    }
}
