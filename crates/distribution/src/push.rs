//! Push: an image record's index, manifests and blobs from the content store to a registry —
//! blobs first (skipped when the registry has them, mounted across repositories of the same
//! registry when their source label allows, else uploaded monolithically from the stored file),
//! then manifests children-first, the top one under the reference's tag.

use std::collections::BTreeSet;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use wharf_core::images::{self, Descriptor};
use wharf_core::metadata::{Db, Labels};
use wharf_core::Digest;

use crate::client::{Call, ClientOptions, Host, Payload, RepoClient};
use crate::pull::LABEL_DISTRIBUTION_SOURCE;
use crate::reference::Reference;
use crate::{Error, Result};

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    pub client: ClientOptions,
    /// Blobs uploaded at once.
    pub concurrency: usize,
    /// Upload blobs larger than this in PATCH chunks of this size (None: one PUT per blob).
    pub chunk_size: Option<u64>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            client: ClientOptions::default(),
            concurrency: 3,
            chunk_size: None,
        }
    }
}

/// Pushes image `image` of namespace `ns` as `reference`; returns the pushed target.
pub async fn push(
    db: &Db,
    ns: &str,
    image: &str,
    reference: &str,
    opts: &PushOptions,
) -> Result<Descriptor> {
    let r = Reference::parse(reference)?;
    let what = format!("push {image} to {r}");
    push_inner(db, ns, image, &r, opts)
        .await
        .map_err(|e| e.context(&what))
}

/// What to upload: blobs, and manifests in the order to put them (children first).
struct Plan {
    blobs: Vec<Descriptor>,
    manifests: Vec<(Descriptor, Vec<u8>)>,
}

fn read_doc(db: &Db, ns: &str, d: &Digest) -> Result<Vec<u8>> {
    db.content_info(ns, d)?;
    Ok(db.content_store().read_at(d, 0, 0)?)
}

fn plan(db: &Db, ns: &str, target: &Descriptor) -> Result<Plan> {
    let mut blobs = Vec::new();
    let mut seen = BTreeSet::new();
    let mut manifests = Vec::new();
    let mut add_manifest =
        |desc: &Descriptor, manifests: &mut Vec<(Descriptor, Vec<u8>)>| -> Result<()> {
            let d = Digest::parse(&desc.digest)?;
            let bytes = read_doc(db, ns, &d)?;
            let m = images::parse_manifest(&bytes)?;
            for b in std::iter::once(&m.config).chain(m.layers.iter()) {
                let bd = Digest::parse(&b.digest)?;
                db.content_info(ns, &bd)
                    .map_err(|_| Error::NotFound(format!("content {bd} needed by manifest {d}")))?;
                if seen.insert(bd) {
                    blobs.push(b.clone());
                }
            }
            manifests.push((desc.clone(), bytes));
            Ok(())
        };
    if images::is_index(&target.media_type) {
        let d = Digest::parse(&target.digest)?;
        let bytes = read_doc(db, ns, &d)?;
        let index = images::parse_index(&bytes)?;
        for child in &index.manifests {
            let cd = Digest::parse(&child.digest)?;
            if !images::is_manifest(&child.media_type) || db.content_info(ns, &cd).is_err() {
                // Platforms that were never pulled are left out, as the registry may have them.
                tracing::debug!(digest = %cd, "index entry not in the store, not pushed");
                continue;
            }
            add_manifest(child, &mut manifests)?;
        }
        if manifests.is_empty() {
            return Err(Error::NotFound(format!(
                "none of the manifests of index {d} is in the store"
            )));
        }
        manifests.push((target.clone(), bytes));
    } else if images::is_manifest(&target.media_type) {
        add_manifest(target, &mut manifests)?;
    } else {
        return Err(Error::InvalidArgument(format!(
            "cannot push media type {:?}",
            target.media_type
        )));
    }
    Ok(Plan { blobs, manifests })
}

async fn push_inner(
    db: &Db,
    ns: &str,
    image: &str,
    r: &Reference,
    opts: &PushOptions,
) -> Result<Descriptor> {
    let rec = db.image_get(ns, image)?;
    let target = Descriptor {
        media_type: rec.target.media_type.clone(),
        digest: rec.target.digest.clone(),
        size: rec.target.size,
        ..Default::default()
    };
    let (db2, ns2, t2) = (db.clone(), ns.to_string(), target.clone());
    let plan = tokio::task::spawn_blocking(move || plan(&db2, &ns2, &t2))
        .await
        .map_err(|e| Error::Internal(format!("plan task: {e}")))??;
    let client = RepoClient::new(r, &opts.client)?;
    let host = client.push_host()?;
    let pusher = Pusher {
        db,
        ns,
        client: &client,
        host,
        chunk_size: opts.chunk_size.filter(|c| *c > 0),
    };
    // Owned descriptors keep the push future Send for callers such as tonic handlers (a stream
    // of futures borrowing them trips rustc's higher-ranked lifetime check).
    let pusher = &pusher;
    futures::stream::iter(
        plan.blobs
            .iter()
            .cloned()
            .map(|b| async move { pusher.blob(&b).await }),
    )
    .buffer_unordered(opts.concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    let n = plan.manifests.len();
    for (i, (desc, bytes)) in plan.manifests.iter().enumerate() {
        // Children by digest; the top one by the reference's tag (or digest).
        let object = if i + 1 == n {
            r.object()
        } else {
            desc.digest.clone()
        };
        pusher.manifest(desc, bytes, &object).await?;
    }
    Ok(target)
}

struct Pusher<'a> {
    db: &'a Db,
    ns: &'a str,
    client: &'a RepoClient,
    host: &'a Host,
    chunk_size: Option<u64>,
}

impl Pusher<'_> {
    fn repo(&self) -> &str {
        self.client.repository()
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &HeaderMap,
        payload: &Payload,
        what: &str,
    ) -> Result<reqwest::Response> {
        let scope = self.client.push_scope();
        let call = Call {
            method,
            url,
            headers,
            payload,
            scope: &scope,
            what,
        };
        self.client.send(self.host, call).await
    }

    /// An upload URL from a Location header (absolute, or relative to the host).
    fn location(&self, resp: &reqwest::Response, what: &str) -> Result<String> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("{what}: the registry sent no upload location"))
            })?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Ok(loc.to_string())
        } else {
            Ok(format!(
                "{}://{}{loc}",
                self.host.config.scheme, self.host.config.host
            ))
        }
    }

    /// Another repository of this registry the blob came from, to mount it from.
    fn mount_source(&self, d: &Digest) -> Option<String> {
        let info = self.db.content_info(self.ns, d).ok()?;
        let key = format!("{LABEL_DISTRIBUTION_SOURCE}.{}", self.client.domain());
        info.labels
            .get(&key)?
            .split(',')
            .find(|r| !r.is_empty() && *r != self.repo())
            .map(str::to_string)
    }

    async fn blob(&self, desc: &Descriptor) -> Result<()> {
        let d = Digest::parse(&desc.digest)?;
        let what = format!("blob {d}");
        let url = self.host.config.url(&format!("/{}/blobs/{d}", self.repo()));
        let head = self
            .send(
                Method::HEAD,
                &url,
                &HeaderMap::new(),
                &Payload::Empty,
                &what,
            )
            .await?;
        if head.status().is_success() {
            return Ok(());
        }
        let uploads = self
            .host
            .config
            .url(&format!("/{}/blobs/uploads/", self.repo()));
        let start = match self.mount_source(&d) {
            Some(from) => format!("{uploads}?mount={d}&from={from}"),
            None => uploads,
        };
        let resp = self
            .send(
                Method::POST,
                &start,
                &HeaderMap::new(),
                &Payload::Empty,
                &what,
            )
            .await?;
        match resp.status() {
            StatusCode::CREATED => return self.label(&d),
            StatusCode::ACCEPTED => {}
            _ => {
                return Err(RepoClient::status_error(resp, &format!("{what}: start upload")).await)
            }
        }
        let mut loc = self.location(&resp, &what)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let path = self.db.content_store().blob_path(&d);
        let size = u64::try_from(desc.size).unwrap_or(0);
        let payload = match self.chunk_size {
            Some(chunk) if size > chunk => {
                loc = self.upload_chunks(&path, size, chunk, loc, &what).await?;
                Payload::Empty
            }
            _ => {
                // A streamed file has no length of its own; registries want it (no chunking).
                headers.insert(reqwest::header::CONTENT_LENGTH, HeaderValue::from(size));
                Payload::File(path)
            }
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let resp = self
            .send(
                Method::PUT,
                &format!("{loc}{sep}digest={d}"),
                &headers,
                &payload,
                &what,
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(RepoClient::status_error(resp, &format!("{what}: upload")).await);
        }
        self.label(&d)
    }

    /// Sends the blob in PATCH requests of `chunk` bytes; returns the location to finish at.
    async fn upload_chunks(
        &self,
        path: &std::path::Path,
        size: u64,
        chunk: u64,
        mut loc: String,
        what: &str,
    ) -> Result<String> {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(format!("{what}: open {}", path.display()), e))?;
        let mut offset = 0u64;
        while offset < size {
            let n = chunk.min(size - offset);
            let mut buf = vec![0u8; n as usize];
            f.read_exact(&mut buf)
                .await
                .map_err(|e| Error::io(format!("{what}: read {}", path.display()), e))?;
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            let range = HeaderValue::from_str(&format!("{offset}-{}", offset + n - 1))
                .map_err(|_| Error::Internal("content range".into()))?;
            headers.insert(reqwest::header::CONTENT_RANGE, range);
            let resp = self
                .send(
                    Method::PATCH,
                    &loc,
                    &headers,
                    &Payload::Bytes(Bytes::from(buf)),
                    what,
                )
                .await?;
            if resp.status() != StatusCode::ACCEPTED {
                let at = format!("{what}: chunk at {offset}");
                return Err(RepoClient::status_error(resp, &at).await);
            }
            loc = self.location(&resp, what)?;
            offset += n;
        }
        Ok(loc)
    }

    /// Records that the blob is now in the target repository too (enables later mounts).
    fn label(&self, d: &Digest) -> Result<()> {
        let key = format!("{LABEL_DISTRIBUTION_SOURCE}.{}", self.client.domain());
        let info = self.db.content_info(self.ns, d)?;
        let value = match info.labels.get(&key) {
            Some(cur) if cur.split(',').any(|r| r == self.repo()) => return Ok(()),
            Some(cur) if !cur.is_empty() => format!("{cur},{}", self.repo()),
            _ => self.repo().to_string(),
        };
        let labels = Labels::from([(key.clone(), value)]);
        self.db
            .content_update(self.ns, d, &labels, &[format!("labels.{key}")])?;
        Ok(())
    }

    async fn manifest(&self, desc: &Descriptor, bytes: &[u8], object: &str) -> Result<()> {
        let what = format!("manifest {} as {object}", desc.digest);
        let url = self
            .host
            .config
            .url(&format!("/{}/manifests/{object}", self.repo()));
        let mut headers = HeaderMap::new();
        let ct = HeaderValue::from_str(&desc.media_type)
            .map_err(|_| Error::InvalidArgument(format!("{what}: bad media type")))?;
        headers.insert(CONTENT_TYPE, ct);
        let resp = self
            .send(
                Method::PUT,
                &url,
                &headers,
                &Payload::Bytes(Bytes::copy_from_slice(bytes)),
                &what,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(RepoClient::status_error(resp, &what).await);
        }
        if let Some(got) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if got != desc.digest {
                return Err(Error::FailedPrecondition(format!(
                    "{what}: the registry stored it as {got}"
                )));
            }
        }
        Ok(())
    }
}
