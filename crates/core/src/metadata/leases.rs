//! Leases: client-held references that keep content and snapshots from GC while work is in
//! flight (a pull holds one from its first blob to its image record).

use std::time::SystemTime;

use redb::{ReadableTable, WriteTransaction};

use super::*;
use crate::filters::Filter;
use crate::{identifiers, Digest};

fn not_found(id: &str) -> Error {
    Error::NotFound(format!("lease {id:?}"))
}

fn validate_resource(r: &LeaseResource) -> Result<()> {
    match r.kind.as_str() {
        "content" => {
            Digest::parse(&r.id)?;
        }
        "ingests" => {
            if r.id.is_empty() {
                return Err(Error::InvalidArgument(
                    "ingest ref must not be empty".into(),
                ));
            }
        }
        k if k.starts_with("snapshots/") && k.len() > "snapshots/".len() => {
            if r.id.is_empty() {
                return Err(Error::InvalidArgument(
                    "snapshot key must not be empty".into(),
                ));
            }
        }
        k => {
            return Err(Error::NotImplemented(format!(
                "unsupported resource type {k:?}"
            )));
        }
    }
    Ok(())
}

/// Adds a resource to an existing lease inside `tx`.
pub fn add_resource_tx(
    tx: &WriteTransaction,
    ns: &str,
    lease: &str,
    kind: &str,
    id: &str,
) -> Result<()> {
    if tx.open_table(LEASES)?.get((ns, lease))?.is_none() {
        return Err(not_found(lease));
    }
    tx.open_table(LEASE_RESOURCES)?
        .insert((ns, lease, kind, id), ())?;
    Ok(())
}

/// When a lease expires, from its `containerd.io/gc.expire` label (RFC 3339).
pub fn lease_expiry(l: &Lease) -> Option<SystemTime> {
    let v = l.labels.get(LABEL_GC_EXPIRE)?;
    let t = chrono::DateTime::parse_from_rfc3339(v).ok()?;
    let secs = t.timestamp();
    let nanos = t.timestamp_subsec_nanos();
    if secs < 0 {
        return Some(SystemTime::UNIX_EPOCH);
    }
    Some(SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos))
}

impl Db {
    pub fn lease_create(&self, ns: &str, id: &str, labels: Labels) -> Result<Lease> {
        // Lease ids are keys only (never paths); containerd accepts any non-empty id, and its
        // client generates ones like `604563267-_yZ9` that identifier rules would refuse.
        if id.is_empty() || id.len() > 1024 {
            return Err(Error::InvalidArgument(
                "lease id must be provided (at most 1024 bytes)".into(),
            ));
        }
        identifiers::validate(ns)?;
        validate_labels(&labels)?;
        let tx = self.write()?;
        namespaces::ensure(&tx, ns)?;
        let lease = Lease {
            id: id.to_string(),
            labels,
            created_at: SystemTime::now(),
        };
        {
            let mut t = tx.open_table(LEASES)?;
            if t.get((ns, id))?.is_some() {
                return Err(Error::AlreadyExists(format!("lease {id:?}")));
            }
            t.insert((ns, id), encode(&lease)?.as_slice())?;
        }
        tx.commit()?;
        Ok(lease)
    }

    pub fn lease_get(&self, ns: &str, id: &str) -> Result<Lease> {
        let tx = self.read()?;
        let t = tx.open_table(LEASES)?;
        let v = t.get((ns, id))?.ok_or_else(|| not_found(id))?;
        decode(v.value())
    }

    pub fn lease_list(&self, ns: &str, filter: &Filter) -> Result<Vec<Lease>> {
        let tx = self.read()?;
        let t = tx.open_table(LEASES)?;
        let mut out = Vec::new();
        for (_, v) in scan_ns(&t, ns)? {
            let l: Lease = decode(&v)?;
            if filter.matches(&l) {
                out.push(l);
            }
        }
        Ok(out)
    }

    /// Deletes a lease and its resource references; what only it held goes at the next GC.
    pub fn lease_delete(&self, ns: &str, id: &str) -> Result<()> {
        let tx = self.write()?;
        {
            if tx.open_table(LEASES)?.remove((ns, id))?.is_none() {
                return Err(not_found(id));
            }
            delete_resources_tx(&tx, ns, id)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn lease_add_resource(&self, ns: &str, id: &str, r: &LeaseResource) -> Result<()> {
        validate_resource(r)?;
        let tx = self.write()?;
        add_resource_tx(&tx, ns, id, &r.kind, &r.id)?;
        tx.commit()?;
        Ok(())
    }

    pub fn lease_delete_resource(&self, ns: &str, id: &str, r: &LeaseResource) -> Result<()> {
        validate_resource(r)?;
        let tx = self.write()?;
        {
            if tx.open_table(LEASES)?.get((ns, id))?.is_none() {
                return Err(not_found(id));
            }
            tx.open_table(LEASE_RESOURCES)?
                .remove((ns, id, r.kind.as_str(), r.id.as_str()))?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn lease_list_resources(&self, ns: &str, id: &str) -> Result<Vec<LeaseResource>> {
        let tx = self.read()?;
        if tx.open_table(LEASES)?.get((ns, id))?.is_none() {
            return Err(not_found(id));
        }
        list_resources(&tx.open_table(LEASE_RESOURCES)?, ns, id)
    }
}

pub(crate) fn list_resources(
    t: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
    ns: &str,
    lease: &str,
) -> Result<Vec<LeaseResource>> {
    let mut out = Vec::new();
    for e in t.range((ns, lease, "", "")..)? {
        let (k, _) = e?;
        let (kns, kl, kind, id) = k.value();
        if kns != ns || kl != lease {
            break;
        }
        out.push(LeaseResource {
            id: id.to_string(),
            kind: kind.to_string(),
        });
    }
    Ok(out)
}

pub(crate) fn delete_resources_tx(tx: &WriteTransaction, ns: &str, lease: &str) -> Result<()> {
    let mut t = tx.open_table(LEASE_RESOURCES)?;
    for r in list_resources(&t, ns, lease)? {
        t.remove((ns, lease, r.kind.as_str(), r.id.as_str()))?;
    }
    Ok(())
}
