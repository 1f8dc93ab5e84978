//! The task service (`containerd.task.v2.Task` / `v3`): the shim's containers (one, or the
//! containers of a pod: see `wharf_core::spec::shim_group`), each with its init process and
//! the processes exec'd into it, run by libcontainer in this process or by a runc-compatible
//! binary (see `engine`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use containerd_shim_protos::api::{self, Status};
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use oci_spec::runtime::Spec;
use ttrpc::asynchronous::TtrpcContext;
use ttrpc::{Code, Error as TtrpcError};

use crate::args::Args;
use crate::cgroup::{Cgroup, OomWatch};
use crate::engine::{self, Engine, ProcIo};
use crate::events::Publisher;
use crate::process::Process;
use crate::stdio::{self, ConsoleSocket, Paths, TtyCopy};

type Res<T> = ttrpc::Result<T>;

fn err(code: Code, msg: impl Into<String>) -> TtrpcError {
    TtrpcError::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn not_found(what: &str) -> TtrpcError {
    err(Code::NOT_FOUND, format!("{what}: not found"))
}

struct Inner {
    engine: Option<Engine>,
    init: Option<Process>,
    execs: HashMap<String, Process>,
    cgroup: Option<Arc<Cgroup>>,
    rootfs: Option<PathBuf>,
    exec_seq: u64,
}

/// One container (task) of this shim: its init process and the processes exec'd into it.
struct Container {
    id: String,
    bundle: PathBuf,
    /// libcontainer's state root for this task.
    root: PathBuf,
    inner: Mutex<Inner>,
}

impl Container {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A console socket path short enough for sun_path, unique per process.
    fn console_path(&self, n: u64) -> PathBuf {
        self.root.join(format!("console-{n}.sock"))
    }

    /// Records the exit of `pid` if it is one of this task's processes; the event to publish.
    fn exited(&self, pid: i32, status: u32) -> Option<ev::TaskExit> {
        let mut inner = self.lock();
        let proc = match inner.init.as_mut() {
            Some(p) if p.pid == pid && p.status != Status::STOPPED => Some(p),
            _ => inner
                .execs
                .values_mut()
                .find(|p| p.pid == pid && p.status != Status::STOPPED),
        };
        let p = proc?;
        p.set_exited(status);
        let id = if p.exec_id.is_empty() {
            self.id.clone()
        } else {
            p.exec_id.clone()
        };
        let event = ev::TaskExit {
            container_id: self.id.clone(),
            id,
            pid: pid as u32,
            exit_status: status,
            exited_at: p.exited_at().into(),
            ..Default::default()
        };
        if p.exec_id.is_empty() {
            // The init's end stops the container; the kernel kills what is left in its pid
            // namespace, and those exits are reaped as they come.
            if let Some(e) = inner.engine.as_mut() {
                e.mark_stopped();
            }
        }
        Some(event)
    }
}

pub struct Service {
    args: Args,
    /// The bundle the shim was started in (its first task's).
    bundle: PathBuf,
    events: Publisher,
    /// The containers this shim runs: one, or the containers of a pod (see
    /// `wharf_core::spec::shim_group`).
    tasks: Mutex<HashMap<String, Arc<Container>>>,
    /// Exits of pids nobody claimed yet (an exec that ended before it was recorded).
    unclaimed: Mutex<HashMap<i32, u32>>,
    shutdown: tokio::sync::Notify,
    /// Set once the shim decided to go: a group's next task must not be created here.
    closing: std::sync::atomic::AtomicBool,
}

fn io_paths(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> Paths {
    Paths {
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        terminal,
    }
}

impl Service {
    pub fn new(args: &Args) -> Result<Service, String> {
        let bundle = std::env::current_dir().map_err(|e| format!("bundle dir: {e}"))?;
        let ttrpc_address = std::env::var("TTRPC_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty());
        Ok(Service {
            args: args.clone(),
            bundle,
            events: Publisher::start(ttrpc_address, &args.namespace),
            tasks: Mutex::new(HashMap::new()),
            unclaimed: Mutex::new(HashMap::new()),
            shutdown: tokio::sync::Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn tasks(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The tasks as they are now (the table's lock released).
    fn snapshot(&self) -> Vec<Arc<Container>> {
        self.tasks().values().cloned().collect()
    }

    fn task(&self, id: &str) -> Res<Arc<Container>> {
        self.tasks()
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(&format!("task {id}")))
    }

    pub async fn wait_shutdown(&self) {
        self.shutdown.notified().await;
    }

    pub async fn flush_events(&self) {
        self.events.flush().await;
    }

    /// Removes the runtime roots of the tasks still here (the shim is going away).
    pub fn remove_roots(&self) {
        for t in self.snapshot() {
            let _ = std::fs::remove_dir_all(&t.root);
        }
    }

    /// Called by the reaper for every child that ended.
    pub fn process_exited(&self, pid: i32, status: u32) {
        self.drain_logs(pid);
        // Held across the search so that an exec recording its pid meanwhile claims the exit
        // from `unclaimed` after this (lock order: unclaimed, then the tasks, then a task).
        let mut unclaimed = self.unclaimed.lock().unwrap_or_else(|p| p.into_inner());
        let tasks = self.snapshot();
        let Some(event) = tasks.iter().find_map(|t| t.exited(pid, status)) else {
            unclaimed.insert(pid, status);
            return;
        };
        drop(unclaimed);
        tracing::debug!(pid, status, "process exited");
        self.events.publish(topics::TASK_EXIT_EVENT_TOPIC, &event);
    }

    /// Lets the log copiers, or the terminal copier, of `pid` write the last of its output
    /// before its exit is published, so a client reading the log or the FIFO after Wait sees
    /// everything (a terminal is copied by a thread, which may lag behind the exit). Bounded: a
    /// daemonized child that keeps the pipe or the terminal open must not hold the exit back.
    fn drain_logs(&self, pid: i32) {
        let tasks = self.snapshot();
        let rx = tasks.iter().find_map(|t| {
            let mut inner = t.lock();
            let Inner { init, execs, .. } = &mut *inner;
            init.iter_mut()
                .chain(execs.values_mut())
                .find(|p| p.pid == pid && p.status != Status::STOPPED)
                .and_then(|p| p.drained.take())
        });
        if let Some(rx) = rx {
            let _ = rx.recv_timeout(std::time::Duration::from_millis(500));
        }
    }

    /// Takes an exit the reaper saw before the pid was known. Called with no task locked.
    fn claim(&self, pid: i32) -> Option<u32> {
        self.unclaimed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid)
    }

    fn start_oom_watch(&self, id: &str, cg: Arc<Cgroup>) {
        match OomWatch::new(&cg) {
            Ok(mut w) => {
                let events = self.events.clone();
                let id = id.to_string();
                tokio::spawn(async move {
                    while w.next().await.is_some() {
                        tracing::info!(id = %id, "OOM kill in the container's cgroup");
                        events.publish(
                            topics::TASK_OOM_EVENT_TOPIC,
                            &ev::TaskOOM {
                                container_id: id.clone(),
                                ..Default::default()
                            },
                        );
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "no OOM notifications"),
        }
    }

    /// The engine the runtime options ask for: runc's CLI when they name a binary, else
    /// libcontainer in-process.
    fn engine(
        &self,
        id: &str,
        root: &Path,
        options: Option<&containerd_shim_protos::protobuf::well_known_types::any::Any>,
    ) -> Res<Engine> {
        use containerd_shim_protos::protobuf::Message;
        let opts = match options {
            Some(a) if a.type_url.ends_with("containerd.runc.v1.Options") => {
                containerd_shim_protos::shim::oci::Options::parse_from_bytes(&a.value)
                    .map_err(|e| err(Code::INVALID_ARGUMENT, format!("runtime options: {e}")))?
            }
            _ => Default::default(),
        };
        if opts.binary_name.is_empty() {
            return Ok(Engine::Builtin(engine::Builtin {
                id: id.to_string(),
                root: root.to_path_buf(),
                container: None,
            }));
        }
        let binary = PathBuf::from(&opts.binary_name);
        let binary = if binary.is_absolute() {
            binary
        } else {
            std::env::var_os("PATH")
                .and_then(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join(&binary))
                        .find(|c| c.is_file())
                })
                .ok_or_else(|| {
                    err(
                        Code::NOT_FOUND,
                        format!("runtime binary {:?} not found in PATH", opts.binary_name),
                    )
                })?
        };
        Ok(Engine::Runc(engine::Runc {
            binary,
            root: if opts.root.is_empty() {
                root.join("runc")
            } else {
                PathBuf::from(&opts.root).join(&self.args.namespace)
            },
            id: id.to_string(),
            systemd_cgroup: opts.systemd_cgroup,
        }))
    }
}

fn unmount_rootfs(rootfs: &Path) {
    if let Err(e) = wharf_core::mount::unmount(rootfs) {
        tracing::warn!(error = %e, "unmount rootfs");
    }
}

/// Loads the bundle's spec and fills in the cgroups path containerd's clients normally set. For
/// the built-in runtime, masked-compare seccomp arguments are rewritten into libcontainer's
/// reading of them (see `wharf_core::spec::seccomp::libcontainer_compat`), and an explicit
/// `noNewPrivileges: false` is dropped.
fn prepare_spec(bundle: &Path, ns: &str, id: &str, builtin: bool) -> Res<(Spec, PathBuf)> {
    let path = bundle.join("config.json");
    let mut spec = Spec::load(&path).map_err(|e| {
        err(
            Code::INVALID_ARGUMENT,
            format!("load OCI spec {}: {e}", path.display()),
        )
    })?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| bundle.join(r.path()))
        .ok_or_else(|| err(Code::INVALID_ARGUMENT, "OCI spec has no root"))?;
    if let Err(e) = std::fs::metadata(&root) {
        return Err(runtime_error(
            "create",
            std::io::Error::new(
                e.kind(),
                format!("invalid rootfs: stat {}: {e}", root.display()),
            ),
        ));
    }
    let mut changed = false;
    let mut linux = spec.linux().clone().unwrap_or_default();
    let cg = match linux.cgroups_path().clone() {
        Some(p) => p,
        None => {
            let p = PathBuf::from(format!("/{ns}/{id}"));
            linux.set_cgroups_path(Some(p.clone()));
            changed = true;
            p
        }
    };
    if builtin {
        // libcontainer spells the root's propagation without runc's `r` (it always recurses);
        // containerd writes `rshared`/`rslave`.
        if let Some(p) = linux.rootfs_propagation().clone() {
            if let Some(plain) = p
                .strip_prefix('r')
                .filter(|p| ["shared", "slave", "private", "unbindable"].contains(p))
            {
                linux.set_rootfs_propagation(Some(plain.to_string()));
                changed = true;
            }
        }
        if let Some(sc) = linux.seccomp().as_ref() {
            let fixed = wharf_core::spec::seccomp::libcontainer_compat(sc);
            if &fixed != sc {
                linux.set_seccomp(Some(fixed));
                changed = true;
            }
        }
    }
    // libcontainer reads `noNewPrivileges: false` like `true` when ordering seccomp (it loads
    // the filter after dropping capabilities, without the bit set, and the load fails): an
    // explicit false means the same as none.
    if builtin {
        if let Some(mut p) = spec.process().clone() {
            if p.no_new_privileges() == Some(false) {
                p.set_no_new_privileges(None);
                spec.set_process(Some(p));
                changed = true;
            }
        }
    }
    if changed {
        spec.set_linux(Some(linux));
        spec.save(&path)
            .map_err(|e| err(Code::INTERNAL, format!("save OCI spec: {e}")))?;
    }
    Ok((spec, cg))
}

fn runtime_error(what: &str, e: impl std::fmt::Display) -> TtrpcError {
    // containerd reports OCI runtime failures with code Unknown and this prefix.
    err(Code::UNKNOWN, format!("OCI runtime {what} failed: {e}"))
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> Res<api::CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(err(
                Code::UNIMPLEMENTED,
                "restore from a checkpoint is not supported",
            ));
        }
        if req.id.is_empty() {
            return Err(err(Code::INVALID_ARGUMENT, "task id must not be empty"));
        }
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("task {}: its group's shim is shutting down", req.id),
            ));
        }
        if self.tasks().contains_key(&req.id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("task {}: already exists", req.id),
            ));
        }
        let bundle = match req.bundle.as_str() {
            "" if req.id == self.args.id => self.bundle.clone(),
            "" => {
                return Err(err(
                    Code::INVALID_ARGUMENT,
                    format!("task {}: the request names no bundle", req.id),
                ))
            }
            b => PathBuf::from(b),
        };
        let root = self.args.runtime_root(&req.id);
        std::fs::create_dir_all(&root)
            .map_err(|e| err(Code::INTERNAL, format!("create {}: {e}", root.display())))?;
        let t = Arc::new(Container {
            id: req.id.clone(),
            bundle: bundle.clone(),
            root,
            inner: Mutex::new(Inner {
                engine: None,
                init: None,
                execs: HashMap::new(),
                cgroup: None,
                rootfs: None,
                exec_seq: 0,
            }),
        });
        let mut inner = t.lock();
        let rootfs = bundle.join("rootfs");
        if !req.rootfs.is_empty() {
            let mounts: Vec<wharf_core::snapshots::Mount> = req
                .rootfs
                .iter()
                .map(|m| wharf_core::snapshots::Mount {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect();
            let mounted = std::fs::create_dir_all(&rootfs)
                .map_err(|e| err(Code::INTERNAL, format!("create rootfs dir: {e}")))
                .and_then(|()| {
                    wharf_core::mount::mount_all(&mounts, &rootfs)
                        .map_err(|e| err(Code::INTERNAL, format!("mount rootfs: {e}")))
                });
            if let Err(e) = mounted {
                let _ = std::fs::remove_dir_all(&t.root);
                return Err(e);
            }
            inner.rootfs = Some(rootfs.clone());
        }
        let result = (|| {
            let mut engine = self.engine(&t.id, &t.root, req.options.as_ref())?;
            let builtin = matches!(engine, crate::engine::Engine::Builtin(_));
            let (spec, cg_path) = prepare_spec(&bundle, &self.args.namespace, &t.id, builtin)?;
            let terminal = spec
                .process()
                .as_ref()
                .and_then(|p| p.terminal())
                .unwrap_or(false);
            let paths = io_paths(
                &req.stdin,
                &req.stdout,
                &req.stderr,
                terminal || req.terminal,
            );
            let mut proc = Process::new("", paths.clone());
            let mut io = ProcIo::default();
            let console = if terminal {
                let c = ConsoleSocket::new(t.console_path(0))
                    .map_err(|e| err(Code::INTERNAL, format!("console socket: {e}")))?;
                io.console_socket = Some(c.path.clone());
                Some(c)
            } else {
                let o = stdio::open(&paths)
                    .map_err(|e| err(Code::INVALID_ARGUMENT, format!("open stdio: {e}")))?;
                io.stdin = o.stdin;
                io.stdout = o.stdout;
                io.stderr = o.stderr;
                proc.keep = o.keep;
                proc.drained = o.drained;
                None
            };
            proc.pid = engine
                .create(&bundle, io)
                .map_err(|e| runtime_error("create", e))?;
            if let Some(c) = console {
                let master = c
                    .receive()
                    .map_err(|e| err(Code::INTERNAL, format!("receive pty: {e}")))?;
                let mut tty = TtyCopy::start(&master, &paths)
                    .map_err(|e| err(Code::INTERNAL, format!("copy tty: {e}")))?;
                proc.drained = tty.take_drained();
                proc.tty = Some(tty);
                proc.console = Some(master);
            }
            Ok::<_, TtrpcError>((engine, proc, cg_path))
        })();
        let (engine, proc, cg_path) = match result {
            Ok(v) => v,
            Err(e) => {
                // Leave nothing behind: the runtime's state and cgroup, and the rootfs mount.
                engine::delete_after_crash(&t.root, &t.id);
                if let Some(r) = inner.rootfs.take() {
                    unmount_rootfs(&r);
                }
                let _ = std::fs::remove_dir_all(&t.root);
                return Err(e);
            }
        };
        let pid = proc.pid;
        let cg = Arc::new(Cgroup::new(cg_path, t.id.clone()));
        inner.cgroup = Some(cg.clone());
        inner.engine = Some(engine);
        inner.init = Some(proc);
        drop(inner);
        self.tasks().insert(t.id.clone(), t.clone());
        self.start_oom_watch(&t.id, cg);
        self.events.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            &ev::TaskCreate {
                container_id: t.id.clone(),
                bundle: bundle.to_string_lossy().into_owned(),
                rootfs: req.rootfs.clone(),
                io: Some(ev::TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                })
                .into(),
                checkpoint: req.checkpoint.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        Ok(api::CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: api::StartRequest) -> Res<api::StartResponse> {
        let t = self.task(&req.id)?;
        let mut guard = t.lock();
        let inner = &mut *guard;
        if req.exec_id.is_empty() {
            let init = inner.init.as_mut().ok_or_else(|| not_found("task"))?;
            if init.status != Status::CREATED {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    "task is not in the created state",
                ));
            }
            let e = inner
                .engine
                .as_mut()
                .ok_or_else(|| not_found("container"))?;
            e.start().map_err(|e| runtime_error("start", e))?;
            init.status = Status::RUNNING;
            let pid = init.pid;
            drop(guard);
            wharf_core::memory::trim_soon(std::time::Duration::from_millis(200));
            self.events.publish(
                topics::TASK_START_EVENT_TOPIC,
                &ev::TaskStart {
                    container_id: t.id.clone(),
                    pid: pid as u32,
                    ..Default::default()
                },
            );
            return Ok(api::StartResponse {
                pid: pid as u32,
                ..Default::default()
            });
        }
        if inner
            .init
            .as_ref()
            .is_none_or(|p| p.status != Status::RUNNING)
        {
            return Err(err(
                Code::FAILED_PRECONDITION,
                "cannot exec in a task that is not running",
            ));
        }
        inner.exec_seq += 1;
        let seq = inner.exec_seq;
        let p = inner
            .execs
            .get_mut(&req.exec_id)
            .ok_or_else(|| not_found(&format!("process {}", req.exec_id)))?;
        if p.status != Status::CREATED {
            return Err(err(
                Code::FAILED_PRECONDITION,
                "process was already started",
            ));
        }
        let spec_path = p
            .spec_path
            .clone()
            .ok_or_else(|| err(Code::INTERNAL, "exec process has no spec"))?;
        let stdio_paths = p.stdio.clone();
        let mut io = ProcIo::default();
        let mut keep = Vec::new();
        let mut drained = None;
        let console = if stdio_paths.terminal {
            let c = ConsoleSocket::new(t.console_path(seq))
                .map_err(|e| err(Code::INTERNAL, format!("console socket: {e}")))?;
            io.console_socket = Some(c.path.clone());
            Some(c)
        } else {
            let o = stdio::open(&stdio_paths)
                .map_err(|e| err(Code::INVALID_ARGUMENT, format!("open stdio: {e}")))?;
            io.stdin = o.stdin;
            io.stdout = o.stdout;
            io.stderr = o.stderr;
            keep = o.keep;
            drained = o.drained;
            None
        };
        let pid = inner
            .engine
            .as_mut()
            .ok_or_else(|| not_found("container"))?
            .exec(&spec_path, io)
            .map_err(|e| runtime_error("exec", e))?;
        let p = inner
            .execs
            .get_mut(&req.exec_id)
            .ok_or_else(|| not_found(&format!("process {}", req.exec_id)))?;
        p.keep = keep;
        p.drained = drained;
        p.pid = pid;
        p.status = Status::RUNNING;
        if let Some(c) = console {
            let master = c
                .receive()
                .map_err(|e| err(Code::INTERNAL, format!("receive pty: {e}")))?;
            let mut tty = TtyCopy::start(&master, &p.stdio)
                .map_err(|e| err(Code::INTERNAL, format!("copy tty: {e}")))?;
            p.drained = tty.take_drained();
            p.tty = Some(tty);
            p.console = Some(master);
        }
        drop(guard);
        let early = self.claim(pid);
        wharf_core::memory::trim_soon(std::time::Duration::from_millis(200));
        self.events.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            &ev::TaskExecStarted {
                container_id: t.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            },
        );
        if let Some(status) = early {
            self.process_exited(pid, status);
        }
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> Res<api::DeleteResponse> {
        let t = self.task(&req.id)?;
        let mut guard = t.lock();
        let inner = &mut *guard;
        if !req.exec_id.is_empty() {
            let p = inner
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(&format!("process {}", req.exec_id)))?;
            if p.status == Status::RUNNING || p.status == Status::PAUSED {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    "cannot delete a running process",
                ));
            }
            let p = inner
                .execs
                .remove(&req.exec_id)
                .ok_or_else(|| not_found("process"))?;
            if let Some(spec) = &p.spec_path {
                let _ = std::fs::remove_file(spec);
            }
            return Ok(api::DeleteResponse {
                pid: p.pid.max(0) as u32,
                exit_status: p.exit_status,
                exited_at: p.exited_at().into(),
                ..Default::default()
            });
        }
        let init = inner
            .init
            .as_mut()
            .ok_or_else(|| not_found(&format!("task {}", t.id)))?;
        match init.status {
            Status::RUNNING | Status::PAUSED | Status::PAUSING => {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    "cannot delete a running process",
                ))
            }
            Status::CREATED => {
                // Never started: killed with the container below.
                init.set_exited(128 + libc::SIGKILL as u32);
            }
            _ => {}
        }
        if let Some(mut e) = inner.engine.take() {
            if let Err(e) = e.delete() {
                tracing::warn!(error = %e, "delete container state");
            }
        }
        if let Some(r) = inner.rootfs.take() {
            unmount_rootfs(&r);
        }
        if let Some(cg) = inner.cgroup.take() {
            cg.remove_leftovers();
        }
        let init = inner.init.take().ok_or_else(|| not_found("task"))?;
        inner.execs.clear();
        drop(guard);
        self.tasks().remove(&t.id);
        let _ = std::fs::remove_dir_all(&t.root);
        let resp = api::DeleteResponse {
            pid: init.pid.max(0) as u32,
            exit_status: init.exit_status,
            exited_at: init.exited_at().into(),
            ..Default::default()
        };
        self.events.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            &ev::TaskDelete {
                container_id: t.id.clone(),
                pid: resp.pid,
                exit_status: resp.exit_status,
                exited_at: resp.exited_at.clone(),
                id: t.id.clone(),
                ..Default::default()
            },
        );
        Ok(resp)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> Res<api::PidsResponse> {
        let t = self.task(&req.id)?;
        let cg = t.lock().cgroup.clone().ok_or_else(|| not_found("task"))?;
        let pids = cg.pids().map_err(|e| err(Code::INTERNAL, e))?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| api::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> Res<api::Empty> {
        let t = self.task(&req.id)?;
        {
            let mut guard = t.lock();
            let inner = &mut *guard;
            let init = inner.init.as_mut().ok_or_else(|| not_found("task"))?;
            if init.status != Status::RUNNING {
                return Err(err(Code::FAILED_PRECONDITION, "task is not running"));
            }
            let e = inner
                .engine
                .as_mut()
                .ok_or_else(|| not_found("container"))?;
            e.pause().map_err(|e| runtime_error("pause", e))?;
            init.status = Status::PAUSED;
        }
        self.events.publish(
            topics::TASK_PAUSED_EVENT_TOPIC,
            &ev::TaskPaused {
                container_id: t.id.clone(),
                ..Default::default()
            },
        );
        Ok(api::Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: api::ResumeRequest) -> Res<api::Empty> {
        let t = self.task(&req.id)?;
        {
            let mut guard = t.lock();
            let inner = &mut *guard;
            let init = inner.init.as_mut().ok_or_else(|| not_found("task"))?;
            if init.status != Status::PAUSED {
                return Err(err(Code::FAILED_PRECONDITION, "task is not paused"));
            }
            let e = inner
                .engine
                .as_mut()
                .ok_or_else(|| not_found("container"))?;
            e.resume().map_err(|e| runtime_error("resume", e))?;
            init.status = Status::RUNNING;
        }
        self.events.publish(
            topics::TASK_RESUMED_EVENT_TOPIC,
            &ev::TaskResumed {
                container_id: t.id.clone(),
                ..Default::default()
            },
        );
        Ok(api::Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> Res<api::Empty> {
        Err(err(
            Code::UNIMPLEMENTED,
            "checkpoint is not supported by the wharf shim",
        ))
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> Res<api::Empty> {
        let t = self.task(&req.id)?;
        let mut guard = t.lock();
        let inner = &mut *guard;
        let sig = i32::try_from(req.signal)
            .ok()
            .filter(|s| libcontainer::signal::Signal::try_from(*s).is_ok())
            .ok_or_else(|| {
                err(
                    Code::INVALID_ARGUMENT,
                    format!("invalid signal {}", req.signal),
                )
            })?;
        if !req.exec_id.is_empty() {
            let p = inner
                .execs
                .get(&req.exec_id)
                .ok_or_else(|| not_found(&format!("process {}", req.exec_id)))?;
            if p.status != Status::RUNNING {
                return Err(not_found("process already finished"));
            }
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p.pid),
                nix::sys::signal::Signal::try_from(req.signal as i32).ok(),
            )
            .map_err(|e| err(Code::NOT_FOUND, format!("signal process: {e}")))?;
            return Ok(api::Empty::new());
        }
        let init = inner.init.as_ref().ok_or_else(|| not_found("task"))?;
        if init.status == Status::STOPPED && !req.all {
            return Err(not_found("process already finished"));
        }
        let e = inner
            .engine
            .as_mut()
            .ok_or_else(|| not_found("container"))?;
        e.kill(sig, req.all).map_err(|e| {
            if init.status == Status::STOPPED {
                not_found("process already finished")
            } else {
                runtime_error("kill", e)
            }
        })?;
        Ok(api::Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> Res<api::Empty> {
        let t = self.task(&req.id)?;
        if req.exec_id.is_empty() {
            return Err(err(Code::INVALID_ARGUMENT, "exec id must not be empty"));
        }
        {
            let mut guard = t.lock();
            let inner = &mut *guard;
            if inner.execs.contains_key(&req.exec_id) {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("id {}: already exists", req.exec_id),
                ));
            }
            if inner
                .init
                .as_ref()
                .is_none_or(|p| p.status != Status::RUNNING)
            {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    "cannot exec in a task that is not running",
                ));
            }
            // Start comes next and moves the new process into the container's cgroups.
            crate::cgroup::prewarm_attach();
            let spec = req
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            let process: oci_spec::runtime::Process = serde_json::from_slice(&spec)
                .map_err(|e| err(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?;
            inner.exec_seq += 1;
            let spec_path = t.root.join(format!("exec-{}.json", inner.exec_seq));
            std::fs::write(&spec_path, &spec)
                .map_err(|e| err(Code::INTERNAL, format!("write exec spec: {e}")))?;
            let terminal = process.terminal().unwrap_or(false) || req.terminal;
            let mut p = Process::new(
                &req.exec_id,
                io_paths(&req.stdin, &req.stdout, &req.stderr, terminal),
            );
            p.spec_path = Some(spec_path);
            inner.execs.insert(req.exec_id.clone(), p);
        }
        self.events.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            &ev::TaskExecAdded {
                container_id: t.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(api::Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: api::ResizePtyRequest) -> Res<api::Empty> {
        let t = self.task(&req.id)?;
        let inner = t.lock();
        let p = if req.exec_id.is_empty() {
            inner.init.as_ref()
        } else {
            inner.execs.get(&req.exec_id)
        }
        .ok_or_else(|| not_found("process"))?;
        let console = p
            .console
            .as_ref()
            .ok_or_else(|| err(Code::FAILED_PRECONDITION, "process has no terminal"))?;
        stdio::resize(console, req.width, req.height)
            .map_err(|e| err(Code::INTERNAL, format!("resize pty: {e}")))?;
        Ok(api::Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> Res<api::Empty> {
        let t = self.task(&req.id)?;
        let mut inner = t.lock();
        let p = if req.exec_id.is_empty() {
            inner.init.as_mut()
        } else {
            inner.execs.get_mut(&req.exec_id)
        }
        .ok_or_else(|| not_found("process"))?;
        // Without a terminal the container reads the client's FIFO itself and sees its EOF when
        // the client closes it; with one, stop copying into the pty.
        if let Some(tty) = p.tty.as_mut() {
            tty.close_stdin();
        }
        Ok(api::Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> Res<api::Empty> {
        use libcgroups::common::{CgroupManager, ControllerOpt};
        let t = self.task(&req.id)?;
        let cg = t.lock().cgroup.clone().ok_or_else(|| not_found("task"))?;
        let value = req
            .resources
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&value)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("resources: {e}")))?;
        let m = cg.manager().map_err(|e| err(Code::INTERNAL, e))?;
        m.apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| err(Code::INTERNAL, format!("update resources: {e}")))?;
        Ok(api::Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> Res<api::WaitResponse> {
        let t = self.task(&req.id)?;
        let mut rx = {
            let inner = t.lock();
            let p = if req.exec_id.is_empty() {
                inner.init.as_ref()
            } else {
                inner.execs.get(&req.exec_id)
            }
            .ok_or_else(|| not_found("process"))?;
            p.exited.subscribe()
        };
        rx.wait_for(|done| *done)
            .await
            .map_err(|_| err(Code::NOT_FOUND, "process was deleted"))?;
        let inner = t.lock();
        let p = if req.exec_id.is_empty() {
            inner.init.as_ref()
        } else {
            inner.execs.get(&req.exec_id)
        }
        .ok_or_else(|| not_found("process"))?;
        Ok(api::WaitResponse {
            exit_status: p.exit_status,
            exited_at: p.exited_at().into(),
            ..Default::default()
        })
    }

    async fn state(&self, _ctx: &TtrpcContext, req: api::StateRequest) -> Res<api::StateResponse> {
        let t = self.task(&req.id)?;
        let inner = t.lock();
        let bundle = t.bundle.to_string_lossy();
        if req.exec_id.is_empty() {
            let p = inner
                .init
                .as_ref()
                .ok_or_else(|| not_found(&format!("task {}", t.id)))?;
            return Ok(p.state(&t.id, &bundle));
        }
        let p = inner
            .execs
            .get(&req.exec_id)
            .ok_or_else(|| not_found(&format!("process {}", req.exec_id)))?;
        Ok(p.state(&req.exec_id, &bundle))
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: api::StatsRequest) -> Res<api::StatsResponse> {
        let t = self.task(&req.id)?;
        let cg = t.lock().cgroup.clone().ok_or_else(|| not_found("task"))?;
        let any = cg.metrics().map_err(|e| err(Code::INTERNAL, e))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> Res<api::ConnectResponse> {
        // As containerd's shims answer: a task not created yet (a pod's next container) has
        // no pid.
        let task = self.task(&req.id).ok();
        if task.is_none() {
            // A Create comes next: its cgroup migration shares the grace period started now, as
            // a new shim's does (see `prewarm_attach`).
            crate::cgroup::prewarm_attach();
        }
        let pid = task.map_or(0, |t| {
            t.lock().init.as_ref().map_or(0, |p| p.pid.max(0) as u32)
        });
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: pid,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, req: api::ShutdownRequest) -> Res<api::Empty> {
        // containerd asks after every Delete; the shim only goes once no task is left (a pod's
        // shim stays while any of its containers does).
        if !self.tasks().is_empty() && !req.now {
            return Ok(api::Empty::new());
        }
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.shutdown.notify_one();
        Ok(api::Empty::new())
    }
}
