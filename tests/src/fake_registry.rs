//! A tiny HTTP/1.1 server for registry misbehaviour the real registry never shows: every request
//! is logged and answered by a test-provided handler, which may also cut a response short.
//! One thread per connection, `Connection: close` on every reply.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;

use crate::images::{Image, MEDIA_MANIFEST};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path with query, e.g. `/v2/test/manifests/latest`.
    pub path: String,
    /// Lowercased names.
    pub headers: HashMap<String, String>,
    /// The body, when the request announced a Content-Length.
    pub body: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after this many body bytes (the headers still announce all).
    pub cut_after: Option<usize>,
    /// Send this many body bytes, then stall (for 30 s) without closing.
    pub hang_after: Option<usize>,
    /// Send this many body bytes, call the function (which may block), then send the rest.
    pub pause_after: Option<(usize, Pause)>,
}

/// A callback run in the middle of a response.
pub type Pause = Arc<dyn Fn() + Send + Sync>;

impl Reply {
    pub fn new(status: u16, body: Vec<u8>) -> Reply {
        Reply {
            status,
            body,
            ..Default::default()
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

pub struct FakeRegistry {
    port: u16,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

fn read_request(s: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    s.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        s.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    let len = headers
        .get("content-length")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len.min(1 << 20)];
    std::io::Read::read_exact(s, &mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn serve(stream: TcpStream, handler: &Handler, log: &Mutex<Vec<Request>>) {
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(clone);
    let Some(req) = read_request(&mut r) else {
        return;
    };
    if let Ok(mut l) = log.lock() {
        l.push(req.clone());
    }
    let reply = handler(&req);
    let mut w = stream;
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    let has_len = reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        head.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    let _ = w.write_all(head.as_bytes());
    if req.method != "HEAD" {
        if let Some((n, pause)) = &reply.pause_after {
            let n = (*n).min(reply.body.len());
            let _ = w.write_all(&reply.body[..n]);
            let _ = w.flush();
            pause();
            let _ = w.write_all(&reply.body[n..]);
            let _ = w.flush();
            let _ = w.shutdown(std::net::Shutdown::Both);
            return;
        }
        if let Some(n) = reply.hang_after {
            let _ = w.write_all(&reply.body[..n.min(reply.body.len())]);
            let _ = w.flush();
            std::thread::sleep(std::time::Duration::from_secs(30));
            return;
        }
        let n = reply
            .cut_after
            .unwrap_or(reply.body.len())
            .min(reply.body.len());
        let _ = w.write_all(&reply.body[..n]);
    }
    let _ = w.flush();
    let _ = w.shutdown(std::net::Shutdown::Both);
}

impl FakeRegistry {
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        l.set_nonblocking(true)?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let (h, lg) = (handler.clone(), log2.clone());
                        std::thread::spawn(move || serve(s, &*h, &lg));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Ok(FakeRegistry { port, log, stop })
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The well-behaved answer for `img` served as repository `repo`, tag `tag` (manifests by tag or
/// digest, blobs, HEAD with Docker-Content-Digest), or None for paths it does not know.
pub fn serve_image(img: &Image, repo: &str, tag: &str, req: &Request) -> Option<Reply> {
    let prefix = format!("/v2/{repo}/");
    let rest = req.path.strip_prefix(&prefix)?;
    if let Some(r) = rest.strip_prefix("manifests/") {
        if r != tag && r != img.manifest_digest {
            return Some(Reply::new(404, Vec::new()));
        }
        return Some(
            Reply::new(200, img.manifest.clone())
                .header("Content-Type", MEDIA_MANIFEST)
                .header("Docker-Content-Digest", &img.manifest_digest),
        );
    }
    let d = rest.strip_prefix("blobs/")?;
    let data = if d == img.config_digest {
        img.config.clone()
    } else {
        img.layers.iter().find(|l| l.digest == d)?.gz.clone()
    };
    Some(
        ranged(data)
            .header("Docker-Content-Digest", d)
            .with_range(req),
    )
}

fn ranged(data: Vec<u8>) -> Reply {
    Reply::new(200, data)
}

impl Reply {
    /// Answers a `Range: bytes=N-` request with 206 and the rest of the body.
    pub fn with_range(mut self, req: &Request) -> Reply {
        let start = req
            .headers
            .get("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = start.filter(|n| *n < self.body.len()) {
            let total = self.body.len();
            self.body = self.body.split_off(n);
            self.status = 206;
            self.headers.push((
                "Content-Range".into(),
                format!("bytes {n}-{}/{total}", total - 1),
            ));
        }
        self
    }
}
