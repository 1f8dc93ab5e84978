//! Exec through the streaming server: the process runs as ExecSync's does (same process
//! settings, FIFOs in `<state>/cri/exec/<exec-id>`), with its stdio wired to the session's
//! streams, a terminal when asked (resizes go to the shim's ResizePty), stdin's end passed on
//! (and CloseIO for a terminal). The client going away kills the process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use wharf_api::cri as pb;
use wharf_runtime::{api, Shim};

use crate::exec::{mkfifo, process_spec, FifoDir};
use crate::streaming::{Io, Outcome, TermSize};
use crate::{Cri, Error, Result};

const SIGKILL: u32 = 9;
/// Output after the process exited is forwarded for at most this long (children holding the
/// FIFO open must not hold the session).
const DRAIN: Duration = Duration::from_secs(2);

/// Copies a FIFO to an output stream until EOF or the stream is gone.
pub(crate) async fn copy_out(mut r: pipe::Receiver, tx: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Forwards terminal sizes to the shim's ResizePty of one process.
pub(crate) async fn forward_resizes(
    shim: Arc<Shim>,
    exec_id: String,
    mut rx: mpsc::Receiver<TermSize>,
) {
    while let Some(s) = rx.recv().await {
        if let Err(e) = shim
            .resize_pty(&exec_id, s.width as u32, s.height as u32)
            .await
        {
            tracing::debug!(exec_id, error = %e, "streaming: resize");
        }
    }
}

/// How kubelet prints a command in its messages: `[a b c]`.
fn go_args(cmd: &[String]) -> String {
    format!("[{}]", cmd.join(" "))
}

fn open_rx(p: &Path) -> Result<pipe::Receiver> {
    pipe::OpenOptions::new()
        .open_receiver(p)
        .map_err(|e| Error::Internal(format!("open {}: {e}", p.display())))
}

impl Cri {
    /// Runs an Exec request's command with the session's streams; how it ended.
    pub(crate) async fn exec_streaming(&self, r: pb::ExecRequest, io: Io) -> Outcome {
        match self.exec_io(&r, io).await {
            Ok(0) => Outcome::Success,
            Ok(code) => Outcome::ExitCode(code, go_args(&r.cmd)),
            Err(e) => Outcome::Failed(format!("error executing command in container: {e}")),
        }
    }

    async fn exec_io(&self, r: &pb::ExecRequest, io: Io) -> Result<i32> {
        let (id, shim, process) = self.exec_target(&r.container_id, &r.cmd, r.tty).await?;
        let exec_id = format!("exec-{}", &crate::store::new_id()?[..16]);
        let dir = FifoDir(self.state.join("cri").join("exec").join(&exec_id));
        std::fs::create_dir_all(&dir.0)
            .map_err(|e| Error::Internal(format!("create {}: {e}", dir.0.display())))?;
        let fifo = |name: &str, used: bool| -> Result<String> {
            if !used {
                return Ok(String::new());
            }
            let p = dir.0.join(name);
            mkfifo(&p)?;
            Ok(p.display().to_string())
        };
        let stdin_path = fifo("stdin", io.stdin.is_some())?;
        let stdout_path = fifo("stdout", io.stdout.is_some())?;
        // With a terminal, stderr is the terminal too.
        let stderr_path = fifo("stderr", io.stderr.is_some() && !r.tty)?;
        let mut copies = Vec::new();
        if let Some(tx) = io.stdout {
            copies.push(tokio::spawn(copy_out(
                open_rx(Path::new(&stdout_path))?,
                tx,
            )));
        }
        if let (Some(tx), false) = (io.stderr, stderr_path.is_empty()) {
            copies.push(tokio::spawn(copy_out(
                open_rx(Path::new(&stderr_path))?,
                tx,
            )));
        }
        // Read-write, so opening never waits for the shim and the process sees EOF only when
        // this end is dropped.
        let stdin_tx = if stdin_path.is_empty() {
            None
        } else {
            Some(
                pipe::OpenOptions::new()
                    .read_write(true)
                    .open_sender(&stdin_path)
                    .map_err(|e| Error::Internal(format!("open {stdin_path}: {e}")))?,
            )
        };
        let req = api::ExecProcessRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
            terminal: r.tty,
            stdin: stdin_path,
            stdout: stdout_path,
            stderr: stderr_path,
            spec: process_spec(&process)?,
            ..Default::default()
        };
        let started = async {
            shim.exec(&req).await?;
            shim.start(&exec_id).await
        }
        .await;
        if let Err(e) = started {
            let _ = shim.delete(&exec_id).await;
            copies.iter().for_each(|c| c.abort());
            return Err(Error::from(e).context(format!("failed to exec in container {id}")));
        }
        let mut helpers = Vec::new();
        if let (Some(mut rx), Some(mut w)) = (io.stdin, stdin_tx) {
            let (shim, exec_id) = (shim.clone(), exec_id.clone());
            helpers.push(tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    if w.write_all(&b).await.is_err() {
                        break;
                    }
                }
                drop(w);
                let _ = shim.close_io(&exec_id, true).await;
            }));
        }
        if let (Some(rx), true) = (io.resize, r.tty) {
            helpers.push(tokio::spawn(forward_resizes(
                shim.clone(),
                exec_id.clone(),
                rx,
            )));
        }
        let gone = crate::streaming::remotecommand::client_gone(io.closed);
        let waited = tokio::select! {
            w = shim.wait(&exec_id) => w.map(|w| w.exit_status as i32),
            _ = gone => {
                tracing::debug!(id, exec_id, "streaming: client gone, killing the exec");
                let _ = shim.kill(&exec_id, SIGKILL, false).await;
                shim.wait(&exec_id).await.map(|w| w.exit_status as i32)
            }
        };
        helpers.iter().for_each(|h| h.abort());
        for c in copies {
            let abort = c.abort_handle();
            if tokio::time::timeout(DRAIN, c).await.is_err() {
                abort.abort();
            }
        }
        let _ = shim.delete(&exec_id).await;
        waited.map_err(|e| Error::from(e).context(format!("wait for exec in container {id}")))
    }
}
