//! The HTTP side of the endpoint: HTTP/1.1 with hyper, `GET /metrics` and nothing else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};

use super::text::CONTENT_TYPE;
use super::Metrics;
use crate::server::Daemon;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 16;

/// A client that does not send its request headers in this time is dropped.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn serve(listener: tokio::net::TcpListener, d: Arc<Daemon>, m: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (d, m) = (d.clone(), m.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let (d, m) = (d.clone(), m.clone());
                async move { Ok::<_, Infallible>(respond(req, &d, &m).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics: connection");
            }
            drop(slot);
        });
    }
}

async fn respond<B>(req: Request<B>, d: &Arc<Daemon>, m: &Metrics) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String, content_type: &str| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: try /metrics\n".into(),
            "text/plain",
        );
    }
    match *req.method() {
        Method::GET => {
            let text = m.scrape(d).await;
            // Scrapes come every few seconds at most: give the pages of code they touched back
            // in between, as wharfd does after start-up.
            wharf_core::memory::trim_soon(Duration::from_secs(2));
            reply(StatusCode::OK, text, CONTENT_TYPE)
        }
        Method::HEAD => reply(StatusCode::OK, String::new(), CONTENT_TYPE),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n".into(),
            "text/plain",
        ),
    }
}
