//! wharfd's configuration: flags override the TOML file (`/etc/wharf/config.toml`), which
//! overrides the embedded defaults. Unknown keys are errors naming the key.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG: &str = "/etc/wharf/config.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data: content, metadata, snapshots.
    pub root: PathBuf,
    /// Runtime state: sockets, bundles.
    pub state: PathBuf,
    /// Log level: trace, debug, info, warn, error.
    pub log_level: String,
    pub grpc: Grpc,
    pub registry: Registry,
    pub runtime: Runtime,
    pub network: Network,
    /// The Kubernetes CRI service (`[cri]`).
    pub cri: wharf_cri::Config,
    /// The Prometheus endpoint (`[metrics]`).
    pub metrics: Metrics,
}

/// Prometheus metrics over HTTP (`GET /metrics`), off unless an address is set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// TCP address to serve on, e.g. `127.0.0.1:1338`; empty: no endpoint (and no cost).
    pub address: String,
}

/// wharf's default network for containers the CLI runs (`--network bridge`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Network {
    /// CNI network name (also host-local's allocation directory name).
    pub name: String,
    /// The bridge device.
    pub bridge: String,
    /// IPv4 subnet; the bridge takes its first address as the gateway.
    pub subnet: String,
    /// Plugin directories, searched in order (default: /opt/cni/bin, then Debian's /usr/lib/cni).
    /// Pods use `[cri] cni_bin_dirs`, as containerd's CRI plugin has its own.
    pub cni_bin_dirs: Vec<String>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            name: "wharf".into(),
            bridge: "wharf0".into(),
            subnet: "10.88.0.0/16".into(),
            cni_bin_dirs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// Shim binary per runtime name, overriding containerd's naming rule
    /// (`io.containerd.runc.v2` → `containerd-shim-runc-v2`). ctr always asks for
    /// `io.containerd.runc.v2`; mapping it to `containerd-shim-wharf-v2` makes plain `ctr run`
    /// use wharf's shim. A bare name is looked up next to wharfd, then in PATH.
    pub shims: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registry {
    /// containerd's `certs.d` layout: `<config_path>/<host>/hosts.toml` (mirrors, TLS, plain
    /// HTTP) for pulls and pushes wharfd makes itself.
    pub config_path: PathBuf,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            config_path: "/etc/wharf/certs.d".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    /// The unix socket serving containerd's API.
    pub address: PathBuf,
    /// Group owning the socket (numeric gid); 0 keeps root's.
    pub gid: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: "/var/lib/wharf".into(),
            state: "/run/wharf".into(),
            log_level: "info".into(),
            grpc: Grpc::default(),
            registry: Registry::default(),
            runtime: Runtime::default(),
            network: Network::default(),
            cri: wharf_cri::Config::default(),
            metrics: Metrics::default(),
        }
    }
}

impl Default for Grpc {
    fn default() -> Self {
        Grpc {
            address: "/run/wharf/wharfd.sock".into(),
            gid: 0,
        }
    }
}

impl Config {
    /// Loads `path`; a missing file is fine only when it is the default path (not asked for).
    pub fn load(path: &Path, explicit: bool) -> Result<Config> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).with_context(|| format!("config {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(e) => Err(e).with_context(|| format!("read config {}", path.display())),
        }
    }

    /// Parses a configuration file's text; an unknown key is an error naming its path
    /// (`runtime.shimz`).
    pub fn parse(text: &str) -> Result<Config> {
        toml::from_str(text).map_err(|e| match crate::config_text::unknown_key(text) {
            Some(path) => anyhow::anyhow!("unknown key `{path}`: {e}"),
            None => e.into(),
        })
    }

    /// The effective configuration as TOML (`wharfd config dump`).
    pub fn dump(&self) -> Result<String> {
        toml::to_string(self).context("serialize config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        let c = Config::parse("root = \"/x\"\n[grpc]\naddress = \"/y.sock\"\n").unwrap();
        assert_eq!(c.root, PathBuf::from("/x"));
        assert_eq!(c.grpc.address, PathBuf::from("/y.sock"));
        assert_eq!(c.state, PathBuf::from("/run/wharf"));
        let err = Config::parse("[grpc]\nadress = \"/y\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("adress"), "{err}");
        let err = Config::parse("[runtime]\nshimz = {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`runtime.shimz`"), "{err}");
        let err = Config::parse("[cri]\nsandbox = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`cri.sandbox`"), "{err}");
        let err = Config::parse("[metrics]\naddr = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`metrics.addr`"), "{err}");
        // Runtime names under [runtime.shims] are the user's own keys.
        let c = Config::parse("[runtime.shims]\n\"io.containerd.runc.v2\" = \"x\"\n").unwrap();
        assert_eq!(c.runtime.shims["io.containerd.runc.v2"], "x");
    }

    #[test]
    fn metrics_section() {
        assert_eq!(Config::default().metrics.address, "");
        let c = Config::parse("[metrics]\naddress = \"127.0.0.1:1338\"\n").unwrap();
        assert_eq!(c.metrics.address, "127.0.0.1:1338");
    }

    #[test]
    fn dump_parses_back() {
        let mut c = Config {
            root: "/x".into(),
            ..Default::default()
        };
        c.metrics.address = "127.0.0.1:1".into();
        c.runtime.shims.insert(
            "io.containerd.runc.v2".into(),
            "containerd-shim-wharf-v2".into(),
        );
        let back = Config::parse(&c.dump().unwrap()).unwrap();
        assert_eq!(
            toml::Value::try_from(&back).unwrap(),
            toml::Value::try_from(&c).unwrap()
        );
    }

    #[test]
    fn cri_section() {
        let c = Config::parse(
            "[cri]\nsandbox_image = \"registry.k8s.io/pause:3.9\"\ncni_conf_dir = \"/x/net.d\"\n\
             cni_bin_dirs = [\"/b\"]\nmax_concurrent_downloads = 5\nstream_server_address = \"0.0.0.0\"\n\
             stream_server_port = \"10010\"\nenable_selinux = true\n",
        )
        .unwrap();
        assert_eq!(c.cri.sandbox_image, "registry.k8s.io/pause:3.9");
        assert_eq!(c.cri.cni_conf_dir, PathBuf::from("/x/net.d"));
        assert_eq!(c.cri.cni_bin_dirs, vec![PathBuf::from("/b")]);
        assert_eq!(c.cri.max_concurrent_downloads, 5);
        assert_eq!(c.cri.stream_server_port, "10010");
        assert!(c.cri.enable_selinux);
        let d = Config::default().cri;
        assert!(
            d.sandbox_image.starts_with("wharf.local/pause:"),
            "{}",
            d.sandbox_image
        );
        assert_eq!(d.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(d.max_concurrent_downloads, 3);
        let err = Config::parse("[cri]\nsandbox = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sandbox"), "{err}");
    }

    #[test]
    fn missing_default_is_fine_missing_explicit_is_not() {
        assert!(Config::load(Path::new("/nonexistent/wharf.toml"), false).is_ok());
        assert!(Config::load(Path::new("/nonexistent/wharf.toml"), true).is_err());
    }
}
