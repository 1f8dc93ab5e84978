//! What exec and attach sessions have in common whatever the wire protocol: the streams a
//! command gets ([`Io`]), terminal sizes, and the status written on the error stream at the end
//! (`metav1.Status` JSON for the v4/v5 protocols, a plain message for the older ones).

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};

/// The SPDY remote-command protocols, the server's preference first.
pub const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The WebSocket remote-command subprotocols ("": a client that names none, binary as
/// kubelet takes it).
pub const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
];

/// A terminal size as clients send it on the resize stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The command's side of a session. Output senders are dropped when the command is done; the
/// protocol then closes those streams.
#[derive(Default)]
pub struct Io {
    /// Ends when the client closes stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub stdout: Option<mpsc::Sender<Bytes>>,
    pub stderr: Option<mpsc::Sender<Bytes>>,
    pub resize: Option<mpsc::Receiver<TermSize>>,
    /// Becomes true when the client has gone (the command is then stopped).
    pub closed: Option<watch::Receiver<bool>>,
}

/// Resolves once the client of `closed` has gone; never without a watch.
pub async fn client_gone(closed: Option<watch::Receiver<bool>>) {
    match closed {
        Some(mut c) => {
            let _ = c.wait_for(|g| *g).await;
        }
        None => std::future::pending().await,
    }
}

/// How a session ended.
#[derive(Debug)]
pub enum Outcome {
    Success,
    /// The command exited non-zero: its code and what it was (for the message).
    ExitCode(i32, String),
    /// The session failed (the message says why).
    Failed(String),
}

/// Whether a protocol reports its status as JSON (v4 and later).
pub fn json_status(protocol: &str) -> bool {
    protocol.starts_with("v4.") || protocol.starts_with("v5.")
}

/// Whether a SPDY protocol has a resize stream (v3 and later).
pub fn has_resize(protocol: &str) -> bool {
    protocol.starts_with("v3.") || json_status(protocol)
}

/// What to write on the error stream; empty for success on the older protocols.
pub fn status(protocol: &str, o: &Outcome) -> Vec<u8> {
    let v = match o {
        Outcome::Success => serde_json::json!({"metadata": {}, "status": "Success"}),
        Outcome::ExitCode(code, what) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {what}, exit code {code}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Outcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("Internal error occurred: {msg}"),
            "reason": "InternalError",
            "details": {"causes": [{"message": msg}]},
            "code": 500,
        }),
    };
    if json_status(protocol) {
        return v.to_string().into_bytes();
    }
    match o {
        Outcome::Success => Vec::new(),
        _ => v["message"]
            .as_str()
            .unwrap_or_default()
            .as_bytes()
            .to_vec(),
    }
}

/// Decodes the resize stream: JSON objects one after another, split anywhere.
pub struct ResizeDecoder {
    buf: Vec<u8>,
}

impl ResizeDecoder {
    pub fn new() -> ResizeDecoder {
        ResizeDecoder { buf: Vec::new() }
    }

    /// Adds bytes; returns the sizes completed by them. Garbage is dropped.
    pub fn push(&mut self, data: &[u8]) -> Vec<TermSize> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<TermSize>();
        let mut used = 0;
        loop {
            match it.next() {
                Some(Ok(s)) => {
                    out.push(s);
                    used = it.byte_offset();
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(_)) => {
                    used = self.buf.len();
                    break;
                }
                None => {
                    used = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..used);
        out
    }
}

impl Default for ResizeDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_as_kubelet_writes_it() {
        let ok = status("v4.channel.k8s.io", &Outcome::Success);
        assert_eq!(ok, br#"{"metadata":{},"status":"Success"}"#);
        assert!(status("v2.channel.k8s.io", &Outcome::Success).is_empty());
        let v: serde_json::Value = serde_json::from_slice(&status(
            "v5.channel.k8s.io",
            &Outcome::ExitCode(3, "[sh -c exit 3]".into()),
        ))
        .unwrap();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "3");
        let text = status("v3.channel.k8s.io", &Outcome::Failed("boom".into()));
        assert_eq!(text, b"Internal error occurred: boom");
    }

    #[test]
    fn resize_objects_split_anywhere() {
        let mut d = ResizeDecoder::new();
        assert!(d.push(br#"{"Width":80,"#).is_empty());
        let s = d.push(br#""Height":24}{"Width":100,"Height":30}{"Wi"#);
        assert_eq!(
            s,
            vec![
                TermSize {
                    width: 80,
                    height: 24
                },
                TermSize {
                    width: 100,
                    height: 30
                }
            ]
        );
        assert_eq!(
            d.push(br#"dth":1,"Height":2}"#),
            vec![TermSize {
                width: 1,
                height: 2
            }]
        );
    }
}
