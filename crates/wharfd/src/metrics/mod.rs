//! Prometheus metrics on an HTTP address of their own (`[metrics] address`), off by default:
//! gRPC calls (a layer on the router), tasks' cgroup figures, OOM events, the stores, GC and
//! shims. Nothing here exists unless the address is set: no layer work, no listener, no tasks.

pub mod collect;
pub mod grpc;
mod http;
pub mod text;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::server::Daemon;

/// The figures the endpoint reports that are counted as they happen.
pub struct Metrics {
    address: String,
    pub grpc: Arc<grpc::GrpcStats>,
    oom: collect::OomCounts,
    stores: collect::StoreCache,
}

impl Metrics {
    /// None when the configuration has no address.
    pub fn new(config: &crate::config::Metrics) -> Option<Arc<Metrics>> {
        if config.address.is_empty() {
            return None;
        }
        Some(Arc::new(Metrics {
            address: config.address.clone(),
            grpc: Arc::default(),
            oom: collect::OomCounts::default(),
            stores: collect::StoreCache::default(),
        }))
    }

    /// One scrape, in the text exposition format.
    pub async fn scrape(&self, d: &Arc<Daemon>) -> String {
        let mut e = text::Encoder::default();
        self.grpc.encode(&mut e);
        collect::tasks(d, &self.oom, &mut e).await;
        collect::stores(d, &self.stores, &mut e).await;
        collect::gc(d, &mut e);
        e.finish()
    }
}

/// Binds the endpoint and starts counting OOM events, if metrics are on. A bad or busy address
/// stops wharfd from starting, as any other unusable address does.
pub async fn start(d: &Arc<Daemon>) -> Result<()> {
    let Some(m) = d.metrics.clone() else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(&m.address)
        .await
        .with_context(|| format!("metrics address {}", m.address))?;
    let mut ooms = d
        .exchange
        .subscribe(&["topic==\"/tasks/oom\""])
        .context("subscribe to OOM events")?;
    {
        let m = m.clone();
        tokio::spawn(async move {
            while let Some(ev) = ooms.next().await {
                use containerd_shim_protos::protobuf::Message;
                match containerd_shim_protos::events::task::TaskOOM::parse_from_bytes(&ev.value) {
                    Ok(oom) => m.oom.add(&ev.namespace, &oom.container_id),
                    Err(e) => tracing::debug!(error = %e, "metrics: undecodable /tasks/oom event"),
                }
            }
        });
    }
    tracing::info!(address = %m.address, "metrics serving on /metrics");
    tokio::spawn(http::serve(listener, d.clone(), m));
    Ok(())
}
