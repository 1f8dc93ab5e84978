//! Namespaces: created explicitly or implicitly by the first write into them, as containerd does.

use redb::{ReadableTable, WriteTransaction};

use super::*;
use crate::identifiers;

/// Creates the namespace inside `tx` if it does not exist yet (every write into a namespace does).
pub fn ensure(tx: &WriteTransaction, name: &str) -> Result<()> {
    identifiers::validate(name)?;
    let mut t = tx.open_table(NAMESPACES)?;
    if t.get(name)?.is_none() {
        let ns = Namespace {
            name: name.to_string(),
            labels: Labels::new(),
        };
        t.insert(name, encode(&ns)?.as_slice())?;
    }
    Ok(())
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("namespace {name:?}"))
}

impl Db {
    pub fn namespace_create(&self, name: &str, labels: Labels) -> Result<Namespace> {
        identifiers::validate(name)?;
        validate_labels(&labels)?;
        let tx = self.write()?;
        let ns = Namespace {
            name: name.to_string(),
            labels,
        };
        {
            let mut t = tx.open_table(NAMESPACES)?;
            if t.get(name)?.is_some() {
                return Err(Error::AlreadyExists(format!("namespace {name:?}")));
            }
            t.insert(name, encode(&ns)?.as_slice())?;
        }
        tx.commit()?;
        Ok(ns)
    }

    pub fn namespace_get(&self, name: &str) -> Result<Namespace> {
        identifiers::validate(name)?;
        let tx = self.read()?;
        let t = tx.open_table(NAMESPACES)?;
        let v = t.get(name)?.ok_or_else(|| not_found(name))?;
        decode(v.value())
    }

    pub fn namespace_list(&self) -> Result<Vec<Namespace>> {
        let tx = self.read()?;
        let t = tx.open_table(NAMESPACES)?;
        let mut out = Vec::new();
        for e in t.iter()? {
            let (_, v) = e?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    pub fn namespace_update(
        &self,
        name: &str,
        labels: &Labels,
        fieldpaths: &[String],
    ) -> Result<Namespace> {
        identifiers::validate(name)?;
        let tx = self.write()?;
        let ns = {
            let mut t = tx.open_table(NAMESPACES)?;
            let mut ns: Namespace = match t.get(name)? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(name)),
            };
            for p in fieldpaths {
                if p != "labels" && !p.starts_with("labels.") {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {p:?} field on namespace {name:?}"
                    )));
                }
            }
            update_labels(&mut ns.labels, labels, fieldpaths)?;
            t.insert(name, encode(&ns)?.as_slice())?;
            ns
        };
        tx.commit()?;
        Ok(ns)
    }

    /// Deletes an empty namespace; one that still holds anything is FailedPrecondition.
    pub fn namespace_delete(&self, name: &str) -> Result<()> {
        identifiers::validate(name)?;
        let tx = self.write()?;
        {
            let mut t = tx.open_table(NAMESPACES)?;
            if t.get(name)?.is_none() {
                return Err(not_found(name));
            }
            let mut held = Vec::new();
            for (table, what) in [
                (IMAGES, "images"),
                (CONTENT, "blobs"),
                (LEASES, "leases"),
                (CONTAINERS, "containers"),
            ] {
                if any_in_ns(&tx.open_table(table)?, name)? {
                    held.push(what);
                }
            }
            if let Some(e) = tx.open_table(SNAPSHOTS)?.range((name, "", "")..)?.next() {
                if e?.0.value().0 == name {
                    held.push("snapshots");
                }
            }
            if !held.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "namespace {name:?} must be empty, but it still has {}",
                    held.join(", ")
                )));
            }
            t.remove(name)?;
        }
        tx.commit()?;
        Ok(())
    }
}
