//! Network configurations: CNI conflists (`{name, cniVersion, plugins: [...]}`), single-plugin
//! `.conf` files wrapped into a list, and the lookup of the first configuration in a directory
//! the way containerd's CRI does it.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// A parsed CNI network configuration list. Each plugin is kept as raw JSON so fields this
/// crate does not know about reach the plugin untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkConfig {
    pub name: String,
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(rename = "disableCheck", default, skip_serializing_if = "is_false")]
    pub disable_check: bool,
    pub plugins: Vec<Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl NetworkConfig {
    /// Parses a conflist.
    pub fn from_conflist(bytes: &[u8]) -> Result<NetworkConfig> {
        let conf: NetworkConfig = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidConfig(format!("conflist: {e}")))?;
        conf.validate()?;
        Ok(conf)
    }

    /// Parses a single-plugin `.conf` and wraps it into a list of one plugin.
    pub fn from_conf(bytes: &[u8]) -> Result<NetworkConfig> {
        let plugin: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::InvalidConfig(format!("conf: {e}")))?;
        let field = |k: &str| plugin.get(k).and_then(Value::as_str).unwrap_or_default();
        if field("type").is_empty() {
            // Also catches a conflist saved as .conf.
            return Err(Error::InvalidConfig("conf: no plugin type".into()));
        }
        let conf = NetworkConfig {
            name: field("name").to_string(),
            cni_version: field("cniVersion").to_string(),
            disable_check: false,
            plugins: vec![plugin],
        };
        conf.validate()?;
        Ok(conf)
    }

    /// Reads a configuration file: `.conflist` as a list, anything else as a single plugin.
    pub fn load(path: &Path) -> Result<NetworkConfig> {
        let bytes = fs::read(path).map_err(|e| Error::io_path("read", path, e))?;
        let parsed = if path.extension().is_some_and(|e| e == "conflist") {
            Self::from_conflist(&bytes)
        } else {
            Self::from_conf(&bytes)
        };
        parsed.map_err(|e| match e {
            Error::InvalidConfig(m) => Error::InvalidConfig(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// The conflist as JSON bytes (what `from_conflist` reads).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("encode conflist: {e}")))
    }

    /// The `type` of each plugin, in chain order.
    pub fn plugin_types(&self) -> Vec<&str> {
        self.plugins.iter().map(plugin_type).collect()
    }

    /// Checks what the invocation relies on: a CNI network name, a version, and a plain
    /// executable name as each plugin's type.
    pub fn validate(&self) -> Result<()> {
        if !valid_network_name(&self.name) {
            return Err(Error::InvalidConfig(format!(
                "network name {:?}",
                self.name
            )));
        }
        if self.cni_version.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "network {}: no cniVersion",
                self.name
            )));
        }
        if self.plugins.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "network {}: no plugins",
                self.name
            )));
        }
        for p in &self.plugins {
            let t = plugin_type(p);
            if !p.is_object()
                || t.is_empty()
                || t.contains('/')
                || t.starts_with('.')
                || t.contains('\0')
            {
                return Err(Error::InvalidConfig(format!(
                    "network {}: plugin type {t:?}",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

pub(crate) fn plugin_type(p: &Value) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// CNI's rule for network names: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`.
pub(crate) fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The first configuration in `dir`: files ending in `.conf`, `.conflist` or `.json`, in
/// lexical order, as containerd's CRI picks them. `None` when the directory is missing or has
/// none; an unreadable first file is an error (not silently skipped).
pub fn first_in_dir(dir: &Path) -> Result<Option<NetworkConfig>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io_path("read", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io_path("read", dir, e))?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or_default();
        if matches!(ext, "conf" | "conflist" | "json") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    match files.first() {
        Some(path) => NetworkConfig::load(path).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_and_conf() {
        let list = br#"{"cniVersion":"1.0.0","name":"n1","plugins":[{"type":"bridge","x":1},{"type":"portmap"}]}"#;
        let c = NetworkConfig::from_conflist(list).unwrap();
        assert_eq!(c.plugin_types(), ["bridge", "portmap"]);
        assert_eq!(c.plugins[0]["x"], 1);
        let again = NetworkConfig::from_conflist(&c.to_bytes().unwrap()).unwrap();
        assert_eq!(again, c);

        let conf = br#"{"cniVersion":"0.4.0","name":"n2","type":"bridge","bridge":"b0"}"#;
        let c = NetworkConfig::from_conf(conf).unwrap();
        assert_eq!((c.name.as_str(), c.cni_version.as_str()), ("n2", "0.4.0"));
        assert_eq!(c.plugins[0]["bridge"], "b0");
        // A conflist in a .conf file has no type.
        assert!(NetworkConfig::from_conf(list).is_err());
    }

    #[test]
    fn bad_configs() {
        for bad in [
            &br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#[..],
            br#"{"cniVersion":"1.0.0","name":"-n","plugins":[{"type":"bridge"}]}"#,
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../bin/sh"}]}"#,
            br#"{"cniVersion":"","name":"n","plugins":[{"type":"bridge"}]}"#,
            br#"{"name":"n","plugins":[{"type":"bridge"}]}"#,
            b"not json",
        ] {
            assert!(
                NetworkConfig::from_conflist(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn first_in_dir_is_lexical() {
        let dir = tempfile::tempdir().unwrap();
        assert!(first_in_dir(&dir.path().join("missing")).unwrap().is_none());
        assert!(first_in_dir(dir.path()).unwrap().is_none());
        fs::write(dir.path().join("README"), "x").unwrap();
        fs::write(
            dir.path().join("20-b.conflist"),
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("10-a.conf"),
            r#"{"cniVersion":"1.0.0","name":"a","type":"ptp"}"#,
        )
        .unwrap();
        let c = first_in_dir(dir.path()).unwrap().unwrap();
        assert_eq!(c.name, "a");
        fs::write(dir.path().join("05-bad.json"), "{").unwrap();
        let e = first_in_dir(dir.path()).unwrap_err().to_string();
        assert!(e.contains("05-bad.json"), "{e}");
    }
}
