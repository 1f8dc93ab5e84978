//! wharf-core: the domain of wharf — content store, metadata (namespaces, images, leases, containers,
//! snapshot records), garbage collection, snapshotters, layer diff/apply, images and events.
//!
//! It knows nothing about gRPC or protobuf: the daemon's adapters convert requests into these types
//! and map [`Error`] kinds to status codes in one place.

pub mod content;
pub use digest::Digest;
pub mod diff;
pub mod digest;
pub mod error;
pub mod events;
pub mod filters;
pub mod identifiers;
pub mod images;
pub mod labels;
pub mod memory;
pub mod metadata;
pub mod mount;
pub mod snapshots;
pub mod spec;
pub mod volume;

pub use error::{Error, Result};
