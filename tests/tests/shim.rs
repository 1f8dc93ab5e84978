//! Issue "Execution", wharf's own shim (`containerd-shim-wharf-v2`, libcontainer in-process)
//! driven by Debian's ctr through wharfd: pause/resume, metrics, exit statuses of signals, a tty,
//! OOM events, a killed shim, bad input, and five tasks surviving a wharfd crash.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wharf_tests::daemon::Wharfd;
use wharf_tests::events::Subscriber;
use wharf_tests::images;
use wharf_tests::registry::Registry;

const RT: &str = "io.containerd.wharf.v2";

fn setup() -> (Registry, Wharfd, String) {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "images", "pull", "--plain-http", &r]);
    (reg, w, r)
}

fn run_d(w: &Wharfd, r: &str, id: &str, cmd: &[&str]) {
    let mut args = vec!["-n", "test", "run", "--runtime", RT, "-d", r, id];
    args.extend_from_slice(cmd);
    w.ctr_ok(&args);
}

/// (pid, status) of a task from `ctr tasks ls`.
fn task(w: &Wharfd, id: &str) -> Option<(String, String)> {
    let ls = w.ctr_ok(&["-n", "test", "tasks", "ls"]);
    ls.lines()
        .skip(1)
        .find(|l| l.split_whitespace().next() == Some(id))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[2].to_string())
        })
}

fn wait_status(w: &Wharfd, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let st = task(w, id);
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

/// `ctr events` with its subscription in place: a label put on namespace `test` (which
/// `setup` made) came through.
fn subscribe(w: &Wharfd) -> Subscriber {
    let mut cmd = Command::new("ctr");
    cmd.arg("--address").arg(&w.socket).arg("events");
    let sub = Subscriber::spawn(cmd);
    let mut n = 0;
    sub.subscribe(
        || {
            n += 1;
            w.ctr_ok(&["namespaces", "label", "test", &format!("probe={n}")]);
        },
        |t| t.contains("/namespaces/update"),
    );
    sub
}

/// The exit status wharfd reports for a stopped task (Tasks/Get), then `ctr tasks rm`.
fn rm_status(w: &Wharfd, id: &str) -> Option<u32> {
    use containerd_client::services::v1 as pb;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let ch = w.channel().await.ok()?;
        let mut c = pb::tasks_client::TasksClient::new(ch);
        let req = wharf_tests::daemon::with_ns(
            "test",
            pb::GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            },
        );
        let p = c.get(req).await.ok()?.into_inner().process?;
        Some(p.exit_status)
    });
    w.ctr_ok(&["-n", "test", "tasks", "rm", id]);
    status
}

fn shim_pids(id: &str) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-f", &format!("containerd-shim-wharf-v2 .*-id {id} ")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn cgroup_dirs(ns_id: &str) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in rd.flatten() {
            let p = h.path().join(ns_id);
            if p.exists() {
                left.push(p.display().to_string());
            }
        }
    }
    left
}

#[test]
fn pause_resume_metrics_and_signal_exit_statuses() {
    let (_reg, w, r) = setup();
    run_d(&w, &r, "p1", &["sleep", "1000"]);
    run_d(
        &w,
        &r,
        "p2",
        &["sh", "-c", "trap 'exit 143' TERM; sleep 1000 & wait"],
    );
    wait_status(&w, "p1", "RUNNING");
    let (pid, _) = task(&w, "p1").unwrap();
    let shim = shim_pids("p1");
    assert_eq!(shim.len(), 1, "one shim per task: {shim:?}");

    w.ctr_ok(&["-n", "test", "tasks", "pause", "p1"]);
    wait_status(&w, "p1", "PAUSED");
    let state = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        state.contains("State:\tD") || state.contains("State:\tS"),
        "{state}"
    );
    w.ctr_ok(&["-n", "test", "tasks", "resume", "p1"]);
    wait_status(&w, "p1", "RUNNING");

    let ps = w.ctr_ok(&["-n", "test", "tasks", "ps", "p1"]);
    assert!(ps.contains(&pid), "{ps}");
    let m = w.ctr_ok(&["-n", "test", "tasks", "metrics", "p1"]);
    assert!(m.contains("memory.usage_in_bytes"), "{m}");
    assert!(m.contains("pids.current"), "{m}");
    let usage: u64 = m
        .lines()
        .find(|l| l.starts_with("memory.usage_in_bytes"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(usage > 0, "{m}");

    // Exit statuses of signals: 137 after SIGKILL, 143 from a shell that exits on SIGTERM.
    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "p1"]);
    wait_status(&w, "p1", "STOPPED");
    w.ctr_ok(&["-n", "test", "tasks", "kill", "p2"]);
    wait_status(&w, "p2", "STOPPED");
    // Kill on a stopped task: NotFound, as containerd ("process already finished").
    let err = w.ctr_err(&["-n", "test", "tasks", "kill", "p1"]);
    assert!(
        err.contains("not found") || err.contains("finished"),
        "{err}"
    );
    assert_eq!(rm_status(&w, "p1"), Some(137));
    assert_eq!(rm_status(&w, "p2"), Some(143));
    for id in ["p1", "p2"] {
        w.ctr_ok(&["-n", "test", "containers", "rm", id]);
    }
    // The shim is gone, with its cgroups and bundle.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shim_pids("p1").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(shim_pids("p1").is_empty(), "shim still running");
    assert!(
        cgroup_dirs("test/p1").is_empty(),
        "{:?}",
        cgroup_dirs("test/p1")
    );
    assert!(!w
        .state
        .join("io.containerd.runtime.v2.task/test/p1")
        .exists());
}

/// A terminal's output is copied by a shim thread, which may run after the process exited; the
/// exit must not be reported before that copy is done. A client that reads the FIFO only once
/// Wait returned (it holds the FIFO open read-write, so it never sees EOF) gets all the output.
#[test]
fn terminal_output_is_in_the_fifo_when_the_exit_is_reported() {
    use containerd_client::services::v1 as pb;
    use std::os::unix::fs::OpenOptionsExt;
    use wharf_tests::daemon::with_ns;
    let (_reg, w, r) = setup();
    run_d(&w, &r, "tty1", &["sleep", "1000"]);
    wait_status(&w, "tty1", "RUNNING");
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = pb::tasks_client::TasksClient::new(w.channel().await.unwrap());
        for i in 0..20 {
            let exec_id = format!("t{i}");
            let fifo = dir.path().join(&exec_id);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            let mut out = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap();
            let process = serde_json::json!({
                "terminal": true,
                "args": ["seq", "1", "2000"],
                "env": ["PATH=/bin"],
                "cwd": "/",
                "user": {"uid": 0, "gid": 0},
            });
            let req = pb::ExecProcessRequest {
                container_id: "tty1".into(),
                stdout: fifo.display().to_string(),
                terminal: true,
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                    value: serde_json::to_vec(&process).unwrap(),
                }),
                exec_id: exec_id.clone(),
                ..Default::default()
            };
            tasks.exec(with_ns("test", req)).await.unwrap();
            let mut waiter = tasks.clone();
            let wait_req = with_ns(
                "test",
                pb::WaitRequest {
                    container_id: "tty1".into(),
                    exec_id: exec_id.clone(),
                },
            );
            let wait = tokio::spawn(async move { waiter.wait(wait_req).await });
            let start = pb::StartRequest {
                container_id: "tty1".into(),
                exec_id: exec_id.clone(),
            };
            tasks.start(with_ns("test", start)).await.unwrap();
            let status = wait.await.unwrap().unwrap().into_inner().exit_status;
            assert_eq!(status, 0);
            let mut got = Vec::new();
            let mut buf = [0u8; 65536];
            loop {
                match out.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("read {}: {e}", fifo.display()),
                }
            }
            let text = String::from_utf8_lossy(&got);
            let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
            assert_eq!(lines.len(), 2000, "exec {i}: {} bytes", got.len());
            assert_eq!(lines.last(), Some(&"2000"), "exec {i}");
            let del = pb::DeleteProcessRequest {
                container_id: "tty1".into(),
                exec_id,
            };
            tasks.delete_process(with_ns("test", del)).await.unwrap();
        }
    });
    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "tty1"]);
    wait_status(&w, "tty1", "STOPPED");
    w.ctr(&["-n", "test", "tasks", "rm", "tty1"]);
    w.ctr_ok(&["-n", "test", "containers", "rm", "tty1"]);
}

#[test]
fn exec_duplicate_id_and_tty() {
    let (_reg, w, r) = setup();
    run_d(&w, &r, "x1", &["sleep", "1000"]);
    wait_status(&w, "x1", "RUNNING");
    let out = w.ctr(&[
        "-n",
        "test",
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "x1",
        "sh",
        "-c",
        "echo in; exit 3",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "in");
    assert_eq!(
        out.status.code(),
        Some(3),
        "the exec's exit status comes back"
    );
    // An exec whose command is missing fails with the runtime's error.
    let err = w.ctr_err(&[
        "-n",
        "test",
        "tasks",
        "exec",
        "--exec-id",
        "e2",
        "x1",
        "/no/such/cmd",
    ]);
    assert!(
        err.to_lowercase().contains("no such file") || err.contains("not found"),
        "{err}"
    );
    // A duplicate exec id while the first runs: AlreadyExists.
    let mut bg = Command::new("ctr")
        .args(["--address"])
        .arg(&w.socket)
        .args([
            "-n",
            "test",
            "tasks",
            "exec",
            "--exec-id",
            "dup",
            "x1",
            "sleep",
            "5",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // It runs once the task lists a second process.
    let deadline = Instant::now() + Duration::from_secs(30);
    while w
        .ctr_ok(&["-n", "test", "tasks", "ps", "x1"])
        .lines()
        .skip(1)
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "the first exec never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = w.ctr_err(&[
        "-n",
        "test",
        "tasks",
        "exec",
        "--exec-id",
        "dup",
        "x1",
        "true",
    ]);
    assert!(err.contains("already exists"), "{err}");
    let _ = bg.kill();
    let _ = bg.wait();

    // A terminal: ctr needs one on its own stdin, so run it under script(1).
    let cmd = format!(
        "ctr --address {} -n test tasks exec -t --exec-id t1 x1 sh -c 'tty; stty size'",
        w.socket.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let _ = child.wait();
    assert!(out.contains("/dev/pts/"), "{out}");

    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "x1"]);
    wait_status(&w, "x1", "STOPPED");
    assert_eq!(rm_status(&w, "x1"), Some(137));
    w.ctr_ok(&["-n", "test", "containers", "rm", "x1"]);
}

#[test]
fn oom_kill_is_reported() {
    let (_reg, w, r) = setup();
    let events = subscribe(&w);
    let out = w.ctr(&[
        "-n",
        "test",
        "run",
        "--runtime",
        RT,
        "--rm",
        "--memory-limit",
        "33554432",
        &r,
        "oom1",
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=200M count=1",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "OOM-killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    events.wait_for("the OOM event", |t| {
        t.lines()
            .any(|l| l.contains("/tasks/oom") && l.contains("oom1"))
    });
}

#[test]
fn killed_shim_and_five_tasks_across_a_crash() {
    let (_reg, mut w, r) = setup();
    let ids = ["c1", "c2", "c3", "c4", "c5"];
    for id in ids {
        run_d(&w, &r, id, &["sleep", "1000"]);
    }
    let mut pids = Vec::new();
    for id in ids {
        wait_status(&w, id, "RUNNING");
        pids.push(task(&w, id).unwrap().0);
    }
    w.kill();
    w.spawn().unwrap();
    for (id, pid) in ids.iter().zip(&pids) {
        wait_status(&w, id, "RUNNING");
        assert_eq!(&task(&w, id).unwrap().0, pid, "{id} kept its process");
    }
    let out = w.exec_ok("test", "c3", "after", &["echo", "ok"]);
    assert_eq!(out.trim(), "ok");
    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "c1"]);
    wait_status(&w, "c1", "STOPPED");
    assert_eq!(rm_status(&w, "c1"), Some(137));

    // A shim killed with -9: wharfd notices at once, cleans up after it (the container's
    // processes, its rootfs mount, its cgroup), publishes the exit, and the task reads STOPPED
    // until it is deleted.
    let events = subscribe(&w);
    let shim = shim_pids("c2");
    assert_eq!(shim.len(), 1, "{shim:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_status(&w, "c2", "STOPPED");
    let pid2 = &pids[1];
    let bundle = w.state.join("io.containerd.runtime.v2.task/test/c2");
    let deadline = Instant::now() + Duration::from_secs(5);
    while (std::path::Path::new(&format!("/proc/{pid2}")).exists() || bundle.exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{pid2}")).exists(),
        "the container's process outlived its shim's clean-up"
    );
    assert!(!bundle.exists(), "bundle left after the shim died");
    assert!(
        cgroup_dirs("test/c2").is_empty(),
        "{:?}",
        cgroup_dirs("test/c2")
    );
    events.wait_for("c2's exit event", |t| {
        t.lines()
            .any(|l| l.contains("/tasks/exit") && l.contains("c2"))
    });
    drop(events);
    w.ctr(&["-n", "test", "tasks", "rm", "c2"]);
    assert!(task(&w, "c2").is_none());

    // wharfd killed between the shim's Delete and its Shutdown (as Tasks/Delete does them):
    // the restarted wharfd finishes the delete instead of keeping a shim without a task, which
    // `ctr tasks ls` would list forever and `wharf rm -f` would never end.
    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "c5"]);
    wait_status(&w, "c5", "STOPPED");
    w.kill();
    let bundle = w.state.join("io.containerd.runtime.v2.task/test/c5");
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let shim = wharf_runtime::Shim::connect(address.trim(), "test", "c5", bundle.clone())
                .await
                .unwrap();
            // Logs while wharfd, the log's reader, is down must not break the shim's handlers.
            shim.delete("").await.unwrap();
        });
    assert_eq!(shim_pids("c5").len(), 1, "the shim waits for its Shutdown");
    w.spawn().unwrap();
    assert!(task(&w, "c5").is_none(), "a task without a process listed");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !shim_pids("c5").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(shim_pids("c5").is_empty(), "the shim was left running");
    assert!(!bundle.exists(), "bundle left");
    for id in ["c3", "c4"] {
        w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", id]);
        wait_status(&w, id, "STOPPED");
        w.ctr(&["-n", "test", "tasks", "rm", id]);
    }
    for id in ids {
        w.ctr_ok(&["-n", "test", "containers", "rm", id]);
    }
}

#[test]
fn bad_input_unknown_runtime_and_missing_rootfs() {
    let (_reg, w, r) = setup();
    let err = w.ctr_err(&[
        "-n",
        "test",
        "run",
        "--runtime",
        "io.containerd.nosuch.v9",
        "--rm",
        &r,
        "b1",
        "true",
    ]);
    assert!(err.contains("not found") || err.contains("nosuch"), "{err}");
    assert!(!w
        .state
        .join("io.containerd.runtime.v2.task/test/b1")
        .exists());
    let _ = w.ctr(&["-n", "test", "containers", "rm", "b1"]);

    // A container with an explicit rootfs that does not exist.
    let err = w.ctr_err(&[
        "-n",
        "test",
        "run",
        "--runtime",
        RT,
        "--rm",
        "--rootfs",
        "/nonexistent/rootfs",
        "b2",
        "true",
    ]);
    assert!(
        err.contains("rootfs") || err.to_lowercase().contains("no such file"),
        "{err}"
    );
    assert!(!w
        .state
        .join("io.containerd.runtime.v2.task/test/b2")
        .exists());
    // The shim started for the failed create is gone too.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !shim_pids("b2").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        shim_pids("b2").is_empty(),
        "a shim outlived its failed create"
    );
    assert!(w
        .ctr_ok(&["-n", "test", "tasks", "ls", "-q"])
        .trim()
        .is_empty());
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|t| t.starts_with(&d))
        .map(String::from)
        .collect()
}

#[test]
fn two_hundred_runs_leak_nothing() {
    let (_reg, w, r) = setup();
    let pid = w.pid().unwrap();
    let run = |id: &str| {
        let out = w.ctr_ok(&[
            "-n",
            "test",
            "run",
            "--runtime",
            RT,
            "--rm",
            &r,
            id,
            "echo",
            id,
        ]);
        assert_eq!(out.trim(), id);
    };
    // Warm up: the first runs size wharfd's pools and caches.
    for i in 0..10 {
        run(&format!("warm{i}"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let fds = fd_count(pid);
    let rss = rss_kib(pid);
    let shim_state = |dir: &str| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let sockets = shim_state("/run/wharf/s");
    let roots = shim_state("/run/wharf/c");
    for i in 0..100 {
        run(&format!("leak{i}"));
    }
    // A leak grows with every run; thread pools and malloc arenas grow once, more when other
    // tests load the machine. So the second hundred runs may not add to what the first left.
    std::thread::sleep(Duration::from_millis(300));
    let rss_mid = rss_kib(pid);
    for i in 100..200 {
        run(&format!("leak{i}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds_after = fd_count(pid);
    assert!(fds_after <= fds + 2, "wharfd fds {fds} -> {fds_after}");
    let rss_after = rss_kib(pid);
    assert!(
        rss_after <= rss_mid + 2048,
        "wharfd RSS {rss} KiB -> {rss_mid} KiB after 100 runs -> {rss_after} KiB after 200"
    );
    assert!(
        rss_after <= rss + 32 * 1024,
        "wharfd RSS {rss} KiB -> {rss_after} KiB"
    );
    assert!(
        mounts_under(w.dir.path()).is_empty(),
        "{:?}",
        mounts_under(w.dir.path())
    );
    let bundles = w.state.join("io.containerd.runtime.v2.task/test");
    let left = std::fs::read_dir(&bundles).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "bundles left");
    for i in [0, 99, 199] {
        let dirs = cgroup_dirs(&format!("test/leak{i}"));
        assert!(dirs.is_empty(), "{dirs:?}");
    }
    assert!(shim_pids("leak199").is_empty());
    // Other tests may run shims meanwhile; these dirs must not grow by our 200 runs.
    assert!(
        shim_state("/run/wharf/s") <= sockets + 8,
        "shim sockets left"
    );
    assert!(
        shim_state("/run/wharf/c") <= roots + 8,
        "shim runtime roots left"
    );
    assert!(w
        .ctr_ok(&["-n", "test", "containers", "ls", "-q"])
        .trim()
        .is_empty());
}

/// The runtime options' `BinaryName` (containerd's runc options) makes the wharf shim drive that
/// runc-compatible binary's CLI instead of libcontainer: here Debian's runc.
#[test]
fn binary_name_option_runs_the_container_with_runc() {
    use containerd_client::services::v1 as pb;
    let (_reg, w, r) = setup();
    w.ctr_ok(&[
        "-n",
        "test",
        "containers",
        "create",
        "--runtime",
        RT,
        &r,
        "rb1",
        "sleep",
        "1000",
    ]);
    // containerd.runc.v1.Options { binary_name (field 6) = "/usr/sbin/runc" }, hand-encoded.
    let runc = b"/usr/sbin/runc";
    let mut value = vec![0x32, runc.len() as u8];
    value.extend_from_slice(runc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = rt.block_on(async {
        let mut c = pb::tasks_client::TasksClient::new(w.channel().await.unwrap());
        let created = c
            .create(wharf_tests::daemon::with_ns(
                "test",
                pb::CreateTaskRequest {
                    container_id: "rb1".into(),
                    options: Some(prost_types::Any {
                        type_url: "containerd.runc.v1.Options".into(),
                        value,
                    }),
                    ..Default::default()
                },
            ))
            .await
            .expect("create with runc")
            .into_inner();
        c.start(wharf_tests::daemon::with_ns(
            "test",
            pb::StartRequest {
                container_id: "rb1".into(),
                exec_id: String::new(),
            },
        ))
        .await
        .expect("start with runc");
        created.pid
    });
    wait_status(&w, "rb1", "RUNNING");
    assert_eq!(task(&w, "rb1").unwrap().0, pid.to_string());
    // runc keeps the container's state under the shim's runtime root: runc itself lists it.
    let listed = std::fs::read_dir("/run/wharf/c")
        .unwrap()
        .flatten()
        .any(|d| {
            let out = Command::new("runc")
                .arg("--root")
                .arg(d.path().join("runc"))
                .args(["state", "rb1"])
                .output()
                .unwrap();
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("running")
        });
    assert!(listed, "runc does not know the container");
    let out = w.exec_ok("test", "rb1", "re1", &["echo", "via-runc"]);
    assert_eq!(out.trim(), "via-runc");
    w.ctr_ok(&["-n", "test", "tasks", "pause", "rb1"]);
    wait_status(&w, "rb1", "PAUSED");
    w.ctr_ok(&["-n", "test", "tasks", "resume", "rb1"]);
    wait_status(&w, "rb1", "RUNNING");
    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "rb1"]);
    wait_status(&w, "rb1", "STOPPED");
    assert_eq!(rm_status(&w, "rb1"), Some(137));
    w.ctr_ok(&["-n", "test", "containers", "rm", "rb1"]);
    assert!(
        cgroup_dirs("test/rb1").is_empty(),
        "{:?}",
        cgroup_dirs("test/rb1")
    );
}

/// Container processes start with every signal at its default action (the shim ignores SIGPIPE
/// itself): `yes | head -1` ends quietly, as under runc, for the init and for exec'd processes.
#[test]
fn container_processes_get_default_signal_dispositions() {
    let (_reg, w, r) = setup();
    let sigign = |out: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(u64::MAX)
    };
    let out = w.ctr_ok(&[
        "-n",
        "test",
        "run",
        "--runtime",
        RT,
        "--rm",
        &r,
        "sg1",
        "cat",
        "/proc/self/status",
    ]);
    let pipe_bit = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        sigign(&out) & pipe_bit,
        0,
        "SIGPIPE ignored in the container: {out}"
    );
    let out = w.ctr(&[
        "-n",
        "test",
        "run",
        "--runtime",
        RT,
        "--rm",
        &r,
        "sg2",
        "sh",
        "-c",
        "yes | head -1; echo done",
    ]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "y\ndone");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Broken pipe"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_d(&w, &r, "sg3", &["sleep", "1000"]);
    wait_status(&w, "sg3", "RUNNING");
    let out = w.exec_ok("test", "sg3", "s1", &["cat", "/proc/self/status"]);
    assert_eq!(
        sigign(&out) & pipe_bit,
        0,
        "SIGPIPE ignored in an exec: {out}"
    );
    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "sg3"]);
    wait_status(&w, "sg3", "STOPPED");
    w.ctr_ok(&["-n", "test", "tasks", "rm", "sg3"]);
    w.ctr_ok(&["-n", "test", "containers", "rm", "sg3"]);
}

/// `[runtime.shims]` maps a runtime name to a shim: with ctr's default name mapped to wharf's
/// shim, a plain `ctr run` (no --runtime) runs on it.
#[test]
fn configured_shim_for_ctrs_default_runtime() {
    let (_reg, mut w, r) = setup();
    std::fs::write(
        w.dir.path().join("config.toml"),
        "[runtime.shims]\n\"io.containerd.runc.v2\" = \"containerd-shim-wharf-v2\"\n",
    )
    .unwrap();
    w.kill();
    w.spawn().unwrap();
    w.ctr_ok(&["-n", "test", "run", "-d", &r, "al1", "sleep", "1000"]);
    wait_status(&w, "al1", "RUNNING");
    assert_eq!(
        shim_pids("al1").len(),
        1,
        "wharf's shim serves ctr's default runtime"
    );
    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "al1"]);
    wait_status(&w, "al1", "STOPPED");
    w.ctr_ok(&["-n", "test", "tasks", "rm", "al1"]);
    w.ctr_ok(&["-n", "test", "containers", "rm", "al1"]);
    // A configured shim that does not exist is a clear NotFound, and nothing is left.
    std::fs::write(
        w.dir.path().join("config.toml"),
        "[runtime.shims]\n\"io.containerd.runc.v2\" = \"/nonexistent/shim\"\n",
    )
    .unwrap();
    w.kill();
    w.spawn().unwrap();
    let err = w.ctr_err(&["-n", "test", "run", "--rm", &r, "al2", "true"]);
    assert!(err.contains("does not exist"), "{err}");
    assert!(!w
        .state
        .join("io.containerd.runtime.v2.task/test/al2")
        .exists());
}

fn ppid(pid: &str) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // "pid (comm) state ppid ...": comm may hold spaces, so count from its closing paren.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().to_string()
}

/// Tasks that name a group (containerd's `io.containerd.runc.v2.group`, which the CRI's pods
/// use too) run under the shim of the group's task. wharfd joins that running shim directly: the
/// shim binary runs once, for the group's first task. A group whose shim is dead gets a new one.
#[test]
fn tasks_of_a_group_share_a_shim_started_once() {
    let (_reg, mut w, r) = setup();
    // The shim behind a wrapper of the same name that records how it is run.
    let dir = w.dir.path().join("shims");
    std::fs::create_dir_all(&dir).unwrap();
    let calls = w.dir.path().join("shim-calls");
    let wrapper = dir.join("containerd-shim-wharf-v2");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            calls.display(),
            wharf_tests::bin("containerd-shim-wharf-v2").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        w.dir.path().join("config.toml"),
        format!("[runtime.shims]\n\"{RT}\" = \"{}\"\n", wrapper.display()),
    )
    .unwrap();
    w.kill();
    w.spawn().unwrap();
    let starts = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.ends_with(" start"))
            .count()
    };
    let group = |id: &str| {
        let mut args = vec!["-n", "test", "run", "--runtime", RT, "-d"];
        let a = "io.containerd.runc.v2.group=g1".to_string();
        if id != "g1" {
            args.extend(["--annotation", a.as_str()]);
        }
        args.extend([r.as_str(), id, "sleep", "1000"]);
        w.ctr_ok(&args);
        wait_status(&w, id, "RUNNING");
        task(&w, id).unwrap().0
    };
    let leader = group("g1");
    let shim = ppid(&leader);
    for id in ["g2", "g3"] {
        let pid = group(id);
        assert_eq!(ppid(&pid), shim, "{id} runs under the group's shim");
    }
    assert_eq!(starts(), 1, "{:?}", std::fs::read_to_string(&calls));
    let out = w.exec_ok("test", "g3", "e1", &["echo", "ok"]);
    assert_eq!(out.trim(), "ok");

    // The group's shim killed: its tasks stop, and the group's next task gets a new shim.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim.parse().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for id in ["g1", "g2", "g3"] {
        wait_status(&w, id, "STOPPED");
    }
    let pid = group("g4");
    let shim2 = ppid(&pid);
    assert_ne!(shim2, shim);
    assert_eq!(starts(), 2, "{:?}", std::fs::read_to_string(&calls));
    for id in ["g1", "g2", "g3", "g4"] {
        w.ctr(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", id]);
    }
    wait_status(&w, "g4", "STOPPED");
    for id in ["g1", "g2", "g3", "g4"] {
        w.ctr_ok(&["-n", "test", "tasks", "rm", id]);
        w.ctr_ok(&["-n", "test", "containers", "rm", id]);
    }
    assert!(
        std::fs::read_dir(w.state.join("io.containerd.runtime.v2.task/test"))
            .map(|d| d.count() == 0)
            .unwrap_or(true)
    );
}
