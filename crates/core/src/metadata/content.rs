//! Content as a namespace sees it: records (size, labels) over the shared blobs of the raw store,
//! and writers whose commits add the record (and the lease's reference) in one transaction.

use std::time::SystemTime;

use redb::ReadableTable;

use super::*;
use crate::content::{self, Status};
use crate::filters::Filter;
use crate::Digest;

fn not_found(d: &Digest) -> Error {
    Error::NotFound(format!("content {d}"))
}

/// Ingest refs are namespaced in the shared store so two namespaces never share an ingest.
fn backend_ref(ns: &str, reference: &str) -> String {
    format!("{ns}/{reference}")
}

impl Db {
    pub fn content_info(&self, ns: &str, d: &Digest) -> Result<ContentInfo> {
        let tx = self.read()?;
        let t = tx.open_table(CONTENT)?;
        let v = t
            .get((ns, d.to_string().as_str()))?
            .ok_or_else(|| not_found(d))?;
        decode(v.value())
    }

    pub fn content_list(&self, ns: &str, filter: &Filter) -> Result<Vec<ContentInfo>> {
        let tx = self.read()?;
        let t = tx.open_table(CONTENT)?;
        let mut out = Vec::new();
        for (_, v) in scan_ns(&t, ns)? {
            let info: ContentInfo = decode(&v)?;
            if filter.matches(&info) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// Updates labels (`labels`, `labels.<key>`; none = replace all labels).
    pub fn content_update(
        &self,
        ns: &str,
        d: &Digest,
        labels: &Labels,
        fieldpaths: &[String],
    ) -> Result<ContentInfo> {
        validate_labels(labels)?;
        let key = d.to_string();
        let tx = self.write()?;
        let info = {
            let mut t = tx.open_table(CONTENT)?;
            let mut info: ContentInfo = match t.get((ns, key.as_str()))? {
                Some(v) => decode(v.value())?,
                None => return Err(not_found(d)),
            };
            for p in fieldpaths {
                if p != "labels" && !p.starts_with("labels.") {
                    return Err(Error::InvalidArgument(format!(
                        "cannot update {p:?} field on content info {d}"
                    )));
                }
            }
            update_labels(&mut info.labels, labels, fieldpaths)?;
            info.updated_at = SystemTime::now();
            t.insert((ns, key.as_str()), encode(&info)?.as_slice())?;
            info
        };
        tx.commit()?;
        Ok(info)
    }

    /// Removes the namespace's record of a blob; the blob itself goes at the next GC.
    pub fn content_delete(&self, ns: &str, d: &Digest) -> Result<()> {
        let tx = self.write()?;
        {
            let mut t = tx.open_table(CONTENT)?;
            if t.remove((ns, d.to_string().as_str()))?.is_none() {
                return Err(not_found(d));
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Opens a writer. When the expected blob is already in this namespace: AlreadyExists; when it
    /// is only in another namespace, it is shared into this one (record added) and AlreadyExists
    /// tells the client there is nothing to write, as containerd does.
    pub fn content_writer(
        &self,
        ns: &str,
        reference: &str,
        total: u64,
        expected: Option<Digest>,
        lease: Option<&str>,
    ) -> Result<ContentWriter> {
        crate::identifiers::validate(ns)?;
        if reference.is_empty() {
            return Err(Error::InvalidArgument("ref must not be empty".into()));
        }
        if let Some(l) = lease {
            self.lease_get(ns, l)?;
        }
        if let Some(d) = &expected {
            if self.content_info(ns, d).is_ok() {
                return Err(Error::AlreadyExists(format!("content {d}")));
            }
            let _shared = self
                .inner
                .gc_lock
                .read()
                .map_err(|_| Error::internal("gc lock poisoned"))?;
            if let Ok(info) = self.content_store().info(d) {
                self.add_record(ns, d, info.size, Labels::new(), lease)?;
                return Err(Error::AlreadyExists(format!("content {d}")));
            }
        }
        let w = self
            .content_store()
            .writer(&backend_ref(ns, reference), total, expected)?;
        Ok(ContentWriter {
            db: self.clone(),
            ns: ns.to_string(),
            reference: reference.to_string(),
            lease: lease.map(str::to_string),
            w,
        })
    }

    /// Adds the namespace's record of a committed blob (and the lease's reference to it).
    fn add_record(
        &self,
        ns: &str,
        d: &Digest,
        size: u64,
        labels: Labels,
        lease: Option<&str>,
    ) -> Result<()> {
        let key = d.to_string();
        let tx = self.write()?;
        namespaces::ensure(&tx, ns)?;
        {
            let mut t = tx.open_table(CONTENT)?;
            if t.get((ns, key.as_str()))?.is_some() {
                return Err(Error::AlreadyExists(format!("content {d}")));
            }
            let now = SystemTime::now();
            let info = ContentInfo {
                digest: key.clone(),
                size,
                labels,
                created_at: now,
                updated_at: now,
            };
            t.insert((ns, key.as_str()), encode(&info)?.as_slice())?;
        }
        if let Some(l) = lease {
            leases::add_resource_tx(&tx, ns, l, "content", &key)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn content_status(&self, ns: &str, reference: &str) -> Result<Status> {
        let mut st = self.content_store().status(&backend_ref(ns, reference))?;
        st.reference = reference.to_string();
        Ok(st)
    }

    /// Ingests of a namespace; filters apply to `ref`.
    pub fn content_list_statuses(&self, ns: &str, filter: &Filter) -> Result<Vec<Status>> {
        struct RefView<'a>(&'a str);
        impl crate::filters::Adaptor for RefView<'_> {
            fn field(&self, path: &[String]) -> Option<String> {
                (path.first()?.as_str() == "ref").then(|| self.0.to_string())
            }
        }
        let prefix = backend_ref(ns, "");
        let mut out = Vec::new();
        for mut st in self.content_store().list_statuses()? {
            if let Some(r) = st.reference.strip_prefix(&prefix) {
                if filter.matches(&RefView(r)) {
                    st.reference = r.to_string();
                    out.push(st);
                }
            }
        }
        Ok(out)
    }

    pub fn content_abort(&self, ns: &str, reference: &str) -> Result<()> {
        self.content_store().abort(&backend_ref(ns, reference))
    }
}

/// A namespaced writer: the raw ingest plus what its commit must record.
pub struct ContentWriter {
    db: Db,
    ns: String,
    reference: String,
    lease: Option<String>,
    w: content::Writer,
}

impl ContentWriter {
    pub fn status(&self) -> Status {
        let mut st = self.w.status();
        st.reference = self.reference.clone();
        st
    }

    pub fn offset(&self) -> u64 {
        self.w.offset()
    }

    pub fn set_total(&mut self, total: u64) -> Result<()> {
        self.w.set_total(total)
    }

    pub fn digest(&self) -> Digest {
        self.w.digest()
    }

    /// See [`content::Writer::absorb`].
    pub fn absorb(&mut self, data: &[u8]) {
        self.w.absorb(data)
    }

    /// See [`content::Writer::persist`].
    pub fn persist(&mut self, data: &[u8]) -> Result<()> {
        self.w.persist(data)
    }

    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.w.write_at(offset, data)
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.w.write(data)
    }

    /// Verifies and commits the blob, then records it in the namespace with `labels`.
    pub fn commit(self, size: u64, expected: Option<Digest>, labels: Labels) -> Result<Digest> {
        validate_labels(&labels)?;
        let _shared = self
            .db
            .inner
            .gc_lock
            .read()
            .map_err(|_| Error::internal("gc lock poisoned"))?;
        let size_written = self.w.offset();
        // A blob another writer (maybe in another namespace) committed first is shared.
        let (d, _) = self.w.commit_shared(size, expected)?;
        self.db
            .add_record(&self.ns, &d, size_written, labels, self.lease.as_deref())?;
        Ok(d)
    }
}
