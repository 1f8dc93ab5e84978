//! The WebSocket side kubelet's streaming protocols share (`channel.k8s.io` and its versions):
//! every message starts with its channel number. The `base64.` variants send text messages
//! instead, the channel as an ASCII digit and the payload in base64, for clients that cannot
//! handle binary messages.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// How a session's messages carry their channel and payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framing {
    base64: bool,
}

impl Framing {
    /// The framing of a negotiated subprotocol (none at all means binary).
    pub fn of(protocol: &str) -> Framing {
        Framing {
            base64: protocol == "base64.channel.k8s.io" || protocol.contains(".base64."),
        }
    }

    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64 {
            let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            s.push(char::from(b'0'.wrapping_add(channel)));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut s);
            return Message::Text(s.into());
        }
        let mut b = BytesMut::with_capacity(1 + data.len());
        b.put_u8(channel);
        b.put_slice(data);
        Message::Binary(b.freeze())
    }

    /// A data message's channel and payload; `None` for control messages, empty messages and
    /// payloads that do not decode.
    pub fn decode(self, m: &Message) -> Option<(u8, Bytes)> {
        match m {
            Message::Binary(b) if !self.base64 && !b.is_empty() => Some((b[0], b.slice(1..))),
            Message::Text(t) if self.base64 && !t.is_empty() => {
                let t = t.as_bytes();
                let data = base64::engine::general_purpose::STANDARD
                    .decode(&t[1..])
                    .ok()?;
                Some((t[0].wrapping_sub(b'0'), Bytes::from(data)))
            }
            _ => None,
        }
    }
}

/// The client's side of a session.
pub type Incoming<T> = futures::stream::SplitStream<WebSocketStream<T>>;

/// Takes over an upgraded connection as the server: messages sent on the returned sender go
/// out in order through one writer task, which stops after a Close; the stream is the
/// client's side.
pub async fn start<T>(conn: T) -> (mpsc::Sender<Message>, Incoming<T>, JoinHandle<()>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ws = WebSocketStream::from_raw_socket(conn, Role::Server, None).await;
    let (mut sink, incoming) = ws.split();
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
    (out, incoming, writer)
}

/// Handles a control message from the client: a ping is answered. Whether the session goes
/// on (not after a Close).
pub async fn control(m: Message, out: &mpsc::Sender<Message>) -> bool {
    match m {
        Message::Ping(p) => {
            let _ = out.send(Message::Pong(p)).await;
            true
        }
        Message::Close(_) => false,
        _ => true,
    }
}

/// Closes the session normally once everything queued before has gone out. `out` is the
/// session's last sender: the writer ends when it is dropped.
pub async fn close(out: mpsc::Sender<Message>, writer: JoinHandle<()>) {
    let _ = out
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await;
    drop(out);
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_base64_framing_round_trip() {
        let bin = Framing::of("v4.channel.k8s.io");
        let m = bin.encode(2, b"\x00hi");
        assert_eq!(m, Message::Binary(Bytes::from_static(b"\x02\x00hi")));
        assert_eq!(bin.decode(&m), Some((2, Bytes::from_static(b"\x00hi"))));
        assert_eq!(Framing::of(""), bin);

        for p in ["v4.base64.channel.k8s.io", "base64.channel.k8s.io"] {
            let b64 = Framing::of(p);
            let m = b64.encode(1, b"\x90\x1f");
            assert_eq!(m, Message::Text("1kB8=".into()));
            assert_eq!(b64.decode(&m), Some((1, Bytes::from_static(b"\x90\x1f"))));
            // A binary message is not data in a base64 session, nor bad base64.
            assert_eq!(
                b64.decode(&Message::Binary(Bytes::from_static(b"\x01a"))),
                None
            );
            assert_eq!(b64.decode(&Message::Text("0!!".into())), None);
        }
        assert_eq!(bin.decode(&Message::Text("0aGk=".into())), None);
        assert_eq!(bin.decode(&Message::Binary(Bytes::new())), None);
    }
}
