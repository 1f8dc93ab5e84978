//! Issue 8 (operations and hardening): fault injection. wharfd is killed with SIGKILL at a
//! random moment (0–300 ms) into a pull from the real registry, a container run, a container
//! delete or a garbage collection, restarted, and then `wharf system check` must be clean (what
//! the kill left is the start-up check's and GC's to clean) and every image still runs.
//!
//! Bounded: `WHARF_FAULT_ITERATIONS` (default 50) kills; the seed is printed, and
//! `WHARF_FAULT_SEED=<seed>` replays a run.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wharf_tests::daemon::Wharfd;
use wharf_tests::images::{self, file, Image, Layer};
use wharf_tests::registry::Registry;
use wharf_tests::reliability::{assert_clean, check, Rng};

const NS: &str = "check8f";

/// busybox plus a layer of 160 small incompressible files (~6 MiB), so pulls and unpacks last
/// long enough to be killed in the middle.
fn big_image(rng: &mut Rng) -> Image {
    let base = images::busybox().unwrap().layers.remove(0);
    let mut entries = vec![images::dir("data", 0o755)];
    for i in 0..160 {
        let data: Vec<u8> = (0..40 * 1024 / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        entries.push(file(&format!("data/f{i}"), 0o644, &data));
    }
    Image::new(vec![base, Layer::new(entries).unwrap()], "amd64", &["sh"]).unwrap()
}

fn wharf_bg(w: &Wharfd, args: &[&str]) -> Child {
    Command::new(wharf_tests::bin("wharf"))
        .args(args)
        .env("WHARF_ADDRESS", &w.socket)
        .env("WHARF_DATA_ROOT", w.cli_root())
        .env("WHARF_NAMESPACE", NS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn images_of(w: &Wharfd) -> Vec<String> {
    w.ctr_ok(&["-n", NS, "images", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Pull,
    Run,
    Delete,
    Gc,
}

#[test]
fn kill_wharfd_during_pull_run_delete_and_gc() {
    wharf_tests::require_root();
    let iterations: usize = std::env::var("WHARF_FAULT_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut rng = Rng::from_env("WHARF_FAULT_SEED");
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    images::push(&reg, "big", "latest", &big_image(&mut rng)).unwrap();
    let bb = format!("{}/busybox:latest", reg.host());
    let big = format!("{}/big:latest", reg.host());
    let mut w = Wharfd::start().unwrap();
    w.wharf_in_ok(NS, &["pull", "-q", &bb]);

    let start = Instant::now();
    let mut finished_before_kill = 0;
    let mut counts = std::collections::BTreeMap::new();
    for i in 0..iterations {
        let op = [Op::Pull, Op::Run, Op::Delete, Op::Gc][rng.below(4) as usize];
        *counts.entry(format!("{op:?}")).or_insert(0) += 1;
        let delay = Duration::from_millis(rng.below(301));
        // Set-up outside the kill window.
        let mut client = match op {
            Op::Pull => {
                if images_of(&w).contains(&big) {
                    w.ctr_ok(&["-n", NS, "images", "rm", "--sync", &big]);
                }
                wharf_bg(&w, &["pull", "-q", &big])
            }
            Op::Run => wharf_bg(&w, &["run", "--rm", "--network", "none", &bb, "true"]),
            Op::Delete => {
                let name = format!("d{i}");
                w.wharf_in_ok(
                    NS,
                    &[
                        "run",
                        "-d",
                        "--network",
                        "none",
                        "--name",
                        &name,
                        &bb,
                        "sleep",
                        "60",
                    ],
                );
                wharf_bg(&w, &["rm", "-f", &name])
            }
            Op::Gc => {
                if !images_of(&w).contains(&big) {
                    w.wharf_in_ok(NS, &["pull", "-q", &big]);
                }
                let mut c = Command::new("ctr");
                c.args(["--address"])
                    .arg(&w.socket)
                    .args(["-n", NS, "images", "rm", "--sync", &big])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                c.spawn().unwrap()
            }
        };
        std::thread::sleep(delay);
        if let Ok(Some(_)) = client.try_wait() {
            finished_before_kill += 1;
        }
        w.kill();
        let _ = client.kill();
        let _ = client.wait();
        if let Err(e) = w.spawn() {
            panic!("iteration {i} ({op:?}, {delay:?}): wharfd did not come back: {e:#}");
        }
        let what = format!("iteration {i} ({op:?}, killed after {delay:?})");
        assert_clean(&w, &what);
        // Every image that survived still runs (unpacked again if the kill interrupted it).
        for img in images_of(&w) {
            let o = w.wharf_in(NS, &["run", "--rm", "--network", "none", &img, "true"]);
            assert!(
                o.status.success(),
                "{what}: {img} no longer runs: {}\n{}",
                String::from_utf8_lossy(&o.stderr),
                w.log()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    // Containers the kills left (a `run --rm` or `rm -f` cut short) are removable, and then
    // nothing is left.
    let left = w.wharf_in_ok(NS, &["ps", "-aq"]);
    for id in left.split_whitespace() {
        w.wharf_in_ok(NS, &["rm", "-f", id]);
    }
    // `rm -f` of a container whose task a kill left half-deleted drops the record but not the
    // task (see docs/reliability.md): the check finds such orphan tasks and --repair ends them.
    let (code, out) = check(&w, &["--repair"]);
    assert_eq!(code, 0, "{out}");
    for line in out.lines().filter(|l| l.starts_with("repaired ")) {
        assert!(line.starts_with("repaired orphan-task "), "{out}");
    }
    eprintln!("after removing every container: {out}");
    assert_clean(&w, "after removing every container");
    eprintln!(
        "{iterations} kills survived in {:?} ({counts:?}; {finished_before_kill} operations had \
         finished before their kill)",
        start.elapsed()
    );
}
