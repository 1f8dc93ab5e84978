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
}

impl Wharfd {
    /// Starts wharfd on fresh directories (under /var/tmp: overlayfs needs a real filesystem).
    pub fn start() -> Result<Wharfd> {
        let dir = tempfile::Builder::new()
            .prefix("wharf-test-")
            .tempdir_in("/var/tmp")?;
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let socket = dir.path().join("state/wharfd.sock");
        let mut w = Wharfd {
            child: None,
            dir,
            root,
            state,
            socket,
            gc_runs_before: 0,
        };
        w.spawn()?;
        Ok(w)
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
        let child = Command::new(crate::bin("wharfd"))
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
        ctr_at(&self.socket, args, Some(input))
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

pub fn ctr_at(socket: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut c = Command::new("ctr");
    c.arg("--address").arg(socket).args(args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    if input.is_some() {
        c.stdin(Stdio::piped());
    } else {
        c.stdin(Stdio::null());
    }
    let mut child = c.spawn().expect("run ctr (Debian package containerd)");
    if let Some(data) = input {
        use std::io::Write;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(data);
        }
    }
    child.wait_with_output().expect("wait for ctr")
}

impl Drop for Wharfd {
    fn drop(&mut self) {
        self.kill();
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
