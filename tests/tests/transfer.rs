//! Issue "Distribution in the daemon": the Transfer service (what containerd 2.x's ctr and
//! wharf's CLI call) pulls from the real registry into the image store with unpacking, so the
//! image runs; pushes an image back under a new name; refuses what it does not serve.

use containerd_client::services::v1 as pb;
use containerd_client::types::transfer as tt;
use prost::Message;
use wharf_tests::daemon::{with_ns, Wharfd};
use wharf_tests::images;
use wharf_tests::registry::Registry;

fn any<M: Message>(name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("types.containerd.io/{name}"),
        value: m.encode_to_vec(),
    }
}

fn registry(reference: &str) -> prost_types::Any {
    any(
        "containerd.types.transfer.OCIRegistry",
        &tt::OciRegistry {
            reference: reference.to_string(),
            resolver: None,
        },
    )
}

fn store(name: &str, unpack: bool) -> prost_types::Any {
    any(
        "containerd.types.transfer.ImageStore",
        &tt::ImageStore {
            name: name.to_string(),
            unpacks: if unpack {
                vec![tt::UnpackConfiguration {
                    platform: None,
                    snapshotter: "overlayfs".into(),
                }]
            } else {
                vec![]
            },
            ..Default::default()
        },
    )
}

async fn transfer(
    w: &Wharfd,
    source: prost_types::Any,
    destination: prost_types::Any,
) -> Result<(), tonic::Status> {
    let mut c = pb::transfer_client::TransferClient::new(w.channel().await.unwrap());
    c.transfer(with_ns(
        "test",
        pb::TransferRequest {
            source: Some(source),
            destination: Some(destination),
            options: None,
        },
    ))
    .await
    .map(|_| ())
}

#[test]
fn transfer_pulls_unpacks_runs_and_pushes() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(transfer(&w, registry(&r), store(&r, true)))
        .expect("pull through Transfer");
    let ls = w.ctr_ok(&["-n", "test", "images", "ls", "-q"]);
    assert!(ls.lines().any(|l| l == r), "{ls}");
    // Unpacked: the image runs without ctr unpacking anything itself.
    let snaps = w.ctr_ok(&["-n", "test", "snapshots", "ls"]);
    assert!(snaps.lines().count() >= 2, "{snaps}");
    let out = w.ctr_ok(&[
        "-n",
        "test",
        "run",
        "--rm",
        "--runtime",
        "io.containerd.wharf.v2",
        &r,
        "tr1",
        "echo",
        "pulled-by-wharfd",
    ]);
    assert_eq!(out.trim(), "pulled-by-wharfd");

    // Push it back under another name, then read the manifest from the registry.
    let copy = format!("{}/copied:v1", reg.host());
    rt.block_on(transfer(&w, store(&r, false), registry(&copy)))
        .expect("push through Transfer");
    let got = ureq::get(&format!("{}/v2/copied/manifests/v1", reg.url()))
        .set(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .call()
        .expect("pushed manifest");
    assert_eq!(got.status(), 200);

    // Errors: a missing image, a missing tag, an unsupported pair.
    let e = rt
        .block_on(transfer(&w, store("nope:latest", false), registry(&copy)))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = rt
        .block_on(transfer(
            &w,
            registry(&format!("{}/busybox:missing", reg.host())),
            store("x", true),
        ))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = rt
        .block_on(transfer(&w, store(&r, false), store("y", false)))
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
}

/// `wharf pull/images/push` go through the same Transfer service; failures are one line with
/// exit code 125.
#[test]
fn wharf_cli_pull_images_push() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let wharf = |args: &[&str]| {
        std::process::Command::new(wharf_tests::bin("wharf"))
            .arg("--address")
            .arg(&w.socket)
            .args(["-n", "test"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = wharf(&["pull", &r]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wharf(&["images", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r);
    let dest = format!("{}/again:v2", reg.host());
    let out = wharf(&["push", &r, &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wharf(&["pull", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = wharf(&["pull", &format!("{}/nothere:latest", reg.host())]);
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("wharf:")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert!(err.contains("not found"), "{err}");
}
