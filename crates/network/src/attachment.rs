//! What a caller asks to connect: a container (or pod sandbox) id, its netns, the interface
//! name inside it, port mappings and CNI_ARGS.

use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A host port forwarded to a container port (the CNI `portMappings` capability). An empty
/// `host_ip` means every host address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

impl PortMapping {
    pub fn tcp(host_port: u16, container_port: u16) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }
    }

    fn validate(&self) -> Result<()> {
        if !matches!(self.protocol.as_str(), "tcp" | "udp" | "sctp") {
            return Err(Error::InvalidArgument(format!(
                "port protocol {:?}",
                self.protocol
            )));
        }
        if self.host_port == 0 || self.container_port == 0 {
            return Err(Error::InvalidArgument(format!("port mapping {self}")));
        }
        if !self.host_ip.is_empty() && self.host_ip.parse::<std::net::IpAddr>().is_err() {
            return Err(Error::InvalidArgument(format!(
                "host ip {:?}",
                self.host_ip
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip.as_str() {
            "" => {}
            ip if ip.contains(':') => write!(f, "[{ip}]:")?,
            ip => write!(f, "{ip}:")?,
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port, self.container_port, self.protocol
        )
    }
}

/// Parses Docker's `-p` syntax: `[hostIP:]hostPort:containerPort[/proto]`, IPv6 host addresses
/// in brackets (`[::1]:8080:80`). The protocol defaults to tcp.
impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(s: &str) -> Result<PortMapping> {
        let bad = || Error::InvalidArgument(format!("port mapping {s:?}"));
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((r, p)) => (r, p.to_ascii_lowercase()),
            None => (s, "tcp".to_string()),
        };
        let (host_ip, ports) = if let Some(v6) = rest.strip_prefix('[') {
            let (ip, ports) = v6.split_once("]:").ok_or_else(bad)?;
            (ip.to_string(), ports)
        } else {
            match rest.matches(':').count() {
                1 => (String::new(), rest),
                2 => {
                    let (ip, ports) = rest.split_once(':').ok_or_else(bad)?;
                    (ip.to_string(), ports)
                }
                _ => return Err(bad()),
            }
        };
        let (h, c) = ports.split_once(':').ok_or_else(bad)?;
        let m = PortMapping {
            host_port: h.parse().map_err(|_| bad())?,
            container_port: c.parse().map_err(|_| bad())?,
            protocol,
            host_ip,
        };
        m.validate()?;
        Ok(m)
    }
}

/// One interface of one container in one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The container or pod sandbox id (CNI_CONTAINERID).
    pub container_id: String,
    /// The network namespace path (CNI_NETNS).
    pub netns: PathBuf,
    /// The interface name inside the namespace (CNI_IFNAME), usually `eth0`.
    pub ifname: String,
    pub ports: Vec<PortMapping>,
    /// CNI_ARGS, such as `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `IgnoreUnknown`.
    pub args: Vec<(String, String)>,
}

impl Attachment {
    /// An attachment of `eth0` with no ports and no arguments.
    pub fn new(container_id: impl Into<String>, netns: impl Into<PathBuf>) -> Attachment {
        Attachment {
            container_id: container_id.into(),
            netns: netns.into(),
            ifname: "eth0".into(),
            ports: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        validate_id(&self.container_id)?;
        let i = &self.ifname;
        if i.is_empty()
            || i.len() > 15
            || i == "."
            || i == ".."
            || i.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
        {
            return Err(Error::InvalidArgument(format!("interface name {i:?}")));
        }
        for p in &self.ports {
            p.validate()?;
        }
        for (k, v) in &self.args {
            if k.is_empty() || k.contains(['=', ';']) || v.contains(';') {
                return Err(Error::InvalidArgument(format!(
                    "CNI_ARGS entry {k:?}={v:?}"
                )));
            }
        }
        Ok(())
    }

    /// CNI_ARGS: `K=V;K=V`.
    pub(crate) fn cni_args(args: &[(String, String)]) -> String {
        args.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// containerd's identifier rule: `[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*`, at most 76 characters.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let bad = || Error::InvalidArgument(format!("container id {id:?}"));
    if id.is_empty() || id.len() > 76 {
        return Err(bad());
    }
    let mut prev_sep = true;
    for c in id.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(bad());
        }
    }
    if prev_sep {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ports() {
        assert_eq!(
            "8080:80".parse::<PortMapping>().unwrap(),
            PortMapping::tcp(8080, 80)
        );
        let m: PortMapping = "127.0.0.1:53:5353/UDP".parse().unwrap();
        assert_eq!(
            (m.host_ip.as_str(), m.protocol.as_str()),
            ("127.0.0.1", "udp")
        );
        assert_eq!(m.to_string(), "127.0.0.1:53:5353/udp");
        let m: PortMapping = "[::1]:8443:443".parse().unwrap();
        assert_eq!(m.host_ip, "::1");
        assert_eq!(m.to_string(), "[::1]:8443:443/tcp");
        for bad in [
            "80", "a:80", "0:80", "1:2/icmp", "x:1:2", "1:2:3:4", "[::1:1:2",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad}");
        }
        let json = serde_json::to_value(PortMapping::tcp(1, 2)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"hostPort": 1, "containerPort": 2, "protocol": "tcp"})
        );
    }

    #[test]
    fn ids_and_args() {
        for ok in ["a", "abc-1.2_3", &"f".repeat(64)] {
            validate_id(ok).unwrap();
        }
        for bad in ["", "-a", "a-", "a--b", "a/b", "../x", &"f".repeat(77)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
        let mut a = Attachment::new("c1", "/run/netns/x");
        a.args = vec![
            ("K8S_POD_NAME".into(), "p".into()),
            ("IgnoreUnknown".into(), "1".into()),
        ];
        a.validate().unwrap();
        assert_eq!(
            Attachment::cni_args(&a.args),
            "K8S_POD_NAME=p;IgnoreUnknown=1"
        );
        a.args.push(("A".into(), "b;c".into()));
        assert!(a.validate().is_err());
        let mut a = Attachment::new("c1", "/x");
        a.ifname = "a/b".into();
        assert!(a.validate().is_err());
    }
}
