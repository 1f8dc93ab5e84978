//! GetContainerEvents: CONTAINER_CREATED/STARTED/STOPPED/DELETED of containers and of sandboxes
//! (the pause container, with `container_id` = the sandbox's ID, as containerd 1.7+ sends them
//! for kubelet's Evented PLEG), each carrying the pod's status and its containers' statuses at
//! the time. One broadcast channel for every subscriber: one that falls behind loses the oldest
//! events (logged) and never holds the service up; with no subscriber nothing is built.

use futures::Stream;
use tokio::sync::broadcast;
use wharf_api::cri as pb;

use crate::{now_nanos, Cri};

/// Events a subscriber may fall behind by before it loses some (containerd buffers 1000).
pub(crate) const CAPACITY: usize = 1000;

pub(crate) type Sender = broadcast::Sender<pb::ContainerEventResponse>;

pub(crate) fn channel() -> Sender {
    broadcast::channel(CAPACITY).0
}

impl Cri {
    /// The event of `container_id` (a container of `sandbox_id`, or the sandbox itself), or
    /// None when nobody listens.
    pub(crate) async fn container_event(
        &self,
        container_id: &str,
        sandbox_id: &str,
        kind: pb::ContainerEventType,
    ) -> Option<pb::ContainerEventResponse> {
        if self.container_events.receiver_count() == 0 {
            return None;
        }
        let pod_sandbox_status = match self.pod_sandbox_status(sandbox_id, false).await {
            Ok(r) => r.status,
            Err(e) => {
                tracing::warn!(sandbox_id, error = %e, "cri: container event without the pod's status");
                None
            }
        };
        let containers_statuses = match self.pod_container_statuses(sandbox_id).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(sandbox_id, error = %e, "cri: container event without container statuses");
                Vec::new()
            }
        };
        Some(pb::ContainerEventResponse {
            container_id: container_id.to_string(),
            container_event_type: kind as i32,
            created_at: now_nanos(),
            pod_sandbox_status,
            containers_statuses,
        })
    }

    /// Sends an event made by [`Cri::container_event`] (after what it reports is done).
    pub(crate) fn send_container_event(&self, event: Option<pb::ContainerEventResponse>) {
        if let Some(e) = event {
            // An error only means the last subscriber left meanwhile.
            let _ = self.container_events.send(e);
        }
    }

    /// Makes and sends the event at once.
    pub(crate) async fn emit(
        &self,
        container_id: &str,
        sandbox_id: &str,
        kind: pb::ContainerEventType,
    ) {
        let e = self.container_event(container_id, sandbox_id, kind).await;
        self.send_container_event(e);
    }

    /// The events from now on, for one GetContainerEvents call.
    pub fn subscribe_container_events(
        &self,
    ) -> impl Stream<Item = pb::ContainerEventResponse> + Send + 'static {
        lossy(self.container_events.subscribe())
    }
}

/// A receiver as a stream that skips what it missed by falling behind (logged).
fn lossy<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> impl Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        skipped = n,
                        "cri: a GetContainerEvents subscriber fell behind; events skipped"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_slow_subscriber_skips_and_goes_on() {
        let (tx, rx) = broadcast::channel(2);
        let mut slow = Box::pin(lossy(rx));
        for i in 0..5 {
            // Never waits on the subscriber.
            tx.send(i).unwrap();
        }
        assert_eq!(slow.next().await, Some(3));
        assert_eq!(slow.next().await, Some(4));
        tx.send(5).unwrap();
        assert_eq!(slow.next().await, Some(5));
        drop(tx);
        assert_eq!(slow.next().await, None);
    }
}
