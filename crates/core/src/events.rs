//! The event exchange: services publish events (`/images/create`, `/tasks/exit`, …) and
//! subscribers receive those matching their filters. Payloads stay encoded (type URL + bytes):
//! the core never needs to know protobuf.

use std::time::SystemTime;

use tokio::sync::broadcast;

use crate::filters::{Adaptor, Filter};
use crate::{Error, Result};

/// One event as it travels through the exchange.
#[derive(Debug, Clone)]
pub struct Event {
    pub timestamp: SystemTime,
    pub namespace: String,
    pub topic: String,
    pub type_url: String,
    pub value: Vec<u8>,
}

impl Adaptor for Event {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "namespace" => Some(self.namespace.clone()),
            "topic" => Some(self.topic.clone()),
            // Filtering on the event body is not supported; present only so `event` parses.
            _ => None,
        }
    }
}

/// How many events a slow subscriber may fall behind before it skips.
const BUFFER: usize = 1024;

/// The exchange. Cheap to clone; publishing never blocks.
#[derive(Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Event>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

/// Validates a topic the way containerd does: `/` then non-empty components of identifier chars.
pub fn validate_topic(topic: &str) -> Result<()> {
    let Some(rest) = topic.strip_prefix('/') else {
        return Err(Error::InvalidArgument(format!(
            "topic {topic:?} must start with '/'"
        )));
    };
    if rest.is_empty()
        || rest.split('/').any(|c| {
            c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
    {
        return Err(Error::InvalidArgument(format!(
            "topic {topic:?} has an invalid component"
        )));
    }
    Ok(())
}

impl Exchange {
    pub fn new() -> Self {
        Exchange {
            tx: broadcast::channel(BUFFER).0,
        }
    }

    /// Publishes an event to every current subscriber.
    pub fn publish(&self, event: Event) {
        // No subscribers is not an error.
        let _ = self.tx.send(event);
    }

    /// Subscribes with containerd filters (`topic==/tasks/exit`, `namespace==x`, `topic~=…`).
    pub fn subscribe<S: AsRef<str>>(&self, filters: &[S]) -> Result<Subscription> {
        Ok(Subscription {
            rx: self.tx.subscribe(),
            filter: Filter::parse(filters)?,
        })
    }
}

/// A subscription: yields matching events in order; a subscriber that falls more than
/// [`BUFFER`] events behind skips the oldest ones (with a warning) rather than slowing publishers.
pub struct Subscription {
    rx: broadcast::Receiver<Event>,
    filter: Filter,
}

impl Subscription {
    /// The next matching event; None once the exchange is gone.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) if self.filter.matches(&e) => return Some(e),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "event subscriber fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ns: &str, topic: &str) -> Event {
        Event {
            timestamp: SystemTime::now(),
            namespace: ns.into(),
            topic: topic.into(),
            type_url: "containerd.events.TaskExit".into(),
            value: vec![],
        }
    }

    #[tokio::test]
    async fn filters_apply() {
        let x = Exchange::new();
        let mut all = x.subscribe::<&str>(&[]).unwrap();
        let mut exits = x.subscribe(&["topic==/tasks/exit,namespace==a"]).unwrap();
        let mut re = x.subscribe(&[r#"topic~="^/images/""#]).unwrap();
        x.publish(ev("b", "/tasks/exit"));
        x.publish(ev("a", "/images/create"));
        x.publish(ev("a", "/tasks/exit"));
        assert_eq!(all.next().await.unwrap().topic, "/tasks/exit");
        let e = exits.next().await.unwrap();
        assert_eq!(
            (e.namespace.as_str(), e.topic.as_str()),
            ("a", "/tasks/exit")
        );
        assert_eq!(re.next().await.unwrap().topic, "/images/create");
        assert!(x.subscribe(&["topic=="]).is_err());
    }

    #[test]
    fn topics() {
        assert!(validate_topic("/tasks/exit").is_ok());
        for bad in ["", "tasks", "/", "/a//b", "/a b"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }
}
