//! Test clients of the CRI streaming server: a SPDY/3.1 client (the kubelet's remote-command
//! and port-forward protocols) and a WebSocket one (`v5.channel.k8s.io` and the others,
//! binary or base64), over a plain
//! HTTP/1.1 upgrade. The SPDY framing is wharf-cri's own codec; what it checks on top is the
//! protocol: the upgrade, stream roles, FIN/EOF, statuses.

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use wharf_cri::streaming::spdy::{Codec, Frame};

/// `http://host:port/path` split.
fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url.strip_prefix("http://").context("not an http URL")?;
    let (host, path) = rest.split_once('/').context("URL has no path")?;
    Ok((host.to_string(), format!("/{path}")))
}

/// Sends an upgrade request; the status code and headers of the answer, and the connection.
pub async fn upgrade(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String, TcpStream)> {
    let (host, path) = split_url(url)?;
    let mut tcp = TcpStream::connect(&host).await?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await?;
    // Byte by byte up to the blank line: nothing after it may be consumed here.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        if tcp.read(&mut b).await? == 0 {
            bail!(
                "connection closed in the response head: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    Ok((code, head, tcp))
}

/// A SPDY client session: streams it opened, and what arrived on each.
pub struct Spdy {
    w: OwnedWriteHalf,
    codec: Codec,
    next: u32,
    incoming: mpsc::UnboundedReceiver<Frame>,
    /// Data received per stream, and whether it ended (FIN/RST).
    pub data: HashMap<u32, (Vec<u8>, bool)>,
    /// Streams the server replied to.
    pub replied: Vec<u32>,
    pub goaway: bool,
}

impl Spdy {
    /// Upgrades to SPDY/3.1 offering `protocols`; the chosen one.
    pub async fn connect(url: &str, protocols: &[&str]) -> Result<(Spdy, String)> {
        let mut h = vec![("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")];
        for p in protocols {
            h.push(("X-Stream-Protocol-Version", p));
        }
        let (code, head, tcp) = upgrade(url, &h).await?;
        if code != 101 {
            bail!("upgrade answered {code}: {head}");
        }
        let chosen = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-stream-protocol-version:")
                    .map(|v| v.trim().to_string())
            })
            .unwrap_or_default();
        let (r, w) = tcp.into_split();
        let (tx, incoming) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(r, tx));
        Ok((
            Spdy {
                w,
                codec: Codec::new()?,
                next: 1,
                incoming,
                data: HashMap::new(),
                replied: Vec::new(),
                goaway: false,
            },
            chosen,
        ))
    }

    async fn send(&mut self, f: Frame) -> Result<()> {
        let b = self.codec.encode(&f)?;
        self.w.write_all(&b).await?;
        Ok(())
    }

    /// Opens a stream with these headers; its id.
    pub async fn open(&mut self, headers: &[(&str, &str)]) -> Result<u32> {
        let id = self.next;
        self.next += 2;
        self.send(Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
        .await?;
        Ok(id)
    }

    pub async fn write(&mut self, id: u32, data: &[u8]) -> Result<()> {
        self.send(Frame::Data {
            stream_id: id,
            flags: 0,
            data: bytes::Bytes::copy_from_slice(data),
        })
        .await
    }

    /// Half-closes a stream (FIN).
    pub async fn close(&mut self, id: u32) -> Result<()> {
        self.send(Frame::Data {
            stream_id: id,
            flags: 1,
            data: bytes::Bytes::new(),
        })
        .await
    }

    /// Handles the next frame from the server; false once the connection ended.
    pub async fn pump(&mut self) -> bool {
        let Some(f) = self.incoming.recv().await else {
            return false;
        };
        match f {
            Frame::SynReply { stream_id, .. } => self.replied.push(stream_id),
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let e = self.data.entry(stream_id).or_default();
                e.0.extend_from_slice(&data);
                e.1 |= flags & 1 != 0;
            }
            Frame::RstStream { stream_id, .. } => self.data.entry(stream_id).or_default().1 = true,
            Frame::GoAway { .. } => self.goaway = true,
            _ => {}
        }
        true
    }

    /// Reads until `done` holds (or the connection ends: then it fails).
    pub async fn until(&mut self, mut done: impl FnMut(&Spdy) -> bool) -> Result<()> {
        while !done(self) {
            if !self.pump().await {
                bail!("connection ended; received {:?}", self.text());
            }
        }
        Ok(())
    }

    /// Reads until the connection ends.
    pub async fn to_end(&mut self) {
        while self.pump().await {}
    }

    pub fn ended(&self, id: u32) -> bool {
        self.data.get(&id).is_some_and(|d| d.1)
    }

    pub fn got(&self, id: u32) -> String {
        self.data
            .get(&id)
            .map(|d| String::from_utf8_lossy(&d.0).to_string())
            .unwrap_or_default()
    }

    fn text(&self) -> HashMap<u32, String> {
        self.data.keys().map(|k| (*k, self.got(*k))).collect()
    }
}

async fn read_frames(mut r: OwnedReadHalf, tx: mpsc::UnboundedSender<Frame>) {
    let Ok(mut codec) = Codec::new() else { return };
    while let Ok(Some(f)) = codec.read(&mut r).await {
        if tx.send(f).is_err() {
            return;
        }
    }
}

/// A WebSocket client of the channel protocols: messages per channel. The `base64.` protocols
/// send text messages, the channel a digit and the payload in base64.
pub struct Ws {
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
    pub protocol: String,
    pub channels: HashMap<u8, Vec<u8>>,
    pub closed: bool,
}

impl Ws {
    /// Connects offering `protocols` (a comma-separated list; empty: no subprotocol header).
    pub async fn connect(url: &str, protocols: &str) -> Result<Ws> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let (host, _) = split_url(url)?;
        let ws_url = url.replacen("http://", "ws://", 1);
        let mut req = ws_url.into_client_request()?;
        if !protocols.is_empty() {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", protocols.parse()?);
        }
        let tcp = TcpStream::connect(&host).await?;
        let (ws, resp) = tokio_tungstenite::client_async(req, tcp).await?;
        let protocol = resp
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        Ok(Ws {
            ws,
            protocol,
            channels: HashMap::new(),
            closed: false,
        })
    }

    fn base64(&self) -> bool {
        self.protocol.contains("base64.")
    }

    pub async fn send(&mut self, channel: u8, data: &[u8]) -> Result<()> {
        use base64::Engine;
        use tokio_tungstenite::tungstenite::Message;
        let m = if self.base64() {
            let b64 = base64::engine::general_purpose::STANDARD.encode(data);
            Message::Text(format!("{}{b64}", char::from(b'0' + channel)).into())
        } else {
            let mut m = vec![channel];
            m.extend_from_slice(data);
            Message::Binary(m.into())
        };
        self.ws.send(m).await?;
        Ok(())
    }

    /// Reads messages until the server closes.
    pub async fn to_end(&mut self) -> Result<()> {
        use base64::Engine;
        use tokio_tungstenite::tungstenite::Message;
        let base64 = self.base64();
        while let Some(m) = self.ws.next().await {
            match m? {
                Message::Binary(b) if !b.is_empty() => {
                    anyhow::ensure!(!base64, "binary message in a base64 session");
                    self.channels
                        .entry(b[0])
                        .or_default()
                        .extend_from_slice(&b[1..])
                }
                Message::Text(t) if !t.is_empty() => {
                    anyhow::ensure!(base64, "text message in a binary session: {t:?}");
                    let t = t.as_bytes();
                    let data = base64::engine::general_purpose::STANDARD
                        .decode(&t[1..])
                        .context("message payload is not base64")?;
                    self.channels
                        .entry(t[0] - b'0')
                        .or_default()
                        .extend_from_slice(&data)
                }
                Message::Close(_) => {
                    self.closed = true;
                    break;
                }
                _ => {}
            }
        }
        Ok(())
    }

    pub fn got(&self, channel: u8) -> String {
        self.channels
            .get(&channel)
            .map(|d| String::from_utf8_lossy(d).to_string())
            .unwrap_or_default()
    }
}
