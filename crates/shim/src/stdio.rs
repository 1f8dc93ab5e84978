//! A process's stdio as containerd's clients give it: FIFO paths (ctr), `file://` URIs, or
//! nothing (/dev/null).
//!
//! Without a terminal the FIFOs are handed to the container as they are, with no copying: the
//! shim only keeps a read end of each output FIFO open so a client that goes away never makes
//! the container die of EPIPE (output then waits in the FIFO for the next reader, as with
//! containerd's shim). With a terminal, the pty master comes back over a console socket and two
//! threads copy between it and the FIFOs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use std::sync::{mpsc, Arc, Mutex};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

use crate::logfile;

#[derive(Clone, Debug, Default)]
pub struct Paths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The container's ends, passed to libcontainer, and what the shim keeps.
#[derive(Default)]
pub struct Opened {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Read ends of output FIFOs held open for the life of the process.
    pub keep: Vec<OwnedFd>,
    /// Disconnects once every log copier has written all it read (formatted `file://` logs).
    pub drained: Option<mpsc::Receiver<()>>,
}

/// Formatted log sinks opened for one process: stdout and stderr share a file when their URIs
/// are equal.
#[derive(Default)]
struct Logs {
    sinks: Vec<(String, Arc<Mutex<logfile::Sink>>)>,
    done: Option<mpsc::Sender<()>>,
    drained: Option<mpsc::Receiver<()>>,
}

impl Logs {
    /// The pipe write end for `stream` if `uri` asks for a formatted log.
    fn output(&mut self, uri: &str, stream: &'static str) -> std::io::Result<Option<OwnedFd>> {
        let Some(parsed) = logfile::LogUri::parse(uri)? else {
            return Ok(None);
        };
        let sink = match self.sinks.iter().find(|(u, _)| u == uri) {
            Some((_, s)) => s.clone(),
            None => {
                let s = logfile::Sink::open(parsed)?;
                self.sinks.push((uri.to_string(), s.clone()));
                s
            }
        };
        let done = match &self.done {
            Some(d) => d.clone(),
            None => {
                let (tx, rx) = mpsc::channel();
                self.drained = Some(rx);
                self.done = Some(tx.clone());
                tx
            }
        };
        logfile::stream(sink, stream, done).map(Some)
    }
}

fn clear_nonblock(fd: RawFd) -> std::io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::empty())).map_err(std::io::Error::from)?;
    Ok(())
}

fn null(write: bool) -> std::io::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")?
        .into())
}

fn file_uri(uri: &str) -> Option<&str> {
    uri.strip_prefix("file://")
}

/// Opens an output destination: a FIFO (with a kept read end) or a `file://` log.
fn open_output(path: &str, keep: &mut Vec<OwnedFd>) -> std::io::Result<OwnedFd> {
    if path.is_empty() {
        return null(true);
    }
    if let Some(file) = file_uri(path) {
        if let Some(dir) = Path::new(file).parent() {
            std::fs::create_dir_all(dir)?;
        }
        return Ok(OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)?
            .into());
    }
    if path.contains("://") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("stdio URI {path:?}: only FIFO paths and file:// are supported"),
        ));
    }
    // Opening the read end first (non-blocking, always succeeds on a FIFO) lets the write end
    // open without waiting for the client.
    let r: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?
        .into();
    let w: OwnedFd = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?
        .into();
    clear_nonblock(w.as_raw_fd())?;
    keep.push(r);
    Ok(w)
}

fn open_input(path: &str) -> std::io::Result<OwnedFd> {
    if path.is_empty() {
        return null(false);
    }
    // Non-blocking open never waits for a writer; the client (ctr) has its write end pending
    // already and completes it as soon as this read end exists.
    let r: OwnedFd = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?
        .into();
    clear_nonblock(r.as_raw_fd())?;
    Ok(r)
}

/// Opens the FIFOs for a process without a terminal.
pub fn open(p: &Paths) -> std::io::Result<Opened> {
    let mut o = Opened {
        stdin: Some(open_input(&p.stdin)?),
        ..Default::default()
    };
    let mut logs = Logs::default();
    if let Some(out) = logs.output(&p.stdout, "stdout")? {
        o.stdout = Some(out);
        o.stderr = Some(match logs.output(&p.stderr, "stderr")? {
            Some(err) => err,
            None => open_output(&p.stderr, &mut o.keep)?,
        });
        logs.done.take();
        o.drained = logs.drained.take();
        return Ok(o);
    }
    o.stdout = Some(open_output(&p.stdout, &mut o.keep)?);
    if let Some(err) = logs.output(&p.stderr, "stderr")? {
        o.stderr = Some(err);
        logs.done.take();
        o.drained = logs.drained.take();
        return Ok(o);
    }
    o.stderr = Some(
        if p.stderr.is_empty() || p.stderr == p.stdout && !p.stdout.is_empty() {
            match &o.stdout {
                Some(fd) if !p.stderr.is_empty() => fd.try_clone()?,
                _ => null(true)?,
            }
        } else {
            open_output(&p.stderr, &mut o.keep)?
        },
    );
    Ok(o)
}

/// A console socket libcontainer's init connects to, to send back the pty master.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new(path: PathBuf) -> std::io::Result<ConsoleSocket> {
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Receives the pty master (already sent by the time libcontainer's build returns).
    pub fn receive(self) -> std::io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        self.listener.set_nonblocking(true)?;
        let (conn, _) = self.listener.accept()?;
        conn.set_nonblocking(false)?;
        let mut buf = [0u8; 4096];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        for c in msg.cmsgs().map_err(std::io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(std::io::Error::other(
            "console socket: no pty master received",
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies between the pty master and the FIFOs on two threads (the output copy ends when the
/// last process holding the pty exits). Dropping `stdin_stop` (CloseIO) ends the input copy.
pub struct TtyCopy {
    stdin_stop: Option<OwnedFd>,
    /// Disconnects once the output copy has written everything the terminal gave it.
    drained: Option<mpsc::Receiver<()>>,
}

impl TtyCopy {
    pub fn start(master: &OwnedFd, p: &Paths) -> std::io::Result<TtyCopy> {
        let mut keep = Vec::new();
        let mut logs = Logs::default();
        let out: File = if p.stdout.is_empty() {
            File::from(null(true)?)
        } else if let Some(w) = logs.output(&p.stdout, "stdout")? {
            File::from(w)
        } else {
            File::from(open_output(&p.stdout, &mut keep)?)
        };
        // A formatted log's copier ends after this thread (it reads what this one writes).
        let (done, drained) = match (logs.done.take(), logs.drained.take()) {
            (Some(done), Some(drained)) => (done, drained),
            _ => mpsc::channel(),
        };
        let mut master_r = File::from(master.try_clone()?);
        std::thread::Builder::new()
            .name("tty-out".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let _done = done;
                let _keep = keep;
                let mut out = out;
                let mut buf = [0u8; 8192];
                loop {
                    match master_r.read(&mut buf) {
                        Ok(0) | Err(_) => break, // EIO once every slave fd is closed
                        Ok(n) => {
                            if out.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            })?;
        let mut stdin_stop = None;
        if !p.stdin.is_empty() {
            let input = File::from(open_input(&p.stdin)?);
            // A pipe whose write end CloseIO drops wakes the copier through poll.
            let (stop_r, stop_w) = nix::unistd::pipe().map_err(std::io::Error::from)?;
            stdin_stop = Some(stop_w);
            let mut master_w = File::from(master.try_clone()?);
            std::thread::Builder::new()
                .name("tty-in".into())
                .stack_size(64 * 1024)
                .spawn(move || {
                    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
                    use std::os::fd::AsFd;
                    let mut input = input;
                    let mut buf = [0u8; 8192];
                    loop {
                        let mut fds = [
                            PollFd::new(input.as_fd(), PollFlags::POLLIN),
                            PollFd::new(stop_r.as_fd(), PollFlags::POLLIN),
                        ];
                        if poll(&mut fds, PollTimeout::NONE).is_err() {
                            break;
                        }
                        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                            break;
                        }
                        match input.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if master_w.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })?;
        }
        Ok(TtyCopy {
            stdin_stop,
            drained: Some(drained),
        })
    }

    /// What disconnects once the terminal's output is all written (see `Process::drained`).
    pub fn take_drained(&mut self) -> Option<mpsc::Receiver<()>> {
        self.drained.take()
    }

    pub fn close_stdin(&mut self) {
        self.stdin_stop.take();
    }
}

/// Sets a pty's window size.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
