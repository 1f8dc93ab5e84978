//! containerd's ttrpc address (`<address>.ttrpc`), where shims forward their task events
//! (`containerd.services.events.ttrpc.v1.Events/Forward`) into the exchange.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use containerd_shim_protos::api::{Empty, ForwardRequest};
use containerd_shim_protos::shim_async::{create_events, Events};
use containerd_shim_protos::ttrpc::r#async::{Server, TtrpcContext};
use wharf_core::events::{validate_topic, Event, Exchange};

struct Forwarder(Exchange);

fn invalid(msg: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(ttrpc::Code::INVALID_ARGUMENT, msg))
}

#[async_trait::async_trait]
impl Events for Forwarder {
    async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let env = req
            .envelope
            .into_option()
            .ok_or_else(|| invalid("envelope must be set".into()))?;
        validate_topic(&env.topic).map_err(|e| invalid(e.to_string()))?;
        wharf_core::identifiers::validate(&env.namespace).map_err(|e| invalid(e.to_string()))?;
        let timestamp = env
            .timestamp
            .as_ref()
            .map(|t| {
                SystemTime::UNIX_EPOCH
                    + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
            })
            .unwrap_or_else(SystemTime::now);
        let any = env.event.into_option().unwrap_or_default();
        self.0.publish(Event {
            timestamp,
            namespace: env.namespace,
            topic: env.topic,
            type_url: any.type_url,
            value: any.value,
        });
        Ok(Empty::new())
    }
}

/// Starts the ttrpc server on `path` (which must not exist).
pub async fn serve(path: &std::path::Path, exchange: Exchange) -> Result<Server> {
    let svc: Arc<dyn Events + Send + Sync> = Arc::new(Forwarder(exchange));
    let mut server = Server::new()
        .bind(&format!("unix://{}", path.display()))
        .with_context(|| format!("bind ttrpc socket {}", path.display()))?
        .register_service(create_events(svc));
    server.start().await.context("start ttrpc server")?;
    Ok(server)
}
