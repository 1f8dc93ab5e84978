//! `containerd.services.events.v1.Events` (Publish, Forward, Subscribe) over the core exchange,
//! and the helper services use to publish their events.

use std::sync::Arc;
use std::time::SystemTime;

use prost::{Message, Name};
use tonic::{Request, Response, Status};
use wharf_api::events_service::events_server::Events;
use wharf_api::{pb, types, Empty};
use wharf_core::events::{validate_topic, Event, Exchange};

use crate::error::MapStatus;
use crate::namespace::namespace;
use crate::server::Daemon;

/// Publishes a containerd event message on `topic` in namespace `ns`.
pub fn publish<M: Message + Name>(x: &Exchange, ns: &str, topic: &str, msg: &M) {
    x.publish(Event {
        timestamp: SystemTime::now(),
        namespace: ns.to_string(),
        topic: topic.to_string(),
        type_url: M::full_name(),
        value: msg.encode_to_vec(),
    });
}

/// An envelope as clients receive it.
pub fn envelope(e: &Event) -> types::Envelope {
    types::Envelope {
        timestamp: Some(e.timestamp.into()),
        namespace: e.namespace.clone(),
        topic: e.topic.clone(),
        event: Some(prost_types::Any {
            type_url: e.type_url.clone(),
            value: e.value.clone(),
        }),
    }
}

/// Turns a forwarded envelope (from a shim or a client) into an exchange event.
pub fn from_envelope(env: types::Envelope) -> Result<Event, Status> {
    validate_topic(&env.topic).map_status()?;
    wharf_core::identifiers::validate(&env.namespace).map_status()?;
    let any = env.event.unwrap_or_default();
    Ok(Event {
        timestamp: env
            .timestamp
            .and_then(|t| SystemTime::try_from(t).ok())
            .unwrap_or_else(SystemTime::now),
        namespace: env.namespace,
        topic: env.topic,
        type_url: any.type_url,
        value: any.value,
    })
}

pub struct EventsService(pub Arc<Daemon>);

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<pb::PublishRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        validate_topic(&r.topic).map_status()?;
        let any = r.event.unwrap_or_default();
        self.0.exchange.publish(Event {
            timestamp: SystemTime::now(),
            namespace: ns,
            topic: r.topic,
            type_url: any.type_url,
            value: any.value,
        });
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<pb::ForwardRequest>) -> Result<Response<Empty>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
        self.0.exchange.publish(from_envelope(env)?);
        Ok(Response::new(()))
    }

    type SubscribeStream = crate::services::BoxStream<types::Envelope>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut sub = self
            .0
            .exchange
            .subscribe(&req.into_inner().filters)
            .map_status()?;
        let stream = async_stream::stream! {
            while let Some(e) = sub.next().await {
                yield Ok(envelope(&e));
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }
}
