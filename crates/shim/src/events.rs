//! Task events, forwarded in order to the daemon's ttrpc address
//! (`containerd.services.events.ttrpc.v1.Events/Forward`). The connection is made lazily and
//! re-made after the daemon restarts; events queue meanwhile.

use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::ForwardRequest;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageFull;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim_async::EventsClient;
use tokio::sync::{mpsc, oneshot};

enum Msg {
    Event(ForwardRequest),
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Msg>,
    namespace: String,
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Packs a message as containerd's typeurl does for events (the bare full name).
pub fn pack<M: MessageFull>(m: &M) -> Any {
    Any {
        type_url: M::descriptor().full_name().to_string(),
        value: m.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

impl Publisher {
    /// Starts the forwarder; `address` is the daemon's ttrpc socket (TTRPC_ADDRESS).
    pub fn start(address: Option<String>, namespace: &str) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(forward(address, rx));
        Publisher {
            tx,
            namespace: namespace.to_string(),
        }
    }

    pub fn publish<M: MessageFull>(&self, topic: &str, event: &M) {
        let env = Envelope {
            timestamp: Some(timestamp(SystemTime::now())).into(),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: Some(pack(event)).into(),
            ..Default::default()
        };
        let req = ForwardRequest {
            envelope: Some(env).into(),
            ..Default::default()
        };
        let _ = self.tx.send(Msg::Event(req));
    }

    /// Waits until every event published so far was delivered (or given up on).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

async fn connect(address: &str) -> Option<EventsClient> {
    let addr = if address.starts_with("unix://") {
        address.to_string()
    } else {
        format!("unix://{address}")
    };
    match ttrpc::asynchronous::Client::connect(&addr).await {
        Ok(c) => Some(EventsClient::new(c)),
        Err(e) => {
            tracing::warn!(address = %addr, error = %e, "connect to the daemon's event socket");
            None
        }
    }
}

async fn forward(address: Option<String>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut client: Option<EventsClient> = None;
    while let Some(msg) = rx.recv().await {
        let req = match msg {
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Msg::Event(req) => req,
        };
        let Some(address) = address.as_deref() else {
            continue;
        };
        // A few attempts spread over ~2 s ride out a daemon restart; after that the event is
        // dropped (the daemon learns the state from the shim when it reconnects).
        for attempt in 0..8u32 {
            if client.is_none() {
                client = connect(address).await;
            }
            if let Some(c) = &client {
                let ctx = ttrpc::context::with_timeout(Duration::from_secs(5).as_nanos() as i64);
                match c.forward(ctx, &req).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "forward event");
                        client = None;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50 * (attempt as u64 + 1))).await;
        }
    }
}
