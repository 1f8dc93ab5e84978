//! Issue "Streaming and archive transfers": containerd's Streaming service, the import/export
//! and progress halves of the Transfer service, and `wharf save` / `wharf load` over them,
//! against a real wharfd and registry.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_client::services::v1 as pb;
use containerd_client::services::v1::streaming_client::StreamingClient;
use containerd_client::types::transfer as tt;
use prost::Message;
use tokio::sync::mpsc;
use wharf_tests::daemon::{with_ns, Wharfd};
use wharf_tests::images;
use wharf_tests::registry::Registry;

fn any<M: Message>(name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: name.to_string(),
        value: m.encode_to_vec(),
    }
}

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A pulled busybox in wharfd's `default` namespace (where the CLI works); its reference.
fn pulled(reg: &Registry, w: &Wharfd) -> String {
    images::push(reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    w.wharf_ok(&["pull", "-q", &r]);
    r
}

/// The files of a tarball, by path.
fn tar_files(data: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut ar = tar::Archive::new(data);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf).unwrap();
        out.insert(path, buf);
    }
    out
}

/// `wharf save -o`, `rmi`, `load -i`, `run`: the image comes back whole and runs; the tarball
/// is an OCI layout with docker's manifest.json; stdout/stdin work the same way.
#[test]
fn save_rmi_load_run() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let w = Wharfd::start().unwrap();
    let r = pulled(&reg, &w);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("busybox.tar");
    let file_s = file.to_str().unwrap();

    w.wharf_ok(&["save", "-o", file_s, &r]);
    let data = std::fs::read(&file).unwrap();
    let files = tar_files(&data);
    assert!(files.contains_key("oci-layout"), "{:?}", files.keys());
    let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["annotations"]["io.containerd.image.name"], r.as_str());
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    assert_eq!(manifest[0]["RepoTags"][0], r.as_str());
    for p in manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(&manifest[0]["Config"]))
    {
        assert!(
            files.contains_key(p.as_str().unwrap()),
            "{p} in the tarball"
        );
    }
    let digest = entry["digest"].as_str().unwrap();
    assert!(files.contains_key(&format!("blobs/sha256/{}", &digest[7..])));
    // No temporary file is left next to it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    // To stdout: the same bytes (the export is deterministic).
    let out = Command::new(wharf_tests::bin("wharf"))
        .args(["--address", w.socket.to_str().unwrap(), "save", &r])
        .env("WHARF_DATA_ROOT", w.cli_root())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out).1);
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "stdout and -o give the same tarball");

    let out = w.wharf_ok(&["rmi", &r]);
    assert!(out.contains("Untagged"), "{out}");
    assert_eq!(w.wharf_ok(&["images", "-q"]).trim(), "");

    let out = w.wharf_ok(&["load", "-i", file_s]);
    assert_eq!(out.trim(), format!("Loaded image: {r}"));
    assert_eq!(w.wharf_ok(&["images", "-q"]).trim(), r);
    let out = w.wharf_ok(&["run", "--rm", "--network", "host", &r, "echo", "ok"]);
    assert_eq!(out, "ok\n");

    // From stdin, gzip-compressed, into another namespace; loading again is fine.
    let gz = images::gzip(&data).unwrap();
    let gz_file = dir.path().join("busybox.tar.gz");
    std::fs::write(&gz_file, &gz).unwrap();
    for _ in 0..2 {
        let out = Command::new(wharf_tests::bin("wharf"))
            .args([
                "--address",
                w.socket.to_str().unwrap(),
                "-n",
                "other",
                "load",
            ])
            .env("WHARF_DATA_ROOT", w.cli_root())
            .stdin(std::fs::File::open(&gz_file).unwrap())
            .output()
            .unwrap();
        let (so, se) = text(&out);
        assert!(out.status.success(), "{so}{se}\n{}", w.log());
        assert_eq!(so.trim(), format!("Loaded image: {r}"));
    }
    let out = w.wharf_ok(&[
        "-n",
        "other",
        "run",
        "--rm",
        "--network",
        "host",
        &r,
        "echo",
        "ok",
    ]);
    assert_eq!(out, "ok\n");

    // Errors: an unknown image, no tarball to a terminal is tested by hand (needs a tty).
    let out = w.wharf(&["save", "-o", file_s, "nothere:v1"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        data,
        "a failed save leaves the file alone"
    );
}

/// A truncated or corrupted tarball: one clear error line, exit 125, and no image behind.
/// (Stored by a first daemon, loaded into a second that has none of its blobs.)
#[test]
fn load_truncated_or_corrupt_fails_cleanly() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let w = Wharfd::start().unwrap();
    let r = pulled(&reg, &w);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("busybox.tar");
    w.wharf_ok(&["save", "-o", file.to_str().unwrap(), &r]);
    let data = std::fs::read(&file).unwrap();
    // A daemon without these blobs: one that has them skips their bytes, as containerd does.
    drop(w);
    let w = Wharfd::start().unwrap();

    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &data[..data.len() / 2 + 100]).unwrap();
    // Bytes flipped in the middle of the (largest) layer blob: its digest no longer matches.
    let mut bad = data.clone();
    let mid = data.len() / 2;
    for b in &mut bad[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let corrupt = dir.path().join("corrupt.tar");
    std::fs::write(&corrupt, &bad).unwrap();
    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, b"this is not a tarball at all\n".repeat(100)).unwrap();

    for f in [&truncated, &corrupt, &garbage] {
        let out = w.wharf(&["load", "-i", f.to_str().unwrap()]);
        let (so, se) = text(&out);
        eprintln!("{}: {se}", f.display());
        assert_eq!(out.status.code(), Some(125), "{f:?}: {so}{se}");
        let lines: Vec<&str> = se.lines().collect();
        assert_eq!(lines.len(), 1, "{f:?}: one error line: {se}");
        assert!(lines[0].starts_with("wharf: "), "{se}");
        assert!(so.is_empty(), "{so}");
        assert_eq!(
            w.wharf_ok(&["images", "-q"]).trim(),
            "",
            "{f:?}: no image left"
        );
    }
    // wharfd is fine afterwards.
    let out = w.wharf_ok(&["load", "-i", file.to_str().unwrap()]);
    assert_eq!(out.trim(), format!("Loaded image: {r}"));
}

/// Opens a stream as containerd's client does; returns its sender (kept to keep it open) and
/// the response stream, or the status the daemon answered with.
async fn open_stream(
    w: &Wharfd,
    ns: &str,
    id: &str,
) -> Result<
    (
        mpsc::Sender<prost_types::Any>,
        tonic::Streaming<prost_types::Any>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(any(
        "containerd.services.streaming.v1.StreamInit",
        &pb::StreamInit { id: id.into() },
    ))
    .await
    .unwrap();
    let outgoing =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut c = StreamingClient::new(w.channel().await.unwrap());
    let mut incoming = c.stream(with_ns(ns, outgoing)).await?.into_inner();
    let ack = incoming.message().await?.expect("an ack");
    assert!(ack.type_url.ends_with("google.protobuf.Empty"), "{ack:?}");
    Ok((tx, incoming))
}

/// Streaming ids are per namespace and taken while their stream lives; a pull sends
/// containerd's progress events on a progress stream and closes it at the end.
#[test]
fn streaming_ids_and_pull_progress() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let first = open_stream(&w, "test", "same-id").await.unwrap();
        let e = open_stream(&w, "test", "same-id").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        // Another namespace has ids of its own.
        let other = open_stream(&w, "test2", "same-id").await.unwrap();
        drop(other);
        // Closed by the client: the id is free again.
        drop(first);
        let mut again = None;
        for _ in 0..50 {
            match open_stream(&w, "test", "same-id").await {
                Ok(s) => {
                    again = Some(s);
                    break;
                }
                Err(e) if e.code() == tonic::Code::AlreadyExists => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(again.is_some(), "the id of a closed stream is reused");

        // A progress stream that does not exist.
        let mut transfer = pb::transfer_client::TransferClient::new(w.channel().await.unwrap());
        let store = any(
            "containerd.types.transfer.ImageStore",
            &tt::ImageStore {
                name: r.clone(),
                unpacks: vec![tt::UnpackConfiguration {
                    platform: None,
                    snapshotter: "overlayfs".into(),
                }],
                ..Default::default()
            },
        );
        let source = any(
            "containerd.types.transfer.OCIRegistry",
            &tt::OciRegistry {
                reference: r.clone(),
                resolver: None,
            },
        );
        let request = |progress: &str| pb::TransferRequest {
            source: Some(source.clone()),
            destination: Some(store.clone()),
            options: Some(pb::TransferOptions {
                progress_stream: progress.into(),
            }),
        };
        let e = transfer
            .transfer(with_ns("test", request("nothere")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

        // The pull's events.
        let (_keep, mut events) = open_stream(&w, "test", "progress-1").await.unwrap();
        let collector = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(Some(a)) = events.message().await {
                assert!(
                    a.type_url.ends_with("containerd.types.transfer.Progress"),
                    "{a:?}"
                );
                got.push(tt::Progress::decode(a.value.as_slice()).unwrap());
            }
            got
        });
        transfer
            .transfer(with_ns("test", request("progress-1")))
            .await
            .expect("pull with progress");
        let got = tokio::time::timeout(Duration::from_secs(10), collector)
            .await
            .expect("the progress stream is closed after the transfer")
            .unwrap();
        let named = |event: &str, prefix: &str| {
            got.iter()
                .filter(|p| p.event == event && p.name.starts_with(prefix))
                .collect::<Vec<_>>()
        };
        let waiting = named("waiting", "layer-sha256:");
        assert_eq!(waiting.len(), 1, "{got:#?}");
        assert!(
            waiting[0]
                .parents
                .iter()
                .any(|p| p.starts_with("manifest-sha256:")),
            "{got:#?}"
        );
        assert!(waiting[0].total > 0 && waiting[0].desc.is_some());
        assert!(
            !named("downloading", "layer-sha256:").is_empty(),
            "{got:#?}"
        );
        let complete = named("complete", "layer-sha256:");
        assert_eq!(complete.len(), 1, "{got:#?}");
        assert_eq!(complete[0].progress, complete[0].total);
        assert!(!named("complete", "config-sha256:").is_empty(), "{got:#?}");
        assert!(
            !named("complete", "manifest-sha256:").is_empty(),
            "{got:#?}"
        );
        // Order per blob: waiting, then downloading, then complete.
        let pos = |e: &str| {
            got.iter()
                .position(|p| p.event == e && p.name.starts_with("layer-"))
                .unwrap()
        };
        assert!(pos("waiting") < pos("downloading") && pos("downloading") < pos("complete"));
        assert!(
            got.iter().any(|p| p.event == "saved" && p.name == r),
            "{got:#?}"
        );

        // Export errors: an unknown image; a stream that does not exist.
        let export = |image: &str, stream: &str| pb::TransferRequest {
            source: Some(any(
                "containerd.types.transfer.ImageStore",
                &tt::ImageStore {
                    name: image.into(),
                    ..Default::default()
                },
            )),
            destination: Some(any(
                "containerd.types.transfer.ImageExportStream",
                &tt::ImageExportStream {
                    stream: stream.into(),
                    ..Default::default()
                },
            )),
            options: None,
        };
        let e = transfer
            .transfer(with_ns("test", export("nothere:v1", "progress-1")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let e = transfer
            .transfer(with_ns("test", export(&r, "no-such-stream")))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    });
}
