//! Registry host configuration in containerd's format: `<dir>/<host>/hosts.toml` lists mirrors
//! (`[host."https://mirror"]`, tried in file order) before the upstream `server`, each with its
//! capabilities, CA files, client certificates and `skip_verify`. Without a file, a registry is
//! reached over HTTPS, except localhost and loopback addresses (plain HTTP, as containerd does), and
//! docker.io is served by registry-1.docker.io.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One place to reach a registry at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`
    pub host: String,
    /// The API root, `/v2` unless the configuration says otherwise.
    pub path: String,
    pub capabilities: Capabilities,
    /// Extra CA certificates (PEM) trusted for this host.
    pub ca: Vec<PathBuf>,
    /// Client certificate and key (PEM); no key file means the key is in the certificate file.
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    pub skip_verify: bool,
    pub headers: Vec<(String, String)>,
}

impl RegistryHost {
    /// The URL of `rest` (e.g. `/library/busybox/manifests/latest`) on this host.
    pub fn url(&self, rest: &str) -> String {
        format!("{}://{}{}{}", self.scheme, self.host, self.path, rest)
    }

    fn new(scheme: &str, host: &str) -> Self {
        RegistryHost {
            scheme: scheme.to_string(),
            host: host.to_string(),
            path: "/v2".to_string(),
            capabilities: Capabilities::ALL,
            ca: Vec::new(),
            client: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
        }
    }
}

/// Is `host` (with optional port) a loopback name, reached over plain HTTP by default?
pub fn is_local(host: &str) -> bool {
    if host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
    {
        return true;
    }
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|c| c.is_ascii_digit()))
            .map(|(h, _)| h)
            .unwrap_or(host)
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host used when no configuration names one.
pub fn default_host(host: &str) -> RegistryHost {
    if host == "docker.io" {
        RegistryHost::new("https", "registry-1.docker.io")
    } else if is_local(host) {
        RegistryHost::new("http", host)
    } else {
        RegistryHost::new("https", host)
    }
}

/// `string | [string]`
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `"cert"`, `["cert", "key"]`-pairs, or a list of either.
#[derive(Deserialize)]
#[serde(untagged)]
enum ClientCerts {
    One(String),
    Many(Vec<ClientCert>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ClientCert {
    Cert(String),
    Pair(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostFields {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<ClientCerts>,
    skip_verify: Option<bool>,
    override_path: Option<bool>,
    #[serde(default)]
    header: toml::Table,
}

/// The file: the server's own fields at top level (serde cannot deny unknown fields through
/// `flatten`, so they are repeated here).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    client: Option<ClientCerts>,
    skip_verify: Option<bool>,
    override_path: Option<bool>,
    #[serde(default)]
    header: toml::Table,
    #[serde(default)]
    host: toml::Table,
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Builds one host from its URL (`https://h`, `http://h:5000/v2/prefix` or bare `h`) and fields.
fn host_from(url: &str, f: HostFields, base: &Path, what: &str) -> Result<RegistryHost> {
    let bad = |why: String| Error::InvalidArgument(format!("{what}: {why}"));
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), r)) => (s, r),
        Some((s, _)) => return Err(bad(format!("unsupported scheme {s:?} in {url:?}"))),
        None => ("https", url),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(bad(format!("no host in {url:?}")));
    }
    let mut h = RegistryHost::new(scheme, host);
    h.path = if path.is_empty() {
        "/v2".to_string()
    } else if f.override_path.unwrap_or(false) || path.ends_with("/v2") {
        path.to_string()
    } else {
        format!("{path}/v2")
    };
    if let Some(caps) = f.capabilities {
        let mut c = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for cap in caps {
            match cap.as_str() {
                "pull" => c.pull = true,
                "resolve" => c.resolve = true,
                "push" => c.push = true,
                other => return Err(bad(format!("unknown capability {other:?}"))),
            }
        }
        h.capabilities = c;
    }
    h.ca = match f.ca {
        None => Vec::new(),
        Some(OneOrMany::One(p)) => vec![resolve_path(base, &p)],
        Some(OneOrMany::Many(v)) => v.iter().map(|p| resolve_path(base, p)).collect(),
    };
    let certs = match f.client {
        None => Vec::new(),
        Some(ClientCerts::One(c)) => vec![ClientCert::Cert(c)],
        Some(ClientCerts::Many(v)) => v,
    };
    for c in certs {
        h.client.push(match c {
            ClientCert::Cert(c) => (resolve_path(base, &c), None),
            ClientCert::Pair(p) => match p.as_slice() {
                [c] => (resolve_path(base, c), None),
                [c, k] => (resolve_path(base, c), Some(resolve_path(base, k))),
                _ => return Err(bad("client pairs must be [cert, key]".into())),
            },
        });
    }
    h.skip_verify = f.skip_verify.unwrap_or(false);
    for (k, v) in f.header {
        match v {
            toml::Value::String(s) => h.headers.push((k, s)),
            toml::Value::Array(a) => {
                for s in a {
                    let s = s
                        .as_str()
                        .ok_or_else(|| bad(format!("header {k:?} must be strings")))?;
                    h.headers.push((k.clone(), s.to_string()));
                }
            }
            _ => return Err(bad(format!("header {k:?} must be a string"))),
        }
    }
    Ok(h)
}

/// Parses a hosts.toml for registry `host`; relative paths are taken from `base` (its directory).
/// Mirrors come first, in file order, then the server (the default one when not set).
pub fn parse_hosts_toml(host: &str, text: &str, base: &Path) -> Result<Vec<RegistryHost>> {
    let what = format!("hosts.toml of {host} in {}", base.display());
    let file: HostsFile = toml::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("{what}: {}", e.message())))?;
    let mut out = Vec::new();
    for (url, fields) in file.host {
        let fields: HostFields = fields.try_into().map_err(|e: toml::de::Error| {
            Error::InvalidArgument(format!("{what}: host {url:?}: {}", e.message()))
        })?;
        out.push(host_from(&url, fields, base, &what)?);
    }
    let defaults = HostFields {
        capabilities: file.capabilities,
        ca: file.ca,
        client: file.client,
        skip_verify: file.skip_verify,
        override_path: file.override_path,
        header: file.header,
    };
    let server = match file.server {
        Some(s) => host_from(&s, defaults, base, &what)?,
        None => {
            let d = default_host(host);
            let url = format!("{}://{}", d.scheme, d.host);
            host_from(&url, defaults, base, &what)?
        }
    };
    out.push(server);
    Ok(out)
}

/// The hosts to try for registry `host`, from `dir` (e.g. `/etc/wharf/certs.d`) when it has a
/// configuration for it, else the default.
pub fn hosts_for(dir: Option<&Path>, host: &str) -> Result<Vec<RegistryHost>> {
    if let Some(dir) = dir {
        // containerd looks up the host's own directory, then `_default`.
        for name in [host, "_default"] {
            if name.contains('/') || name == "." || name == ".." {
                continue;
            }
            let base = dir.join(name);
            let file = base.join("hosts.toml");
            match std::fs::read_to_string(&file) {
                Ok(text) => return parse_hosts_toml(host, &text, &base),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("read {}", file.display()), e)),
            }
        }
    }
    Ok(vec![default_host(host)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let d = hosts_for(None, "docker.io").unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].url("/library/busybox/manifests/latest"),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        for local in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert_eq!(default_host(local).scheme, "http", "{local}");
        }
        assert_eq!(default_host("quay.io").scheme, "https");
        assert_eq!(default_host("10.0.0.1:5000").scheme, "https");
        assert_eq!(default_host("localhost.example.com").scheme, "https");
    }

    #[test]
    fn parses_mirrors_in_order_then_server() {
        let text = r#"
server = "https://registry-1.docker.io"

[host."https://mirror-b.example.com"]
  capabilities = ["pull", "resolve"]
  ca = "ca.crt"
  skip_verify = true

[host."http://mirror-a.local:5000/v2/prefix"]
  capabilities = ["pull"]
  client = [["/etc/c.cert", "c.key"], "both.pem"]
  override_path = true
  [host."http://mirror-a.local:5000/v2/prefix".header]
    x-custom = "1"
"#;
        let hosts = parse_hosts_toml("docker.io", text, Path::new("/cfg/docker.io")).unwrap();
        assert_eq!(hosts.len(), 3);
        let b = &hosts[0];
        assert_eq!(
            (b.scheme.as_str(), b.host.as_str(), b.path.as_str()),
            ("https", "mirror-b.example.com", "/v2")
        );
        assert!(b.capabilities.pull && b.capabilities.resolve && !b.capabilities.push);
        assert_eq!(b.ca, vec![PathBuf::from("/cfg/docker.io/ca.crt")]);
        assert!(b.skip_verify);
        let a = &hosts[1];
        assert_eq!(a.scheme, "http");
        assert_eq!(a.host, "mirror-a.local:5000");
        assert_eq!(a.path, "/v2/prefix");
        assert!(a.capabilities.pull && !a.capabilities.resolve);
        assert_eq!(
            a.client,
            vec![
                (
                    PathBuf::from("/etc/c.cert"),
                    Some(PathBuf::from("/cfg/docker.io/c.key"))
                ),
                (PathBuf::from("/cfg/docker.io/both.pem"), None)
            ]
        );
        assert_eq!(a.headers, vec![("x-custom".into(), "1".into())]);
        let s = &hosts[2];
        assert_eq!(s.host, "registry-1.docker.io");
        assert_eq!(s.capabilities, Capabilities::ALL);
        assert!(!s.skip_verify);
    }

    #[test]
    fn server_fields_and_default_server() {
        let text = "ca = [\"a.pem\", \"/abs/b.pem\"]\nskip_verify = true\n";
        let hosts = parse_hosts_toml("localhost:5000", text, Path::new("/d")).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].url("/"), "http://localhost:5000/v2/");
        assert!(hosts[0].skip_verify);
        assert_eq!(
            hosts[0].ca,
            vec![PathBuf::from("/d/a.pem"), PathBuf::from("/abs/b.pem")]
        );
        // A path without /v2 gets it appended unless override_path.
        let hosts = parse_hosts_toml(
            "r",
            "server = \"https://r.example.com/sub\"",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(hosts[0].path, "/sub/v2");
    }

    #[test]
    fn rejects_bad_files() {
        for bad in [
            "server = ",
            "server = \"ftp://x\"",
            "[host.\"https://m\"]\ncapabilities = [\"fly\"]",
            "[host.\"https://m\"]\nclient = [[\"a\", \"b\", \"c\"]]",
            "unknown_key = 1",
        ] {
            let e = parse_hosts_toml("r", bad, Path::new("/")).unwrap_err();
            assert_eq!(e.kind(), crate::Kind::InvalidArgument, "{bad}");
            assert!(e.to_string().contains("hosts.toml of r"), "{e}");
        }
    }

    #[test]
    fn reads_from_a_directory_with_default_fallback() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("registry.k8s.io")).unwrap();
        std::fs::write(
            t.path().join("registry.k8s.io/hosts.toml"),
            "[host.\"http://127.0.0.1:5000\"]\ncapabilities = [\"pull\", \"resolve\"]\n",
        )
        .unwrap();
        let h = hosts_for(Some(t.path()), "registry.k8s.io").unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(
            h[0].url("/pause/manifests/3.9"),
            "http://127.0.0.1:5000/v2/pause/manifests/3.9"
        );
        assert_eq!(h[1].host, "registry.k8s.io");
        // No file for quay.io and no _default: the default host.
        assert_eq!(
            hosts_for(Some(t.path()), "quay.io").unwrap(),
            vec![default_host("quay.io")]
        );
        std::fs::create_dir_all(t.path().join("_default")).unwrap();
        std::fs::write(t.path().join("_default/hosts.toml"), "skip_verify = true\n").unwrap();
        assert!(hosts_for(Some(t.path()), "quay.io").unwrap()[0].skip_verify);
    }
}
