//! CRI's view of the image store: the image records of the `k8s.io` namespace grouped by image
//! ID (the config digest), as containerd's CRI plugin sees them, and the operations kubelet
//! makes on them (resolve, pull, remove, filesystem usage).
//!
//! Pulled images are recorded the way containerd's CRI records them, so `ctr -n k8s.io images
//! ls` shows the same three kinds of names: the reference (`docker.io/library/busybox:latest`),
//! its repo digest (`docker.io/library/busybox@sha256:<target>`) and the ID
//! (`sha256:<config>`), all labelled `io.cri-containerd.image=managed`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use wharf_core::filters::Filter;
use wharf_core::images::{self, unpack::resolve_manifest, ImageConfig, Platform};
use wharf_core::metadata::{self, Labels};
use wharf_core::Digest;
use wharf_distribution::auth::{Credential, Credentials};
use wharf_distribution::client::ClientOptions;
use wharf_distribution::pull::{PullOptions, Unpack};
use wharf_distribution::Reference;

use crate::{Cri, Error, Result, NAMESPACE};

/// containerd's label marking images the CRI plugin manages.
pub const LABEL_IMAGE_MANAGED: &str = "io.cri-containerd.image";
/// containerd's label marking images kubelet's image GC must keep (the sandbox image).
pub const LABEL_IMAGE_PINNED: &str = "io.cri-containerd.pinned";

/// How long a measured filesystem usage is answered again (when no image changed meanwhile).
const FS_USAGE_TTL: Duration = Duration::from_secs(5);

/// One image as CRI sees it: every record whose target leads to the same config.
#[derive(Debug, Clone)]
pub struct CriImage {
    /// The config digest, `sha256:...`.
    pub id: String,
    /// The names of the records (tags, repo digests, the ID), sorted.
    pub references: Vec<String>,
    pub target: metadata::Descriptor,
    pub manifest: Digest,
    pub config: ImageConfig,
    /// The bytes of the image for this platform: index, manifest, config and layers, compressed.
    pub size: u64,
    /// The chain ID of the top layer (its snapshot's key when unpacked).
    pub chain_id: Option<Digest>,
    pub pinned: bool,
}

impl CriImage {
    /// The references that are `name:tag`.
    pub fn repo_tags(&self) -> Vec<String> {
        self.references
            .iter()
            .filter_map(|r| parse_name(r))
            .filter(|r| r.digest().is_none() && r.tag().is_some())
            .map(|r| r.to_string())
            .collect()
    }

    /// The references that are `name@digest`.
    pub fn repo_digests(&self) -> Vec<String> {
        self.references
            .iter()
            .filter_map(|r| parse_name(r))
            .filter_map(|r| r.digest().map(|d| format!("{}@{d}", r.name())))
            .collect()
    }

    /// The image's user, as containerd reads it: a numeric uid or a user name (no group).
    pub fn user(&self) -> (Option<i64>, String) {
        let user = self
            .config
            .config
            .as_ref()
            .and_then(|c| c.get("User"))
            .and_then(|u| u.as_str())
            .unwrap_or("");
        let user = user.split(':').next().unwrap_or("");
        if user.is_empty() {
            return (None, String::new());
        }
        match user.parse::<i64>() {
            Ok(uid) => (Some(uid), String::new()),
            Err(_) => (None, user.to_string()),
        }
    }
}

/// A record name that is a reference (not an ID), parsed.
fn parse_name(name: &str) -> Option<Reference> {
    if Digest::parse(name).is_ok() {
        return None;
    }
    Reference::parse(name)
        .ok()
        .filter(|r| r.to_string() == name)
}

/// The name an image reference is recorded under: containerd's `ParseDockerRef` (default
/// domain, `library/`, `:latest`; a tag next to a digest is dropped).
pub fn normalize(reference: &str) -> Result<String> {
    let r = Reference::parse(reference).map_err(|e| {
        Error::InvalidArgument(format!(
            "failed to parse image reference {reference:?}: {e}"
        ))
    })?;
    Ok(match r.digest() {
        Some(d) => format!("{}@{d}", r.name()),
        None => r.to_string(),
    })
}

/// Disk usage of the filesystem holding the snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsUsage {
    /// When it was measured, in nanoseconds since the epoch.
    pub timestamp: i64,
    /// The snapshotter's directory.
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
}

/// A measurement and the image generation it was made at.
pub(crate) struct FsUsageCache {
    at: Instant,
    generation: u64,
    usage: FsUsage,
}

/// What one image record's target leads to.
struct Loaded {
    id: String,
    manifest: Digest,
    config: ImageConfig,
    size: u64,
    chain_id: Option<Digest>,
}

impl Cri {
    /// Marks that images changed (a cached filesystem usage is measured again).
    pub(crate) fn images_changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn load(&self, target: &metadata::Descriptor) -> Result<Loaded> {
        let db = &self.db;
        let manifest = resolve_manifest(db, NAMESPACE, target, &Platform::host())?;
        let mut size = u64::try_from(target.size).unwrap_or(0);
        if manifest.to_string() != target.digest {
            size += db.content_info(NAMESPACE, &manifest)?.size;
        }
        db.content_info(NAMESPACE, &manifest)?;
        let m = images::parse_manifest(&db.content_store().read_at(&manifest, 0, 0)?)?;
        let config_d = Digest::parse(&m.config.digest)?;
        db.content_info(NAMESPACE, &config_d)?;
        let config = images::parse_config(&db.content_store().read_at(&config_d, 0, 0)?)?;
        size += u64::try_from(m.config.size).unwrap_or(0);
        size += m
            .layers
            .iter()
            .map(|l| u64::try_from(l.size).unwrap_or(0))
            .sum::<u64>();
        let diff_ids = config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| Digest::parse(d))
            .collect::<wharf_core::Result<Vec<_>>>()?;
        Ok(Loaded {
            id: config_d.to_string(),
            manifest,
            config,
            size,
            chain_id: images::chain_ids(&diff_ids).pop(),
        })
    }

    /// Every image of the namespace, by ID. Records whose content is missing (an image created
    /// through the Images API without its blobs, say) are left out, as containerd's CRI does.
    pub fn list_images(&self) -> Result<Vec<CriImage>> {
        let records = self.db.image_list(NAMESPACE, &Filter::default())?;
        let mut by_target: HashMap<String, Option<Loaded>> = HashMap::new();
        let mut out: BTreeMap<String, CriImage> = BTreeMap::new();
        for rec in records {
            let loaded = by_target
                .entry(rec.target.digest.clone())
                .or_insert_with(|| match self.load(&rec.target) {
                    Ok(l) => Some(l),
                    Err(e) => {
                        tracing::debug!(image = %rec.name, error = %e, "cri: image left out of the list");
                        None
                    }
                });
            let Some(l) = loaded else { continue };
            let pinned = rec.labels.get(LABEL_IMAGE_PINNED).map(String::as_str) == Some("pinned");
            let img = out.entry(l.id.clone()).or_insert_with(|| CriImage {
                id: l.id.clone(),
                references: Vec::new(),
                target: rec.target.clone(),
                manifest: l.manifest.clone(),
                config: l.config.clone(),
                size: l.size,
                chain_id: l.chain_id.clone(),
                pinned: false,
            });
            img.pinned |= pinned;
            img.references.push(rec.name);
        }
        Ok(out
            .into_values()
            .map(|mut i| {
                i.references.sort();
                i
            })
            .collect())
    }

    /// The image an ID, an ID prefix or a reference names, as containerd's CRI resolves them.
    pub fn resolve_image(&self, ref_or_id: &str) -> Result<Option<CriImage>> {
        if ref_or_id.is_empty() {
            return Ok(None);
        }
        let images = self.list_images()?;
        if Digest::parse(ref_or_id).is_ok() {
            return Ok(images.into_iter().find(|i| i.id == ref_or_id));
        }
        if let Ok(name) = normalize(ref_or_id) {
            if let Some(i) = images.iter().find(|i| i.references.contains(&name)) {
                return Ok(Some(i.clone()));
            }
        }
        // A truncated ID, as `crictl images` prints them.
        let hex = ref_or_id.strip_prefix("sha256:").unwrap_or(ref_or_id);
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let mut found = images
            .into_iter()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex));
        match (found.next(), found.next()) {
            (Some(i), None) => Ok(Some(i)),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "image ID prefix {ref_or_id:?} is ambiguous"
            ))),
            _ => Ok(None),
        }
    }

    /// Pulls `reference` (with `credential` for its registry, if any), unpacks it into the
    /// snapshotter and records its names; returns the image ID.
    pub async fn pull_image(
        &self,
        reference: &str,
        credential: Option<Credential>,
    ) -> Result<String> {
        self.pull_labelled(reference, credential, Labels::new())
            .await
    }

    pub(crate) async fn pull_labelled(
        &self,
        reference: &str,
        credential: Option<Credential>,
        extra_labels: Labels,
    ) -> Result<String> {
        let name = normalize(reference)?;
        let r = Reference::parse(&name)
            .map_err(|e| Error::InvalidArgument(format!("image reference {name:?}: {e}")))?;
        let mut credentials = Credentials::from_docker_env();
        if let Some(c) = credential {
            credentials = credentials.insert_credential(r.domain(), c);
        }
        let mut labels = Labels::from([(LABEL_IMAGE_MANAGED.to_string(), "managed".to_string())]);
        labels.extend(extra_labels);
        let opts = PullOptions {
            client: ClientOptions {
                hosts_dir: Some(self.registry_config_path.clone()),
                credentials,
                ..Default::default()
            },
            concurrency: self.config.max_concurrent_downloads.max(1),
            unpack: Some(Unpack {
                snapshotter: self.snapshotter.clone(),
                tmp: self.tmp.clone(),
            }),
            labels: labels.clone(),
            ..Default::default()
        };
        let existed = self.db.image_get(NAMESPACE, &name).is_ok();
        let started = Instant::now();
        let pulled = wharf_distribution::pull::pull(&self.db, NAMESPACE, &name, &opts)
            .await
            .map_err(|e| {
                Error::from(e).context(format!("failed to pull and unpack image {name:?}"))
            });
        self.images_changed();
        let pulled = pulled?;
        if existed {
            self.hooks.image_updated(NAMESPACE, &pulled.image);
        } else {
            self.hooks.image_created(NAMESPACE, &pulled.image);
        }
        let id = pulled.config.to_string();
        let repo_digest = format!("{}@{}", r.name(), pulled.image.target.digest);
        for extra in [repo_digest, id.clone()] {
            if extra != name {
                self.record(&extra, &pulled.image.target, &labels)?;
            }
        }
        tracing::info!(
            reference = %name,
            id = %id,
            manifest = %pulled.manifest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "cri: pulled image"
        );
        Ok(id)
    }

    /// Creates the record `name` -> `target`, or points an existing one there with `labels`.
    pub(crate) fn record(
        &self,
        name: &str,
        target: &metadata::Descriptor,
        labels: &Labels,
    ) -> Result<()> {
        let now = SystemTime::now();
        let img = metadata::Image {
            name: name.to_string(),
            labels: labels.clone(),
            target: target.clone(),
            created_at: now,
            updated_at: now,
        };
        match self.db.image_create(NAMESPACE, img.clone()) {
            Ok(i) => self.hooks.image_created(NAMESPACE, &i),
            Err(wharf_core::Error::AlreadyExists(_)) => {
                let mut paths = vec!["target".to_string()];
                paths.extend(labels.keys().map(|k| format!("labels.{k}")));
                let i = self.db.image_update(NAMESPACE, &img, &paths)?;
                self.hooks.image_updated(NAMESPACE, &i);
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Removes every name of the image `ref_or_id` resolves to; an image that is not there is
    /// not an error (kubelet retries removals).
    pub fn remove_image(&self, ref_or_id: &str) -> Result<()> {
        let Some(img) = self.resolve_image(ref_or_id)? else {
            return Ok(());
        };
        for name in &img.references {
            match self.db.image_delete(NAMESPACE, name) {
                Ok(()) => self.hooks.image_deleted(NAMESPACE, name),
                Err(wharf_core::Error::NotFound(_)) => {}
                Err(e) => {
                    return Err(Error::from(e).context(format!("remove image {:?}", img.id)));
                }
            }
        }
        self.images_changed();
        self.hooks.collect_garbage();
        tracing::info!(id = %img.id, names = ?img.references, "cri: removed image");
        Ok(())
    }

    /// Usage of the snapshotter's directory: measured again when images changed or after a
    /// few seconds (kubelet asks every 10 s or so; a walk of a big store is not free).
    pub async fn image_fs_usage(&self) -> Result<FsUsage> {
        let generation = self.generation.load(Ordering::Relaxed);
        {
            let cached = self
                .fs_usage
                .lock()
                .map_err(|_| Error::Internal("fs usage lock poisoned".into()))?;
            if let Some(c) = cached.as_ref() {
                if c.generation == generation && c.at.elapsed() < FS_USAGE_TTL {
                    return Ok(c.usage.clone());
                }
            }
        }
        let root = self.snapshotter.root().to_path_buf();
        let dir = root.clone();
        let u = tokio::task::spawn_blocking(move || wharf_core::snapshots::disk_usage(&dir))
            .await
            .map_err(|e| Error::Internal(format!("disk usage task: {e}")))??;
        let usage = FsUsage {
            timestamp: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            mountpoint: root,
            used_bytes: u64::try_from(u.size).unwrap_or(0),
            inodes_used: u64::try_from(u.inodes).unwrap_or(0),
        };
        if let Ok(mut c) = self.fs_usage.lock() {
            *c = Some(FsUsageCache {
                at: Instant::now(),
                generation,
                usage: usage.clone(),
            });
        }
        Ok(usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_containerd() {
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize("127.0.0.1:5000/a/b:v1").unwrap(),
            "127.0.0.1:5000/a/b:v1"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize(&format!("busybox:1@{d}")).unwrap(),
            format!("docker.io/library/busybox@{d}")
        );
        assert!(normalize("bad::ref").is_err());
        assert!(normalize("library/UPPER").is_err());
    }

    #[test]
    fn tags_digests_and_user() {
        let d = format!("sha256:{}", "b".repeat(64));
        let img = CriImage {
            id: d.clone(),
            references: vec![
                d.clone(),
                format!("docker.io/library/busybox@{d}"),
                "docker.io/library/busybox:latest".into(),
            ],
            target: Default::default(),
            manifest: Digest::parse(&d).unwrap(),
            config: ImageConfig {
                config: Some(serde_json::json!({"User": "65535:65535"})),
                ..Default::default()
            },
            size: 1,
            chain_id: None,
            pinned: false,
        };
        assert_eq!(img.repo_tags(), vec!["docker.io/library/busybox:latest"]);
        assert_eq!(
            img.repo_digests(),
            vec![format!("docker.io/library/busybox@{d}")]
        );
        assert_eq!(img.user(), (Some(65535), String::new()));
        let named = CriImage {
            config: ImageConfig {
                config: Some(serde_json::json!({"User": "nobody"})),
                ..Default::default()
            },
            ..img
        };
        assert_eq!(named.user(), (None, "nobody".to_string()));
    }
}
