//! Docker-style image references, normalised the way docker and containerd's CRI do:
//! `busybox` → `docker.io/library/busybox:latest`, `host:port/repo:tag`, `repo@sha256:…`,
//! `repo:tag@sha256:…` (the digest wins when fetching; the tag is kept for the image name).

use std::fmt;
use std::str::FromStr;

use wharf_core::Digest;

use crate::{Error, Result};

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const DEFAULT_TAG: &str = "latest";
const LEGACY_DOMAIN: &str = "index.docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A parsed, normalised reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

fn invalid(s: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("invalid reference {s:?}: {why}"))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A DNS name or IPv4 address (labels of alphanumerics and inner dashes), or `[ipv6]`, with an
/// optional numeric port.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
        if host.is_empty() && d.starts_with('[') {
            return true;
        }
    }
    !host.is_empty()
        && host.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `\w[\w.-]{0,127}`
fn valid_tag(t: &str) -> bool {
    let w = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && w(b[0])
        && b.iter().all(|c| w(*c) || *c == b'.' || *c == b'-')
}

impl Reference {
    /// Parses and normalises `s`. A reference with neither tag nor digest gets `:latest`.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(invalid(s, "empty reference"));
        }
        if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(invalid(
                s,
                "cannot specify 64-byte hexadecimal strings (use name@sha256:<hex>)",
            ));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let digest = Digest::parse(d).map_err(|e| invalid(s, &e.to_string()))?;
                (r, Some(digest))
            }
            None => (s, None),
        };
        // A ':' after the last '/' starts the tag; earlier ones belong to a port.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (n, t) = rest.split_at(last_slash + i);
                (n, Some(&t[1..]))
            }
            None => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(invalid(s, &format!("invalid tag {t:?}")));
            }
        }
        if name.is_empty() {
            return Err(invalid(s, "missing repository name"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid(
                s,
                &format!("repository name longer than {MAX_NAME_LEN} characters"),
            ));
        }
        // As docker: the first component is a domain if it looks like one (dot, port, localhost,
        // or uppercase letters, which a repository cannot have).
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.bytes().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(invalid(s, &format!("invalid domain {domain:?}")));
        }
        if path.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(invalid(s, "repository name must be lowercase"));
        }
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(invalid(s, &format!("invalid repository name {path:?}")));
        }
        let domain = if domain == LEGACY_DOMAIN {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        // The limit applies to the normalised name too (docker checks `docker.io/library/x`):
        // a short name within it must not print as a name beyond it.
        if domain.len() + 1 + path.len() > MAX_NAME_LEN {
            return Err(invalid(
                s,
                &format!("repository name longer than {MAX_NAME_LEN} characters"),
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host, e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `domain/path`
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry's manifests endpoint for: the digest if any, else the tag.
    pub fn object(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The same reference pinned to `digest` (keeping the tag).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    /// Found by the `reference` fuzz target: a name of 238..=255 characters passed the length
    /// check but normalised beyond it, printing as a reference that no longer parsed.
    #[test]
    fn length_limit_applies_to_the_normalised_name() {
        let short = "a".repeat(240);
        assert!(Reference::parse(&short).is_err());
        let fits = "a".repeat(255 - "docker.io/library/".len());
        let r = Reference::parse(&fits).unwrap();
        assert_eq!(Reference::parse(&r.to_string()).unwrap(), r);
    }

    #[test]
    fn normalises_docker_hub_names() {
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("user/app:v1", "docker.io/user/app:v1"),
            ("a/b/c", "docker.io/a/b/c:latest"),
        ] {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.to_string(), want, "{input}");
        }
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.domain(), "docker.io");
        assert_eq!(r.path(), "library/busybox");
        assert_eq!(r.object(), "latest");
    }

    #[test]
    fn parses_hosts_ports_tags_and_digests() {
        let r = Reference::parse("127.0.0.1:5000/my/repo:v1.2-rc_3").unwrap();
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("127.0.0.1:5000", "my/repo", Some("v1.2-rc_3"))
        );
        let r = Reference::parse("localhost/repo").unwrap();
        assert_eq!((r.domain(), r.path()), ("localhost", "repo"));
        let r = Reference::parse("localhost:5000/repo").unwrap();
        assert_eq!(r.to_string(), "localhost:5000/repo:latest");
        let r = Reference::parse(&format!("registry.k8s.io/pause@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().map(|d| d.to_string()).as_deref(), Some(D));
        assert_eq!(r.object(), D);
        assert_eq!(r.to_string(), format!("registry.k8s.io/pause@{D}"));
        let r = Reference::parse(&format!("busybox:1.36@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.object(), D, "the digest wins");
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1.36@{D}"));
        let r = Reference::parse("[::1]:5000/repo:t").unwrap();
        assert_eq!((r.domain(), r.tag()), ("[::1]:5000", Some("t")));
        let r = Reference::parse("my-host.example.com/a__b/c-d.e:t").unwrap();
        assert_eq!(r.path(), "a__b/c-d.e");
    }

    #[test]
    fn rejects_invalid_references_with_a_reason() {
        for (input, why) in [
            ("", "empty"),
            ("Busybox", "lowercase"),
            ("docker.io/Library/busybox", "lowercase"),
            ("busybox:", "invalid tag"),
            ("busybox:-x", "invalid tag"),
            ("busybox@sha256:abc", "invalid digest"),
            ("busybox@md5:abc", "unsupported digest algorithm"),
            ("host:port/repo", "invalid domain"),
            ("-host.com/repo", "invalid domain"),
            ("repo//x", "invalid repository name"),
            ("repo/", "invalid repository name"),
            ("a..b", "invalid repository name"),
            ("a-", "invalid repository name"),
            (":tag", "missing repository name"),
            (
                "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                "64-byte hexadecimal",
            ),
        ] {
            let e = Reference::parse(input).unwrap_err();
            assert_eq!(e.kind(), crate::Kind::InvalidArgument, "{input}");
            assert!(e.to_string().contains(why), "{input}: {e}");
        }
        let long = format!("{}/x", "a".repeat(300));
        assert!(Reference::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
        let long_tag = format!("busybox:{}", "t".repeat(129));
        assert!(Reference::parse(&long_tag).is_err());
    }

    #[test]
    fn with_digest_pins() {
        let d = Digest::parse(D).unwrap();
        let r = Reference::parse("busybox").unwrap().with_digest(d);
        assert_eq!(r.object(), D);
        assert_eq!(r.tag(), Some("latest"));
    }
}
