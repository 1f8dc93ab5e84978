//! Issue 8 (operations and hardening): soak. `WHARF_SOAK_COUNT` containers (default 100; the
//! full 1000 run's figures are in docs/reliability.md) are run and removed, 50 at a time
//! concurrently, through the CLI; wharfd's open fds, RSS, the mounts, cgroups and state
//! directories are measured after a warm-up batch and at the end, and may not grow beyond a
//! small fixed bound.

use std::process::{Command, Stdio};
use std::time::Instant;

use wharf_tests::daemon::Wharfd;
use wharf_tests::images;
use wharf_tests::registry::Registry;
use wharf_tests::reliability::{assert_clean, cgroups_of, entries, fds, mounts_under, rss_kib};

const NS: &str = "check8s";
const BATCH: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Figures {
    fds: usize,
    rss_kib: u64,
    mounts: usize,
    cgroups: usize,
    bundles: usize,
    work_dirs: usize,
    netns: usize,
    containers: usize,
}

fn figures(w: &Wharfd) -> Figures {
    let pid = w.pid().expect("wharfd runs");
    Figures {
        fds: fds(pid),
        rss_kib: rss_kib(pid),
        mounts: mounts_under(w.dir.path()),
        cgroups: cgroups_of(NS),
        bundles: entries(&w.state.join("io.containerd.runtime.v2.task").join(NS)),
        work_dirs: entries(&w.root.join("io.containerd.runtime.v2.task").join(NS)),
        netns: entries(&w.state.join("netns").join(NS)),
        containers: w.wharf_in_ok(NS, &["ps", "-aq"]).lines().count(),
    }
}

/// Runs `n` containers `run --rm … true`, BATCH at a time; returns the failures.
fn run_batch(w: &Wharfd, image: &str, first: usize, n: usize) -> Vec<String> {
    let children: Vec<_> = (first..first + n)
        .map(|i| {
            let name = format!("soak{i}");
            let c = Command::new(wharf_tests::bin("wharf"))
                .args([
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--name",
                    &name,
                    image,
                    "true",
                ])
                .env("WHARF_ADDRESS", &w.socket)
                .env("WHARF_DATA_ROOT", w.cli_root())
                .env("WHARF_NAMESPACE", NS)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (name, c)
        })
        .collect();
    let mut failures = Vec::new();
    for (name, c) in children {
        let o = c.wait_with_output().unwrap();
        if !o.status.success() {
            failures.push(format!(
                "{name}: {}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
    }
    failures
}

#[test]
fn soak_run_and_remove_containers_50_at_a_time() {
    wharf_tests::require_root();
    let count: usize = std::env::var("WHARF_SOAK_COUNT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let w = Wharfd::start().unwrap();
    w.wharf_in_ok(NS, &["pull", "-q", &r]);

    // Warm-up: one batch, so lazily made state (thread pools, caches) is counted in "before".
    let failures = run_batch(&w, &r, 0, BATCH);
    assert!(failures.is_empty(), "warm-up: {failures:#?}");
    std::thread::sleep(std::time::Duration::from_secs(3)); // idle threads retire, memory trims
    let before = figures(&w);
    eprintln!("before: {before:?}");

    let start = Instant::now();
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let failures = run_batch(&w, &r, BATCH + done, n);
        assert!(
            failures.is_empty(),
            "batch at {done}: {} failed: {failures:#?}",
            failures.len()
        );
        done += n;
    }
    let took = start.elapsed();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = figures(&w);
    eprintln!(
        "after {count} containers ({BATCH} at a time) in {took:?} ({:.1}/s): {after:?}",
        count as f64 / took.as_secs_f64()
    );

    // Nothing of the containers is left, and wharfd's own resources did not grow.
    assert_eq!(after.containers, 0, "{after:?}");
    assert_eq!(after.bundles, 0, "{after:?}");
    assert_eq!(after.work_dirs, 0, "{after:?}");
    assert_eq!(after.netns, 0, "{after:?}");
    assert_eq!(after.cgroups, before.cgroups, "cgroups left: {after:?}");
    assert_eq!(after.mounts, before.mounts, "mounts left: {after:?}");
    assert!(
        after.fds <= before.fds + 4,
        "fds grew: {before:?} -> {after:?}"
    );
    assert!(
        after.rss_kib <= before.rss_kib + 16 * 1024,
        "RSS grew by more than 16 MiB: {before:?} -> {after:?}"
    );
    assert_clean(&w, "after the soak");
}
