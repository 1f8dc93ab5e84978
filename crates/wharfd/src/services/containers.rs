//! `containerd.services.containers.v1.Containers` over core metadata.

use std::sync::Arc;

use prost_types::Any;
use tonic::{Request, Response, Status};
use wharf_api::containers::containers_server::Containers;
use wharf_api::events as pb_events;
use wharf_api::{pb, Empty};
use wharf_core::filters::Filter;
use wharf_core::metadata::{Container, Payload};

use crate::convert::{fieldpaths, labels, labels_pb, ts};
use crate::error::MapStatus;
use crate::events::publish;
use crate::namespace::namespace;
use crate::server::Daemon;

pub struct ContainersService(pub Arc<Daemon>);

fn payload(a: Option<Any>) -> Option<Payload> {
    a.map(|a| Payload {
        type_url: a.type_url,
        value: a.value,
    })
}

fn any(p: &Option<Payload>) -> Option<Any> {
    p.as_ref().map(|p| Any {
        type_url: p.type_url.clone(),
        value: p.value.clone(),
    })
}

fn container(c: pb::Container) -> Container {
    let runtime = c.runtime.unwrap_or_default();
    Container {
        id: c.id,
        labels: labels(c.labels),
        image: c.image,
        runtime_name: runtime.name,
        runtime_options: payload(runtime.options),
        spec: payload(c.spec),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    Payload {
                        type_url: v.type_url,
                        value: v.value,
                    },
                )
            })
            .collect(),
        sandbox: c.sandbox,
        created_at: std::time::SystemTime::UNIX_EPOCH,
        updated_at: std::time::SystemTime::UNIX_EPOCH,
    }
}

fn container_pb(c: &Container) -> pb::Container {
    pb::Container {
        id: c.id.clone(),
        labels: labels_pb(&c.labels),
        image: c.image.clone(),
        runtime: Some(pb::container::Runtime {
            name: c.runtime_name.clone(),
            options: any(&c.runtime_options),
        }),
        spec: any(&c.spec),
        snapshotter: c.snapshotter.clone(),
        snapshot_key: c.snapshot_key.clone(),
        created_at: ts(c.created_at),
        updated_at: ts(c.updated_at),
        extensions: c
            .extensions
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    Any {
                        type_url: v.type_url.clone(),
                        value: v.value.clone(),
                    },
                )
            })
            .collect(),
        sandbox: c.sandbox.clone(),
    }
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        req: Request<pb::GetContainerRequest>,
    ) -> Result<Response<pb::GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = self
            .0
            .db
            .container_get(&ns, &req.into_inner().id)
            .map_status()?;
        Ok(Response::new(pb::GetContainerResponse {
            container: Some(container_pb(&c)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let containers = self
            .0
            .db
            .container_list(&ns, &filter)
            .map_status()?
            .iter()
            .map(container_pb)
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    type ListStreamStream = crate::services::BoxStream<pb::ListContainerMessage>;

    async fn list_stream(
        &self,
        req: Request<pb::ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let items: Vec<Result<pb::ListContainerMessage, Status>> = self
            .0
            .db
            .container_list(&ns, &filter)
            .map_status()?
            .iter()
            .map(|c| {
                Ok(pb::ListContainerMessage {
                    container: Some(container_pb(c)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn create(
        &self,
        req: Request<pb::CreateContainerRequest>,
    ) -> Result<Response<pb::CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = req
            .into_inner()
            .container
            .ok_or_else(|| Status::invalid_argument("container must be set"))?;
        let c = self.0.db.container_create(&ns, container(c)).map_status()?;
        let ev = pb_events::ContainerCreate {
            id: c.id.clone(),
            image: c.image.clone(),
            runtime: Some(pb_events::container_create::Runtime {
                name: c.runtime_name.clone(),
                options: any(&c.runtime_options),
            }),
        };
        publish(&self.0.exchange, &ns, "/containers/create", &ev);
        Ok(Response::new(pb::CreateContainerResponse {
            container: Some(container_pb(&c)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateContainerRequest>,
    ) -> Result<Response<pb::UpdateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let c = r
            .container
            .ok_or_else(|| Status::invalid_argument("container must be set"))?;
        let c = self
            .0
            .db
            .container_update(&ns, &container(c), &fieldpaths(r.update_mask))
            .map_status()?;
        let ev = pb_events::ContainerUpdate {
            id: c.id.clone(),
            image: c.image.clone(),
            labels: labels_pb(&c.labels),
            snapshot_key: c.snapshot_key.clone(),
        };
        publish(&self.0.exchange, &ns, "/containers/update", &ev);
        self.0.gc.trigger();
        Ok(Response::new(pb::UpdateContainerResponse {
            container: Some(container_pb(&c)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContainerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        self.0.db.container_delete(&ns, &id).map_status()?;
        publish(
            &self.0.exchange,
            &ns,
            "/containers/delete",
            &pb_events::ContainerDelete { id },
        );
        self.0.gc.trigger();
        Ok(Response::new(()))
    }
}
