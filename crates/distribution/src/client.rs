//! A registry client for one repository: resolve a reference to a descriptor, fetch manifests and
//! configs (size-limited, digest-verified) and stream blobs with Range resume. Requests go to the
//! repository's hosts in hosts.toml order (mirrors, then the server), are authorised on demand, and
//! are retried on 429/5xx and network errors with a bounded Retry-After.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::mpsc;
use wharf_core::images::{self, Descriptor, MAX_MANIFEST_SIZE};
use wharf_core::Digest;

use crate::auth::{Authorizer, Credentials};
use crate::error::chain;
use crate::hosts::{self, RegistryHost};
use crate::reference::Reference;
use crate::{Error, Result};

/// Manifest types wharf can pull, best first (containerd's Accept list).
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, */*;q=0.8";

const SCHEMA1_TYPES: &[&str] = &[
    images::MEDIA_DOCKER_SCHEMA1,
    "application/vnd.docker.distribution.manifest.v1+json",
];

/// How the client behaves; the defaults suit a daemon.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// containerd-style `certs.d` directory with `<host>/hosts.toml` files.
    pub hosts_dir: Option<PathBuf>,
    pub credentials: Credentials,
    /// Retries of one request on 429/5xx/network errors (and resumptions of one blob download).
    pub retries: u32,
    /// Upper bound on a registry's Retry-After (and on backoff).
    pub max_retry_wait: Duration,
    /// Manifests, indexes and configs larger than this are refused.
    pub max_manifest_size: u64,
    pub connect_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            hosts_dir: None,
            credentials: Credentials::none(),
            retries: 3,
            max_retry_wait: Duration::from_secs(10),
            max_manifest_size: MAX_MANIFEST_SIZE,
            connect_timeout: Duration::from_secs(30),
            user_agent: concat!("wharf/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// A piece of a blob download, for the writer that stores it.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    /// The registry ignored the Range request: drop what was written and start over.
    Reset,
}

pub(crate) struct Host {
    pub(crate) config: RegistryHost,
    http: reqwest::Client,
}

/// One request as [`RepoClient::send`] makes it (again, on retries).
pub(crate) struct Call<'a> {
    pub method: Method,
    pub url: &'a str,
    pub headers: &'a HeaderMap,
    pub payload: &'a Payload,
    /// The auth scope it needs.
    pub scope: &'a str,
    /// For error messages.
    pub what: &'a str,
}

/// A request body.
pub(crate) enum Payload {
    Empty,
    Bytes(Bytes),
    File(PathBuf),
}

/// The client of one repository (e.g. `docker.io/library/busybox`).
pub struct RepoClient {
    domain: String,
    repo: String,
    hosts: Vec<Host>,
    auth: Arc<Authorizer>,
    opts: ClientOptions,
}

fn read_pem(p: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| Error::io(format!("read {what} {}", p.display()), e))
}

fn http_client(h: &RegistryHost, opts: &ClientOptions) -> Result<reqwest::Client> {
    let bad = |e: reqwest::Error| {
        Error::InvalidArgument(format!("TLS setup for {}: {}", h.host, chain(&e)))
    };
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(opts.user_agent.clone())
        .connect_timeout(opts.connect_timeout)
        .redirect(reqwest::redirect::Policy::limited(10))
        .danger_accept_invalid_certs(h.skip_verify);
    for ca in &h.ca {
        let pem = read_pem(ca, "CA")?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(bad)? {
            b = b.add_root_certificate(cert);
        }
    }
    if let Some((cert, key)) = h.client.first() {
        let mut pem = read_pem(cert, "client certificate")?;
        if let Some(k) = key {
            pem.push(b'\n');
            pem.extend(read_pem(k, "client key")?);
        }
        b = b.identity(reqwest::Identity::from_pem(&pem).map_err(bad)?);
    }
    b.build().map_err(bad)
}

/// Reads a whole response body, refusing more than `limit` bytes.
pub async fn read_limited(mut resp: Response, limit: u64, what: &str) -> Result<Vec<u8>> {
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(too_big(what, len, limit));
        }
    }
    let mut out = Vec::new();
    while let Some(c) = resp
        .chunk()
        .await
        .map_err(|e| Error::Unavailable(format!("{what}: reading the response: {}", chain(&e))))?
    {
        if (out.len() + c.len()) as u64 > limit {
            return Err(too_big(what, (out.len() + c.len()) as u64, limit));
        }
        out.extend_from_slice(&c);
    }
    Ok(out)
}

fn too_big(what: &str, len: u64, limit: u64) -> Error {
    Error::FailedPrecondition(format!(
        "{what} is at least {len} bytes, larger than the {limit} byte limit"
    ))
}

/// A response's Retry-After, if any.
fn retry_after(resp: &Response) -> Option<Duration> {
    parse_retry_after(resp.headers().get("retry-after")?.to_str().ok()?)
}

/// Retry-After is seconds or an HTTP date (a date in the past means now).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let t = httpdate::parse_http_date(v).ok()?;
    Some(
        t.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// The registry's error message from a JSON error body, when it sent one.
async fn error_detail(resp: Response) -> String {
    match read_limited(resp, 64 << 10, "error body").await {
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            let text = text.trim();
            if text.is_empty() {
                String::new()
            } else {
                format!(": {}", text.chars().take(300).collect::<String>())
            }
        }
        Err(_) => String::new(),
    }
}

fn media_type_of(resp: &Response) -> Option<String> {
    let v = resp.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or(v).trim().to_string())
}

fn schema1_error(what: &str) -> Error {
    Error::NotImplemented(format!(
        "{what} is a Docker schema 1 manifest, which wharf does not pull \
         (deprecated and insecure; push the image again with a current client)"
    ))
}

/// The media type a manifest body declares, for registries that do not send a Content-Type.
fn sniff_media_type(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    let p: Probe = serde_json::from_slice(body).ok()?;
    if p.schema_version == Some(1) {
        return Some(images::MEDIA_DOCKER_SCHEMA1.to_string());
    }
    if let Some(m) = p.media_type {
        return Some(m);
    }
    if p.manifests.is_some() {
        Some(images::MEDIA_OCI_INDEX.to_string())
    } else if p.config.is_some() {
        Some(images::MEDIA_OCI_MANIFEST.to_string())
    } else {
        None
    }
}

#[derive(Clone, Copy)]
enum Cap {
    Pull,
    Resolve,
}

impl RepoClient {
    /// A client for the repository of `reference`, with its hosts from `opts.hosts_dir`.
    pub fn new(reference: &Reference, opts: &ClientOptions) -> Result<Self> {
        let configs = hosts::hosts_for(opts.hosts_dir.as_deref(), reference.domain())?;
        let hosts = configs
            .into_iter()
            .map(|c| {
                Ok(Host {
                    http: http_client(&c, opts)?,
                    config: c,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Each host gets its own credentials; the upstream server also those of the registry's
        // name (docker.io's are stored under its name, not registry-1.docker.io).
        let upstream = hosts::default_host(reference.domain()).host;
        let mut credentials = std::collections::HashMap::new();
        for h in &hosts {
            let name = h.config.host.as_str();
            let mut c = opts.credentials.lookup(name)?;
            if c.is_none() && (name == upstream || name == reference.domain()) {
                c = opts.credentials.lookup(reference.domain())?;
            }
            if let Some(c) = c {
                credentials.insert(name.to_string(), c);
            }
        }
        Ok(RepoClient {
            domain: reference.domain().to_string(),
            repo: reference.path().to_string(),
            hosts,
            auth: Arc::new(Authorizer::new(credentials)),
            opts: opts.clone(),
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn repository(&self) -> &str {
        &self.repo
    }

    pub(crate) fn scope(&self) -> String {
        format!("repository:{}:pull", self.repo)
    }

    pub(crate) fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repo)
    }

    fn backoff(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        let exp = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(10)));
        hint.unwrap_or(exp).min(self.opts.max_retry_wait)
    }

    /// Sends one request to one host: authorises, retries on 429/5xx and network errors,
    /// re-authenticates once on 401. Returns any other response for the caller to judge.
    pub(crate) async fn send(&self, host: &Host, call: Call<'_>) -> Result<Response> {
        let Call {
            method,
            url,
            headers,
            payload,
            scope,
            what,
        } = call;
        let mut attempt = 0u32;
        let mut reauthenticated = false;
        loop {
            let mut req = host
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            for (k, v) in &host.config.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            // Bodies are made anew for every attempt (a stream cannot be replayed).
            match payload {
                Payload::Empty => {}
                Payload::Bytes(b) => req = req.body(b.clone()),
                Payload::File(p) => {
                    let f = tokio::fs::File::open(p)
                        .await
                        .map_err(|e| Error::io(format!("{what}: open {}", p.display()), e))?;
                    req = req.body(reqwest::Body::from(f));
                }
            }
            let auth = self
                .auth
                .header(&host.http, &host.config.host, scope)
                .await
                .map_err(|e| e.context(what))?;
            let sent_basic = auth.as_deref().is_some_and(|a| a.starts_with("Basic "));
            if let Some(a) = auth {
                let v = HeaderValue::from_str(&a)
                    .map_err(|_| Error::Internal(format!("{what}: bad Authorization value")))?;
                req = req.header(AUTHORIZATION, v);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if e.is_redirect() => {
                    return Err(Error::Unavailable(format!(
                        "{what}: too many redirects: {e}"
                    )))
                }
                Err(e) if attempt < self.opts.retries => {
                    tracing::debug!(url, error = %e, attempt, "registry request failed, retrying");
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(Error::Unavailable(format!("{what}: {}", chain(&e)))),
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED {
                let challenges: Vec<String> = resp
                    .headers()
                    .get_all(reqwest::header::WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect();
                let retry = !reauthenticated
                    && self
                        .auth
                        .challenged(&host.config.host, &challenges, scope, sent_basic)
                        .map_err(|e| e.context(what))?;
                if retry {
                    reauthenticated = true;
                    continue;
                }
                let why = if self.auth.has_credential(&host.config.host) {
                    "the registry refused the credentials"
                } else {
                    "the registry requires credentials and none are configured"
                };
                return Err(Error::Unauthenticated(format!("{what}: {why}")));
            }
            if (status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error())
                && attempt < self.opts.retries
            {
                let wait = self.backoff(attempt, retry_after(&resp));
                tracing::debug!(url, %status, ?wait, attempt, "registry busy, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
                continue;
            }
            return Ok(resp);
        }
    }

    /// Turns a non-success status into an error of the matching kind.
    pub(crate) async fn status_error(resp: Response, what: &str) -> Error {
        let status = resp.status();
        let detail = error_detail(resp).await;
        match status {
            StatusCode::NOT_FOUND => Error::NotFound(what.to_string()),
            StatusCode::FORBIDDEN => Error::PermissionDenied(format!("{what}{detail}")),
            StatusCode::TOO_MANY_REQUESTS => {
                Error::Unavailable(format!("{what}: HTTP {status} after retries{detail}"))
            }
            s if s.is_server_error() => {
                Error::Unavailable(format!("{what}: HTTP {status} after retries{detail}"))
            }
            s => Error::FailedPrecondition(format!("{what}: unexpected HTTP {s}{detail}")),
        }
    }

    /// The first host that may be pushed to.
    pub(crate) fn push_host(&self) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.config.capabilities.push)
            .ok_or_else(|| {
                Error::FailedPrecondition(format!(
                    "no host of {} is configured for push",
                    self.domain
                ))
            })
    }

    /// Sends to each host with `cap` in turn until one answers with success; the last error
    /// otherwise (a mirror's failure falls back to the next host).
    async fn first_success(
        &self,
        cap: Cap,
        method: Method,
        path: &str,
        headers: &HeaderMap,
        what: &str,
    ) -> Result<Response> {
        let mut last = None;
        for host in &self.hosts {
            let c = host.config.capabilities;
            let allowed = match cap {
                Cap::Pull => c.pull,
                Cap::Resolve => c.resolve,
            };
            if !allowed {
                continue;
            }
            let url = host.config.url(path);
            let scope = self.scope();
            let call = Call {
                method: method.clone(),
                url: &url,
                headers,
                payload: &Payload::Empty,
                scope: &scope,
                what,
            };
            let r = self.send(host, call).await;
            match r {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => last = Some(Self::status_error(resp, what).await),
                Err(e) => last = Some(e),
            }
            if let Some(e) = &last {
                tracing::debug!(host = %host.config.host, error = %e, "registry host failed");
            }
        }
        Err(last.unwrap_or_else(|| {
            Error::FailedPrecondition(format!("{what}: no registry host may be used for this"))
        }))
    }

    /// Resolves `reference` (its digest or tag) to the descriptor of its manifest or index.
    pub async fn resolve(&self, reference: &Reference) -> Result<Descriptor> {
        let object = reference.object();
        let what = format!("resolve {reference}");
        let path = format!("/{}/manifests/{object}", self.repo);
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let head = self
            .first_success(Cap::Resolve, Method::HEAD, &path, &headers, &what)
            .await;
        if let Ok(resp) = &head {
            let media_type = media_type_of(resp);
            if let Some(mt) = &media_type {
                if SCHEMA1_TYPES.contains(&mt.as_str()) {
                    return Err(schema1_error(&reference.to_string()));
                }
            }
            let digest = match reference.digest() {
                Some(d) => Some(d.clone()),
                None => resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| Digest::parse(v).ok()),
            };
            let known = media_type
                .as_deref()
                .is_some_and(|m| images::is_index(m) || images::is_manifest(m));
            // Not content_length(): for a HEAD that is the (empty) body's length.
            let size = resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let (Some(d), true, Some(size)) = (digest, known, size) {
                return Ok(Descriptor {
                    media_type: media_type.unwrap_or_default(),
                    digest: d.to_string(),
                    size: size as i64,
                    ..Default::default()
                });
            }
        } else if let Err(e) = head {
            // HEAD is an optimisation, except where GET cannot do better.
            if matches!(
                e.kind(),
                crate::Kind::Unauthenticated | crate::Kind::PermissionDenied
            ) {
                return Err(e);
            }
        }
        // The HEAD said too little (or failed): GET the manifest and look at it.
        let resp = self
            .first_success(Cap::Resolve, Method::GET, &path, &headers, &what)
            .await?;
        let header_type = media_type_of(&resp);
        let body = read_limited(
            resp,
            self.opts.max_manifest_size,
            &format!("manifest {reference}"),
        )
        .await?;
        let digest = Digest::of(&body);
        if let Some(want) = reference.digest() {
            if want != &digest {
                return Err(Error::FailedPrecondition(format!(
                    "{what}: the registry sent content with digest {digest}"
                )));
            }
        }
        let media_type = header_type
            .filter(|m| {
                images::is_index(m) || images::is_manifest(m) || SCHEMA1_TYPES.contains(&m.as_str())
            })
            .or_else(|| sniff_media_type(&body))
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("{what}: the registry sent an unknown document"))
            })?;
        if SCHEMA1_TYPES.contains(&media_type.as_str()) {
            return Err(schema1_error(&reference.to_string()));
        }
        Ok(Descriptor {
            media_type,
            digest: digest.to_string(),
            size: body.len() as i64,
            ..Default::default()
        })
    }

    /// Fetches a small document (manifest, index or config) whole, checking its size against the
    /// limit and its bytes against the descriptor's digest.
    pub async fn fetch_small(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let digest = Digest::parse(&desc.digest)?;
        let is_manifest =
            images::is_index(&desc.media_type) || images::is_manifest(&desc.media_type);
        let what = if is_manifest {
            format!("manifest {digest} of {}/{}", self.domain, self.repo)
        } else {
            format!("blob {digest} of {}/{}", self.domain, self.repo)
        };
        let limit = self.opts.max_manifest_size;
        if desc.size < 0 || desc.size as u64 > limit {
            return Err(too_big(&what, desc.size.max(0) as u64, limit));
        }
        let (path, accept) = if is_manifest {
            (
                format!("/{}/manifests/{digest}", self.repo),
                MANIFEST_ACCEPT,
            )
        } else {
            (format!("/{}/blobs/{digest}", self.repo), "*/*")
        };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        let resp = self
            .first_success(Cap::Pull, Method::GET, &path, &headers, &what)
            .await?;
        let body = read_limited(resp, limit, &what).await?;
        verify(&what, &body, &digest, desc.size as u64)?;
        Ok(body)
    }

    /// Streams blob `desc` from byte `offset` into `tx`, resuming with Range requests when the
    /// connection breaks. The receiver stores and verifies the bytes; this side checks that the
    /// registry never sends more than the descriptor's size.
    pub async fn fetch_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
        tx: &mpsc::Sender<Chunk>,
    ) -> Result<()> {
        let digest = Digest::parse(&desc.digest)?;
        let size = u64::try_from(desc.size)
            .map_err(|_| Error::InvalidArgument(format!("blob {digest}: negative size")))?;
        let what = format!("blob {digest} of {}/{}", self.domain, self.repo);
        let path = format!("/{}/blobs/{digest}", self.repo);
        let send = |c: Chunk| async {
            tx.send(c)
                .await
                .map_err(|_| Error::Internal(format!("{what}: the content writer stopped")))
        };
        let mut offset = offset;
        if offset > size {
            send(Chunk::Reset).await?;
            offset = 0;
        }
        let mut breaks = 0u32;
        loop {
            if offset == size && size > 0 {
                return Ok(());
            }
            let mut headers = HeaderMap::new();
            headers.insert(ACCEPT, HeaderValue::from_static("*/*"));
            if offset > 0 {
                let v = HeaderValue::from_str(&format!("bytes={offset}-"))
                    .map_err(|_| Error::Internal("range header".into()))?;
                headers.insert(RANGE, v);
            }
            let mut resp = self
                .first_success(Cap::Pull, Method::GET, &path, &headers, &what)
                .await?;
            let resumed = resp.status() == StatusCode::PARTIAL_CONTENT
                && content_range_start(&resp) == Some(offset);
            if offset > 0 && !resumed {
                tracing::debug!(%digest, offset, "registry ignored Range, starting over");
                send(Chunk::Reset).await?;
                offset = 0;
            }
            let broke = loop {
                match resp.chunk().await {
                    Ok(Some(b)) => {
                        offset += b.len() as u64;
                        if offset > size {
                            return Err(Error::FailedPrecondition(format!(
                                "{what}: the registry sent more than the {size} bytes of the descriptor"
                            )));
                        }
                        send(Chunk::Data(b)).await?;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(chain(&e)),
                }
            };
            let why = match broke {
                None if offset == size => return Ok(()),
                None => format!("the response ended at byte {offset} of {size}"),
                Some(e) => e,
            };
            breaks += 1;
            if breaks > self.opts.retries {
                return Err(Error::Unavailable(format!(
                    "{what}: download broke {breaks} times, last at byte {offset}: {why}"
                )));
            }
            tracing::debug!(%digest, offset, error = %why, "blob download broke, resuming");
            tokio::time::sleep(self.backoff(breaks - 1, None)).await;
        }
    }
}

/// The first byte of a `Content-Range: bytes a-b/n` header.
fn content_range_start(resp: &Response) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}

/// Checks fetched bytes against the descriptor.
pub fn verify(what: &str, body: &[u8], digest: &Digest, size: u64) -> Result<()> {
    if body.len() as u64 != size {
        return Err(Error::FailedPrecondition(format!(
            "{what}: got {} bytes, the descriptor says {size}",
            body.len()
        )));
    }
    let got = Digest::of(body);
    if &got != digest {
        return Err(Error::FailedPrecondition(format!(
            "{what}: content has digest {got}, not the expected one (corrupt or tampered)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_and_refuses_schema1() {
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":1,"name":"x"}"#).as_deref(),
            Some(images::MEDIA_DOCKER_SCHEMA1)
        );
        assert_eq!(
            sniff_media_type(br#"{"schemaVersion":2,"manifests":[]}"#).as_deref(),
            Some(images::MEDIA_OCI_INDEX)
        );
        assert_eq!(sniff_media_type(b"not json"), None);
        assert!(schema1_error("r").to_string().contains("schema 1"));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        let d = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn verify_checks_size_and_digest() {
        let d = Digest::of(b"abc");
        assert!(verify("x", b"abc", &d, 3).is_ok());
        assert_eq!(
            verify("x", b"abd", &d, 3).unwrap_err().kind(),
            crate::Kind::FailedPrecondition
        );
        assert!(verify("x", b"abc", &d, 4).is_err());
    }
}
