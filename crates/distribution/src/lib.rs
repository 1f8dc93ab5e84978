//! wharf-distribution: the daemon-side image distribution core — references, registry host
//! configuration (containerd's hosts.toml), a registry client with auth, pull and push between
//! registries and wharf-core's stores, and image archives (OCI layout, docker save).
//!
//! It knows nothing about gRPC. The daemon's adapters (Transfer, CRI's PullImage, the CLI's
//! pull/push/save/load through them) call:
//! - [`pull::pull`]`(db, ns, ref, opts)`: resolve, fetch (verified, resumable, layers in
//!   parallel), record the image, and unpack layers into [`pull::Unpack`]'s snapshotter as they
//!   arrive; [`pull::Progress`] reports go to `opts.progress`.
//! - [`push::push`]`(db, ns, image, ref, opts)`.
//! - [`archive::export`] / [`archive::import`] (blocking: run them in `spawn_blocking`).
//!
//! Registry settings live in [`client::ClientOptions`]: `hosts_dir` (wharf's
//! `/etc/wharf/certs.d`), credentials ([`auth::Credentials`]: explicit ones from wharf's config,
//! then `~/.docker/config.json` via `Credentials::from_docker_env`), retries and size limits.
//! Errors carry an [`error::Kind`] (`Error::kind`) to map to gRPC codes in one place, including
//! Unauthenticated and PermissionDenied, which wharf-core's error has no kinds for.

pub mod archive;
pub mod auth;
pub mod client;
pub mod error;
mod fetch;
pub mod hosts;
pub mod pull;
pub mod push;
pub mod reference;
mod stream;

pub use error::{Error, Kind, Result};
pub use reference::Reference;
