//! Generates tonic server stubs for containerd's API v1 over the prost message types of the
//! `containerd-client` crate, so no .proto file is copied into this repository.

use tonic_build::manual::{Builder, Method, Service};

const V1: &str = "::containerd_client::services::v1";
const TYPES: &str = "::containerd_client::types";
const EMPTY: &str = "crate::Empty";

/// (method name, rust fn name, input type, output type, client streaming, server streaming)
type M = (&'static str, &'static str, String, String, bool, bool);

fn m(name: &'static str, rust: &'static str, input: &str, output: &str) -> M {
    (name, rust, ty(input), ty(output), false, false)
}

fn ty(t: &str) -> String {
    match t {
        "Empty" => EMPTY.to_string(),
        t if t.starts_with("types::") => format!("{TYPES}::{}", &t[7..]),
        t if t.starts_with("::") || t.starts_with("crate::") => t.to_string(),
        t => format!("{V1}::{t}"),
    }
}

fn service(package: &str, name: &str, methods: Vec<M>) -> Service {
    let mut b = Service::builder().name(name).package(package);
    for (mname, rust, input, output, cs, ss) in methods {
        let mut mb = Method::builder()
            .name(rust)
            .route_name(mname)
            .input_type(input)
            .output_type(output)
            .codec_path("::tonic_prost::ProstCodec");
        if cs {
            mb = mb.client_streaming();
        }
        if ss {
            mb = mb.server_streaming();
        }
        b = b.method(mb.build());
    }
    b.build()
}

fn server_stream(mut x: M) -> M {
    x.5 = true;
    x
}

fn bidi(mut x: M) -> M {
    x.4 = true;
    x.5 = true;
    x
}

fn main() {
    let snap = |t: &str| format!("{V1}::snapshots::{t}");
    let services = vec![
        service(
            "containerd.services.version.v1",
            "Version",
            vec![m("Version", "version", "Empty", "VersionResponse")],
        ),
        service(
            "containerd.services.introspection.v1",
            "Introspection",
            vec![
                m("Plugins", "plugins", "PluginsRequest", "PluginsResponse"),
                m("Server", "server", "Empty", "ServerResponse"),
                m(
                    "PluginInfo",
                    "plugin_info",
                    "PluginInfoRequest",
                    "PluginInfoResponse",
                ),
            ],
        ),
        service(
            "containerd.services.namespaces.v1",
            "Namespaces",
            vec![
                m("Get", "get", "GetNamespaceRequest", "GetNamespaceResponse"),
                m(
                    "List",
                    "list",
                    "ListNamespacesRequest",
                    "ListNamespacesResponse",
                ),
                m(
                    "Create",
                    "create",
                    "CreateNamespaceRequest",
                    "CreateNamespaceResponse",
                ),
                m(
                    "Update",
                    "update",
                    "UpdateNamespaceRequest",
                    "UpdateNamespaceResponse",
                ),
                m("Delete", "delete", "DeleteNamespaceRequest", "Empty"),
            ],
        ),
        service(
            "containerd.services.content.v1",
            "Content",
            vec![
                m("Info", "info", "InfoRequest", "InfoResponse"),
                m("Update", "update", "UpdateRequest", "UpdateResponse"),
                server_stream(m(
                    "List",
                    "list",
                    "ListContentRequest",
                    "ListContentResponse",
                )),
                m("Delete", "delete", "DeleteContentRequest", "Empty"),
                server_stream(m(
                    "Read",
                    "read",
                    "ReadContentRequest",
                    "ReadContentResponse",
                )),
                m("Status", "status", "StatusRequest", "StatusResponse"),
                m(
                    "ListStatuses",
                    "list_statuses",
                    "ListStatusesRequest",
                    "ListStatusesResponse",
                ),
                bidi(m(
                    "Write",
                    "write",
                    "crate::content_write::WriteContentRequest",
                    "WriteContentResponse",
                )),
                m("Abort", "abort", "AbortRequest", "Empty"),
            ],
        ),
        service(
            "containerd.services.images.v1",
            "Images",
            vec![
                m("Get", "get", "GetImageRequest", "GetImageResponse"),
                m("List", "list", "ListImagesRequest", "ListImagesResponse"),
                m(
                    "Create",
                    "create",
                    "CreateImageRequest",
                    "CreateImageResponse",
                ),
                m(
                    "Update",
                    "update",
                    "UpdateImageRequest",
                    "UpdateImageResponse",
                ),
                m("Delete", "delete", "DeleteImageRequest", "Empty"),
            ],
        ),
        service(
            "containerd.services.leases.v1",
            "Leases",
            vec![
                m("Create", "create", "CreateRequest", "CreateResponse"),
                m("Delete", "delete", "DeleteRequest", "Empty"),
                m("List", "list", "ListRequest", "ListResponse"),
                m("AddResource", "add_resource", "AddResourceRequest", "Empty"),
                m(
                    "DeleteResource",
                    "delete_resource",
                    "DeleteResourceRequest",
                    "Empty",
                ),
                m(
                    "ListResources",
                    "list_resources",
                    "ListResourcesRequest",
                    "ListResourcesResponse",
                ),
            ],
        ),
        service(
            "containerd.services.events.v1",
            "Events",
            vec![
                m("Publish", "publish", "PublishRequest", "Empty"),
                m("Forward", "forward", "ForwardRequest", "Empty"),
                server_stream(m(
                    "Subscribe",
                    "subscribe",
                    "SubscribeRequest",
                    "types::Envelope",
                )),
            ],
        ),
        service(
            "containerd.services.snapshots.v1",
            "Snapshots",
            vec![
                m(
                    "Prepare",
                    "prepare",
                    &snap("PrepareSnapshotRequest"),
                    &snap("PrepareSnapshotResponse"),
                ),
                m(
                    "View",
                    "view",
                    &snap("ViewSnapshotRequest"),
                    &snap("ViewSnapshotResponse"),
                ),
                m(
                    "Mounts",
                    "mounts",
                    &snap("MountsRequest"),
                    &snap("MountsResponse"),
                ),
                m("Commit", "commit", &snap("CommitSnapshotRequest"), "Empty"),
                m("Remove", "remove", &snap("RemoveSnapshotRequest"), "Empty"),
                m(
                    "Stat",
                    "stat",
                    &snap("StatSnapshotRequest"),
                    &snap("StatSnapshotResponse"),
                ),
                m(
                    "Update",
                    "update",
                    &snap("UpdateSnapshotRequest"),
                    &snap("UpdateSnapshotResponse"),
                ),
                server_stream(m(
                    "List",
                    "list",
                    &snap("ListSnapshotsRequest"),
                    &snap("ListSnapshotsResponse"),
                )),
                m(
                    "Usage",
                    "usage",
                    &snap("UsageRequest"),
                    &snap("UsageResponse"),
                ),
                m("Cleanup", "cleanup", &snap("CleanupRequest"), "Empty"),
            ],
        ),
        service(
            "containerd.services.diff.v1",
            "Diff",
            vec![
                m("Apply", "apply", "ApplyRequest", "ApplyResponse"),
                m("Diff", "diff", "DiffRequest", "DiffResponse"),
            ],
        ),
        service(
            "containerd.services.containers.v1",
            "Containers",
            vec![
                m("Get", "get", "GetContainerRequest", "GetContainerResponse"),
                m(
                    "List",
                    "list",
                    "ListContainersRequest",
                    "ListContainersResponse",
                ),
                server_stream(m(
                    "ListStream",
                    "list_stream",
                    "ListContainersRequest",
                    "ListContainerMessage",
                )),
                m(
                    "Create",
                    "create",
                    "CreateContainerRequest",
                    "CreateContainerResponse",
                ),
                m(
                    "Update",
                    "update",
                    "UpdateContainerRequest",
                    "UpdateContainerResponse",
                ),
                m("Delete", "delete", "DeleteContainerRequest", "Empty"),
            ],
        ),
        service(
            "containerd.services.tasks.v1",
            "Tasks",
            vec![
                m(
                    "Create",
                    "create",
                    "CreateTaskRequest",
                    "CreateTaskResponse",
                ),
                m("Start", "start", "StartRequest", "StartResponse"),
                m("Delete", "delete", "DeleteTaskRequest", "DeleteResponse"),
                m(
                    "DeleteProcess",
                    "delete_process",
                    "DeleteProcessRequest",
                    "DeleteResponse",
                ),
                m("Get", "get", "GetRequest", "GetResponse"),
                m("List", "list", "ListTasksRequest", "ListTasksResponse"),
                m("Kill", "kill", "KillRequest", "Empty"),
                m("Exec", "exec", "ExecProcessRequest", "Empty"),
                m("ResizePty", "resize_pty", "ResizePtyRequest", "Empty"),
                m("CloseIO", "close_io", "CloseIoRequest", "Empty"),
                m("Pause", "pause", "PauseTaskRequest", "Empty"),
                m("Resume", "resume", "ResumeTaskRequest", "Empty"),
                m(
                    "ListPids",
                    "list_pids",
                    "ListPidsRequest",
                    "ListPidsResponse",
                ),
                m(
                    "Checkpoint",
                    "checkpoint",
                    "CheckpointTaskRequest",
                    "CheckpointTaskResponse",
                ),
                m("Update", "update", "UpdateTaskRequest", "Empty"),
                m("Metrics", "metrics", "MetricsRequest", "MetricsResponse"),
                m("Wait", "wait", "WaitRequest", "WaitResponse"),
            ],
        ),
        service(
            "containerd.services.transfer.v1",
            "Transfer",
            vec![m("Transfer", "transfer", "TransferRequest", "Empty")],
        ),
        service(
            "containerd.services.streaming.v1",
            "Streaming",
            vec![bidi(m(
                "Stream",
                "stream",
                "::prost_types::Any",
                "::prost_types::Any",
            ))],
        ),
    ];
    Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&services);

    // wharf's own services (not containerd's): server and client, over the prost messages
    // declared in `src/lib.rs`.
    let check = Service::builder()
        .name("Check")
        .package("wharf.services.check.v1")
        .method(
            Method::builder()
                .name("check")
                .route_name("Check")
                .input_type("crate::check::CheckRequest")
                .output_type("crate::check::CheckResponse")
                .codec_path("::tonic_prost::ProstCodec")
                .build(),
        )
        .build();
    Builder::new()
        .build_client(true)
        .build_server(true)
        .compile(&[check]);
}
