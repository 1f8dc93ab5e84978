//! `containerd.services.namespaces.v1.Namespaces` over core metadata.

use tonic::{Request, Response, Status};
use wharf_api::namespaces::namespaces_server::Namespaces;
use wharf_api::{pb, Empty};
use wharf_core::filters::Filter;

use crate::convert::{fieldpaths, labels, namespace_pb};
use crate::error::MapStatus;
use crate::events::publish;
use crate::server::Daemon;

pub struct NamespacesService(pub std::sync::Arc<Daemon>);

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::GetNamespaceResponse>, Status> {
        let ns = self
            .0
            .db
            .namespace_get(&req.into_inner().name)
            .map_status()?;
        Ok(Response::new(pb::GetNamespaceResponse {
            namespace: Some(namespace_pb(&ns)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let filter = Filter::parse(&[req.into_inner().filter]).map_status()?;
        struct View<'a>(&'a wharf_core::metadata::Namespace);
        impl wharf_core::filters::Adaptor for View<'_> {
            fn field(&self, path: &[String]) -> Option<String> {
                match path.first()?.as_str() {
                    "name" => Some(self.0.name.clone()),
                    "labels" => wharf_core::filters::label_field(&self.0.labels, path),
                    _ => None,
                }
            }
        }
        let namespaces = self
            .0
            .db
            .namespace_list()
            .map_status()?
            .iter()
            .filter(|n| filter.matches(&View(n)))
            .map(namespace_pb)
            .collect();
        Ok(Response::new(pb::ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateNamespaceRequest>,
    ) -> Result<Response<pb::CreateNamespaceResponse>, Status> {
        let n = req.into_inner().namespace.unwrap_or_default();
        let ns = self
            .0
            .db
            .namespace_create(&n.name, labels(n.labels))
            .map_status()?;
        let ev = pb_events::NamespaceCreate {
            name: ns.name.clone(),
            labels: n_labels(&ns),
        };
        publish(&self.0.exchange, &ns.name, "/namespaces/create", &ev);
        Ok(Response::new(pb::CreateNamespaceResponse {
            namespace: Some(namespace_pb(&ns)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateNamespaceRequest>,
    ) -> Result<Response<pb::UpdateNamespaceResponse>, Status> {
        let r = req.into_inner();
        let n = r.namespace.unwrap_or_default();
        let ns = self
            .0
            .db
            .namespace_update(&n.name, &labels(n.labels), &fieldpaths(r.update_mask))
            .map_status()?;
        let ev = pb_events::NamespaceUpdate {
            name: ns.name.clone(),
            labels: n_labels(&ns),
        };
        publish(&self.0.exchange, &ns.name, "/namespaces/update", &ev);
        Ok(Response::new(pb::UpdateNamespaceResponse {
            namespace: Some(namespace_pb(&ns)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteNamespaceRequest>,
    ) -> Result<Response<Empty>, Status> {
        let name = req.into_inner().name;
        self.0.db.namespace_delete(&name).map_status()?;
        publish(
            &self.0.exchange,
            &name,
            "/namespaces/delete",
            &pb_events::NamespaceDelete { name: name.clone() },
        );
        Ok(Response::new(()))
    }
}

use wharf_api::events as pb_events;

fn n_labels(ns: &wharf_core::metadata::Namespace) -> std::collections::HashMap<String, String> {
    crate::convert::labels_pb(&ns.labels)
}
