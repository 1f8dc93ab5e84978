//! `containerd.services.snapshots.v1.Snapshots` over the core snapshot stores.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::events as pb_events;
use wharf_api::snapshots::snapshots_server::Snapshots;
use wharf_api::{pb, types, Empty};
use wharf_core::filters::Filter;
use wharf_core::snapshots::{Info, Kind, Mount, SnapshotStore};

use crate::convert::{fieldpaths, labels, labels_pb, ts};
use crate::error::MapStatus;
use crate::events::publish;
use crate::namespace::{lease, namespace};
use crate::server::Daemon;

use pb::snapshots as sp;

pub struct SnapshotsService(pub Arc<Daemon>);

impl SnapshotsService {
    fn store(&self, name: &str) -> Result<&SnapshotStore, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("snapshotter argument missing"));
        }
        self.0
            .snapshotters
            .get(name)
            .ok_or_else(|| Status::not_found(format!("snapshotter not loaded: {name}: not found")))
    }
}

pub fn mounts_pb(m: Vec<Mount>) -> Vec<types::Mount> {
    m.into_iter()
        .map(|m| types::Mount {
            r#type: m.kind,
            source: m.source,
            target: String::new(),
            options: m.options,
        })
        .collect()
}

fn info_pb(i: &Info) -> sp::Info {
    sp::Info {
        name: i.name.clone(),
        parent: i.parent.clone().unwrap_or_default(),
        kind: match i.kind {
            Kind::View => sp::Kind::View,
            Kind::Active => sp::Kind::Active,
            Kind::Committed => sp::Kind::Committed,
        } as i32,
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
        labels: labels_pb(&i.labels),
    }
}

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<sp::PrepareSnapshotRequest>,
    ) -> Result<Response<sp::PrepareSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req);
        let r = req.into_inner();
        let s = self.store(&r.snapshotter)?.clone();
        let (key, parent) = (r.key.clone(), r.parent.clone());
        let l = labels(r.labels);
        let ns2 = ns.clone();
        // A native prepare copies the parent tree: never on the async threads.
        let mounts = tokio::task::spawn_blocking(move || {
            s.prepare(&ns2, &key, Some(parent.as_str()), l, lease.as_deref())
        })
        .await
        .map_err(|e| Status::internal(format!("prepare: {e}")))?
        .map_status()?;
        let ev = pb_events::SnapshotPrepare {
            key: r.key,
            parent: r.parent,
            snapshotter: r.snapshotter,
        };
        publish(&self.0.exchange, &ns, "/snapshot/prepare", &ev);
        Ok(Response::new(sp::PrepareSnapshotResponse {
            mounts: mounts_pb(mounts),
        }))
    }

    async fn view(
        &self,
        req: Request<sp::ViewSnapshotRequest>,
    ) -> Result<Response<sp::ViewSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req);
        let r = req.into_inner();
        let s = self.store(&r.snapshotter)?.clone();
        let mounts = tokio::task::spawn_blocking(move || {
            s.view(
                &ns,
                &r.key,
                Some(r.parent.as_str()),
                labels(r.labels),
                lease.as_deref(),
            )
        })
        .await
        .map_err(|e| Status::internal(format!("view: {e}")))?
        .map_status()?;
        Ok(Response::new(sp::ViewSnapshotResponse {
            mounts: mounts_pb(mounts),
        }))
    }

    async fn mounts(
        &self,
        req: Request<sp::MountsRequest>,
    ) -> Result<Response<sp::MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let mounts = self
            .store(&r.snapshotter)?
            .mounts(&ns, &r.key)
            .map_status()?;
        Ok(Response::new(sp::MountsResponse {
            mounts: mounts_pb(mounts),
        }))
    }

    async fn commit(
        &self,
        req: Request<sp::CommitSnapshotRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req);
        let r = req.into_inner();
        self.store(&r.snapshotter)?
            .commit(&ns, &r.name, &r.key, labels(r.labels), lease.as_deref())
            .map_status()?;
        let ev = pb_events::SnapshotCommit {
            key: r.key,
            name: r.name,
            snapshotter: r.snapshotter,
        };
        publish(&self.0.exchange, &ns, "/snapshot/commit", &ev);
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        req: Request<sp::RemoveSnapshotRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let s = self.store(&r.snapshotter)?.clone();
        let (ns2, key) = (ns.clone(), r.key.clone());
        tokio::task::spawn_blocking(move || s.remove(&ns2, &key))
            .await
            .map_err(|e| Status::internal(format!("remove: {e}")))?
            .map_status()?;
        let ev = pb_events::SnapshotRemove {
            key: r.key,
            snapshotter: r.snapshotter,
        };
        publish(&self.0.exchange, &ns, "/snapshot/remove", &ev);
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<sp::StatSnapshotRequest>,
    ) -> Result<Response<sp::StatSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = self.store(&r.snapshotter)?.stat(&ns, &r.key).map_status()?;
        Ok(Response::new(sp::StatSnapshotResponse {
            info: Some(info_pb(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<sp::UpdateSnapshotRequest>,
    ) -> Result<Response<sp::UpdateSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let updated = self
            .store(&r.snapshotter)?
            .update(
                &ns,
                &info.name,
                &labels(info.labels),
                &fieldpaths(r.update_mask),
            )
            .map_status()?;
        self.0.gc.trigger();
        Ok(Response::new(sp::UpdateSnapshotResponse {
            info: Some(info_pb(&updated)),
        }))
    }

    type ListStream = crate::services::BoxStream<sp::ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<sp::ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let filter = Filter::parse(&r.filters).map_status()?;
        let infos = self
            .store(&r.snapshotter)?
            .walk(&ns, &filter)
            .map_status()?;
        let batches: Vec<Result<sp::ListSnapshotsResponse, Status>> = infos
            .chunks(100)
            .map(|c| {
                Ok(sp::ListSnapshotsResponse {
                    info: c.iter().map(info_pb).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(
        &self,
        req: Request<sp::UsageRequest>,
    ) -> Result<Response<sp::UsageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let s = self.store(&r.snapshotter)?.clone();
        let u = tokio::task::spawn_blocking(move || s.usage(&ns, &r.key))
            .await
            .map_err(|e| Status::internal(format!("usage: {e}")))?
            .map_status()?;
        Ok(Response::new(sp::UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<sp::CleanupRequest>) -> Result<Response<Empty>, Status> {
        let _ns = namespace(&req)?;
        let s = self.store(&req.into_inner().snapshotter)?.clone();
        tokio::task::spawn_blocking(move || s.cleanup())
            .await
            .map_err(|e| Status::internal(format!("cleanup: {e}")))?
            .map_status()?;
        Ok(Response::new(()))
    }
}
