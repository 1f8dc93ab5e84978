//! Platforms (os/architecture/variant) and matching an index entry to the wanted one.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

impl Platform {
    /// The platform of this host (linux/amd64 here), in OCI's names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            a => a,
        };
        let variant = (architecture == "arm64").then(|| "v8".to_string());
        Platform {
            architecture: architecture.into(),
            os: "linux".into(),
            variant,
            os_version: None,
        }
    }

    /// Parses `os[/arch[/variant]]` as `--platform` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "invalid platform {s:?}: expected os[/arch[/variant]]"
            )));
        }
        let host = Platform::host();
        let architecture = parts
            .get(1)
            .map(|a| normalize_arch(a))
            .unwrap_or(host.architecture);
        let mut variant = parts.get(2).map(|v| v.to_string());
        if variant.is_none() && architecture == "arm64" {
            variant = Some("v8".into());
        }
        Ok(Platform {
            os: parts[0].to_lowercase(),
            architecture,
            variant,
            os_version: None,
        })
    }

    /// Does an index entry's platform satisfy this one? A missing variant on either side matches
    /// the default variant (`arm64` = `arm64/v8`).
    pub fn matches(&self, other: &Platform) -> bool {
        if self.os != other.os || self.architecture != normalize_arch(&other.architecture) {
            return false;
        }
        let default_variant = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_string()),
            (_, v) => v.map(str::to_string),
        };
        match (default_variant(self), default_variant(other)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn normalize_arch(a: &str) -> String {
    match a.to_lowercase().as_str() {
        "x86_64" | "x86-64" => "amd64".into(),
        "aarch64" => "arm64".into(),
        "armhf" | "armel" => "arm".into(),
        "i386" => "386".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(arm.matches(&Platform {
            os: "linux".into(),
            architecture: "arm64".into(),
            variant: None,
            os_version: None
        }));
        assert!(!arm.matches(&Platform::parse("linux/amd64").unwrap()));
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("linux/x86_64")
            .unwrap()
            .matches(&Platform::parse("linux/amd64").unwrap()));
    }
}
