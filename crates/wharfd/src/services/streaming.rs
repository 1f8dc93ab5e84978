//! `containerd.services.streaming.v1.Streaming`: a client opens a stream with a `StreamInit{id}`
//! message; wharfd registers it under (namespace, id) for the Transfer service (import/export
//! data, progress) and acknowledges with an `Any` of `google.protobuf.Empty`, as containerd does.
//! The id is free again when the RPC ends, from either side.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use wharf_api::pb::StreamInit;
use wharf_api::streaming::streaming_server;

use crate::namespace::namespace;
use crate::server::Daemon;
use crate::streams::{any, kind, Registration, Stream};

pub struct StreamingService(pub Arc<Daemon>);

const TYPE_STREAM_INIT: &str = "containerd.services.streaming.v1.StreamInit";

/// What the client receives; holds the stream's registration until the RPC ends.
pub struct Outgoing {
    rx: mpsc::UnboundedReceiver<Result<prost_types::Any, Status>>,
    _registration: Registration,
}

impl futures::Stream for Outgoing {
    type Item = Result<prost_types::Any, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[tonic::async_trait]
impl streaming_server::Streaming for StreamingService {
    type StreamStream = Outgoing;

    async fn stream(
        &self,
        req: Request<Streaming<prost_types::Any>>,
    ) -> Result<Response<Outgoing>, Status> {
        let ns = namespace(&req)?;
        let mut incoming = req.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before its StreamInit"))?;
        if kind(&first) != TYPE_STREAM_INIT {
            return Err(Status::invalid_argument(format!(
                "first message of a stream must be a {TYPE_STREAM_INIT}, not {}",
                first.type_url
            )));
        }
        let init = StreamInit::decode(first.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("decode StreamInit: {e}")))?;
        if init.id.is_empty() {
            return Err(Status::invalid_argument("stream id must not be empty"));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // The ack goes first, after the registration, as containerd's clients wait for it
        // before they name the stream in a Transfer call.
        let ack = any("google.protobuf.Empty", &());
        let _ = tx.send(Ok(ack));
        let registration = self.0.streams.register(
            &ns,
            &init.id,
            Stream {
                incoming,
                outgoing: tx,
            },
        )?;
        Ok(Response::new(Outgoing {
            rx,
            _registration: registration,
        }))
    }
}
