//! `runtime.v1.RuntimeService`: a thin adapter over [`Cri`]'s sandbox, container, exec and
//! stats operations; Exec, Attach and PortForward answer streaming server URLs. Checkpoints
//! and pod metrics answer `Unimplemented` ("not implemented yet in wharf: <RPC>…").

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::cri as pb;
use wharf_api::cri::runtime_service_server::RuntimeService as Api;

use crate::error::not_implemented;
use crate::{cni, Cri, RUNTIME_NAME};

pub struct RuntimeService(pub Arc<Cri>);

/// The version of the kubelet runtime API (containerd answers the same).
const KUBE_API_VERSION: &str = "0.1.0";
const RUNTIME_API_VERSION: &str = "v1";

type EventStream =
    Pin<Box<dyn futures::Stream<Item = Result<pb::ContainerEventResponse, Status>> + Send>>;

fn ok<T>(r: crate::Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

fn condition(kind: &str, ok: bool, reason: &str, message: String) -> pb::RuntimeCondition {
    pb::RuntimeCondition {
        r#type: kind.to_string(),
        status: ok,
        reason: reason.to_string(),
        message,
    }
}

/// Writes the trait impl: the served RPCs as given, every other one answering Unimplemented.
macro_rules! runtime_service {
    (
        served { $($served:tt)* }
        unimplemented { $($rpc:ident($req:ident) -> $resp:ident = $name:literal;)* }
    ) => {
        #[tonic::async_trait]
        impl Api for RuntimeService {
            $($served)*
            $(
                async fn $rpc(
                    &self,
                    _req: Request<pb::$req>,
                ) -> Result<Response<pb::$resp>, Status> {
                    Err(not_implemented($name))
                }
            )*
        }
    };
}

runtime_service! {
    served {
        type GetContainerEventsStream = EventStream;

        async fn version(
            &self,
            _req: Request<pb::VersionRequest>,
        ) -> Result<Response<pb::VersionResponse>, Status> {
            self.0.start().await;
            Ok(Response::new(pb::VersionResponse {
                version: KUBE_API_VERSION.to_string(),
                runtime_name: RUNTIME_NAME.to_string(),
                runtime_version: env!("CARGO_PKG_VERSION").to_string(),
                runtime_api_version: RUNTIME_API_VERSION.to_string(),
            }))
        }

        async fn status(
            &self,
            req: Request<pb::StatusRequest>,
        ) -> Result<Response<pb::StatusResponse>, Status> {
            self.0.start().await;
            let config = self.0.config();
            let network = cni::network_config(&config.cni_conf_dir);
            let network_condition = match &network {
                Ok(_) => condition("NetworkReady", true, "", String::new()),
                Err(e) => condition(
                    "NetworkReady",
                    false,
                    "NetworkPluginNotReady",
                    format!("Network plugin returns error: cni plugin not initialized: {e}"),
                ),
            };
            let mut info = HashMap::new();
            if req.into_inner().verbose {
                info.insert(
                    "config".to_string(),
                    serde_json::to_string(config).unwrap_or_default(),
                );
                info.insert(
                    "lastCNILoadStatus".to_string(),
                    match &network {
                        Ok(p) => format!("OK: {}", p.display()),
                        Err(e) => e.clone(),
                    },
                );
                info.insert(
                    "snapshotter".to_string(),
                    self.0.snapshotter_name().to_string(),
                );
            }
            Ok(Response::new(pb::StatusResponse {
                status: Some(pb::RuntimeStatus {
                    conditions: vec![
                        condition("RuntimeReady", true, "", String::new()),
                        network_condition,
                    ],
                }),
                info,
                ..Default::default()
            }))
        }

        async fn get_container_events(
            &self,
            _req: Request<pb::GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            use futures::StreamExt;
            Ok(Response::new(Box::pin(
                self.0.subscribe_container_events().map(Ok::<_, Status>),
            )))
        }

        async fn run_pod_sandbox(
            &self,
            req: Request<pb::RunPodSandboxRequest>,
        ) -> Result<Response<pb::RunPodSandboxResponse>, Status> {
            let r = req.into_inner();
            let config = r
                .config
                .ok_or_else(|| Status::invalid_argument("sandbox config must be set"))?;
            ok(self
                .0
                .run_pod_sandbox(config, r.runtime_handler)
                .await
                .map(|pod_sandbox_id| pb::RunPodSandboxResponse { pod_sandbox_id }))
        }

        async fn stop_pod_sandbox(
            &self,
            req: Request<pb::StopPodSandboxRequest>,
        ) -> Result<Response<pb::StopPodSandboxResponse>, Status> {
            let id = req.into_inner().pod_sandbox_id;
            ok(self.0.stop_pod_sandbox(&id).await.map(|_| pb::StopPodSandboxResponse {}))
        }

        async fn remove_pod_sandbox(
            &self,
            req: Request<pb::RemovePodSandboxRequest>,
        ) -> Result<Response<pb::RemovePodSandboxResponse>, Status> {
            let id = req.into_inner().pod_sandbox_id;
            ok(self.0.remove_pod_sandbox(&id).await.map(|_| pb::RemovePodSandboxResponse {}))
        }

        async fn pod_sandbox_status(
            &self,
            req: Request<pb::PodSandboxStatusRequest>,
        ) -> Result<Response<pb::PodSandboxStatusResponse>, Status> {
            let r = req.into_inner();
            ok(self.0.pod_sandbox_status(&r.pod_sandbox_id, r.verbose).await)
        }

        async fn list_pod_sandbox(
            &self,
            req: Request<pb::ListPodSandboxRequest>,
        ) -> Result<Response<pb::ListPodSandboxResponse>, Status> {
            let f = req.into_inner().filter;
            ok(self.0.list_pod_sandbox(f).await.map(|items| pb::ListPodSandboxResponse { items }))
        }

        async fn create_container(
            &self,
            req: Request<pb::CreateContainerRequest>,
        ) -> Result<Response<pb::CreateContainerResponse>, Status> {
            let r = req.into_inner();
            let config = r
                .config
                .ok_or_else(|| Status::invalid_argument("container config must be set"))?;
            ok(self
                .0
                .create_container(&r.pod_sandbox_id, config)
                .await
                .map(|container_id| pb::CreateContainerResponse { container_id }))
        }

        async fn start_container(
            &self,
            req: Request<pb::StartContainerRequest>,
        ) -> Result<Response<pb::StartContainerResponse>, Status> {
            let id = req.into_inner().container_id;
            ok(self.0.start_container(&id).await.map(|_| pb::StartContainerResponse {}))
        }

        async fn stop_container(
            &self,
            req: Request<pb::StopContainerRequest>,
        ) -> Result<Response<pb::StopContainerResponse>, Status> {
            let r = req.into_inner();
            ok(self
                .0
                .stop_container(&r.container_id, r.timeout)
                .await
                .map(|_| pb::StopContainerResponse {}))
        }

        async fn remove_container(
            &self,
            req: Request<pb::RemoveContainerRequest>,
        ) -> Result<Response<pb::RemoveContainerResponse>, Status> {
            let id = req.into_inner().container_id;
            ok(self.0.remove_container(&id).await.map(|_| pb::RemoveContainerResponse {}))
        }

        async fn list_containers(
            &self,
            req: Request<pb::ListContainersRequest>,
        ) -> Result<Response<pb::ListContainersResponse>, Status> {
            let f = req.into_inner().filter;
            ok(self
                .0
                .list_containers(f)
                .await
                .map(|containers| pb::ListContainersResponse { containers }))
        }

        async fn container_status(
            &self,
            req: Request<pb::ContainerStatusRequest>,
        ) -> Result<Response<pb::ContainerStatusResponse>, Status> {
            let r = req.into_inner();
            ok(self.0.container_status(&r.container_id, r.verbose).await)
        }

        async fn update_container_resources(
            &self,
            req: Request<pb::UpdateContainerResourcesRequest>,
        ) -> Result<Response<pb::UpdateContainerResourcesResponse>, Status> {
            let r = req.into_inner();
            ok(self
                .0
                .update_container_resources(&r.container_id, r.linux)
                .await
                .map(|_| pb::UpdateContainerResourcesResponse {}))
        }

        async fn reopen_container_log(
            &self,
            req: Request<pb::ReopenContainerLogRequest>,
        ) -> Result<Response<pb::ReopenContainerLogResponse>, Status> {
            let id = req.into_inner().container_id;
            ok(self
                .0
                .reopen_container_log(&id)
                .await
                .map(|_| pb::ReopenContainerLogResponse {}))
        }

        async fn exec_sync(
            &self,
            req: Request<pb::ExecSyncRequest>,
        ) -> Result<Response<pb::ExecSyncResponse>, Status> {
            let r = req.into_inner();
            ok(self
                .0
                .exec_sync(&r.container_id, r.cmd, r.timeout)
                .await
                .map(|o| pb::ExecSyncResponse {
                    stdout: o.stdout,
                    stderr: o.stderr,
                    exit_code: o.exit_code,
                }))
        }

        async fn exec(
            &self,
            req: Request<pb::ExecRequest>,
        ) -> Result<Response<pb::ExecResponse>, Status> {
            ok(self.0.exec_url(req.into_inner()).await.map(|url| pb::ExecResponse { url }))
        }

        async fn attach(
            &self,
            req: Request<pb::AttachRequest>,
        ) -> Result<Response<pb::AttachResponse>, Status> {
            ok(self.0.attach_url(req.into_inner()).await.map(|url| pb::AttachResponse { url }))
        }

        async fn port_forward(
            &self,
            req: Request<pb::PortForwardRequest>,
        ) -> Result<Response<pb::PortForwardResponse>, Status> {
            ok(self
                .0
                .port_forward_url(req.into_inner())
                .await
                .map(|url| pb::PortForwardResponse { url }))
        }

        async fn container_stats(
            &self,
            req: Request<pb::ContainerStatsRequest>,
        ) -> Result<Response<pb::ContainerStatsResponse>, Status> {
            let id = req.into_inner().container_id;
            ok(self
                .0
                .container_stats(&id)
                .await
                .map(|s| pb::ContainerStatsResponse { stats: Some(s) }))
        }

        async fn list_container_stats(
            &self,
            req: Request<pb::ListContainerStatsRequest>,
        ) -> Result<Response<pb::ListContainerStatsResponse>, Status> {
            let f = req.into_inner().filter;
            ok(self
                .0
                .list_container_stats(f)
                .await
                .map(|stats| pb::ListContainerStatsResponse { stats }))
        }

        async fn pod_sandbox_stats(
            &self,
            req: Request<pb::PodSandboxStatsRequest>,
        ) -> Result<Response<pb::PodSandboxStatsResponse>, Status> {
            let id = req.into_inner().pod_sandbox_id;
            ok(self
                .0
                .pod_sandbox_stats(&id)
                .await
                .map(|s| pb::PodSandboxStatsResponse { stats: Some(s) }))
        }

        async fn list_pod_sandbox_stats(
            &self,
            req: Request<pb::ListPodSandboxStatsRequest>,
        ) -> Result<Response<pb::ListPodSandboxStatsResponse>, Status> {
            let f = req.into_inner().filter;
            ok(self
                .0
                .list_pod_sandbox_stats(f)
                .await
                .map(|stats| pb::ListPodSandboxStatsResponse { stats }))
        }

        async fn update_runtime_config(
            &self,
            req: Request<pb::UpdateRuntimeConfigRequest>,
        ) -> Result<Response<pb::UpdateRuntimeConfigResponse>, Status> {
            let cidr = req
                .into_inner()
                .runtime_config
                .and_then(|c| c.network_config)
                .map(|n| n.pod_cidr)
                .unwrap_or_default();
            self.0.set_pod_cidr(cidr);
            Ok(Response::new(pb::UpdateRuntimeConfigResponse {}))
        }

        async fn runtime_config(
            &self,
            _req: Request<pb::RuntimeConfigRequest>,
        ) -> Result<Response<pb::RuntimeConfigResponse>, Status> {
            Ok(Response::new(pb::RuntimeConfigResponse {
                linux: Some(pb::LinuxRuntimeConfiguration {
                    cgroup_driver: pb::CgroupDriver::Cgroupfs as i32,
                }),
            }))
        }
    }
    unimplemented {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = "ListPodSandboxMetrics";
    }
}
