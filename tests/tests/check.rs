//! Issue 8 (operations and hardening): `wharf system check` and the check wharfd runs at start.
//! Each kind of inconsistency is made by hand, on a stopped daemon and on a running one; the
//! check must report it, `--repair` fix it, and the check then be clean, while a running
//! container's bundle, mounts and cgroup are never reported.

use std::path::{Path, PathBuf};

use wharf_tests::daemon::Wharfd;
use wharf_tests::images;
use wharf_tests::registry::Registry;
use wharf_tests::reliability::{age, assert_clean, check, is_mounted, mount_tmpfs};

const NS: &str = "check8";
/// Its own namespace: the tests run side by side and the first makes cgroups under `check8`.
const NS_CORRUPT: &str = "check8c";

/// A fake ingest as a crash or an abandoned client leaves it: complete (ref, data) but untouched
/// for days, or half-created (a bare directory).
fn fake_ingest(root: &Path, name: &str, complete: bool) -> PathBuf {
    let dir = root
        .join("io.containerd.content.v1.content/ingest")
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    if complete {
        std::fs::write(dir.join("startedat"), "0").unwrap();
        std::fs::write(dir.join("total"), "100").unwrap();
        std::fs::write(dir.join("data"), b"partial").unwrap();
        std::fs::write(dir.join("ref"), format!("{NS}/{name}")).unwrap();
        age(&dir.join("data"), 3 * 24 * 3600).unwrap();
    }
    age(&dir, 3600).unwrap();
    dir
}

/// `/sys/fs/cgroup/<hierarchy>/<NS>/<id>` in the memory and pids hierarchies (v1), or the
/// unified one.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        vec![Path::new("/sys/fs/cgroup").join(NS).join(id)]
    } else {
        ["memory", "pids"]
            .iter()
            .map(|h| Path::new("/sys/fs/cgroup").join(h).join(NS).join(id))
            .collect()
    }
}

fn fake_cgroup(id: &str) -> Vec<PathBuf> {
    let dirs = cgroup_dirs(id);
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
        age(d, 3600).unwrap();
    }
    dirs
}

/// Every kind of leftover at once; returns the paths made.
struct Leftovers {
    snapshot_dir: PathBuf,
    apply_mount: PathBuf,
    bundle: PathBuf,
    bundle_mount: PathBuf,
    work: PathBuf,
    cgroups: Vec<PathBuf>,
    ingest: PathBuf,
    half_ingest: PathBuf,
}

fn make_leftovers(w: &Wharfd, tag: &str) -> Leftovers {
    let snapshot_dir = w
        .root
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots")
        .join(format!("9999{tag}"));
    std::fs::create_dir_all(snapshot_dir.join("fs")).unwrap();
    let apply_mount = w.root.join("tmpmounts").join(format!("check8-{tag}"));
    mount_tmpfs(&apply_mount).unwrap();
    let bundle = w
        .state
        .join("io.containerd.runtime.v2.task")
        .join(NS)
        .join(format!("ghost-bundle-{tag}"));
    let bundle_mount = bundle.join("rootfs");
    mount_tmpfs(&bundle_mount).unwrap();
    age(&bundle, 3600).unwrap();
    let work = w
        .root
        .join("io.containerd.runtime.v2.task")
        .join(NS)
        .join(format!("ghost-work-{tag}"));
    std::fs::create_dir_all(&work).unwrap();
    age(&work, 3600).unwrap();
    Leftovers {
        snapshot_dir,
        apply_mount,
        bundle,
        bundle_mount,
        work,
        cgroups: fake_cgroup(&format!("ghost-cg-{tag}")),
        ingest: fake_ingest(&w.root, &format!("check8-ingest-{tag}"), true),
        half_ingest: fake_ingest(&w.root, &format!("check8-half-{tag}"), false),
    }
}

fn assert_gone(l: &Leftovers) {
    assert!(!l.snapshot_dir.exists(), "{}", l.snapshot_dir.display());
    assert!(!is_mounted(&l.bundle_mount), "{}", l.bundle_mount.display());
    assert!(!l.bundle.exists(), "{}", l.bundle.display());
    assert!(!is_mounted(&l.apply_mount), "{}", l.apply_mount.display());
    assert!(!l.work.exists(), "{}", l.work.display());
    assert!(!l.ingest.exists(), "{}", l.ingest.display());
    assert!(!l.half_ingest.exists(), "{}", l.half_ingest.display());
    for c in &l.cgroups {
        assert!(!c.exists(), "{}", c.display());
    }
}

/// Removes what a failed run could leave outside the test's directory.
struct CgroupGuard;
impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for tag in ["a", "b"] {
            for d in cgroup_dirs(&format!("ghost-cg-{tag}")) {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

#[test]
fn check_reports_and_repairs_every_kind_of_leftover() {
    wharf_tests::require_root();
    let _cg = CgroupGuard;
    let reg = Registry::start().unwrap();
    let img = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &img).unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let mut w = Wharfd::start().unwrap();
    w.wharf_in_ok(NS, &["pull", "-q", &r]);
    // A live task: its bundle, rootfs mount, netns and cgroup are never findings.
    w.wharf_in_ok(
        NS,
        &[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            "live",
            &r,
            "sleep",
            "1000",
        ],
    );
    assert_clean(&w, "fresh daemon with a running container");

    // On a stopped daemon: every kind of leftover, and a blob gone from disk.
    w.stop().unwrap();
    let l = make_leftovers(&w, "a");
    std::fs::remove_file(w.blob_path(&img.config_digest)).unwrap();
    w.spawn().unwrap();

    // The start-up check logged them, and repaired what crashes routinely leave.
    let log = w.log();
    for kind in [
        "orphan-snapshot-dir",
        "stale-mount",
        "stale-work-dir",
        "stale-ingest",
        "stale-cgroup",
        "missing-blob",
    ] {
        assert!(
            log.lines()
                .any(|line| line.contains("start-up check") && line.contains(kind)),
            "start-up check did not log {kind}:\n{log}"
        );
    }
    assert!(log.contains("start-up check done"), "{log}");
    // (the dead bundle itself is cleaned up by the shim restore, before the check)
    assert!(!l.bundle.exists() && !is_mounted(&l.bundle_mount));
    assert!(!l.snapshot_dir.exists() && !is_mounted(&l.apply_mount));
    assert!(!l.work.exists() && !l.ingest.exists() && !l.half_ingest.exists());

    // What the start-up check leaves to the user: a cgroup (another runtime's could share the
    // namespace's path) and a missing blob (dropping its record is the user's call).
    let (code, out) = check(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("found missing-blob {}", img.config_digest)),
        "{out}"
    );
    assert!(
        out.contains("found stale-cgroup") && out.contains("ghost-cg-a"),
        "{out}"
    );
    let remaining = format!("{} remaining", l.cgroups.len() + 1);
    assert!(out.contains(&remaining), "{out}");
    let (code, out) = check(&w, &["--repair"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("repaired stale-cgroup") && out.contains("repaired missing-blob"),
        "{out}"
    );
    assert_clean(&w, "after repair");
    assert_gone(&l);

    // The record of the missing blob is gone, so a pull fetches it again and the image runs.
    w.wharf_in_ok(NS, &["pull", "-q", &r]);
    assert!(w.blob_path(&img.config_digest).exists());
    assert_eq!(
        w.wharf_in_ok(NS, &["run", "--rm", "--network", "none", &r, "echo", "ok"])
            .trim(),
        "ok"
    );
    assert_clean(&w, "after pulling again");

    // The same leftovers made under a running daemon (old enough not to be work in progress)
    // are all reported by the check and fixed by --repair.
    let l = make_leftovers(&w, "b");
    let (code, out) = check(&w, &[]);
    assert_eq!(code, 1, "{out}");
    for (kind, subject) in [
        ("orphan-snapshot-dir", l.snapshot_dir.display().to_string()),
        ("stale-mount", l.bundle_mount.display().to_string()),
        ("stale-bundle", l.bundle.display().to_string()),
        ("stale-work-dir", l.work.display().to_string()),
        ("stale-ingest", l.ingest.display().to_string()),
        ("stale-ingest", l.half_ingest.display().to_string()),
        ("stale-cgroup", l.cgroups[0].display().to_string()),
    ] {
        assert!(
            out.contains(&format!("found {kind} {subject}:")),
            "{kind} {subject} not reported:\n{out}"
        );
    }
    // An apply mount may be an apply in flight while wharfd runs: never judged then.
    assert!(!out.contains(&l.apply_mount.display().to_string()), "{out}");
    let (code, out) = check(&w, &["--repair"]);
    assert_eq!(code, 0, "{out}");
    assert_clean(&w, "after the second repair");
    let _ = nix::mount::umount2(&l.apply_mount, nix::mount::MntFlags::MNT_DETACH);
    assert_gone(&l);

    // The live container was never touched.
    assert_eq!(
        w.wharf_in_ok(NS, &["exec", "live", "echo", "alive"]).trim(),
        "alive",
        "the running container must survive check --repair"
    );
    w.wharf_in_ok(NS, &["rm", "-f", "live"]);
    assert_clean(&w, "after removing the container");
}

/// A blob whose bytes changed on disk (same size) is found by `check --deep` only, reported
/// with its digest and never deleted; a truncated one is found by the plain check.
#[test]
fn corrupt_blobs_are_reported_with_their_digest() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let img = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &img).unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let w = Wharfd::start().unwrap();
    w.wharf_in_ok(NS_CORRUPT, &["pull", "-q", &r]);
    let layer = &img.layers[0].digest;
    let path = w.blob_path(layer);

    // Flip one byte in the middle of the layer.
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&path, &data).unwrap();
    assert_clean(&w, "a same-size corruption is invisible without --deep");
    let (code, out) = check(&w, &["--deep"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("found corrupt-blob {layer}")) && out.contains("hashes to"),
        "{out}"
    );
    // Referenced: --repair reports it and keeps it.
    let (code, out) = check(&w, &["--deep", "--repair"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("found corrupt-blob {layer}")),
        "{out}"
    );
    assert!(path.exists(), "a referenced blob must never be deleted");
    // Truncated: the plain check sees the size.
    data.truncate(mid);
    std::fs::write(&path, &data).unwrap();
    let (code, out) = check(&w, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("found blob-size {layer}")), "{out}");

    // The way out the report names: remove the image (a synchronous collection drops the
    // blob), pull again.
    w.ctr_ok(&["-n", NS_CORRUPT, "images", "rm", "--sync", &r]);
    assert!(
        !path.exists(),
        "the collection should have removed the unreferenced blob"
    );
    w.wharf_in_ok(NS_CORRUPT, &["pull", "-q", &r]);
    assert_clean(&w, "after pulling again");
    let (code, out) = check(&w, &["--deep"]);
    assert_eq!(code, 0, "{out}");
}
