//! PortForward over WebSocket (`v4.channel.k8s.io`, its base64 variant, or no subprotocol),
//! as kubelet serves it: the ports are fixed when the session starts; port i gets channel 2i
//! for data both ways and 2i+1 for errors, and the server first writes the port (16 bits,
//! little-endian) on both. Each port is one TCP connection into the pod for the whole session,
//! which ends when every forward has ended.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::portforward::{splice, Connect};
use super::ws_frame::{self, Framing};

/// The subprotocols, the server's preference first ("": none named).
pub const PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""];

/// How long the pod's side may go on sending after the client has gone.
const DRAIN: Duration = Duration::from_secs(1);

/// The ports of a WebSocket session: the request's, or else the URL's `port` query
/// parameters (each may be a comma-separated list), as kubelet reads them.
pub fn ports(requested: &[i32], query: Option<&str>) -> Result<Vec<u16>, String> {
    if !requested.is_empty() {
        return requested
            .iter()
            .map(|p| {
                u16::try_from(*p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or(format!("invalid port {p}"))
            })
            .collect();
    }
    let mut ports = Vec::new();
    let pairs = query.unwrap_or_default().split('&');
    for (k, v) in pairs.filter_map(|kv| kv.split_once('=')) {
        if k != "port" {
            continue;
        }
        // Digits and commas are all a port list has; a client may escape the commas.
        let v = v.replace("%2C", ",").replace("%2c", ",");
        if v.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in v.split(',') {
            match p.parse::<u16>() {
                Ok(n) if n > 0 => ports.push(n),
                _ => return Err(format!("unable to parse {p:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(ports)
}

pub async fn serve<T>(conn: T, protocol: String, pod: String, ports: Vec<u16>, connect: Connect)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Framing::of(&protocol);
    let (out, mut incoming, writer) = ws_frame::start(conn).await;
    let mut to_pods = Vec::with_capacity(ports.len());
    let mut forwards = tokio::task::JoinSet::new();
    for (i, port) in ports.iter().enumerate() {
        let Ok(data) = u8::try_from(2 * i) else {
            break; // more ports than channels: kubelet's channel numbers stop at 255 too
        };
        for channel in [data, data + 1] {
            let _ = out.send(framing.encode(channel, &port.to_le_bytes())).await;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(64);
        to_pods.push(tx);
        let f = Forward {
            framing,
            data,
            port: *port,
            out: out.clone(),
        };
        forwards.spawn(f.run(rx, pod.clone(), connect.clone()));
    }
    let pong = out.clone();
    // The client's messages go to their port's connection; the client going away ends every
    // forward's way into the pod.
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = incoming.next().await {
            if let Some((channel, b)) = framing.decode(&m) {
                let tx = (channel % 2 == 0)
                    .then(|| to_pods.get(usize::from(channel / 2)))
                    .flatten();
                if let Some(tx) = tx {
                    if !b.is_empty() {
                        let _ = tx.send(b).await;
                    }
                }
                continue;
            }
            if !ws_frame::control(m, &pong).await {
                break;
            }
        }
    });
    while forwards.join_next().await.is_some() {}
    ws_frame::close(out, writer).await;
    reader.abort();
}

/// One port's forward: its data channel and the session's outgoing messages.
struct Forward {
    framing: Framing,
    data: u8,
    port: u16,
    out: mpsc::Sender<Message>,
}

impl Forward {
    async fn run(self, mut from_client: mpsc::Receiver<Bytes>, pod: String, connect: Connect) {
        let tcp = match connect(self.port).await {
            Ok(t) => t,
            Err(e) => {
                let msg = format!("error forwarding port {} to pod {pod}: {e}", self.port);
                tracing::debug!(pod, msg, "streaming: port-forward");
                let _ = self
                    .out
                    .send(self.framing.encode(self.data + 1, msg.as_bytes()))
                    .await;
                return;
            }
        };
        let (framing, data, out) = (self.framing, self.data, self.out);
        // The client's side ends only with the session: the pod then has a moment to finish.
        splice(
            tcp,
            &mut from_client,
            |b| {
                let out = out.clone();
                async move { out.send(framing.encode(data, &b)).await.is_ok() }
            },
            Some(DRAIN),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_the_request_or_the_query() {
        assert_eq!(ports(&[8080, 53], Some("port=1")), Ok(vec![8080, 53]));
        assert_eq!(
            ports(&[], Some("port=80,81&port=82%2C83&x=1")),
            Ok(vec![80, 81, 82, 83])
        );
        assert!(ports(&[], None).unwrap_err().contains("required"));
        assert!(ports(&[], Some("port=")).unwrap_err().contains("empty"));
        assert!(ports(&[], Some("port=0")).unwrap_err().contains("\"0\""));
        assert!(ports(&[], Some("port=http")).is_err());
        assert!(ports(&[70000], None).is_err());
    }
}
