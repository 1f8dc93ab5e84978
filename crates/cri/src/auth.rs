//! CRI's AuthConfig (PullImage's credentials) as a registry credential, read the way
//! containerd's CRI reads it.

use base64::Engine as _;
use wharf_api::cri::AuthConfig;
use wharf_distribution::auth::Credential;

use crate::{Error, Result};

/// The credential `auth` gives for registry `host`: none when it is empty, or when it names
/// another server (`server_address`). `auth` (base64 `user:password`) wins over
/// username/password, as in containerd.
pub fn credential(auth: &AuthConfig, host: &str) -> Result<Option<Credential>> {
    if !auth.server_address.is_empty() && !same_host(&auth.server_address, host) {
        tracing::debug!(server = %auth.server_address, host, "cri: auth is for another registry");
        return Ok(None);
    }
    let (mut username, mut password) = (auth.username.clone(), auth.password.clone());
    if !auth.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .map_err(|e| Error::InvalidArgument(format!("auth is not base64: {e}")))?;
        let decoded = String::from_utf8(decoded)
            .map_err(|_| Error::InvalidArgument("auth is not UTF-8".into()))?;
        let (u, p) = decoded.split_once(':').ok_or_else(|| {
            Error::InvalidArgument("auth must be base64 of \"username:password\"".into())
        })?;
        (username, password) = (u.to_string(), p.to_string());
    }
    let token = |t: &str| (!t.is_empty()).then(|| t.to_string());
    let c = Credential {
        username,
        password,
        identity_token: token(&auth.identity_token),
        registry_token: token(&auth.registry_token),
    };
    if c == Credential::default() {
        return Ok(None);
    }
    Ok(Some(c))
}

/// Does `server` (`host[:port]`, maybe with a scheme and a path) name registry `host`?
fn same_host(server: &str, host: &str) -> bool {
    let s = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let s = s.split('/').next().unwrap_or(s);
    let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    s == host || (hub(s) && hub(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form() {
        let a = AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let c = credential(&a, "r.example").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p"));

        let b64 = base64::engine::general_purpose::STANDARD.encode("bob:s:ecret");
        let a = AuthConfig {
            auth: b64,
            server_address: "https://index.docker.io/v1/".into(),
            ..Default::default()
        };
        let c = credential(&a, "docker.io").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("bob", "s:ecret")
        );
        assert_eq!(credential(&a, "quay.io").unwrap(), None);

        let a = AuthConfig {
            identity_token: "id".into(),
            ..Default::default()
        };
        let c = credential(&a, "x").unwrap().unwrap();
        assert_eq!(c.identity_token.as_deref(), Some("id"));
        let a = AuthConfig {
            registry_token: "tok".into(),
            ..Default::default()
        };
        let c = credential(&a, "x").unwrap().unwrap();
        assert_eq!(c.registry_token.as_deref(), Some("tok"));

        assert_eq!(credential(&AuthConfig::default(), "x").unwrap(), None);
        let bad = AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(credential(&bad, "x").is_err());
    }
}
