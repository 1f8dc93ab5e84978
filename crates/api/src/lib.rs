//! wharf-api: server bindings for containerd's gRPC API v1, generated at build time over the
//! message types of the `containerd-client` crate (no .proto is copied here). Nothing else lives
//! here: adapters that serve these traits are in wharfd.
//!
//! Each service is a module named after it, e.g. `wharf_api::content::content_server::{Content,
//! ContentServer}`; messages are re-exported as [`pb`] (flattened like containerd-client's) and
//! [`types`], and containerd's event messages as [`events`].

#![allow(clippy::all)]

/// `google.protobuf.Empty` as containerd-client generates it.
pub type Empty = ();

pub use containerd_client::events;
pub use containerd_client::services::v1 as pb;
pub use containerd_client::types;

macro_rules! services {
    ($($module:ident => $file:literal),* $(,)?) => {$(
        pub mod $module {
            tonic::include_proto!($file);
        }
    )*};
}

services! {
    version => "containerd.services.version.v1.Version",
    introspection => "containerd.services.introspection.v1.Introspection",
    namespaces => "containerd.services.namespaces.v1.Namespaces",
    content => "containerd.services.content.v1.Content",
    images => "containerd.services.images.v1.Images",
    leases => "containerd.services.leases.v1.Leases",
    events_service => "containerd.services.events.v1.Events",
    snapshots => "containerd.services.snapshots.v1.Snapshots",
    diff => "containerd.services.diff.v1.Diff",
    containers => "containerd.services.containers.v1.Containers",
    tasks => "containerd.services.tasks.v1.Tasks",
    transfer => "containerd.services.transfer.v1.Transfer",
    streaming => "containerd.services.streaming.v1.Streaming",
}

/// containerd's image events (`containerd.events.Image*`), which containerd-client does not
/// generate. Field numbers follow containerd's `api/events/image.proto`.
pub mod image_events {
    use std::collections::HashMap;

    macro_rules! event {
        ($name:ident { $($field:tt)* }) => {
            #[derive(Clone, PartialEq, ::prost::Message)]
            pub struct $name { $($field)* }
            impl ::prost::Name for $name {
                const NAME: &'static str = stringify!($name);
                const PACKAGE: &'static str = "containerd.events";
            }
        };
    }

    event!(ImageCreate {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(map = "string, string", tag = "2")]
        pub labels: HashMap<String, String>,
    });
    event!(ImageUpdate {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(map = "string, string", tag = "2")]
        pub labels: HashMap<String, String>,
    });
    event!(ImageDelete {
        #[prost(string, tag = "1")]
        pub name: String,
    });
}
