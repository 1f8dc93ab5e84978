//! What the check compares the disk against, read once from the live daemon: its tasks (the
//! shim manager's map), namespaces and container records.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context;
use wharf_core::filters::Filter;

use crate::server::Daemon;

pub struct Facts {
    /// (namespace, id) of every task with a shim.
    pub tasks: HashSet<(String, String)>,
    pub namespaces: Vec<String>,
    /// (namespace, id) of every container record (CRI pods are records in `k8s.io`).
    pub containers: HashSet<(String, String)>,
}

impl Facts {
    pub async fn gather(d: &Arc<Daemon>) -> anyhow::Result<Facts> {
        let tasks = d
            .runtime
            .all()
            .await
            .iter()
            .map(|s| (s.namespace.clone(), s.id.clone()))
            .collect();
        let db = d.db.clone();
        let (namespaces, containers) = tokio::task::spawn_blocking(move || {
            let namespaces: Vec<String> = db
                .namespace_list()
                .context("list namespaces")?
                .into_iter()
                .map(|n| n.name)
                .collect();
            let all = Filter::parse::<&str>(&[]).context("empty filter")?;
            let mut containers = HashSet::new();
            for ns in &namespaces {
                for c in db
                    .container_list(ns, &all)
                    .with_context(|| format!("list containers of {ns}"))?
                {
                    containers.insert((ns.clone(), c.id));
                }
            }
            anyhow::Ok((namespaces, containers))
        })
        .await??;
        Ok(Facts {
            tasks,
            namespaces,
            containers,
        })
    }

    pub fn live(&self, ns: &str, id: &str) -> bool {
        self.tasks.contains(&(ns.to_string(), id.to_string()))
    }
}
