//! A server-side SPDY/3.1 session over an upgraded connection: every stream the client opens
//! is answered with SYN_REPLY at once (the client waits for it) and handed over as a
//! [`Stream`]; what the server writes goes through one writer task in order. Received data is
//! acknowledged with WINDOW_UPDATE as it is read, so a client that honours flow control is
//! never stalled; the server itself sends without waiting for windows (as the kubelet's
//! spdystream does).

use std::collections::HashMap;
use std::io;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::frame::{Codec, Frame, Headers, FLAG_FIN};

/// Data frames the server sends are at most this large.
const MAX_DATA: usize = 32 << 10;
/// Frames buffered per stream before the reader waits for the handler.
const STREAM_BUFFER: usize = 64;

enum Out {
    Frame(Frame),
    Close,
}

/// One stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends; ends at its FIN or RST_STREAM (or when the connection ends).
    pub data: mpsc::Receiver<Bytes>,
    pub writer: Writer,
}

/// Writes to one stream (cheap to clone).
#[derive(Clone)]
pub struct Writer {
    id: u32,
    out: mpsc::Sender<Out>,
}

impl Writer {
    fn gone() -> io::Error {
        io::Error::new(io::ErrorKind::BrokenPipe, "spdy: connection closed")
    }

    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_DATA) {
            self.out
                .send(Out::Frame(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: Bytes::copy_from_slice(chunk),
                }))
                .await
                .map_err(|_| Self::gone())?;
        }
        Ok(())
    }

    /// Half-closes the stream (FIN): the client reads EOF.
    pub async fn close(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }))
            .await;
    }

    /// Aborts the stream (RST_STREAM, CANCEL).
    pub async fn reset(&self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.id,
                status: 5,
            }))
            .await;
    }
}

/// A running session.
pub struct Session {
    /// The streams the client opens, in order.
    pub streams: mpsc::Receiver<Stream>,
    out: mpsc::Sender<Out>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    gone: watch::Receiver<bool>,
}

impl Session {
    pub fn start<T>(io: T) -> io::Result<Session>
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(256);
        let (streams_tx, streams) = mpsc::channel(16);
        let writer = tokio::spawn(write_loop(wr, Codec::new()?, out_rx));
        let out_r = out.clone();
        let (gone_tx, gone) = watch::channel(false);
        let reader = tokio::spawn(async move {
            read_loop(rd, Codec::new_reader(), out_r, streams_tx).await;
            let _ = gone_tx.send(true);
        });
        Ok(Session {
            streams,
            out,
            reader,
            writer,
            gone,
        })
    }

    /// Becomes true when the client has gone (its side of the connection ended).
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }

    /// Says GOAWAY, flushes what was written and closes the connection.
    pub async fn close(self) {
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_stream_id: 0,
                status: 0,
            }))
            .await;
        let _ = self.out.send(Out::Close).await;
        drop(self.out);
        let _ = self.writer.await;
        self.reader.abort();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut codec: Codec,
    mut rx: mpsc::Receiver<Out>,
) {
    while let Some(o) = rx.recv().await {
        let f = match o {
            Out::Frame(f) => f,
            Out::Close => break,
        };
        let bytes = match codec.encode(&f) {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(error = %e, "spdy: encode");
                break;
            }
        };
        if w.write_all(&bytes).await.is_err() {
            break;
        }
        // Write out what is queued before waiting for more.
        if rx.is_empty() && w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    mut codec: Codec,
    out: mpsc::Sender<Out>,
    streams: mpsc::Sender<Stream>,
) {
    let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    loop {
        let frame = match codec.read(&mut r).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "spdy: read");
                break;
            }
        };
        let send = |f: Frame| {
            let out = out.clone();
            async move { out.send(Out::Frame(f)).await.is_ok() }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                if !send(Frame::SynReply {
                    stream_id,
                    flags: 0,
                    headers: Vec::new(),
                })
                .await
                {
                    break;
                }
                let (tx, data) = mpsc::channel(STREAM_BUFFER);
                if flags & FLAG_FIN == 0 {
                    open.insert(stream_id, tx);
                }
                let s = Stream {
                    id: stream_id,
                    headers,
                    data,
                    writer: Writer {
                        id: stream_id,
                        out: out.clone(),
                    },
                };
                let _ = streams.send(s).await;
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let n = data.len() as u32;
                let handler_gone = match open.get(&stream_id) {
                    Some(tx) if !data.is_empty() => tx.send(data).await.is_err(),
                    _ => false,
                };
                if handler_gone {
                    open.remove(&stream_id);
                }
                if flags & FLAG_FIN != 0 {
                    open.remove(&stream_id);
                } else if n > 0
                    && !send(Frame::WindowUpdate {
                        stream_id,
                        delta: n,
                    })
                    .await
                {
                    break;
                }
            }
            Frame::RstStream { stream_id, .. } => {
                open.remove(&stream_id);
            }
            Frame::Ping(id) => {
                if !send(Frame::Ping(id)).await {
                    break;
                }
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings(_)
            | Frame::WindowUpdate { .. }
            | Frame::Other(_) => {}
        }
    }
}
