//! Issue "Execution", interop: Debian's containerd 1.6 runs a container with wharf's shim
//! (`--runtime io.containerd.wharf.v2`, found in PATH as containerd looks shims up), and the
//! shim's events reach containerd. (wharfd running Debian's runc shim is covered in tasks.rs.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use wharf_tests::daemon::{ctr_at, kill_shims_of};
use wharf_tests::images;
use wharf_tests::registry::Registry;

/// A private containerd (its own root, state and socket; never the system service).
struct Containerd {
    child: Child,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Containerd {
    fn start() -> Containerd {
        let dir = tempfile::Builder::new()
            .prefix("ctd-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.toml"), "version = 2\n").unwrap();
        let socket = d.join("c.sock");
        // The shim next to wharfd (target/<profile>) comes first in containerd's PATH.
        let shim = wharf_tests::bin("containerd-shim-wharf-v2");
        let path = format!(
            "{}:{}",
            shim.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new("containerd")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--address")
            .arg(&socket)
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("log")).unwrap())
            .spawn()
            .expect("containerd (Debian package) is installed by scripts/setup.sh");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Containerd {
            child,
            _dir: dir,
            socket,
        }
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        ctr_at(&self.socket, args, None)
    }

    fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\ncontainerd log: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        kill_shims_of(&self.socket);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Unmount what a killed shim may have left under the temp dir.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            let base = self._dir.path().to_string_lossy().into_owned();
            let mut targets: Vec<&str> = mounts
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1))
                .filter(|t| t.starts_with(&base))
                .collect();
            targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
            for t in targets {
                let _ = nix::mount::umount2(Path::new(t), nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}

#[test]
fn containerd_runs_a_container_with_the_wharf_shim() {
    wharf_tests::require_root();
    let reg = Registry::start().unwrap();
    images::push(&reg, "busybox", "latest", &images::busybox().unwrap()).unwrap();
    let c = Containerd::start();
    let r = format!("{}/busybox:latest", reg.host());
    c.ctr_ok(&["-n", "interop", "images", "pull", "--plain-http", &r]);
    let rt = "io.containerd.wharf.v2";
    let out = c.ctr_ok(&[
        "-n",
        "interop",
        "run",
        "--runtime",
        rt,
        "--rm",
        &r,
        "i1",
        "echo",
        "hello",
    ]);
    assert_eq!(out.trim(), "hello", "{}", c.log());
    let out = c.ctr(&[
        "-n",
        "interop",
        "run",
        "--runtime",
        rt,
        "--rm",
        &r,
        "i2",
        "sh",
        "-c",
        "exit 42",
    ]);
    assert_eq!(out.status.code(), Some(42));

    c.ctr_ok(&[
        "-n",
        "interop",
        "run",
        "--runtime",
        rt,
        "-d",
        &r,
        "i3",
        "sleep",
        "1000",
    ]);
    let ls = c.ctr_ok(&["-n", "interop", "tasks", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("i3") && l.contains("RUNNING")),
        "{ls}"
    );
    let out = c.ctr_ok(&[
        "-n",
        "interop",
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "i3",
        "echo",
        "in",
    ]);
    assert_eq!(out.trim(), "in");
    c.ctr_ok(&["-n", "interop", "tasks", "kill", "-s", "SIGKILL", "i3"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ls = c.ctr_ok(&["-n", "interop", "tasks", "ls"]);
        if ls
            .lines()
            .any(|l| l.starts_with("i3") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "{ls}");
        std::thread::sleep(Duration::from_millis(50));
    }
    c.ctr_ok(&["-n", "interop", "tasks", "rm", "i3"]);
    c.ctr_ok(&["-n", "interop", "containers", "rm", "i3"]);
    assert!(c
        .ctr_ok(&["-n", "interop", "tasks", "ls", "-q"])
        .trim()
        .is_empty());
}
