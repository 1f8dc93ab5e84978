//! Issue "The wharf CLI": the real `wharf` binary against a real wharfd, registry, shims and CNI
//! plugins, checked the way a user would (its output, exit codes, and the host's state).

use std::process::Output;
use std::time::{Duration, Instant};

use wharf_tests::daemon::Wharfd;
use wharf_tests::images;
use wharf_tests::registry::Registry;

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A networked wharfd with busybox pulled; returns the image reference.
fn setup() -> (Registry, Wharfd, String) {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start_networked().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    w.wharf_ok(&["pull", "-q", &r]);
    (reg, w, r)
}

fn inspect(w: &Wharfd, id: &str) -> serde_json::Value {
    let out = w.wharf_ok(&["inspect", id]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn http_get(addr: &str) -> Result<String, String> {
    ureq::get(&format!("http://{addr}/"))
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())
}

fn host_has(cmd: &[&str], needle: &str) -> bool {
    let out = std::process::Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(needle)
}

/// `wharf pull` ends with the image listed; `run --rm` prints and leaves nothing behind.
#[test]
fn pull_list_run_rm() {
    let reg = Registry::start().unwrap();
    wharf_tests::require_root();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start_networked().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let out = w.wharf(&["pull", &r]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}");
    assert!(
        se.contains("pulling") && se.contains("done"),
        "plain progress lines: {se}"
    );
    let images = w.wharf_ok(&["images"]);
    assert!(
        images.contains(&format!("{}/busybox", reg.host())) && images.contains("latest"),
        "{images}"
    );

    let out = w.wharf(&["run", "--rm", &r, "echo", "hi"]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "{so}{se}\n{}", w.log());
    assert_eq!(so, "hi\n");
    // -d --rm: wharfd removes the container once it exits; prune drops its log.
    let id = w.wharf_ok(&["run", "-d", "--rm", &r, "sh", "-c", "echo bye; sleep 0.5"]);
    let id = id.trim().to_string();
    wait_until("auto-removal", Duration::from_secs(20), || {
        !w.wharf_ok(&["ps", "-a", "-q"]).contains(&id)
    });
    w.wharf_ok(&["system", "prune"]);
    assert!(
        !w.cli_root().join("default").join(&id).exists(),
        "log dir left"
    );
    // Exit codes come through; nothing is left.
    let out = w.wharf(&["run", "--rm", &r, "sh", "-c", "echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out).1, "oops\n");
    assert_eq!(w.wharf_ok(&["ps", "-a", "-q"]), "");
    let snaps = w.ctr_ok(&["snapshots", "ls"]);
    assert!(!snaps.lines().any(|l| l.contains("Active")), "{snaps}");
    let netns = w.state.join("netns/default");
    assert!(
        std::fs::read_dir(&netns).map(|d| d.count()).unwrap_or(0) == 0,
        "netns left"
    );
}

/// The web server walk-through of the issue: port mapping, ps, logs, exec, stop, rm and the
/// host left clean.
#[test]
fn web_server_lifecycle() {
    let (_reg, w, r) = setup();
    let port = {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let publish = format!("{port}:8080");
    w.wharf_ok(&[
        "run", "-d", "--name", "web", "-p", &publish, &r, "sh", "-c",
        "mkdir -p /www && echo hello-from-web > /www/index.html && echo serving && exec httpd -f -v -p 8080 -h /www",
    ]);
    let ip = inspect(&w, "web")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !ip.is_empty(),
        "container has an IP: {}",
        inspect(&w, "web")
    );
    // From the host: the container's IP, and the published port on the host's addresses.
    let mut body = Err(String::new());
    wait_until("httpd answers", Duration::from_secs(10), || {
        body = http_get(&format!("{ip}:8080"));
        body.is_ok()
    });
    assert_eq!(body.unwrap().trim(), "hello-from-web");
    let via_port = http_get(&format!("127.0.0.1:{port}"));
    assert_eq!(
        via_port.as_deref().map(str::trim),
        Ok("hello-from-web"),
        "published port"
    );

    let ps = w.wharf_ok(&["ps"]);
    assert!(
        ps.contains("web") && ps.contains(&format!("{port}->8080/tcp")) && ps.contains("Up"),
        "{ps}"
    );
    let logs = w.wharf_ok(&["logs", "web"]);
    assert!(logs.contains("serving"), "{logs}");
    assert_eq!(
        w.wharf_ok(&["exec", "web", "cat", "/etc/hostname"]).trim(),
        "web"
    );
    let hosts = w.wharf_ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(hosts.contains(&ip) && hosts.contains("web"), "{hosts}");

    let t0 = Instant::now();
    w.wharf_ok(&["stop", "-t", "2", "web"]);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t0.elapsed()
    );
    let ps = w.wharf_ok(&["ps", "-a"]);
    assert!(ps.contains("Exited"), "{ps}");
    w.wharf_ok(&["rm", "web"]);
    assert_eq!(w.wharf_ok(&["ps", "-a", "-q"]), "");
    // The host is clean: no netns, no veth on the bridge, no DNAT rule, no IP allocation.
    assert!(!w.state.join("netns/default/web").exists());
    let bridge = w.bridge.clone().unwrap();
    assert!(
        !host_has(&["ip", "-o", "link", "show", "master", &bridge], "veth"),
        "veth left"
    );
    assert!(
        !host_has(&["iptables-save", "-t", "nat"], &format!("--dport {port}")),
        "DNAT left"
    );
    let alloc = w.root.join("cni/networks").join(&bridge);
    let leases: Vec<_> = std::fs::read_dir(&alloc)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !leases.iter().any(|l| l == &ip),
        "IP {ip} still allocated: {leases:?}"
    );
}

/// Two containers on the default network reach each other by IP.
#[test]
fn containers_reach_each_other() {
    let (_reg, w, r) = setup();
    w.wharf_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        &r,
        "sh",
        "-c",
        "mkdir -p /www && echo from-a > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let ip = inspect(&w, "a")["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{ip}:8080/");
    let mut out = String::new();
    wait_until("b reaches a", Duration::from_secs(10), || {
        let o = w.wharf(&["run", "--rm", &r, "busybox", "wget", "-qO-", &url]);
        out = text(&o).0;
        o.status.success()
    });
    assert_eq!(out.trim(), "from-a");
    w.wharf_ok(&["rm", "-f", "a"]);
}

/// Volumes, read-only rootfs, memory limit, capabilities and seccomp are enforced.
#[test]
fn isolation_flags() {
    let (_reg, w, r) = setup();
    let host = tempfile::tempdir_in("/var/tmp").unwrap();
    let rw = format!("{}:/data", host.path().display());
    w.wharf_ok(&[
        "run",
        "--rm",
        "-v",
        &rw,
        &r,
        "sh",
        "-c",
        "echo written > /data/f",
    ]);
    assert_eq!(
        std::fs::read_to_string(host.path().join("f")).unwrap(),
        "written\n"
    );
    let ro = format!("{}:/data:ro", host.path().display());
    let o = w.wharf(&["run", "--rm", "-v", &ro, &r, "sh", "-c", "echo x > /data/g"]);
    assert_ne!(o.status.code(), Some(0), ":ro allowed a write");
    assert!(!host.path().join("g").exists());
    let o = w.wharf(&["run", "--rm", "--read-only", &r, "touch", "/x"]);
    assert_ne!(o.status.code(), Some(0), "--read-only allowed a write");
    assert!(
        text(&o).1.to_lowercase().contains("read-only"),
        "{:?}",
        text(&o)
    );
    // Over the memory limit: killed (137).
    let o = w.wharf(&[
        "run",
        "--rm",
        "--memory",
        "16m",
        &r,
        "dd",
        "if=/dev/zero",
        "of=/dev/shm/fill",
        "bs=1M",
        "count=60",
    ]);
    assert_eq!(o.status.code(), Some(137), "{:?}", text(&o));
    // chown works by default, not with every capability dropped.
    w.wharf_ok(&["run", "--rm", &r, "chown", "1000", "/tmp"]);
    let o = w.wharf(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        &r,
        "chown",
        "1000",
        "/tmp",
    ]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "chown worked without capabilities"
    );
    // The default seccomp profile blocks unshare (a user namespace needs no capability, so
    // only seccomp stands in the way); unconfined and privileged allow it.
    let o = w.wharf(&["run", "--rm", &r, "busybox", "unshare", "-U", "true"]);
    assert_ne!(o.status.code(), Some(0), "default seccomp allowed unshare");
    w.wharf_ok(&[
        "run",
        "--rm",
        "--security-opt",
        "seccomp=unconfined",
        &r,
        "busybox",
        "unshare",
        "-U",
        "true",
    ]);
    w.wharf_ok(&[
        "run",
        "--rm",
        "--privileged",
        &r,
        "busybox",
        "unshare",
        "-U",
        "true",
    ]);
    // -u by name resolves in the image's /etc/passwd.
    assert_eq!(
        w.wharf_ok(&["run", "--rm", "-u", "user", &r, "id", "-u"])
            .trim(),
        "1000"
    );
    // Exec'd processes get the container's seccomp filter too (libcontainer's exec path leaves
    // it out; the shim puts it back), with and without no-new-privileges, and end with the
    // container's capabilities (the shim widens them to load the filter, then drops them).
    for (name, opts) in [
        ("filtered", vec![]),
        ("filtered-nnp", vec!["--security-opt", "no-new-privileges"]),
    ] {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend(opts);
        args.extend([r.as_str(), "sleep", "600"]);
        w.wharf_ok(&args);
        let o = w.wharf(&["exec", name, "busybox", "unshare", "-U", "true"]);
        assert_ne!(o.status.code(), Some(0), "{name}: exec escaped seccomp");
        let status = |path: &str| {
            w.wharf_ok(&[
                "exec",
                name,
                "grep",
                "-E",
                "^(Seccomp|CapEff|CapBnd|NoNewPrivs):",
                path,
            ])
        };
        let own = status("/proc/self/status");
        assert!(own.contains("Seccomp:\t2"), "{name}: {own}");
        assert_eq!(own, status("/proc/1/status"), "{name}");
        w.wharf_ok(&["rm", "-f", name]);
    }
}

/// --restart always: the container comes back after its process is killed from the host.
#[test]
fn restart_always() {
    let (_reg, w, r) = setup();
    w.wharf_ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--restart",
        "always",
        &r,
        "sleep",
        "1000",
    ]);
    let pid = inspect(&w, "keep")["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the container restarted", Duration::from_secs(20), || {
        let s = inspect(&w, "keep");
        s["State"]["Running"] == true && s["State"]["Pid"].as_u64().is_some_and(|p| p != pid)
    });
    // A user's stop is final.
    w.wharf_ok(&["stop", "-t", "1", "keep"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(inspect(&w, "keep")["State"]["Running"], false);
    w.wharf_ok(&["rm", "keep"]);
}

/// Bad input: one clear line, docker's exit codes, nothing half-created.
#[test]
fn bad_input_is_refused_cleanly() {
    let (reg, w, r) = setup();
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            vec![
                "run".into(),
                "--rm".into(),
                format!("{}/nope:latest", reg.host()),
                "true".into(),
            ],
            125,
            "not found",
        ),
        (
            vec![
                "run".into(),
                "-p".into(),
                "80".into(),
                r.clone(),
                "true".into(),
            ],
            125,
            "invalid -p",
        ),
        (
            vec![
                "run".into(),
                "-v".into(),
                "../data:/data".into(),
                r.clone(),
                "true".into(),
            ],
            125,
            "absolute",
        ),
        (
            vec!["run".into(), "--bogus".into(), r.clone()],
            125,
            "--bogus",
        ),
        (
            vec![
                "run".into(),
                "--rm".into(),
                r.clone(),
                "/no/such/cmd".into(),
            ],
            127,
            "",
        ),
    ];
    for (args, code, needle) in cases {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = w.wharf(&a);
        let (_, se) = text(&o);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {se}");
        assert!(se.to_lowercase().contains(needle), "{args:?}: {se}");
        assert!(
            se.trim().lines().count() <= 2,
            "one line (plus a hint): {se}"
        );
    }
    // Name in use.
    w.wharf_ok(&["create", "--name", "taken", &r, "true"]);
    let o = w.wharf(&["run", "--name", "taken", &r, "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(text(&o).1.contains("already in use"), "{:?}", text(&o));
    w.wharf_ok(&["rm", "taken"]);
    // Nothing half-created: no containers, no active snapshots, no netns.
    assert_eq!(w.wharf_ok(&["ps", "-a", "-q"]), "");
    let snaps = w.ctr_ok(&["snapshots", "ls"]);
    assert!(!snaps.lines().any(|l| l.contains("Active")), "{snaps}");
    assert!(
        std::fs::read_dir(w.state.join("netns/default"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}

/// The pull display in a real pseudo-terminal (script(1)): bars render and the screen ends
/// clean with the summary line.
#[test]
fn pull_progress_in_a_terminal() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let w = Wharfd::start_networked().unwrap();
    let r = format!("{}/busybox:latest", reg.host());
    let cmd = format!(
        "{} --address {} pull {r}",
        wharf_tests::bin("wharf").display(),
        w.socket.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("COLUMNS", "120")
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("pulling"), "{screen}");
    assert!(
        screen.contains("layer") || screen.contains("["),
        "bars rendered: {screen}"
    );
    let last = screen
        .trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(last.contains("pulled and unpacked"), "last line: {last:?}");
}

/// stdin, terminals, exec options, logs options, top, stats, events and namespaces.
#[test]
fn interactive_exec_logs_and_friends() {
    let (_reg, w, r) = setup();
    let wharf = wharf_tests::bin("wharf");
    // -i: stdin reaches the container.
    let mut child = std::process::Command::new(&wharf)
        .args(["run", "-i", "--rm", &r, "cat"])
        .env("WHARF_ADDRESS", &w.socket)
        .env("WHARF_DATA_ROOT", w.cli_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"through-stdin\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through-stdin\n");
    // -t in a real pseudo-terminal.
    let cmd = format!(
        "{} --address {} run -t --rm {r} sh -c 'tty && echo in-a-tty'",
        wharf.display(),
        w.socket.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("WHARF_DATA_ROOT", w.cli_root())
        .output()
        .unwrap();
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(
        screen.contains("/dev/pts/") && screen.contains("in-a-tty"),
        "{screen}"
    );

    // A long-running container with output on both streams.
    w.wharf_ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        &r,
        "sh",
        "-c",
        "echo oops >&2; sleep 0.3; for i in 1 2 3 4 5; do echo line$i; done; exec sleep 1000",
    ]);
    wait_until("output logged", Duration::from_secs(10), || {
        let o = w.wharf(&["logs", "talker"]);
        let (so, se) = text(&o);
        so.contains("line5") && se.contains("oops")
    });
    // Streams keep their own order (pipes are copied independently); the last 2 records here
    // are both stdout, the stderr line came first.
    let o = w.wharf(&["logs", "--tail", "2", "talker"]);
    let (so, se) = text(&o);
    assert_eq!(so, "line4\nline5\n");
    assert_eq!(se, "");
    let stamped = w.wharf_ok(&["logs", "-t", "--since", "1h", "talker"]);
    let first = stamped.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(" line1") && first.starts_with("20"),
        "{first}"
    );
    assert_eq!(
        w.wharf_ok(&[
            "logs",
            "--since",
            "2000-01-01T00:00:00Z",
            "--tail",
            "3",
            "talker"
        ]),
        "line3\nline4\nline5\n"
    );
    assert_eq!(
        w.wharf_ok(&["logs", "--since", "2099-01-01T00:00:00Z", "talker"]),
        ""
    );

    // exec with env, working dir and user by name.
    let got = w.wharf_ok(&[
        "exec",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "user",
        "talker",
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u)",
    ]);
    assert_eq!(got.trim(), "bar /tmp 1000");
    let o = w.wharf(&["exec", "talker", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    // A child left behind holds the output FIFO open: the exec still ends (the CLI reads its
    // output to EOF, which never comes here, so it stops a moment after the exit).
    let got = w.wharf_ok(&["exec", "talker", "sh", "-c", "echo left; sleep 300 &"]);
    assert_eq!(got, "left\n");
    let ps = w.wharf_ok(&["exec", "talker", "ps", "-o", "args"]);
    assert!(
        ps.contains("sleep 300"),
        "the child outlived the exec: {ps}"
    );
    let cmd = format!(
        "{} --address {} exec -it talker tty",
        wharf.display(),
        w.socket.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{:?}",
        out
    );

    // cp both ways, and a symlink in the container cannot lead the copy onto the host.
    let host = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(host.path().join("in.txt"), b"from-host\n").unwrap();
    let src = host.path().join("in.txt").display().to_string();
    w.wharf_ok(&["cp", &src, "talker:/tmp/"]);
    assert_eq!(
        w.wharf_ok(&["exec", "talker", "cat", "/tmp/in.txt"]),
        "from-host\n"
    );
    w.wharf_ok(&["exec", "talker", "ln", "-s", "/etc/hostname", "/tmp/escape"]);
    let out = host.path().join("out.txt").display().to_string();
    w.wharf_ok(&["cp", "talker:/tmp/escape", &out]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim(),
        "talker",
        "read the container's file"
    );

    let top = w.wharf_ok(&["top", "talker"]);
    assert!(top.contains("sleep 1000"), "{top}");
    let stats = w.wharf_ok(&["stats", "--no-stream", "talker"]);
    let row = stats
        .lines()
        .find(|l| l.starts_with("talker"))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains('%') && row.contains("B /"), "{stats}");
    let json = w.wharf_ok(&["ps", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(v["Name"], "talker");
    assert_eq!(
        w.wharf_ok(&["ps", "--format", "{{.Name}}:{{.State}}"])
            .trim(),
        "talker:running"
    );

    // Events: a subscriber sees a task start and its exit (of a run after its subscription is
    // in place, which the first run may beat; `subscribe` fails when none comes).
    let mut cmd = std::process::Command::new(&wharf);
    cmd.args(["events", "--format", "{{.Topic}}"])
        .env("WHARF_ADDRESS", &w.socket);
    let ev = wharf_tests::events::Subscriber::spawn(cmd);
    ev.subscribe(
        || {
            w.wharf_ok(&["run", "--rm", &r, "true"]);
        },
        |t| t.contains("/tasks/start") && t.contains("/tasks/exit"),
    );
    drop(ev);

    w.wharf_ok(&["namespace", "create", "team-a"]);
    assert!(w.wharf_ok(&["namespace", "ls"]).contains("team-a"));
    w.wharf_ok(&["namespace", "rm", "team-a"]);
    assert!(w
        .wharf_ok(&["system", "info"])
        .contains("Containers: 1 (running 1)"));
    w.wharf_ok(&["rm", "-f", "talker"]);
}

/// Volumes as docker makes them: a named one is made on first use, seeded from the image when
/// empty (owner and mode kept; `nocopy` leaves it empty), shared and kept; an image's `VOLUME`
/// and `-v /path` get an anonymous one, removed by `run --rm` and `rm -v`, left by `rm` for
/// `volume prune`; a volume in use is never removed.
#[test]
fn volumes_named_anonymous_and_declared_by_the_image() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    let extra = vec![
        images::dir("cfg", 0o755),
        images::file("cfg/app.conf", 0o644, b"conf\n"),
    ];
    let img = images::with_volumes(extra, &["/data"]).unwrap();
    images::push(&reg, "vols", "latest", &img).unwrap();
    let w = Wharfd::start().unwrap();
    let r = format!("{}/vols:latest", reg.host());
    w.wharf_ok(&["pull", "-q", &r]);
    let run = |args: &[&str]| {
        let mut a = vec!["run", "--network", "none"];
        a.extend_from_slice(args);
        w.wharf_ok(&a)
    };
    let ls = || w.wharf_ok(&["volume", "ls", "-q"]);

    // Named: made and seeded on first use, then shared, read-only where asked.
    let out = run(&[
        "--rm",
        "-v",
        "conf:/cfg",
        &r,
        "sh",
        "-c",
        "cat /cfg/app.conf; echo written > /cfg/new",
    ]);
    assert_eq!(out, "conf\n");
    let out = run(&[
        "--rm",
        "-v",
        "conf:/etc/other:ro",
        &r,
        "sh",
        "-c",
        "cat /etc/other/new /etc/other/app.conf; touch /etc/other/x 2>/dev/null || echo read-only",
    ]);
    assert_eq!(out, "written\nconf\nread-only\n");
    let out = run(&["--rm", "-v", "bare:/cfg:nocopy", &r, "ls", "-A", "/cfg"]);
    assert_eq!(out, "", "nocopy seeded the volume");
    // The image's /data volume of each --rm run went with its container.
    assert_eq!(ls(), "bare\nconf\n");
    let v: serde_json::Value =
        serde_json::from_str(&w.wharf_ok(&["volume", "inspect", "conf"])).unwrap();
    let mountpoint = v[0]["Mountpoint"].as_str().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&mountpoint).join("new")).unwrap(),
        "written\n"
    );

    // Declared by the image: an anonymous volume seeded with the image's /data.
    run(&["-d", "--name", "db", "-v", "conf:/cfg", &r, "sleep", "600"]);
    let out = w.wharf_ok(&[
        "exec",
        "db",
        "stat",
        "-c",
        "%u:%g %a",
        "/data",
        "/data/seed",
    ]);
    assert_eq!(out, "1000:1000 750\n1000:1000 640\n");
    w.wharf_ok(&["exec", "db", "sh", "-c", "echo mine > /data/row"]);
    let vols = ls();
    let anon: Vec<&str> = vols.lines().filter(|n| n.len() == 64).collect();
    assert_eq!(anon.len(), 1, "{vols}");
    let anon = anon[0].to_string();
    // In use: neither rm nor prune removes them.
    for name in [anon.as_str(), "conf"] {
        let o = w.wharf(&["volume", "rm", name]);
        let (_, err) = text(&o);
        assert!(
            !o.status.success() && err.contains("in use by container db"),
            "{err}"
        );
    }
    // prune -a takes only the unused one.
    assert_eq!(w.wharf_ok(&["volume", "prune", "-a"]), "bare\n");
    assert!(ls().contains(&anon) && ls().contains("conf"));
    // `rm` without -v leaves the anonymous volume, with its data, for prune.
    w.wharf_ok(&["rm", "-f", "db"]);
    assert!(ls().contains(&anon));
    assert_eq!(w.wharf_ok(&["volume", "prune"]).trim(), anon);
    assert_eq!(ls(), "conf\n");
    // What a crash left while making or removing a volume goes with the next prune, once old.
    let vdir = w.cli_root().join("_volumes/default");
    for d in [".new-crash", ".new-fresh"] {
        std::fs::create_dir(vdir.join(d)).unwrap();
    }
    let touched = std::process::Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(vdir.join(".new-crash"))
        .status()
        .unwrap();
    assert!(touched.success());
    w.wharf_ok(&["volume", "prune"]);
    assert!(!vdir.join(".new-crash").exists() && vdir.join(".new-fresh").exists());
    std::fs::remove_dir(vdir.join(".new-fresh")).unwrap();
    // `system df` counts them.
    let df = w.wharf_ok(&["system", "df"]);
    assert!(
        df.lines()
            .any(|l| l.starts_with("Volumes") && l.split_whitespace().nth(1) == Some("1")),
        "{df}"
    );
    // `rm -v` takes them with the container; `-v /path` is anonymous too.
    run(&["-d", "--name", "db2", "-v", "/scratch", &r, "sleep", "600"]);
    assert_eq!(ls().lines().filter(|n| n.len() == 64).count(), 2);
    w.wharf_ok(&["rm", "-f", "-v", "db2"]);
    assert_eq!(ls(), "conf\n");

    // Bad input: one clear line, nothing made.
    let o = w.wharf(&["run", "--network", "none", "-v", "../x:/x", &r, "true"]);
    assert_eq!(o.status.code(), Some(125), "{:?}", text(&o));
    let o = w.wharf(&["volume", "create", "../x"]);
    assert!(!o.status.success());
    let o = w.wharf(&["volume", "rm", "nosuch"]);
    assert!(
        text(&o).1.contains("no such volume: nosuch"),
        "{:?}",
        text(&o)
    );
    w.wharf_ok(&["volume", "rm", "-f", "nosuch"]);
    assert_eq!(w.wharf_ok(&["volume", "create", "made"]), "made\n");
    assert_eq!(ls(), "conf\nmade\n");
    // prune -a: every unused one.
    w.wharf_ok(&["volume", "prune", "-a"]);
    assert_eq!(ls(), "");
    assert!(!std::path::Path::new(&mountpoint).exists());
}
