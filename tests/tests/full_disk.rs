//! Issue 8 (operations and hardening): a full disk. wharfd's root is a small loop-mounted ext4;
//! a pull that runs out of space fails with ResourceExhausted (the CLI says the disk is full),
//! leaves no partial blob or image visible, and once space is freed wharfd serves on and the same
//! pull succeeds (resuming its ingest).

use std::process::Command;

use wharf_tests::daemon::Wharfd;
use wharf_tests::images::{self, file, Image, Layer};
use wharf_tests::registry::Registry;
use wharf_tests::reliability::{assert_clean, check};

const NS: &str = "check8d";
const FS_MIB: u64 = 128;
/// The big layer: 96 files of 256 KiB of incompressible bytes (24 MiB).
const FILES: usize = 96;

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?}: {st}");
}

fn free_bytes(p: &std::path::Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(p).unwrap();
    s.blocks_available() * s.fragment_size()
}

#[test]
fn pull_onto_a_full_disk_fails_cleanly_and_recovers() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut entries = vec![images::dir("data", 0o755)];
    for i in 0..FILES {
        let data: Vec<u8> = (0..256 * 1024 / 8)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x.to_le_bytes()
            })
            .collect();
        entries.push(file(&format!("data/f{i}"), 0o644, &data));
    }
    let base = images::busybox().unwrap().layers.remove(0);
    let big_img = Image::new(vec![base, Layer::new(entries).unwrap()], "amd64", &["sh"]).unwrap();
    images::push(&reg, "big", "latest", &big_img).unwrap();
    let bb = format!("{}/busybox:latest", reg.host());
    let big = format!("{}/big:latest", reg.host());

    // wharfd's root on a fresh 128 MiB ext4 (the harness unmounts it on drop).
    let mut w = Wharfd::unstarted("").unwrap();
    let img = w.dir.path().join("check8-disk.img");
    run(
        "truncate",
        &["-s", &format!("{FS_MIB}M"), &img.to_string_lossy()],
    );
    run("mkfs.ext4", &["-q", "-F", &img.to_string_lossy()]);
    std::fs::create_dir_all(&w.root).unwrap();
    run(
        "mount",
        &[
            "-o",
            "loop",
            &img.to_string_lossy(),
            &w.root.to_string_lossy(),
        ],
    );
    w.spawn().unwrap();
    w.wharf_in_ok(NS, &["pull", "-q", &bb]);

    // Leave 8 MiB: the 24 MiB layer cannot fit.
    let filler = w.root.join("check8-filler");
    let fill = free_bytes(&w.root).saturating_sub(8 << 20);
    run(
        "fallocate",
        &["-l", &fill.to_string(), &filler.to_string_lossy()],
    );
    let o = w.wharf_in(NS, &["pull", "-q", &big]);
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(!o.status.success(), "the pull should have failed");
    assert!(
        err.contains("no space left on device") && err.contains("disk is full"),
        "want a clear ENOSPC error (ResourceExhausted): {err}"
    );
    // Nothing partial is visible: neither the layer's blob nor the image.
    let big_layer = &big_img.layers[1].digest;
    assert!(
        !w.blob_path(big_layer).exists(),
        "a partial blob is visible"
    );
    let content = w.ctr_ok(&["-n", NS, "content", "ls", "-q"]);
    assert!(!content.contains(big_layer.as_str()), "{content}");
    let imgs = w.ctr_ok(&["-n", NS, "images", "ls", "-q"]);
    assert!(!imgs.contains(&big), "{imgs}");
    // Still serving, disk still full.
    assert!(w.wharf_in_ok(NS, &["images"]).contains("busybox"));

    // Space back: the same pull succeeds and the image runs.
    std::fs::remove_file(&filler).unwrap();
    w.wharf_in_ok(NS, &["pull", "-q", &big]);
    let n = w.wharf_in_ok(
        NS,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            &big,
            "sh",
            "-c",
            "ls /data | wc -l",
        ],
    );
    assert_eq!(n.trim(), FILES.to_string());
    assert_clean(&w, "after the pull succeeded");
    let (code, out) = check(&w, &["--deep"]);
    assert_eq!(code, 0, "{out}");
    w.stop().unwrap();
}
