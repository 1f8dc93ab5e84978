//! `containerd.services.leases.v1.Leases` over core metadata.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::leases::leases_server::Leases;
use wharf_api::{pb, Empty};
use wharf_core::filters::Filter;
use wharf_core::metadata::LeaseResource;

use crate::convert::{labels, lease_pb};
use crate::error::MapStatus;
use crate::namespace::namespace;
use crate::server::Daemon;

pub struct LeasesService(pub Arc<Daemon>);

fn resource(r: Option<pb::Resource>) -> Result<LeaseResource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource must be set"))?;
    Ok(LeaseResource {
        id: r.id,
        kind: r.r#type,
    })
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        req: Request<pb::CreateRequest>,
    ) -> Result<Response<pb::CreateResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let id = if r.id.is_empty() { generate_id() } else { r.id };
        let lease = self
            .0
            .db
            .lease_create(&ns, &id, labels(r.labels))
            .map_status()?;
        Ok(Response::new(pb::CreateResponse {
            lease: Some(lease_pb(&lease)),
        }))
    }

    async fn delete(&self, req: Request<pb::DeleteRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.0.db.lease_delete(&ns, &r.id).map_status()?;
        if r.sync {
            self.0.gc.run().await.map_status()?;
        } else {
            self.0.gc.trigger();
        }
        Ok(Response::new(()))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let leases = self
            .0
            .db
            .lease_list(&ns, &filter)
            .map_status()?
            .iter()
            .map(lease_pb)
            .collect();
        Ok(Response::new(pb::ListResponse { leases }))
    }

    async fn add_resource(
        &self,
        req: Request<pb::AddResourceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.0
            .db
            .lease_add_resource(&ns, &r.id, &resource(r.resource)?)
            .map_status()?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<pb::DeleteResourceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.0
            .db
            .lease_delete_resource(&ns, &r.id, &resource(r.resource)?)
            .map_status()?;
        self.0.gc.trigger();
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<pb::ListResourcesRequest>,
    ) -> Result<Response<pb::ListResourcesResponse>, Status> {
        let ns = namespace(&req)?;
        let resources = self
            .0
            .db
            .lease_list_resources(&ns, &req.into_inner().id)
            .map_status()?
            .into_iter()
            .map(|r| pb::Resource {
                id: r.id,
                r#type: r.kind,
            })
            .collect();
        Ok(Response::new(pb::ListResourcesResponse { resources }))
    }
}

/// A lease id for clients that leave it empty: time-based and random, like containerd's.
fn generate_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}-{:08x}", now.as_nanos(), rand_u32())
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::Instant::now().elapsed().as_nanos());
    h.finish() as u32
}
