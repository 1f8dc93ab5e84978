//! gRPC request counts and latencies per method (the gRPC path) and status code: a tower layer
//! around the whole router. A call ends when its response body does (streams included); its
//! code is `grpc-status` from the headers (errors) or the trailers, `Canceled` if the client left
//! first. With metrics off the layer passes requests through untouched.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::{BoxFuture, Either};
use http_body::{Frame, SizeHint};
use tonic::Code;

use super::text::{Encoder, Kind};

/// Latency buckets, in seconds (go-grpc-prometheus' defaults, as containerd's).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Distinct methods kept; any further path a client invents is counted as `other`.
const MAX_METHODS: usize = 256;

/// Per method, per code: a latency histogram (whose count is the request count).
#[derive(Default)]
pub struct GrpcStats {
    methods: Mutex<HashMap<String, BTreeMap<i32, Series>>>,
}

#[derive(Default, Clone)]
struct Series {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl GrpcStats {
    fn record(&self, method: &str, code: Code, elapsed: Duration) {
        let Ok(mut methods) = self.methods.lock() else {
            return;
        };
        let mut method = method;
        if !methods.contains_key(method) {
            if methods.len() >= MAX_METHODS {
                method = "other";
            }
            if !methods.contains_key(method) {
                methods.insert(method.to_string(), BTreeMap::new());
            }
        }
        let Some(codes) = methods.get_mut(method) else {
            return;
        };
        let s = codes.entry(code as i32).or_default();
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            s.buckets[i] += 1;
        }
        s.count += 1;
        s.sum += secs;
    }

    /// `wharfd_grpc_requests_total` and `wharfd_grpc_request_duration_seconds`.
    pub fn encode(&self, e: &mut Encoder) {
        let mut rows: Vec<(String, &'static str, Series)> = match self.methods.lock() {
            Ok(m) => m
                .iter()
                .flat_map(|(method, codes)| {
                    codes
                        .iter()
                        .map(|(c, s)| (method.clone(), code_name(Code::from_i32(*c)), s.clone()))
                })
                .collect(),
            Err(_) => return,
        };
        rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        e.family(
            "wharfd_grpc_requests_total",
            Kind::Counter,
            "gRPC requests handled, by method and status code.",
        );
        for (method, code, s) in &rows {
            let labels = [("method", method.as_str()), ("code", *code)];
            e.sample("wharfd_grpc_requests_total", &labels, s.count as f64);
        }
        e.family(
            "wharfd_grpc_request_duration_seconds",
            Kind::Histogram,
            "gRPC request latency until the response ends, by method and status code.",
        );
        for (method, code, s) in &rows {
            let labels = [("method", method.as_str()), ("code", *code)];
            e.histogram(
                "wharfd_grpc_request_duration_seconds",
                &labels,
                &BUCKETS,
                &s.buckets,
                s.sum,
                s.count,
            );
        }
    }
}

/// gRPC's names of status codes, as Go's grpc-prometheus labels them.
fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

fn grpc_status(h: &http::HeaderMap) -> Option<Code> {
    let v = h.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from_i32(v))
}

/// The layer: measures when given stats, passes through when not.
#[derive(Clone)]
pub struct Layer(Option<Arc<GrpcStats>>);

impl Layer {
    pub fn new(stats: Option<Arc<GrpcStats>>) -> Self {
        Layer(stats)
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Service<S> {
        Service {
            inner,
            stats: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Service<S> {
    inner: S,
    stats: Option<Arc<GrpcStats>>,
}

type Response = http::Response<tonic::body::Body>;

impl<S, B> tower::Service<http::Request<B>> for Service<S>
where
    S: tower::Service<http::Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let Some(stats) = self.stats.clone() else {
            return Either::Left(self.inner.call(req));
        };
        let method = req.uri().path().to_string();
        let start = Instant::now();
        let call = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let resp = call.await?;
            let (parts, body) = resp.into_parts();
            let body = Observed {
                code: grpc_status(&parts.headers),
                inner: body,
                stats,
                method,
                start,
            };
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::new(body),
            ))
        }))
    }
}

/// A response body that records its call when it is done with (ended or dropped).
struct Observed {
    inner: tonic::body::Body,
    stats: Arc<GrpcStats>,
    method: String,
    start: Instant,
    code: Option<Code>,
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                self.code = Some(code);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let code = self.code.unwrap_or(Code::Cancelled);
        self.stats.record(&self.method, code, self.start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_method_and_code_and_bounds_methods() {
        let s = GrpcStats::default();
        s.record("/a.A/X", Code::Ok, Duration::from_millis(3));
        s.record("/a.A/X", Code::Ok, Duration::from_millis(30));
        s.record("/a.A/X", Code::NotFound, Duration::from_secs(60));
        for i in 0..MAX_METHODS + 5 {
            s.record(&format!("/b.B/M{i}"), Code::Unimplemented, Duration::ZERO);
        }
        let mut e = Encoder::default();
        s.encode(&mut e);
        let text = e.finish();
        assert!(text.contains("wharfd_grpc_requests_total{method=\"/a.A/X\",code=\"OK\"} 2\n"));
        assert!(text.contains(
            "wharfd_grpc_request_duration_seconds_bucket{method=\"/a.A/X\",code=\"OK\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "wharfd_grpc_request_duration_seconds_bucket{method=\"/a.A/X\",code=\"NotFound\",le=\"10\"} 0\n"
        ));
        assert!(text.contains(
            "wharfd_grpc_request_duration_seconds_count{method=\"/a.A/X\",code=\"NotFound\"} 1\n"
        ));
        assert!(
            text.contains("method=\"other\",code=\"Unimplemented\"} 6\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("wharfd_grpc_requests_total{").count(),
            MAX_METHODS + 2
        );
    }
}
