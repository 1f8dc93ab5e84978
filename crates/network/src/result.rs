//! CNI results: the JSON a plugin prints after ADD. Versions 0.3.0 to 1.0.0 share one shape
//! (`interfaces`, `ips`, `routes`, `dns`); 0.1.0/0.2.0 (`ip4`, `ip6`) are read into it too.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One address of the result, with its prefix (`10.88.0.5/16`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpInfo {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into [`NetResult::interfaces`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpInfo {
    /// The address without its prefix length.
    pub fn ip(&self) -> &str {
        self.address.split('/').next().unwrap_or_default()
    }

    pub fn is_ipv4(&self) -> bool {
        !self.address.contains(':')
    }
}

/// An interface the plugins made; `sandbox` is the netns path for interfaces inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

/// The result of a network setup: the last plugin's result, parsed, plus the raw JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct NetResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpInfo>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// The result exactly as the last plugin printed it (what chained plugins get as prevResult).
    pub raw: Value,
}

#[derive(Deserialize)]
struct Current {
    #[serde(rename = "cniVersion", default)]
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpInfo>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    ip4: Option<Legacy>,
    #[serde(default)]
    ip6: Option<Legacy>,
}

#[derive(Deserialize)]
struct Legacy {
    ip: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    routes: Vec<Route>,
}

impl NetResult {
    /// Reads a plugin's result.
    pub fn parse(raw: Value) -> Result<NetResult, String> {
        let c: Current = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
        let mut ips = c.ips;
        let mut routes = c.routes;
        for legacy in [c.ip4, c.ip6].into_iter().flatten() {
            ips.push(IpInfo {
                address: legacy.ip,
                gateway: legacy.gateway,
                interface: None,
            });
            routes.extend(legacy.routes);
        }
        for ip in &ips {
            if ip.interface.is_some_and(|i| i >= c.interfaces.len()) {
                return Err(format!("ip {} names a missing interface", ip.address));
            }
        }
        Ok(NetResult {
            cni_version: c.cni_version,
            interfaces: c.interfaces,
            ips,
            routes,
            dns: c.dns.unwrap_or_default(),
            raw,
        })
    }

    /// The addresses of the interface `ifname` inside the sandbox (all addresses when the
    /// result does not say which interface they belong to).
    pub fn ips_of(&self, ifname: &str) -> Vec<&IpInfo> {
        self.ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(iface) => iface.name == ifname && !iface.sandbox.is_empty(),
                    None => true,
                },
            )
            .collect()
    }

    /// The first IPv4 address of `ifname` without prefix, falling back to the first address.
    pub fn primary_ip(&self, ifname: &str) -> Option<&str> {
        let ips = self.ips_of(ifname);
        ips.iter()
            .find(|ip| ip.is_ipv4())
            .or(ips.first())
            .map(|ip| ip.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn current_result() {
        let raw = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "wharf0", "mac": "aa:bb"},
                {"name": "veth1", "mac": "cc:dd"},
                {"name": "eth0", "mac": "ee:ff", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
                    {"address": "fd00::5/64", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let r = NetResult::parse(raw.clone()).unwrap();
        assert_eq!(r.raw, raw);
        assert_eq!(r.ips.len(), 2);
        assert_eq!(r.ips[0].gateway.as_deref(), Some("10.88.0.1"));
        assert_eq!(r.primary_ip("eth0"), Some("10.88.0.5"));
        assert_eq!(r.ips_of("eth1").len(), 0);
        assert_eq!(r.routes[0].dst, "0.0.0.0/0");
    }

    #[test]
    fn older_results() {
        let r = NetResult::parse(json!({"cniVersion": "0.3.1", "ips": [
            {"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1"}]}))
        .unwrap();
        assert_eq!(r.primary_ip("eth0"), Some("10.1.0.2"));
        let r = NetResult::parse(json!({"cniVersion": "0.2.0",
            "ip4": {"ip": "10.2.0.2/24", "gateway": "10.2.0.1", "routes": [{"dst": "0.0.0.0/0"}]}}))
        .unwrap();
        assert_eq!(r.ips[0].address, "10.2.0.2/24");
        assert_eq!(r.routes.len(), 1);
        assert!(
            NetResult::parse(json!({"ips": [{"address": "1.2.3.4/32", "interface": 3}]})).is_err()
        );
        assert!(NetResult::parse(json!({"ips": "nope"})).is_err());
    }
}
