//! The configuration as a document: every key with its comment, in the order
//! `wharfd config default` prints them, and the path of an unknown key in a file. The values come
//! from `Config::default()`; this module only knows names and words.

use crate::config::Config;

/// Every key of the configuration with the comment printed above it. A path naming a table
/// starts a section (`[grpc]`); the keys of the tables in [`MAPS`] are the user's own.
const KEYS: &[(&str, &str)] = &[
    (
        "root",
        "Persistent data: content, metadata, snapshots (flag --root).",
    ),
    ("state", "Runtime state: sockets, bundles (flag --state)."),
    (
        "log_level",
        "Log level: trace, debug, info, warn, error, or a tracing filter such as\n\
         \"info,wharfd=debug\" (flag --log-level).",
    ),
    (
        "grpc",
        "containerd's gRPC API v1 (and CRI) on a unix socket.",
    ),
    ("grpc.address", "The socket (flag --address)."),
    (
        "grpc.gid",
        "Group owning the socket (numeric gid); 0 keeps root's.",
    ),
    (
        "registry",
        "Pulls and pushes wharfd makes itself (Transfer service, CRI).",
    ),
    (
        "registry.config_path",
        "containerd's certs.d layout: <config_path>/<host>/hosts.toml (mirrors, TLS, plain HTTP).",
    ),
    ("runtime", "Shims."),
    (
        "runtime.shims",
        "Shim binary per runtime name, overriding containerd's naming rule\n\
         (io.containerd.runc.v2 -> containerd-shim-runc-v2). A bare name is looked up next to\n\
         wharfd, then in PATH; or an absolute path. To make plain `ctr run` use wharf's shim:\n\
         \"io.containerd.runc.v2\" = \"containerd-shim-wharf-v2\"",
    ),
    (
        "network",
        "The default network of containers the wharf CLI runs (--network bridge).",
    ),
    (
        "network.name",
        "CNI network name (also host-local's allocation directory name).",
    ),
    ("network.bridge", "The bridge device."),
    (
        "network.subnet",
        "IPv4 subnet; the bridge takes its first address as the gateway.",
    ),
    (
        "network.cni_bin_dirs",
        "CNI plugin directories, searched in order; empty: /opt/cni/bin, then /usr/lib/cni.",
    ),
    (
        "cri",
        "The Kubernetes CRI service (runtime.v1), on the same socket.",
    ),
    (
        "cri.sandbox_image",
        "The image of every pod's sandbox (pause) container; the default is built into wharfd.",
    ),
    (
        "cri.cni_conf_dir",
        "Where CNI network configurations are looked for (*.conf, *.conflist, *.json).",
    ),
    (
        "cri.cni_bin_dirs",
        "Where CNI plugin binaries are looked for, in order.",
    ),
    (
        "cri.max_concurrent_downloads",
        "Layers one PullImage fetches at once.",
    ),
    (
        "cri.stream_server_address",
        "Address the CRI streaming server (exec, attach, port-forward URLs) listens on.",
    ),
    (
        "cri.stream_server_port",
        "Port of the streaming server; \"0\" picks a free one at each start.",
    ),
    (
        "cri.enable_selinux",
        "Apply the SELinux labels of pod and container security contexts.",
    ),
    (
        "cri.disable_apparmor",
        "Run containers unconfined even where the kernel has AppArmor (RuntimeDefault is \
         wharf's profile, loaded with apparmor_parser on first use).",
    ),
    (
        "cri.ignore_image_defined_volumes",
        "Leave the image's VOLUME paths in the container's rootfs instead of giving each a \
         writable directory of the container's own, seeded with the image's content there.",
    ),
    (
        "metrics",
        "Prometheus metrics: GET http://<address>/metrics (text format 0.0.4).",
    ),
    (
        "metrics.address",
        "TCP address, e.g. \"127.0.0.1:1338\"; empty: no endpoint.",
    ),
];

/// Tables whose keys are chosen by the user (not checked, printed as they are).
const MAPS: &[&str] = &["runtime.shims"];

/// The default configuration as a commented TOML file that parses back into `Config::default()`.
pub fn default_text() -> String {
    let defaults = toml::Value::try_from(Config::default()).unwrap_or(toml::Value::Boolean(false));
    let mut out = String::from(
        "# wharfd's configuration (/etc/wharf/config.toml), every key with its default.\n\
         # Flags override this file; unknown keys are errors.\n\n",
    );
    for (path, doc) in KEYS {
        let value = lookup(&defaults, path);
        let table = matches!(value, Some(toml::Value::Table(_)));
        if table {
            out.push('\n');
        }
        for line in doc.lines() {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
        match value {
            Some(toml::Value::Table(t)) => {
                out.push_str(&format!("[{path}]\n"));
                // Entries of a map (none by default); a section's own keys follow in KEYS.
                if MAPS.contains(path) {
                    for (k, v) in t {
                        out.push_str(&format!("{} = {v}\n", toml::Value::String(k.clone())));
                    }
                }
            }
            Some(v) => {
                let key = path.rsplit('.').next().unwrap_or(path);
                out.push_str(&format!("{key} = {v}\n"));
            }
            None => {}
        }
    }
    out
}

/// The path of the first key in `text` that the configuration does not have, if any.
pub fn unknown_key(text: &str) -> Option<String> {
    let table: toml::Table = toml::from_str(text).ok()?;
    find_unknown(&table, "")
}

fn find_unknown(table: &toml::Table, prefix: &str) -> Option<String> {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if !KEYS.iter().any(|(p, _)| *p == path) {
            return Some(path);
        }
        if let toml::Value::Table(t) = v {
            if !MAPS.contains(&path.as_str()) {
                if let Some(p) = find_unknown(t, &path) {
                    return Some(p);
                }
            }
        }
    }
    None
}

fn lookup<'a>(v: &'a toml::Value, path: &str) -> Option<&'a toml::Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every path of a TOML tree, tables included, not descending into maps.
    fn paths(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(p.clone());
            if let (toml::Value::Table(t), false) = (v, MAPS.contains(&p.as_str())) {
                paths(t, &p, out);
            }
        }
    }

    #[test]
    fn every_key_is_documented_and_only_those() {
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let mut all = Vec::new();
        paths(&defaults, "", &mut all);
        let documented: Vec<&str> = KEYS.iter().map(|(p, _)| *p).collect();
        for p in &all {
            assert!(
                documented.contains(&p.as_str()),
                "config key `{p}` has no entry in config_text::KEYS"
            );
        }
        for p in &documented {
            assert!(
                all.iter().any(|a| a == p),
                "KEYS names `{p}`, which is no key"
            );
        }
    }

    #[test]
    fn default_text_parses_back_into_the_defaults() {
        let text = default_text();
        let parsed = Config::parse(&text).unwrap();
        assert_eq!(
            toml::Value::try_from(&parsed).unwrap(),
            toml::Value::try_from(Config::default()).unwrap()
        );
        // Complete: every key is written out, not left to the defaults.
        let written: toml::Table = toml::from_str(&text).unwrap();
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        paths(&written, "", &mut a);
        paths(&defaults, "", &mut b);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // And commented.
        assert!(
            text.contains("# The socket (flag --address).\naddress = "),
            "{text}"
        );
        assert!(text.contains("[metrics]\n# TCP address"), "{text}");
    }

    #[test]
    fn unknown_keys_by_path() {
        assert_eq!(
            unknown_key("[runtime]\nshimz = {}\n").as_deref(),
            Some("runtime.shimz")
        );
        assert_eq!(unknown_key("rot = \"/x\"\n").as_deref(), Some("rot"));
        assert_eq!(unknown_key("[runtime.shims]\nanything = \"x\"\n"), None);
        assert_eq!(unknown_key("[grpc]\naddress = \"/x\"\n"), None);
    }
}
