//! wharf's default network: a Linux bridge with host-local IPAM, port mappings and the
//! firewall plugin, and the one piece of the bridge plugin's cleanup that needs help when the
//! namespace is already gone.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sha2::{Digest, Sha512};

use crate::config::{plugin_type, NetworkConfig};
use crate::result::NetResult;

/// Where host-local keeps its allocations unless told otherwise: under wharf's root, not the
/// `/var/lib/cni/networks` shared with other runtimes.
pub const DEFAULT_IPAM_DATA_DIR: &str = "/var/lib/wharf/cni/networks";

/// The CNI version of the configurations this crate writes (Debian's plugins 1.1 speak it).
pub const CNI_VERSION: &str = "1.0.0";

/// The knobs of the default bridge network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOptions {
    /// The network name (`wharf`).
    pub name: String,
    /// The bridge device (`wharf0`); at most 15 characters.
    pub bridge: String,
    /// The IPv4 subnet in CIDR form (`10.88.0.0/16`); the gateway is its first address.
    pub subnet: String,
    /// host-local's `dataDir`: allocations live in `<data_dir>/<name>/`.
    pub ipam_data_dir: PathBuf,
}

impl BridgeOptions {
    pub fn new(name: &str, bridge: &str, subnet: &str) -> BridgeOptions {
        BridgeOptions {
            name: name.into(),
            bridge: bridge.into(),
            subnet: subnet.into(),
            ipam_data_dir: PathBuf::from(DEFAULT_IPAM_DATA_DIR),
        }
    }

    pub fn ipam_data_dir(mut self, dir: impl Into<PathBuf>) -> BridgeOptions {
        self.ipam_data_dir = dir.into();
        self
    }

    /// The conflist: `bridge` (gateway, masquerade, hairpin) with host-local IPAM and a default
    /// route, `portmap` (capability `portMappings`, SNAT for hairpin traffic), `firewall`.
    pub fn build(&self) -> NetworkConfig {
        NetworkConfig {
            name: self.name.clone(),
            cni_version: CNI_VERSION.into(),
            disable_check: false,
            plugins: vec![
                json!({
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.ipam_data_dir.display().to_string(),
                    },
                }),
                json!({
                    "type": "portmap",
                    "capabilities": {"portMappings": true},
                    "snat": true,
                }),
                json!({"type": "firewall"}),
            ],
        }
    }
}

/// The default bridge network with host-local allocations under [`DEFAULT_IPAM_DATA_DIR`];
/// use [`BridgeOptions`] to choose another directory.
///
/// ```
/// let net = wharf_network::default_bridge("wharf", "wharf0", "10.88.0.0/16");
/// assert_eq!(net.plugin_types(), ["bridge", "portmap", "firewall"]);
/// ```
pub fn default_bridge(name: &str, bridge: &str, subnet: &str) -> NetworkConfig {
    BridgeOptions::new(name, bridge, subnet).build()
}

/// The nat chain the bridge plugin (iptables backend) makes for a masqueraded container:
/// `CNI-` and the first 24 hex digits of sha512(network name + container id).
pub(crate) fn masq_chain(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let mut chain = format!("CNI-{}", hex::encode(digest));
    chain.truncate(28);
    chain
}

/// When DEL runs after the namespace is gone, the bridge plugin cannot see the container's
/// addresses and leaves its masquerade chain behind (it only releases the IP). Remove the
/// jump from POSTROUTING and the chain ourselves, for bridge plugins with `ipMasq`. Best
/// effort: failures are logged.
pub(crate) async fn cleanup_stale_masq(
    net: &NetworkConfig,
    container_id: &str,
    result: &NetResult,
) {
    let masq = net.plugins.iter().any(|p| {
        plugin_type(p) == "bridge"
            && p.get("ipMasq").and_then(Value::as_bool).unwrap_or(false)
            && p.get("ipam").and_then(|i| i.get("type")).is_some()
    });
    if !masq {
        return;
    }
    let chain = masq_chain(&net.name, container_id);
    let mut tools = Vec::new();
    if result.ips.iter().any(|ip| ip.is_ipv4()) {
        tools.push("iptables");
    }
    if result.ips.iter().any(|ip| !ip.is_ipv4()) {
        tools.push("ip6tables");
    }
    for tool in tools {
        if let Err(e) = remove_chain(tool, &chain).await {
            tracing::warn!(id = container_id, chain = %chain, error = %e, "remove stale masquerade chain");
        }
    }
}

async fn remove_chain(tool: &str, chain: &str) -> Result<(), String> {
    let listing = iptables(
        tool,
        &["-t", "nat", "-L", "POSTROUTING", "-n", "--line-numbers"],
    )
    .await?;
    let mut rules: Vec<u32> = listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let num = f.next()?.parse().ok()?;
            (f.next()? == chain).then_some(num)
        })
        .collect();
    rules.sort_unstable_by(|a, b| b.cmp(a));
    for num in rules {
        iptables(tool, &["-t", "nat", "-D", "POSTROUTING", &num.to_string()]).await?;
    }
    let chains = iptables(tool, &["-t", "nat", "-S"]).await?;
    if chains.lines().any(|l| l == format!("-N {chain}")) {
        iptables(tool, &["-t", "nat", "-F", chain]).await?;
        iptables(tool, &["-t", "nat", "-X", chain]).await?;
    }
    Ok(())
}

async fn iptables(tool: &str, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new(tool)
        .arg("-w")
        .args(args)
        .output()
        .await
        .map_err(|e| format!("run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host-local allocation files of `network` under `data_dir` (one per allocated address,
/// named like the address), for callers that want to inspect or garbage-collect them.
pub fn ipam_allocations(data_dir: &Path, network: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(data_dir.join(network)) else {
        return Vec::new();
    };
    let mut ips: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    ips.sort();
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config() {
        let net = BridgeOptions::new("wharf", "wharf0", "10.88.0.0/16")
            .ipam_data_dir("/tmp/ipam")
            .build();
        net.validate().unwrap();
        assert_eq!(net.cni_version, "1.0.0");
        let bridge = &net.plugins[0];
        assert_eq!(bridge["bridge"], "wharf0");
        assert_eq!(bridge["ipam"]["ranges"][0][0]["subnet"], "10.88.0.0/16");
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/ipam");
        assert_eq!(net.plugins[1]["capabilities"]["portMappings"], true);
        assert_eq!(
            default_bridge("wharf", "wharf0", "10.88.0.0/16").plugins[0]["ipam"]["dataDir"],
            DEFAULT_IPAM_DATA_DIR
        );
    }

    #[test]
    fn chain_names() {
        let c = masq_chain("wharf", "abc");
        assert_eq!(c.len(), 28);
        assert!(c.starts_with("CNI-"));
        assert_ne!(c, masq_chain("wharf", "abd"));
    }
}
