//! wharf-distribution: the daemon-side image distribution core — references, registry host
//! configuration (containerd's hosts.toml), a registry client with auth, and pull into wharf-core's
//! content store, metadata and snapshotters.
//!
//! It knows nothing about gRPC: the daemon's Transfer/Images adapters and the CRI image service call
//! [`pull::pull`] and map [`Error::kind`] to status codes.

pub mod archive;
pub mod auth;
pub mod client;
pub mod error;
pub mod hosts;
pub mod pull;
pub mod push;
pub mod reference;

pub use error::{Error, Kind, Result};
pub use reference::Reference;
