//! Interactive stdio for `run -i/-t` and `exec`: FIFOs the shim opens, copied to and from this
//! terminal, with raw mode and window-size changes forwarded when there is a tty.

use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use containerd_client::services::v1 as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;

use crate::client::{Client, Explain};

pub struct Fifos {
    dir: tempfile::TempDir,
    stdin: bool,
    tty: bool,
}

impl Fifos {
    pub fn new(stdin: bool, tty: bool) -> Result<Fifos> {
        let dir = tempfile::Builder::new()
            .prefix("wharf-io-")
            .tempdir()
            .context("create a directory for stdio FIFOs")?;
        let names: &[&str] = if tty {
            &["in", "out"]
        } else {
            &["in", "out", "err"]
        };
        for n in names {
            nix::unistd::mkfifo(
                &dir.path().join(n),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .with_context(|| format!("mkfifo {n}"))?;
        }
        Ok(Fifos { dir, stdin, tty })
    }

    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    /// (stdin, stdout, stderr) paths for the task.
    pub fn paths(&self) -> (String, String, String) {
        let s = |n: &str| self.path(n).display().to_string();
        (
            if self.stdin { s("in") } else { String::new() },
            s("out"),
            if self.tty { String::new() } else { s("err") },
        )
    }

    /// Starts copying; call once the task (or exec) is created, before it starts.
    pub async fn attach(&mut self, c: &Client, id: &str, exec_id: &str) -> Result<Copier> {
        let out = pipe::OpenOptions::new()
            .open_receiver(self.path("out"))
            .context("open stdout FIFO")?;
        let (exited_tx, exited) = tokio::sync::watch::channel(false);
        let mut jobs = vec![tokio::spawn(copy_out(out, false, exited.clone()))];
        if !self.tty {
            let err = pipe::OpenOptions::new()
                .open_receiver(self.path("err"))
                .context("open stderr FIFO")?;
            jobs.push(tokio::spawn(copy_out(err, true, exited)));
        }
        let raw = if self.tty && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            RawMode::enter().ok()
        } else {
            None
        };
        if self.tty {
            resize(c, id, exec_id).await;
            let (c2, id2, ex2) = (c.clone(), id.to_string(), exec_id.to_string());
            tokio::spawn(async move {
                use tokio::signal::unix::{signal, SignalKind};
                if let Ok(mut winch) = signal(SignalKind::window_change()) {
                    while winch.recv().await.is_some() {
                        resize(&c2, &id2, &ex2).await;
                    }
                }
            });
        }
        let input = if self.stdin {
            let tx = pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(self.path("in"))
                .context("open stdin FIFO")?;
            let (c2, id2, ex2) = (c.clone(), id.to_string(), exec_id.to_string());
            Some(tokio::spawn(async move {
                let mut tx = tx;
                let mut stdin = tokio::io::stdin();
                let mut buf = vec![0u8; 8192];
                loop {
                    match stdin.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                drop(tx);
                let _ = c2
                    .tasks()
                    .close_io(c2.req(pb::CloseIoRequest {
                        container_id: id2,
                        exec_id: ex2,
                        stdin: true,
                    }))
                    .await;
            }))
        } else {
            None
        };
        Ok(Copier {
            jobs,
            exited: exited_tx,
            input,
            _raw: raw,
        })
    }
}

/// Output still forwarded once the process has exited, at most this long: children that keep
/// the FIFO (or the terminal) open must not hold the CLI.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Copies a FIFO to our stdout/stderr until EOF: the FIFO is open read-only, so EOF comes once
/// every writer is gone (the shim closes its end after draining a terminal, which it may do
/// after the exit was reported). A read-only FIFO reports no EOF before a writer first opened
/// it, so opening it ahead of the shim is fine. After `exited`, at most [`DRAIN`] more.
async fn copy_out(
    mut rx: pipe::Receiver,
    err: bool,
    mut exited: tokio::sync::watch::Receiver<bool>,
) {
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if err {
        Box::new(tokio::io::stderr())
    } else {
        Box::new(tokio::io::stdout())
    };
    let copy = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if out.write_all(&buf[..n]).await.is_err() || out.flush().await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let deadline = async {
        let _ = exited.wait_for(|e| *e).await;
        tokio::time::sleep(DRAIN).await;
    };
    tokio::select! {
        _ = copy => {}
        _ = deadline => {}
    }
}

async fn resize(c: &Client, id: &str, exec_id: &str) {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let fd = std::os::fd::AsRawFd::as_raw_fd(&std::io::stdout().as_fd());
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } != 0 || ws.ws_col == 0 {
        return;
    }
    let _ = c
        .tasks()
        .resize_pty(c.req(pb::ResizePtyRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            width: ws.ws_col as u32,
            height: ws.ws_row as u32,
        }))
        .await
        .explain(c, "");
}

/// Copies in flight; `finish` lets output drain after the process exits.
pub struct Copier {
    jobs: Vec<tokio::task::JoinHandle<()>>,
    exited: tokio::sync::watch::Sender<bool>,
    input: Option<tokio::task::JoinHandle<()>>,
    _raw: Option<RawMode>,
}

impl Copier {
    pub async fn finish(self) {
        if let Some(i) = &self.input {
            i.abort();
        }
        self.exited.send_replace(true);
        for j in self.jobs {
            let _ = j.await;
        }
    }
}

/// The terminal in raw mode for a -t session, restored on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin().as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}
