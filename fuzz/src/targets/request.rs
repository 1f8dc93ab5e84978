//! Request messages at the service edge: protobuf decoding of what clients send (containerd's
//! Containers/Create, Tasks/Create, Snapshots/Prepare; CRI's RunPodSandbox and CreateContainer)
//! and the checks that follow before any client string reaches a path: identifier validation
//! (an accepted id must be one safe path component), label limits, the OCI spec a container
//! carries, and the CRI log path (which must stay inside the pod's log directory).

use std::path::{Component, Path};

use prost::Message;
use wharf_api::{cri, pb};
use wharf_core::identifiers;
use wharf_core::metadata::{validate_labels, Labels};

pub const TARGET: crate::Target = crate::Target {
    name: "request",
    run,
    seeds,
    dictionary: &[b"..", b"../", b"/", b"a/b", b"\x00", b"k8s.io", b"-", b"."],
};

/// An id accepted by [`identifiers::validate`] must be usable as a single path component.
fn check_id(id: &str) {
    if identifiers::validate(id).is_ok() {
        let mut c = Path::new(id).components();
        assert!(
            matches!(c.next(), Some(Component::Normal(_))) && c.next().is_none(),
            "identifier {id:?} was accepted but is not one path component"
        );
        assert!(id.len() <= identifiers::MAX_LENGTH && !id.contains('\0'));
    }
}

fn check_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) {
    let l: Labels = labels
        .into_iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let _ = validate_labels(&l);
}

/// CRI log path: an accepted path is strictly inside the directory, with no `..` left.
fn check_log_path(dir: &str, rel: &str) {
    let Ok(p) = wharf_cri::fuzzing::log_path(dir, rel) else {
        return;
    };
    if dir.is_empty() || rel.is_empty() {
        assert!(p.is_empty());
        return;
    }
    let p = Path::new(&p);
    assert!(
        p.starts_with(dir) && p != Path::new(dir),
        "log path {rel:?} in {dir:?} became {} (outside)",
        p.display()
    );
    // The directory is kubelet's, taken as given; what the request's path adds has no `..`.
    let added = p.strip_prefix(dir).unwrap_or(p);
    assert!(
        added
            .components()
            .all(|c| matches!(c, Component::Normal(_))),
        "log path {rel:?} in {dir:?} became {}",
        p.display()
    );
}

fn containerd_container(data: &[u8]) {
    let Ok(r) = pb::CreateContainerRequest::decode(data) else {
        return;
    };
    let Some(c) = r.container else {
        return;
    };
    check_id(&c.id);
    check_labels(&c.labels);
    if let Some(spec) = c.spec {
        // The shim reads this as the bundle's config.json.
        let _ = serde_json::from_slice::<oci_spec::runtime::Spec>(&spec.value);
    }
}

fn containerd_task(data: &[u8]) {
    if let Ok(r) = pb::CreateTaskRequest::decode(data) {
        check_id(&r.container_id);
    }
}

fn containerd_snapshot(data: &[u8]) {
    if let Ok(r) = pb::snapshots::PrepareSnapshotRequest::decode(data) {
        check_labels(&r.labels);
        check_id(&r.snapshotter);
    }
}

fn cri_sandbox(data: &[u8]) {
    let Ok(r) = cri::RunPodSandboxRequest::decode(data) else {
        return;
    };
    let Some(c) = r.config else {
        return;
    };
    check_labels(&c.labels);
    check_labels(&c.annotations);
    check_log_path(&c.log_directory, "c/0.log");
    if let Some(m) = c.metadata {
        check_id(&m.name);
        check_id(&m.namespace);
    }
}

fn cri_container(data: &[u8]) {
    let Ok(r) = cri::CreateContainerRequest::decode(data) else {
        return;
    };
    let dir = r
        .sandbox_config
        .as_ref()
        .map(|s| s.log_directory.clone())
        .unwrap_or_default();
    check_id(&r.pod_sandbox_id);
    let Some(c) = r.config else {
        return;
    };
    check_log_path(&dir, &c.log_path);
    check_log_path("/var/log/pods/ns_pod_uid", &c.log_path);
    check_labels(&c.labels);
    if let Some(res) = c.linux.and_then(|l| l.resources) {
        for host in [
            wharf_cri::fuzzing::HostLimits::default(),
            wharf_cri::fuzzing::HostLimits {
                v2: true,
                swap: true,
                hugepage_sizes: vec!["2MB".into(), "1GB".into()],
            },
        ] {
            // What passes the checks, the shim must be able to decode as OCI LinuxResources.
            if let Ok(v) = wharf_cri::fuzzing::linux_resources(&res, &host) {
                if let Err(e) = serde_json::from_value::<oci_spec::runtime::LinuxResources>(v) {
                    panic!("accepted resources the shim cannot decode: {e}");
                }
            }
        }
    }
}

/// The first byte picks the message; the rest is its protobuf encoding.
pub fn run(data: &[u8]) {
    let Some((&kind, msg)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => containerd_container(msg),
        1 => containerd_task(msg),
        2 => containerd_snapshot(msg),
        3 => cri_sandbox(msg),
        _ => cri_container(msg),
    }
}

fn tagged(kind: u8, m: impl Message) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend(m.encode_to_vec());
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let spec = br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"},"mounts":[{"destination":"/proc","type":"proc","source":"proc"}],"linux":{"namespaces":[{"type":"pid"}],"resources":{"memory":{"limit":1048576}}}}"#;
    let mut out = Vec::new();
    for id in ["c1", "../x", "a/b", "a..b", &"x".repeat(77)] {
        out.push(tagged(
            0,
            pb::CreateContainerRequest {
                container: Some(pb::Container {
                    id: id.into(),
                    image: "docker.io/library/busybox:latest".into(),
                    labels: [("a".to_string(), "b".to_string())].into(),
                    snapshotter: "overlayfs".into(),
                    snapshot_key: id.into(),
                    spec: Some(prost_types_any(spec)),
                    ..Default::default()
                }),
            },
        ));
        out.push(tagged(
            1,
            pb::CreateTaskRequest {
                container_id: id.into(),
                ..Default::default()
            },
        ));
    }
    out.push(tagged(
        2,
        pb::snapshots::PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "extract-1-sha256:x".into(),
            parent: "sha256:y".into(),
            labels: [("containerd.io/gc.root".to_string(), "1".to_string())].into(),
        },
    ));
    out.push(tagged(
        3,
        cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "pod".into(),
                    uid: "uid-1".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                log_directory: "/var/log/pods/default_pod_uid-1".into(),
                ..Default::default()
            }),
            runtime_handler: String::new(),
        },
    ));
    for log in ["c/0.log", "../../etc/shadow", "/etc/x", "a/../../b", "./."] {
        out.push(tagged(
            4,
            cri::CreateContainerRequest {
                pod_sandbox_id: "0123abcd".into(),
                config: Some(cri::ContainerConfig {
                    log_path: log.into(),
                    linux: Some(cri::LinuxContainerConfig {
                        resources: Some(cri::LinuxContainerResources {
                            cpu_shares: 512,
                            cpu_quota: -1,
                            memory_limit_in_bytes: 1 << 20,
                            cpuset_cpus: "0-1".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                sandbox_config: Some(cri::PodSandboxConfig {
                    log_directory: "/var/log/pods/ns_pod_uid".into(),
                    ..Default::default()
                }),
            },
        ));
    }
    out
}

fn prost_types_any(json: &[u8]) -> prost_types::Any {
    prost_types::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
        value: json.to_vec(),
    }
}
