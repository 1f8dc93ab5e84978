//! One adapter per containerd service (and per wharf service): convert, delegate to core, map errors. Nothing else.

pub mod check;
pub mod containers;
pub mod content;
pub mod diff;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod snapshots;
pub mod streaming;
pub mod tasks;
pub mod transfer;
pub mod version;

use std::pin::Pin;

/// The stream type of server-streaming methods.
pub type BoxStream<T> =
    Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;
