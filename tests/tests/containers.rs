//! Issue "Execution", part 1: container records through Debian's ctr (create, ls, info, label,
//! rm), with the container's snapshot held as a GC root.

use containerd_client::services::v1 as pb;
use pb::containers_client::ContainersClient;
use tonic::Code;
use wharf_tests::daemon::{with_ns, Wharfd};
use wharf_tests::images;
use wharf_tests::registry::Registry;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_records_with_ctr() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "images", "pull", "--plain-http", &r]);

    w.ctr_ok(&[
        "-n",
        "test",
        "containers",
        "create",
        "--label",
        "app=web",
        &r,
        "c1",
        "sleep",
        "1000",
    ]);
    let err = w.ctr_err(&["-n", "test", "containers", "create", &r, "c1"]);
    assert!(err.contains("already exists"), "{err}");
    let ls = w.ctr_ok(&["-n", "test", "containers", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with("c1"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(
        line.contains(&r) && line.contains("io.containerd.runc.v2"),
        "{line}"
    );
    let info = w.ctr_ok(&["-n", "test", "containers", "info", "c1"]);
    let v: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(v["SnapshotKey"], "c1");
    assert_eq!(v["Labels"]["app"], "web");
    assert_eq!(
        v["Spec"]["process"]["args"],
        serde_json::json!(["sleep", "1000"])
    );
    w.ctr_ok(&["-n", "test", "containers", "label", "c1", "tier=gold"]);
    let info: serde_json::Value =
        serde_json::from_str(&w.ctr_ok(&["-n", "test", "containers", "info", "c1"])).unwrap();
    assert_eq!(info["Labels"]["tier"], "gold");
    let filtered = w.ctr_ok(&["-n", "test", "containers", "ls", "-q", "labels.tier==gold"]);
    assert_eq!(filtered.trim(), "c1");

    // The container's snapshot is a GC root: deleting the image keeps it and its parents.
    w.ctr_ok(&["-n", "test", "images", "rm", "--sync", &r]);
    let snaps = w.ctr_ok(&["-n", "test", "snapshots", "ls"]);
    assert!(
        snaps.contains("c1") && snaps.contains("Committed"),
        "{snaps}"
    );

    // Bad input: a missing container, an invalid id.
    let mut client = ContainersClient::new(w.channel().await.unwrap());
    let e = client
        .get(with_ns(
            "test",
            pb::GetContainerRequest { id: "nope".into() },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "container \"nope\": not found");
    let bad = pb::Container {
        id: "bad/id".into(),
        runtime: Some(pb::container::Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "x".into(),
            value: vec![],
        }),
        ..Default::default()
    };
    let e = client
        .create(with_ns(
            "test",
            pb::CreateContainerRequest {
                container: Some(bad),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // rm removes the record and its snapshot; a sync GC then takes the unreferenced chain.
    w.ctr_ok(&["-n", "test", "containers", "rm", "c1"]);
    assert!(!w
        .ctr_ok(&["-n", "test", "containers", "ls", "-q"])
        .contains("c1"));
    assert!(!w.ctr_ok(&["-n", "test", "snapshots", "ls"]).contains("c1"));
    w.ctr_ok(&["-n", "test", "leases", "create", "--id", "tmp"]);
    w.ctr_ok(&["-n", "test", "leases", "rm", "--sync", "tmp"]);
    assert_eq!(
        w.ctr_ok(&["-n", "test", "snapshots", "ls"]).lines().count(),
        1,
        "chain must be collected"
    );
}
