//! The connection to wharfd: namespaced requests and one-line explanations of failed calls.

use anyhow::Result;
use containerd_client::services::v1 as pb;
use tonic::transport::Channel;
use tonic::Request;

/// wharfd's socket plus the namespace every call runs in.
#[derive(Clone)]
pub struct Client {
    pub channel: Channel,
    pub ns: String,
    pub address: String,
    /// A lease the calls run under (`containerd-lease`), while resources are being assembled.
    pub lease: Option<String>,
}

impl Client {
    pub async fn connect(address: &str, ns: &str) -> Result<Client> {
        let channel = containerd_client::connect(address).await.map_err(|e| {
            // The innermost cause says what went wrong (no such socket, permission denied).
            let mut cause: &dyn std::error::Error = &e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            anyhow::anyhow!("cannot reach wharfd at {address}: {cause} (is it running?)")
        })?;
        Ok(Client {
            channel,
            ns: ns.to_string(),
            address: address.to_string(),
            lease: None,
        })
    }

    /// A request in this client's namespace (and lease).
    pub fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(v) = self.ns.parse() {
            r.metadata_mut().insert("containerd-namespace", v);
        }
        if let Some(Ok(v)) = self.lease.as_deref().map(str::parse) {
            r.metadata_mut().insert("containerd-lease", v);
        }
        r
    }

    pub fn images(&self) -> pb::images_client::ImagesClient<Channel> {
        pb::images_client::ImagesClient::new(self.channel.clone())
    }
    pub fn content(&self) -> pb::content_client::ContentClient<Channel> {
        pb::content_client::ContentClient::new(self.channel.clone())
    }
    pub fn containers(&self) -> pb::containers_client::ContainersClient<Channel> {
        pb::containers_client::ContainersClient::new(self.channel.clone())
    }
    pub fn tasks(&self) -> pb::tasks_client::TasksClient<Channel> {
        pb::tasks_client::TasksClient::new(self.channel.clone())
    }
    pub fn snapshots(&self) -> pb::snapshots::snapshots_client::SnapshotsClient<Channel> {
        pb::snapshots::snapshots_client::SnapshotsClient::new(self.channel.clone())
    }
    pub fn leases(&self) -> pb::leases_client::LeasesClient<Channel> {
        pb::leases_client::LeasesClient::new(self.channel.clone())
    }
    pub fn namespaces(&self) -> pb::namespaces_client::NamespacesClient<Channel> {
        pb::namespaces_client::NamespacesClient::new(self.channel.clone())
    }
    pub fn transfer(&self) -> pb::transfer_client::TransferClient<Channel> {
        pb::transfer_client::TransferClient::new(self.channel.clone())
    }
    pub fn events(&self) -> pb::events_client::EventsClient<Channel> {
        pb::events_client::EventsClient::new(self.channel.clone())
    }
    pub fn version(&self) -> pb::version_client::VersionClient<Channel> {
        pb::version_client::VersionClient::new(self.channel.clone())
    }
    pub fn introspection(&self) -> pb::introspection_client::IntrospectionClient<Channel> {
        pb::introspection_client::IntrospectionClient::new(self.channel.clone())
    }

    /// One readable line for a failed call, with a hint where there is one.
    pub fn explain(&self, e: tonic::Status, not_found: &str) -> anyhow::Error {
        let hint = match e.code() {
            tonic::Code::Unavailable => format!(" (is wharfd running on {}?)", self.address),
            tonic::Code::NotFound if !not_found.is_empty() => format!(" ({not_found})"),
            // Only ENOSPC is mapped to ResourceExhausted by wharfd.
            tonic::Code::ResourceExhausted => {
                " (wharfd's disk is full: free space and retry)".into()
            }
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                " (credentials come from ~/.docker/config.json)".into()
            }
            _ => String::new(),
        };
        // One line, whatever the daemon's message quotes.
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        anyhow::Error::new(Failure {
            code: e.code(),
            message: format!("{message}{hint}"),
        })
    }
}

/// A failed daemon call, kept typed so callers can tell NotFound from the rest.
#[derive(Debug)]
pub struct Failure {
    pub code: tonic::Code,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Is this error a daemon NotFound?
pub fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Failure>()
        .is_some_and(|f| f.code == tonic::Code::NotFound)
}

/// Extension for tonic results: explain the failure in one line.
pub trait Explain<T> {
    fn explain(self, c: &Client, not_found: &str) -> Result<T>;
}

impl<T> Explain<T> for std::result::Result<tonic::Response<T>, tonic::Status> {
    fn explain(self, c: &Client, not_found: &str) -> Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|e| c.explain(e, not_found))
    }
}
