//! `containerd.services.introspection.v1.Introspection`: the server's identity and the plugins
//! wharfd really serves, named as containerd names them.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::introspection::introspection_server::Introspection;
use wharf_api::{pb, types, Empty};
use wharf_core::filters::{Adaptor, Filter};

use crate::error::MapStatus;
use crate::server::Daemon;

pub struct IntrospectionService(pub Arc<Daemon>);

struct View<'a>(&'a pb::Plugin);

impl Adaptor for View<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "type" => Some(self.0.r#type.clone()),
            "id" => Some(self.0.id.clone()),
            _ => None,
        }
    }
}

/// The plugins of this daemon, as (type, id) pairs.
pub fn plugins(d: &Daemon) -> Vec<pb::Plugin> {
    let mut list: Vec<(&str, String)> = vec![
        ("io.containerd.content.v1", "content".into()),
        ("io.containerd.metadata.v1", "redb".into()),
        ("io.containerd.event.v1", "exchange".into()),
        ("io.containerd.gc.v1", "scheduler".into()),
        ("io.containerd.differ.v1", "walking".into()),
    ];
    for name in d.snapshotters.keys() {
        list.push(("io.containerd.snapshotter.v1", name.clone()));
    }
    for s in [
        "containers",
        "content",
        "diff",
        "events",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "snapshots",
        "streaming",
        "transfer",
        "version",
        "healthcheck",
        "cri",
    ] {
        list.push(("io.containerd.grpc.v1", s.into()));
    }
    list.into_iter()
        .map(|(t, id)| pb::Plugin {
            r#type: t.to_string(),
            id,
            platforms: if t == "io.containerd.snapshotter.v1" {
                vec![types::Platform {
                    os: "linux".into(),
                    architecture: wharf_core::images::Platform::host().architecture,
                    ..Default::default()
                }]
            } else {
                vec![]
            },
            ..Default::default()
        })
        .collect()
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<pb::PluginsRequest>,
    ) -> Result<Response<pb::PluginsResponse>, Status> {
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let plugins = plugins(&self.0)
            .into_iter()
            .filter(|p| filter.matches(&View(p)))
            .collect();
        Ok(Response::new(pb::PluginsResponse { plugins }))
    }

    async fn server(&self, _req: Request<Empty>) -> Result<Response<pb::ServerResponse>, Status> {
        Ok(Response::new(pb::ServerResponse {
            uuid: self.0.uuid.clone(),
            pid: std::process::id() as u64,
            pidns: pidns(),
            deprecations: vec![],
        }))
    }

    async fn plugin_info(
        &self,
        _req: Request<pb::PluginInfoRequest>,
    ) -> Result<Response<pb::PluginInfoResponse>, Status> {
        Err(Status::unimplemented(
            "plugin info is not implemented by wharfd",
        ))
    }
}

fn pidns() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}
