//! `runtime.v1.ImageService`: converts CRI messages and delegates to [`crate::images`].

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::cri as pb;
use wharf_api::cri::image_service_server::ImageService as Api;

use crate::images::CriImage;
use crate::{auth, Cri, Error};

pub struct ImageService(pub Arc<Cri>);

fn image_pb(i: &CriImage) -> pb::Image {
    let (uid, username) = i.user();
    pb::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags(),
        repo_digests: i.repo_digests(),
        size: i.size,
        uid: uid.map(|value| pb::Int64Value { value }),
        username,
        spec: Some(pb::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: i.pinned,
    }
}

/// The image a request names (`ImageSpec.image`).
fn spec_image(spec: Option<&pb::ImageSpec>) -> &str {
    spec.map(|s| s.image.as_str()).unwrap_or("")
}

#[tonic::async_trait]
impl Api for ImageService {
    async fn list_images(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        self.0.start().await;
        let r = req.into_inner();
        let wanted = spec_image(r.filter.as_ref().and_then(|f| f.image.as_ref()));
        let images = if wanted.is_empty() {
            self.0.list_images()?
        } else {
            self.0.resolve_image(wanted)?.into_iter().collect()
        };
        Ok(Response::new(pb::ListImagesResponse {
            images: images.iter().map(image_pb).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<pb::ImageStatusRequest>,
    ) -> Result<Response<pb::ImageStatusResponse>, Status> {
        self.0.start().await;
        let r = req.into_inner();
        // Not found is an empty answer, not an error (kubelet then pulls).
        let Some(img) = self.0.resolve_image(spec_image(r.image.as_ref()))? else {
            return Ok(Response::new(pb::ImageStatusResponse::default()));
        };
        let mut info = std::collections::HashMap::new();
        if r.verbose {
            let v = serde_json::json!({
                "chainID": img.chain_id.as_ref().map(|c| c.to_string()),
                "manifestDigest": img.manifest.to_string(),
                "references": img.references,
                "imageSpec": img.config,
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(Response::new(pb::ImageStatusResponse {
            image: Some(image_pb(&img)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<pb::PullImageRequest>,
    ) -> Result<Response<pb::PullImageResponse>, Status> {
        self.0.start().await;
        let r = req.into_inner();
        let image = spec_image(r.image.as_ref());
        if image.is_empty() {
            return Err(Error::InvalidArgument("image must be set".into()).into());
        }
        let credential = match &r.auth {
            Some(a) => {
                let host = wharf_distribution::Reference::parse(image)
                    .map(|r| r.domain().to_string())
                    .map_err(|e| {
                        Error::InvalidArgument(format!(
                            "failed to parse image reference {image:?}: {e}"
                        ))
                    })?;
                auth::credential(a, &host)?
            }
            None => None,
        };
        let image_ref = self.0.pull_image(image, credential).await?;
        Ok(Response::new(pb::PullImageResponse { image_ref }))
    }

    async fn remove_image(
        &self,
        req: Request<pb::RemoveImageRequest>,
    ) -> Result<Response<pb::RemoveImageResponse>, Status> {
        self.0.start().await;
        let r = req.into_inner();
        let image = spec_image(r.image.as_ref());
        if image.is_empty() {
            return Err(Error::InvalidArgument("image must be set".into()).into());
        }
        self.0.remove_image(image)?;
        Ok(Response::new(pb::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<pb::ImageFsInfoRequest>,
    ) -> Result<Response<pb::ImageFsInfoResponse>, Status> {
        self.0.start().await;
        let u = self.0.image_fs_usage().await?;
        Ok(Response::new(pb::ImageFsInfoResponse {
            image_filesystems: vec![pb::FilesystemUsage {
                timestamp: u.timestamp,
                fs_id: Some(pb::FilesystemIdentifier {
                    mountpoint: u.mountpoint.to_string_lossy().into_owned(),
                }),
                used_bytes: Some(pb::UInt64Value {
                    value: u.used_bytes,
                }),
                inodes_used: Some(pb::UInt64Value {
                    value: u.inodes_used,
                }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}
