//! PortForward over SPDY/3.1 (`portforward.k8s.io`): the client opens a pair of streams per
//! connection, `streamtype` error and data, with the same `port` and `requestid`; each pair
//! becomes a TCP connection to that port inside the pod, bytes copied both ways. Failures are
//! written on the pair's error stream. The session lasts until the client hangs up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy::{header, Session, Stream};

pub const PROTOCOL: &str = "portforward.k8s.io";

/// Opens a connection to a port of the pod.
pub type Connect = Arc<dyn Fn(u16) -> BoxFuture<'static, Result<TcpStream, String>> + Send + Sync>;

/// The pair a stream belongs to: its `requestid`, or (older clients) derived from the stream
/// id, the data stream following its error stream.
fn request_id(s: &Stream, kind: &str) -> String {
    match header(&s.headers, "requestid") {
        Some(id) => id.to_string(),
        None if kind == "data" => s.id.saturating_sub(2).to_string(),
        None => s.id.to_string(),
    }
}

pub async fn serve<T>(conn: T, pod: String, connect: Connect)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let mut session = match Session::start(conn) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "streaming: start SPDY session");
            return;
        }
    };
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(s) = session.streams.recv().await {
        let kind = header(&s.headers, "streamtype")
            .unwrap_or_default()
            .to_string();
        let id = request_id(&s, &kind);
        let entry = pending.entry(id.clone()).or_default();
        match kind.as_str() {
            "error" => entry.0 = Some(s),
            "data" => entry.1 = Some(s),
            _ => {
                s.writer.reset().await;
                continue;
            }
        }
        if matches!(pending.get(&id), Some((Some(_), Some(_)))) {
            if let Some((Some(error), Some(data))) = pending.remove(&id) {
                tasks.spawn(forward(error, data, pod.clone(), connect.clone()));
            }
        }
        // Reap finished forwards as we go.
        while tasks.try_join_next().is_some() {}
    }
    tasks.shutdown().await;
    session.close().await;
}

/// Reports a failed forward on the pair's error stream and drops the pair.
async fn fail(error: &Stream, data: &Stream, pod: &str, msg: String) {
    tracing::debug!(pod, msg, "streaming: port-forward");
    let _ = error.writer.write(msg.as_bytes()).await;
    error.writer.close().await;
    data.writer.reset().await;
}

/// Copies between a connection into the pod and its client: what `from_client` yields goes in,
/// what comes out goes to `send` (false: the client is gone). Ends when the pod's side ends;
/// if the client's side ends first, the pod has `drain` (None: as long as it takes) to finish
/// its answer.
pub async fn splice<F, Fut>(
    tcp: TcpStream,
    from_client: &mut mpsc::Receiver<Bytes>,
    mut send: F,
    drain: Option<Duration>,
) where
    F: FnMut(Bytes) -> Fut,
    Fut: Future<Output = bool>,
{
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = async {
        while let Some(b) = from_client.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let from_pod = async {
        // Each read is handed on as it is, without a copy.
        let mut buf = BytesMut::new();
        loop {
            buf.reserve(32 << 10);
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if !send(buf.split().freeze()).await {
                        break;
                    }
                }
            }
        }
    };
    tokio::pin!(to_pod, from_pod);
    tokio::select! {
        _ = &mut to_pod => match drain {
            Some(d) => { let _ = tokio::time::timeout(d, from_pod).await; }
            None => from_pod.await,
        },
        _ = &mut from_pod => {}
    }
}

async fn forward(error: Stream, mut data: Stream, pod: String, connect: Connect) {
    let port = header(&data.headers, "port").unwrap_or_default();
    let Some(port) = port.parse::<u16>().ok().filter(|p| *p > 0) else {
        return fail(&error, &data, &pod, format!("invalid port {port:?}")).await;
    };
    let tcp = match connect(port).await {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port} to pod {pod}: {e}");
            return fail(&error, &data, &pod, msg).await;
        }
    };
    let writer = data.writer.clone();
    splice(
        tcp,
        &mut data.data,
        |b| {
            let w = writer.clone();
            async move { w.write(&b).await.is_ok() }
        },
        None,
    )
    .await;
    writer.close().await;
    error.writer.close().await;
}
