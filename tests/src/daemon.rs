//! A wharfd process on a temporary root, state and socket, and Debian's `ctr` pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Wharfd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    pub socket: PathBuf,
    gc_runs_before: usize,
    /// The test network's bridge (deleted on drop) when started with [`Wharfd::start_networked`].
    pub bridge: Option<String>,
    /// Run in a mount namespace of its own whose /sys/fs/cgroup is the cgroup2 hierarchy
    /// ([`Wharfd::start_unified`]).
    unified: bool,
}

impl Wharfd {
    /// Starts wharfd on fresh directories (under /var/tmp: overlayfs needs a real filesystem).
    pub fn start() -> Result<Wharfd> {
        Self::start_with_config("")
    }

    /// Starts wharfd with `config` as its TOML configuration file; `{dir}` in it stands for the
    /// test's temporary directory (e.g. `cni_conf_dir = "{dir}/net.d"`).
    pub fn start_with_config(config: &str) -> Result<Wharfd> {
        let mut w = Self::unstarted(config)?;
        w.spawn()?;
        Ok(w)
    }

    /// Makes the directories and configuration without starting wharfd (start it with
    /// [`spawn`](Self::spawn)), e.g. to mount a small filesystem as its root first.
    pub fn unstarted(config: &str) -> Result<Wharfd> {
        let dir = tempfile::Builder::new()
            .prefix("wharf-test-")
            .tempdir_in("/var/tmp")?;
        std::fs::write(
            dir.path().join("config.toml"),
            config.replace("{dir}", &dir.path().to_string_lossy()),
        )?;
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let socket = dir.path().join("state/wharfd.sock");
        Ok(Wharfd {
            child: None,
            dir,
            root,
            state,
            socket,
            gc_runs_before: 0,
            bridge: None,
            unified: false,
        })
    }

    /// Starts wharfd as on a cgroup v2 (unified) host, here where the host is hybrid: in a
    /// mount namespace of its own (its shims inherit it) whose /sys/fs/cgroup is the cgroup2
    /// hierarchy, the one the host shows at /sys/fs/cgroup/unified. That hierarchy has no
    /// memory, cpu or pids controller here (v1 holds them), so only what v2 does without them
    /// can be checked: placement, freezing, cpu.stat, pids and removal.
    pub fn start_unified() -> Result<Wharfd> {
        let mut w = Self::unstarted("")?;
        w.unified = true;
        w.spawn()?;
        Ok(w)
    }

    /// Starts wharfd with a network of its own for CLI-run containers: a unique bridge and
    /// /24 subnet, so tests running side by side never share addresses.
    pub fn start_networked() -> Result<Wharfd> {
        let dir = tempfile::Builder::new()
            .prefix("wharf-test-")
            .tempdir_in("/var/tmp")?;
        let r: u32 = rand_u32();
        let bridge = format!("wt{:06x}", r & 0xff_ffff);
        let subnet = format!("10.{}.{}.0/24", 100 + (r >> 24) % 100, (r >> 8) % 256);
        std::fs::write(
            dir.path().join("config.toml"),
            format!(
                "[network]\nname = \"{bridge}\"\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\n"
            ),
        )?;
        let mut w = Wharfd {
            child: None,
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            socket: dir.path().join("state/wharfd.sock"),
            dir,
            gc_runs_before: 0,
            bridge: Some(bridge),
            unified: false,
        };
        w.spawn()?;
        Ok(w)
    }

    /// Where the CLI run by [`Wharfd::wharf`] keeps its logs.
    pub fn cli_root(&self) -> PathBuf {
        self.dir.path().join("cli")
    }

    /// Runs the `wharf` CLI against this daemon (namespace `default`).
    pub fn wharf(&self, args: &[&str]) -> Output {
        Command::new(crate::bin("wharf"))
            .args(args)
            .env("WHARF_ADDRESS", &self.socket)
            .env("WHARF_DATA_ROOT", self.cli_root())
            .env_remove("WHARF_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("run wharf")
    }

    /// Runs the `wharf` CLI against this daemon in namespace `ns`.
    pub fn wharf_in(&self, ns: &str, args: &[&str]) -> Output {
        Command::new(crate::bin("wharf"))
            .args(args)
            .env("WHARF_ADDRESS", &self.socket)
            .env("WHARF_DATA_ROOT", self.cli_root())
            .env("WHARF_NAMESPACE", ns)
            .stdin(Stdio::null())
            .output()
            .expect("run wharf")
    }

    /// Runs `wharf ARGS` in namespace `ns`, asserting success; returns stdout.
    pub fn wharf_in_ok(&self, ns: &str, args: &[&str]) -> String {
        let out = self.wharf_in(ns, args);
        assert!(
            out.status.success(),
            "wharf -n {ns} {args:?} failed ({}): {}{}\n--- wharfd log tail ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `wharf ARGS`, asserting success; returns stdout.
    pub fn wharf_ok(&self, args: &[&str]) -> String {
        let out = self.wharf(args);
        assert!(
            out.status.success(),
            "wharf {args:?} failed ({}): {}{}\n--- wharfd log tail ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts wharfd again on the same directories (after [`kill`](Self::kill) or a stop).
    pub fn spawn(&mut self) -> Result<()> {
        self.gc_runs_before = self.log().matches("gc done").count();
        if !self.dir.path().join("config.toml").exists() {
            std::fs::write(self.dir.path().join("config.toml"), "")?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("wharfd.log"))?;
        let mut cmd = Command::new(crate::bin("wharfd"));
        if self.unified {
            use std::os::unix::process::CommandExt;
            // SAFETY: between fork and exec the hook only makes system calls.
            unsafe { cmd.pre_exec(cgroup2_at_sys_fs_cgroup) };
        }
        let child = cmd
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--address")
            .arg(&self.socket)
            .arg("--config")
            .arg(self.dir.path().join("config.toml"))
            .arg("--log-level")
            .arg("info,wharfd=debug,wharf_core=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn wharfd")?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// The directory of a cgroup (a path as in /proc/PID/cgroup) as the test sees it: under
    /// /sys/fs/cgroup/unified for a [`Wharfd::start_unified`] daemon.
    pub fn unified_cgroup_dir(&self, cgroup: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup/unified").join(cgroup.trim_start_matches('/'))
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!("wharfd exited with {st}: {}", self.log());
                }
            }
            // Ready once it answers and its start-up collection ran (tests then never race it).
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
                && self.log().matches("gc done").count() > self.gc_runs_before
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!(
            "wharfd did not answer on {}: {}",
            self.socket.display(),
            self.log()
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("wharfd did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wharfd.log")).unwrap_or_default()
    }

    /// Runs `ctr --address <socket> ARGS`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        ctr_at(&self.socket, args, None)
    }

    /// Runs ctr with `input` on stdin.
    pub fn ctr_input(&self, args: &[&str], input: &[u8]) -> Output {
        ctr_at_with(&self.socket, args, Some(input), Duration::ZERO)
    }

    /// Runs ctr and writes `input` to its stdin only after `delay`. `ctr run` (containerd 1.6
    /// too) only closes the task's stdin at EOF if the EOF comes after the task was created;
    /// input piped in at once leaves `cat` waiting forever, against containerd as against wharf.
    pub fn ctr_input_after(&self, args: &[&str], input: &[u8], delay: Duration) -> Output {
        ctr_at_with(&self.socket, args, Some(input), delay)
    }

    /// Runs ctr and fails the test with its output unless it succeeded; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}):\nstdout: {}\nstderr: {}\nwharfd log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr -n NS tasks exec --exec-id EXEC_ID ID ARGV…`, asserting success; its stdout.
    pub fn exec_ok(&self, ns: &str, id: &str, exec_id: &str, argv: &[&str]) -> String {
        let mut args = vec!["-n", ns, "tasks", "exec", "--exec-id", exec_id, id];
        args.extend_from_slice(argv);
        self.ctr_ok(&args)
    }

    /// Runs ctr expecting failure; returns stderr.
    pub fn ctr_err(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            !out.status.success(),
            "ctr {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.root
            .join("io.containerd.content.v1.content/blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `pre_exec` hook: a private mount namespace with cgroup2 mounted at /sys/fs/cgroup.
fn cgroup2_at_sys_fs_cgroup() -> std::io::Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )?;
    mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        MsFlags::empty(),
        None::<&str>,
    )?;
    Ok(())
}

pub fn ctr_at(socket: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    ctr_at_with(socket, args, input, Duration::ZERO)
}

fn ctr_at_with(socket: &Path, args: &[&str], input: Option<&[u8]>, delay: Duration) -> Output {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(socket).args(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        c.stdin(Stdio::piped());
    } else {
        c.stdin(Stdio::null());
    }
    let mut child = c.spawn().expect("run ctr (Debian package containerd)");
    let writer = match (input, child.stdin.take()) {
        (Some(data), Some(mut stdin)) => {
            let data = data.to_vec();
            Some(std::thread::spawn(move || {
                use std::io::Write;
                std::thread::sleep(delay);
                let _ = stdin.write_all(&data);
            }))
        }
        _ => None,
    };
    // A hung call fails the test with ctr's output instead of hanging the suite.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + CTR_TIMEOUT;
            while std::time::Instant::now() < deadline {
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("ctr {pid} still running after {CTR_TIMEOUT:?}: killed");
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        })
    };
    let out = child.wait_with_output().expect("wait for ctr");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watchdog.join();
    if let Some(w) = writer {
        let _ = w.join();
    }
    out
}

/// Longest any single ctr call may take in a test.
const CTR_TIMEOUT: Duration = Duration::from_secs(90);

/// Kills the shims serving `socket` with everything they started, and removes their runc state
/// (Debian's runc shim keeps it under /run/containerd/runc/<ns>/<id>, shared between daemons),
/// so a failed test leaves nothing running that a later run would collide with.
pub fn kill_shims_of(socket: &Path) {
    let procs: Vec<(i32, i32, Vec<String>)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let ppid: i32 = stat
                .rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let args = cmd
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            Some((pid, ppid, args))
        })
        .collect();
    let sock = socket.to_string_lossy();
    let arg = |args: &[String], flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    for (pid, _, args) in procs.iter().filter(|(_, _, a)| {
        a.first().is_some_and(|b| b.contains("containerd-shim"))
            && arg(a, "-address").as_deref() == Some(&*sock)
    }) {
        let mut tree = vec![*pid];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
            i += 1;
        }
        for p in tree.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let (Some(ns), Some(id)) = (arg(args, "-namespace"), arg(args, "-id")) {
            let _ = Command::new("runc")
                .args([
                    "--root",
                    &format!("/run/containerd/runc/{ns}"),
                    "delete",
                    "-f",
                    &id,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    u32::from_le_bytes(b) ^ std::process::id()
}

impl Drop for Wharfd {
    fn drop(&mut self) {
        self.kill();
        kill_shims_of(&self.socket);
        if let Some(b) = &self.bridge {
            let _ = Command::new("ip")
                .args(["link", "del", b])
                .stderr(Stdio::null())
                .status();
        }
        // Unmount anything a failed test left under our directory before it is removed.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") {
            let base = self.dir.path().to_string_lossy().to_string();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split(' ').nth(4))
                .filter(|t| t.starts_with(&base))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = nix::mount::umount2(t, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Wharfd {
    /// A gRPC channel to wharfd, for calls ctr does not make (exact status codes, raw requests).
    pub async fn channel(&self) -> Result<tonic::transport::Channel> {
        Ok(containerd_client::connect(&self.socket).await?)
    }
}

/// Wraps a message in a request carrying the `containerd-namespace` header.
pub fn with_ns<T>(ns: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut().insert("containerd-namespace", v);
    }
    r
}
