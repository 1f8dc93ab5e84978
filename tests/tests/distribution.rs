//! Issue "Distribution in the daemon": wharf's own pull (wharf-distribution) against Debian's
//! docker-registry and a small misbehaving server, into a temporary root with real core stores
//! (content, metadata, overlay snapshotter).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wharf_core::content::Store;
use wharf_core::metadata::Db;
use wharf_core::snapshots::{Overlay, SnapshotStore};
use wharf_core::Digest;
use wharf_distribution::auth::Credentials;
use wharf_distribution::pull::{pull, Progress, PullOptions, Pulled, Unpack};
use wharf_distribution::Kind;
use wharf_tests::fake_registry::{serve_image, FakeRegistry, Reply, Request};
use wharf_tests::images::{self, Image};
use wharf_tests::registry::Registry;

const NS: &str = "test";

/// A wharf root: metadata over a content store, and an overlay snapshotter.
struct Root {
    dir: tempfile::TempDir,
    db: Db,
    snaps: SnapshotStore,
}

/// The stores of a root directory (one process at a time: redb locks the database).
fn open_stores(dir: &Path) -> (Db, SnapshotStore) {
    let content = Store::open(dir.join("content")).unwrap();
    let db = Db::open(&dir.join("meta.db"), content).unwrap();
    let snaps = SnapshotStore::open(
        "overlayfs",
        dir.join("overlayfs"),
        db.clone(),
        Arc::new(Overlay),
    )
    .unwrap();
    (db, snaps)
}

/// A root directory for a test, not yet opened. Not /tmp: overlay needs xattrs tmpfs may lack.
fn root_dir() -> tempfile::TempDir {
    wharf_tests::require_root();
    tempfile::Builder::new()
        .prefix("wharf-dist")
        .tempdir_in("/var/tmp")
        .unwrap()
}

impl Root {
    fn new() -> Root {
        Root::open(root_dir())
    }

    fn open(dir: tempfile::TempDir) -> Root {
        let (db, snaps) = open_stores(dir.path());
        Root { dir, db, snaps }
    }

    fn opts(&self) -> PullOptions {
        PullOptions {
            unpack: Some(Unpack {
                snapshotter: self.snaps.clone(),
                tmp: self.dir.path().join("tmp"),
            }),
            ..Default::default()
        }
    }

    /// Fast failure settings for the misbehaviour tests.
    fn quick_opts(&self) -> PullOptions {
        let mut o = self.opts();
        o.client.max_retry_wait = Duration::from_millis(200);
        o
    }

    /// The fs directory of the committed snapshot `chain`.
    fn snapshot_fs(&self, chain: &str) -> PathBuf {
        let info = self.snaps.stat(NS, chain).unwrap();
        self.snaps.dir(&info.id).join("fs")
    }

    fn labels(&self, d: &str) -> std::collections::BTreeMap<String, String> {
        self.db
            .content_info(NS, &Digest::parse(d).unwrap())
            .unwrap()
            .labels
    }

    fn has_blob(&self, d: &str) -> bool {
        self.db.content_store().exists(&Digest::parse(d).unwrap())
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn do_pull(root: &Root, reference: &str, opts: &PullOptions) -> wharf_distribution::Result<Pulled> {
    rt().block_on(pull(&root.db, NS, reference, opts))
}

type Events = Arc<std::sync::Mutex<Vec<Progress>>>;

/// `opts` with a progress callback recording every report.
fn recording(mut opts: PullOptions) -> (PullOptions, Events) {
    let events: Events = Arc::default();
    let e = events.clone();
    opts.progress = Some(Arc::new(move |p| e.lock().unwrap().push(p)));
    (opts, events)
}

fn chain_ids(img: &Image) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in &img.layers {
        let next = match out.last() {
            None => l.diff_id.clone(),
            Some(prev) => images::sha256(format!("{prev} {}", l.diff_id).as_bytes()),
        };
        out.push(next);
    }
    out
}

#[test]
fn pull_busybox_and_multilayer_from_the_registry() {
    let root = Root::new();
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    let ml = images::multilayer().unwrap();
    images::push(&reg, "multi/layer", "v1", &ml).unwrap();

    let r = format!("{}/busybox", reg.host());
    let p = do_pull(&root, &r, &root.opts()).unwrap();
    // The record is named by the normalised reference and targets the pushed manifest.
    assert_eq!(p.image.name, format!("{}/busybox:latest", reg.host()));
    let rec = root.db.image_get(NS, &p.image.name).unwrap();
    assert_eq!(rec.target.digest, bb.manifest_digest);
    assert_eq!(rec.target.media_type, images::MEDIA_MANIFEST);
    assert_eq!(rec.target.size, bb.manifest.len() as i64);
    // Content with containerd's labels.
    let ml_labels = root.labels(&bb.manifest_digest);
    assert_eq!(
        ml_labels.get("containerd.io/gc.ref.content.config"),
        Some(&bb.config_digest)
    );
    assert_eq!(
        ml_labels.get("containerd.io/gc.ref.content.l.0"),
        Some(&bb.layers[0].digest)
    );
    let source = format!("containerd.io/distribution.source.{}", reg.host());
    for d in [&bb.manifest_digest, &bb.config_digest, &bb.layers[0].digest] {
        assert_eq!(
            root.labels(d).get(&source).map(String::as_str),
            Some("busybox"),
            "{d}"
        );
    }
    assert_eq!(
        root.labels(&bb.layers[0].digest)
            .get("containerd.io/uncompressed"),
        Some(&bb.layers[0].diff_id)
    );
    // Byte-identical blobs.
    let stored = root
        .db
        .content_store()
        .read_at(&Digest::parse(&bb.layers[0].digest).unwrap(), 0, 0)
        .unwrap();
    assert!(stored == bb.layers[0].gz);
    // Unpacked: the snapshot holds the busybox binary.
    let chain = &chain_ids(&bb)[0];
    assert_eq!(
        p.chain_id.as_ref().map(|c| c.to_string()).as_ref(),
        Some(chain)
    );
    let fs = root.snapshot_fs(chain);
    assert_eq!(
        std::fs::read(fs.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        std::fs::read_link(fs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    assert!(
        root.db
            .lease_list(NS, &Default::default())
            .unwrap()
            .is_empty(),
        "pull lease left behind"
    );

    // Multi-layer, three chain IDs, each layer in its own snapshot.
    let p = do_pull(
        &root,
        &format!("{}/multi/layer:v1", reg.host()),
        &root.opts(),
    )
    .unwrap();
    let chains = chain_ids(&ml);
    assert_eq!(p.layers.len(), 3);
    assert_eq!(p.chain_id.map(|c| c.to_string()).as_ref(), Some(&chains[2]));
    for (i, c) in chains.iter().enumerate() {
        let info = root.snaps.stat(NS, c).unwrap();
        assert_eq!(info.parent.as_ref(), i.checked_sub(1).map(|j| &chains[j]));
    }
    let l3 = root.snapshot_fs(&chains[2]);
    assert_eq!(
        std::fs::read_to_string(l3.join("etc/b")).unwrap(),
        "b rewritten in layer 3\n"
    );
    assert_eq!(
        std::fs::read_link(l3.join("abs-link")).unwrap(),
        Path::new("/etc/b")
    );
    // Layer 2's whiteout of etc/a is an overlay whiteout (0/0 char device).
    let wh = std::fs::symlink_metadata(root.snapshot_fs(&chains[1]).join("etc/a")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &wh.file_type()
    ));

    // Pulling again changes nothing and fetches no blob.
    let before = root.db.content_store().walk().unwrap().len();
    let again = do_pull(&root, &r, &root.opts()).unwrap();
    assert_eq!(again.manifest.to_string(), bb.manifest_digest);
    assert_eq!(root.db.content_store().walk().unwrap().len(), before);
}

#[test]
fn pull_by_digest_and_platform_selection_from_an_index() {
    let root = Root::new();
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "multi", "amd64-only", &bb).unwrap();
    let arm_layers = images::multilayer_layers()
        .into_iter()
        .take(1)
        .map(images::Layer::new)
        .collect::<anyhow::Result<Vec<_>>>()
        .unwrap();
    let arm = Image::new(arm_layers, "arm64", &["sh"]).unwrap();
    images::push(&reg, "multi", "arm64-only", &arm).unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": images::MEDIA_INDEX,
        "manifests": [
            {"mediaType": images::MEDIA_MANIFEST, "digest": arm.manifest_digest, "size": arm.manifest.len(),
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": images::MEDIA_MANIFEST, "digest": bb.manifest_digest, "size": bb.manifest.len(),
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }))
    .unwrap();
    images::push_manifest(&reg, "multi", "latest", images::MEDIA_INDEX, &index).unwrap();
    let index_digest = images::sha256(&index);

    // By digest: the record targets exactly that manifest. With the caller's lease and labels.
    root.db
        .lease_create(NS, "client-lease", Default::default())
        .unwrap();
    let by_digest = format!("{}/multi@{}", reg.host(), bb.manifest_digest);
    let o = PullOptions {
        lease: Some("client-lease".into()),
        labels: [("io.cri-containerd.image".to_string(), "managed".to_string())].into(),
        ..Default::default()
    };
    let p = do_pull(&root, &by_digest, &o).unwrap();
    assert_eq!(p.image.name, by_digest);
    assert_eq!(p.image.target.digest, bb.manifest_digest);
    assert_eq!(
        p.image
            .labels
            .get("io.cri-containerd.image")
            .map(String::as_str),
        Some("managed")
    );
    let held = root.db.lease_list_resources(NS, "client-lease").unwrap();
    assert!(held.iter().any(|r| r.id == bb.layers[0].digest), "{held:?}");
    assert_eq!(
        root.db.lease_list(NS, &Default::default()).unwrap().len(),
        1
    );
    let o = PullOptions {
        lease: Some("no-such-lease".into()),
        ..Default::default()
    };
    let e = do_pull(&root, &by_digest, &o).unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");

    // The index: linux/amd64 by default, its entry labelled as a GC reference.
    let r = format!("{}/multi:latest", reg.host());
    let p = do_pull(&root, &r, &root.opts()).unwrap();
    assert_eq!(p.image.target.digest, index_digest);
    assert_eq!(p.image.target.media_type, images::MEDIA_INDEX);
    assert_eq!(p.manifest.to_string(), bb.manifest_digest);
    assert_eq!(
        root.labels(&index_digest)
            .get("containerd.io/gc.ref.content.m.1"),
        Some(&bb.manifest_digest)
    );
    assert!(
        !root.has_blob(&arm.layers[0].digest),
        "the other platform's layer was fetched"
    );

    // --platform linux/arm64 picks the other entry.
    let mut o = PullOptions {
        platform: Some(wharf_core::images::Platform::parse("linux/arm64").unwrap()),
        ..Default::default()
    };
    let p = do_pull(&root, &r, &o).unwrap();
    assert_eq!(p.manifest.to_string(), arm.manifest_digest);
    assert!(root.has_blob(&arm.layers[0].digest));

    // A platform the index lacks is NotFound, naming it.
    o.platform = Some(wharf_core::images::Platform::parse("linux/s390x").unwrap());
    let e = do_pull(&root, &r, &o).unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.to_string().contains("linux/s390x"), "{e}");
    // All platforms into a fresh root: both images' content, the index referencing both.
    let all = Root::new();
    let o_all = PullOptions {
        all_platforms: true,
        ..all.opts()
    };
    let p = do_pull(&all, &r, &o_all).unwrap();
    assert_eq!(
        p.manifest.to_string(),
        bb.manifest_digest,
        "unpacks the host's platform"
    );
    for l in bb.layers.iter().chain(arm.layers.iter()) {
        assert!(all.has_blob(&l.digest), "{}", l.digest);
    }
    let labels = all.labels(&index_digest);
    assert_eq!(
        labels.get("containerd.io/gc.ref.content.m.0"),
        Some(&arm.manifest_digest)
    );
    assert_eq!(
        labels.get("containerd.io/gc.ref.content.m.1"),
        Some(&bb.manifest_digest)
    );
    assert_eq!(
        all.labels(&arm.manifest_digest)
            .get("containerd.io/gc.ref.content.config"),
        Some(&arm.config_digest)
    );
    // A tag that does not exist is NotFound too.
    let e = do_pull(&root, &format!("{}/multi:nope", reg.host()), &o).unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
}

fn htpasswd(user: &str, pass: &str) -> String {
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("htpasswd (Debian package apache2-utils)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// Pushes `img` to a registry with basic auth (the harness pushes anonymously).
fn push_authed(reg: &Registry, auth: &str, repo: &str, tag: &str, img: &Image) {
    let blob = |digest: &str, data: &[u8]| {
        let url = format!("{}/v2/{repo}/blobs/uploads/", reg.url());
        let resp = ureq::post(&url)
            .set("Authorization", auth)
            .send_bytes(&[])
            .unwrap();
        let loc = resp.header("Location").unwrap().to_string();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", reg.url())
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        ureq::put(&format!("{loc}{sep}digest={digest}"))
            .set("Authorization", auth)
            .set("Content-Type", "application/octet-stream")
            .send_bytes(data)
            .unwrap();
    };
    for l in &img.layers {
        blob(&l.digest, &l.gz);
    }
    blob(&img.config_digest, &img.config);
    ureq::put(&format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .set("Authorization", auth)
        .set("Content-Type", images::MEDIA_MANIFEST)
        .send_bytes(&img.manifest)
        .unwrap();
}

#[test]
fn basic_auth_accepts_configured_credentials_and_rejects_others() {
    let root = Root::new();
    let reg = Registry::start_with(Some(&htpasswd("wharf", "s3cret"))).unwrap();
    let bb = images::busybox().unwrap();
    push_authed(&reg, &basic("wharf", "s3cret"), "private", "latest", &bb);
    let r = format!("{}/private:latest", reg.host());

    let mut o = root.quick_opts();
    let e = do_pull(&root, &r, &o).unwrap_err();
    assert_eq!(e.kind(), Kind::Unauthenticated, "{e}");
    assert!(e.to_string().contains("none are configured"), "{e}");

    o.client.credentials = Credentials::none().insert(&reg.host(), "wharf", "wrong");
    let e = do_pull(&root, &r, &o).unwrap_err();
    assert_eq!(e.kind(), Kind::Unauthenticated, "{e}");
    assert!(e.to_string().contains("refused the credentials"), "{e}");
    assert!(!root.has_blob(&bb.layers[0].digest));
    let as_core: wharf_core::Error = e.into();
    assert!(
        matches!(as_core, wharf_core::Error::FailedPrecondition(_)),
        "{as_core}"
    );

    // From a docker config.json, as `docker login` writes it.
    let cfg = root.dir.path().join("docker-config.json");
    let b64 = basic("wharf", "s3cret");
    let b64 = b64.trim_start_matches("Basic ");
    std::fs::write(
        &cfg,
        format!(r#"{{"auths": {{"{}": {{"auth": "{b64}"}}}}}}"#, reg.host()),
    )
    .unwrap();
    o.client.credentials = Credentials::none().with_docker_config(&cfg);
    let p = do_pull(&root, &r, &o).unwrap();
    assert_eq!(p.image.target.digest, bb.manifest_digest);
    assert!(root
        .snapshot_fs(&chain_ids(&bb)[0])
        .join("bin/busybox")
        .exists());
}

#[test]
fn hosts_toml_mirror_falls_back_and_serves_another_registry_name() {
    let root = Root::new();
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "pause", "3.9", &bb).unwrap();
    // A mirror that is down (nothing listens), then the local registry; registry.k8s.io itself is
    // never asked.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let certs = root.dir.path().join("certs.d");
    std::fs::create_dir_all(certs.join("registry.k8s.io")).unwrap();
    std::fs::write(
        certs.join("registry.k8s.io/hosts.toml"),
        format!(
            "server = \"https://registry.k8s.io\"\n\
             [host.\"http://127.0.0.1:{dead_port}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            reg.host()
        ),
    )
    .unwrap();
    let mut o = root.quick_opts();
    o.client.hosts_dir = Some(certs);
    let p = do_pull(&root, "registry.k8s.io/pause:3.9", &o).unwrap();
    assert_eq!(p.image.name, "registry.k8s.io/pause:3.9");
    assert_eq!(p.image.target.digest, bb.manifest_digest);
    assert_eq!(
        root.labels(&bb.layers[0].digest)
            .get("containerd.io/distribution.source.registry.k8s.io")
            .map(String::as_str),
        Some("pause")
    );
}

/// A small one-layer image for the misbehaviour tests (big enough to be cut in the middle).
fn small_image() -> Image {
    let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let layer = images::Layer::new(vec![
        images::dir("data", 0o755),
        images::file("data/blob", 0o644, &data),
    ])
    .unwrap();
    Image::new(vec![layer], "amd64", &["sh"]).unwrap()
}

fn blob_gets<'a>(reqs: &'a [Request], digest: &str) -> Vec<&'a Request> {
    reqs.iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&format!("/blobs/{digest}")))
        .collect()
}

#[test]
fn blob_with_wrong_digest_is_refused_and_nothing_is_committed() {
    let root = Root::new();
    let img = small_image();
    let layer = img.layers[0].digest.clone();
    let img2 = img.clone();
    let srv = FakeRegistry::start(move |req| {
        let mut r =
            serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]));
        if req.path.ends_with(&layer) && !r.body.is_empty() {
            // Same size, one byte flipped.
            let mid = r.body.len() / 2;
            r.body[mid] ^= 0xff;
        }
        r
    })
    .unwrap();
    let r = format!("{}/test:latest", srv.host());
    let e = do_pull(&root, &r, &root.quick_opts()).unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&img.layers[0].digest) && msg.contains("verification failed"),
        "{msg}"
    );
    assert!(!root.has_blob(&img.layers[0].digest));
    assert!(root
        .db
        .image_get(NS, &format!("{}/test:latest", srv.host()))
        .is_err());
    assert!(
        root.db.content_store().list_statuses().unwrap().is_empty(),
        "corrupt ingest kept"
    );
    // Nor any snapshot from applying the bad bytes as they arrived.
    let snaps = root.snaps.walk(NS, &Default::default()).unwrap();
    assert!(snaps.is_empty(), "{snaps:?}");
}

#[test]
fn oversized_manifests_and_schema1_are_refused() {
    let root = Root::new();
    let big = vec![b' '; 5 << 20];
    let big_digest = images::sha256(&big);
    let srv = FakeRegistry::start(move |req| match req.path.as_str() {
        // Announces its size and digest: refused before the body is read.
        "/v2/big/manifests/latest" => Reply::new(200, big.clone())
            .header("Content-Type", images::MEDIA_MANIFEST)
            .header("Docker-Content-Digest", &big_digest),
        // No digest header: resolved by GET, which stops reading at the limit.
        "/v2/big2/manifests/latest" => Reply::new(200, vec![b'{'; 5 << 20]),
        "/v2/old/manifests/latest" => {
            Reply::new(200, br#"{"schemaVersion":1,"name":"old"}"#.to_vec()).header(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v1+prettyjws",
            )
        }
        _ => Reply::new(404, vec![]),
    })
    .unwrap();
    for repo in ["big", "big2"] {
        let e = do_pull(&root, &format!("{}/{repo}", srv.host()), &root.quick_opts()).unwrap_err();
        assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
        assert!(e.to_string().contains("4194304 byte limit"), "{repo}: {e}");
    }
    let e = do_pull(&root, &format!("{}/old", srv.host()), &root.quick_opts()).unwrap_err();
    assert_eq!(e.kind(), Kind::NotImplemented, "{e}");
    assert!(e.to_string().contains("schema 1"), "{e}");
    assert!(root.db.content_store().walk().unwrap().is_empty());
}

#[test]
fn busy_registry_is_retried_and_a_dead_one_gives_unavailable() {
    let root = Root::new();
    let img = small_image();
    let layer = img.layers[0].digest.clone();
    let hits = Arc::new(AtomicUsize::new(0));
    let (img2, hits2) = (img.clone(), hits.clone());
    let srv = FakeRegistry::start(move |req| {
        if req.path.ends_with(&layer) {
            // 503, then 429, then the blob.
            match hits2.fetch_add(1, Ordering::SeqCst) {
                0 => return Reply::new(503, b"busy".to_vec()).header("Retry-After", "1"),
                1 => return Reply::new(429, vec![]).header("Retry-After", "0"),
                _ => {}
            }
        }
        if req.path.starts_with("/v2/down/") {
            return Reply::new(503, b"down for maintenance".to_vec());
        }
        serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    let p = do_pull(
        &root,
        &format!("{}/test:latest", srv.host()),
        &root.quick_opts(),
    )
    .unwrap();
    assert_eq!(p.layers[0].to_string(), img.layers[0].digest);
    assert_eq!(hits.load(Ordering::SeqCst), 3);
    assert!(root.has_blob(&img.layers[0].digest));

    let e = do_pull(
        &root,
        &format!("{}/down:latest", srv.host()),
        &root.quick_opts(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), Kind::Unavailable, "{e}");
    assert!(e.to_string().contains("503"), "{e}");
    // HEAD and GET, each tried 1 + 3 times.
    let n = srv
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v2/down/"))
        .count();
    assert_eq!(n, 8, "{:?}", srv.requests());
}

#[test]
fn dropped_connection_resumes_with_range() {
    let root = Root::new();
    let img = small_image();
    let layer = img.layers[0].digest.clone();
    let cut = img.layers[0].gz.len() / 2;
    let first = Arc::new(AtomicUsize::new(0));
    let (img2, first2) = (img.clone(), first.clone());
    let srv = FakeRegistry::start(move |req| {
        let mut r =
            serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]));
        if req.path.ends_with(&layer) && first2.fetch_add(1, Ordering::SeqCst) == 0 {
            r.cut_after = Some(cut);
        }
        r
    })
    .unwrap();
    let p = do_pull(
        &root,
        &format!("{}/test:latest", srv.host()),
        &root.quick_opts(),
    )
    .unwrap();
    assert_eq!(p.layers[0].to_string(), img.layers[0].digest);
    let reqs = srv.requests();
    let gets = blob_gets(&reqs, &img.layers[0].digest);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].headers.get("range"), None);
    assert_eq!(
        gets[1].headers.get("range").map(String::as_str),
        Some(format!("bytes={cut}-").as_str())
    );
    let fs = root.snapshot_fs(&chain_ids(&img)[0]);
    assert_eq!(
        std::fs::metadata(fs.join("data/blob")).unwrap().len(),
        600_000
    );
}

#[test]
fn interrupted_pull_resumes_from_the_partial_download() {
    let root = Root::new();
    let img = small_image();
    let layer = img.layers[0].digest.clone();
    let cut = img.layers[0].gz.len() / 3;
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (img2, broken2) = (img.clone(), broken.clone());
    let srv = FakeRegistry::start(move |req| {
        let mut r =
            serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]));
        if req.path.ends_with(&layer) && broken2.load(Ordering::SeqCst) {
            if req.headers.contains_key("range") {
                r = Reply::new(503, vec![]);
            } else {
                r.cut_after = Some(cut);
            }
        }
        r
    })
    .unwrap();
    let r = format!("{}/test:latest", srv.host());
    let e = do_pull(&root, &r, &root.quick_opts()).unwrap_err();
    assert_eq!(e.kind(), Kind::Unavailable, "{e}");
    assert!(!root.has_blob(&img.layers[0].digest));
    let st = root.db.content_store().list_statuses().unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].offset, cut as u64);

    // The registry is well again: the second pull asks only for the rest.
    broken.store(false, Ordering::SeqCst);
    let before = srv.requests().len();
    let (opts, events) = recording(root.quick_opts());
    do_pull(&root, &r, &opts).unwrap();
    let reqs = srv.requests()[before..].to_vec();
    let gets = blob_gets(&reqs, &img.layers[0].digest);
    assert_eq!(gets.len(), 1, "{gets:?}");
    let layer_d = Digest::parse(&img.layers[0].digest).unwrap();
    let size = img.layers[0].gz.len() as u64;
    let ev = events.lock().unwrap().clone();
    assert!(matches!(&ev[0], Progress::Resolved { .. }), "{ev:?}");
    let first_dl = ev
        .iter()
        .find(|e| matches!(e, Progress::Downloading { digest, .. } if digest == &layer_d));
    assert_eq!(
        first_dl,
        Some(&Progress::Downloading {
            digest: layer_d.clone(),
            offset: cut as u64,
            size
        }),
        "{ev:?}"
    );
    assert!(ev.contains(&Progress::Stored {
        digest: layer_d.clone(),
        size,
        fetched: true
    }));
    assert!(
        matches!(ev.last(), Some(Progress::Unpacked { .. })),
        "{ev:?}"
    );
    assert_eq!(
        gets[0].headers.get("range").map(String::as_str),
        Some(format!("bytes={cut}-").as_str())
    );
    assert!(root.has_blob(&img.layers[0].digest));

    // And a third pull fetches no blob at all: everything is in the store.
    let before = srv.requests().len();
    let (opts, events) = recording(root.quick_opts());
    do_pull(&root, &r, &opts).unwrap();
    let reqs = srv.requests()[before..].to_vec();
    assert!(reqs.iter().all(|r| !r.path.contains("/blobs/")), "{reqs:?}");
    let ev = events.lock().unwrap().clone();
    assert!(ev.contains(&Progress::Stored {
        digest: layer_d,
        size,
        fetched: false
    }));
    assert!(
        !ev.iter().any(|e| matches!(e, Progress::Downloading { .. })),
        "{ev:?}"
    );
}

#[test]
fn redirect_loop_and_missing_blob_give_clear_errors() {
    let root = Root::new();
    let img = small_image();
    let (img2, img3) = (img.clone(), img.clone());
    let srv = FakeRegistry::start(move |req| {
        if req.path.starts_with("/v2/loop/blobs/") {
            return Reply::new(302, vec![]).header("Location", &req.path);
        }
        if let Some(rest) = req.path.strip_prefix("/v2/loop/") {
            let fake = Request {
                path: format!("/v2/test/{rest}"),
                ..req.clone()
            };
            return serve_image(&img2, "test", "latest", &fake)
                .unwrap_or_else(|| Reply::new(404, vec![]));
        }
        if req.path.starts_with("/v2/missing/blobs/") && req.path.ends_with(&img3.layers[0].digest)
        {
            return Reply::new(404, br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#.to_vec());
        }
        if let Some(rest) = req.path.strip_prefix("/v2/missing/") {
            let fake = Request {
                path: format!("/v2/test/{rest}"),
                ..req.clone()
            };
            return serve_image(&img3, "test", "latest", &fake)
                .unwrap_or_else(|| Reply::new(404, vec![]));
        }
        Reply::new(404, vec![])
    })
    .unwrap();
    let e = do_pull(&root, &format!("{}/loop", srv.host()), &root.quick_opts()).unwrap_err();
    assert_eq!(e.kind(), Kind::Unavailable, "{e}");
    assert!(e.to_string().contains("redirect"), "{e}");
    let e = do_pull(
        &root,
        &format!("{}/missing", srv.host()),
        &root.quick_opts(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.to_string().contains(&img.layers[0].digest), "{e}");
    assert!(!root.has_blob(&img.layers[0].digest));
}

#[test]
fn bearer_token_flow_and_renewal_when_refused() {
    let root = Root::new();
    let img = small_image();
    // Tokens are valid until the server "expires" the current one, which it does once, right
    // after serving the config: the layer request must then get a fresh token.
    let issued = Arc::new(AtomicUsize::new(0));
    let valid = Arc::new(std::sync::Mutex::new(None::<String>));
    let expired_once = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let queries = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let host = Arc::new(std::sync::OnceLock::<String>::new());
    let config = img.config_digest.clone();
    let (img2, issued2, valid2, expired2, queries2, host2) = (
        img.clone(),
        issued.clone(),
        valid.clone(),
        expired_once.clone(),
        queries.clone(),
        host.clone(),
    );
    let srv = FakeRegistry::start(move |req| {
        if let Some(q) = req.path.strip_prefix("/token?") {
            queries2.lock().unwrap().push(q.to_string());
            let n = issued2.fetch_add(1, Ordering::SeqCst) + 1;
            *valid2.lock().unwrap() = Some(format!("Bearer tok-{n}"));
            return Reply::new(
                200,
                format!(r#"{{"token":"tok-{n}","expires_in":300}}"#).into_bytes(),
            );
        }
        let ok = {
            let v = valid2.lock().unwrap();
            v.is_some() && req.headers.get("authorization") == v.as_ref()
        };
        if !ok {
            let realm = format!("http://{}/token", host2.get().cloned().unwrap_or_default());
            return Reply::new(401, vec![]).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="fake""#),
            );
        }
        if req.path.ends_with(&config) && !expired2.swap(true, Ordering::SeqCst) {
            *valid2.lock().unwrap() = None;
        }
        serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    host.set(srv.host()).unwrap();
    let r = format!("{}/test:latest", srv.host());
    let p = do_pull(&root, &r, &root.quick_opts()).unwrap();
    assert_eq!(p.layers[0].to_string(), img.layers[0].digest);
    assert!(expired_once.load(Ordering::SeqCst));
    assert_eq!(
        issued.load(Ordering::SeqCst),
        2,
        "one token, then one renewal"
    );
    let q = queries.lock().unwrap().clone();
    assert!(
        q[0].contains("scope=repository%3Atest%3Apull") && q[0].contains("service=fake"),
        "{q:?}"
    );
    // A token server that refuses: Unauthenticated.
    let srv2 = FakeRegistry::start(move |req| {
        if req.path.starts_with("/token") {
            return Reply::new(401, vec![]);
        }
        Reply::new(401, vec![]).header(
            "WWW-Authenticate",
            r#"Bearer realm="http://127.0.0.1:1/token""#,
        )
    })
    .unwrap();
    let e = do_pull(&root, &format!("{}/test", srv2.host()), &root.quick_opts()).unwrap_err();
    assert!(
        matches!(e.kind(), Kind::Unauthenticated | Kind::Unavailable),
        "{e}"
    );
}

#[test]
fn concurrent_pulls_of_one_image_fetch_each_layer_once() {
    let root = Root::new();
    let img = small_image();
    let layer = img.layers[0].digest.clone();
    let img2 = img.clone();
    let srv = FakeRegistry::start(move |req| {
        if req.path.ends_with(&layer) {
            // Slow enough that the pulls overlap on this layer.
            std::thread::sleep(Duration::from_millis(400));
        }
        serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    let r = format!("{}/test:latest", srv.host());
    let opts = root.quick_opts();
    let results = rt().block_on(async {
        let a = pull(&root.db, NS, &r, &opts);
        let b = pull(&root.db, NS, &r, &opts);
        futures::join!(a, b)
    });
    let (a, b) = (results.0.unwrap(), results.1.unwrap());
    assert_eq!(a.chain_id, b.chain_id);
    assert_eq!(a.image.target.digest, img.manifest_digest);
    let reqs = srv.requests();
    assert_eq!(blob_gets(&reqs, &img.layers[0].digest).len(), 1, "{reqs:?}");
    assert!(root
        .snapshot_fs(&chain_ids(&img)[0])
        .join("data/blob")
        .exists());
}

#[test]
fn push_then_pull_back_into_a_fresh_root_gives_identical_digests() {
    use wharf_distribution::push::{push, PushOptions};
    let src = Registry::start().unwrap();
    let ml = images::multilayer().unwrap();
    images::push(&src, "ml", "v1", &ml).unwrap();
    let first = Root::new();
    let p = do_pull(
        &first,
        &format!("{}/ml:v1", src.host()),
        &PullOptions::default(),
    )
    .unwrap();

    let dst = Registry::start_with(Some(&htpasswd("pusher", "pw"))).unwrap();
    let mut o = PushOptions::default();
    o.client.max_retry_wait = Duration::from_millis(200);
    // Wrong credentials: Unauthenticated, and nothing is pushed.
    o.client.credentials = Credentials::none().insert(&dst.host(), "pusher", "nope");
    let e = rt()
        .block_on(push(
            &first.db,
            NS,
            &p.image.name,
            &format!("{}/copy:v1", dst.host()),
            &o,
        ))
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Unauthenticated, "{e}");
    o.client.credentials = Credentials::none().insert(&dst.host(), "pusher", "pw");
    let pushed = rt()
        .block_on(push(
            &first.db,
            NS,
            &p.image.name,
            &format!("{}/copy:v1", dst.host()),
            &o,
        ))
        .unwrap();
    assert_eq!(pushed.digest, ml.manifest_digest);
    // The blobs now name the new repository as a source, so a push to another repository of the
    // same registry can mount them.
    let source = format!("containerd.io/distribution.source.{}", dst.host());
    assert_eq!(
        first
            .labels(&ml.layers[0].digest)
            .get(&source)
            .map(String::as_str),
        Some("copy")
    );
    rt().block_on(push(
        &first.db,
        NS,
        &p.image.name,
        &format!("{}/other:v2", dst.host()),
        &o,
    ))
    .unwrap();
    assert_eq!(
        first
            .labels(&ml.layers[0].digest)
            .get(&source)
            .map(String::as_str),
        Some("copy,other")
    );

    // Pull both back into a fresh root: the same digests and bytes, and it unpacks.
    let second = Root::new();
    let mut po = second.opts();
    po.client.credentials = Credentials::none().insert(&dst.host(), "pusher", "pw");
    for r in ["copy:v1", "other:v2"] {
        let back = do_pull(&second, &format!("{}/{r}", dst.host()), &po).unwrap();
        assert_eq!(back.image.target.digest, ml.manifest_digest, "{r}");
        assert_eq!(back.config.to_string(), ml.config_digest);
        for l in &ml.layers {
            let got = second
                .db
                .content_store()
                .read_at(&Digest::parse(&l.digest).unwrap(), 0, 0)
                .unwrap();
            assert!(got == l.gz, "{r}: layer {}", l.digest);
        }
    }
    let top = &chain_ids(&ml)[2];
    assert!(second
        .snapshot_fs(top)
        .join("abs-link")
        .symlink_metadata()
        .is_ok());

    // An image whose content is gone cannot be pushed: NotFound naming the blob.
    first
        .db
        .content_delete(NS, &Digest::parse(&ml.layers[1].digest).unwrap())
        .unwrap();
    let e = rt()
        .block_on(push(
            &first.db,
            NS,
            &p.image.name,
            &format!("{}/third:v1", dst.host()),
            &o,
        ))
        .unwrap_err();
    assert_eq!(e.kind(), Kind::NotFound, "{e}");
    assert!(e.to_string().contains(&ml.layers[1].digest), "{e}");
}

fn unpack_image(root: &Root, manifest: &str) -> String {
    wharf_core::images::unpack::unpack(
        &root.db,
        &root.snaps,
        NS,
        &Digest::parse(manifest).unwrap(),
        None,
        &root.dir.path().join("tmp"),
    )
    .unwrap()
    .to_string()
}

#[test]
fn export_then_import_round_trips_and_other_tools_read_the_archive() {
    use wharf_distribution::archive::{export, import, ImportOptions};
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    let ml = images::multilayer().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    images::push(&reg, "ml", "v1", &ml).unwrap();
    let first = Root::new();
    let names: Vec<String> = [("busybox", "latest"), ("ml", "v1")]
        .iter()
        .map(|(r, t)| {
            do_pull(
                &first,
                &format!("{}/{r}:{t}", reg.host()),
                &PullOptions::default(),
            )
            .unwrap()
            .image
            .name
        })
        .collect();
    let tarball = first.dir.path().join("export.tar");
    let f = std::fs::File::create(&tarball).unwrap();
    export(&first.db, NS, &names, None, f).unwrap();

    // skopeo reads it both as an OCI archive and as a docker archive.
    for (transport, name) in [
        ("oci-archive", "latest"),
        ("docker-archive", names[0].as_str()),
    ] {
        let out = std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                &format!("{transport}:{}:{name}", tarball.display()),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let raw: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(raw["config"]["digest"], bb.config_digest, "{transport}");
    }

    let second = Root::new();
    let f = std::fs::File::open(&tarball).unwrap();
    let imported = import(&second.db, NS, f, &ImportOptions::default()).unwrap();
    let got: Vec<(String, String)> = imported
        .iter()
        .map(|i| (i.name.clone(), i.target.digest.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (names[0].clone(), bb.manifest_digest.clone()),
            (names[1].clone(), ml.manifest_digest.clone())
        ]
    );
    for l in bb.layers.iter().chain(ml.layers.iter()) {
        assert!(second.has_blob(&l.digest));
    }
    assert_eq!(
        second
            .labels(&ml.manifest_digest)
            .get("containerd.io/gc.ref.content.l.2"),
        Some(&ml.layers[2].digest)
    );
    assert_eq!(
        unpack_image(&second, &ml.manifest_digest),
        chain_ids(&ml)[2]
    );

    // A corrupted blob in the archive is refused and not stored.
    let mut data = std::fs::read(&tarball).unwrap();
    // Layers are gzip: corrupt a config instead, which is plain JSON.
    let cfg_marker = b"wharf test fixture";
    let pos = data
        .windows(cfg_marker.len())
        .position(|w| w == cfg_marker)
        .unwrap();
    data[pos] = b'W';
    let third = Root::new();
    let e = import(&third.db, NS, data.as_slice(), &ImportOptions::default()).unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    assert!(e.to_string().contains("verification failed"), "{e}");
    assert!(third
        .db
        .image_list(NS, &Default::default())
        .unwrap()
        .is_empty());
}

#[test]
fn docker_archive_from_skopeo_imports_and_unpacks() {
    use wharf_distribution::archive::{import, ImportOptions};
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    let root = Root::new();
    let tarball = root.dir.path().join("docker.tar");
    let out = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{}/busybox:latest", reg.host()),
            &format!(
                "docker-archive:{}:example.com/team/bb:v1",
                tarball.display()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = std::fs::File::open(&tarball).unwrap();
    let imported = import(&root.db, NS, f, &ImportOptions::default()).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, "example.com/team/bb:v1");
    assert_eq!(
        imported[0].target.media_type,
        wharf_core::images::MEDIA_DOCKER_MANIFEST
    );
    let chain = unpack_image(&root, &imported[0].target.digest);
    // Same layer contents whatever the compression skopeo chose: same chain ID.
    assert_eq!(chain, chain_ids(&bb)[0]);
    assert!(root.snapshot_fs(&chain).join("bin/busybox").exists());
}

#[test]
fn chunked_push_round_trips() {
    use wharf_distribution::push::{push, PushOptions};
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    let first = Root::new();
    let p = do_pull(
        &first,
        &format!("{}/busybox", reg.host()),
        &PullOptions::default(),
    )
    .unwrap();
    assert!(
        bb.layers[0].gz.len() > 3 * (128 << 10),
        "the layer must take several chunks"
    );
    let o = PushOptions {
        chunk_size: Some(128 << 10),
        ..Default::default()
    };
    let dst = Registry::start().unwrap();
    rt().block_on(push(
        &first.db,
        NS,
        &p.image.name,
        &format!("{}/chunked:v1", dst.host()),
        &o,
    ))
    .unwrap();
    let second = Root::new();
    let back = do_pull(
        &second,
        &format!("{}/chunked:v1", dst.host()),
        &second.opts(),
    )
    .unwrap();
    assert_eq!(back.image.target.digest, bb.manifest_digest);
    let got = second
        .db
        .content_store()
        .read_at(&Digest::parse(&bb.layers[0].digest).unwrap(), 0, 0)
        .unwrap();
    assert!(got == bb.layers[0].gz);
    assert!(second
        .snapshot_fs(&chain_ids(&bb)[0])
        .join("bin/busybox")
        .exists());
}

#[test]
fn layers_are_unpacked_while_later_layers_download() {
    let root = Root::new();
    let layers = images::multilayer_layers()
        .into_iter()
        .take(2)
        .map(images::Layer::new)
        .collect::<anyhow::Result<Vec<_>>>()
        .unwrap();
    let img = Image::new(layers, "amd64", &["sh"]).unwrap();
    let chains = chain_ids(&img);
    // The server holds layer 2 back until layer 1's snapshot is committed (or 5 s pass).
    let held_until_unpacked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (img2, snaps, flag) = (img.clone(), root.snaps.clone(), held_until_unpacked.clone());
    let first_chain = chains[0].clone();
    let srv = FakeRegistry::start(move |req| {
        if req.path.ends_with(&img2.layers[1].digest) {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                if snaps.stat(NS, &first_chain).is_ok() {
                    flag.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    let p = do_pull(&root, &format!("{}/test:latest", srv.host()), &root.opts()).unwrap();
    assert!(
        held_until_unpacked.load(Ordering::SeqCst),
        "layer 1 was not unpacked while layer 2 was downloading"
    );
    assert_eq!(p.chain_id.map(|c| c.to_string()).as_ref(), Some(&chains[1]));
    assert!(root.snapshot_fs(&chains[1]).join("opq/new").exists());
    // The config carries the snapshot reference as after a serial unpack.
    assert_eq!(
        root.labels(&img.config_digest)
            .get("containerd.io/gc.ref.snapshot.overlayfs"),
        Some(&chains[1])
    );
}

#[test]
fn blobs_follow_redirects_to_storage_without_the_registry_credentials() {
    let root = Root::new();
    let img = small_image();
    // The "storage" (another origin, as S3 or a CDN) serves blobs and must never see credentials.
    let img_storage = img.clone();
    let storage = FakeRegistry::start(move |req| {
        if req.headers.contains_key("authorization") {
            return Reply::new(400, b"credentials leaked to storage".to_vec());
        }
        let fake = Request {
            path: req.path.replacen("/storage/", "/v2/test/", 1),
            ..req.clone()
        };
        serve_image(&img_storage, "test", "latest", &fake)
            .unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    let storage_host = storage.host();
    let img2 = img.clone();
    let srv = FakeRegistry::start(move |req| {
        if req.headers.get("authorization").map(String::as_str) != Some(basic("u", "p").as_str()) {
            return Reply::new(401, vec![]).header("WWW-Authenticate", r#"Basic realm="r""#);
        }
        if let Some(rest) = req.path.strip_prefix("/v2/test/blobs/") {
            return Reply::new(307, vec![]).header(
                "Location",
                &format!("http://{storage_host}/storage/blobs/{rest}"),
            );
        }
        serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    let mut o = root.quick_opts();
    o.client.credentials = Credentials::none().insert(&srv.host(), "u", "p");
    let p = do_pull(&root, &format!("{}/test:latest", srv.host()), &o).unwrap();
    assert_eq!(p.layers[0].to_string(), img.layers[0].digest);
    let served = storage.requests();
    assert_eq!(
        blob_gets(&served, &img.layers[0].digest).len(),
        1,
        "{served:?}"
    );
    assert!(served
        .iter()
        .all(|r| !r.headers.contains_key("authorization")));
    assert!(root
        .snapshot_fs(&chain_ids(&img)[0])
        .join("data/blob")
        .exists());
}

const CHILD_PULL_ENV: &str = "WHARF_TEST_CHILD_PULL";

/// Not a test of its own: the pull that `pull_killed_mid_layer_resumes_in_a_new_process` runs
/// in a child process (this test binary again) and kills with SIGKILL.
#[test]
fn child_pull_process() {
    let Ok(spec) = std::env::var(CHILD_PULL_ENV) else {
        return;
    };
    let (dir, reference) = spec.split_once('|').unwrap();
    let (db, _snaps) = open_stores(Path::new(dir));
    let r = rt().block_on(pull(&db, NS, reference, &PullOptions::default()));
    panic!("the child pull was meant to be killed, it ended with {r:?}");
}

#[test]
fn pull_killed_mid_layer_resumes_in_a_new_process() {
    let dir = root_dir();
    let img = small_image();
    let layer = img.layers[0].digest.clone();
    let cut = img.layers[0].gz.len() / 2;
    let img2 = img.clone();
    let srv = FakeRegistry::start(move |req| {
        let mut r =
            serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]));
        if req.path.ends_with(&layer) && !req.headers.contains_key("range") {
            r.hang_after = Some(cut);
        }
        r
    })
    .unwrap();
    let reference = format!("{}/test:latest", srv.host());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_pull_process", "--nocapture"])
        .env(
            CHILD_PULL_ENV,
            format!("{}|{reference}", dir.path().display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the child's ingest holds the first half, then kill it as a crash would.
    let ingest = dir.path().join("content/ingest");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let written = || -> u64 {
        std::fs::read_dir(&ingest)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::metadata(e.path().join("data")).ok())
                    .map(|m| m.len())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    };
    while written() < cut as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the child never wrote the first half"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child pull ended early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let root = Root::open(dir);
    let before = srv.requests().len();
    let p = do_pull(&root, &reference, &root.opts()).unwrap();
    assert_eq!(p.layers[0].to_string(), img.layers[0].digest);
    let reqs = srv.requests()[before..].to_vec();
    let gets = blob_gets(&reqs, &img.layers[0].digest);
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(
        gets[0].headers.get("range").map(String::as_str),
        Some(format!("bytes={cut}-").as_str()),
        "the new process did not continue from the killed one's bytes"
    );
    assert!(root
        .snapshot_fs(&chain_ids(&img)[0])
        .join("data/blob")
        .exists());
    assert!(root.db.content_store().list_statuses().unwrap().is_empty());
}

/// A docker-registry serving HTTPS with a certificate from a throw-away CA; killed on drop.
struct TlsRegistry {
    child: std::process::Child,
    host: String,
    ca: PathBuf,
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<name>.key` and `<name>.pem` signed by the test CA in `dir`, with the extensions `ext`.
fn signed_cert(dir: &Path, name: &str, cn: &str, ext: &str) {
    let mut csr = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let (key, csr_file, pem, cnf) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.cnf"),
    );
    let subj = format!("/CN={cn}");
    csr.extend(["-keyout", &key, "-out", &csr_file, "-subj", &subj]);
    openssl(dir, &csr);
    std::fs::write(dir.join(&cnf), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr_file,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &cnf,
        ],
    );
}

/// `client_ca`: the registry also requires client certificates signed by the test CA.
fn tls_registry(dir: &Path, client_ca: bool) -> TlsRegistry {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=wharf-test-ca",
    ]);
    openssl(dir, &ca);
    signed_cert(
        dir,
        "leaf",
        "127.0.0.1",
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n{}",
        dir.join("data").display(),
        dir.join("leaf.pem").display(),
        dir.join("leaf.key").display(),
        if client_ca {
            format!("    clientcas:\n      - {}\n", dir.join("ca.pem").display())
        } else {
            String::new()
        }
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "TLS registry did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    TlsRegistry {
        child,
        host: format!("127.0.0.1:{port}"),
        ca: dir.join("ca.pem"),
    }
}

#[test]
fn https_registry_with_hosts_toml_ca_or_skip_verify() {
    use wharf_distribution::push::{push, PushOptions};
    let root = Root::new();
    let tls = tls_registry(root.dir.path(), false);
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    let p = do_pull(
        &root,
        &format!("{}/busybox", reg.host()),
        &PullOptions::default(),
    )
    .unwrap();

    let certs = root.dir.path().join("certs.d");
    let host_dir = certs.join(&tls.host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let write_hosts = |extra: &str| {
        std::fs::write(
            host_dir.join("hosts.toml"),
            format!("server = \"https://{}\"\n{extra}", tls.host),
        )
        .unwrap()
    };
    let target = format!("{}/secure/bb:v1", tls.host);

    // No CA configured: the certificate is not trusted.
    write_hosts("");
    let mut po = PushOptions::default();
    po.client.hosts_dir = Some(certs.clone());
    po.client.max_retry_wait = Duration::from_millis(100);
    let e = rt()
        .block_on(push(&root.db, NS, &p.image.name, &target, &po))
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Unavailable, "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // The CA from hosts.toml (relative to its directory): push and pull over TLS.
    std::fs::copy(&tls.ca, host_dir.join("ca.pem")).unwrap();
    write_hosts("ca = \"ca.pem\"\n");
    rt().block_on(push(&root.db, NS, &p.image.name, &target, &po))
        .unwrap();
    let fresh = Root::new();
    let mut o = fresh.opts();
    o.client.hosts_dir = Some(certs.clone());
    let back = do_pull(&fresh, &target, &o).unwrap();
    assert_eq!(back.image.target.digest, bb.manifest_digest);
    assert!(fresh
        .snapshot_fs(&chain_ids(&bb)[0])
        .join("bin/busybox")
        .exists());

    // skip_verify instead of the CA.
    write_hosts("skip_verify = true\n");
    let other = Root::new();
    let mut o = PullOptions::default();
    o.client.hosts_dir = Some(certs);
    let back = do_pull(&other, &target, &o).unwrap();
    assert_eq!(back.image.target.digest, bb.manifest_digest);
}

#[test]
fn https_registry_requiring_a_client_certificate_from_hosts_toml() {
    use wharf_distribution::push::{push, PushOptions};
    let root = Root::new();
    let tls = tls_registry(root.dir.path(), true);
    signed_cert(
        root.dir.path(),
        "client",
        "wharf-client",
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    let p = do_pull(
        &root,
        &format!("{}/busybox", reg.host()),
        &PullOptions::default(),
    )
    .unwrap();

    let certs = root.dir.path().join("certs.d");
    let host_dir = certs.join(&tls.host);
    std::fs::create_dir_all(&host_dir).unwrap();
    let ca = tls.ca.display().to_string();
    let target = format!("{}/mtls/bb:v1", tls.host);
    let mut po = PushOptions::default();
    po.client.hosts_dir = Some(certs.clone());
    po.client.max_retry_wait = Duration::from_millis(100);

    // Trusted server, but no client certificate: refused in the handshake.
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!("server = \"https://{}\"\nca = \"{ca}\"\n", tls.host),
    )
    .unwrap();
    let e = rt()
        .block_on(push(&root.db, NS, &p.image.name, &target, &po))
        .unwrap_err();
    assert_eq!(e.kind(), Kind::Unavailable, "{e}");

    // The client pair from hosts.toml (absolute paths): accepted.
    let dir = root.dir.path().display();
    std::fs::write(
        host_dir.join("hosts.toml"),
        format!(
            "server = \"https://{}\"\nca = \"{ca}\"\nclient = [[\"{dir}/client.pem\", \"{dir}/client.key\"]]\n",
            tls.host
        ),
    )
    .unwrap();
    rt().block_on(push(&root.db, NS, &p.image.name, &target, &po))
        .unwrap();
    let fresh = Root::new();
    let mut o = PullOptions::default();
    o.client.hosts_dir = Some(certs);
    let back = do_pull(&fresh, &target, &o).unwrap();
    assert_eq!(back.image.target.digest, bb.manifest_digest);
}

#[test]
fn a_layer_is_applied_while_it_downloads() {
    let root = Root::new();
    // Incompressible data after a small first file, so the gzip stream has a long tail.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..800_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let layer = images::Layer::new(vec![
        images::file("first", 0o644, b"applied before the download ended"),
        images::file("noise", 0o644, &noise),
    ])
    .unwrap();
    let img = Image::new(vec![layer], "amd64", &["sh"]).unwrap();
    let half = img.layers[0].gz.len() / 2;
    let snapshots = root.dir.path().join("overlayfs/snapshots");
    let seen_mid_download = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (img2, flag) = (img.clone(), seen_mid_download.clone());
    let srv = FakeRegistry::start(move |req| {
        let mut r =
            serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]));
        if req.path.ends_with(&img2.layers[0].digest) {
            let (snapshots, flag) = (snapshots.clone(), flag.clone());
            r.pause_after = Some((
                half,
                Arc::new(move || {
                    // Hold the second half back until `first` shows up in a snapshot (5 s max).
                    let deadline = std::time::Instant::now() + Duration::from_secs(5);
                    while std::time::Instant::now() < deadline {
                        let found = std::fs::read_dir(&snapshots)
                            .map(|d| d.flatten().any(|e| e.path().join("fs/first").exists()))
                            .unwrap_or(false);
                        if found {
                            flag.store(true, Ordering::SeqCst);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }),
            ));
        }
        r
    })
    .unwrap();
    let p = do_pull(&root, &format!("{}/test:latest", srv.host()), &root.opts()).unwrap();
    assert!(
        seen_mid_download.load(Ordering::SeqCst),
        "nothing was applied before the layer finished downloading"
    );
    let fs = root.snapshot_fs(&chain_ids(&img)[0]);
    assert_eq!(
        p.chain_id.map(|c| c.to_string()),
        Some(chain_ids(&img)[0].clone())
    );
    assert!(std::fs::read(fs.join("noise")).unwrap() == noise);
    assert_eq!(
        root.labels(&img.layers[0].digest)
            .get("containerd.io/uncompressed"),
        Some(&img.layers[0].diff_id)
    );
    // Exactly one snapshot: the streamed one, committed (no leftover extraction).
    let snaps = root.snaps.walk(NS, &Default::default()).unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
}

#[test]
fn a_mirror_gets_its_own_credentials_never_the_upstreams() {
    let root = Root::new();
    let mirror = Registry::start_with(Some(&htpasswd("mirror-user", "mirror-pw"))).unwrap();
    let bb = images::busybox().unwrap();
    push_authed(
        &mirror,
        &basic("mirror-user", "mirror-pw"),
        "team/app",
        "v1",
        &bb,
    );
    let certs = root.dir.path().join("certs.d");
    std::fs::create_dir_all(certs.join("quay.invalid")).unwrap();
    std::fs::write(
        certs.join("quay.invalid/hosts.toml"),
        format!(
            "[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            mirror.host()
        ),
    )
    .unwrap();
    let mut o = root.quick_opts();
    o.client.hosts_dir = Some(certs);
    o.client.retries = 0;

    // Valid for the mirror, but configured for the upstream's name: not sent to the mirror, which
    // refuses; the upstream itself does not exist.
    o.client.credentials = Credentials::none().insert("quay.invalid", "mirror-user", "mirror-pw");
    let e = do_pull(&root, "quay.invalid/team/app:v1", &o).unwrap_err();
    assert!(!root.has_blob(&bb.layers[0].digest), "{e}");

    // Configured for the mirror's host: used there.
    o.client.credentials = Credentials::none().insert(&mirror.host(), "mirror-user", "mirror-pw");
    let p = do_pull(&root, "quay.invalid/team/app:v1", &o).unwrap();
    assert_eq!(p.image.name, "quay.invalid/team/app:v1");
    assert_eq!(p.image.target.digest, bb.manifest_digest);
}

#[test]
fn a_cancelled_pull_leaves_no_lease_or_snapshot_and_resumes_later() {
    let root = Root::new();
    let img = small_image();
    let layer = img.layers[0].digest.clone();
    let cut = img.layers[0].gz.len() / 2;
    let stall = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let (img2, stall2) = (img.clone(), stall.clone());
    let srv = FakeRegistry::start(move |req| {
        let mut r =
            serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]));
        if req.path.ends_with(&layer) && stall2.load(Ordering::SeqCst) {
            r.hang_after = Some(cut);
        }
        r
    })
    .unwrap();
    let reference = format!("{}/test:latest", srv.host());
    let opts = root.opts();
    let ingest_len = || {
        root.db
            .content_store()
            .list_statuses()
            .unwrap()
            .first()
            .map(|s| s.offset)
    };
    rt().block_on(async {
        let p = pull(&root.db, NS, &reference, &opts);
        tokio::pin!(p);
        // Let it run until half the layer is stored, then drop it (as a client hanging up would).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            tokio::select! {
                r = &mut p => panic!("the pull ended while the registry stalled: {r:?}"),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            if ingest_len() == Some(cut as u64) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no progress");
        }
    });
    // The blocking tasks finish once their channels close.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snaps = root.snaps.walk(NS, &Default::default()).unwrap();
        let leases = root.db.lease_list(NS, &Default::default()).unwrap();
        if snaps.is_empty() && leases.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left behind: {snaps:?} {leases:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        ingest_len(),
        Some(cut as u64),
        "the partial download is kept"
    );

    stall.store(false, Ordering::SeqCst);
    let before = srv.requests().len();
    let p = do_pull(&root, &reference, &root.opts()).unwrap();
    assert_eq!(p.layers[0].to_string(), img.layers[0].digest);
    let reqs = srv.requests()[before..].to_vec();
    let gets = blob_gets(&reqs, &img.layers[0].digest);
    assert_eq!(
        gets.iter()
            .map(|r| r.headers.get("range").cloned())
            .collect::<Vec<_>>(),
        vec![Some(format!("bytes={cut}-"))]
    );
}

#[test]
fn registry_tokens_and_identity_tokens_as_cri_passes_them() {
    use wharf_distribution::auth::Credential;
    let root = Root::new();
    let img = small_image();
    let host = Arc::new(std::sync::OnceLock::<String>::new());
    let (img2, host2) = (img.clone(), host.clone());
    let srv = FakeRegistry::start(move |req| {
        if req.path.starts_with("/token") {
            let body = String::from_utf8_lossy(&req.body).to_string();
            if req.method == "POST"
                && body.contains("grant_type=refresh_token")
                && body.contains("refresh_token=rt-good")
                && body.contains("scope=repository%3Atest%3Apull")
            {
                return Reply::new(
                    200,
                    br#"{"access_token":"from-refresh","expires_in":300}"#.to_vec(),
                );
            }
            return Reply::new(401, vec![]);
        }
        let auth = req.headers.get("authorization").map(String::as_str);
        if auth != Some("Bearer static") && auth != Some("Bearer from-refresh") {
            let realm = format!("http://{}/token", host2.get().cloned().unwrap_or_default());
            return Reply::new(401, vec![]).header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="fake""#),
            );
        }
        serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    host.set(srv.host()).unwrap();
    let r = format!("{}/test:latest", srv.host());
    let with = |c: Credential| {
        let mut o = root.quick_opts();
        o.client.credentials = Credentials::none().insert_credential(&srv.host(), c);
        o
    };
    let token_calls = |srv: &FakeRegistry| {
        srv.requests()
            .iter()
            .filter(|r| r.path.starts_with("/token"))
            .count()
    };

    // A registry token goes straight to the registry.
    let o = with(Credential {
        registry_token: Some("static".into()),
        ..Default::default()
    });
    do_pull(&root, &r, &o).unwrap();
    assert_eq!(token_calls(&srv), 0);

    // An identity (refresh) token is exchanged at the token server by an OAuth2 POST.
    let fresh = Root::new();
    let o = with(Credential {
        identity_token: Some("rt-good".into()),
        ..Default::default()
    });
    let p = rt().block_on(pull(&fresh.db, NS, &r, &o)).unwrap();
    assert_eq!(p.layers[0].to_string(), img.layers[0].digest);
    assert!(token_calls(&srv) >= 1);

    // A refused refresh token: Unauthenticated, nothing stored.
    let third = Root::new();
    let o = with(Credential {
        identity_token: Some("rt-bad".into()),
        ..Default::default()
    });
    let e = rt().block_on(pull(&third.db, NS, &r, &o)).unwrap_err();
    assert_eq!(e.kind(), Kind::Unauthenticated, "{e}");
    assert!(third.db.content_store().walk().unwrap().is_empty());
}

#[test]
fn push_retries_busy_uploads_and_reports_refusals_clearly() {
    use wharf_distribution::push::{push, PushOptions};
    let reg = Registry::start().unwrap();
    let img = small_image();
    images::push(&reg, "src", "v1", &img).unwrap();
    let root = Root::new();
    let p = do_pull(
        &root,
        &format!("{}/src:v1", reg.host()),
        &PullOptions::default(),
    )
    .unwrap();

    // Uploads answer 503 once each; the manifest is refused as a registry does for a bad one.
    let busy = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::<String>::new(),
    ));
    let busy2 = busy.clone();
    let srv = FakeRegistry::start(move |req| {
        let path = req.path.split('?').next().unwrap_or_default().to_string();
        match (req.method.as_str(), path.as_str()) {
            ("HEAD", p) if p.contains("/blobs/") => Reply::new(404, vec![]),
            ("POST", "/v2/dst/blobs/uploads/") => {
                Reply::new(202, vec![]).header("Location", "/upload/session")
            }
            ("PUT", "/upload/session") => {
                if busy2.lock().unwrap().insert(req.path.clone()) {
                    Reply::new(503, vec![]).header("Retry-After", "0")
                } else {
                    Reply::new(201, vec![])
                }
            }
            ("PUT", "/v2/dst/manifests/v1") => Reply::new(
                400,
                br#"{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}"#
                    .to_vec(),
            ),
            _ => Reply::new(404, vec![]),
        }
    })
    .unwrap();
    let mut o = PushOptions::default();
    o.client.max_retry_wait = Duration::from_millis(100);
    let e = rt()
        .block_on(push(
            &root.db,
            NS,
            &p.image.name,
            &format!("{}/dst:v1", srv.host()),
            &o,
        ))
        .unwrap_err();
    assert_eq!(e.kind(), Kind::FailedPrecondition, "{e}");
    assert!(
        e.to_string().contains("MANIFEST_INVALID") && e.to_string().contains("400"),
        "{e}"
    );
    // Both blobs were uploaded, each after one 503.
    let reqs = srv.requests();
    let puts: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with("/upload/session"))
        .collect();
    assert_eq!(puts.len(), 4, "{puts:?}");
    for d in [&img.layers[0].digest, &img.config_digest] {
        let bodies: Vec<usize> = puts
            .iter()
            .filter(|r| r.path.ends_with(&format!("digest={d}")))
            .map(|r| r.body.len())
            .collect();
        let size = if d == &img.config_digest {
            img.config.len()
        } else {
            img.layers[0].gz.len()
        };
        // The body is sent again in full on the retry (capped at 1 MiB by the fake server).
        assert_eq!(bodies, vec![size.min(1 << 20); 2], "{d}");
    }
}

#[test]
fn a_second_namespace_shares_the_blobs_without_fetching_them() {
    let root = Root::new();
    let img = small_image();
    let img2 = img.clone();
    let srv = FakeRegistry::start(move |req| {
        serve_image(&img2, "test", "latest", req).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    let r = format!("{}/test:latest", srv.host());
    do_pull(&root, &r, &root.opts()).unwrap();
    let before = srv.requests().len();
    let p = rt()
        .block_on(pull(&root.db, "other", &r, &root.opts()))
        .unwrap();
    assert_eq!(p.image.target.digest, img.manifest_digest);
    let reqs = srv.requests()[before..].to_vec();
    assert!(
        reqs.iter()
            .all(|r| r.method == "HEAD" && r.path.ends_with("/manifests/latest")),
        "{reqs:?}"
    );
    // The other namespace has its own records of everything, with labels.
    for d in [
        &img.manifest_digest,
        &img.config_digest,
        &img.layers[0].digest,
    ] {
        let info = root
            .db
            .content_info("other", &Digest::parse(d).unwrap())
            .unwrap();
        assert_eq!(
            info.labels
                .get(&format!("containerd.io/distribution.source.{}", srv.host()))
                .map(String::as_str),
            Some("test"),
            "{d}"
        );
    }
    assert!(root.snaps.stat("other", &chain_ids(&img)[0]).is_ok());
}

#[test]
fn hosts_toml_headers_and_path_prefix_are_used() {
    let root = Root::new();
    let img = small_image();
    let img2 = img.clone();
    // A mirror serving under /mirror/v2 that wants a header from the configuration.
    let srv = FakeRegistry::start(move |req| {
        if req.headers.get("x-mirror-key").map(String::as_str) != Some("k1") {
            return Reply::new(403, b"no key".to_vec());
        }
        let Some(rest) = req.path.strip_prefix("/mirror") else {
            return Reply::new(404, vec![]);
        };
        let fake = Request {
            path: rest.to_string(),
            ..req.clone()
        };
        serve_image(&img2, "library/app", "v1", &fake).unwrap_or_else(|| Reply::new(404, vec![]))
    })
    .unwrap();
    let certs = root.dir.path().join("certs.d");
    std::fs::create_dir_all(certs.join("docker.io")).unwrap();
    std::fs::write(
        certs.join("docker.io/hosts.toml"),
        format!(
            "[host.\"http://{}/mirror\"]\n  capabilities = [\"pull\", \"resolve\"]\n  [host.\"http://{}/mirror\".header]\n    x-mirror-key = \"k1\"\n",
            srv.host(),
            srv.host()
        ),
    )
    .unwrap();
    let mut o = root.quick_opts();
    o.client.hosts_dir = Some(certs);
    // `app` is Docker Hub's library/app: served by the mirror, Docker Hub never asked.
    let p = do_pull(&root, "app:v1", &o).unwrap();
    assert_eq!(p.image.name, "docker.io/library/app:v1");
    assert_eq!(p.image.target.digest, img.manifest_digest);
    assert!(srv
        .requests()
        .iter()
        .all(|r| r.path.starts_with("/mirror/v2/library/app/")));
}
