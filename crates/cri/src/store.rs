//! CRI's records: every pod sandbox and container is a container record in `k8s.io`, labelled
//! as containerd's CRI labels them, carrying CRI's own metadata (the request's config, network,
//! timestamps, exit) as JSON in one record extension, so a restarted wharfd knows them all.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use base64::Engine;
use prost::Message;
use serde::{Deserialize, Serialize};
use wharf_api::cri as pb;
use wharf_core::filters::Filter;
use wharf_core::metadata::{Container, Db, Payload};

use crate::{Cri, Error, Result, NAMESPACE};

pub const LABEL_KIND: &str = "io.cri-containerd.kind";
pub const KIND_SANDBOX: &str = "sandbox";
pub const KIND_CONTAINER: &str = "container";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// The reserved name (`name_namespace_uid_attempt`), unique among sandboxes or containers.
pub const LABEL_NAME: &str = "io.wharf.cri.name";
/// The extension holding [`SandboxMeta`] or [`ContainerMeta`].
pub const EXTENSION: &str = "io.wharf.cri.metadata";
const SANDBOX_TYPE: &str = "wharf.cri.v1.SandboxMetadata";
const CONTAINER_TYPE: &str = "wharf.cri.v1.ContainerMetadata";
pub const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The runtime every CRI task runs with.
pub const RUNTIME: &str = "io.containerd.wharf.v2";

/// What CRI keeps about a pod sandbox.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxMeta {
    /// The PodSandboxConfig, protobuf then base64.
    pub config: String,
    pub name: String,
    /// The pinned network namespace; empty with host networking.
    pub netns: String,
    pub ip: String,
    #[serde(default)]
    pub additional_ips: Vec<String>,
    /// The CNI network configuration used (JSON), for teardown.
    #[serde(default)]
    pub network: String,
    pub created_at: i64,
    /// Where /etc/hosts, /etc/hostname and /etc/resolv.conf of the pod are.
    pub etc_dir: String,
    #[serde(default)]
    pub runtime_handler: String,
    /// StopPodSandbox ran (the network is gone).
    #[serde(default)]
    pub stopped: bool,
    /// The pod's /dev/shm on the host, bound into each of its containers (crate::shm); empty
    /// for pods made before wharf shared it (their containers get a /dev/shm of their own).
    #[serde(default)]
    pub shm: String,
}

/// What CRI keeps about a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerMeta {
    /// The ContainerConfig, protobuf then base64.
    pub config: String,
    pub name: String,
    pub sandbox_id: String,
    /// Absolute path of the CRI log, empty when the pod logs nowhere.
    pub log_path: String,
    /// The image as the request named it.
    pub image_ref: String,
    pub image_id: String,
    /// The image's first tag (else the request's name), as ContainerStatus shows it.
    #[serde(default)]
    pub image_name: String,
    /// The image's first repo digest (else its ID): ContainerStatus's image_ref.
    #[serde(default)]
    pub repo_digest: String,
    pub created_at: i64,
    #[serde(default)]
    pub started_at: i64,
    #[serde(default)]
    pub finished_at: i64,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

pub fn encode_pb<M: Message>(m: &M) -> String {
    base64::engine::general_purpose::STANDARD.encode(m.encode_to_vec())
}

pub fn decode_pb<M: Message + Default>(s: &str) -> Result<M> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| Error::Internal(format!("stored CRI config: {e}")))?;
    M::decode(bytes.as_slice()).map_err(|e| Error::Internal(format!("stored CRI config: {e}")))
}

fn payload<T: Serialize>(type_url: &str, v: &T) -> Result<Payload> {
    Ok(Payload {
        type_url: type_url.to_string(),
        value: serde_json::to_vec(v).map_err(|e| Error::Internal(format!("metadata: {e}")))?,
    })
}

fn meta_of<T: for<'de> Deserialize<'de>>(c: &Container) -> Result<T> {
    let p = c
        .extensions
        .get(EXTENSION)
        .ok_or_else(|| Error::Internal(format!("record {} has no CRI metadata", c.id)))?;
    serde_json::from_slice(&p.value)
        .map_err(|e| Error::Internal(format!("record {} CRI metadata: {e}", c.id)))
}

/// A sandbox as stored.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub record: Container,
    pub meta: SandboxMeta,
    pub config: pb::PodSandboxConfig,
}

impl Sandbox {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Does a list filter (an ID prefix, a label selector; empty selects all) select it?
    pub fn selected(&self, id_prefix: &str, selector: &HashMap<String, String>) -> bool {
        self.id().starts_with(id_prefix) && selects(selector, &self.config.labels)
    }
    pub fn metadata(&self) -> pb::PodSandboxMetadata {
        self.config.metadata.clone().unwrap_or_default()
    }
    pub fn host_network(&self) -> bool {
        namespace_options(self.config.linux.as_ref()).network == pb::NamespaceMode::Node as i32
    }
}

/// The pod's namespace options (all POD when unset).
pub fn namespace_options(linux: Option<&pb::LinuxPodSandboxConfig>) -> pb::NamespaceOption {
    linux
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone())
        .unwrap_or_default()
}

/// A container as stored.
#[derive(Debug, Clone)]
pub struct CriContainer {
    pub record: Container,
    pub meta: ContainerMeta,
    pub config: pb::ContainerConfig,
}

impl CriContainer {
    pub fn id(&self) -> &str {
        &self.record.id
    }
}

/// A new random ID: 64 hex digits, as containerd's CRI makes them.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| Error::Internal(format!("read /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// containerd's sandbox name: `name_namespace_uid_attempt`.
pub fn sandbox_name(m: &pb::PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

/// containerd's container name: `name_pod_namespace_uid_attempt`.
pub fn container_name(c: &pb::ContainerMetadata, s: &pb::PodSandboxMetadata) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        c.name, s.name, s.namespace, s.uid, c.attempt
    )
}

/// The record's labels: containerd's CRI labels over the request's.
pub fn labels(
    user: &HashMap<String, String>,
    kind: &str,
    name: &str,
    pod: &pb::PodSandboxMetadata,
    container: Option<&str>,
) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> =
        user.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    l.insert(LABEL_KIND.into(), kind.into());
    l.insert(LABEL_NAME.into(), name.into());
    l.insert(LABEL_POD_NAME.into(), pod.name.clone());
    l.insert(LABEL_POD_NAMESPACE.into(), pod.namespace.clone());
    l.insert(LABEL_POD_UID.into(), pod.uid.clone());
    if let Some(c) = container {
        l.insert(LABEL_CONTAINER_NAME.into(), c.into());
    }
    l
}

/// A new record (snapshot key = id, in the CRI snapshotter).
pub fn record(
    id: &str,
    labels: BTreeMap<String, String>,
    image: &str,
    snapshotter: &str,
    sandbox: &str,
    spec: Vec<u8>,
) -> Container {
    Container {
        id: id.to_string(),
        labels,
        image: image.to_string(),
        runtime_name: RUNTIME.to_string(),
        runtime_options: None,
        spec: Some(Payload {
            type_url: SPEC_TYPE.into(),
            value: spec,
        }),
        snapshotter: snapshotter.to_string(),
        snapshot_key: id.to_string(),
        extensions: BTreeMap::new(),
        sandbox: sandbox.to_string(),
        created_at: SystemTime::now(),
        updated_at: SystemTime::now(),
    }
}

pub fn with_sandbox_meta(mut c: Container, m: &SandboxMeta) -> Result<Container> {
    c.extensions
        .insert(EXTENSION.into(), payload(SANDBOX_TYPE, m)?);
    Ok(c)
}

pub fn with_container_meta(mut c: Container, m: &ContainerMeta) -> Result<Container> {
    c.extensions
        .insert(EXTENSION.into(), payload(CONTAINER_TYPE, m)?);
    Ok(c)
}

/// A filter value in double quotes (containerd's filter syntax, Go-style escapes).
fn quote(v: &str) -> String {
    let mut s = String::from("\"");
    for ch in v.chars() {
        if ch == '"' || ch == '\\' {
            s.push('\\');
        }
        s.push(ch);
    }
    s.push('"');
    s
}

/// Decoded records of one kind and the generation of the containers table they were read at:
/// decoding (JSON, base64, protobuf) costs far more than listing, and records change rarely.
pub(crate) struct Cached<T> {
    slot: Mutex<Option<(u64, Arc<Vec<T>>)>>,
}

impl<T> Default for Cached<T> {
    fn default() -> Self {
        Cached {
            slot: Mutex::new(None),
        }
    }
}

impl<T> Cached<T> {
    fn get(&self, db: &Db, load: impl FnOnce() -> Result<Vec<T>>) -> Result<Arc<Vec<T>>> {
        // The generation is read before the records: a change committed meanwhile makes the
        // next call read again.
        let generation = db.containers_generation();
        if let Ok(slot) = self.slot.lock() {
            if let Some((g, v)) = slot.as_ref() {
                if *g == generation {
                    return Ok(v.clone());
                }
            }
        }
        let v = Arc::new(load()?);
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some((generation, v.clone()));
        }
        Ok(v)
    }
}

/// The decoded sandboxes and containers.
#[derive(Default)]
pub(crate) struct RecordsCache {
    sandboxes: Cached<Sandbox>,
    containers: Cached<CriContainer>,
}

fn kind_filter(kind: &str, extra: Option<(&str, &str)>) -> Result<Filter> {
    let mut f = format!("labels.\"{LABEL_KIND}\"=={kind}");
    if let Some((k, v)) = extra {
        f.push_str(&format!(",labels.\"{k}\"=={}", quote(v)));
    }
    Ok(Filter::parse(&[f])?)
}

impl Cri {
    fn records(&self, kind: &str, extra: Option<(&str, &str)>) -> Result<Vec<Container>> {
        Ok(self
            .db
            .container_list(NAMESPACE, &kind_filter(kind, extra)?)?)
    }

    /// Every sandbox, decoded once per change of the records (kubelet lists every second).
    pub(crate) fn sandboxes(&self) -> Result<Arc<Vec<Sandbox>>> {
        self.records_cache.sandboxes.get(&self.db, || {
            let mut out = Vec::new();
            for r in self.records(KIND_SANDBOX, None)? {
                match sandbox_of(r) {
                    Ok(s) => out.push(s),
                    Err(e) => tracing::warn!(error = %e, "cri: skipping a sandbox record"),
                }
            }
            Ok(out)
        })
    }

    /// Every container, decoded once per change of the records.
    pub(crate) fn containers(&self) -> Result<Arc<Vec<CriContainer>>> {
        self.records_cache.containers.get(&self.db, || {
            let mut out = Vec::new();
            for r in self.records(KIND_CONTAINER, None)? {
                match container_of(r) {
                    Ok(c) => out.push(c),
                    Err(e) => tracing::warn!(error = %e, "cri: skipping a container record"),
                }
            }
            Ok(out)
        })
    }

    /// The id a full id or a unique prefix names among records of `kind`.
    fn resolve_id(&self, kind: &str, id: &str) -> Result<Container> {
        let what = if kind == KIND_SANDBOX {
            "sandbox"
        } else {
            "container"
        };
        if id.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{what} ID must not be empty"
            )));
        }
        if let Ok(c) = self.db.container_get(NAMESPACE, id) {
            if c.labels.get(LABEL_KIND).map(String::as_str) == Some(kind) {
                return Ok(c);
            }
        }
        let mut found = self
            .records(kind, None)?
            .into_iter()
            .filter(|c| c.id.starts_with(id));
        match (found.next(), found.next()) {
            (Some(c), None) => Ok(c),
            (Some(_), Some(_)) => Err(Error::InvalidArgument(format!(
                "{what} ID prefix {id:?} is ambiguous"
            ))),
            _ => Err(Error::NotFound(format!("{what} {id:?}"))),
        }
    }

    pub(crate) fn sandbox(&self, id: &str) -> Result<Sandbox> {
        sandbox_of(self.resolve_id(KIND_SANDBOX, id)?)
    }

    pub(crate) fn container(&self, id: &str) -> Result<CriContainer> {
        container_of(self.resolve_id(KIND_CONTAINER, id)?)
    }

    /// The id holding a reserved name, if any.
    pub(crate) fn name_owner(&self, kind: &str, name: &str) -> Result<Option<String>> {
        Ok(self
            .records(kind, Some((LABEL_NAME, name)))?
            .into_iter()
            .next()
            .map(|c| c.id))
    }

    pub(crate) fn save_sandbox_meta(&self, s: &Sandbox) -> Result<()> {
        let c = with_sandbox_meta(s.record.clone(), &s.meta)?;
        self.db
            .container_update(NAMESPACE, &c, &[format!("extensions.{EXTENSION}")])?;
        Ok(())
    }

    pub(crate) fn save_container_meta(&self, c: &CriContainer) -> Result<()> {
        let r = with_container_meta(c.record.clone(), &c.meta)?;
        self.db
            .container_update(NAMESPACE, &r, &[format!("extensions.{EXTENSION}")])?;
        Ok(())
    }

    pub(crate) fn save_spec(&self, c: &Container) -> Result<()> {
        self.db
            .container_update(NAMESPACE, c, &["spec".to_string()])?;
        Ok(())
    }
}

fn sandbox_of(record: Container) -> Result<Sandbox> {
    let meta: SandboxMeta = meta_of(&record)?;
    let config = decode_pb(&meta.config)?;
    Ok(Sandbox {
        record,
        meta,
        config,
    })
}

fn container_of(record: Container) -> Result<CriContainer> {
    let meta: ContainerMeta = meta_of(&record)?;
    let config = decode_pb(&meta.config)?;
    Ok(CriContainer {
        record,
        meta,
        config,
    })
}

/// Does `labels` have every `selector` pair?
pub fn selects(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_records_are_decoded_again_only_after_a_change() {
        let t = tempfile::tempdir().unwrap();
        let content = wharf_core::content::Store::open(t.path().join("content")).unwrap();
        let db = Db::open(&t.path().join("meta.db"), content).unwrap();
        let cache: Cached<u32> = Default::default();
        let loads = std::cell::Cell::new(0);
        let load = || {
            loads.set(loads.get() + 1);
            Ok(vec![loads.get()])
        };
        assert_eq!(*cache.get(&db, load).unwrap(), vec![1]);
        assert_eq!(*cache.get(&db, load).unwrap(), vec![1]);
        let now = SystemTime::now();
        let c = Container {
            id: "c".into(),
            labels: Default::default(),
            image: String::new(),
            runtime_name: RUNTIME.into(),
            runtime_options: None,
            spec: Some(Payload::default()),
            snapshotter: String::new(),
            snapshot_key: String::new(),
            extensions: Default::default(),
            sandbox: String::new(),
            created_at: now,
            updated_at: now,
        };
        db.container_create(NAMESPACE, c).unwrap();
        assert_eq!(*cache.get(&db, load).unwrap(), vec![2]);
        assert_eq!(*cache.get(&db, load).unwrap(), vec![2]);
        // A failed load is returned and not kept.
        db.container_delete(NAMESPACE, "c").unwrap();
        assert!(cache
            .get(&db, || Err(Error::Internal("boom".into())))
            .is_err());
        assert_eq!(*cache.get(&db, load).unwrap(), vec![3]);
        assert_eq!(loads.get(), 3);
    }
}
