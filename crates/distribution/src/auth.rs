//! Registry authentication: credentials (given by the caller, or from `~/.docker/config.json`),
//! `WWW-Authenticate` challenges, and bearer tokens fetched from the challenge's realm for a scope
//! and cached per (host, scope) until they expire.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::{Error, Result};

/// What to authenticate to one registry with (CRI's AuthConfig has the same three forms).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (`docker login`'s `identitytoken`): exchanged at the token
    /// server for access tokens instead of the password.
    pub identity_token: Option<String>,
    /// A bearer token sent to the registry as is (no token server round trip).
    pub registry_token: Option<String>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        write!(f, "Credential({:?}, ***)", self.username)
    }
}

impl Credential {
    /// Can answer a basic challenge.
    fn has_password(&self) -> bool {
        !self.username.is_empty() || !self.password.is_empty()
    }
}

/// Where credentials come from: explicit ones per registry host first, then a docker config file.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    explicit: HashMap<String, Credential>,
    docker_config: Option<PathBuf>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The keys docker writes for a registry: `host`, `https://host`, `http://host`, and for Docker
/// Hub its legacy index URL.
fn docker_keys(host: &str) -> Vec<String> {
    let mut keys = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
    ];
    if host == "docker.io" || host == "registry-1.docker.io" {
        keys.insert(0, "https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
    }
    keys
}

impl Credentials {
    /// No credentials at all (anonymous pulls only).
    pub fn none() -> Self {
        Credentials::default()
    }

    /// Looks credentials up in docker's config: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`.
    pub fn from_docker_env() -> Self {
        let path = std::env::var_os("DOCKER_CONFIG")
            .map(|d| PathBuf::from(d).join("config.json"))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
            });
        Credentials {
            explicit: HashMap::new(),
            docker_config: path,
        }
    }

    /// Uses the docker config file at `path` too.
    pub fn with_docker_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.docker_config = Some(path.into());
        self
    }

    /// Adds credentials for registry `host` (as in the reference, e.g. `127.0.0.1:5000`).
    pub fn insert(self, host: &str, username: &str, password: &str) -> Self {
        self.insert_credential(
            host,
            Credential {
                username: username.to_string(),
                password: password.to_string(),
                ..Default::default()
            },
        )
    }

    /// Adds any kind of credential for registry `host`.
    pub fn insert_credential(mut self, host: &str, c: Credential) -> Self {
        self.explicit.insert(host.to_string(), c);
        self
    }

    /// The credentials for `host`, if any. A docker config that cannot be read or parsed is an
    /// error (silently pulling anonymously would hide the cause of a later 401).
    pub fn lookup(&self, host: &str) -> Result<Option<Credential>> {
        if let Some(c) = self.explicit.get(host) {
            return Ok(Some(c.clone()));
        }
        match &self.docker_config {
            Some(p) => docker_lookup(p, host),
            None => Ok(None),
        }
    }
}

fn docker_lookup(path: &Path, host: &str) -> Result<Option<Credential>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
    };
    let cfg: DockerConfig = serde_json::from_str(&text)
        .map_err(|e| Error::InvalidArgument(format!("docker config {}: {e}", path.display())))?;
    for key in docker_keys(host) {
        let Some(a) = cfg.auths.get(&key) else {
            continue;
        };
        if let Some(t) = a.identitytoken.as_ref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credential {
                identity_token: Some(t.clone()),
                ..Default::default()
            }));
        }
        if let (Some(u), Some(p)) = (&a.username, &a.password) {
            return Ok(Some(Credential {
                username: u.clone(),
                password: p.clone(),
                ..Default::default()
            }));
        }
        if let Some(enc) = &a.auth {
            let bad = || {
                Error::InvalidArgument(format!(
                    "docker config {}: auth of {key:?} is not base64 of user:password",
                    path.display()
                ))
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(enc.trim())
                .map_err(|_| bad())?;
            let s = String::from_utf8(raw).map_err(|_| bad())?;
            let (u, p) = s.split_once(':').ok_or_else(bad)?;
            return Ok(Some(Credential {
                username: u.to_string(),
                password: p.to_string(),
                ..Default::default()
            }));
        }
    }
    Ok(None)
}

/// One `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercase scheme: `basic` or `bearer`.
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// Parses a `WWW-Authenticate` value: `Bearer realm="https://auth",service="reg",scope="x"`.
/// Several challenges in one header are split at a scheme token following a comma.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        // A scheme is a token not followed by '='.
        let end = rest.find([' ', ',', '=']).unwrap_or(rest.len());
        let token = &rest[..end];
        let after = &rest[end..];
        if !after.starts_with('=') && !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: HashMap::new(),
            });
            rest = after.trim_start_matches([' ', ',']);
            continue;
        }
        // key=value or key="quoted value"
        let key = token.to_ascii_lowercase();
        let v = &after[1.min(after.len())..];
        let (value, remaining) = if let Some(q) = v.strip_prefix('"') {
            let mut val = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => val.push(c),
                }
            }
            (val, &q[end.min(q.len())..])
        } else {
            let e = v.find(',').unwrap_or(v.len());
            (v[..e].trim().to_string(), &v[e..])
        };
        if let Some(c) = out.last_mut() {
            c.params.insert(key, value);
        }
        if token.is_empty() && remaining.len() == rest.len() {
            break; // no progress on malformed input
        }
        rest = remaining.trim_start_matches([' ', ',']);
    }
    out
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

struct Token {
    value: String,
    expires: Instant,
}

/// The docker token spec's minimum lifetime, used when the server gives none.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// How requests to one registry get authorised: the credentials of each host it is reached at
/// (a mirror never gets the upstream's), the last challenge seen per host and the tokens fetched.
pub struct Authorizer {
    credentials: HashMap<String, Credential>,
    challenges: Mutex<HashMap<String, Challenge>>,
    tokens: Mutex<HashMap<(String, String), Token>>,
}

impl Authorizer {
    /// `credentials`: per host (`host[:port]` as in the request URLs).
    pub fn new(credentials: HashMap<String, Credential>) -> Self {
        Authorizer {
            credentials,
            challenges: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn credential(&self, host: &str) -> Option<&Credential> {
        self.credentials.get(host)
    }

    fn basic_header(c: &Credential) -> String {
        let raw = format!("{}:{}", c.username, c.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }

    /// The Authorization header for a request to `host` needing `scope`, when one is known to be
    /// needed (after a challenge). Fetches a token when none is cached.
    pub async fn header(
        &self,
        http: &reqwest::Client,
        host: &str,
        scope: &str,
    ) -> Result<Option<String>> {
        let challenge = self
            .challenges
            .lock()
            .map_err(|_| Error::Internal("auth lock poisoned".into()))?
            .get(host)
            .cloned();
        let Some(ch) = challenge else {
            return Ok(None);
        };
        match ch.scheme.as_str() {
            "basic" => Ok(self
                .credential(host)
                .filter(|c| c.has_password())
                .map(Self::basic_header)),
            "bearer" => {
                if let Some(t) = self
                    .credential(host)
                    .and_then(|c| c.registry_token.as_ref())
                {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let key = (host.to_string(), scope.to_string());
                if let Some(t) = self
                    .tokens
                    .lock()
                    .map_err(|_| Error::Internal("auth lock poisoned".into()))?
                    .get(&key)
                {
                    if t.expires > Instant::now() {
                        return Ok(Some(format!("Bearer {}", t.value)));
                    }
                }
                let token = self.fetch_token(http, host, &ch, scope).await?;
                let value = format!("Bearer {}", token.value);
                self.tokens
                    .lock()
                    .map_err(|_| Error::Internal("auth lock poisoned".into()))?
                    .insert(key, token);
                Ok(Some(value))
            }
            other => Err(Error::NotImplemented(format!(
                "registry {host} asks for {other:?} authentication"
            ))),
        }
    }

    /// Records a 401's challenges. Returns false when retrying cannot help: basic auth asked for
    /// but there are no credentials, or the request already carried them (`sent_basic`).
    pub fn challenged(
        &self,
        host: &str,
        www_authenticate: &[String],
        scope: &str,
        sent_basic: bool,
    ) -> Result<bool> {
        let chs: Vec<Challenge> = www_authenticate
            .iter()
            .flat_map(|h| parse_challenges(h))
            .collect();
        // Prefer bearer (it works anonymously) over basic.
        let Some(ch) = chs
            .iter()
            .find(|c| c.scheme == "bearer")
            .or_else(|| chs.iter().find(|c| c.scheme == "basic"))
            .cloned()
        else {
            return Err(Error::Unauthenticated(format!(
                "registry {host} refused the request without a usable WWW-Authenticate challenge"
            )));
        };
        let mut challenges = self
            .challenges
            .lock()
            .map_err(|_| Error::Internal("auth lock poisoned".into()))?;
        // A token the registry refused is dropped so the next request fetches a fresh one.
        self.tokens
            .lock()
            .map_err(|_| Error::Internal("auth lock poisoned".into()))?
            .remove(&(host.to_string(), scope.to_string()));
        let basic_possible = self.credential(host).is_some_and(|c| c.has_password());
        if ch.scheme == "basic" && (!basic_possible || sent_basic) {
            return Ok(false);
        }
        challenges.insert(host.to_string(), ch);
        Ok(true)
    }

    /// Has a credential to offer to `host`.
    pub fn has_credential(&self, host: &str) -> bool {
        self.credential(host).is_some()
    }

    async fn fetch_token(
        &self,
        http: &reqwest::Client,
        host: &str,
        ch: &Challenge,
        scope: &str,
    ) -> Result<Token> {
        let realm = ch.params.get("realm").ok_or_else(|| {
            Error::Unauthenticated("bearer challenge without a realm".to_string())
        })?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = ch.params.get("service") {
            query.push(("service", s));
        }
        let cred = self.credential(host);
        let req = match cred.and_then(|c| c.identity_token.as_ref()) {
            // OAuth2: the refresh token buys an access token for the scope.
            Some(refresh) => {
                let mut form = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", "wharf"),
                    ("scope", scope),
                ];
                if let Some(s) = ch.params.get("service") {
                    form.push(("service", s));
                }
                http.post(realm).form(&form)
            }
            None => {
                let req = http.get(realm).query(&query);
                match cred.filter(|c| c.has_password()) {
                    Some(c) => req.basic_auth(&c.username, Some(&c.password)),
                    None => req,
                }
            }
        };
        let what = format!("token from {realm} for {scope}");
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("{what}: {}", crate::error::chain(&e))))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthenticated(format!(
                "{what}: the token server refused the credentials"
            )));
        }
        if status == reqwest::StatusCode::FORBIDDEN {
            return Err(Error::PermissionDenied(what));
        }
        if !status.is_success() {
            return Err(Error::Unavailable(format!("{what}: HTTP {status}")));
        }
        let body = crate::client::read_limited(resp, 1 << 20, &what).await?;
        let t: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| Error::Unavailable(format!("{what}: malformed response: {e}")))?;
        let value = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unavailable(format!("{what}: response has no token")))?;
        let lifetime = t
            .expires_in
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOKEN_LIFETIME);
        // Renew a little early so a token does not expire in flight.
        let expires = Instant::now() + lifetime.saturating_sub(lifetime / 10);
        Ok(Token { value, expires })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["service"], "registry.docker.io");
        assert_eq!(c[0].params["scope"], "repository:library/busybox:pull");
        let c = parse_challenges(r#"Basic realm="wharf-test""#);
        assert_eq!(
            (c[0].scheme.as_str(), c[0].params["realm"].as_str()),
            ("basic", "wharf-test")
        );
        let c = parse_challenges(r#"Basic realm="a\"b", Bearer realm=x,service=y"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].params["realm"], "a\"b");
        assert_eq!(c[1].params["service"], "y");
        assert!(parse_challenges("").is_empty());
        // Garbage never loops or panics.
        for junk in ["=", "==,,", "Bearer =\"", "\"\"\""] {
            let _ = parse_challenges(junk);
        }
    }

    #[test]
    fn reads_docker_config() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.json");
        let enc = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{enc}"}},
                    "127.0.0.1:5000": {{"username": "bob", "password": "pw"}},
                    "bad.example": {{"auth": "!!!"}},
                    "tok.example": {{"auth": "", "identitytoken": "refresh-me"}}}}}}"#
            ),
        )
        .unwrap();
        let c = Credentials::none().with_docker_config(&p);
        let hub = c.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("alice", "s3cret:x")
        );
        assert_eq!(c.lookup("127.0.0.1:5000").unwrap().unwrap().username, "bob");
        assert_eq!(c.lookup("quay.io").unwrap(), None);
        let tok = c.lookup("tok.example").unwrap().unwrap();
        assert_eq!(tok.identity_token.as_deref(), Some("refresh-me"));
        assert!(!format!("{tok:?}").contains("refresh-me"));
        assert_eq!(
            c.lookup("bad.example").unwrap_err().kind(),
            crate::Kind::InvalidArgument
        );
        // Explicit credentials win; a missing file is no credentials.
        let c = c.insert("docker.io", "me", "pw");
        assert_eq!(c.lookup("docker.io").unwrap().unwrap().username, "me");
        let none = Credentials::none().with_docker_config(t.path().join("missing.json"));
        assert_eq!(none.lookup("docker.io").unwrap(), None);
        assert!(!format!("{hub:?}").contains("s3cret"));
    }

    #[test]
    fn basic_challenge_without_credentials_gives_up() {
        let basic = [r#"Basic realm="r""#.to_string()];
        let a = Authorizer::new(HashMap::new());
        assert!(!a.challenged("h", &basic, "s", false).unwrap());
        let a = Authorizer::new(HashMap::from([(
            "h".to_string(),
            Credential {
                username: "u".into(),
                password: "p".into(),
                ..Default::default()
            },
        )]));
        assert!(
            !a.challenged("other", &basic, "s", false).unwrap(),
            "not h's credentials"
        );
        assert!(a.challenged("h", &basic, "s", false).unwrap());
        // Concurrent requests sent before the first challenge may retry too.
        assert!(a.challenged("h", &basic, "s", false).unwrap());
        // A 401 to a request that carried the credentials: they were refused.
        assert!(!a.challenged("h", &basic, "s", true).unwrap());
        assert!(a.challenged("h", &[], "s", false).is_err());
    }
}
