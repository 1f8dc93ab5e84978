//! Whether pod networking can work: a CNI network configuration in the configured directory
//! (what containerd's CRI reports as the NetworkReady condition). Invoking the plugins is the
//! network crate's job.

use std::path::{Path, PathBuf};

/// The first network configuration of `dir` in libcni's order (file name order; `.conf`,
/// `.conflist`, `.json`) that is a JSON object, or why there is none.
pub fn network_config(dir: &Path) -> Result<PathBuf, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("no network config found in {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|x| x.to_str()),
                    Some("conf" | "conflist" | "json")
                )
        })
        .collect();
    files.sort();
    let mut last_err = None;
    for f in files {
        let parsed = std::fs::read(&f).map_err(|e| e.to_string()).and_then(|b| {
            serde_json::from_slice::<serde_json::Value>(&b).map_err(|e| e.to_string())
        });
        match parsed {
            Ok(v) if v.is_object() => return Ok(f),
            Ok(_) => last_err = Some(format!("{}: not a JSON object", f.display())),
            Err(e) => last_err = Some(format!("{}: {e}", f.display())),
        }
    }
    Err(match last_err {
        Some(e) => format!("no valid network config found in {}: {e}", dir.display()),
        None => format!("no network config found in {}", dir.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_configs() {
        let d = tempfile::tempdir().unwrap();
        assert!(network_config(&d.path().join("missing")).is_err());
        assert!(network_config(d.path())
            .unwrap_err()
            .contains("no network config"));
        std::fs::write(d.path().join("10-bad.conf"), "{").unwrap();
        std::fs::write(d.path().join("README"), "{}").unwrap();
        assert!(network_config(d.path()).is_err());
        std::fs::write(
            d.path().join("20-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
        )
        .unwrap();
        assert_eq!(
            network_config(d.path()).unwrap(),
            d.path().join("20-net.conflist")
        );
    }
}
