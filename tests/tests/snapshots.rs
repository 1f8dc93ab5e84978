//! Issue "Snapshots and diff": `ctr images pull` end to end (Content/Write, Snapshots/Prepare,
//! Diff/Apply, Snapshots/Commit), the ctr snapshots commands, exact unpacked trees on overlayfs and
//! native, bad layers, and GC of snapshots.

use std::path::Path;
use std::process::Command;

use wharf_tests::daemon::Wharfd;
use wharf_tests::images::{self, Image};
use wharf_tests::listing;
use wharf_tests::registry::Registry;

fn setup() -> (Registry, Image, Image, Wharfd) {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let bb = images::busybox().unwrap();
    images::push(&reg, "busybox", "latest", &bb).unwrap();
    let ml = images::multilayer().unwrap();
    images::push(&reg, "multilayer", "latest", &ml).unwrap();
    (reg, bb, ml, Wharfd::start().unwrap())
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

/// Mounts what `ctr snapshots mounts` prints (a `mount -t ... -o ... src target` line).
fn mount_printed(cmd: &str) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(cmd.trim())
        .status()
        .unwrap();
    assert!(st.success(), "{cmd}");
}

fn umount(p: &Path) {
    let _ = Command::new("umount").arg(p).status();
}

#[test]
fn pull_busybox_and_snapshot_commands() {
    let (reg, bb, _ml, w) = setup();
    let r = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "images", "pull", "--plain-http", &r]);
    let ls = w.ctr_ok(&["-n", "test", "images", "ls"]);
    assert!(ls.contains(&r) && ls.contains(&bb.manifest_digest), "{ls}");
    let chain = &chain_ids(&bb)[0];
    let snaps = w.ctr_ok(&["-n", "test", "snapshots", "ls"]);
    assert!(
        snaps
            .lines()
            .any(|l| l.starts_with(chain.as_str()) && l.contains("Committed")),
        "{snaps}"
    );
    // The layer got containerd's uncompressed label, the config the snapshot reference.
    let content = w.ctr_ok(&["-n", "test", "content", "ls"]);
    let layer = content
        .lines()
        .find(|l| l.starts_with(bb.layers[0].digest.as_str()))
        .unwrap_or_default();
    assert!(
        layer.contains(&format!(
            "containerd.io/uncompressed={}",
            bb.layers[0].diff_id
        )),
        "{layer}"
    );
    // Pulling again is a no-op.
    w.ctr_ok(&["-n", "test", "images", "pull", "--plain-http", &r]);

    // prepare / mounts: mounting what ctr prints shows busybox's files.
    w.ctr_ok(&["-n", "test", "snapshots", "prepare", "work", chain]);
    let target = w.dir.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    let m = w.ctr_ok(&[
        "-n",
        "test",
        "snapshots",
        "mounts",
        &target.to_string_lossy(),
        "work",
    ]);
    mount_printed(&m);
    let ok =
        target.join("bin/busybox").is_file() && std::fs::read_link(target.join("bin/sh")).is_ok();
    std::fs::write(target.join("tmp/written"), "w").unwrap();
    umount(&target);
    assert!(ok, "busybox files not visible through {m}");
    assert!(!target.join("bin").exists());
    // view, tree, usage, rm.
    w.ctr_ok(&["-n", "test", "snapshots", "view", "ro", chain]);
    let tree = w.ctr_ok(&["-n", "test", "snapshots", "tree"]);
    assert!(
        tree.contains(chain.as_str()) && tree.contains("work") && tree.contains("ro"),
        "{tree}"
    );
    let usage = w.ctr_ok(&["-n", "test", "snapshots", "usage", "work"]);
    assert!(usage.contains("work"), "{usage}");
    let err = w.ctr_err(&["-n", "test", "snapshots", "rm", chain]);
    assert!(
        err.contains("failed precondition") || err.contains("depends on it"),
        "{err}"
    );
    w.ctr_ok(&["-n", "test", "snapshots", "rm", "work", "ro"]);
    assert!(!w
        .ctr_ok(&["-n", "test", "snapshots", "ls"])
        .contains("work"));

    // Deleting the image with sync collects its snapshot chain with its blobs.
    w.ctr_ok(&["-n", "test", "images", "rm", "--sync", &r]);
    assert!(w.ctr_ok(&["-n", "test", "snapshots", "ls"]).lines().count() <= 1);
    let snapdir = w
        .root
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    assert_eq!(
        std::fs::read_dir(&snapdir).unwrap().count(),
        0,
        "snapshot dirs left behind"
    );
    assert!(!w.blob_path(&bb.layers[0].digest).exists());
}

fn multilayer_tree(snapshotter: &str) {
    let (reg, _bb, ml, w) = setup();
    let r = format!("{}/multilayer:latest", reg.host());
    w.ctr_ok(&[
        "-n",
        "test",
        "images",
        "pull",
        "--snapshotter",
        snapshotter,
        "--plain-http",
        &r,
    ]);
    let top = chain_ids(&ml).last().cloned().unwrap();
    w.ctr_ok(&[
        "-n",
        "test",
        "snapshots",
        "--snapshotter",
        snapshotter,
        "prepare",
        "rootfs",
        &top,
    ]);
    let target = w.dir.path().join("rootfs");
    std::fs::create_dir_all(&target).unwrap();
    let m = w.ctr_ok(&[
        "-n",
        "test",
        "snapshots",
        "--snapshotter",
        snapshotter,
        "mounts",
        &target.to_string_lossy(),
        "rootfs",
    ]);
    mount_printed(&m);
    let got = listing::read_dir_tree(&target);
    umount(&target);
    let want = listing::expected(&images::multilayer_layers());
    let d = listing::diff(&want, &got.unwrap());
    assert!(
        d.is_empty(),
        "unpacked tree differs from the layers ({snapshotter}):\n{}",
        d.join("\n")
    );
}

#[test]
fn multilayer_unpacks_exactly_on_overlayfs() {
    multilayer_tree("overlayfs");
}

#[test]
fn multilayer_unpacks_exactly_on_native() {
    multilayer_tree("native");
}

#[test]
fn layer_not_matching_its_diff_id_is_refused() {
    let (reg, _bb, _ml, w) = setup();
    // An image whose config claims another diff ID for its layer.
    let layer = images::Layer::new(vec![images::file("f", 0o644, b"real content")]).unwrap();
    let mut lie = layer.clone();
    lie.diff_id = images::sha256(b"not the layer");
    let img = Image::new(vec![lie], "amd64", &["sh"]).unwrap();
    images::push(&reg, "liar", "latest", &img).unwrap();
    let r = format!("{}/liar:latest", reg.host());
    let err = w.ctr_err(&["-n", "test", "images", "pull", "--plain-http", &r]);
    assert!(err.contains("diff") || err.contains("mismatch"), "{err}");
    let snaps = w.ctr_ok(&["-n", "test", "snapshots", "ls"]);
    assert!(!snaps.contains("Committed"), "{snaps}");

    // A corrupt gzip stream behind a correct digest: refused, nothing committed.
    let mut bad =
        images::gzip(&images::tar(&[images::file("g", 0o644, &[7u8; 100_000])]).unwrap()).unwrap();
    let n = bad.len();
    bad[n / 2] ^= 0x55;
    let l = images::Layer {
        digest: images::sha256(&bad),
        gz: bad,
        ..layer
    };
    let img = Image::new(vec![l], "amd64", &["sh"]).unwrap();
    images::push(&reg, "corrupt", "latest", &img).unwrap();
    let r = format!("{}/corrupt:latest", reg.host());
    w.ctr_err(&["-n", "test", "images", "pull", "--plain-http", &r]);
    assert!(!w
        .ctr_ok(&["-n", "test", "snapshots", "ls"])
        .contains("Committed"));
    assert!(w.ctr_ok(&["version"]).contains("Server"));
}

#[test]
fn snapshots_diff_creates_a_layer() {
    let (reg, bb, _ml, w) = setup();
    let r = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "images", "pull", "--plain-http", &r]);
    let chain = &chain_ids(&bb)[0];
    w.ctr_ok(&["-n", "test", "snapshots", "prepare", "changed", chain]);
    let target = w.dir.path().join("mnt");
    std::fs::create_dir_all(&target).unwrap();
    let m = w.ctr_ok(&[
        "-n",
        "test",
        "snapshots",
        "mounts",
        &target.to_string_lossy(),
        "changed",
    ]);
    mount_printed(&m);
    std::fs::write(target.join("etc/added"), "new file\n").unwrap();
    std::fs::remove_file(target.join("etc/group")).unwrap();
    umount(&target);
    // ctr writes the new layer to stdout; it is also in the content store under its digest.
    let out = w.ctr(&["-n", "test", "snapshots", "diff", "changed"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blob = out.stdout;
    let digest = &images::sha256(&blob);
    assert_eq!(
        w.ctr(&["-n", "test", "content", "get", digest]).stdout,
        blob
    );
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob.as_slice()));
    for e in archive.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.contains(&"etc/added".to_string()), "{names:?}");
    assert!(names.contains(&"etc/.wh.group".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("bin/")),
        "unchanged files must not be in the diff: {names:?}"
    );
    let info = w.ctr_ok(&["-n", "test", "content", "ls"]);
    let line = info
        .lines()
        .find(|l| l.starts_with(digest))
        .unwrap_or_default();
    assert!(
        line.contains("containerd.io/uncompressed=sha256:"),
        "{line}"
    );
}
