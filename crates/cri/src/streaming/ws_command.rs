//! Exec and attach over WebSocket (`v5.channel.k8s.io` … `channel.k8s.io`, and the base64
//! variants): messages on channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize
//! ([`ws_frame`](super::ws_frame)); v5 adds a close signal (channel 255, then the channel
//! closed) so a client can end stdin.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use super::remotecommand::{status, Io, Outcome, ResizeDecoder};
use super::spdy_command::Wanted;
use super::ws_frame::{self, Framing};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel.
pub const CLOSE: u8 = 255;

fn pump(
    framing: Framing,
    channel: u8,
    out: mpsc::Sender<Message>,
) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let h = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if out.send(framing.encode(channel, &b)).await.is_err() {
                return;
            }
        }
    });
    (tx, h)
}

pub async fn serve<T>(
    conn: T,
    protocol: String,
    want: Wanted,
    run: impl FnOnce(Io) -> BoxFuture<'static, Outcome>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Framing::of(&protocol);
    let (out, mut src, writer) = ws_frame::start(conn).await;
    let v5 = protocol.starts_with("v5.");
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel(8);
    let (gone_tx, gone) = watch::channel(false);
    let pong = out.clone();
    let reader = tokio::spawn(async move {
        let mut stdin = want.stdin.then_some(stdin_tx);
        let mut resize = ResizeDecoder::new();
        while let Some(Ok(m)) = src.next().await {
            if let Some((channel, b)) = framing.decode(&m) {
                match channel {
                    STDIN => {
                        if let Some(tx) = &stdin {
                            if !b.is_empty() && tx.send(b).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    RESIZE => {
                        for s in resize.push(&b) {
                            let _ = resize_tx.send(s).await;
                        }
                    }
                    CLOSE if v5 && b.first() == Some(&STDIN) => stdin = None,
                    _ => {}
                }
                continue;
            }
            if !ws_frame::control(m, &pong).await {
                break;
            }
        }
        let _ = gone_tx.send(true);
    });
    let mut io = Io {
        stdin: want.stdin.then_some(stdin_rx),
        resize: want.tty.then_some(resize_rx),
        closed: Some(gone),
        ..Default::default()
    };
    let mut pumps = Vec::new();
    if want.stdout {
        let (tx, h) = pump(framing, STDOUT, out.clone());
        io.stdout = Some(tx);
        pumps.push(h);
    }
    if want.stderr {
        let (tx, h) = pump(framing, STDERR, out.clone());
        io.stderr = Some(tx);
        pumps.push(h);
    }
    let outcome = run(io).await;
    for p in pumps {
        let _ = p.await;
    }
    let st = status(&protocol, &outcome);
    if !st.is_empty() {
        let _ = out.send(framing.encode(ERROR, &st)).await;
    }
    ws_frame::close(out, writer).await;
    reader.abort();
}
