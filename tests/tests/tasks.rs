//! Issue "Execution", tasks: `ctr run` end to end through wharfd's runtime manager and a runtime
//! v2 shim: output, exit codes, stdin, detached tasks with exec and kill, and shims surviving a
//! wharfd crash. Each scenario runs with wharf's own shim (`io.containerd.wharf.v2`, libcontainer
//! in-process) and with Debian's `containerd-shim-runc-v2` + runc (`io.containerd.runc.v2`).

use std::time::{Duration, Instant};

use wharf_tests::daemon::Wharfd;
use wharf_tests::images;
use wharf_tests::registry::Registry;

fn setup() -> (Registry, Wharfd, String) {
    setup_with(Wharfd::start)
}

/// A registry with busybox, pulled into namespace `test` of a wharfd that `start` starts.
fn setup_with(start: fn() -> anyhow::Result<Wharfd>) -> (Registry, Wharfd, String) {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "images", "pull", "--plain-http", &r]);
    (reg, w, r)
}

fn task_status(w: &Wharfd, id: &str) -> Option<(String, String)> {
    let ls = w.ctr_ok(&["-n", "test", "tasks", "ls"]);
    ls.lines()
        .skip(1)
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f.get(1).unwrap_or(&"").to_string(),
                f.get(2).unwrap_or(&"").to_string(),
            )
        })
}

fn wait_status(w: &Wharfd, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = task_status(w, id);
        if st.as_ref().map(|s| s.1.as_str()) == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} never became {want}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub const WHARF: &str = "io.containerd.wharf.v2";
pub const RUNC: &str = "io.containerd.runc.v2";

#[test]
fn run_output_exit_codes_and_stdin_wharf_shim() {
    run_output_exit_codes_and_stdin(WHARF);
}

#[test]
fn run_output_exit_codes_and_stdin_runc_shim() {
    run_output_exit_codes_and_stdin(RUNC);
}

#[test]
fn detached_exec_kill_delete_and_crash_recovery_wharf_shim() {
    detached_exec_kill_delete_and_crash_recovery(WHARF);
}

#[test]
fn detached_exec_kill_delete_and_crash_recovery_runc_shim() {
    detached_exec_kill_delete_and_crash_recovery(RUNC);
}

fn run_output_exit_codes_and_stdin(rt: &str) {
    let (_reg, w, r) = setup();
    let out = w.ctr_ok(&[
        "-n",
        "test",
        "run",
        "--runtime",
        rt,
        "--rm",
        &r,
        "t1",
        "echo",
        "hello",
    ]);
    assert_eq!(out.trim(), "hello");
    let out = w.ctr(&[
        "-n",
        "test",
        "run",
        "--runtime",
        rt,
        "--rm",
        &r,
        "t2",
        "sh",
        "-c",
        "exit 42",
    ]);
    assert_eq!(
        out.status.code(),
        Some(42),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ctr 1.6 attaches stdin to every foreground run and sends CloseIO at its EOF.
    let out = w.ctr_input_after(
        &[
            "-n",
            "test",
            "run",
            "--runtime",
            rt,
            "--rm",
            &r,
            "t3",
            "cat",
        ],
        b"abc\n",
        Duration::from_secs(1),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "abc");
    // Nothing is left behind: no containers, tasks, snapshots other than the image's, bundles.
    assert!(w
        .ctr_ok(&["-n", "test", "containers", "ls", "-q"])
        .trim()
        .is_empty());
    assert!(w
        .ctr_ok(&["-n", "test", "tasks", "ls", "-q"])
        .trim()
        .is_empty());
    let bundles = w.state.join("io.containerd.runtime.v2.task/test");
    let left: Vec<_> = std::fs::read_dir(&bundles)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left: {left:?}");
    // A command missing from the image: the error comes back, nothing is left.
    let out = w.ctr(&[
        "-n",
        "test",
        "run",
        "--runtime",
        rt,
        "--rm",
        &r,
        "t5",
        "/no/such/binary",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    // runc sometimes loses the exec error to a reset init pipe; the failure still comes back.
    assert!(
        err.contains("no such file")
            || err.contains("not found")
            || (rt == RUNC && err.contains("runc create failed")),
        "{err}"
    );
    assert!(w
        .ctr_ok(&["-n", "test", "containers", "ls", "-q"])
        .trim()
        .is_empty());
    let left: Vec<_> = std::fs::read_dir(&bundles)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left after a failed run: {left:?}");
}

fn detached_exec_kill_delete_and_crash_recovery(rt: &str) {
    let (_reg, mut w, r) = setup();
    w.ctr_ok(&[
        "-n",
        "test",
        "run",
        "--runtime",
        rt,
        "-d",
        &r,
        "d1",
        "sleep",
        "1000",
    ]);
    // A shell that handles SIGTERM (a bare `sleep` as PID 1 would ignore it).
    w.ctr_ok(&[
        "-n",
        "test",
        "run",
        "--runtime",
        rt,
        "-d",
        &r,
        "d2",
        "sh",
        "-c",
        "trap 'exit 143' TERM; sleep 1000 & wait",
    ]);
    wait_status(&w, "d1", "RUNNING");
    let pid1 = task_status(&w, "d1").unwrap().0;
    let ps = w.ctr_ok(&["-n", "test", "tasks", "ps", "d1"]);
    assert!(ps.contains(&pid1), "{ps}");
    let out = w.exec_ok("test", "d1", "e1", &["sh", "-c", "echo in"]);
    assert_eq!(out.trim(), "in");

    // wharfd dies; the shims keep the tasks running and wharfd finds them again.
    w.kill();
    w.spawn().unwrap();
    wait_status(&w, "d1", "RUNNING");
    assert_eq!(
        task_status(&w, "d1").unwrap().0,
        pid1,
        "same process after the restart"
    );
    wait_status(&w, "d2", "RUNNING");
    let out = w.exec_ok("test", "d1", "e2", &["sh", "-c", "echo again"]);
    assert_eq!(out.trim(), "again");

    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "d1"]);
    wait_status(&w, "d1", "STOPPED");
    let err = w.ctr_err(&["-n", "test", "containers", "rm", "d2"]);
    assert!(
        err.contains("running") || err.contains("failed precondition"),
        "{err}"
    );
    w.ctr_ok(&["-n", "test", "tasks", "kill", "d2"]);
    wait_status(&w, "d2", "STOPPED");
    for id in ["d1", "d2"] {
        w.ctr_ok(&["-n", "test", "tasks", "rm", id]);
        w.ctr_ok(&["-n", "test", "containers", "rm", id]);
    }
    assert!(w
        .ctr_ok(&["-n", "test", "tasks", "ls", "-q"])
        .trim()
        .is_empty());
    assert!(!std::path::Path::new(&format!("/proc/{pid1}")).exists());
}

/// A cgroup v2 (unified) host, as far as this hybrid one can show it: wharfd and its shims in
/// a mount namespace whose /sys/fs/cgroup is the cgroup2 hierarchy. The task lands in its own
/// v2 cgroup, pause and resume go through cgroup.freeze, metrics come as containerd's v2 type
/// (cpu.stat needs no controller), and delete removes the cgroup. Memory, cpu and pids limits
/// cannot be checked: those controllers belong to v1 on this host.
#[test]
fn detached_task_on_a_unified_cgroup_hierarchy() {
    let (_reg, w, r) = setup_with(Wharfd::start_unified);
    // ctr asks for 1024 CPU shares by default; without a v2 cpu controller the runtime
    // cannot set them (cpu.weight does not exist), so ask for none.
    w.ctr_ok(&[
        "-n",
        "test",
        "run",
        "--cpu-shares",
        "0",
        "-d",
        &r,
        "u1",
        "sleep",
        "1000",
    ]);
    wait_status(&w, "u1", "RUNNING");
    let pid = task_status(&w, "u1").unwrap().0;
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let v2 = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string();
    assert!(
        v2.ends_with("/u1"),
        "task not in a cgroup of its own on v2: {own}"
    );
    let dir = w.unified_cgroup_dir(&v2);
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|p| p == pid), "{procs}");
    let ps = w.ctr_ok(&["-n", "test", "tasks", "ps", "u1"]);
    assert!(ps.contains(&pid), "{ps}");
    let out = w.exec_ok("test", "u1", "e1", &["sh", "-c", "echo in"]);
    assert_eq!(out.trim(), "in");

    w.ctr_ok(&["-n", "test", "tasks", "pause", "u1"]);
    wait_status(&w, "u1", "PAUSED");
    let freeze = std::fs::read_to_string(dir.join("cgroup.freeze")).unwrap();
    assert_eq!(freeze.trim(), "1");
    let events = std::fs::read_to_string(dir.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    w.ctr_ok(&["-n", "test", "tasks", "resume", "u1"]);
    wait_status(&w, "u1", "RUNNING");
    assert_eq!(
        std::fs::read_to_string(dir.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "0"
    );

    // ctr prints v2 metrics under their v2 names.
    let m = w.ctr_ok(&["-n", "test", "tasks", "metrics", "u1"]);
    assert!(m.contains("cpu.usage_usec"), "not v2 metrics: {m}");
    assert!(
        !m.contains("memory.usage_in_bytes"),
        "v1 metrics on a v2 host: {m}"
    );

    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "u1"]);
    wait_status(&w, "u1", "STOPPED");
    w.ctr_ok(&["-n", "test", "tasks", "rm", "u1"]);
    w.ctr_ok(&["-n", "test", "containers", "rm", "u1"]);
    assert!(!dir.exists(), "cgroup {} left behind", dir.display());
}
