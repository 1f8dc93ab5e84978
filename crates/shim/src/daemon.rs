//! `start`: binds the task socket, forks the long-lived shim into its own session and prints the
//! address for the daemon; a task of a group whose shim runs (a pod's container) gets that shim's
//! address instead. The child serves until the daemon calls Shutdown with no task left.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use containerd_shim_protos::shim_async::create_task;
use nix::unistd::{dup2, fork, setsid, ForkResult};

use crate::args::Args;
use crate::service::Service;

const V2: &str = "containerd.task.v2.Task";
const V3: &str = "containerd.task.v3.Task";

pub fn start(args: &Args) -> Result<(), String> {
    // The containers of a pod join the shim of its sandbox, as containerd's runc shim groups
    // them: one process per pod, and no shim to start for each container.
    let config = std::fs::read("config.json").unwrap_or_default();
    let group = wharf_core::spec::shim_group(&config, &args.id);
    let socket = args.socket_path(&group);
    let dir = socket.parent().unwrap_or(Path::new("/run/wharf"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .map_err(|e| format!("create {}: {e}", dir.display()))?;
    let address = format!("unix://{}", socket.display());
    // Starts of the same group are serialised (a lock on the sockets' directory), so that two
    // containers of a new pod cannot each take a shim of their own.
    let lock = lock_dir(dir)?;
    let listener = match bind(&socket)? {
        Bound::New(l) => l,
        Bound::Live if group != args.id => {
            // The group's shim serves this task too.
            drop(lock);
            announce(&address);
            return Ok(());
        }
        Bound::Live => {
            return Err(format!(
                "a shim already serves {} (task exists)",
                socket.display()
            ))
        }
    };

    // Still single-threaded here, so fork is safe; the child builds its runtime afterwards.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { .. } => {
            drop(lock);
            announce(&address);
            Ok(())
        }
        ForkResult::Child => {
            drop(lock);
            let svc = match serve(args, listener) {
                Ok(svc) => Some(svc),
                Err(e) => {
                    eprintln!("shim {}: {e}", args.id);
                    None
                }
            };
            remove_socket(&socket);
            if let Some(svc) = &svc {
                svc.remove_roots();
            }
            std::process::exit(if svc.is_some() { 0 } else { 1 });
        }
    }
}

/// Tells the daemon where the task's shim listens: containerd reads the address from stdout,
/// and from the bundle's `address` file on restore.
fn announce(address: &str) {
    let _ = std::fs::write("address", address);
    print!("{address}");
    let _ = std::io::stdout().flush();
}

/// The lock that serialises binding and removing the shims' sockets.
fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, String> {
    let f = std::fs::File::open(dir).map_err(|e| format!("open {}: {e}", dir.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("lock {}: {e}", dir.display()))
}

/// Removes a shim's socket once nothing answers there: this shim's own after its listener
/// closed, or a dead shim's (`delete`). A live shim of the group (a new one, or the one that
/// still serves the pod's other tasks) keeps it.
pub fn remove_socket(socket: &Path) {
    let _lock = socket.parent().and_then(|d| lock_dir(d).ok());
    if UnixStream::connect(socket).is_err() {
        let _ = std::fs::remove_file(socket);
    }
}

enum Bound {
    New(UnixListener),
    /// A shim listens there already.
    Live,
}

/// Binds the socket, replacing a stale one.
fn bind(socket: &Path) -> Result<Bound, String> {
    match UnixListener::bind(socket) {
        Ok(l) => Ok(Bound::New(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(socket).is_ok() {
                return Ok(Bound::Live);
            }
            let _ = std::fs::remove_file(socket);
            UnixListener::bind(socket)
                .map(Bound::New)
                .map_err(|e| format!("bind {}: {e}", socket.display()))
        }
        Err(e) => Err(format!("bind {}: {e}", socket.display())),
    }
}

/// Detaches from the daemon (new session, stdio off its pipes, stderr into the bundle's `log`
/// FIFO that wharfd reads) and serves the task API until Shutdown.
fn serve(args: &Args, listener: UnixListener) -> Result<Arc<Service>, String> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    // The daemon opened `log` read-write, so this open never blocks; without it, stderr is null.
    let log = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
        .ok();
    let _ = dup2(null.as_raw_fd(), 0);
    let _ = dup2(null.as_raw_fd(), 1);
    let _ = dup2(log.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd()), 2);
    if let Some(log) = &log {
        // Writes to the log must block rather than fail when the reader is slow.
        let _ = nix::fcntl::fcntl(
            log.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
        );
        let _ = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()));
    }
    // Log through a descriptor of our own rather than fd 2: libcontainer's container init is a
    // fork of this process that inherits the subscriber after pointing fd 2 at the container's
    // stderr, and its debug lines must land in the shim log, not in the container's output.
    // (The dup is close-on-exec, so the container's program never holds it.)
    let writer = log
        .as_ref()
        .and_then(|f| f.try_clone().ok())
        .or_else(|| null.try_clone().ok());
    drop(log);
    drop(null);
    let Some(writer) = writer else {
        return Err("cannot open a log descriptor".into());
    };
    tracing_subscriber::fmt()
        .with_writer(std::sync::Arc::new(LogWriter(writer)))
        .with_ansi(false)
        .without_time()
        .with_max_level(if args.debug {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        })
        .init();
    crate::cgroup::prewarm_attach();
    // Orphaned container processes (the init after libcontainer's intermediate exits, exec'd
    // processes) are re-parented to us, so we can reap them and report their exit status.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async move {
        // Registered before any child exists, so no exit goes unnoticed.
        let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
            .map_err(|e| format!("SIGCHLD handler: {e}"))?;
        let svc = Arc::new(Service::new(args)?);
        let mut services = create_task(svc.clone());
        // One handler set under both names: containerd 1.6 calls v2, containerd 2.x calls v3.
        if let Some(v3) = services.remove(V3) {
            services.insert(V3.to_string(), v3);
        }
        let mut v2 = create_task(svc.clone());
        if let Some(s) = v2.remove(V3) {
            services.insert(V2.to_string(), s);
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        let fd = listener.into_raw_fd();
        let mut server = unsafe { ttrpc::asynchronous::Server::new().add_unix_listener(fd) }
            .map_err(|e| format!("ttrpc listener: {e}"))?
            .register_service(services);
        server
            .start()
            .await
            .map_err(|e| format!("ttrpc start: {e}"))?;
        tokio::spawn(crate::reaper::run(svc.clone(), sigchld));
        svc.wait_shutdown().await;
        let _ = server.shutdown().await;
        svc.flush_events().await;
        Ok::<Arc<Service>, String>(svc)
    })
}

/// The shim's log. While wharfd (the FIFO's reader) is down, writes fail with EPIPE: the line is
/// dropped. Reporting the failure would make tracing print to stderr, the same FIFO, and panic
/// in whatever handler logged (a Delete while wharfd was down was never answered).
struct LogWriter(std::fs::File);

impl std::io::Write for &LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = (&self.0).write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
