//! What runs the container: libcontainer in this process (the default), or a runc-compatible
//! binary's command line when the runtime options name one (`BinaryName`, as ctr's
//! `--runc-binary` and containerd's runc options set it).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;

use crate::exec_filter::{self, ExecFilter};

/// The stdio a new process gets: its three fds, or a console socket for a terminal.
#[derive(Default)]
pub struct ProcIo {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    pub console_socket: Option<PathBuf>,
}

pub enum Engine {
    Builtin(Builtin),
    Runc(Runc),
}

pub struct Builtin {
    pub id: String,
    pub root: PathBuf,
    pub container: Option<Container>,
}

pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
    pub id: String,
    pub systemd_cgroup: bool,
}

/// libcontainer's default executor, after putting every signal back to its default action:
/// the shim ignores SIGPIPE (and inherits other ignored signals), and ignored signals survive
/// execve, so without this a container's `yes | head -1` would see EPIPE instead of dying of
/// SIGPIPE as it does under runc. For an exec'd process it also loads the container's seccomp
/// filter, which libcontainer's exec path leaves out (see `exec_filter`).
#[derive(Clone, Default)]
struct Workload {
    filter: Option<ExecFilter>,
}

impl libcontainer::workload::Executor for Workload {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        for sig in 1..libc::SIGRTMIN() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // SAFETY: resetting dispositions in the single-threaded container init, just
                // before it execs the workload.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                }
            }
        }
        if let Some(f) = &self.filter {
            exec_filter::apply(f).map_err(libcontainer::workload::ExecutorError::Other)?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// Name of the file in the runtime root recording the runc binary (for `delete` after a crash).
pub const RUNC_BINARY_FILE: &str = "runc-binary";

fn full_error(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !msg.contains(&part) {
            msg.push_str(": ");
            msg.push_str(&part);
        }
        source = s.source();
    }
    msg
}

impl Builtin {
    fn builder(&self, io: ProcIo, workload: Workload) -> Result<ContainerBuilder, String> {
        let mut b = ContainerBuilder::new(self.id.clone(), SyscallType::default())
            .with_executor(workload)
            .with_root_path(&self.root)
            .map_err(|e| format!("runtime root: {}", full_error(&e)))?;
        if let Some(p) = io.console_socket {
            b = b.with_console_socket(Some(p));
        }
        if let Some(fd) = io.stdin {
            b = b.with_stdin(fd);
        }
        if let Some(fd) = io.stdout {
            b = b.with_stdout(fd);
        }
        if let Some(fd) = io.stderr {
            b = b.with_stderr(fd);
        }
        Ok(b)
    }
}

impl Runc {
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root").arg(&self.root);
        c.arg("--log").arg(self.root.join("runc.log"));
        c.arg("--log-format").arg("json");
        if self.systemd_cgroup {
            c.arg("--systemd-cgroup");
        }
        c
    }

    /// Runs a runc command; its error is the last message of runc's JSON log.
    fn run(&self, mut c: Command, what: &str) -> Result<(), String> {
        let log = self.root.join("runc.log");
        let _ = std::fs::remove_file(&log);
        let out = c
            .output()
            .map_err(|e| format!("run {} {what}: {e}", self.binary.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let logged = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("msg").and_then(|m| m.as_str()).map(String::from))
            .next_back();
        let msg = logged.unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        Err(format!("{} {what} failed: {msg}", self.binary.display()))
    }

    fn with_io(c: &mut Command, io: ProcIo) {
        c.stdin(io.stdin.map_or_else(Stdio::null, Stdio::from));
        c.stdout(io.stdout.map_or_else(Stdio::null, Stdio::from));
        c.stderr(io.stderr.map_or_else(Stdio::null, Stdio::from));
        if let Some(p) = io.console_socket {
            c.arg("--console-socket").arg(p);
        }
    }

    fn read_pid(file: &Path) -> Result<i32, String> {
        let s = std::fs::read_to_string(file).map_err(|e| format!("read pid file: {e}"))?;
        let _ = std::fs::remove_file(file);
        s.trim().parse().map_err(|e| format!("pid file {s:?}: {e}"))
    }
}

impl Engine {
    /// Creates the container from the bundle; returns the init's pid.
    pub fn create(&mut self, bundle: &Path, io: ProcIo) -> Result<i32, String> {
        match self {
            Engine::Builtin(b) => {
                let c = b
                    .builder(io, Workload::default())?
                    .as_init(bundle)
                    .with_systemd(false)
                    .with_detach(true)
                    .build()
                    .map_err(|e| full_error(&e))?;
                let pid = c.pid().map(|p| p.as_raw()).unwrap_or(0);
                b.container = Some(c);
                Ok(pid)
            }
            Engine::Runc(r) => {
                std::fs::create_dir_all(&r.root).map_err(|e| format!("runc root: {e}"))?;
                let _ = std::fs::write(
                    r.root.join(RUNC_BINARY_FILE),
                    r.binary.as_os_str().as_encoded_bytes(),
                );
                let pid_file = r.root.join("init.pid");
                let mut c = r.cmd();
                c.arg("create").arg("--bundle").arg(bundle);
                c.arg("--pid-file").arg(&pid_file);
                Runc::with_io(&mut c, io);
                c.arg(&r.id);
                r.run(c, "create")?;
                Runc::read_pid(&pid_file)
            }
        }
    }

    pub fn start(&mut self) -> Result<(), String> {
        match self {
            Engine::Builtin(b) => b
                .container
                .as_mut()
                .ok_or("no container")?
                .start()
                .map_err(|e| full_error(&e)),
            Engine::Runc(r) => {
                let mut c = r.cmd();
                c.arg("start").arg(&r.id);
                r.run(c, "start")
            }
        }
    }

    pub fn kill(&mut self, signal: i32, all: bool) -> Result<(), String> {
        match self {
            Engine::Builtin(b) => {
                let sig =
                    libcontainer::signal::Signal::try_from(signal).map_err(|e| e.to_string())?;
                b.container
                    .as_mut()
                    .ok_or("no container")?
                    .kill(sig, all)
                    .map_err(|e| full_error(&e))
            }
            Engine::Runc(r) => {
                let mut c = r.cmd();
                c.arg("kill");
                if all {
                    c.arg("--all");
                }
                c.arg(&r.id).arg(signal.to_string());
                r.run(c, "kill")
            }
        }
    }

    pub fn pause(&mut self) -> Result<(), String> {
        match self {
            Engine::Builtin(b) => b
                .container
                .as_mut()
                .ok_or("no container")?
                .pause()
                .map_err(|e| full_error(&e)),
            Engine::Runc(r) => {
                let mut c = r.cmd();
                c.arg("pause").arg(&r.id);
                r.run(c, "pause")
            }
        }
    }

    pub fn resume(&mut self) -> Result<(), String> {
        match self {
            Engine::Builtin(b) => b
                .container
                .as_mut()
                .ok_or("no container")?
                .resume()
                .map_err(|e| full_error(&e)),
            Engine::Runc(r) => {
                let mut c = r.cmd();
                c.arg("resume").arg(&r.id);
                r.run(c, "resume")
            }
        }
    }

    /// Records that the init exited, so later calls see a stopped container.
    pub fn mark_stopped(&mut self) {
        if let Engine::Builtin(b) = self {
            if let Some(c) = b.container.as_mut() {
                c.set_status(libcontainer::container::ContainerStatus::Stopped);
                let _ = c.save();
            }
        }
    }

    /// Kills what is left and removes the runtime's state and the container's cgroup.
    pub fn delete(&mut self) -> Result<(), String> {
        match self {
            Engine::Builtin(b) => match b.container.take() {
                Some(mut c) => c.delete(true).map_err(|e| full_error(&e)),
                None => Ok(()),
            },
            Engine::Runc(r) => {
                let mut c = r.cmd();
                c.arg("delete").arg("--force").arg(&r.id);
                r.run(c, "delete")
            }
        }
    }

    /// Starts a process in the running container from an OCI Process spec file.
    pub fn exec(&mut self, spec: &Path, io: ProcIo) -> Result<i32, String> {
        match self {
            Engine::Builtin(b) => {
                let bundle = b
                    .container
                    .as_ref()
                    .map(|c| c.bundle().to_path_buf())
                    .ok_or("the container is not created")?;
                let (filter, process) = exec_filter::plan(&bundle, spec)?;
                let r = b
                    .builder(io, Workload { filter })?
                    .as_tenant()
                    .with_process(Some(&process))
                    .with_detach(true)
                    .build()
                    .map(|p| p.as_raw())
                    .map_err(|e| full_error(&e));
                if process != spec {
                    let _ = std::fs::remove_file(&process);
                }
                r
            }
            Engine::Runc(r) => {
                let pid_file = r.root.join(format!(
                    "exec-{}.pid",
                    spec.file_stem().and_then(|s| s.to_str()).unwrap_or("p")
                ));
                let mut c = r.cmd();
                c.arg("exec").arg("--detach").arg("--process").arg(spec);
                c.arg("--pid-file").arg(&pid_file);
                Runc::with_io(&mut c, io);
                c.arg(&r.id);
                r.run(c, "exec")?;
                Runc::read_pid(&pid_file)
            }
        }
    }
}

/// Cleans up after a shim that died: the container's runtime state, whichever engine ran it.
pub fn delete_after_crash(root: &Path, id: &str) -> Option<i32> {
    if let Ok(binary) = std::fs::read(root.join(RUNC_BINARY_FILE)) {
        let r = Runc {
            binary: PathBuf::from(String::from_utf8_lossy(&binary).into_owned()),
            root: root.to_path_buf(),
            id: id.to_string(),
            systemd_cgroup: false,
        };
        let mut c = r.cmd();
        c.arg("delete").arg("--force").arg(id);
        if let Err(e) = r.run(c, "delete") {
            eprintln!("{e}");
        }
        return None;
    }
    let mut c = Container::load(root.join(id)).ok()?;
    let pid = c.pid().map(|p| p.as_raw());
    if let Err(e) = c.delete(true) {
        eprintln!("delete container {id}: {}", full_error(&e));
    }
    pid
}
