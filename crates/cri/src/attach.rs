//! Attach: a session joined to a running container's stdio.
//!
//! The shim writes a CRI container's output straight into its CRI log (no daemon copies it),
//! so attach follows that log from its end (reopening it after kubelet's rotation) and splits
//! its records back into stdout and stderr. Containers whose config asks for stdin get a FIFO
//! at start, `<state>/cri/io/<id>/stdin`, whose write end wharfd holds (read-write, so the
//! container never sees EOF while nobody is attached); attached clients write into it, and
//! with `stdin_once` the first client's end of input closes it for good.

use std::io::SeekFrom;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use wharf_api::cri as pb;

use crate::exec::mkfifo;
use crate::exec_stream::forward_resizes;
use crate::streaming::{Io, Outcome};
use crate::{Cri, Error, Result};

/// How often the log is polled for new records while attached.
const POLL: Duration = Duration::from_millis(20);

/// The shared stdin of one container (None once closed for good).
pub(crate) type Stdin = Arc<tokio::sync::Mutex<Option<pipe::Sender>>>;

fn stdin_dir(state: &Path, id: &str) -> PathBuf {
    state.join("cri").join("io").join(id)
}

/// One record of a CRI log line: `<time> <stream> <P|F> <text>`.
fn parse_record(line: &[u8]) -> Option<(&[u8], bool, &[u8])> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let _time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some((stream, tag.first() == Some(&b'P'), text))
}

/// The log file open, with its inode (to notice rotation).
async fn open_log(p: &Path) -> Option<(tokio::fs::File, u64)> {
    let f = tokio::fs::File::open(p).await.ok()?;
    let ino = f.metadata().await.ok()?.ino();
    Some((f, ino))
}

/// The log open at its current end: what the container writes from now on.
async fn log_end(p: &Path) -> Option<(tokio::fs::File, u64)> {
    let (mut f, ino) = open_log(p).await?;
    f.seek(SeekFrom::End(0)).await.ok()?;
    Some((f, ino))
}

/// Follows the log at `path` (opened at `at`) and sends each record's text to its stream
/// (all to stdout with a terminal) until `stop` is set and the file is read to its end.
async fn follow_log(
    path: PathBuf,
    at: (tokio::fs::File, u64),
    stdout: Option<mpsc::Sender<Bytes>>,
    stderr: Option<mpsc::Sender<Bytes>>,
    tty: bool,
    mut stop: watch::Receiver<bool>,
) {
    let (mut file, mut ino) = at;
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = file.read(&mut buf).await.unwrap_or(0);
        if n > 0 {
            pending.extend_from_slice(&buf[..n]);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Some((stream, partial, text)) = parse_record(&line[..line.len() - 1]) else {
                    continue;
                };
                let mut out = text.to_vec();
                if !partial {
                    out.push(b'\n');
                }
                let to = if stream == b"stderr" && !tty {
                    &stderr
                } else {
                    &stdout
                };
                if let Some(tx) = to {
                    if tx.send(Bytes::from(out)).await.is_err() {
                        return;
                    }
                }
            }
            continue;
        }
        if *stop.borrow() {
            return;
        }
        // A renamed log (kubelet's rotation): go on in the new file from its start.
        if let Ok(m) = tokio::fs::metadata(&path).await {
            if m.ino() != ino {
                if let Some((f, i)) = open_log(&path).await {
                    (file, ino) = (f, i);
                    pending.clear();
                    continue;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

impl Cri {
    /// Makes the stdin FIFO of a container whose config asks for stdin; its path for the task.
    pub(crate) fn open_container_stdin(&self, id: &str) -> Result<String> {
        let dir = stdin_dir(&self.state, id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
        let p = dir.join("stdin");
        let _ = std::fs::remove_file(&p);
        mkfifo(&p)?;
        let tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&p)
            .map_err(|e| Error::Internal(format!("open {}: {e}", p.display())))?;
        self.stdins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Arc::new(tokio::sync::Mutex::new(Some(tx))));
        Ok(p.display().to_string())
    }

    /// The container's stdin; after a wharfd restart its FIFO is opened again.
    fn container_stdin(&self, id: &str) -> Option<Stdin> {
        let mut m = self.stdins.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = m.get(id) {
            return Some(s.clone());
        }
        let p = stdin_dir(&self.state, id).join("stdin");
        let tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&p)
            .ok()?;
        let s: Stdin = Arc::new(tokio::sync::Mutex::new(Some(tx)));
        m.insert(id.to_string(), s.clone());
        Some(s)
    }

    /// Forgets a container's stdin and removes its FIFO (the container is gone).
    pub(crate) fn drop_container_stdin(&self, id: &str) {
        self.stdins
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        let _ = std::fs::remove_dir_all(stdin_dir(&self.state, id));
    }

    pub(crate) async fn attach_streaming(&self, r: pb::AttachRequest, io: Io) -> Outcome {
        match self.attach_io(&r, io).await {
            Ok(()) => Outcome::Success,
            Err(e) => Outcome::Failed(format!("error attaching to container: {e}")),
        }
    }

    async fn attach_io(&self, r: &pb::AttachRequest, io: Io) -> Result<()> {
        let c = self.container(&r.container_id)?;
        let id = c.id().to_string();
        let shim = self.running_shim(&id).await?;
        let tty = c.config.tty;
        // The log's end is taken before any input is passed on, so no reply is missed.
        let log = if !c.meta.log_path.is_empty() && (io.stdout.is_some() || io.stderr.is_some()) {
            log_end(Path::new(&c.meta.log_path)).await
        } else {
            None
        };
        let mut helpers = Vec::new();
        if let Some(mut rx) = io.stdin {
            let stdin = if c.config.stdin {
                self.container_stdin(&id)
            } else {
                None
            };
            let once = c.config.stdin_once;
            let shim = shim.clone();
            helpers.push(tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    // Input for a container without stdin is dropped, as containerd does.
                    let Some(s) = &stdin else { continue };
                    let mut w = s.lock().await;
                    let Some(pipe) = w.as_mut() else { continue };
                    if pipe.write_all(&b).await.is_err() {
                        break;
                    }
                }
                if let (Some(s), true) = (&stdin, once) {
                    s.lock().await.take();
                    let _ = shim.close_io("", true).await;
                }
            }));
        }
        if let (Some(rx), true) = (io.resize, tty) {
            helpers.push(tokio::spawn(forward_resizes(
                shim.clone(),
                String::new(),
                rx,
            )));
        }
        let (stop_tx, stop) = watch::channel(false);
        let follow = log.map(|at| {
            tokio::spawn(follow_log(
                PathBuf::from(&c.meta.log_path),
                at,
                io.stdout,
                io.stderr,
                tty,
                stop,
            ))
        });
        let gone = crate::streaming::remotecommand::client_gone(io.closed);
        // Attached until the container exits or the client leaves.
        tokio::select! {
            _ = shim.wait("") => {}
            _ = gone => {}
        }
        let _ = stop_tx.send(true);
        if let Some(f) = follow {
            let abort = f.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), f)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        helpers.iter().for_each(|h| h.abort());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_log_records() {
        let (s, p, t) = parse_record(b"2026-01-01T00:00:00.1Z stdout F hello world").unwrap();
        assert_eq!((s, p, t), (&b"stdout"[..], false, &b"hello world"[..]));
        let (s, p, t) = parse_record(b"2026-01-01T00:00:00.1Z stderr P ").unwrap();
        assert_eq!((s, p, t), (&b"stderr"[..], true, &b""[..]));
        assert!(parse_record(b"garbage").is_none());
    }
}
