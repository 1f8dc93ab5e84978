//! Exec and attach over WebSocket (`v5.channel.k8s.io` … `channel.k8s.io`): binary messages
//! whose first byte is the channel (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize); v5 adds
//! a close signal (channel 255, then the channel closed) so a client can end stdin.

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::remotecommand::{status, Io, Outcome, ResizeDecoder};
use super::spdy_command::Wanted;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel.
pub const CLOSE: u8 = 255;

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(1 + data.len());
    b.put_u8(channel);
    b.put_slice(data);
    Message::Binary(b.freeze())
}

fn pump(channel: u8, out: mpsc::Sender<Message>) -> (mpsc::Sender<Bytes>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let h = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if out.send(framed(channel, &b)).await.is_err() {
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
    let ws = WebSocketStream::from_raw_socket(conn, Role::Server, None).await;
    let (mut sink, mut src) = ws.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let last = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let v5 = protocol.starts_with("v5.");
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
    let (resize_tx, resize_rx) = mpsc::channel(8);
    let (gone_tx, gone) = watch::channel(false);
    let pong = out.clone();
    let reader = tokio::spawn(async move {
        let mut stdin = want.stdin.then_some(stdin_tx);
        let mut resize = ResizeDecoder::new();
        while let Some(Ok(m)) = src.next().await {
            match m {
                Message::Binary(b) if !b.is_empty() => match b[0] {
                    STDIN => {
                        if let Some(tx) = &stdin {
                            if b.len() > 1 && tx.send(b.slice(1..)).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    RESIZE => {
                        for s in resize.push(&b[1..]) {
                            let _ = resize_tx.send(s).await;
                        }
                    }
                    CLOSE if v5 && b.get(1) == Some(&STDIN) => stdin = None,
                    _ => {}
                },
                Message::Ping(p) => {
                    let _ = pong.send(Message::Pong(p)).await;
                }
                Message::Close(_) => break,
                _ => {}
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
        let (tx, h) = pump(STDOUT, out.clone());
        io.stdout = Some(tx);
        pumps.push(h);
    }
    if want.stderr {
        let (tx, h) = pump(STDERR, out.clone());
        io.stderr = Some(tx);
        pumps.push(h);
    }
    let outcome = run(io).await;
    for p in pumps {
        let _ = p.await;
    }
    let st = status(&protocol, &outcome);
    if !st.is_empty() {
        let _ = out.send(framed(ERROR, &st)).await;
    }
    let _ = out
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    drop(out);
    let _ = writer.await;
    reader.abort();
}
