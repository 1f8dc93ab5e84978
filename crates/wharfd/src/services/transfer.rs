//! `containerd.services.transfer.v1.Transfer`: what containerd 2.x's `ctr image pull/push` and
//! wharf's own CLI call, served by wharf-distribution. Supported transfers: an `OCIRegistry`
//! source to an `ImageStore` destination (pull, unpacked as the store asks) and back (push).
//! Import/export streams and progress streams need the Streaming service, which wharfd does
//! not serve yet: those requests get a clear Unimplemented.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};
use wharf_api::pb;
use wharf_api::transfer::transfer_server::Transfer;
use wharf_api::types::transfer as tt;
use wharf_core::images::Platform;
use wharf_distribution::client::ClientOptions;
use wharf_distribution::pull::{PullOptions, Unpack};
use wharf_distribution::push::PushOptions;
use wharf_distribution::Kind;

use crate::namespace::namespace;
use crate::server::Daemon;

pub struct TransferService(pub Arc<Daemon>);

/// Maps a distribution error to the status containerd's transfer service would return.
fn to_status(e: wharf_distribution::Error) -> Status {
    let msg = e.to_string();
    match e.kind() {
        Kind::NotFound => Status::not_found(msg),
        Kind::AlreadyExists => Status::already_exists(msg),
        Kind::InvalidArgument => Status::invalid_argument(msg),
        Kind::Unauthenticated => Status::unauthenticated(msg),
        Kind::PermissionDenied => Status::permission_denied(msg),
        Kind::FailedPrecondition => Status::failed_precondition(msg),
        Kind::Unavailable => Status::unavailable(msg),
        Kind::NotImplemented => Status::unimplemented(msg),
        Kind::OutOfRange => Status::out_of_range(msg),
        Kind::Aborted => Status::aborted(msg),
        Kind::Internal => Status::internal(msg),
    }
}

/// The message type an Any holds, whatever prefix the client's typeurl put before it.
fn kind(a: &prost_types::Any) -> &str {
    a.type_url.rsplit('/').next().unwrap_or("")
}

fn decode<M: Message + Default>(a: &prost_types::Any) -> Result<M, Status> {
    M::decode(a.value.as_slice())
        .map_err(|e| Status::invalid_argument(format!("decode {}: {e}", a.type_url)))
}

fn platform(p: &wharf_api::types::Platform) -> Platform {
    Platform {
        architecture: p.architecture.clone(),
        os: p.os.clone(),
        variant: (!p.variant.is_empty()).then(|| p.variant.clone()),
        ..Default::default()
    }
}

impl TransferService {
    fn client(&self, reg: &tt::OciRegistry) -> ClientOptions {
        let hosts_dir = reg
            .resolver
            .as_ref()
            .map(|r| r.host_dir.clone())
            .filter(|d| !d.is_empty())
            .map(Into::into)
            .unwrap_or_else(|| self.0.registry_config_path.clone());
        ClientOptions {
            hosts_dir: Some(hosts_dir),
            credentials: wharf_distribution::auth::Credentials::from_docker_env(),
            ..Default::default()
        }
    }
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn transfer(&self, req: Request<pb::TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.options
            .as_ref()
            .is_some_and(|o| !o.progress_stream.is_empty())
        {
            tracing::debug!("transfer progress streams are not served yet: no progress sent");
        }
        let (Some(src), Some(dst)) = (r.source.as_ref(), r.destination.as_ref()) else {
            return Err(Status::invalid_argument(
                "transfer needs a source and a destination",
            ));
        };
        match (kind(src), kind(dst)) {
            ("containerd.types.transfer.OCIRegistry", "containerd.types.transfer.ImageStore") => {
                let reg: tt::OciRegistry = decode(src)?;
                let store: tt::ImageStore = decode(dst)?;
                let unpack_cfg = store.unpacks.first();
                let snapshotter = unpack_cfg
                    .map(|u| u.snapshotter.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| "overlayfs".to_string());
                let unpack = match unpack_cfg {
                    None => None,
                    Some(_) => Some(Unpack {
                        snapshotter: self.0.snapshotters.get(&snapshotter).cloned().ok_or_else(
                            || Status::not_found(format!("snapshotter {snapshotter}: not found")),
                        )?,
                        tmp: self.0.tmp_mounts.clone(),
                    }),
                };
                let platform = unpack_cfg
                    .and_then(|u| u.platform.as_ref())
                    .or(store.platforms.first())
                    .map(platform);
                let opts = PullOptions {
                    client: self.client(&reg),
                    platform,
                    unpack,
                    labels: store.labels.clone().into_iter().collect(),
                    ..Default::default()
                };
                let pulled = wharf_distribution::pull::pull(&self.0.db, &ns, &reg.reference, &opts)
                    .await
                    .map_err(to_status)?;
                // The store may name the image differently from the reference it came from.
                if !store.name.is_empty() && store.name != pulled.image.name {
                    let mut img = pulled.image.clone();
                    img.name = store.name.clone();
                    match self.0.db.image_create(&ns, img.clone()) {
                        Ok(_) => {}
                        Err(wharf_core::Error::AlreadyExists(_)) => {
                            self.0
                                .db
                                .image_update(&ns, &img, &[])
                                .map_err(crate::error::to_status)?;
                        }
                        Err(e) => return Err(crate::error::to_status(e)),
                    }
                }
                tracing::info!(namespace = %ns, reference = %reg.reference, manifest = %pulled.manifest, "pulled");
                Ok(Response::new(()))
            }
            ("containerd.types.transfer.ImageStore", "containerd.types.transfer.OCIRegistry") => {
                let store: tt::ImageStore = decode(src)?;
                let reg: tt::OciRegistry = decode(dst)?;
                let opts = PushOptions {
                    client: self.client(&reg),
                    ..Default::default()
                };
                wharf_distribution::push::push(&self.0.db, &ns, &store.name, &reg.reference, &opts)
                    .await
                    .map_err(to_status)?;
                Ok(Response::new(()))
            }
            (s, d) => Err(Status::unimplemented(format!(
                "transfer from {s} to {d} is not supported by wharfd (registry <-> image store only; \
                 import/export streams need the Streaming service)"
            ))),
        }
    }
}
