//! wharf-network: container networking through CNI plugins. It owns persistent network
//! namespaces (`Netns`), running plugin chains (ADD/DEL/CHECK with the CNI_* environment,
//! `prevResult` and `runtimeConfig`), the cache that lets teardown replay what setup used, and
//! wharf's default bridge network. Plugins are executables (`/opt/cni/bin`, `/usr/lib/cni`);
//! no CNI library is linked.
//!
//! It must not know about gRPC, containerd or CRI types, containers' labels or the metadata
//! store: wharfd (for containers run by the CLI) and the CRI service (for pods) translate their
//! own records into a [`NetworkConfig`] and an [`Attachment`].

mod attachment;
mod bridge;
mod cache;
mod cni;
mod config;
mod error;
mod invoke;
mod netns;
mod result;

pub use attachment::{Attachment, PortMapping};
pub use bridge::{
    default_bridge, ipam_allocations, BridgeOptions, CNI_VERSION, DEFAULT_IPAM_DATA_DIR,
};
pub use cni::{Cni, DEFAULT_BIN_DIRS};
pub use config::NetworkConfig;
pub use error::{Error, PluginError, Result};
pub use netns::Netns;
pub use result::{Dns, Interface, IpInfo, NetResult, Route};
