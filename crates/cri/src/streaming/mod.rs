//! The CRI streaming server, as containerd's CRI plugin runs the kubelet's: Exec, Attach and
//! PortForward validate their request, keep it under a single-use token ([`tokens`]) and answer
//! a URL on this HTTP server; the client (kubelet, the API server, crictl) then upgrades a
//! request to that URL to SPDY/3.1 or WebSocket and speaks the remote-command or port-forward
//! protocol over it. The server binds `[cri] stream_server_address:stream_server_port` (port
//! "0": a free one) when wharfd starts.
//!
//! This module owns the HTTP and wire protocols only; running the command, attaching to a
//! container and dialling into a pod are [`Cri`]'s (`exec_stream.rs`, `attach.rs`,
//! `port_forward.rs`).

mod portforward;
pub mod remotecommand;
pub mod spdy;
mod spdy_command;
mod tokens;
mod ws_command;
mod ws_frame;
mod ws_portforward;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{header, HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use wharf_api::cri as pb;

pub use remotecommand::{Io, Outcome, TermSize};
pub use spdy_command::Wanted;

use crate::{Cri, Error, Result};

/// A validated request waiting for its client.
#[derive(Debug, Clone)]
pub enum Request {
    Exec(pb::ExecRequest),
    Attach(pb::AttachRequest),
    PortForward(pb::PortForwardRequest),
}

impl Request {
    fn path(&self) -> &'static str {
        match self {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        }
    }
}

/// The running server: its address and the outstanding tokens.
pub struct Server {
    addr: SocketAddr,
    tokens: tokens::Tokens<Request>,
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Keeps the request under a new token; its URL.
    pub fn url(&self, r: Request) -> Result<String> {
        let kind = r.path();
        let token = self
            .tokens
            .insert(r)
            .map_err(|e| Error::Internal(format!("make a streaming token: {e}")))?
            .ok_or_else(|| {
                Error::Unavailable("too many streaming requests in flight".to_string())
            })?;
        // An unspecified bind address is reached through loopback.
        let host = match self.addr.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        Ok(format!(
            "http://{}/{kind}/{token}",
            SocketAddr::new(host, self.addr.port())
        ))
    }
}

/// Binds the server and serves it for the daemon's lifetime.
pub async fn start(cri: Arc<Cri>, address: &str, port: &str) -> Result<Arc<Server>> {
    let ip: IpAddr = address.parse().map_err(|_| {
        Error::InvalidArgument(format!(
            "stream_server_address {address:?} is not an IP address"
        ))
    })?;
    let port: u16 = port.parse().map_err(|_| {
        Error::InvalidArgument(format!("stream_server_port {port:?} is not a port number"))
    })?;
    let listener = tokio::net::TcpListener::bind((ip, port))
        .await
        .map_err(|e| Error::Internal(format!("streaming server: listen on {ip}:{port}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("streaming server address: {e}")))?;
    let server = Arc::new(Server {
        addr,
        tokens: tokens::Tokens::new(tokens::TTL),
    });
    let srv = server.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "streaming server: accept");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (cri, srv) = (cri.clone(), srv.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (cri, srv) = (cri.clone(), srv.clone());
                    async move { Ok::<_, Infallible>(handle(cri, srv, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    tracing::info!(address = %addr, "cri: streaming server listening");
    Ok(server)
}

type Resp = Response<Full<Bytes>>;

fn plain(code: StatusCode, msg: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Every value of a header, comma-separated lists split.
fn values(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol the client offers that the server speaks (the client's order wins).
fn negotiate(client: &[String], server: &[&str]) -> Option<String> {
    client
        .iter()
        .find(|c| server.contains(&c.as_str()))
        .cloned()
}

enum Upgrade {
    Spdy(String),
    WebSocket { protocol: String, accept: String },
}

// The error is the HTTP answer itself, made once per refused request: no need to box it.
#[allow(clippy::result_large_err)]
fn upgrade_kind(
    h: &HeaderMap,
    spdy: &[&'static str],
    ws: &[&'static str],
) -> std::result::Result<Upgrade, Resp> {
    let upgrade = values(h, "upgrade")
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let connection = values(h, "connection");
    if upgrade.is_empty() || !connection.iter().any(|c| c.eq_ignore_ascii_case("upgrade")) {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request",
        ));
    }
    if upgrade == "websocket" {
        let mut offered = values(h, "sec-websocket-protocol");
        if offered.is_empty() {
            offered.push(String::new()); // none named: "" where the protocol allows it
        }
        let Some(protocol) = negotiate(&offered, ws) else {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                format!("unable to upgrade: none of the subprotocols {offered:?} is supported (want one of {ws:?})"),
            ));
        };
        let Some(key) = h.get("sec-websocket-key") else {
            return Err(plain(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"));
        };
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        return Ok(Upgrade::WebSocket { protocol, accept });
    }
    if upgrade != "spdy/3.1" {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            format!("unable to upgrade: unsupported protocol {upgrade:?}"),
        ));
    }
    let offered = values(h, "x-stream-protocol-version");
    if offered.is_empty() {
        return Err(plain(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        ));
    }
    match negotiate(&offered, spdy) {
        Some(p) => Ok(Upgrade::Spdy(p)),
        None => {
            let mut r = plain(
                StatusCode::FORBIDDEN,
                format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {spdy:?}"),
            );
            for p in spdy {
                r.headers_mut().append(
                    "x-accepted-stream-protocol-versions",
                    header::HeaderValue::from_static(p),
                );
            }
            Err(r)
        }
    }
}

fn switching(u: &Upgrade) -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    match u {
        Upgrade::Spdy(p) => {
            h.insert(
                header::UPGRADE,
                header::HeaderValue::from_static("SPDY/3.1"),
            );
            if let Ok(v) = header::HeaderValue::from_str(p) {
                h.insert("x-stream-protocol-version", v);
            }
        }
        Upgrade::WebSocket { protocol, accept } => {
            h.insert(
                header::UPGRADE,
                header::HeaderValue::from_static("websocket"),
            );
            if let Ok(v) = header::HeaderValue::from_str(accept) {
                h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
            }
            // None named by the client: none in the answer.
            let named = header::HeaderValue::from_str(protocol).ok();
            if let Some(v) = named.filter(|_| !protocol.is_empty()) {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
    }
    r
}

async fn handle(cri: Arc<Cri>, srv: Arc<Server>, mut req: hyper::Request<Incoming>) -> Resp {
    if req.method() != Method::GET && req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let path = req.uri().path().trim_start_matches('/').to_string();
    let Some((kind, token)) = path.split_once('/') else {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    };
    if !matches!(kind, "exec" | "attach" | "portforward") {
        return plain(StatusCode::NOT_FOUND, "404 page not found");
    }
    // A token is taken by its first use, whatever comes of it.
    let Some(r) = srv.tokens.take(token).filter(|r| r.path() == kind) else {
        return plain(StatusCode::NOT_FOUND, "token not found or expired");
    };
    let (spdy, ws): (&[&'static str], &[&'static str]) = match &r {
        Request::PortForward(_) => (&[portforward::PROTOCOL], ws_portforward::PROTOCOLS),
        _ => (remotecommand::SPDY_PROTOCOLS, remotecommand::WS_PROTOCOLS),
    };
    let up = match upgrade_kind(req.headers(), spdy, ws) {
        Ok(u) => u,
        Err(resp) => return resp,
    };
    // A WebSocket port-forward has its ports fixed up front.
    let ports = match (&r, &up) {
        (Request::PortForward(p), Upgrade::WebSocket { .. }) => {
            match ws_portforward::ports(&p.port, req.uri().query()) {
                Ok(ports) => ports,
                Err(e) => return plain(StatusCode::BAD_REQUEST, e),
            }
        }
        _ => Vec::new(),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let resp = switching(&up);
    tokio::spawn(async move {
        let conn = match on_upgrade.await {
            Ok(c) => TokioIo::new(c),
            Err(e) => {
                tracing::debug!(error = %e, "streaming: upgrade");
                return;
            }
        };
        run(cri, r, up, ports, conn).await;
    });
    resp
}

async fn run(
    cri: Arc<Cri>,
    r: Request,
    up: Upgrade,
    ports: Vec<u16>,
    conn: TokioIo<hyper::upgrade::Upgraded>,
) {
    let (want, command): (
        Wanted,
        Box<dyn FnOnce(Io) -> BoxFuture<'static, Outcome> + Send>,
    ) = match r {
        Request::PortForward(p) => {
            let pod = p.pod_sandbox_id.clone();
            let c = cri.clone();
            let connect: portforward::Connect =
                Arc::new(
                    move |port: u16| -> BoxFuture<
                        'static,
                        std::result::Result<tokio::net::TcpStream, String>,
                    > {
                        let (c, pod) = (c.clone(), pod.clone());
                        Box::pin(async move {
                            c.port_forward_dial(&pod, port)
                                .await
                                .map_err(|e| e.to_string())
                        })
                    },
                );
            return match up {
                Upgrade::Spdy(_) => portforward::serve(conn, p.pod_sandbox_id, connect).await,
                Upgrade::WebSocket { protocol, .. } => {
                    ws_portforward::serve(conn, protocol, p.pod_sandbox_id, ports, connect).await
                }
            };
        }
        Request::Exec(e) => (
            Wanted {
                stdin: e.stdin,
                stdout: e.stdout,
                stderr: e.stderr,
                tty: e.tty,
            },
            Box::new(move |io: Io| -> BoxFuture<'static, Outcome> {
                Box::pin(async move { cri.exec_streaming(e, io).await })
            }),
        ),
        Request::Attach(a) => (
            Wanted {
                stdin: a.stdin,
                stdout: a.stdout,
                stderr: a.stderr,
                tty: a.tty,
            },
            Box::new(move |io: Io| -> BoxFuture<'static, Outcome> {
                Box::pin(async move { cri.attach_streaming(a, io).await })
            }),
        ),
    };
    match up {
        Upgrade::Spdy(protocol) => spdy_command::serve(conn, protocol, want, command).await,
        Upgrade::WebSocket { protocol, .. } => {
            ws_command::serve(conn, protocol, want, command).await
        }
    }
}
