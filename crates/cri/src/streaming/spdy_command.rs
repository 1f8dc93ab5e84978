//! Exec and attach over SPDY/3.1: the client opens one stream per stdio channel it asked for
//! (`streamtype` error, stdin, stdout, stderr, resize) within a time limit; the command runs
//! with them; output streams are closed, the status goes on the error stream, and the
//! connection is closed.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::remotecommand::{has_resize, status, Io, Outcome, ResizeDecoder, TermSize};
use super::spdy::{header, session::Writer, Session};

/// How long the client has to open its streams (the kubelet's stream creation timeout).
pub const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The channels the request asked for.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Copies what the command writes to a stream; FIN once the command drops its sender.
pub fn pump(w: Writer) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let h = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if w.write(&b).await.is_err() {
                return;
            }
        }
        w.close().await;
    });
    (tx, h)
}

/// Turns a resize stream's bytes into sizes.
pub fn resizes(mut data: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TermSize> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut d = ResizeDecoder::new();
        while let Some(b) = data.recv().await {
            for s in d.push(&b) {
                if tx.send(s).await.is_err() {
                    return;
                }
            }
        }
    });
    rx
}

pub async fn serve<T>(
    conn: T,
    protocol: String,
    want: Wanted,
    run: impl FnOnce(Io) -> BoxFuture<'static, Outcome>,
) where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = match Session::start(conn) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "streaming: start SPDY session");
            return;
        }
    };
    let expected = 1
        + want.stdin as usize
        + want.stdout as usize
        + want.stderr as usize
        + (want.tty && has_resize(&protocol)) as usize;
    let mut got = HashMap::new();
    let waited = tokio::time::timeout(STREAM_CREATION_TIMEOUT, async {
        while got.len() < expected {
            let Some(s) = session.streams.recv().await else {
                return false;
            };
            let kind = header(&s.headers, "streamtype")
                .unwrap_or_default()
                .to_string();
            got.insert(kind, s);
        }
        true
    })
    .await;
    let Some(error) = got.remove("error").filter(|_| matches!(waited, Ok(true))) else {
        tracing::debug!(protocol, "streaming: the client did not open its streams");
        session.close().await;
        return;
    };
    let mut io = Io {
        closed: Some(session.closed()),
        ..Default::default()
    };
    let mut pumps = Vec::new();
    if let Some(s) = got.remove("stdin").filter(|_| want.stdin) {
        io.stdin = Some(s.data);
    }
    if let Some(s) = got.remove("stdout").filter(|_| want.stdout) {
        let (tx, h) = pump(s.writer);
        io.stdout = Some(tx);
        pumps.push(h);
    }
    if let Some(s) = got.remove("stderr").filter(|_| want.stderr) {
        let (tx, h) = pump(s.writer);
        io.stderr = Some(tx);
        pumps.push(h);
    }
    if let Some(s) = got.remove("resize") {
        io.resize = Some(resizes(s.data));
    }
    let outcome = run(io).await;
    for p in pumps {
        let _ = p.await;
    }
    let st = status(&protocol, &outcome);
    if !st.is_empty() {
        let _ = error.writer.write(&st).await;
    }
    error.writer.close().await;
    session.close().await;
}
