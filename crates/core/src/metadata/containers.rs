//! Container records: the spec, runtime, image and rootfs snapshot of a container (its task, when
//! running, is the runtime's business). A container's snapshot is a GC root.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::SystemTime;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::*;
use crate::filters::{label_field, Adaptor, Filter};
use crate::identifiers;

/// An opaque typed payload (a protobuf `Any` at the API edge), stored as given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Payload {
    pub type_url: String,
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub image: String,
    pub runtime_name: String,
    #[serde(default)]
    pub runtime_options: Option<Payload>,
    #[serde(default)]
    pub spec: Option<Payload>,
    #[serde(default)]
    pub snapshotter: String,
    #[serde(default)]
    pub snapshot_key: String,
    #[serde(default)]
    pub extensions: BTreeMap<String, Payload>,
    #[serde(default)]
    pub sandbox: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Adaptor for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        Head {
            id: Cow::Borrowed(&self.id),
            labels: Cow::Borrowed(&self.labels),
            image: Cow::Borrowed(&self.image),
            runtime_name: Cow::Borrowed(&self.runtime_name),
            snapshotter: Cow::Borrowed(&self.snapshotter),
            snapshot_key: Cow::Borrowed(&self.snapshot_key),
            sandbox: Cow::Borrowed(&self.sandbox),
        }
        .field(path)
    }
}

/// The fields of a record that filters can name, decoded without its payloads (a spec is tens
/// of kilobytes of hex): a filtered list decodes in full only the records that match.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default)]
    labels: Cow<'a, Labels>,
    #[serde(default, borrow)]
    image: Cow<'a, str>,
    #[serde(borrow)]
    runtime_name: Cow<'a, str>,
    #[serde(default, borrow)]
    snapshotter: Cow<'a, str>,
    #[serde(default, borrow)]
    snapshot_key: Cow<'a, str>,
    #[serde(default, borrow)]
    sandbox: Cow<'a, str>,
}

impl Adaptor for Head<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "id" => Some(self.id.to_string()),
            "image" => Some(self.image.to_string()),
            "runtime" => match path.get(1).map(String::as_str) {
                Some("name") => Some(self.runtime_name.to_string()),
                _ => None,
            },
            "snapshotter" => Some(self.snapshotter.to_string()),
            "snapshotkey" => Some(self.snapshot_key.to_string()),
            "labels" => label_field(&self.labels, path),
            "sandbox" => Some(self.sandbox.to_string()),
            _ => None,
        }
    }
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(Hex)
    }

    struct Hex;

    impl serde::de::Visitor<'_> for Hex {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a hex string")
        }

        // The string as parsed, not copied; decode_to_slice is a plain loop, several times
        // faster than `hex::decode`'s iterator (a spec is decoded on every record read).
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<u8>, E> {
            let mut out = vec![0; s.len() / 2];
            hex::decode_to_slice(s, &mut out).map_err(E::custom)?;
            Ok(out)
        }
    }
}

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("container {id:?}"))
}

fn validate(c: &Container) -> Result<()> {
    identifiers::validate(&c.id)
        .map_err(|e| Error::InvalidArgument(format!("container.ID: {e}")))?;
    validate_labels(&c.labels)?;
    if c.runtime_name.is_empty() {
        return Err(Error::InvalidArgument(
            "container.Runtime.Name must be set".into(),
        ));
    }
    if c.spec.is_none() {
        return Err(Error::InvalidArgument("container.Spec must be set".into()));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(Error::InvalidArgument(
            "container.Snapshotter must be set if container.SnapshotKey is set".into(),
        ));
    }
    Ok(())
}

impl Db {
    pub fn container_get(&self, ns: &str, id: &str) -> Result<Container> {
        let tx = self.read()?;
        let t = tx.open_table(CONTAINERS)?;
        let v = t.get((ns, id))?.ok_or_else(|| not_found(id))?;
        decode(v.value())
    }

    pub fn container_list(&self, ns: &str, filter: &Filter) -> Result<Vec<Container>> {
        let tx = self.read()?;
        let t = tx.open_table(CONTAINERS)?;
        let mut out = Vec::new();
        for (_, v) in scan_ns(&t, ns)? {
            if !filter.is_empty() && !filter.matches(&decode::<Head>(&v)?) {
                continue;
            }
            out.push(decode::<Container>(&v)?);
        }
        Ok(out)
    }

    pub fn container_create(&self, ns: &str, mut c: Container) -> Result<Container> {
        validate(&c)?;
        let tx = self.write()?;
        namespaces::ensure(&tx, ns)?;
        {
            let mut t = tx.open_table(CONTAINERS)?;
            if t.get((ns, c.id.as_str()))?.is_some() {
                return Err(Error::AlreadyExists(format!("container {:?}", c.id)));
            }
            let now = SystemTime::now();
            c.created_at = now;
            c.updated_at = now;
            t.insert((ns, c.id.as_str()), encode(&c)?.as_slice())?;
        }
        tx.commit()?;
        self.containers_changed();
        Ok(c)
    }

    /// Updates the fields named by `fieldpaths` (containerd's: `labels[.k]`, `spec`, `image`,
    /// `snapshotkey`, `extensions[.k]`, `runtime`); with none, every mutable field.
    pub fn container_update(
        &self,
        ns: &str,
        c: &Container,
        fieldpaths: &[String],
    ) -> Result<Container> {
        let tx = self.write()?;
        let updated = {
            let mut t = tx.open_table(CONTAINERS)?;
            let mut cur: Container = match t.get((ns, c.id.as_str()))? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(&c.id)),
            };
            let all: Vec<String> = [
                "labels",
                "spec",
                "image",
                "snapshotkey",
                "extensions",
                "runtime",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let paths = if fieldpaths.is_empty() {
                &all
            } else {
                fieldpaths
            };
            for p in paths {
                match p.as_str() {
                    "spec" => cur.spec = c.spec.clone(),
                    "image" => cur.image = c.image.clone(),
                    "snapshotkey" => cur.snapshot_key = c.snapshot_key.clone(),
                    "runtime" => {
                        if c.runtime_name != cur.runtime_name {
                            return Err(Error::InvalidArgument(format!(
                                "container {:?}: runtime name cannot be changed",
                                c.id
                            )));
                        }
                        cur.runtime_options = c.runtime_options.clone();
                    }
                    "extensions" => cur.extensions = c.extensions.clone(),
                    p if p.starts_with("extensions.") => {
                        let k = &p["extensions.".len()..];
                        match c.extensions.get(k) {
                            Some(v) => {
                                cur.extensions.insert(k.to_string(), v.clone());
                            }
                            None => {
                                cur.extensions.remove(k);
                            }
                        }
                    }
                    p if p == "labels" || p.starts_with("labels.") => {
                        update_labels(&mut cur.labels, &c.labels, &[p.to_string()])?;
                    }
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "cannot update {other:?} field on container {:?}",
                            c.id
                        )))
                    }
                }
            }
            validate(&cur)?;
            cur.updated_at = SystemTime::now();
            t.insert((ns, c.id.as_str()), encode(&cur)?.as_slice())?;
            cur
        };
        tx.commit()?;
        self.containers_changed();
        Ok(updated)
    }

    pub fn container_delete(&self, ns: &str, id: &str) -> Result<()> {
        let tx = self.write()?;
        {
            let mut t = tx.open_table(CONTAINERS)?;
            if t.remove((ns, id))?.is_none() {
                return Err(not_found(id));
            }
        }
        tx.commit()?;
        self.containers_changed();
        Ok(())
    }
}
