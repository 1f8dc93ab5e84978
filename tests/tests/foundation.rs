//! Issue "Foundation": wharfd on containerd's API with Debian's ctr as the client — version,
//! namespaces, content (fetch, ls, get, resumable and verified ingest), images, leases, GC, crash
//! safety and bad input.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd_client::services::v1 as pb;
use pb::content_client::ContentClient;
use pb::images_client::ImagesClient;
use pb::leases_client::LeasesClient;
use pb::namespaces_client::NamespacesClient;
use tonic::Code;
use wharf_tests::daemon::{with_ns, Wharfd};
use wharf_tests::images;
use wharf_tests::registry::Registry;

fn registry_with_busybox() -> (Registry, images::Image) {
    let reg = Registry::start().expect("registry");
    let img = images::busybox().expect("busybox image");
    images::push(&reg, "busybox", "latest", &img).expect("push");
    (reg, img)
}

#[test]
fn version_plugins_and_namespaces() {
    let w = Wharfd::start().unwrap();
    let v = w.ctr_ok(&["version"]);
    assert!(
        v.contains("Server:") && v.contains("v0.1.0") && v.contains("UUID:"),
        "{v}"
    );
    let p = w.ctr_ok(&["plugins", "ls"]);
    for want in [
        "io.containerd.content.v1",
        "overlayfs",
        "io.containerd.grpc.v1",
    ] {
        assert!(p.contains(want), "plugins ls lacks {want}:\n{p}");
    }
    w.ctr_ok(&["namespaces", "create", "alpha", "team=blue"]);
    assert!(w
        .ctr_err(&["namespaces", "create", "alpha"])
        .contains("already exists"));
    w.ctr_ok(&["namespaces", "label", "alpha", "env=test"]);
    let ls = w.ctr_ok(&["namespaces", "ls"]);
    let line = ls
        .lines()
        .find(|l| l.starts_with("alpha"))
        .unwrap_or_default();
    assert!(
        line.contains("team=blue") && line.contains("env=test"),
        "{ls}"
    );
    w.ctr_ok(&["namespaces", "label", "alpha", "team="]);
    assert!(!w.ctr_ok(&["namespaces", "ls"]).contains("team=blue"));
    w.ctr_ok(&["namespaces", "rm", "alpha"]);
    assert!(!w
        .ctr_ok(&["namespaces", "ls", "-q"])
        .lines()
        .any(|l| l == "alpha"));
    // The uuid survives a restart.
    let uuid = |s: &str| s.lines().find(|l| l.contains("UUID")).map(str::to_string);
    let mut w = w;
    let before = uuid(&v);
    w.stop().unwrap();
    w.spawn().unwrap();
    assert_eq!(uuid(&w.ctr_ok(&["version"])), before);
}

#[test]
fn content_fetch_list_get() {
    let (reg, img) = registry_with_busybox();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "content", "fetch", "--plain-http", &r]);
    let ls = w.ctr_ok(&["-n", "test", "content", "ls"]);
    for (d, size) in [
        (&img.manifest_digest, img.manifest.len()),
        (&img.config_digest, img.config.len()),
        (&img.layers[0].digest, img.layers[0].gz.len()),
    ] {
        let line = ls
            .lines()
            .find(|l| l.starts_with(d.as_str()))
            .unwrap_or_else(|| panic!("{d} not in\n{ls}"));
        let human = if size < 1024 {
            format!("{size}B")
        } else {
            String::new()
        };
        assert!(human.is_empty() || line.contains(&human), "{line}");
    }
    // The manifest carries the GC references ctr sets on its children.
    let mline = ls
        .lines()
        .find(|l| l.starts_with(img.manifest_digest.as_str()))
        .unwrap_or_default();
    assert!(
        mline.contains("containerd.io/gc.ref.content.config="),
        "{mline}"
    );
    // content get returns the exact bytes.
    let out = w.ctr(&["-n", "test", "content", "get", &img.layers[0].digest]);
    assert!(out.status.success());
    assert_eq!(out.stdout, img.layers[0].gz);
    let out = w.ctr(&["-n", "test", "content", "get", &img.manifest_digest]);
    assert_eq!(out.stdout, img.manifest);
    // Another namespace does not see it.
    assert!(w
        .ctr_err(&["-n", "other", "content", "get", &img.config_digest])
        .contains("not found"));
    // Fetching again is a no-op answered with AlreadyExists internally.
    w.ctr_ok(&["-n", "test", "content", "fetch", "--plain-http", &r]);
}

fn ingest_cmd(w: &Wharfd, args: &[&str]) -> std::process::Child {
    Command::new("ctr")
        .arg("--address")
        .arg(&w.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `ctr content ingest` with `data` on stdin; returns its output.
fn ingest(w: &Wharfd, args: &[&str], data: &[u8]) -> std::process::Output {
    let mut c = ingest_cmd(w, args);
    let mut stdin = c.stdin.take().unwrap();
    let written = stdin.write_all(data);
    drop(stdin);
    let out = c.wait_with_output().unwrap();
    if let Err(e) = written {
        panic!(
            "ctr {args:?} stopped reading ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            w.log()
        );
    }
    out
}

/// Runs `ctr content ingest` reading a file (seekable, so ctr can resume at the ingest's offset).
fn ingest_file(w: &Wharfd, args: &[&str], data: &[u8]) -> std::process::Output {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), data).unwrap();
    Command::new("ctr")
        .arg("--address")
        .arg(&w.socket)
        .args(args)
        .stdin(std::fs::File::open(f.path()).unwrap())
        .output()
        .unwrap()
}

fn active_offset(w: &Wharfd, r: &str) -> Option<u64> {
    let out = w.ctr_ok(&["-n", "test", "content", "active"]);
    // REF SIZE AGE: SIZE is the offset in human units; use the status through gRPC instead when exact.
    out.lines().find(|l| l.starts_with(r)).map(|_| 1)
}

/// `len` bytes that do not repeat within a chunk (so a misplaced chunk changes the digest).
fn noise(len: u32) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_write_resumes_and_wrong_digest_is_refused() {
    let w = Wharfd::start().unwrap();
    let data = noise(8 << 20);
    let digest = images::sha256(&data);
    let size = data.len().to_string();
    let args = [
        "-n",
        "test",
        "content",
        "ingest",
        "--expected-size",
        &size,
        "--expected-digest",
        &digest,
        "big",
    ];
    // Send half, wait until wharfd has it, then kill the client.
    let mut c = ingest_cmd(&w, &args);
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(&data[..data.len() / 2]).unwrap();
    stdin.flush().unwrap();
    let mut client = ContentClient::new(w.channel().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let offset = loop {
        let st = client
            .status(with_ns(
                "test",
                pb::StatusRequest {
                    r#ref: "big".into(),
                },
            ))
            .await;
        if let Ok(st) = st {
            let o = st.into_inner().status.unwrap().offset;
            if o > 0 {
                break o;
            }
        }
        assert!(Instant::now() < deadline, "ingest never progressed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    c.kill().unwrap();
    let _ = c.wait();
    drop(stdin);
    // The ingest is still there, with its offset, and nothing is committed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = client
        .status(with_ns(
            "test",
            pb::StatusRequest {
                r#ref: "big".into(),
            },
        ))
        .await
        .unwrap();
    let st = st.into_inner().status.unwrap();
    assert!(
        st.offset >= offset && st.offset <= (data.len() / 2) as i64,
        "{st:?}"
    );
    assert_eq!(st.total, data.len() as i64);
    assert!(active_offset(&w, "big").is_some());
    assert!(!w.blob_path(&digest).exists());

    // The same ref resumes from its offset and commits the right blob.
    let out = ingest_file(&w, &args, &data);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(w.blob_path(&digest)).unwrap(), data);
    let log = w.log();
    assert!(log.contains("big") || !log.is_empty());

    // A wrong expected digest: FailedPrecondition, nothing committed or listed.
    let wrong = images::sha256(b"something else");
    let out = ingest(
        &w,
        &[
            "-n",
            "test",
            "content",
            "ingest",
            "--expected-digest",
            &wrong,
            "bad",
        ],
        b"these bytes do not hash to the expected digest",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unexpected commit digest") && err.contains("failed precondition"),
        "{err}"
    );
    let ls = w.ctr_ok(&["-n", "test", "content", "ls", "-q"]);
    assert!(!ls.contains(&wrong));
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert!(!w
        .blob_path(&images::sha256(
            b"these bytes do not hash to the expected digest"
        ))
        .exists());
}

/// A client that does not wait for each answer (as a pull does): WRITEs continuing at the
/// offset are answered in order, ahead of their bytes being hashed and written; a
/// STAT after them waits for those bytes and reports their offset and digest; a WRITE at a
/// wrong offset fails the stream and keeps what was written for a resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_answer_in_order_and_resume() {
    use tokio_stream::wrappers::ReceiverStream;
    let w = Wharfd::start().unwrap();
    let data = noise(3 << 20);
    let digest = images::sha256(&data);
    let chunk = 256 << 10;
    let total = data.len() as i64;
    let mut client = ContentClient::new(w.channel().await.unwrap());
    let open = |client: &mut ContentClient<_>| {
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::WriteContentRequest>(16);
        let mut c = client.clone();
        async move {
            let first = pb::WriteContentRequest {
                action: pb::WriteAction::Stat as i32,
                r#ref: "pipe".into(),
                total,
                ..Default::default()
            };
            tx.send(first).await.unwrap();
            let answers = c
                .write(with_ns("test", ReceiverStream::new(rx)))
                .await
                .unwrap()
                .into_inner();
            (tx, answers)
        }
    };
    let write = |offset: usize, data: &[u8]| pb::WriteContentRequest {
        action: pb::WriteAction::Write as i32,
        offset: offset as i64,
        data: data.to_vec(),
        ..Default::default()
    };

    let (tx, mut answers) = open(&mut client).await;
    assert_eq!(answers.message().await.unwrap().unwrap().offset, 0);
    for i in 0..4 {
        tx.send(write(i * chunk, &data[i * chunk..(i + 1) * chunk]))
            .await
            .unwrap();
    }
    tx.send(pb::WriteContentRequest {
        action: pb::WriteAction::Stat as i32,
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 1..=4 {
        let a = answers.message().await.unwrap().unwrap();
        assert_eq!(
            (a.action, a.offset),
            (pb::WriteAction::Write as i32, (i * chunk) as i64)
        );
        assert_eq!(a.total, total);
    }
    let st = answers.message().await.unwrap().unwrap();
    assert_eq!(
        (st.action, st.offset),
        (pb::WriteAction::Stat as i32, (4 * chunk) as i64)
    );
    assert_eq!(
        st.digest,
        images::sha256(&data[..4 * chunk]),
        "digest of what was written"
    );
    // A WRITE that skips ahead fails the stream; the bytes before it stay.
    tx.send(write(5 * chunk, &data[5 * chunk..6 * chunk]))
        .await
        .unwrap();
    let e = match answers.message().await {
        Ok(Some(a)) => panic!("answered a WRITE at the wrong offset: {a:?}"),
        Ok(None) => panic!("stream ended without an error"),
        Err(e) => e,
    };
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    drop(tx);
    assert!(!w.blob_path(&digest).exists());

    // The same ref resumes at that offset; the rest, then COMMIT with the expected digest.
    let (tx, mut answers) = open(&mut client).await;
    let resumed = answers.message().await.unwrap().unwrap().offset as usize;
    assert_eq!(resumed, 4 * chunk);
    let mut sent = 0;
    for (i, c) in data[resumed..].chunks(chunk).enumerate() {
        tx.send(write(resumed + i * chunk, c)).await.unwrap();
        sent += 1;
    }
    tx.send(pb::WriteContentRequest {
        action: pb::WriteAction::Commit as i32,
        offset: total,
        total,
        expected: digest.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    for _ in 0..sent {
        answers.message().await.unwrap().unwrap();
    }
    let done = answers.message().await.unwrap().unwrap();
    assert_eq!(
        (done.action, done.digest.as_str()),
        (pb::WriteAction::Commit as i32, digest.as_str())
    );
    assert_eq!(std::fs::read(w.blob_path(&digest)).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_leases_and_gc() {
    let (reg, img) = registry_with_busybox();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "content", "fetch", "--plain-http", &r]);
    let fetched = w.ctr_ok(&["-n", "test", "images", "ls", "-q"]);
    let mut images_c = ImagesClient::new(w.channel().await.unwrap());
    let image = pb::Image {
        name: "busybox:test".into(),
        target: Some(containerd_client::types::Descriptor {
            media_type: images::MEDIA_MANIFEST.into(),
            digest: img.manifest_digest.clone(),
            size: img.manifest.len() as i64,
            annotations: Default::default(),
        }),
        ..Default::default()
    };
    images_c
        .create(with_ns(
            "test",
            pb::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap();
    let e = images_c
        .create(with_ns(
            "test",
            pb::CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    // ctr's fetch recorded the image under its reference: drop that record so ours is the root.
    for name in fetched.lines() {
        w.ctr_ok(&["-n", "test", "images", "rm", name]);
    }
    let ls = w.ctr_ok(&["-n", "test", "images", "ls", "-q"]);
    assert!(ls.lines().any(|l| l == "busybox:test"), "{ls}");
    w.ctr_ok(&["-n", "test", "images", "label", "busybox:test", "tier=gold"]);
    assert!(w
        .ctr_ok(&["-n", "test", "images", "ls"])
        .contains("tier=gold"));
    let e = images_c
        .update(with_ns(
            "test",
            pb::UpdateImageRequest {
                image: Some(pb::Image {
                    name: "nope".into(),
                    ..image.clone()
                }),
                update_mask: None,
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // An unreferenced blob held by a lease survives GC until the lease goes.
    let mut leases = LeasesClient::new(w.channel().await.unwrap());
    leases
        .create(with_ns(
            "test",
            pb::CreateRequest {
                id: "hold".into(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap();
    let extra = b"leased extra blob".to_vec();
    let extra_d = images::sha256(&extra);
    let out = ingest(&w, &["-n", "test", "content", "ingest", "extra"], &extra);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    leases
        .add_resource(with_ns(
            "test",
            pb::AddResourceRequest {
                id: "hold".into(),
                resource: Some(pb::Resource {
                    id: extra_d.clone(),
                    r#type: "content".into(),
                }),
            },
        ))
        .await
        .unwrap();
    let unref = b"nothing references me".to_vec();
    let unref_d = images::sha256(&unref);
    let out = ingest(&w, &["-n", "test", "content", "ingest", "unref"], &unref);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleting another image with sync runs GC: only unreferenced blobs go.
    images_c
        .create(with_ns(
            "test",
            pb::CreateImageRequest {
                image: Some(pb::Image {
                    name: "tmp".into(),
                    ..image.clone()
                }),
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap();
    images_c
        .delete(with_ns(
            "test",
            pb::DeleteImageRequest {
                name: "tmp".into(),
                sync: true,
                target: None,
            },
        ))
        .await
        .unwrap();
    assert!(
        !w.blob_path(&unref_d).exists(),
        "unreferenced blob must be collected"
    );
    for d in [
        &img.manifest_digest,
        &img.config_digest,
        &img.layers[0].digest,
        &extra_d,
    ] {
        assert!(w.blob_path(d).exists(), "{d} must survive");
    }
    leases
        .delete(with_ns(
            "test",
            pb::DeleteRequest {
                id: "hold".into(),
                sync: true,
            },
        ))
        .await
        .unwrap();
    assert!(!w.blob_path(&extra_d).exists());
    // ctr images rm --sync: the image's blobs go with it.
    w.ctr_ok(&["-n", "test", "images", "rm", "--sync", "busybox:test"]);
    for d in [
        &img.manifest_digest,
        &img.config_digest,
        &img.layers[0].digest,
    ] {
        assert!(!w.blob_path(d).exists(), "{d} must be collected");
    }
    assert!(w
        .ctr_ok(&["-n", "test", "content", "ls", "-q"])
        .trim()
        .is_empty());
}

#[test]
fn sigkill_during_write_restarts_cleanly() {
    let mut w = Wharfd::start().unwrap();
    let committed = b"committed before the crash".to_vec();
    let committed_d = images::sha256(&committed);
    let out = ingest(&w, &["-n", "test", "content", "ingest", "c1"], &committed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A GC root, so the collection at restart keeps it (unreferenced content goes, as in containerd).
    w.ctr_ok(&[
        "-n",
        "test",
        "content",
        "label",
        &committed_d,
        "containerd.io/gc.root=test",
    ]);

    let data = vec![7u8; 6 << 20];
    let digest = images::sha256(&data);
    let size = data.len().to_string();
    let mut c = ingest_cmd(
        &w,
        &[
            "-n",
            "test",
            "content",
            "ingest",
            "--expected-size",
            &size,
            "--expected-digest",
            &digest,
            "crash",
        ],
    );
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(&data[..3 << 20]).unwrap();
    // Killed once the ingest is under way (listed as active).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !w
        .ctr_ok(&["-n", "test", "content", "active"])
        .contains("crash")
    {
        assert!(Instant::now() < deadline, "the ingest never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    w.kill();
    let _ = c.kill();
    let _ = c.wait();
    drop(stdin);

    w.spawn().unwrap();
    assert_eq!(std::fs::read(w.blob_path(&committed_d)).unwrap(), committed);
    assert!(
        !w.blob_path(&digest).exists(),
        "an interrupted ingest must never be visible as content"
    );
    let ls = w.ctr_ok(&["-n", "test", "content", "ls", "-q"]);
    assert_eq!(ls.trim(), committed_d);
    // The interrupted ingest is resumable.
    let active = w.ctr_ok(&["-n", "test", "content", "active"]);
    assert!(active.contains("crash"), "{active}");
    let out = ingest_file(
        &w,
        &[
            "-n",
            "test",
            "content",
            "ingest",
            "--expected-size",
            &size,
            "--expected-digest",
            &digest,
            "crash",
        ],
        &data,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.blob_path(&digest).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_containerd_status_codes() {
    let w = Wharfd::start().unwrap();
    let ch = w.channel().await.unwrap();
    let mut content = ContentClient::new(ch.clone());
    let mut images_c = ImagesClient::new(ch.clone());
    let mut ns = NamespacesClient::new(ch.clone());

    // No namespace header: FailedPrecondition, as containerd's NamespaceRequired.
    let e = content
        .info(tonic::Request::new(pb::InfoRequest {
            digest: images::sha256(b"x"),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("namespace is required"));
    // An invalid namespace identifier.
    let e = content
        .info(with_ns(
            "bad..ns",
            pb::InfoRequest {
                digest: images::sha256(b"x"),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // Unknown namespace / missing content: NotFound with containerd's message.
    let d = images::sha256(b"x");
    let e = content
        .info(with_ns("unknown", pb::InfoRequest { digest: d.clone() }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), format!("content {d}: not found"));
    // Malformed digest.
    let e = content
        .info(with_ns(
            "test",
            pb::InfoRequest {
                digest: "sha256:xyz".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // Read beyond the size.
    let out = w.ctr_input(&["-n", "test", "content", "ingest", "small"], b"12345");
    assert!(out.status.success());
    let d = images::sha256(b"12345");
    let mut s = content
        .read(with_ns(
            "test",
            pb::ReadContentRequest {
                digest: d.clone(),
                offset: 2,
                size: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.message().await.unwrap().unwrap().data, b"345");
    let e = match content
        .read(with_ns(
            "test",
            pb::ReadContentRequest {
                digest: d.clone(),
                offset: 99,
                size: 0,
            },
        ))
        .await
    {
        Err(e) => e,
        Ok(s) => s.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    // Update of a missing image.
    let e = images_c
        .update(with_ns(
            "test",
            pb::UpdateImageRequest {
                image: Some(pb::Image {
                    name: "missing".into(),
                    ..Default::default()
                }),
                update_mask: None,
                source_date_epoch: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("image \"missing\""), "{e}");
    // An invalid namespace name and a non-empty namespace delete.
    let e = ns
        .create(tonic::Request::new(pb::CreateNamespaceRequest {
            namespace: Some(pb::Namespace {
                name: "../etc".into(),
                labels: Default::default(),
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = ns
        .delete(tonic::Request::new(pb::DeleteNamespaceRequest {
            name: "test".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("must be empty"), "{e}");
    let e = ns
        .delete(tonic::Request::new(pb::DeleteNamespaceRequest {
            name: "missing".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(e.message(), "namespace \"missing\": not found");
    // The daemon keeps serving.
    assert!(w.ctr_ok(&["version"]).contains("Server"));
}

#[test]
fn sockets_stale_live_and_sigterm() {
    let mut w = Wharfd::start().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&w.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    let ttrpc = format!("{}.ttrpc", w.socket.display());
    assert!(std::path::Path::new(&ttrpc).exists());
    // A second daemon on the same socket is refused while the first lives.
    let out = Command::new(wharf_tests::bin("wharfd"))
        .args([
            "--root",
            &w.dir.path().join("root2").to_string_lossy(),
            "--address",
        ])
        .arg(&w.socket)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already serving"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // SIGTERM: clean exit, sockets removed.
    let st = w.stop().unwrap();
    assert!(st.success(), "{st}");
    assert!(!w.socket.exists());
    // A stale socket file (nothing listening) is replaced.
    let _stale = std::os::unix::net::UnixListener::bind(&w.socket).unwrap();
    drop(_stale);
    assert!(w.socket.exists());
    w.spawn().unwrap();
    assert!(w.ctr_ok(&["version"]).contains("Server"));
}

#[test]
fn events_reach_subscribers_with_filters() {
    let w = Wharfd::start().unwrap();
    let mut cmd = Command::new("ctr");
    cmd.arg("--address")
        .arg(&w.socket)
        .args(["events", "topic~=^/namespaces/"]);
    let sub = wharf_tests::events::Subscriber::spawn(cmd);
    // The subscription is in place once a probe's event comes through.
    let mut n = 0;
    sub.subscribe(
        || {
            n += 1;
            w.ctr_ok(&["namespaces", "create", &format!("probe{n}")]);
        },
        |t| t.contains("/namespaces/create"),
    );
    w.ctr_ok(&["namespaces", "create", "evt"]);
    let out = ingest(
        &w,
        &["-n", "evt", "content", "ingest", "x"],
        b"an event that is filtered out",
    );
    assert!(out.status.success());
    w.ctr_ok(&["namespaces", "label", "evt", "k=v"]);
    // Events come in order: had the filter let /content/create through, it came before this.
    sub.wait_for("/namespaces/update", |t| t.contains("/namespaces/update"));
    let text = sub.stop();
    assert!(
        text.lines()
            .any(|l| l.contains("/namespaces/create") && l.contains("evt")),
        "{text}"
    );
    assert!(
        !text.contains("/content/create"),
        "filter must drop other topics: {text}"
    );
}
