//! The client half of containerd's streams (the Streaming service) as wharfd's Transfer service
//! uses them: open one under a fresh id, then send a file's bytes on it, receive bytes from it,
//! or read progress events from it. Data moves as containerd's transfer helpers move it: the
//! receiver grants credit with `WindowUpdate`, the sender sends `Data` within it, and the end of
//! the data is the sender closing its side.

use anyhow::{bail, Context, Result};
use containerd_client::services::v1::{streaming_client::StreamingClient, StreamInit};
use containerd_client::types::transfer as tt;
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Client;

const TYPE_DATA: &str = "containerd.types.transfer.Data";
const TYPE_WINDOW_UPDATE: &str = "containerd.types.transfer.WindowUpdate";
const TYPE_PROGRESS: &str = "containerd.types.transfer.Progress";

/// Credit granted to wharfd at once when receiving.
const WINDOW: i64 = 1 << 20;
/// Largest Data message sent.
const MAX_CHUNK: usize = 256 << 10;

fn any<M: Message>(type_name: &str, m: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_name.to_string(),
        value: m.encode_to_vec(),
    }
}

fn kind(a: &prost_types::Any) -> &str {
    a.type_url.rsplit('/').next().unwrap_or("")
}

/// An open stream: its id (to name in a Transfer request) and both directions.
pub struct ClientStream {
    pub id: String,
    tx: mpsc::Sender<prost_types::Any>,
    rx: tonic::Streaming<prost_types::Any>,
}

/// Opens a stream on wharfd, `purpose` naming it (`import`, `export`, `progress`), and waits for
/// its acknowledgement: from then on a Transfer request may name it.
pub async fn open(c: &Client, purpose: &str) -> Result<ClientStream> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let id = format!("wharf-{purpose}-{}-{nanos}", std::process::id());
    let (tx, rx) = mpsc::channel::<prost_types::Any>(16);
    tx.send(any(
        "containerd.services.streaming.v1.StreamInit",
        &StreamInit { id: id.clone() },
    ))
    .await
    .context("open a stream")?;
    let outgoing =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut rx = StreamingClient::new(c.channel.clone())
        .stream(c.req(outgoing))
        .await
        .map_err(|e| c.explain(e, ""))?
        .into_inner();
    rx.message()
        .await
        .map_err(|e| c.explain(e, ""))?
        .context("wharfd closed the stream before acknowledging it")?;
    Ok(ClientStream { id, tx, rx })
}

impl ClientStream {
    /// Sends all of `r` within the credit wharfd grants, then closes this side (the end of the
    /// data) and waits for wharfd to close its side. Returns the bytes sent.
    pub async fn send_all<R: AsyncRead + Unpin>(self, mut r: R) -> Result<u64> {
        let ClientStream { tx, mut rx, .. } = self;
        let mut credit: i64 = 0;
        let mut sent = 0u64;
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            while credit <= 0 {
                match rx.message().await {
                    Ok(Some(a)) if kind(&a) == TYPE_WINDOW_UPDATE => {
                        credit += i64::from(
                            tt::WindowUpdate::decode(a.value.as_slice())
                                .context("bad WindowUpdate from wharfd")?
                                .update,
                        );
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => bail!("wharfd stopped reading after {sent} bytes"),
                    Err(e) => bail!("the stream broke after {sent} bytes: {}", e.message()),
                }
            }
            let n = buf.len().min(usize::try_from(credit).unwrap_or(MAX_CHUNK));
            let got = r.read(&mut buf[..n]).await.context("read the archive")?;
            if got == 0 {
                break;
            }
            let data = tt::Data {
                data: buf[..got].to_vec(),
            };
            if tx.send(any(TYPE_DATA, &data)).await.is_err() {
                bail!("the stream closed after {sent} bytes");
            }
            credit -= got as i64;
            sent += got as u64;
        }
        // The end of the data; wharfd closes the stream once it has read it (dropping the
        // response half before would cancel the call and could cut off what is in flight).
        drop(tx);
        while let Ok(Some(_)) = rx.message().await {}
        Ok(sent)
    }

    /// Writes what wharfd sends to `w` until it closes the stream; an error status from wharfd
    /// (the export failed half-way) is an error. Returns the bytes received.
    pub async fn receive_all<W: AsyncWrite + Unpin>(self, mut w: W) -> Result<u64> {
        let ClientStream { tx, mut rx, .. } = self;
        let update = |n: i64| {
            any(
                TYPE_WINDOW_UPDATE,
                &tt::WindowUpdate {
                    update: i32::try_from(n).unwrap_or(i32::MAX),
                },
            )
        };
        tx.send(update(WINDOW))
            .await
            .context("the stream closed before any data")?;
        let mut window = WINDOW;
        let mut received = 0u64;
        loop {
            match rx.message().await {
                Ok(Some(a)) if kind(&a) == TYPE_DATA => {
                    let data = tt::Data::decode(a.value.as_slice())
                        .context("bad Data from wharfd")?
                        .data;
                    w.write_all(&data).await.context("write the archive")?;
                    received += data.len() as u64;
                    window -= data.len() as i64;
                    if window < WINDOW / 2 {
                        // wharfd may have finished and closed: a refused update is harmless.
                        let _ = tx.send(update(WINDOW - window)).await;
                        window = WINDOW;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => bail!("{}", e.message()),
            }
        }
        w.flush().await.context("write the archive")?;
        Ok(received)
    }

    /// The next progress event; None when wharfd closed the stream (the transfer ended).
    pub async fn next_progress(&mut self) -> Option<tt::Progress> {
        loop {
            match self.rx.message().await {
                Ok(Some(a)) if kind(&a) == TYPE_PROGRESS => {
                    if let Ok(p) = tt::Progress::decode(a.value.as_slice()) {
                        return Some(p);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    }
}
