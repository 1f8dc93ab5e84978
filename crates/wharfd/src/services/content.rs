//! `containerd.services.content.v1.Content` over core metadata and the content store, including
//! Write, the bidirectional, resumable ingest protocol (STAT / WRITE / COMMIT).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use wharf_api::content::content_server::Content;
use wharf_api::content_write::WriteContentRequest;
use wharf_api::events as pb_events;
use wharf_api::{pb, Empty};
use wharf_core::filters::Filter;
use wharf_core::metadata::{ContentWriter, Db};
use wharf_core::Digest;

use crate::convert::{content_info_pb, fieldpaths, ingest_status_pb, labels, ts};
use crate::error::{to_status, MapStatus};
use crate::events::publish;
use crate::namespace::{lease, namespace};
use crate::server::Daemon;

/// Largest chunk Read sends (containerd uses 1 MiB).
const READ_CHUNK: usize = 1 << 20;

pub struct ContentService(pub Arc<Daemon>);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn digest(s: &str) -> Result<Digest, Status> {
    Digest::parse(s).map_status()
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let ns = namespace(&req)?;
        let d = digest(&req.into_inner().digest)?;
        let info = self.0.db.content_info(&ns, &d).map_status()?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(content_info_pb(&info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let info = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set"))?;
        let d = digest(&info.digest)?;
        let info = self
            .0
            .db
            .content_update(&ns, &d, &labels(info.labels), &fieldpaths(r.update_mask))
            .map_status()?;
        // Labels are references: changing them can release content.
        self.0.gc.trigger();
        Ok(Response::new(pb::UpdateResponse {
            info: Some(content_info_pb(&info)),
        }))
    }

    type ListStream = BoxStream<pb::ListContentResponse>;

    async fn list(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let infos = self.0.db.content_list(&ns, &filter).map_status()?;
        // containerd batches list results to keep messages small.
        let batches: Vec<Result<pb::ListContentResponse, Status>> = infos
            .chunks(100)
            .map(|c| {
                Ok(pb::ListContentResponse {
                    info: c.iter().map(content_info_pb).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteContentRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let d = digest(&req.into_inner().digest)?;
        self.0.db.content_delete(&ns, &d).map_status()?;
        publish(
            &self.0.exchange,
            &ns,
            "/content/delete",
            &pb_events::ContentDelete {
                digest: d.to_string(),
            },
        );
        self.0.gc.trigger();
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<pb::ReadContentResponse>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let d = digest(&r.digest)?;
        let info = self.0.db.content_info(&ns, &d).map_status()?;
        if r.offset < 0 || r.size < 0 {
            return Err(Status::invalid_argument(
                "offset and size must not be negative",
            ));
        }
        let (offset, size) = (r.offset as u64, r.size as u64);
        if offset > info.size {
            return Err(Status::out_of_range(format!(
                "offset {offset} is beyond the end of content {d} (size {})",
                info.size
            )));
        }
        let end = if size == 0 {
            info.size
        } else {
            (offset + size).min(info.size)
        };
        let path = self.0.db.content_store().blob_path(&d);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::not_found(format!("content {d}: {e}")))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| Status::internal(format!("seek content {d}: {e}")))?;
        let stream = async_stream::try_stream! {
            let mut pos = offset;
            let mut buf = vec![0u8; READ_CHUNK];
            while pos < end {
                let want = ((end - pos) as usize).min(READ_CHUNK);
                let n = file.read(&mut buf[..want]).await
                    .map_err(|e| Status::internal(format!("read content {d}: {e}")))?;
                if n == 0 {
                    Err(Status::data_loss(format!("content {d} is shorter on disk than recorded")))?;
                }
                yield pb::ReadContentResponse { offset: pos as i64, data: buf[..n].to_vec() };
                pos += n as u64;
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ns = namespace(&req)?;
        let st = self
            .0
            .db
            .content_status(&ns, &req.into_inner().r#ref)
            .map_status()?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(ingest_status_pb(&st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let statuses = self
            .0
            .db
            .content_list_statuses(&ns, &filter)
            .map_status()?
            .iter()
            .map(ingest_status_pb)
            .collect();
        Ok(Response::new(pb::ListStatusesResponse { statuses }))
    }

    type WriteStream = BoxStream<pb::WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req);
        let mut incoming = req.into_inner();
        let first = match incoming.next().await {
            Some(m) => m?,
            None => {
                return Err(Status::invalid_argument(
                    "write stream ended before its first message",
                ))
            }
        };
        if first.r#ref.is_empty() {
            return Err(Status::invalid_argument(
                "first message must have a reference",
            ));
        }
        let expected = if first.expected.is_empty() {
            None
        } else {
            Some(digest(&first.expected)?)
        };
        let total = first.total.max(0) as u64;
        // Opening may hash a resumed ingest: keep it off the async threads.
        let db = self.0.db.clone();
        let (ns2, r2, e2) = (ns.clone(), first.r#ref.clone(), expected.clone());
        let writer = tokio::task::spawn_blocking(move || {
            db.content_writer(&ns2, &r2, total, e2, lease.as_deref())
        })
        .await
        .map_err(|e| Status::internal(format!("write: {e}")))?
        .map_status()?;

        // File I/O runs on a blocking thread fed by this channel; responses come back the same way.
        let (in_tx, in_rx) = mpsc::channel::<WriteContentRequest>(4);
        let (out_tx, out_rx) = mpsc::channel::<Result<pb::WriteContentResponse, Status>>(4);
        let daemon = self.0.clone();
        tokio::spawn(async move {
            let mut msg = Some(first);
            loop {
                let m = match msg.take() {
                    Some(m) => m,
                    None => match incoming.next().await {
                        Some(Ok(m)) => m,
                        // Client gone (or error): the ingest stays on disk for a later resume.
                        _ => break,
                    },
                };
                if in_tx.send(m).await.is_err() {
                    break;
                }
            }
        });
        let out = out_tx.clone();
        let ns3 = ns.clone();
        tokio::task::spawn_blocking(move || {
            let committed = ingest_loop(&daemon.db, writer, total, expected, in_rx, &out_tx);
            if let Some((d, size)) = committed {
                publish(
                    &daemon.exchange,
                    &ns3,
                    "/content/create",
                    &pb_events::ContentCreate {
                        digest: d.to_string(),
                        size: size as i64,
                    },
                );
            }
            drop(out);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        self.0
            .db
            .content_abort(&ns, &req.into_inner().r#ref)
            .map_status()?;
        Ok(Response::new(()))
    }
}

/// Serves one Write stream: applies each request to the writer and answers it. Returns the
/// committed digest and size, if the stream committed.
fn ingest_loop(
    _db: &Db,
    writer: ContentWriter,
    mut total: u64,
    mut expected: Option<Digest>,
    mut rx: mpsc::Receiver<WriteContentRequest>,
    tx: &mpsc::Sender<Result<pb::WriteContentResponse, Status>>,
) -> Option<(Digest, u64)> {
    let mut writer = Some(writer);
    let fail = |e: Status| {
        let _ = tx.blocking_send(Err(e));
        None
    };
    while let Some(req) = rx.blocking_recv() {
        let Some(w) = writer.as_mut() else {
            return fail(Status::failed_precondition(
                "write stream already committed",
            ));
        };
        if !req.expected.is_empty() {
            match Digest::parse(&req.expected) {
                Ok(d) => expected = Some(d),
                Err(e) => return fail(to_status(e)),
            }
        }
        if req.total > 0 {
            total = req.total as u64;
            if let Err(e) = w.set_total(total) {
                return fail(to_status(e));
            }
        }
        let action = req.action;
        let mut resp = pb::WriteContentResponse {
            action,
            ..Default::default()
        };
        if action == pb::WriteAction::Stat as i32 {
            let st = w.status();
            resp.started_at = ts(st.started_at);
            resp.updated_at = ts(st.updated_at);
            resp.offset = st.offset as i64;
            resp.total = total as i64;
            resp.digest = w.digest().to_string();
        } else if action == pb::WriteAction::Write as i32
            || action == pb::WriteAction::Commit as i32
        {
            if req.offset < 0 {
                return fail(Status::invalid_argument("offset must not be negative"));
            }
            // The common case, a WRITE continuing where the last one ended, is pipelined: the
            // client gets its answer (the new offset) before the bytes are hashed and written,
            // so that work overlaps the client sending its next chunk (ctr waits for each
            // answer). Such answers carry no digest (containerd's clients keep the last one they
            // got; STAT and COMMIT answers have it). A failed write fails the stream at its next
            // message, and nothing unverified is ever committed.
            if action == pb::WriteAction::Write as i32
                && !req.data.is_empty()
                && req.offset as u64 == w.offset()
            {
                let st = w.status();
                resp.started_at = ts(st.started_at);
                resp.updated_at = ts(std::time::SystemTime::now());
                resp.offset = (st.offset + req.data.len() as u64) as i64;
                resp.total = total as i64;
                if tx.blocking_send(Ok(resp)).is_err() {
                    break;
                }
                w.absorb(&req.data);
                if let Err(e) = w.persist(&req.data) {
                    return fail(to_status(e));
                }
                continue;
            }
            if !req.data.is_empty() || req.offset > 0 {
                if let Err(e) = w.write_at(req.offset as u64, &req.data) {
                    return fail(to_status(e));
                }
            }
            let st = w.status();
            resp.started_at = ts(st.started_at);
            resp.updated_at = ts(st.updated_at);
            resp.offset = st.offset as i64;
            resp.total = total as i64;
            if action == pb::WriteAction::Commit as i32 {
                let w = writer.take()?;
                let size = w.offset();
                match w.commit(total, expected.clone(), labels(req.labels)) {
                    Ok(d) => {
                        resp.digest = d.to_string();
                        let _ = tx.blocking_send(Ok(resp));
                        return Some((d, size));
                    }
                    Err(e) => return fail(to_status(e)),
                }
            }
            resp.digest = w.digest().to_string();
        } else {
            return fail(Status::invalid_argument(format!(
                "unknown write action {action}"
            )));
        }
        if tx.blocking_send(Ok(resp)).is_err() {
            break;
        }
    }
    None
}
