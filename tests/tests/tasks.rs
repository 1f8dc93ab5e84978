//! Issue "Execution", tasks: `ctr run` end to end through wharfd's runtime manager and a runtime
//! v2 shim: output, exit codes, stdin, detached tasks with exec and kill, and shims surviving a
//! wharfd crash. Each scenario runs with wharf's own shim (`io.containerd.wharf.v2`, libcontainer
//! in-process) and with Debian's `containerd-shim-runc-v2` + runc (`io.containerd.runc.v2`).

use std::time::{Duration, Instant};

use wharf_tests::daemon::Wharfd;
use wharf_tests::images;
use wharf_tests::registry::Registry;

fn setup() -> (Registry, Wharfd, String) {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start().unwrap();
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
    let out = w.ctr_ok(&[
        "-n",
        "test",
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "d1",
        "sh",
        "-c",
        "echo in",
    ]);
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
    let out = w.ctr_ok(&[
        "-n",
        "test",
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "d1",
        "sh",
        "-c",
        "echo again",
    ]);
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
