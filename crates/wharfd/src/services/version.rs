//! `containerd.services.version.v1.Version`.

use tonic::{Request, Response, Status};
use wharf_api::version::version_server::Version;
use wharf_api::{pb, Empty};

pub struct VersionService;

/// The version wharfd reports: its own, in containerd's `v<semver>` form.
pub const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _req: Request<Empty>) -> Result<Response<pb::VersionResponse>, Status> {
        Ok(Response::new(pb::VersionResponse {
            version: VERSION.to_string(),
            revision: option_env!("WHARF_REVISION")
                .unwrap_or("unknown")
                .to_string(),
        }))
    }
}
