//! `containerd.services.images.v1.Images` over core metadata.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use wharf_api::image_events as pb_events;
use wharf_api::images::images_server::Images;
use wharf_api::{pb, Empty};
use wharf_core::filters::Filter;

use crate::convert::{fieldpaths, image, image_pb, labels_pb};
use crate::error::MapStatus;
use crate::events::publish;
use crate::namespace::namespace;
use crate::server::Daemon;

pub struct ImagesService(pub Arc<Daemon>);

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        req: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let ns = namespace(&req)?;
        let img = self
            .0
            .db
            .image_get(&ns, &req.into_inner().name)
            .map_status()?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(image_pb(&img)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let images = self
            .0
            .db
            .image_list(&ns, &filter)
            .map_status()?
            .iter()
            .map(image_pb)
            .collect();
        Ok(Response::new(pb::ListImagesResponse { images }))
    }

    async fn create(
        &self,
        req: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let ns = namespace(&req)?;
        let i = req
            .into_inner()
            .image
            .ok_or_else(|| Status::invalid_argument("image must be set"))?;
        let img = self.0.db.image_create(&ns, image(i)).map_status()?;
        let ev = pb_events::ImageCreate {
            name: img.name.clone(),
            labels: labels_pb(&img.labels),
        };
        publish(&self.0.exchange, &ns, "/images/create", &ev);
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(image_pb(&img)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let i = r
            .image
            .ok_or_else(|| Status::invalid_argument("image must be set"))?;
        let img = self
            .0
            .db
            .image_update(&ns, &image(i), &fieldpaths(r.update_mask))
            .map_status()?;
        let ev = pb_events::ImageUpdate {
            name: img.name.clone(),
            labels: labels_pb(&img.labels),
        };
        publish(&self.0.exchange, &ns, "/images/update", &ev);
        // A new target may release the old one.
        self.0.gc.trigger();
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(image_pb(&img)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteImageRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if let Some(target) = &r.target {
            // Delete only if the image still points at the given target (containerd 1.7+).
            let cur = self.0.db.image_get(&ns, &r.name).map_status()?;
            if cur.target.digest != target.digest {
                return Err(Status::failed_precondition(format!(
                    "image {:?} has target {}, not {}",
                    r.name, cur.target.digest, target.digest
                )));
            }
        }
        self.0.db.image_delete(&ns, &r.name).map_status()?;
        publish(
            &self.0.exchange,
            &ns,
            "/images/delete",
            &pb_events::ImageDelete { name: r.name },
        );
        if r.sync {
            self.0.gc.run().await.map_status()?;
        } else {
            self.0.gc.trigger();
        }
        Ok(Response::new(()))
    }
}
