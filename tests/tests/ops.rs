//! Issue "Operations and hardening": the Prometheus endpoint of a real wharfd (scraped while a
//! container runs, and absent when not configured) and `wharfd config default|dump`.

use std::collections::HashMap;
use std::process::Command;

use wharf_tests::daemon::Wharfd;
use wharf_tests::images;
use wharf_tests::registry::Registry;

/// One sample of a scrape: name, labels, value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

/// A small parser of the text exposition format: `# HELP`/`# TYPE` lines are returned as
/// (name, type) pairs, samples with their labels unescaped.
fn parse(text: &str) -> (Vec<(String, String)>, Vec<Sample>) {
    let mut types = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut f = rest.split(' ');
            let (n, t) = (f.next().unwrap(), f.next().unwrap());
            types.push((n.to_string(), t.to_string()));
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("bad sample line {line:?}"),
        };
        let mut labels = HashMap::new();
        let mut rest = rest;
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices();
            loop {
                // name="value",
                let mut key = String::new();
                let mut end = None;
                for (i, c) in chars.by_ref() {
                    match c {
                        '=' => break,
                        '}' => {
                            end = Some(i);
                            break;
                        }
                        ',' => {}
                        c => key.push(c),
                    }
                }
                if let Some(i) = end {
                    rest = &r[i + 1..];
                    break;
                }
                assert_eq!(chars.next().map(|c| c.1), Some('"'), "{line}");
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|c| c.1) {
                            Some('n') => value.push('\n'),
                            Some(c) => value.push(c),
                            None => panic!("{line}"),
                        },
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
            }
        }
        let v = rest.trim();
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    (types, samples)
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TCP sockets process `pid` listens on (its socket inodes in LISTEN state in /proc/net/tcp*).
fn tcp_listeners(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(String::from)
        })
        .collect();
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, st (0A = LISTEN), inode
            if f.get(3) == Some(&"0A") && f.get(9).is_some_and(|i| inodes.iter().any(|x| x == i)) {
                out.push(f[1].to_string());
            }
        }
    }
    out
}

fn get(url: &str) -> (u16, String, String) {
    match ureq::get(url).call() {
        Ok(r) => {
            let ct = r.header("content-type").unwrap_or("").to_string();
            (r.status(), ct, r.into_string().unwrap())
        }
        Err(ureq::Error::Status(code, r)) => (code, String::new(), r.into_string().unwrap()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

const WHARF: &str = "io.containerd.wharf.v2";

#[test]
fn metrics_endpoint_reports_grpc_tasks_stores_and_gc() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let port = free_port();
    let w =
        Wharfd::start_with_config(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n")).unwrap();
    let image = format!("{}/busybox:latest", reg.host());
    w.ctr_ok(&["-n", "test", "images", "pull", "--plain-http", &image]);
    w.ctr_ok(&[
        "-n",
        "test",
        "run",
        "-d",
        "--runtime",
        WHARF,
        &image,
        "m1",
        "sleep",
        "100",
    ]);

    w.ctr_err(&["-n", "test", "containers", "info", "nosuch"]);

    let url = format!("http://127.0.0.1:{port}/metrics");
    let (status, content_type, text) = get(&url);
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let (types, samples) = parse(&text);
    let typed = |n: &str| types.iter().find(|t| t.0 == n).map(|t| t.1.as_str());
    assert_eq!(
        typed("wharfd_grpc_requests_total"),
        Some("counter"),
        "{text}"
    );
    assert_eq!(
        typed("wharfd_grpc_request_duration_seconds"),
        Some("histogram")
    );
    assert_eq!(typed("wharfd_task_memory_usage_bytes"), Some("gauge"));

    // gRPC: ctr's Tasks/Create went through, counted and timed.
    let create = [
        ("method", "/containerd.services.tasks.v1.Tasks/Create"),
        ("code", "OK"),
    ];
    let n = value(&samples, "wharfd_grpc_requests_total", &create).unwrap_or(0.0);
    assert!(n >= 1.0, "Tasks/Create not counted:\n{text}");
    let timed = value(
        &samples,
        "wharfd_grpc_request_duration_seconds_count",
        &create,
    );
    assert_eq!(timed, Some(n), "{text}");
    let inf = [create[0], create[1], ("le", "+Inf")];
    assert_eq!(
        value(
            &samples,
            "wharfd_grpc_request_duration_seconds_bucket",
            &inf
        ),
        Some(n)
    );
    // Failed calls, by their code.
    let missing = [
        (
            "method",
            "/containerd.services.containers.v1.Containers/Get",
        ),
        ("code", "NotFound"),
    ];
    assert!(
        value(&samples, "wharfd_grpc_requests_total", &missing).unwrap_or(0.0) >= 1.0,
        "{text}"
    );

    // The task's cgroup, through its shim's Stats.
    let task = [("namespace", "test"), ("id", "m1")];
    let mem = value(&samples, "wharfd_task_memory_usage_bytes", &task);
    assert!(
        mem.is_some_and(|m| m > 0.0),
        "memory of m1: {mem:?}\n{text}"
    );
    assert!(value(&samples, "wharfd_task_pids", &task).is_some_and(|p| p >= 1.0));
    assert!(value(&samples, "wharfd_task_cpu_usage_seconds_total", &task).is_some());
    assert!(value(&samples, "wharfd_task_memory_limit_bytes", &task).is_some_and(|m| m > 0.0));
    assert_eq!(
        value(&samples, "wharfd_task_oom_events_total", &task),
        Some(0.0)
    );
    assert_eq!(value(&samples, "wharfd_shims", &[]), Some(1.0), "{text}");

    // The stores and GC.
    let bytes = value(&samples, "wharfd_content_bytes", &[]).unwrap_or(0.0);
    assert!(bytes > 0.0, "{text}");
    // Index or manifest, config, layer.
    assert!(value(&samples, "wharfd_content_blobs", &[]).unwrap_or(0.0) >= 3.0);
    let snaps: f64 = samples
        .iter()
        .filter(|s| s.name == "wharfd_snapshots")
        .map(|s| s.value)
        .sum();
    assert!(snaps >= 2.0, "the layer and m1's rootfs: {text}");
    assert!(value(&samples, "wharfd_gc_runs_total", &[]).unwrap_or(0.0) >= 1.0);
    assert!(value(&samples, "wharfd_gc_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0);

    // Counters only grow: a second scrape sees the first one's calls and more.
    w.ctr_ok(&["-n", "test", "tasks", "ls"]);
    let (_, _, text2) = get(&url);
    let (_, samples2) = parse(&text2);
    let list = [
        ("method", "/containerd.services.tasks.v1.Tasks/List"),
        ("code", "OK"),
    ];
    assert!(
        value(&samples2, "wharfd_grpc_requests_total", &list).unwrap_or(0.0)
            > value(&samples, "wharfd_grpc_requests_total", &list).unwrap_or(0.0)
    );

    // Only /metrics, only reads.
    assert_eq!(get(&format!("http://127.0.0.1:{port}/")).0, 404);
    let post = ureq::post(&url).send_string("");
    assert!(matches!(post, Err(ureq::Error::Status(405, _))), "{post:?}");
    assert!(!tcp_listeners(w.pid().unwrap()).is_empty());

    w.ctr_ok(&["-n", "test", "tasks", "kill", "-s", "SIGKILL", "m1"]);
}

#[test]
fn no_metrics_section_nothing_listens() {
    wharf_tests::require_root();
    let w = Wharfd::start().unwrap();
    w.ctr_ok(&["version"]);
    // The one listener is CRI's streaming server (as containerd's); it serves no metrics.
    let listeners = tcp_listeners(w.pid().unwrap());
    assert!(listeners.len() <= 1, "{listeners:?}");
    for l in &listeners {
        let port = u16::from_str_radix(l.rsplit(':').next().unwrap(), 16).unwrap();
        assert_ne!(get(&format!("http://127.0.0.1:{port}/metrics")).0, 200);
    }
}

#[test]
fn metrics_address_in_use_is_an_error() {
    wharf_tests::require_root();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = Wharfd::start_with_config(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"))
        .err()
        .expect("wharfd should not start on a taken metrics address");
    assert!(err.to_string().contains("metrics address"), "{err:#}");
}

fn wharfd(args: &[&str]) -> std::process::Output {
    Command::new(wharf_tests::bin("wharfd"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn config_default_parses_back_and_dump_merges_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = wharfd(&["config", "default"]);
    assert!(out.status.success(), "{out:?}");
    let default = String::from_utf8(out.stdout).unwrap();
    for section in [
        "[grpc]",
        "[registry]",
        "[runtime]",
        "[network]",
        "[cri]",
        "[metrics]",
    ] {
        assert!(default.contains(section), "{section} missing:\n{default}");
    }
    assert!(default.contains("\n# "), "no comments:\n{default}");

    // The default file means the same as no file at all.
    let file = dir.path().join("default.toml");
    std::fs::write(&file, &default).unwrap();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let dump = |config: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["--config", config.to_str().unwrap(), "config", "dump"];
        args.extend_from_slice(extra);
        let out = wharfd(&args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let from_default = dump(&file, &[]);
    assert_eq!(from_default, dump(&empty, &[]));
    assert!(
        from_default.contains("root = \"/var/lib/wharf\""),
        "{from_default}"
    );

    // Flags over the file over the defaults; flags after the subcommand too.
    std::fs::write(
        &file,
        "state = \"/s\"\n[metrics]\naddress = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let merged = dump(&file, &["--root", "/r", "--log-level", "debug"]);
    for want in [
        "root = \"/r\"",
        "state = \"/s\"",
        "log_level = \"debug\"",
        "address = \"127.0.0.1:9\"",
        "address = \"/run/wharf/wharfd.sock\"",
    ] {
        assert!(merged.contains(want), "{want} missing:\n{merged}");
    }

    // An unknown key is an error naming its path.
    std::fs::write(&file, "[runtime]\nshimz = {}\n").unwrap();
    let out = wharfd(&["--config", file.to_str().unwrap(), "config", "dump"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runtime.shimz"), "{err}");
}
