//! Security review of wharfd's surface (issue 8, item 7), one test per finding class: socket
//! permissions, client strings that could become paths, symlinks in a hostile image (user
//! lookup, bind mount destinations, `wharf cp`), the runtime binary as seen from a container
//! (runc CVE-2019-5736), and file descriptors or a working directory leaking into containers
//! (CVE-2024-21626). docs/reliability.md records each check and its result.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use containerd_client::services::v1 as pb;
use tonic::Code;
use wharf_tests::daemon::{with_ns, Wharfd};
use wharf_tests::images::{self, Entry, Image, Layer};
use wharf_tests::registry::Registry;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every path under `dir` (not following symlinks) whose file name contains `needle`.
fn named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().contains(needle) {
                out.push(p.clone());
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(p);
            }
        }
    }
    out
}

/// The busybox image plus a layer of hostile symlinks pointing at `host` (a directory of the
/// host): `/data` absolutely, `/up` through `..`, and `/etc/passwd` at a host passwd file.
fn hostile_image(host: &Path) -> Image {
    let base = images::busybox().unwrap();
    let rel = format!("../../../../../../../..{}", host.display());
    let layer = Layer::new(vec![
        Entry::Symlink {
            path: "data".into(),
            target: host.join("made").display().to_string(),
        },
        Entry::Symlink {
            path: "up".into(),
            target: format!("{rel}/made-up"),
        },
        Entry::Symlink {
            path: "etc/passwd".into(),
            target: format!("{rel}/passwd"),
        },
    ])
    .unwrap();
    let mut layers = base.layers.clone();
    layers.push(layer);
    Image::new(layers, "amd64", &["sh"]).unwrap()
}

/// A registry with the busybox image and the hostile one, and a wharfd that pulled both.
struct Setup {
    _reg: Registry,
    w: Wharfd,
    busybox: String,
    hostile: String,
    host: tempfile::TempDir,
}

fn setup() -> Setup {
    wharf_tests::require_root();
    let host = tempfile::Builder::new()
        .prefix("wharf-sec-host-")
        .tempdir_in("/var/tmp")
        .unwrap();
    std::fs::write(
        host.path().join("passwd"),
        "hostonly:x:4242:4242::/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(host.path().join("secret"), "host-secret\n").unwrap();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    images::push(&reg, "hostile", "latest", &hostile_image(host.path())).unwrap();
    let w = Wharfd::start().unwrap();
    let busybox = format!("{}/busybox:latest", reg.host());
    let hostile = format!("{}/hostile:latest", reg.host());
    w.wharf_ok(&["pull", "-q", &busybox]);
    w.wharf_ok(&["pull", "-q", &hostile]);
    Setup {
        _reg: reg,
        w,
        busybox,
        hostile,
        host,
    }
}

impl Setup {
    /// The host directory holds only what the test put there.
    fn host_untouched(&self) {
        let mut names: Vec<String> = std::fs::read_dir(self.host.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["passwd", "secret"], "a container reached the host");
        assert_eq!(
            std::fs::read_to_string(self.host.path().join("secret")).unwrap(),
            "host-secret\n"
        );
    }
}

/// The API socket and its ttrpc twin are 0660 (root and the configured group), their directory
/// 0711 (others can reach a socket only through a path they were given).
#[test]
fn socket_permissions() {
    wharf_tests::require_root();
    let w = Wharfd::start().unwrap();
    assert_eq!(mode(&w.socket), 0o660, "{}", w.socket.display());
    let ttrpc = PathBuf::from(format!("{}.ttrpc", w.socket.display()));
    assert_eq!(mode(&ttrpc), 0o660, "{}", ttrpc.display());
    assert_eq!(mode(w.socket.parent().unwrap()), 0o711);
}

/// Client strings that name things on disk are identifiers (InvalidArgument otherwise), and
/// those that are free-form (snapshot keys, ingest refs, lease ids) never become file names.
#[test]
fn client_strings_never_become_paths() {
    wharf_tests::require_root();
    let w = Wharfd::start().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = w.channel().await.unwrap();
        let mut ns = pb::namespaces_client::NamespacesClient::new(ch.clone());
        let mut containers = pb::containers_client::ContainersClient::new(ch.clone());
        let mut tasks = pb::tasks_client::TasksClient::new(ch.clone());
        let mut snapshots = pb::snapshots::snapshots_client::SnapshotsClient::new(ch.clone());
        let long = "x".repeat(77);
        let bad = ["../x", "a/b", "..", ".", "/abs", "a\0b", long.as_str()];
        for id in bad {
            let e = ns
                .create(tonic::Request::new(pb::CreateNamespaceRequest {
                    namespace: Some(pb::Namespace {
                        name: id.into(),
                        labels: Default::default(),
                    }),
                }))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "namespace {id:?}: {e}");
            let e = containers
                .create(with_ns(
                    "sec",
                    pb::CreateContainerRequest {
                        container: Some(pb::Container {
                            id: id.into(),
                            image: "x".into(),
                            runtime: Some(pb::container::Runtime {
                                name: "io.containerd.wharf.v2".into(),
                                options: None,
                            }),
                            ..Default::default()
                        }),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "container {id:?}: {e}");
            // The namespace header of any call.
            if !id.contains('\0') {
                let e = containers
                    .list(with_ns(id, pb::ListContainersRequest::default()))
                    .await
                    .unwrap_err();
                assert_eq!(
                    e.code(),
                    Code::InvalidArgument,
                    "namespace header {id:?}: {e}"
                );
            }
            // A task of a container id that cannot exist: refused before any bundle is made.
            let e = tasks
                .create(with_ns(
                    "sec",
                    pb::CreateTaskRequest {
                        container_id: id.into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap_err();
            assert!(
                matches!(e.code(), Code::InvalidArgument | Code::NotFound),
                "task {id:?}: {e}"
            );
            let e = tasks
                .exec(with_ns(
                    "sec",
                    pb::ExecProcessRequest {
                        container_id: "missing".into(),
                        exec_id: id.into(),
                        ..Default::default()
                    },
                ))
                .await
                .unwrap_err();
            assert!(
                matches!(e.code(), Code::InvalidArgument | Code::NotFound),
                "exec {id:?}: {e}"
            );
        }
        // Snapshot keys are free-form in containerd (`extract-…-sha256:…`): wharf keeps them
        // as keys, its directories are numbered.
        let key = "../../../../escape-snap-key";
        let mounts = snapshots
            .prepare(with_ns(
                "sec",
                pb::snapshots::PrepareSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: key.into(),
                    parent: String::new(),
                    labels: Default::default(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .mounts;
        let opts = mounts
            .iter()
            .flat_map(|m| m.options.clone())
            .collect::<Vec<_>>();
        assert!(
            opts.iter().all(|o| !o.contains("escape"))
                && mounts.iter().all(|m| !m.source.contains("escape")),
            "{mounts:?}"
        );
    });
    // Ingest refs and lease ids, through ctr.
    let out = w.ctr_input(
        &[
            "-n",
            "sec",
            "content",
            "ingest",
            "../../../../escape-ingest-ref",
        ],
        b"payload",
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = w.ctr(&[
        "-n",
        "sec",
        "leases",
        "create",
        "--id",
        "../../escape-lease",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    for needle in ["escape", "x"] {
        let found: Vec<_> = named(w.dir.path(), needle)
            .into_iter()
            .filter(|p| needle != "x" || p.file_name().is_some_and(|n| n == "x"))
            .collect();
        assert!(found.is_empty(), "client strings became paths: {found:?}");
    }
    assert!(named(Path::new("/var/tmp"), "escape-snap-key").is_empty());
}

/// A hostile image whose /etc/passwd is a symlink to a host file: `--user NAME` must not find
/// the host's user (the lookup resolves inside the image, where the link leads nowhere).
#[test]
fn user_lookup_does_not_read_host_files() {
    let s = setup();
    let out = s.w.wharf(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "hostonly",
        &s.hostile,
        "id",
    ]);
    assert!(
        !out.status.success(),
        "ran as the host's user: {}",
        text(&out)
    );
    assert!(text(&out).contains("hostonly"), "{}", text(&out));
    // The same image with a numeric user runs: the failure above is the lookup only.
    let out = s.w.wharf_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        "4242",
        &s.hostile,
        "id",
        "-u",
    ]);
    assert_eq!(out.trim(), "4242");
    s.host_untouched();
}

/// Bind mount destinations that are symlinks out of the rootfs (`/data` -> a host dir, `/up`
/// -> `../../..`): the mount lands inside the container or the run fails; the host directory
/// the links name is never created or mounted over.
#[test]
fn bind_mount_destination_symlinks_stay_in_the_rootfs() {
    let s = setup();
    let src = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(src.path().join("marker"), "bound\n").unwrap();
    let vol = |dest: &str| format!("{}:{dest}", src.path().display());
    for dest in ["/data", "/up", "/data/sub", "/up/deeper/x"] {
        let out = s.w.wharf(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &vol(dest),
            &s.hostile,
            "cat",
            &format!("{dest}/marker"),
        ]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "bound\n");
        }
        s.host_untouched();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&s.host.path().display().to_string()),
            "a mount on the host directory: {mounts}"
        );
    }
}

/// `wharf cp` resolves both directions inside the container: symlinks to host paths, absolute
/// or through `..`, neither read host files nor write into host directories.
#[test]
fn cp_never_leaves_the_container() {
    let s = setup();
    let w = &s.w;
    let host = s.host.path().display().to_string();
    w.wharf_ok(&[
        "run",
        "-d",
        "--name",
        "cpsec",
        "--network",
        "none",
        &s.busybox,
        "sleep",
        "1000",
    ]);
    let rel = format!("../../../../../../..{host}");
    w.wharf_ok(&["exec", "cpsec", "ln", "-s", &host, "/tmp/abs"]);
    w.wharf_ok(&["exec", "cpsec", "ln", "-s", &rel, "/tmp/rel"]);
    w.wharf_ok(&[
        "exec",
        "cpsec",
        "ln",
        "-s",
        &format!("{host}/secret"),
        "/tmp/secretlink",
    ]);
    // A magic link: /proc/self in the container's procfs is the copying process, on the host.
    w.wharf_ok(&[
        "exec",
        "cpsec",
        "ln",
        "-s",
        &format!("/proc/self/root{host}"),
        "/tmp/magic",
    ]);
    let out_dir = tempfile::tempdir_in("/var/tmp").unwrap();
    for src in [
        "/tmp/abs/secret",
        "/tmp/rel/secret",
        "/tmp/secretlink",
        "/tmp/magic/secret",
    ] {
        let dst = out_dir.path().join("got");
        let _ = std::fs::remove_file(&dst);
        let out = w.wharf(&["cp", &format!("cpsec:{src}"), &dst.display().to_string()]);
        let got = std::fs::read_to_string(&dst).unwrap_or_default();
        assert!(
            !got.contains("host-secret"),
            "cp {src} read the host's file: {}",
            text(&out)
        );
    }
    let file = out_dir.path().join("planted");
    std::fs::write(&file, "planted\n").unwrap();
    for dst in [
        "/tmp/abs/",
        "/tmp/rel/",
        "/tmp/abs/planted",
        "/tmp/rel/planted",
    ] {
        let _ = w.wharf(&["cp", &file.display().to_string(), &format!("cpsec:{dst}")]);
        s.host_untouched();
    }
    w.wharf_ok(&["rm", "-f", "cpsec"]);
}

/// The files a process in the container has open: `ls` run as the container's command (its
/// own directory fd 3 aside) and `readlink` of its working directory.
fn fds_of(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out.split_whitespace().map(str::to_string).collect();
    v.sort();
    v
}

/// No descriptor of the shim or wharfd reaches a container process (init or exec'd), and the
/// working directory is the one asked for, inside the rootfs (CVE-2024-21626's leaked cwd).
#[test]
fn no_fd_or_cwd_leaks_into_containers() {
    let s = setup();
    let w = &s.w;
    let out = w.wharf_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        &s.busybox,
        "ls",
        "/proc/self/fd",
    ]);
    assert_eq!(fds_of(&out), ["0", "1", "2", "3"], "init: {out}");
    let out = w.wharf_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-w",
        "/tmp",
        &s.busybox,
        "readlink",
        "/proc/self/cwd",
    ]);
    assert_eq!(out.trim(), "/tmp");
    w.wharf_ok(&[
        "run",
        "-d",
        "--name",
        "fdsec",
        "--network",
        "none",
        &s.busybox,
        "sleep",
        "1000",
    ]);
    let out = w.wharf_ok(&["exec", "fdsec", "ls", "/proc/self/fd"]);
    assert_eq!(fds_of(&out), ["0", "1", "2", "3"], "exec: {out}");
    let out = w.wharf_ok(&["exec", "fdsec", "ls", "/proc/1/fd"]);
    assert_eq!(fds_of(&out), ["0", "1", "2"], "init while running: {out}");
    for link in ["/proc/self/cwd", "/proc/1/cwd", "/proc/1/root"] {
        let out = w.wharf_ok(&["exec", "fdsec", "readlink", link]);
        assert_eq!(out.trim(), "/", "{link}");
    }
    let out = w.wharf_ok(&["exec", "-w", "/tmp", "fdsec", "readlink", "/proc/self/cwd"]);
    assert_eq!(out.trim(), "/tmp");
    // With a terminal too (the console socket's descriptors).
    let out = w.wharf_ok(&["exec", "-t", "fdsec", "ls", "/proc/self/fd"]);
    assert_eq!(fds_of(&out), ["0", "1", "2", "3"], "exec -t: {out}");
    w.wharf_ok(&["rm", "-f", "fdsec"]);
}

/// runc CVE-2019-5736: a container process must not be able to open the runtime's binary (the
/// shim, which runs the container in-process) for writing through /proc/<pid>/exe. The running
/// shim's binary is busy (ETXTBSY) for any writer, root on the host included; and from a default
/// container, the runtime processes that join it during `exec` are never even openable (they
/// are not dumpable and hold capabilities the container lacks).
#[test]
fn runtime_binary_is_not_writable_from_a_container() {
    let s = setup();
    let w = &s.w;
    // The shim of a running container: its binary is busy (ETXTBSY) for any writer, the way
    // a container process would reach it through /proc/<pid>/exe.
    w.wharf_ok(&[
        "run",
        "-d",
        "--name",
        "exesec1",
        "--network",
        "none",
        &s.busybox,
        "sleep",
        "1000",
    ]);
    let shim = wharf_tests::bin("containerd-shim-wharf-v2");
    let mut seen = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let exe = e.path().join("exe");
        if std::fs::read_link(&exe).ok().as_deref() != Some(shim.as_path()) {
            continue;
        }
        seen += 1;
        let err = std::fs::OpenOptions::new()
            .append(true)
            .open(&exe)
            .expect_err("the running shim's binary opened for writing");
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ETXTBSY),
            "{}: {err}",
            exe.display()
        );
    }
    assert!(seen > 0, "no running {}", shim.display());
    w.wharf_ok(&["rm", "-f", "exesec1"]);

    // Default container: a watcher tries every new process's exe while execs come in.
    let watch = r#"while :; do for p in /proc/[0-9]*; do e=$(readlink $p/exe 2>/dev/null) || continue; case "$e" in /bin/busybox) ;; *) if (: >> $p/exe) 2>/dev/null; then echo "WRITABLE $e" >> /tmp/log; else echo "refused $e" >> /tmp/log; fi;; esac; done; done"#;
    w.wharf_ok(&[
        "run",
        "-d",
        "--name",
        "exesec2",
        "--network",
        "none",
        &s.busybox,
        "sh",
        "-c",
        watch,
    ]);
    for _ in 0..20 {
        w.wharf_ok(&["exec", "exesec2", "true"]);
    }
    let log = w.wharf(&["exec", "exesec2", "cat", "/tmp/log"]);
    assert!(!text(&log).contains("WRITABLE"), "{}", text(&log));
    w.wharf_ok(&["rm", "-f", "exesec2"]);
}
