//! wharf-runtime: the shim manager used by wharfd. It owns the runtime v2 contract with shims:
//! bundle directories, `<shim> start` / `<shim> delete`, one ttrpc connection per shim speaking
//! `containerd.task.v2.Task` (or v3), and reconnecting to live shims after a daemon restart.
//!
//! It speaks the shim's protobuf types (`containerd_shim_protos::api`); it knows nothing about
//! gRPC or the daemon's API types.

mod bundle;
mod client;
mod manager;

pub use client::Shim;
pub use containerd_shim_protos::api;
pub use manager::{Manager, NewTask};
