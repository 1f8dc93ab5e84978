//! Issue "CRI foundation": wharfd serves Kubernetes CRI runtime.v1 on its socket. Version and
//! Status answer (NetworkReady follows the CNI config dir); the ImageService pulls from a real
//! registry (with CRI credentials too) into the k8s.io namespace as containerd's CRI records
//! images, lists, inspects, measures and removes them; the built-in pause image is imported
//! with no registry, and its /pause is a static program that exits 0 on SIGTERM.

use std::time::{Duration, Instant};

use containerd_client::services::v1 as ctrd;
use wharf_api::cri::image_service_client::ImageServiceClient;
use wharf_api::cri::runtime_service_client::RuntimeServiceClient;
use wharf_api::cri::{self as pb};
use wharf_tests::daemon::{with_ns, Wharfd};
use wharf_tests::images;
use wharf_tests::registry::Registry;

type Images = ImageServiceClient<tonic::transport::Channel>;
type Runtime = RuntimeServiceClient<tonic::transport::Channel>;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn clients(w: &Wharfd) -> (Runtime, Images) {
    let ch = w.channel().await.unwrap();
    (
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    )
}

fn spec(image: &str) -> Option<pb::ImageSpec> {
    Some(pb::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

async fn status(c: &mut Images, image: &str, verbose: bool) -> pb::ImageStatusResponse {
    c.image_status(pb::ImageStatusRequest {
        image: spec(image),
        verbose,
    })
    .await
    .unwrap()
    .into_inner()
}

async fn pull(
    c: &mut Images,
    image: &str,
    auth: Option<pb::AuthConfig>,
) -> Result<String, tonic::Status> {
    c.pull_image(pb::PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    })
    .await
    .map(|r| r.into_inner().image_ref)
}

async fn remove(c: &mut Images, image: &str) -> Result<(), tonic::Status> {
    c.remove_image(pb::RemoveImageRequest { image: spec(image) })
        .await
        .map(|_| ())
}

async fn list(c: &mut Images, filter: Option<&str>) -> Vec<pb::Image> {
    c.list_images(pb::ListImagesRequest {
        filter: filter.map(|f| pb::ImageFilter { image: spec(f) }),
    })
    .await
    .unwrap()
    .into_inner()
    .images
}

async fn fs_used(c: &mut Images) -> (u64, u64, String) {
    let r = c
        .image_fs_info(pb::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.image_filesystems.len(), 1, "{r:?}");
    let f = &r.image_filesystems[0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        (now - f.timestamp).abs() < 60_000_000_000,
        "timestamp {}",
        f.timestamp
    );
    (
        f.used_bytes.as_ref().map(|u| u.value).unwrap_or(0),
        f.inodes_used.as_ref().map(|u| u.value).unwrap_or(0),
        f.fs_id
            .as_ref()
            .map(|i| i.mountpoint.clone())
            .unwrap_or_default(),
    )
}

/// The image records of namespace k8s.io, through containerd's Images API: (name, labels).
async fn records(w: &Wharfd) -> Vec<(String, std::collections::HashMap<String, String>)> {
    let mut c = ctrd::images_client::ImagesClient::new(w.channel().await.unwrap());
    let mut v: Vec<_> = c
        .list(with_ns(
            "k8s.io",
            ctrd::ListImagesRequest { filters: vec![] },
        ))
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| (i.name, i.labels))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn cri_version_status_and_unimplemented() {
    wharf_tests::require_root();
    let w = Wharfd::start_with_config("[cri]\ncni_conf_dir = \"{dir}/net.d\"\n").unwrap();
    rt().block_on(async {
        let (mut r, _) = clients(&w).await;
        let v = r
            .version(pb::VersionRequest {
                version: "v1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(v.runtime_name, "wharf");
        assert_eq!(v.runtime_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(v.runtime_api_version, "v1");
        assert_eq!(v.version, "0.1.0");

        let conditions = |s: pb::StatusResponse| {
            s.status
                .unwrap()
                .conditions
                .into_iter()
                .map(|c| (c.r#type.clone(), c))
                .collect::<std::collections::HashMap<_, _>>()
        };
        let s = r
            .status(pb::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        assert!(s.info.contains_key("config"), "{:?}", s.info);
        let c = conditions(s);
        assert!(c["RuntimeReady"].status);
        let net = &c["NetworkReady"];
        assert!(!net.status);
        assert_eq!(net.reason, "NetworkPluginNotReady");
        assert!(
            net.message.contains("no network config found"),
            "{}",
            net.message
        );

        // A network config appears: ready, without a restart.
        let dir = w.dir.path().join("net.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("10-test.conflist"),
            r#"{"cniVersion":"1.0.0","name":"test","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let s = r
            .status(pb::StatusRequest { verbose: false })
            .await
            .unwrap()
            .into_inner();
        assert!(s.info.is_empty());
        let c = conditions(s);
        assert!(c["NetworkReady"].status, "{:?}", c["NetworkReady"]);

        // What is not served yet says so.
        let e = r
            .run_pod_sandbox(pb::RunPodSandboxRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert_eq!(e.message(), "not implemented yet in wharf: RunPodSandbox");
        let e = r
            .list_containers(pb::ListContainersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        assert!(e.message().contains("ListContainers"), "{}", e.message());
    });
}

#[test]
fn cri_pull_list_status_fsinfo_remove() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let img = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &img).unwrap();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let repo_digest = format!("{}/busybox@{}", reg.host(), img.manifest_digest);
    rt().block_on(async {
        let (_, mut c) = clients(&w).await;
        let (used0, _, mountpoint) = fs_used(&mut c).await;
        assert!(
            mountpoint.ends_with("io.containerd.snapshotter.v1.overlayfs"),
            "{mountpoint}"
        );

        // PullImage answers the image ID (the config digest), as containerd's CRI does.
        let id = pull(&mut c, &r, None).await.expect("PullImage");
        assert_eq!(id, img.config_digest);

        let all = list(&mut c, None).await;
        let got = all
            .iter()
            .find(|i| i.id == id)
            .unwrap_or_else(|| panic!("{id} not in {all:?}"));
        assert_eq!(got.repo_tags, vec![r.clone()]);
        assert_eq!(got.repo_digests, vec![repo_digest.clone()]);
        let want_size = img.manifest.len()
            + img.config.len()
            + img.layers.iter().map(|l| l.gz.len()).sum::<usize>();
        assert_eq!(got.size, want_size as u64);
        assert!(!got.pinned);
        // The filter picks one image, by reference.
        let filtered = list(&mut c, Some(&r)).await;
        assert_eq!(filtered.len(), 1, "{filtered:?}");
        assert_eq!(filtered[0].id, id);
        assert!(list(&mut c, Some("127.0.0.1:1/none:x")).await.is_empty());

        // ImageStatus by reference, by ID, by short ID, by repo digest.
        for name in [
            r.clone(),
            id.clone(),
            id["sha256:".len().."sha256:".len() + 12].to_string(),
            repo_digest.clone(),
        ] {
            let s = status(&mut c, &name, false).await;
            let i = s
                .image
                .unwrap_or_else(|| panic!("ImageStatus {name}: none"));
            assert_eq!(i.id, id, "{name}");
            assert_eq!(i.repo_tags, vec![r.clone()]);
            assert_eq!(i.size, want_size as u64);
        }
        let s = status(&mut c, &r, true).await;
        let info: serde_json::Value = serde_json::from_str(&s.info["info"]).unwrap();
        assert_eq!(
            info["chainID"].as_str(),
            Some(img.layers[0].diff_id.as_str())
        );
        assert_eq!(info["imageSpec"]["rootfs"]["type"], "layers");

        // Recorded as containerd's CRI records them, visible to ctr in k8s.io.
        let recs = records(&w).await;
        let names: Vec<&str> = recs.iter().map(|(n, _)| n.as_str()).collect();
        for n in [r.as_str(), repo_digest.as_str(), id.as_str()] {
            assert!(names.contains(&n), "{n} not in {names:?}");
        }
        for (n, labels) in &recs {
            assert_eq!(
                labels.get("io.cri-containerd.image").map(String::as_str),
                Some("managed"),
                "{n}"
            );
        }
        let ls = w.ctr_ok(&["-n", "k8s.io", "images", "ls", "-q"]);
        assert!(ls.lines().any(|l| l == r), "{ls}");
        // Unpacked into overlayfs by the pull.
        let snaps = w.ctr_ok(&[
            "-n",
            "k8s.io",
            "snapshots",
            "--snapshotter",
            "overlayfs",
            "ls",
        ]);
        assert!(snaps.contains(&img.layers[0].diff_id), "{snaps}");

        // The snapshotter's directory grew by at least the unpacked busybox.
        let (used1, inodes1, _) = fs_used(&mut c).await;
        let bb = std::fs::metadata("/bin/busybox").unwrap().len();
        assert!(used1 >= used0 + bb, "{used0} -> {used1}");
        assert!(inodes1 > 0);

        // A missing image: NotFound, as containerd's CRI answers (errdefs.ToGRPC).
        let missing = format!("{}/busybox:missing", reg.host());
        let e = pull(&mut c, &missing, None).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        assert!(
            e.message().contains("failed to pull and unpack image")
                && e.message().contains("not found"),
            "{}",
            e.message()
        );
        assert!(status(&mut c, &missing, false).await.image.is_none());
        let e = pull(&mut c, "library/UPPER:x", None).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

        // RemoveImage removes every name; again is fine.
        remove(&mut c, &r).await.expect("RemoveImage");
        assert!(status(&mut c, &r, false).await.image.is_none());
        assert!(status(&mut c, &id, false).await.image.is_none());
        assert!(!list(&mut c, None).await.iter().any(|i| i.id == id));
        let recs = records(&w).await;
        assert!(
            !recs
                .iter()
                .any(|(n, _)| n == &r || n == &repo_digest || n == &id),
            "{recs:?}"
        );
        remove(&mut c, &r).await.expect("second RemoveImage");
        remove(&mut c, &id)
            .await
            .expect("RemoveImage of a missing ID");
    });
}

fn htpasswd(user: &str, pass: &str) -> String {
    let out = std::process::Command::new("htpasswd")
        .args(["-Bbn", user, pass])
        .output()
        .expect("htpasswd (Debian package apache2-utils)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cri_pull_with_credentials() {
    wharf_tests::require_root();
    let reg = Registry::start_with(Some(&htpasswd("kube", "s3cret"))).unwrap();
    let img = images::busybox().unwrap();
    // Push with the credentials (the harness pushes anonymously): through wharf's own client.
    let w = Wharfd::start().unwrap();
    let r = format!("{}/private:v1", reg.host());
    push_authenticated(&reg, &img, "private", "v1", ("kube", "s3cret"));
    rt().block_on(async {
        let (_, mut c) = clients(&w).await;
        let e = pull(&mut c, &r, None).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        let wrong = pb::AuthConfig {
            username: "kube".into(),
            password: "nope".into(),
            ..Default::default()
        };
        let e = pull(&mut c, &r, Some(wrong)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        use base64::Engine as _;
        let auth = pb::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("kube:s3cret"),
            server_address: reg.host(),
            ..Default::default()
        };
        let id = pull(&mut c, &r, Some(auth)).await.expect("pull with auth");
        assert_eq!(id, img.config_digest);
        let plain = pb::AuthConfig {
            username: "kube".into(),
            password: "s3cret".into(),
            ..Default::default()
        };
        assert_eq!(pull(&mut c, &r, Some(plain)).await.unwrap(), id);
    });
}

/// Pushes `img` to `reg` with basic auth (the registry answers 401 to anonymous pushes).
fn push_authenticated(
    reg: &Registry,
    img: &images::Image,
    repo: &str,
    tag: &str,
    who: (&str, &str),
) {
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.0, who.1))
    );
    let mut blobs: Vec<(&str, &[u8])> = img
        .layers
        .iter()
        .map(|l| (l.digest.as_str(), l.gz.as_slice()))
        .collect();
    blobs.push((img.config_digest.as_str(), img.config.as_slice()));
    for (digest, data) in blobs {
        let start = ureq::post(&format!("{}/v2/{repo}/blobs/uploads/", reg.url()))
            .set("Authorization", &basic)
            .call()
            .expect("start upload");
        let loc = start
            .header("Location")
            .expect("upload location")
            .to_string();
        let loc = if loc.starts_with("http") {
            loc
        } else {
            format!("{}{loc}", reg.url())
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        ureq::put(&format!("{loc}{sep}digest={digest}"))
            .set("Authorization", &basic)
            .set("Content-Type", "application/octet-stream")
            .send_bytes(data)
            .expect("upload blob");
    }
    ureq::put(&format!("{}/v2/{repo}/manifests/{tag}", reg.url()))
        .set("Authorization", &basic)
        .set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .send_bytes(&img.manifest)
        .expect("put manifest");
}

#[test]
fn cri_builtin_pause_image() {
    wharf_tests::require_root();
    // No registry anywhere: the sandbox image comes from wharfd itself.
    let mut w = Wharfd::start().unwrap();
    let name = format!("wharf.local/pause:{}", env!("CARGO_PKG_VERSION"));
    // Nothing CRI happens until a CRI client calls: no k8s.io namespace for ctr-only users.
    let ns = w.ctr_ok(&["namespaces", "ls", "-q"]);
    assert!(!ns.lines().any(|l| l == "k8s.io"), "{ns}");
    let id = rt().block_on(async {
        let (mut rs, mut c) = clients(&w).await;
        let s = rs
            .status(pb::StatusRequest { verbose: true })
            .await
            .unwrap()
            .into_inner();
        let cfg: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
        assert_eq!(cfg["sandbox_image"], name.as_str());
        let i = status(&mut c, &name, false)
            .await
            .image
            .unwrap_or_else(|| panic!("built-in {name} missing: {}", w.log()));
        assert_eq!(i.repo_tags, vec![name.clone()]);
        assert!(i.pinned, "the sandbox image is pinned");
        assert_eq!(i.uid.map(|u| u.value), Some(65535));
        assert!(i.size > 100_000, "{}", i.size);
        let recs = records(&w).await;
        for (n, labels) in &recs {
            assert_eq!(
                labels.get("io.cri-containerd.pinned").map(String::as_str),
                Some("pinned"),
                "{n}"
            );
        }
        assert!(recs.iter().any(|(n, _)| n == &i.id), "{recs:?}");
        i.id
    });
    assert_eq!(
        w.log()
            .matches("imported the built-in sandbox image")
            .count(),
        1
    );

    // Its unpacked rootfs holds a static /pause.
    let snaps = w
        .root
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let pause = std::fs::read_dir(&snaps)
        .unwrap()
        .flatten()
        .map(|e| e.path().join("fs/pause"))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no unpacked /pause under {}", snaps.display()));
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(&pause).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o755);
    let elf = std::fs::read(&pause).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert!(
        !has_interp(&elf),
        "/pause must be static (it has PT_INTERP)"
    );

    // It waits for signals, and exits 0 on SIGTERM (and on SIGINT).
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut child = std::process::Command::new(&pause)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(child.try_wait().unwrap().is_none(), "pause exited early");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let st = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("pause ignored {sig}");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(st.code(), Some(0), "{sig}: {st}");
    }

    // A restart finds it there: nothing imported again, same ID.
    w.stop().unwrap();
    w.spawn().unwrap();
    rt().block_on(async {
        let (_, mut c) = clients(&w).await;
        let i = status(&mut c, &name, false).await.image.unwrap();
        assert_eq!(i.id, id);
    });
    assert_eq!(
        w.log()
            .matches("imported the built-in sandbox image")
            .count(),
        1,
        "{}",
        w.log()
    );
}

/// Whether a 64-bit little-endian ELF has a PT_INTERP program header (a dynamic executable).
fn has_interp(elf: &[u8]) -> bool {
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3
    })
}
