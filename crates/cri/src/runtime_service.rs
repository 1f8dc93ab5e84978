//! `runtime.v1.RuntimeService`: Version and Status; pod sandboxes, containers, streaming and
//! stats are not served yet and answer `Unimplemented` ("not implemented yet in wharf: <RPC>").

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
            Err(not_implemented("GetContainerEvents"))
        }
    }
    unimplemented {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse = "RunPodSandbox";
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse = "StopPodSandbox";
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse = "RemovePodSandbox";
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse = "PodSandboxStatus";
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse = "ListPodSandbox";
        create_container(CreateContainerRequest) -> CreateContainerResponse = "CreateContainer";
        start_container(StartContainerRequest) -> StartContainerResponse = "StartContainer";
        stop_container(StopContainerRequest) -> StopContainerResponse = "StopContainer";
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse = "RemoveContainer";
        list_containers(ListContainersRequest) -> ListContainersResponse = "ListContainers";
        container_status(ContainerStatusRequest) -> ContainerStatusResponse = "ContainerStatus";
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse = "UpdateContainerResources";
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse = "ReopenContainerLog";
        exec_sync(ExecSyncRequest) -> ExecSyncResponse = "ExecSync";
        exec(ExecRequest) -> ExecResponse = "Exec";
        attach(AttachRequest) -> AttachResponse = "Attach";
        port_forward(PortForwardRequest) -> PortForwardResponse = "PortForward";
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse = "ContainerStats";
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse = "ListContainerStats";
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = "PodSandboxStats";
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse = "ListPodSandboxStats";
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse = "UpdateRuntimeConfig";
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = "ListPodSandboxMetrics";
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse = "RuntimeConfig";
    }
}
