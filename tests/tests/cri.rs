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

/// Waits until process `pid` has a handler for `sig` in place (its SigCgt mask): a signal sent
/// before that kills it, or is dropped when it is its pid namespace's init.
fn wait_until_catches(pid: i32, sig: i32) {
    let catches = || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                let l = s.lines().find(|l| l.starts_with("SigCgt:"))?;
                u64::from_str_radix(l["SigCgt:".len()..].trim(), 16).ok()
            })
            .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !catches() {
        assert!(
            Instant::now() < deadline,
            "process {pid} never caught signal {sig}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
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

        // Without a network a pod cannot start, and leaves nothing behind.
        let pod = pb::PodSandboxConfig {
            metadata: Some(pb::PodSandboxMetadata {
                name: "p".into(),
                uid: "u".into(),
                namespace: "n".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let e = r
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains("cni plugin not initialized"),
            "{}",
            e.message()
        );
        let pods = r
            .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(pods.is_empty(), "{pods:?}");
        let netns = w.state.join("cri/netns");
        assert_eq!(std::fs::read_dir(&netns).map(|d| d.count()).unwrap_or(0), 0);

        // A network whose plugin fails: the pause container, started while CNI ran, goes too.
        let dir = w.dir.path().join("net.d");
        std::fs::create_dir_all(&dir).unwrap();
        let broken = dir.join("05-broken.conflist");
        std::fs::write(
            &broken,
            r#"{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"no-such-plugin"}]}"#,
        )
        .unwrap();
        let e = r
            .run_pod_sandbox(pb::RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: String::new(),
            })
            .await
            .unwrap_err();
        assert!(
            e.message().contains("failed to setup network"),
            "{}",
            e.message()
        );
        let pods = r
            .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert!(pods.is_empty(), "{pods:?}");
        assert_eq!(std::fs::read_dir(&netns).map(|d| d.count()).unwrap_or(0), 0);
        let bundles = w.state.join("io.containerd.runtime.v2.task/k8s.io");
        let left: Vec<_> = std::fs::read_dir(&bundles)
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "task bundles left: {left:?}");
        std::fs::remove_file(&broken).unwrap();

        // A network config appears: ready, without a restart.
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
            .checkpoint_container(pb::CheckpointContainerRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        // Streaming requests are checked before anything else.
        let e = r.exec(pb::ExecRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        // UpdateRuntimeConfig (kubelet's first call) is accepted.
        r.update_runtime_config(pb::UpdateRuntimeConfigRequest {
            runtime_config: Some(pb::RuntimeConfig {
                network_config: Some(pb::NetworkConfig {
                    pod_cidr: "10.244.0.0/24".into(),
                }),
            }),
        })
        .await
        .unwrap();
        // A pod needs a config.
        let e = r
            .run_pod_sandbox(pb::RunPodSandboxRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
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
        // Before its handler is in place the signal would kill it (a loaded machine makes that
        // likely right after the spawn).
        wait_until_catches(child.id() as i32, sig as i32);
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

// ---------------------------------------------------------------------------------------------
// Pod sandboxes and containers (issue "CRI pods"): a real wharfd with a `[cri]` CNI directory
// holding a bridge network of the test's own (unique bridge and /24, deleted at the end).

struct PodEnv {
    w: Wharfd,
    /// `10.X.Y.` of the test's subnet.
    prefix: String,
    network: String,
}

fn pod_env() -> PodEnv {
    let mut w = Wharfd::start_with_config(
        "[cri]\ncni_conf_dir = \"{dir}/net.d\"\ncni_bin_dirs = [\"/usr/lib/cni\"]\n",
    )
    .unwrap();
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    let r = u32::from_le_bytes(b) ^ std::process::id();
    let bridge = format!("wc{:06x}", r & 0xff_ffff);
    let prefix = format!("10.{}.{}.", 100 + (r >> 24) % 100, (r >> 8) % 256);
    let dir = w.dir.path().to_path_buf();
    std::fs::create_dir_all(dir.join("net.d")).unwrap();
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": bridge,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": format!("{prefix}0/24")}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("ipam").display().to_string(),
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    });
    std::fs::write(
        dir.join("net.d/10-test.conflist"),
        serde_json::to_vec_pretty(&conf).unwrap(),
    )
    .unwrap();
    // The harness deletes the bridge when the daemon is dropped.
    w.bridge = Some(bridge.clone());
    PodEnv {
        w,
        prefix,
        network: bridge,
    }
}

/// A registry holding the busybox test image, and a pod environment: (registry, env, image).
fn busybox_pods() -> (Registry, PodEnv, String) {
    let reg = Registry::start().unwrap();
    let img = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &img).unwrap();
    let image = format!("{}/busybox:latest", reg.host());
    (reg, pod_env(), image)
}

fn pod_config(name: &str, uid: &str, log_dir: &std::path::Path) -> pb::PodSandboxConfig {
    pb::PodSandboxConfig {
        metadata: Some(pb::PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: [("app".to_string(), name.to_string())].into(),
        dns_config: Some(pb::DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        }),
        // As kubelet sends it: each container its own PID namespace.
        linux: Some(pb::LinuxPodSandboxConfig {
            security_context: Some(pb::LinuxSandboxSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Container as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, image: &str, cmd: &[&str]) -> pb::ContainerConfig {
    pb::ContainerConfig {
        metadata: Some(pb::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: spec(image),
        command: cmd.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}/0.log"),
        labels: [("c".to_string(), name.to_string())].into(),
        linux: Some(pb::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

/// `c` with `sc` as its security context.
fn secured(
    mut c: pb::ContainerConfig,
    sc: pb::LinuxContainerSecurityContext,
) -> pb::ContainerConfig {
    c.linux = Some(pb::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    });
    c
}

async fn run_pod(r: &mut Runtime, config: &pb::PodSandboxConfig) -> Result<String, tonic::Status> {
    r.run_pod_sandbox(pb::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

async fn create(
    r: &mut Runtime,
    pod: &str,
    pod_config: &pb::PodSandboxConfig,
    c: pb::ContainerConfig,
) -> Result<String, tonic::Status> {
    r.create_container(pb::CreateContainerRequest {
        pod_sandbox_id: pod.into(),
        config: Some(c),
        sandbox_config: Some(pod_config.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

async fn start(r: &mut Runtime, id: &str) {
    r.start_container(pb::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .unwrap_or_else(|e| panic!("StartContainer {id}: {e:?}"));
}

async fn pod_status(r: &mut Runtime, id: &str) -> pb::PodSandboxStatus {
    r.pod_sandbox_status(pb::PodSandboxStatusRequest {
        pod_sandbox_id: id.into(),
        verbose: true,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

async fn c_status(r: &mut Runtime, id: &str) -> pb::ContainerStatus {
    r.container_status(pb::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .unwrap()
    .into_inner()
    .status
    .unwrap()
}

/// Waits for a container to exit; returns its status.
async fn exited(r: &mut Runtime, id: &str) -> pb::ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c_status(r, id).await;
        if s.state == pb::ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(Instant::now() < deadline, "{id} did not exit: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exec(r: &mut Runtime, id: &str, cmd: &[&str]) -> pb::ExecSyncResponse {
    r.exec_sync(pb::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 10,
    })
    .await
    .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e:?}"))
    .into_inner()
}

fn out(r: &pb::ExecSyncResponse) -> String {
    String::from_utf8_lossy(&r.stdout).trim().to_string()
}

/// Interfaces enslaved to the bridge (the pods' veth host ends).
fn veths(bridge: &str) -> usize {
    let o = std::process::Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).lines().count()
}

#[test]
fn cri_pods_network_containers_logs_exec_stats() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let img = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &img).unwrap();
    let env = pod_env();
    let w = &env.w;
    let image = format!("{}/busybox:latest", reg.host());
    let logs = w.dir.path().join("logs");
    rt().block_on(async {
        let (mut r, mut i) = clients(w).await;
        pull(&mut i, &image, None).await.expect("pull busybox");

        // Pod A: the built-in pause image, an address from the test's subnet.
        let mut cfg_a = pod_config("pod-a", "uid-a", &logs.join("a"));
        let host_port = 20000 + (std::process::id() % 10000) as i32;
        cfg_a.port_mappings = vec![pb::PortMapping {
            protocol: pb::Protocol::Tcp as i32,
            container_port: 80,
            host_port,
            host_ip: String::new(),
        }];
        let t = Instant::now();
        let a = match run_pod(&mut r, &cfg_a).await {
            Ok(a) => a,
            Err(e) => panic!("RunPodSandbox a: {e:?}\n{}", w.log()),
        };
        let run_pod_ms = t.elapsed().as_millis();
        let sa = pod_status(&mut r, &a).await;
        assert_eq!(sa.state, pb::PodSandboxState::SandboxReady as i32, "{sa:?}");
        let ip_a = sa.network.as_ref().unwrap().ip.clone();
        assert!(ip_a.starts_with(&env.prefix), "{ip_a} not in {}0/24", env.prefix);
        assert_eq!(sa.metadata.as_ref().unwrap().name, "pod-a");
        assert!(sa.created_at > 0);
        assert_eq!(sa.labels["app"], "pod-a");
        let netns_a = w.state.join("cri/netns").join(&a);
        assert!(netns_a.exists());
        let resolv = std::fs::read_to_string(w.state.join("cri/sandboxes").join(&a).join("resolv.conf")).unwrap();
        assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
        assert!(resolv.contains("search default.svc.cluster.local"), "{resolv}");

        // The same name, uid and attempt again: refused, naming the reserved name.
        let e = run_pod(&mut r, &cfg_a).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        assert!(e.message().contains("pod-a_default_uid-a_0"), "{}", e.message());
        assert!(e.message().contains(&a), "{}", e.message());

        // A web server in pod A, logging in CRI format.
        let mut web = container_config(
            "web",
            &image,
            &["sh", "-c", "mkdir -p /www && echo hello-from-a > /www/index.html && echo started && echo oops >&2 && exec busybox httpd -f -p 80 -h /www"],
        );
        web.envs = vec![pb::KeyValue { key: "GREETING".into(), value: "hi".into() }];
        let t = Instant::now();
        let web_id = create(&mut r, &a, &cfg_a, web).await.expect("CreateContainer web");
        let create_ms = t.elapsed().as_millis();
        assert_eq!(c_status(&mut r, &web_id).await.state, pb::ContainerState::ContainerCreated as i32);
        let t = Instant::now();
        start(&mut r, &web_id).await;
        let start_ms = t.elapsed().as_millis();
        eprintln!("timings: RunPodSandbox {run_pod_ms} ms, CreateContainer {create_ms} ms, StartContainer {start_ms} ms");
        let st = c_status(&mut r, &web_id).await;
        assert_eq!(st.state, pb::ContainerState::ContainerRunning as i32, "{st:?}");
        assert!(st.started_at >= st.created_at && st.created_at > 0);
        let log_file = logs.join("a/web/0.log");
        assert_eq!(st.log_path, log_file.display().to_string());
        // As containerd reports them: the repo digest, the ID, the tag.
        assert_eq!(
            st.image_ref,
            format!("{}/busybox@{}", reg.host(), img.manifest_digest)
        );
        assert_eq!(st.image_id, img.config_digest);
        assert_eq!(st.image.as_ref().unwrap().image, image);
        let env_out = exec(&mut r, &web_id, &["sh", "-c", "echo $GREETING $HOSTNAME; cat /etc/hostname"]).await;
        assert_eq!(out(&env_out), "hi pod-a\npod-a");

        // Pod B reaches pod A's address.
        let cfg_b = pod_config("pod-b", "uid-b", &logs.join("b"));
        let b = run_pod(&mut r, &cfg_b).await.expect("RunPodSandbox b");
        let ip_b = pod_status(&mut r, &b).await.network.unwrap().ip;
        assert!(ip_b.starts_with(&env.prefix) && ip_b != ip_a, "{ip_b}");
        // Hugepage limits where the kernel has 2 MB pages and the hugetlb controller is mounted.
        let huge = std::path::Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists()
            && std::path::Path::new("/sys/fs/cgroup/hugetlb").is_dir();
        let hugepages = |limit: u64| {
            if huge {
                vec![pb::HugepageLimit { page_size: "2MB".into(), limit }]
            } else {
                Vec::new()
            }
        };
        let mut sleeper = container_config("sleeper", &image, &["sleep", "3600"]);
        sleeper.linux = Some(pb::LinuxContainerConfig {
            resources: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                hugepage_limits: hugepages(4 << 20),
                ..Default::default()
            }),
            security_context: None,
        });
        let sl = create(&mut r, &b, &cfg_b, sleeper).await.unwrap();
        start(&mut r, &sl).await;
        let url = format!("http://{ip_a}/");
        let mut got = String::new();
        for _ in 0..50 {
            let res = exec(&mut r, &sl, &["busybox", "wget", "-q", "-O", "-", &url]).await;
            got = out(&res);
            if res.exit_code == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(got, "hello-from-a");
        // And so does the host, through the pod's port mapping (on the bridge's address).
        let gateway = format!("{}1:{host_port}", env.prefix);
        let body = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect_timeout(&gateway.parse().unwrap(), Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connect {gateway}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            let mut v = String::new();
            let _ = s.read_to_string(&mut v);
            v
        })
        .await
        .unwrap();
        assert!(body.ends_with("hello-from-a\n"), "{body}");

        // Logs in CRI format at the requested path.
        let text = std::fs::read_to_string(&log_file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let find = |stream: &str, msg: &str| {
            lines.iter().any(|l| {
                let f: Vec<&str> = l.splitn(4, ' ').collect();
                f.len() == 4 && f[1] == stream && f[2] == "F" && f[3] == msg && f[0].contains('T')
            })
        };
        assert!(find("stdout", "started"), "{text}");
        assert!(find("stderr", "oops"), "{text}");

        // ExecSync: stdout, stderr and the exit code.
        let res = exec(&mut r, &sl, &["sh", "-c", "echo out; echo err >&2; exit 3"]).await;
        assert_eq!((res.stdout.as_slice(), res.stderr.as_slice(), res.exit_code), (&b"out\n"[..], &b"err\n"[..], 3));

        // Stats report memory and CPU.
        let stats = r
            .container_stats(pb::ContainerStatsRequest { container_id: sl.clone() })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let ws = stats.memory.as_ref().and_then(|m| m.working_set_bytes).map(|v| v.value).unwrap_or(0);
        assert!(ws > 0, "{stats:?}");
        assert!(stats.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds).is_some(), "{stats:?}");
        let all = r
            .list_container_stats(pb::ListContainerStatsRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .stats;
        assert!(all.iter().any(|s| s.attributes.as_ref().unwrap().id == web_id), "{all:?}");

        // UpdateContainerResources changes the memory limit of the running container.
        // Memory+swap follows the memory limit (no swapping past it, as containerd sets it)
        // where the kernel accounts swap; hugepages follow theirs.
        let limit = |r: pb::ExecSyncResponse| out(&r);
        let cat = ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"];
        let memsw = std::path::Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
        let cat_memsw = ["cat", "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"];
        let cat_huge = ["cat", "/sys/fs/cgroup/hugetlb/hugetlb.2MB.limit_in_bytes"];
        assert_eq!(limit(exec(&mut r, &sl, &cat).await), (128u64 << 20).to_string());
        if memsw {
            assert_eq!(limit(exec(&mut r, &sl, &cat_memsw).await), (128u64 << 20).to_string());
        }
        if huge {
            assert_eq!(limit(exec(&mut r, &sl, &cat_huge).await), (4u64 << 20).to_string());
        }
        for (mem, huge_limit) in [(64u64 << 20, 8u64 << 20), (256 << 20, 0)] {
            r.update_container_resources(pb::UpdateContainerResourcesRequest {
                container_id: sl.clone(),
                linux: Some(pb::LinuxContainerResources {
                    memory_limit_in_bytes: mem as i64,
                    hugepage_limits: hugepages(huge_limit),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("UpdateContainerResources");
            assert_eq!(limit(exec(&mut r, &sl, &cat).await), mem.to_string());
            if memsw {
                assert_eq!(limit(exec(&mut r, &sl, &cat_memsw).await), mem.to_string());
            }
            if huge {
                assert_eq!(limit(exec(&mut r, &sl, &cat_huge).await), huge_limit.to_string());
            }
        }
        // A page size this host lacks is refused, and the limits stay.
        let err = r
            .update_container_resources(pb::UpdateContainerResourcesRequest {
                container_id: sl.clone(),
                linux: Some(pb::LinuxContainerResources {
                    memory_limit_in_bytes: 32 << 20,
                    hugepage_limits: vec![pb::HugepageLimit { page_size: "3MB".into(), limit: 0 }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert_eq!(limit(exec(&mut r, &sl, &cat).await), (256u64 << 20).to_string());

        // Log rotation as kubelet does it: rename, ReopenContainerLog, new lines in a new file.
        let ticker = create(
            &mut r,
            &b,
            &cfg_b,
            container_config("ticker", &image, &["sh", "-c", "while true; do echo tick; sleep 1; done"]),
        )
        .await
        .unwrap();
        start(&mut r, &ticker).await;
        let tick_log = logs.join("b/ticker/0.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&tick_log).unwrap_or_default().contains(" stdout F tick") {
            assert!(Instant::now() < deadline, "no tick in {}", tick_log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        std::fs::rename(&tick_log, logs.join("b/ticker/0.log.20260101-000000")).unwrap();
        r.reopen_container_log(pb::ReopenContainerLogRequest { container_id: ticker.clone() })
            .await
            .expect("ReopenContainerLog");
        assert!(tick_log.exists());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&tick_log).unwrap_or_default().contains(" stdout F tick") {
            assert!(Instant::now() < deadline, "no tick after reopening {}", tick_log.display());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r.stop_container(pb::StopContainerRequest { container_id: ticker.clone(), timeout: 0 })
            .await
            .unwrap();
        let e = r
            .reopen_container_log(pb::ReopenContainerLogRequest { container_id: ticker.clone() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

        // Exit codes and reasons.
        let ok = create(&mut r, &b, &cfg_b, container_config("ok", &image, &["sh", "-c", "exit 0"])).await.unwrap();
        let bad = create(&mut r, &b, &cfg_b, container_config("bad", &image, &["sh", "-c", "exit 2"])).await.unwrap();
        start(&mut r, &ok).await;
        start(&mut r, &bad).await;
        let s = exited(&mut r, &ok).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
        assert!(s.finished_at >= s.started_at);
        let s = exited(&mut r, &bad).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (2, "Error"), "{s:?}");
        // A container over its memory limit is OOMKilled.
        let mut hog = container_config("hog", &image, &["tail", "/dev/zero"]);
        hog.linux = Some(pb::LinuxContainerConfig {
            resources: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            security_context: None,
        });
        let hog = create(&mut r, &b, &cfg_b, hog).await.unwrap();
        start(&mut r, &hog).await;
        let s = exited(&mut r, &hog).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"), "{s:?}");

        // Security context: a user, a read-only rootfs, a dropped capability.
        let mut sec = container_config("sec", &image, &["sleep", "3600"]);
        sec.linux = Some(pb::LinuxContainerConfig {
            resources: None,
            security_context: Some(pb::LinuxContainerSecurityContext {
                run_as_user: Some(pb::Int64Value { value: 1000 }),
                readonly_rootfs: true,
                ..Default::default()
            }),
        });
        let sec = create(&mut r, &b, &cfg_b, sec).await.unwrap();
        start(&mut r, &sec).await;
        assert_eq!(out(&exec(&mut r, &sec, &["id", "-u"]).await), "1000");
        let user = c_status(&mut r, &sec).await.user.unwrap().linux.unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        let res = exec(&mut r, &sec, &["touch", "/x"]).await;
        assert_ne!(res.exit_code, 0);
        assert!(String::from_utf8_lossy(&res.stderr).contains("Read-only"), "{res:?}");
        let mut nocap = container_config("nocap", &image, &["sleep", "3600"]);
        nocap.linux = Some(pb::LinuxContainerConfig {
            resources: None,
            security_context: Some(pb::LinuxContainerSecurityContext {
                capabilities: Some(pb::Capability {
                    drop_capabilities: vec!["CHOWN".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        });
        let nocap = create(&mut r, &b, &cfg_b, nocap).await.unwrap();
        start(&mut r, &nocap).await;
        let capeff = |s: String| {
            let hex = s.trim().trim_start_matches("CapEff:").trim().to_string();
            u64::from_str_radix(&hex, 16).unwrap()
        };
        let grep = ["grep", "CapEff", "/proc/self/status"];
        assert_eq!(capeff(out(&exec(&mut r, &nocap, &grep).await)) & 1, 0);
        assert_eq!(capeff(out(&exec(&mut r, &sl, &grep).await)) & 1, 1);

        // The pod's containers share one /dev/shm (POSIX shared memory goes with the pod's IPC
        // namespace), a tmpfs on the host that a read-only rootfs and another user can write
        // too; another pod does not see it.
        let res = exec(&mut r, &sl, &["sh", "-c", "echo shared > /dev/shm/pod-b"]).await;
        assert_eq!(res.exit_code, 0, "{res:?}");
        assert_eq!(out(&exec(&mut r, &sec, &["cat", "/dev/shm/pod-b"]).await), "shared");
        let res = exec(&mut r, &sec, &["touch", "/dev/shm/by-1000"]).await;
        assert_eq!(res.exit_code, 0, "{res:?}");
        let pod_shm = w.state.join("cri/sandboxes").join(&b).join("shm");
        // Open files: the runtime's limits (wharfd's, so this test's), not a default of 1024.
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let nofile: Vec<&str> = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
        let (soft, hard) = (nofile[3], nofile[4]);
        let limits = out(&exec(&mut r, &sl, &["sh", "-c", "ulimit -Sn; ulimit -Hn"]).await);
        assert_eq!(limits, format!("{soft}\n{hard}"));
        assert_eq!(std::fs::read_to_string(pod_shm.join("pod-b")).unwrap(), "shared\n");
        let res = exec(&mut r, &web_id, &["cat", "/dev/shm/pod-b"]).await;
        assert_ne!(res.exit_code, 0, "pod A sees pod B's shm: {res:?}");

        // Listing with filters.
        let rc = r.clone();
        let list = move |f: pb::ContainerFilter| {
            let mut r = rc.clone();
            async move {
                r.list_containers(pb::ListContainersRequest { filter: Some(f) })
                    .await
                    .unwrap()
                    .into_inner()
                    .containers
            }
        };
        let in_b = list(pb::ContainerFilter { pod_sandbox_id: b.clone(), ..Default::default() }).await;
        assert_eq!(in_b.len(), 7, "{in_b:?}");
        let exited_b = list(pb::ContainerFilter {
            pod_sandbox_id: b.clone(),
            state: Some(pb::ContainerStateValue { state: pb::ContainerState::ContainerExited as i32 }),
            ..Default::default()
        })
        .await;
        assert_eq!(exited_b.len(), 4, "{exited_b:?}");
        let by_label = list(pb::ContainerFilter {
            label_selector: [("c".to_string(), "web".to_string())].into(),
            ..Default::default()
        })
        .await;
        assert_eq!(by_label.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![web_id.clone()]);
        let pods = r
            .list_pod_sandbox(pb::ListPodSandboxRequest {
                filter: Some(pb::PodSandboxFilter {
                    label_selector: [("app".to_string(), "pod-b".to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(pods.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![b.clone()]);

        // Bad input.
        let e = create(&mut r, "0123456789abcdef", &cfg_b, container_config("x", &image, &["true"])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let e = create(&mut r, &b, &cfg_b, container_config("x", "127.0.0.1:1/missing:latest", &["true"])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let mut escape = container_config("x", &image, &["true"]);
        escape.log_path = "../../escape.log".into();
        let e = create(&mut r, &b, &cfg_b, escape).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = create(&mut r, &b, &cfg_b, container_config("ok", &image, &["true"])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        // A start that fails leaves the container exited with StartError, as containerd records
        // it, and no task behind.
        let bad = create(&mut r, &b, &cfg_b, container_config("nocmd", &image, &["/no/such/cmd"])).await.unwrap();
        let e = r.start_container(pb::StartContainerRequest { container_id: bad.clone() }).await.unwrap_err();
        assert!(e.message().contains("/no/such/cmd"), "{e:?}");
        let s = c_status(&mut r, &bad).await;
        assert_eq!(
            (s.state, s.exit_code, s.reason.as_str()),
            (pb::ContainerState::ContainerExited as i32, 128, "StartError"),
            "{s:?}"
        );
        assert!(s.message.contains("/no/such/cmd"), "{s:?}");
        assert!(!w.state.join("io.containerd.runtime.v2.task/k8s.io").join(&bad).exists());
        let e = r.start_container(pb::StartContainerRequest { container_id: bad.clone() }).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        r.remove_container(pb::RemoveContainerRequest { container_id: bad.clone() }).await.unwrap();

        // StopContainer with a grace period.
        let t = Instant::now();
        r.stop_container(pb::StopContainerRequest { container_id: sec.clone(), timeout: 1 }).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        let s = c_status(&mut r, &sec).await;
        assert_eq!(s.state, pb::ContainerState::ContainerExited as i32, "{s:?}");
        r.remove_container(pb::RemoveContainerRequest { container_id: sec.clone() }).await.unwrap();
        assert!(r.container_status(pb::ContainerStatusRequest { container_id: sec.clone(), verbose: false }).await.is_err());

        // Stopping pod A tears its network down: netns, veth, address.
        let veths_before = veths(&env.network);
        let ipam = w.dir.path().join("ipam").join(&env.network).join(&ip_a);
        assert!(ipam.exists(), "{}", ipam.display());
        r.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: a.clone() }).await.unwrap();
        r.stop_pod_sandbox(pb::StopPodSandboxRequest { pod_sandbox_id: a.clone() }).await.expect("stop twice");
        let sa = pod_status(&mut r, &a).await;
        assert_eq!(sa.state, pb::PodSandboxState::SandboxNotready as i32);
        let not_ready = r
            .list_pod_sandbox(pb::ListPodSandboxRequest {
                filter: Some(pb::PodSandboxFilter {
                    state: Some(pb::PodSandboxStateValue {
                        state: pb::PodSandboxState::SandboxNotready as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(not_ready.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), vec![a.clone()]);
        assert!(!netns_a.exists());
        assert!(!ipam.exists());
        assert_eq!(veths(&env.network), veths_before - 1);
        assert_eq!(c_status(&mut r, &web_id).await.state, pb::ContainerState::ContainerExited as i32);
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: a.clone() }).await.unwrap();
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: a.clone() }).await.expect("remove twice");
        assert!(list(pb::ContainerFilter { pod_sandbox_id: a.clone(), ..Default::default() }).await.is_empty());
        // Pod B goes without a stop first; its shm is unmounted and removed with it.
        let mounted = |p: &std::path::Path| {
            std::fs::read_to_string("/proc/self/mountinfo").unwrap().lines().any(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()))
        };
        assert!(mounted(&pod_shm));
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest { pod_sandbox_id: b.clone() }).await.unwrap();
        assert!(!mounted(&pod_shm) && !pod_shm.exists());
        let left = r.list_pod_sandbox(pb::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
        assert!(left.is_empty(), "{left:?}");
        assert!(list(pb::ContainerFilter::default()).await.is_empty());
        assert_eq!(veths(&env.network), 0);
        let shims = std::fs::read_dir(w.state.join("io.containerd.runtime.v2.task/k8s.io")).map(|d| d.count()).unwrap_or(0);
        assert_eq!(shims, 0);
    });
}

/// Mount propagation as critest checks it (and containerd does it): a host path mounted with
/// Bidirectional needs a shared mount and passes mounts both ways; HostToContainer passes the
/// host's mounts in only; Private passes none. A Bidirectional mount of a private host path is
/// refused.
#[test]
fn cri_mount_propagation() {
    wharf_tests::require_root();
    let (_reg, env, image) = busybox_pods();
    let w = &env.w;
    let mount = |args: &[&str]| {
        let st = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?}");
    };
    let umount = |p: &std::path::Path| {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(p)
            .status();
    };
    rt().block_on(async {
        let (mut r, mut i) = clients(w).await;
        pull(&mut i, &image, None).await.unwrap();
        let mut pc = pod_config("prop", "uid-prop", &w.dir.path().join("logs"));
        let mut linux = pc.linux.clone().unwrap();
        linux.security_context.as_mut().unwrap().privileged = true;
        pc.linux = Some(linux);
        let pod = run_pod(&mut r, &pc).await.unwrap();
        let mut holds = Vec::new();
        for (n, prop) in [
            pb::MountPropagation::PropagationPrivate,
            pb::MountPropagation::PropagationHostToContainer,
            pb::MountPropagation::PropagationBidirectional,
        ]
        .into_iter()
        .enumerate()
        {
            let host = w.dir.path().join(format!("prop{n}"));
            let (src, host_mnt, ctr_mnt) =
                (host.join("src"), host.join("hostmnt"), host.join("ctrmnt"));
            for d in [&src, &host_mnt, &ctr_mnt] {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(src.join("file"), "x").unwrap();
            let h = host.display().to_string();
            mount(&["--bind", &h, &h]);
            if prop == pb::MountPropagation::PropagationPrivate {
                mount(&["--make-rprivate", &h]);
            } else {
                mount(&["--make-rshared", &h]);
            }
            holds.push(host.clone());
            let mut c = container_config(&format!("c{n}"), &image, &["sleep", "1000"]);
            c.mounts = vec![pb::Mount {
                container_path: h.clone(),
                host_path: h.clone(),
                propagation: prop as i32,
                ..Default::default()
            }];
            let c = secured(
                c,
                pb::LinuxContainerSecurityContext {
                    privileged: true,
                    ..Default::default()
                },
            );
            let id = create(&mut r, &pod, &pc, c).await.unwrap();
            start(&mut r, &id).await;
            // Host -> container.
            mount(&[
                "--bind",
                &src.display().to_string(),
                &host_mnt.display().to_string(),
            ]);
            let seen = exec(&mut r, &id, &["ls", &host_mnt.display().to_string()]).await;
            let expect_in = prop != pb::MountPropagation::PropagationPrivate;
            assert_eq!(
                out(&seen) == "file",
                expect_in,
                "{prop:?}: host mount in container: {seen:?}"
            );
            // Container -> host.
            let m = exec(
                &mut r,
                &id,
                &[
                    "mount",
                    "--bind",
                    &src.display().to_string(),
                    &ctr_mnt.display().to_string(),
                ],
            )
            .await;
            assert_eq!(m.exit_code, 0, "{prop:?}: {m:?}");
            let on_host = std::fs::read_dir(&ctr_mnt).unwrap().count() == 1;
            let expect_out = prop == pb::MountPropagation::PropagationBidirectional;
            assert_eq!(on_host, expect_out, "{prop:?}: container mount on the host");
            umount(&ctr_mnt);
            umount(&host_mnt);
        }
        // Bidirectional needs the host path on a shared mount.
        let private = w.dir.path().join("private");
        std::fs::create_dir_all(&private).unwrap();
        let p = private.display().to_string();
        mount(&["--bind", &p, &p]);
        mount(&["--make-private", &p]);
        holds.push(private.clone());
        let mut c = container_config("refused", &image, &["true"]);
        c.mounts = vec![pb::Mount {
            container_path: "/x".into(),
            host_path: p.clone(),
            propagation: pb::MountPropagation::PropagationBidirectional as i32,
            ..Default::default()
        }];
        let e = create(&mut r, &pod, &pc, c).await.unwrap_err();
        assert!(e.message().contains("not a shared mount"), "{e:?}");
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        for h in holds.iter().rev() {
            umount(h);
        }
    });
}

/// The parent of `pid` (the shim that reaps it).
fn ppid(pid: i64) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(1).unwrap().parse().unwrap()
}

async fn verbose_pid(r: &mut Runtime, id: &str, pod: bool) -> i64 {
    let info = if pod {
        r.pod_sandbox_status(pb::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info
    } else {
        r.container_status(pb::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner()
        .info
    };
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    v["pid"].as_i64().unwrap()
}

/// As containerd groups them: a pod's containers run under the shim of its sandbox (one shim
/// process per pod), which outlives a container that is removed or fails to start, and goes when
/// the pod goes; another pod has a shim of its own.
#[test]
fn cri_pod_containers_share_one_shim() {
    wharf_tests::require_root();
    let env = pod_env();
    let w = &env.w;
    let logs = w.dir.path().join("logs");
    rt().block_on(async {
        let (mut r, mut i) = clients(w).await;
        let pc = pod_config("shared", "uid-shared", &logs);
        let pod = run_pod(&mut r, &pc).await.unwrap();
        let pause = list(&mut i, None).await;
        let pause = pause.iter().find(|i| i.pinned).unwrap().repo_tags[0].clone();
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let id = create(&mut r, &pod, &pc, container_config(name, &pause, &[]))
                .await
                .unwrap();
            start(&mut r, &id).await;
            ids.push(id);
        }
        let shim = ppid(verbose_pid(&mut r, &pod, true).await);
        let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap();
        assert_eq!(comm.trim(), "containerd-shim", "{shim}");
        for id in &ids {
            assert_eq!(ppid(verbose_pid(&mut r, id, false).await), shim, "{id}");
        }
        // Execs (a probe's every few seconds) leave no threads behind in the long-lived shim.
        let threads = || {
            std::fs::read_to_string(format!("/proc/{shim}/status"))
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
        };
        exec(&mut r, &ids[1], &["/pause", "-v"]).await;
        let before = threads();
        for _ in 0..10 {
            exec(&mut r, &ids[1], &["/pause", "-v"]).await;
        }
        assert!(threads() <= before + 1, "{before} -> {} threads", threads());
        // Another pod: another shim.
        let pc2 = pod_config("other", "uid-other", &logs);
        let pod2 = run_pod(&mut r, &pc2).await.unwrap();
        assert_ne!(ppid(verbose_pid(&mut r, &pod2, true).await), shim);

        // A container that fails to start leaves the pod's shim and containers alone.
        let bad = create(
            &mut r,
            &pod,
            &pc,
            container_config("bad", &pause, &["/nonexistent"]),
        )
        .await
        .unwrap();
        let e = r
            .start_container(pb::StartContainerRequest {
                container_id: bad.clone(),
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("/nonexistent"), "{e:?}");
        // Its clean-up kept the shim's socket: the next container joins the same shim.
        let c = create(&mut r, &pod, &pc, container_config("c", &pause, &[]))
            .await
            .unwrap();
        start(&mut r, &c).await;
        assert_eq!(ppid(verbose_pid(&mut r, &c, false).await), shim);
        // Removing a container keeps the shim for the others.
        r.remove_container(pb::RemoveContainerRequest {
            container_id: ids[0].clone(),
        })
        .await
        .unwrap();
        assert!(std::path::Path::new(&format!("/proc/{shim}")).exists());
        let s = c_status(&mut r, &ids[1]).await;
        assert_eq!(
            s.state,
            pb::ContainerState::ContainerRunning as i32,
            "{s:?}"
        );
        r.stop_container(pb::StopContainerRequest {
            container_id: ids[1].clone(),
            timeout: 5,
        })
        .await
        .unwrap();
        let s = c_status(&mut r, &ids[1]).await;
        assert_eq!(s.state, pb::ContainerState::ContainerExited as i32, "{s:?}");
        assert!(std::path::Path::new(&format!("/proc/{shim}")).exists());

        // The pod's end is the shim's.
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{shim}/comm"))
            .is_ok_and(|c| c.trim() == "containerd-shim")
        {
            assert!(Instant::now() < deadline, "shim {shim} outlived its pod");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A pod's shim killed: its sandbox and every container of it are seen to end.
        let d = create(&mut r, &pod2, &pc2, container_config("d", &pause, &[]))
            .await
            .unwrap();
        start(&mut r, &d).await;
        let shim2 = ppid(verbose_pid(&mut r, &d, false).await);
        assert_eq!(ppid(verbose_pid(&mut r, &pod2, true).await), shim2);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim2 as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        // As containerd reports a container whose shim is gone: killed (137), reason Error.
        let s = exited(&mut r, &d).await;
        assert_eq!((s.exit_code, s.reason.as_str()), (137, "Error"), "{s:?}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while pod_status(&mut r, &pod2).await.state != pb::PodSandboxState::SandboxNotready as i32 {
            assert!(Instant::now() < deadline, "pod of a dead shim still ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod2.clone(),
        })
        .await
        .unwrap();
    });
}

/// busybox and a layer for volumes: `/data` (uid 1000, 0750) with a file and a symlink,
/// `/sneaky` -> `/etc` (absolute: resolved in the rootfs, it is the image's /etc).
fn volume_image(volumes: &[&str]) -> images::Image {
    let extra = vec![
        images::symlink("data/link", "/etc/passwd"),
        images::symlink("sneaky", "/etc"),
        images::file("notadir", 0o644, b"a file\n"),
    ];
    images::with_volumes(extra, volumes).unwrap()
}

/// Image-declared volumes, as containerd's CRI makes them: a directory of the container's own
/// at each path no CRI mount covers, writable on a read-only rootfs, seeded from the image
/// (owner and mode kept, symlinks resolved inside the rootfs), fresh for each container and
/// removed with it; an image whose volume is a file fails CreateContainer leaving nothing.
#[test]
fn cri_image_volumes() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let good = volume_image(&["/data", "/empty/sub", "/sneaky", "/covered"]);
    images::push(&reg, "vols", "latest", &good).unwrap();
    images::push(&reg, "vols", "bad", &volume_image(&["/data", "/notadir"])).unwrap();
    let env = pod_env();
    let w = &env.w;
    let image = format!("{}/vols:latest", reg.host());
    let bad = format!("{}/vols:bad", reg.host());
    let covered = w.dir.path().join("covered");
    std::fs::create_dir_all(&covered).unwrap();
    std::fs::write(covered.join("from-host"), "host\n").unwrap();
    let host_etc: Vec<String> = std::fs::read_dir("/etc")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    rt().block_on(async {
        let (mut r, mut i) = clients(w).await;
        pull(&mut i, &image, None).await.unwrap();
        pull(&mut i, &bad, None).await.unwrap();
        let pc = pod_config("vols", "uid-vols", &w.dir.path().join("logs"));
        let pod = run_pod(&mut r, &pc).await.unwrap();
        let make = |name: &str| {
            let mut c = container_config(name, &image, &["sleep", "1000"]);
            c.mounts = vec![pb::Mount {
                container_path: "/covered".into(),
                host_path: covered.display().to_string(),
                ..Default::default()
            }];
            secured(
                c,
                pb::LinuxContainerSecurityContext {
                    readonly_rootfs: true,
                    ..Default::default()
                },
            )
        };
        let c1 = create(&mut r, &pod, &pc, make("c1")).await.unwrap();
        // Seeded at create, on the host: the image's content and nothing else. The absolute
        // symlink /sneaky -> /etc resolved inside the rootfs: the image's /etc, not the host's.
        let dir = w.root.join("cri/containers").join(&c1);
        let mut seeded: Vec<Vec<String>> = std::fs::read_dir(dir.join("volumes"))
            .unwrap()
            .map(|e| {
                let mut names: Vec<String> = std::fs::read_dir(e.unwrap().path())
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                names.sort();
                names
            })
            .collect();
        seeded.sort();
        assert_eq!(
            seeded,
            [vec![], vec!["group", "passwd"], vec!["link", "seed"]],
            "host /etc: {host_etc:?}"
        );
        start(&mut r, &c1).await;
        let sh = |cmd: &str| vec!["sh".to_string(), "-c".to_string(), cmd.to_string()];
        let run = |r: &mut Runtime, id: &str, cmd: &str| {
            let (mut r, id, cmd) = (r.clone(), id.to_string(), sh(cmd));
            async move {
                let res = r
                    .exec_sync(pb::ExecSyncRequest {
                        container_id: id,
                        cmd,
                        timeout: 10,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (res.exit_code, out(&res))
            }
        };
        for (cmd, want) in [
            // Seeded from the image, its owner and mode kept, the symlink copied as a link.
            ("cat /data/seed", "seeded"),
            ("stat -c '%u %a' /data /data/seed", "1000 750\n1000 640"),
            ("readlink /data/link", "/etc/passwd"),
            // Writable although the rootfs is read-only (checked below).
            ("echo new > /data/new && cat /data/new", "new"),
            // A path the image lacks: an empty directory, writable.
            (
                "ls -A /empty/sub && touch /empty/sub/x && ls /empty/sub",
                "x",
            ),
            // The symlinked volume is mounted where the link leads, in the rootfs: /etc.
            (
                "grep ^user: /sneaky/passwd",
                "user:x:1000:1000:user:/home/user:/bin/sh",
            ),
            // A CRI mount wins over the image's volume at the same path.
            ("ls /covered", "from-host"),
        ] {
            assert_eq!(run(&mut r, &c1, cmd).await, (0, want.to_string()), "{cmd}");
        }
        assert_ne!(run(&mut r, &c1, "touch /rootfs-file").await.0, 0);

        // The write landed in the container's own directory on the host.
        let vols: Vec<std::path::PathBuf> = std::fs::read_dir(dir.join("volumes"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(vols.len(), 3, "{vols:?}");
        assert_eq!(
            vols.iter()
                .filter(|v| std::fs::read_to_string(v.join("new")).is_ok_and(|s| s == "new\n"))
                .count(),
            1
        );

        // Another container of the same image starts from the image's content again.
        let c2 = create(&mut r, &pod, &pc, make("c2")).await.unwrap();
        start(&mut r, &c2).await;
        assert_eq!(run(&mut r, &c2, "ls /data").await, (0, "link\nseed".into()));

        // Removed with the container.
        r.remove_container(pb::RemoveContainerRequest {
            container_id: c1.clone(),
        })
        .await
        .unwrap();
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(w.root.join("cri/containers").join(&c2).exists());

        // A volume where the image has a file: refused, nothing half-created.
        let before = r
            .list_containers(pb::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers
            .len();
        let e = create(&mut r, &pod, &pc, container_config("b", &bad, &["true"]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("/notadir"), "{e:?}");
        let after = r
            .list_containers(pb::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers
            .len();
        assert_eq!(before, after);
        let left: Vec<_> = std::fs::read_dir(w.root.join("cri/containers"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(&c2)]);

        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        assert!(!w.root.join("cri/containers").join(&c2).exists());
    });
}

#[test]
fn cri_pod_survives_wharfd_restart() {
    wharf_tests::require_root();
    let mut env = pod_env();
    let logs = env.w.dir.path().join("logs");
    let cfg = pod_config("survivor", "uid-s", &logs);
    let (pod, ctr, gone, gone_pid) = rt().block_on(async {
        let (mut r, mut i) = clients(&env.w).await;
        // No registry: the pod and its container both run the built-in pause image.
        let pod = run_pod(&mut r, &cfg).await.expect("RunPodSandbox");
        let pause = list(&mut i, None).await;
        let pause = pause
            .iter()
            .find(|i| i.pinned)
            .expect("pinned pause image")
            .repo_tags[0]
            .clone();
        let ctr = create(&mut r, &pod, &cfg, container_config("pause", &pause, &[]))
            .await
            .unwrap();
        start(&mut r, &ctr).await;
        // A second container ends while wharfd is down.
        let gone = create(&mut r, &pod, &cfg, container_config("gone", &pause, &[]))
            .await
            .unwrap();
        start(&mut r, &gone).await;
        let info = r
            .container_status(pb::ContainerStatusRequest {
                container_id: gone.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info;
        let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
        let pid = v["pid"].as_i64().unwrap() as i32;
        assert!(pid > 0, "{v}");
        (pod, ctr, gone, pid)
    });
    env.w.kill();
    // pause is its namespace's init: a SIGTERM that comes before its handler is in place is
    // dropped by the kernel, which a loaded machine makes likely right after the start.
    wait_until_catches(gone_pid, libc::SIGTERM);
    let pid = nix::unistd::Pid::from_raw(gone_pid);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{gone_pid}")).exists() {
        assert!(Instant::now() < deadline, "pause {gone_pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Volume directories: one of a container that is gone (a crash between removing them and
    // the record), one of a live container.
    let containers = env.w.root.join("cri/containers");
    let orphan = containers.join("0".repeat(64));
    std::fs::create_dir_all(orphan.join("volumes/v")).unwrap();
    std::fs::create_dir_all(containers.join(&ctr).join("volumes/v")).unwrap();
    env.w.spawn().unwrap();
    rt().block_on(async {
        let (mut r, _) = clients(&env.w).await;
        r.version(pb::VersionRequest::default()).await.unwrap();
        // Removed in the background after the first CRI call.
        let deadline = Instant::now() + Duration::from_secs(10);
        while orphan.exists() {
            assert!(Instant::now() < deadline, "orphan volumes kept");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(containers.join(&ctr).join("volumes/v").exists());
        let pods = r
            .list_pod_sandbox(pb::ListPodSandboxRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .items;
        assert_eq!(pods.len(), 1, "{pods:?}");
        assert_eq!(pods[0].id, pod);
        assert_eq!(pods[0].state, pb::PodSandboxState::SandboxReady as i32);
        let s = pod_status(&mut r, &pod).await;
        assert!(s.network.unwrap().ip.starts_with(&env.prefix));
        let cs = r
            .list_containers(pb::ListContainersRequest { filter: None })
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(cs.len(), 2);
        let st = c_status(&mut r, &gone).await;
        assert_eq!(
            (st.state, st.exit_code, st.reason.as_str()),
            (pb::ContainerState::ContainerExited as i32, 0, "Completed"),
            "{st:?}"
        );
        let st = c_status(&mut r, &ctr).await;
        assert_eq!(
            st.state,
            pb::ContainerState::ContainerRunning as i32,
            "{st:?}"
        );
        // A new container joins the pod's shim, which the restarted daemon reconnected to.
        let pause = c_status(&mut r, &ctr).await.image.unwrap().image;
        let late = create(&mut r, &pod, &cfg, container_config("late", &pause, &[]))
            .await
            .unwrap();
        start(&mut r, &late).await;
        assert_eq!(
            ppid(verbose_pid(&mut r, &late, false).await),
            ppid(verbose_pid(&mut r, &pod, true).await)
        );
        // The exit is seen by the restarted daemon (pause exits 0 on SIGTERM).
        r.stop_container(pb::StopContainerRequest {
            container_id: ctr.clone(),
            timeout: 5,
        })
        .await
        .unwrap();
        let st = c_status(&mut r, &ctr).await;
        assert_eq!(
            (st.state, st.exit_code, st.reason.as_str()),
            (pb::ContainerState::ContainerExited as i32, 0, "Completed"),
            "{st:?}"
        );
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        assert!(!env.w.state.join("cri/netns").join(&pod).exists());
        assert_eq!(veths(&env.network), 0);
    });
}

#[test]
fn cri_host_network_sysctls_cgroup_parent() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let img = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &img).unwrap();
    let env = pod_env();
    let image = format!("{}/busybox:latest", reg.host());
    let logs = env.w.dir.path().join("logs");
    let parent = format!("wharf-test-{}", std::process::id());
    rt().block_on(async {
        let (mut r, mut i) = clients(&env.w).await;
        pull(&mut i, &image, None).await.expect("pull busybox");

        let host_shm_mounts = || {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            mountinfo.lines().filter(|l| l.split(' ').nth(4) == Some("/dev/shm")).count()
        };
        let shm_mounts = host_shm_mounts();
        // Host network: no namespace of its own, the host's name and /etc/hosts.
        let mut host = pod_config("host", "uid-h", &logs.join("h"));
        if let Some(ns) = host
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.network = pb::NamespaceMode::Node as i32;
            ns.ipc = pb::NamespaceMode::Node as i32;
        }
        let h = run_pod(&mut r, &host).await.expect("host network pod");
        let st = pod_status(&mut r, &h).await;
        assert_eq!(st.state, pb::PodSandboxState::SandboxReady as i32);
        assert!(st.network.is_none(), "{st:?}");
        assert_eq!(
            st.linux
                .unwrap()
                .namespaces
                .unwrap()
                .options
                .unwrap()
                .network,
            pb::NamespaceMode::Node as i32
        );
        assert!(!env.w.state.join("cri/netns").join(&h).exists());
        let c = create(
            &mut r,
            &h,
            &host,
            container_config("c", &image, &["sleep", "3600"]),
        )
        .await
        .unwrap();
        start(&mut r, &c).await;
        let hostname = nix::unistd::gethostname().unwrap().into_string().unwrap();
        assert_eq!(out(&exec(&mut r, &c, &["hostname"]).await), hostname);
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
        assert_eq!(
            out(&exec(&mut r, &c, &["cat", "/etc/hosts"]).await),
            hosts.trim()
        );
        // Host IPC: the host's /dev/shm, which the pod's end must leave mounted.
        let marker = format!("/dev/shm/wharf-test-{}", std::process::id());
        std::fs::write(&marker, "host shm").unwrap();
        let seen = out(&exec(&mut r, &c, &["cat", &marker]).await);
        std::fs::remove_file(&marker).unwrap();
        assert_eq!(seen, "host shm");

        // A container with a terminal logs what it prints, as one stream.
        let mut tty = container_config(
            "tty",
            &image,
            &["sh", "-c", "echo tty-out; exec sleep 3600"],
        );
        tty.tty = true;
        let tty = create(&mut r, &h, &host, tty).await.unwrap();
        start(&mut r, &tty).await;
        let tty_log = logs.join("h/tty/0.log");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&tty_log)
            .unwrap_or_default()
            .contains(" stdout F tty-out")
        {
            assert!(
                Instant::now() < deadline,
                "{:?}",
                std::fs::read_to_string(&tty_log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            out(&exec(&mut r, &tty, &["echo", "in-tty"]).await),
            "in-tty"
        );

        // Seccomp: RuntimeDefault is wharf's default profile, Localhost a profile file, unset
        // none (containerd 1.6); a device from the host.
        let profile = env.w.dir.path().join("no-mkdir.json");
        std::fs::write(
            &profile,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let seccomp = |profile_type: i32, localhost_ref: String| pb::LinuxContainerConfig {
            resources: None,
            security_context: Some(pb::LinuxContainerSecurityContext {
                seccomp: Some(pb::SecurityProfile {
                    profile_type,
                    localhost_ref,
                }),
                ..Default::default()
            }),
        };
        use pb::security_profile::ProfileType;
        let probe = ["sh", "-c", "mkdir /tmp/x 2>/dev/null && echo made || echo refused; exec sleep 3600"];
        let mut dflt = container_config("dflt", &image, &probe);
        dflt.linux = Some(seccomp(ProfileType::RuntimeDefault as i32, String::new()));
        dflt.devices = vec![pb::Device {
            container_path: "/dev/mynull".into(),
            host_path: "/dev/null".into(),
            permissions: "rwm".into(),
        }];
        let mut local = container_config("local", &image, &probe);
        local.linux = Some(seccomp(
            ProfileType::Localhost as i32,
            profile.display().to_string(),
        ));
        let dflt = create(&mut r, &h, &host, dflt).await.unwrap();
        let local = create(&mut r, &h, &host, local).await.unwrap();
        start(&mut r, &dflt).await;
        start(&mut r, &local).await;
        let mode = |r: pb::ExecSyncResponse| out(&r).replace("Seccomp:", "").trim().to_string();
        let grep = ["grep", "^Seccomp:", "/proc/1/status"];
        assert_eq!(mode(exec(&mut r, &dflt, &grep).await), "2");
        assert_eq!(mode(exec(&mut r, &local, &grep).await), "2");
        assert_eq!(mode(exec(&mut r, &c, &grep).await), "0");
        // Exec'd processes run under the container's filter too, with its capabilities.
        let own = ["grep", "-E", "^(Seccomp|CapEff|CapBnd):", "/proc/self/status"];
        let init = ["grep", "-E", "^(Seccomp|CapEff|CapBnd):", "/proc/1/status"];
        for id in [&dflt, &local] {
            let o = out(&exec(&mut r, id, &own).await);
            assert!(o.contains("Seccomp:\t2"), "{o}");
            assert_eq!(o, out(&exec(&mut r, id, &init).await));
        }
        let res = exec(&mut r, &local, &["sh", "-c", "mkdir /tmp/y 2>/dev/null && echo made || echo refused"]).await;
        assert_eq!(out(&res), "refused", "{res:?}");
        for (id, want) in [("dflt", "made"), ("local", "refused")] {
            let log = logs.join("h").join(id).join("0.log");
            let deadline = Instant::now() + Duration::from_secs(10);
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains(&format!(" stdout F {want}"))
            {
                assert!(Instant::now() < deadline, "{id}: {:?}", std::fs::read_to_string(&log));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let res = exec(&mut r, &dflt, &["sh", "-c", "echo x > /dev/mynull && echo ok"]).await;
        assert_eq!(out(&res), "ok", "{res:?}");

        // A systemd slice as parent (a kubelet on the systemd driver) is refused, with advice,
        // before anything is made.
        let mut slice = pod_config("sliced", "uid-sl", &logs.join("sl"));
        if let Some(l) = slice.linux.as_mut() {
            l.cgroup_parent = "kubepods-besteffort-poduid_sl.slice".into();
        }
        let e = run_pod(&mut r, &slice).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("cgroupDriver"), "{e:?}");
        let pods = r.list_pod_sandbox(pb::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
        assert!(pods.iter().all(|p| p.metadata.as_ref().unwrap().name != "sliced"), "{pods:?}");

        // Sysctls of the pod's namespaces; cgroups under the pod's parent.
        let mut cfg = pod_config("tuned", "uid-t", &logs.join("t"));
        if let Some(l) = cfg.linux.as_mut() {
            l.cgroup_parent = format!("/{parent}");
            l.sysctls = [
                ("kernel.shm_rmid_forced".to_string(), "1".to_string()),
                (
                    "net.ipv4.ip_local_port_range".to_string(),
                    "40000 50000".to_string(),
                ),
            ]
            .into();
        }
        let t = run_pod(&mut r, &cfg).await.expect("pod with sysctls");
        let c = create(
            &mut r,
            &t,
            &cfg,
            container_config("c", &image, &["sleep", "3600"]),
        )
        .await
        .unwrap();
        start(&mut r, &c).await;
        assert_eq!(
            out(&exec(&mut r, &c, &["cat", "/proc/sys/kernel/shm_rmid_forced"]).await),
            "1"
        );
        assert_eq!(
            out(&exec(
                &mut r,
                &c,
                &["cat", "/proc/sys/net/ipv4/ip_local_port_range"]
            )
            .await),
            "40000\t50000"
        );
        // A container sharing the pod's PID namespace sees the pause process.
        let mut shared = container_config("shared", &image, &["sleep", "3600"]);
        shared.linux = Some(pb::LinuxContainerConfig {
            resources: Some(pb::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            security_context: Some(pb::LinuxContainerSecurityContext {
                namespace_options: Some(pb::NamespaceOption {
                    pid: pb::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        });
        let shared = create(&mut r, &t, &cfg, shared).await.unwrap();
        start(&mut r, &shared).await;
        let ps = out(&exec(&mut r, &shared, &["ps"]).await);
        assert!(ps.contains("/pause"), "{ps}");
        assert!(!out(&exec(&mut r, &c, &["ps"]).await).contains("/pause"));
        // ...and its own cgroups under /sys/fs/cgroup, read-only (on v1, spelled out for
        // libcontainer, which cannot resolve a cgroup mount from a joined PID namespace).
        let limit = out(&exec(&mut r, &shared, &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]).await);
        let limit = if limit.trim().is_empty() {
            out(&exec(&mut r, &shared, &["cat", "/sys/fs/cgroup/memory.max"]).await)
        } else {
            limit
        };
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
        let w = exec(&mut r, &shared, &["mkdir", "/sys/fs/cgroup/pids/x"]).await;
        assert_ne!(w.exit_code, 0, "the container's cgroup is writable");

        let cg = std::path::Path::new("/sys/fs/cgroup/memory").join(&parent);
        assert!(cg.join(&t).is_dir(), "{}", cg.join(&t).display());
        assert!(cg.join(&c).is_dir(), "{}", cg.join(&c).display());

        // Pods started side by side: distinct addresses; of two with one name, one wins.
        let configs: Vec<pb::PodSandboxConfig> = ["p1", "p2", "p3", "p3"]
            .iter()
            .map(|n| pod_config(n, &format!("uid-{n}"), &logs.join(n)))
            .collect();
        let results = futures::future::join_all(configs.iter().map(|c| {
            let mut r = r.clone();
            let c = c.clone();
            async move { run_pod(&mut r, &c).await }
        }))
        .await;
        let ok: Vec<String> = results.iter().filter_map(|x| x.clone().ok()).collect();
        assert_eq!(ok.len(), 3, "{results:?}");
        let refused: Vec<&tonic::Status> = results.iter().filter_map(|x| x.as_ref().err()).collect();
        assert_eq!(refused[0].code(), tonic::Code::AlreadyExists, "{refused:?}");
        let mut ips = Vec::new();
        for id in &ok {
            ips.push(pod_status(&mut r, id).await.network.unwrap().ip);
        }
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 3, "{ips:?}");
        for id in &ok {
            r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
            .unwrap();
        }

        for p in [&h, &t] {
            r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
                pod_sandbox_id: p.to_string(),
            })
            .await
            .unwrap();
        }
        assert_eq!(host_shm_mounts(), shm_mounts, "the host's /dev/shm was unmounted");
    });
    // The parent cgroups the test asked for.
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
        for d in dirs.flatten() {
            let _ = std::fs::remove_dir(d.path().join(&parent));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GetContainerEvents and pod sandbox stats.

/// The (container id, event type) of events read from `stream` until `last` arrives.
async fn events_until(
    stream: &mut tonic::Streaming<pb::ContainerEventResponse>,
    last: (&str, pb::ContainerEventType),
) -> Vec<pb::ContainerEventResponse> {
    let mut got = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .unwrap_or_else(|_| panic!("no {last:?} event; got {got:?}"))
            .unwrap()
            .expect("the event stream ended");
        let done = e.container_id == last.0 && e.container_event_type == last.1 as i32;
        got.push(e);
        if done {
            return got;
        }
    }
}

#[test]
fn cri_container_events_and_pod_stats() {
    use pb::ContainerEventType as Ev;
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let img = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &img).unwrap();
    // Dropped after the daemon (declared before it): the shims are gone by then.
    let parent = format!("wharf-events8-test-{}", std::process::id());
    let _cleanup = CgroupParent(parent.clone());
    let env = pod_env();
    let image = format!("{}/busybox:latest", reg.host());
    let logs = env.w.dir.path().join("logs");
    rt().block_on(async {
        let (mut r, mut i) = clients(&env.w).await;
        pull(&mut i, &image, None).await.expect("pull busybox");
        let mut events = r
            .get_container_events(pb::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut second = r
            .get_container_events(pb::GetEventsRequest {})
            .await
            .unwrap()
            .into_inner();

        // A pod under a cgroup parent of the test's, with one container.
        let mut cfg = pod_config("ev", "uid-ev", &logs.join("ev"));
        if let Some(l) = cfg.linux.as_mut() {
            l.cgroup_parent = format!("/{parent}");
        }
        let pod = run_pod(&mut r, &cfg).await.expect("pod");
        let c = create(
            &mut r,
            &pod,
            &cfg,
            container_config("c", &image, &["sleep", "3600"]),
        )
        .await
        .unwrap();
        start(&mut r, &c).await;

        // Stats: the pod's cgroup, its network namespace, its container.
        let gateway = format!("{}1", env.prefix);
        exec(
            &mut r,
            &c,
            &[
                "busybox",
                "wget",
                "-q",
                "-T",
                "1",
                &format!("http://{gateway}:1/"),
            ],
        )
        .await;
        let st = r
            .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap();
        let attrs = st.attributes.unwrap();
        assert_eq!(attrs.id, pod);
        assert_eq!(attrs.labels["app"], "ev");
        let linux = st.linux.unwrap();
        let v = |x: Option<pb::UInt64Value>| x.map(|v| v.value).unwrap_or(0);
        let cpu = linux.cpu.unwrap();
        assert!(v(cpu.usage_core_nano_seconds) > 0, "{cpu:?}");
        let mem = linux.memory.unwrap();
        assert!(v(mem.working_set_bytes) > 0, "{mem:?}");
        assert!(v(mem.usage_bytes) >= v(mem.working_set_bytes), "{mem:?}");
        // pause + sleep
        let procs = v(linux.process.unwrap().process_count);
        assert!(procs >= 2, "{procs}");
        let net = linux.network.unwrap().default_interface.unwrap();
        assert_eq!(net.name, "eth0");
        assert!(v(net.tx_bytes) > 0 && v(net.rx_bytes) > 0, "{net:?}");
        let ids: Vec<String> = linux
            .containers
            .iter()
            .map(|s| s.attributes.clone().unwrap().id)
            .collect();
        assert_eq!(ids, vec![c.clone()]);
        // The pod's figures cover its container's.
        let c_cpu = v(linux.containers[0].cpu.unwrap().usage_core_nano_seconds);
        assert!(v(cpu.usage_core_nano_seconds) >= c_cpu, "{c_cpu}");

        // usage_nano_cores, the CPU rate between two samples: the usage's growth over the time
        // between them (so it does not depend on how busy the machine is); a container spinning
        // on one core can use at most one core, the idle one about none; the pod covers the
        // spinner.
        let busy = create(
            &mut r,
            &pod,
            &cfg,
            container_config("busy", &image, &["sh", "-c", "while :; do :; done"]),
        )
        .await
        .unwrap();
        start(&mut r, &busy).await;
        let mut samples = Vec::new();
        for _ in 0..2 {
            let stats = |id: String| {
                let mut r = r.clone();
                async move {
                    r.container_stats(pb::ContainerStatsRequest { container_id: id })
                        .await
                        .unwrap()
                        .into_inner()
                        .stats
                        .unwrap()
                        .cpu
                        .unwrap()
                }
            };
            let (b, idle) = (stats(busy.clone()).await, stats(c.clone()).await);
            let p = r
                .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                    pod_sandbox_id: pod.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .stats
                .unwrap()
                .linux
                .unwrap();
            // The pod's figures include its containers': the spinner's next rate is since this.
            let in_pod = p
                .containers
                .iter()
                .find(|s| s.attributes.as_ref().is_some_and(|a| a.id == busy))
                .and_then(|s| s.cpu)
                .unwrap();
            samples.push((b, idle, p.cpu.unwrap(), in_pod));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let rate = |c: &pb::CpuUsage| c.usage_nano_cores.map(|v| v.value);
        assert_eq!(
            rate(&samples[0].0),
            Some(0),
            "a first sample has no rate yet"
        );
        let (b0, b1) = (&samples[0].3, &samples[1].0);
        let used = v(b1.usage_core_nano_seconds) - v(b0.usage_core_nano_seconds);
        let span = (b1.timestamp - b0.timestamp) as u64;
        let b = rate(b1).unwrap();
        assert!(span > 0 && used > 0, "{b0:?} {b1:?}");
        let want = (used as u128 * 1_000_000_000 / span as u128) as u64;
        assert!(
            b.abs_diff(want) <= want / 100 + 1,
            "rate {b} ns/s, but {used} ns used in {span} ns"
        );
        assert!(b <= 1_100_000_000, "a spinning container used {b} ns/s");
        let idle = rate(&samples[1].1).unwrap();
        assert!(idle < 50_000_000, "an idle container used {idle} ns/s");
        assert!(idle < b, "idle {idle} ns/s, spinning {b} ns/s");
        let p = rate(&samples[1].2).unwrap();
        assert!(p >= b / 2, "the pod used {p} ns/s, its spinner {b}");
        r.stop_container(pb::StopContainerRequest {
            container_id: busy.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        r.remove_container(pb::RemoveContainerRequest {
            container_id: busy.clone(),
        })
        .await
        .unwrap();

        // A host-network pod with no cgroup parent: its members' cgroups add up, no network.
        let mut host = pod_config("evh", "uid-evh", &logs.join("evh"));
        if let Some(ns) = host
            .linux
            .as_mut()
            .and_then(|l| l.security_context.as_mut())
            .and_then(|s| s.namespace_options.as_mut())
        {
            ns.network = pb::NamespaceMode::Node as i32;
        }
        let h = run_pod(&mut r, &host).await.expect("host network pod");
        let lister = r.clone();
        let list = move |f: Option<pb::PodSandboxStatsFilter>| {
            let mut r = lister.clone();
            async move {
                let mut ids: Vec<String> = r
                    .list_pod_sandbox_stats(pb::ListPodSandboxStatsRequest { filter: f })
                    .await
                    .unwrap()
                    .into_inner()
                    .stats
                    .into_iter()
                    .map(|s| s.attributes.unwrap().id)
                    .collect();
                ids.sort();
                ids
            }
        };
        let mut both = vec![pod.clone(), h.clone()];
        both.sort();
        assert_eq!(list(None).await, both);
        let by_id = |id: &str| pb::PodSandboxStatsFilter {
            id: id.into(),
            ..Default::default()
        };
        assert_eq!(list(Some(by_id(&h[..12]))).await, vec![h.clone()]);
        let by_label = |v: &str| pb::PodSandboxStatsFilter {
            label_selector: [("app".to_string(), v.to_string())].into(),
            ..Default::default()
        };
        assert_eq!(list(Some(by_label("ev"))).await, vec![pod.clone()]);
        assert!(list(Some(by_label("nope"))).await.is_empty());
        let hs = r
            .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                pod_sandbox_id: h.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .stats
            .unwrap()
            .linux
            .unwrap();
        assert!(hs.network.is_none(), "{hs:?}");
        assert!(v(hs.cpu.unwrap().usage_core_nano_seconds) > 0);
        assert!(v(hs.memory.unwrap().working_set_bytes) > 0);
        assert!(hs.containers.is_empty());
        let e = r
            .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                pod_sandbox_id: "0123456789abcdef-unknown".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

        // Stop and remove: the container's events, then the pod's.
        r.stop_container(pb::StopContainerRequest {
            container_id: c.clone(),
            timeout: 0,
        })
        .await
        .unwrap();
        r.remove_container(pb::RemoveContainerRequest {
            container_id: c.clone(),
        })
        .await
        .unwrap();
        r.stop_pod_sandbox(pb::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        // A stopped pod has no stats.
        let e = r
            .pod_sandbox_stats(pb::PodSandboxStatsRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert_eq!(list(None).await, vec![h.clone()]);
        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();

        let got = events_until(&mut events, (&pod, Ev::ContainerDeletedEvent)).await;
        let seq: Vec<(String, i32)> = got
            .iter()
            .filter(|e| e.container_id == pod || e.container_id == c)
            .map(|e| (e.container_id.clone(), e.container_event_type))
            .collect();
        let want = vec![
            (pod.clone(), Ev::ContainerCreatedEvent as i32),
            (pod.clone(), Ev::ContainerStartedEvent as i32),
            (c.clone(), Ev::ContainerCreatedEvent as i32),
            (c.clone(), Ev::ContainerStartedEvent as i32),
            (c.clone(), Ev::ContainerStoppedEvent as i32),
            (c.clone(), Ev::ContainerDeletedEvent as i32),
            (pod.clone(), Ev::ContainerStoppedEvent as i32),
            (pod.clone(), Ev::ContainerDeletedEvent as i32),
        ];
        assert_eq!(seq, want);
        let mut last = 0;
        for e in got
            .iter()
            .filter(|e| e.container_id == pod || e.container_id == c)
        {
            assert!(e.created_at >= last, "{got:?}");
            last = e.created_at;
            // Every event carries the pod's status, as kubelet's Evented PLEG needs.
            let ps = e.pod_sandbox_status.as_ref().unwrap();
            assert_eq!(ps.id, pod);
            assert_eq!(ps.metadata.as_ref().unwrap().uid, "uid-ev");
        }
        let of = |id: &str, t: Ev| {
            got.iter()
                .find(|e| e.container_id == id && e.container_event_type == t as i32)
                .unwrap()
        };
        let state_of_c = |e: &pb::ContainerEventResponse| {
            e.containers_statuses
                .iter()
                .find(|s| s.id == c)
                .map(|s| s.state)
        };
        use pb::ContainerState as S;
        assert_eq!(
            state_of_c(of(&c, Ev::ContainerCreatedEvent)),
            Some(S::ContainerCreated as i32)
        );
        assert_eq!(
            state_of_c(of(&c, Ev::ContainerStartedEvent)),
            Some(S::ContainerRunning as i32)
        );
        assert_eq!(
            state_of_c(of(&c, Ev::ContainerStoppedEvent)),
            Some(S::ContainerExited as i32)
        );
        assert_eq!(state_of_c(of(&c, Ev::ContainerDeletedEvent)), None);
        let ready = |e: &pb::ContainerEventResponse| e.pod_sandbox_status.as_ref().unwrap().state;
        assert_eq!(
            ready(of(&pod, Ev::ContainerStartedEvent)),
            pb::PodSandboxState::SandboxReady as i32
        );
        assert_eq!(
            ready(of(&pod, Ev::ContainerStoppedEvent)),
            pb::PodSandboxState::SandboxNotready as i32
        );
        // The host pod's events are there too; a second subscriber got the same.
        assert!(got
            .iter()
            .any(|e| e.container_id == h
                && e.container_event_type == Ev::ContainerStartedEvent as i32));
        let again = events_until(&mut second, (&pod, Ev::ContainerDeletedEvent)).await;
        assert_eq!(again.len(), got.len());

        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: h.clone(),
        })
        .await
        .unwrap();
    });
}

/// Removes a test's cgroup parent from every hierarchy, also when the test fails.
struct CgroupParent(String);

impl Drop for CgroupParent {
    fn drop(&mut self) {
        if let Ok(dirs) = std::fs::read_dir("/sys/fs/cgroup") {
            for d in dirs.flatten() {
                let _ = std::fs::remove_dir(d.path().join(&self.0));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The streaming server (issue 7 item 4): Exec, Attach and PortForward answer single-use URLs;
// clients speak SPDY/3.1 (kubelet's v4 remote-command and port-forward protocols) or WebSocket
// v5 to them.

use wharf_tests::stream_client::{upgrade, Spdy, Ws};

async fn exec_url(
    r: &mut Runtime,
    id: &str,
    cmd: &[&str],
    (stdin, stdout, stderr, tty): (bool, bool, bool, bool),
) -> Result<String, tonic::Status> {
    r.exec(pb::ExecRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin,
        stdout,
        stderr,
    })
    .await
    .map(|r| r.into_inner().url)
}

fn status_of(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("status {s:?}: {e}"))
}

#[test]
fn cri_streaming_exec_attach_port_forward() {
    wharf_tests::require_root();
    let (_reg, env, image) = busybox_pods();
    let w = &env.w;
    let logs = w.dir.path().join("logs");
    rt().block_on(async {
        let (mut r, mut i) = clients(w).await;
        pull(&mut i, &image, None).await.expect("pull busybox");
        let cfg = pod_config("stream8", "uid-stream8", &logs);
        let pod = run_pod(&mut r, &cfg).await.expect("pod");
        let web_cmd = ["sh", "-c", "mkdir -p /www && echo hello-stream8 > /www/index.html && exec httpd -f -p 8080 -h /www"];
        let web = create(&mut r, &pod, &cfg, container_config("web", &image, &web_cmd))
            .await
            .unwrap();
        start(&mut r, &web).await;
        let mut talk = container_config("talk", &image, &["sh", "-c", "while read l; do echo \"got $l\"; done; echo bye"]);
        talk.stdin = true;
        talk.stdin_once = true;
        let talk = create(&mut r, &pod, &cfg, talk).await.unwrap();
        start(&mut r, &talk).await;

        // Bad requests: no such container, no stdio, tty with stderr.
        let e = exec_url(&mut r, "nope-stream8", &["true"], (false, true, false, false))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
        let e = exec_url(&mut r, &web, &["true"], (false, false, false, false))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = exec_url(&mut r, &web, &["true"], (false, true, true, true))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = r
            .port_forward(pb::PortForwardRequest {
                pod_sandbox_id: "nope-stream8".into(),
                port: vec![],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");

        // Exec over SPDY v4: stdin echoed back by cat, EOF passed on, Success.
        let url = exec_url(&mut r, &web, &["cat"], (true, true, false, false)).await.unwrap();
        assert!(url.starts_with("http://127.0.0.1:") && url.contains("/exec/"), "{url}");
        let (mut s, proto) = Spdy::connect(&url, &["v4.channel.k8s.io", "v3.channel.k8s.io"])
            .await
            .unwrap();
        assert_eq!(proto, "v4.channel.k8s.io");
        let err = s.open(&[("streamtype", "error")]).await.unwrap();
        let stdin = s.open(&[("streamtype", "stdin")]).await.unwrap();
        let stdout = s.open(&[("streamtype", "stdout")]).await.unwrap();
        s.write(stdin, b"ping-stream8\n").await.unwrap();
        s.until(|s| s.got(stdout).contains("ping-stream8\n")).await.unwrap();
        s.close(stdin).await.unwrap();
        s.until(|s| s.ended(err)).await.unwrap();
        assert!(s.ended(stdout));
        assert_eq!(s.got(stdout), "ping-stream8\n");
        assert_eq!(status_of(&s.got(err))["status"], "Success");
        assert!(s.replied.contains(&stdin), "{:?}", s.replied);
        s.to_end().await;
        assert!(s.goaway);

        // The token was used: a second request with it is refused, as is a made-up one.
        let (code, _, _) = upgrade(&url, &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io")])
            .await
            .unwrap();
        assert_eq!(code, 404);
        let bogus = url.rsplit_once('/').unwrap().0.to_string() + "/AAAAAAAAAAA";
        assert_eq!(upgrade(&bogus, &[]).await.unwrap().0, 404);
        // A protocol the server does not speak: 403 (and the token is spent).
        let url = exec_url(&mut r, &web, &["true"], (false, true, false, false)).await.unwrap();
        let (code, head, _) = upgrade(&url, &[("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v9.channel.k8s.io")])
            .await
            .unwrap();
        assert_eq!(code, 403, "{head}");

        // A non-zero exit: stdout and stderr apart, the code in the Failure status.
        let url = exec_url(&mut r, &web, &["sh", "-c", "echo out; echo err >&2; exit 3"], (false, true, true, false))
            .await
            .unwrap();
        let (mut s, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
        let err = s.open(&[("streamtype", "error")]).await.unwrap();
        let stdout = s.open(&[("streamtype", "stdout")]).await.unwrap();
        let stderr = s.open(&[("streamtype", "stderr")]).await.unwrap();
        s.until(|s| s.ended(err)).await.unwrap();
        assert_eq!((s.got(stdout).as_str(), s.got(stderr).as_str()), ("out\n", "err\n"));
        let st = status_of(&s.got(err));
        assert_eq!(st["status"], "Failure", "{st}");
        assert_eq!(st["reason"], "NonZeroExitCode", "{st}");
        assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode", "{st}");
        assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");

        // A terminal: the resize reaches the pty (stty size sees it).
        let probe = "for i in $(seq 100); do s=$(stty size); [ \"$s\" = \"33 111\" ] && echo \"size $s\" && exit 0; sleep 0.1; done; echo \"size $s\"; exit 1";
        let url = exec_url(&mut r, &web, &["sh", "-c", probe], (false, true, false, true)).await.unwrap();
        let (mut s, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
        let err = s.open(&[("streamtype", "error")]).await.unwrap();
        let stdout = s.open(&[("streamtype", "stdout")]).await.unwrap();
        let resize = s.open(&[("streamtype", "resize")]).await.unwrap();
        s.write(resize, br#"{"Width":111,"Height":33}"#).await.unwrap();
        s.until(|s| s.ended(err)).await.unwrap();
        assert!(s.got(stdout).contains("size 33 111"), "{:?}", s.got(stdout));
        assert_eq!(status_of(&s.got(err))["status"], "Success");

        // WebSocket v5: stdin through channel 0, closed by the v5 close signal.
        let url = exec_url(&mut r, &web, &["sh", "-c", "cat; echo done >&2; exit 2"], (true, true, true, false))
            .await
            .unwrap();
        let mut ws = Ws::connect(&url, "v5.channel.k8s.io, v4.channel.k8s.io").await.unwrap();
        assert_eq!(ws.protocol, "v5.channel.k8s.io");
        ws.send(0, b"over-ws\n").await.unwrap();
        ws.send(255, &[0]).await.unwrap();
        ws.to_end().await.unwrap();
        assert!(ws.closed);
        assert_eq!((ws.got(1).as_str(), ws.got(2).as_str()), ("over-ws\n", "done\n"));
        let st = status_of(&ws.got(3));
        assert_eq!(st["details"]["causes"][0]["message"], "2", "{st}");
        // The base64 variant: text messages both ways.
        let url = exec_url(&mut r, &web, &["sh", "-c", "echo b64; exit 3"], (false, true, false, false))
            .await
            .unwrap();
        let mut ws = Ws::connect(&url, "v4.base64.channel.k8s.io").await.unwrap();
        assert_eq!(ws.protocol, "v4.base64.channel.k8s.io");
        ws.to_end().await.unwrap();
        assert_eq!(ws.got(1), "b64\n");
        let st = status_of(&ws.got(3));
        assert_eq!(st["details"]["causes"][0]["message"], "3", "{st}");

        // Exec round trip through the server (Exec RPC, upgrade, run `true`, status), measured.
        let n = 10;
        let t0 = Instant::now();
        for _ in 0..n {
            let url = exec_url(&mut r, &web, &["true"], (false, true, false, false)).await.unwrap();
            let (mut s, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
            let err = s.open(&[("streamtype", "error")]).await.unwrap();
            s.open(&[("streamtype", "stdout")]).await.unwrap();
            s.until(|s| s.ended(err)).await.unwrap();
        }
        eprintln!("stream8: exec round trip over SPDY: {:.1} ms (mean of {n})", t0.elapsed().as_secs_f64() * 1000.0 / n as f64);

        // Attach: input reaches the container's stdin, its output comes back (from its log),
        // and with stdin_once the end of input ends the container; attach then ends, Success.
        let url = r
            .attach(pb::AttachRequest {
                container_id: talk.clone(),
                stdin: true,
                tty: false,
                stdout: true,
                stderr: true,
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        assert!(url.contains("/attach/"), "{url}");
        let (mut s, _) = Spdy::connect(&url, &["v4.channel.k8s.io"]).await.unwrap();
        let err = s.open(&[("streamtype", "error")]).await.unwrap();
        let stdin = s.open(&[("streamtype", "stdin")]).await.unwrap();
        let stdout = s.open(&[("streamtype", "stdout")]).await.unwrap();
        s.open(&[("streamtype", "stderr")]).await.unwrap();
        s.write(stdin, b"one\n").await.unwrap();
        s.until(|s| s.got(stdout).contains("got one\n")).await.unwrap();
        s.write(stdin, b"two\n").await.unwrap();
        s.until(|s| s.got(stdout).contains("got two\n")).await.unwrap();
        s.close(stdin).await.unwrap();
        s.until(|s| s.ended(err)).await.unwrap();
        assert_eq!(s.got(stdout), "got one\ngot two\nbye\n");
        assert_eq!(status_of(&s.got(err))["status"], "Success");
        let st = exited(&mut r, &talk).await;
        assert_eq!(st.exit_code, 0);
        let e = r
            .attach(pb::AttachRequest {
                container_id: talk.clone(),
                stdout: true,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");

        // PortForward: an HTTP request to port 8080 inside the pod, twice on one connection.
        let url = r
            .port_forward(pb::PortForwardRequest {
                pod_sandbox_id: pod.clone(),
                port: vec![8080],
            })
            .await
            .unwrap()
            .into_inner()
            .url;
        let (mut s, proto) = Spdy::connect(&url, &["portforward.k8s.io"]).await.unwrap();
        assert_eq!(proto, "portforward.k8s.io");
        for (n, req) in ["1", "2"].iter().enumerate() {
            let err = s.open(&[("streamtype", "error"), ("port", "8080"), ("requestid", req)]).await.unwrap();
            let data = s.open(&[("streamtype", "data"), ("port", "8080"), ("requestid", req)]).await.unwrap();
            s.write(data, b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
            s.until(|s| s.ended(data)).await.unwrap();
            let got = s.got(data);
            assert!(got.starts_with("HTTP/1.") && got.contains("hello-stream8"), "request {n}: {got:?}");
            s.close(data).await.unwrap();
            s.until(|s| s.ended(err)).await.unwrap();
            assert_eq!(s.got(err), "");
        }
        // A port nobody listens on: the error stream says so.
        let err = s.open(&[("streamtype", "error"), ("port", "8081"), ("requestid", "3")]).await.unwrap();
        s.open(&[("streamtype", "data"), ("port", "8081"), ("requestid", "3")]).await.unwrap();
        s.until(|s| s.ended(err)).await.unwrap();
        assert!(s.got(err).contains("8081"), "{:?}", s.got(err));

        // PortForward over WebSocket, binary and base64: the port (little-endian) first on the
        // data and error channels, then the answer on the data channel; the session closes
        // once the pod's side has.
        let pf_url = |ports: Vec<i32>| {
            let mut r = r.clone();
            let pod = pod.clone();
            async move {
                r.port_forward(pb::PortForwardRequest { pod_sandbox_id: pod, port: ports })
                    .await
                    .map(|u| u.into_inner().url)
            }
        };
        let port8080 = 8080u16.to_le_bytes();
        for proto in ["v4.channel.k8s.io", "v4.base64.channel.k8s.io"] {
            let mut ws = Ws::connect(&pf_url(vec![8080]).await.unwrap(), proto).await.unwrap();
            assert_eq!(ws.protocol, proto);
            ws.send(0, b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
            ws.to_end().await.unwrap();
            assert!(ws.closed, "{proto}");
            let data = ws.channels.remove(&0).unwrap_or_default();
            assert_eq!(data.get(..2), Some(&port8080[..]), "{proto}");
            let got = String::from_utf8_lossy(&data[2..]);
            assert!(got.starts_with("HTTP/1.") && got.contains("hello-stream8"), "{proto}: {got:?}");
            assert_eq!(ws.channels.get(&1).map(|e| &e[..]), Some(&port8080[..]), "{proto}: no error");
        }
        // No subprotocol named and no port in the request: the ports come from the URL, one
        // forward each; the one nobody listens on reports on its own error channel.
        let url = pf_url(vec![]).await.unwrap();
        let mut ws = Ws::connect(&format!("{url}?port=8080,8081"), "").await.unwrap();
        assert_eq!(ws.protocol, "");
        ws.send(0, b"GET /index.html HTTP/1.0\r\n\r\n").await.unwrap();
        ws.to_end().await.unwrap();
        assert!(ws.got(0).contains("hello-stream8"), "{:?}", ws.got(0));
        let err8081 = ws.channels.get(&3).cloned().unwrap_or_default();
        assert_eq!(err8081.get(..2), Some(&8081u16.to_le_bytes()[..]));
        assert!(String::from_utf8_lossy(&err8081[2..]).contains("error forwarding port 8081"), "{err8081:?}");
        // ... and with no port anywhere the upgrade is refused.
        let e = Ws::connect(&pf_url(vec![]).await.unwrap(), "v4.channel.k8s.io").await.err().unwrap();
        assert!(e.to_string().contains("400"), "{e:#}");

        r.remove_pod_sandbox(pb::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap();
        // The stdin FIFO of the removed container is gone.
        assert!(!w.state.join("cri/io").join(&talk).exists());
    });
}
