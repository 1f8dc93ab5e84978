//! `containerd.services.tasks.v1.Tasks` over the runtime manager: each task is a shim, reached
//! over ttrpc. This adapter converts between the API's prost messages and the shim's protobuf
//! messages and publishes nothing itself: shims forward their own task events.

use std::sync::Arc;

use containerd_shim_protos::protobuf::well_known_types::{
    any::Any as PbAny, timestamp::Timestamp as PbTs,
};
use containerd_shim_protos::protobuf::MessageField;
use prost_types::{Any, Timestamp};
use tonic::{Request, Response, Status};
use wharf_api::tasks::tasks_server::Tasks;
use wharf_api::types::v1 as tv1;
use wharf_api::{pb, types, Empty};
use wharf_core::filters::{Adaptor, Filter};
use wharf_runtime::{api, NewTask, Shim};

use crate::error::MapStatus;
use crate::namespace::namespace;
use crate::server::Daemon;

pub struct TasksService(pub Arc<Daemon>);

fn any_to_shim(a: Option<Any>) -> MessageField<PbAny> {
    match a {
        Some(a) => MessageField::some(PbAny {
            type_url: a.type_url,
            value: a.value,
            ..Default::default()
        }),
        None => MessageField::none(),
    }
}

fn any_from_shim(a: &MessageField<PbAny>) -> Option<Any> {
    a.as_ref().map(|a| Any {
        type_url: a.type_url.clone(),
        value: a.value.clone(),
    })
}

fn ts(t: &MessageField<PbTs>) -> Option<Timestamp> {
    t.as_ref().map(|t| Timestamp {
        seconds: t.seconds,
        nanos: t.nanos,
    })
}

fn mount_to_shim(m: types::Mount) -> api::Mount {
    api::Mount {
        type_: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
        ..Default::default()
    }
}

fn process(container_id: &str, s: &api::StateResponse) -> tv1::Process {
    tv1::Process {
        container_id: container_id.to_string(),
        id: if s.exec_id.is_empty() {
            container_id.to_string()
        } else {
            s.exec_id.clone()
        },
        pid: s.pid,
        status: s.status.value(),
        stdin: s.stdin.clone(),
        stdout: s.stdout.clone(),
        stderr: s.stderr.clone(),
        terminal: s.terminal,
        exit_status: s.exit_status,
        exited_at: ts(&s.exited_at),
    }
}

impl TasksService {
    async fn shim(&self, ns: &str, id: &str) -> Result<Arc<Shim>, Status> {
        self.0
            .runtime
            .get(ns, id)
            .await
            .ok_or_else(|| Status::not_found(format!("no running task found: task {id} not found")))
    }
}

struct TaskView<'a>(&'a tv1::Process);

impl Adaptor for TaskView<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first()?.as_str() {
            "id" | "container_id" => Some(self.0.container_id.clone()),
            "pid" => Some(self.0.pid.to_string()),
            "status" => tv1::Status::try_from(self.0.status)
                .ok()
                .map(|s| s.as_str_name().to_lowercase()),
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl Tasks for TasksService {
    async fn create(
        &self,
        req: Request<pb::CreateTaskRequest>,
    ) -> Result<Response<pb::CreateTaskResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.checkpoint.is_some() {
            return Err(Status::unimplemented(
                "restoring tasks from checkpoints is not supported by wharfd",
            ));
        }
        let c = self.0.db.container_get(&ns, &r.container_id).map_status()?;
        let spec = c.spec.as_ref().map(|s| s.value.clone()).ok_or_else(|| {
            Status::failed_precondition(format!("container {} has no spec", c.id))
        })?;
        if self.0.runtime.get(&ns, &c.id).await.is_some() {
            return Err(Status::already_exists(format!(
                "task {}: already exists",
                c.id
            )));
        }
        let (spec, ip) = self.0.network.prepare(&ns, &c, spec).await.map_status()?;
        if let Some(ip) = ip {
            let mut labelled = c.clone();
            labelled
                .labels
                .insert(wharf_core::labels::IP.to_string(), ip);
            let path = format!("labels.{}", wharf_core::labels::IP);
            if let Err(e) = self.0.db.container_update(&ns, &labelled, &[path]) {
                tracing::warn!(id = %c.id, error = %e, "recording the container's IP");
            }
        }
        let mut rootfs: Vec<api::Mount> = r.rootfs.into_iter().map(mount_to_shim).collect();
        if rootfs.is_empty() && !c.snapshot_key.is_empty() {
            let s = self.0.snapshotters.get(&c.snapshotter).ok_or_else(|| {
                Status::not_found(format!(
                    "snapshotter not loaded: {}: not found",
                    c.snapshotter
                ))
            })?;
            rootfs = s
                .mounts(&ns, &c.snapshot_key)
                .map_status()?
                .into_iter()
                .map(|m| api::Mount {
                    type_: m.kind,
                    source: m.source,
                    options: m.options,
                    ..Default::default()
                })
                .collect();
        }
        let options = r.options.or_else(|| {
            c.runtime_options.as_ref().map(|o| Any {
                type_url: o.type_url.clone(),
                value: o.value.clone(),
            })
        });
        let request = api::CreateTaskRequest {
            rootfs,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            options: any_to_shim(options),
            ..Default::default()
        };
        let created = self
            .0
            .runtime
            .create(NewTask {
                namespace: ns.clone(),
                id: c.id.clone(),
                runtime: c.runtime_name.clone(),
                spec,
                request,
            })
            .await;
        let pid = match created {
            Ok((_, pid)) => pid,
            Err(e) => {
                self.0.network.release(&ns, &c.id).await;
                return Err(crate::error::to_status(e));
            }
        };
        Ok(Response::new(pb::CreateTaskResponse {
            container_id: c.id,
            pid,
        }))
    }

    async fn start(
        &self,
        req: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let pid = self
            .shim(&ns, &r.container_id)
            .await?
            .start(&r.exec_id)
            .await
            .map_status()?
            .pid;
        Ok(Response::new(pb::StartResponse { pid }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteTaskRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let shim = self.shim(&ns, &id).await?;
        let resp = match self.0.runtime.delete(&ns, &id).await {
            Ok(r) => r,
            // The shim died under us: clean up after it as containerd does.
            Err(wharf_core::Error::Unavailable(_)) => {
                self.0.runtime.reap(&ns, &id).await.unwrap_or_default()
            }
            Err(e) => return Err(crate::error::to_status(e)),
        };
        drop(shim);
        self.0.network.release(&ns, &id).await;
        Ok(Response::new(pb::DeleteResponse {
            id,
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: ts(&resp.exited_at),
        }))
    }

    async fn delete_process(
        &self,
        req: Request<pb::DeleteProcessRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument(
                "exec id must be set; use Delete for the task",
            ));
        }
        let resp = self
            .shim(&ns, &r.container_id)
            .await?
            .delete(&r.exec_id)
            .await
            .map_status()?;
        Ok(Response::new(pb::DeleteResponse {
            id: r.exec_id,
            pid: resp.pid,
            exit_status: resp.exit_status,
            exited_at: ts(&resp.exited_at),
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let shim = self.shim(&ns, &r.container_id).await?;
        let st = match shim.state(&r.exec_id).await {
            Ok(st) => st,
            Err(wharf_core::Error::Unavailable(_)) if r.exec_id.is_empty() => {
                // Dead shim: report the task stopped; Delete cleans up.
                api::StateResponse {
                    id: r.container_id.clone(),
                    status: api::Status::STOPPED.into(),
                    exit_status: 137,
                    ..Default::default()
                }
            }
            Err(e) => return Err(crate::error::to_status(e)),
        };
        Ok(Response::new(pb::GetResponse {
            process: Some(process(&r.container_id, &st)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&[req.into_inner().filter]).map_status()?;
        let mut tasks = Vec::new();
        for shim in self.0.runtime.list(&ns).await {
            let p = match shim.state("").await {
                Ok(st) => process(&shim.id, &st),
                Err(_) => tv1::Process {
                    container_id: shim.id.clone(),
                    id: shim.id.clone(),
                    status: tv1::Status::Stopped as i32,
                    exit_status: 137,
                    ..Default::default()
                },
            };
            if filter.matches(&TaskView(&p)) {
                tasks.push(p);
            }
        }
        tasks.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        Ok(Response::new(pb::ListTasksResponse { tasks }))
    }

    async fn kill(&self, req: Request<pb::KillRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.shim(&ns, &r.container_id)
            .await?
            .kill(&r.exec_id, r.signal, r.all)
            .await
            .map_status()?;
        Ok(Response::new(()))
    }

    async fn exec(&self, req: Request<pb::ExecProcessRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        if r.exec_id.is_empty() {
            return Err(Status::invalid_argument("exec id must not be empty"));
        }
        wharf_core::identifiers::validate(&r.exec_id).map_status()?;
        let shim = self.shim(&ns, &r.container_id).await?;
        let er = api::ExecProcessRequest {
            id: r.container_id,
            exec_id: r.exec_id,
            terminal: r.terminal,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
            spec: any_to_shim(r.spec),
            ..Default::default()
        };
        shim.exec(&er).await.map_status()?;
        Ok(Response::new(()))
    }

    async fn resize_pty(
        &self,
        req: Request<pb::ResizePtyRequest>,
    ) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.shim(&ns, &r.container_id)
            .await?
            .resize_pty(&r.exec_id, r.width, r.height)
            .await
            .map_status()?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, req: Request<pb::CloseIoRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        self.shim(&ns, &r.container_id)
            .await?
            .close_io(&r.exec_id, r.stdin)
            .await
            .map_status()?;
        Ok(Response::new(()))
    }

    async fn pause(&self, req: Request<pb::PauseTaskRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        self.shim(&ns, &id).await?.pause().await.map_status()?;
        Ok(Response::new(()))
    }

    async fn resume(&self, req: Request<pb::ResumeTaskRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        self.shim(&ns, &id).await?.resume().await.map_status()?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        req: Request<pb::ListPidsRequest>,
    ) -> Result<Response<pb::ListPidsResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().container_id;
        let resp = self.shim(&ns, &id).await?.pids().await.map_status()?;
        let processes = resp
            .processes
            .iter()
            .map(|p| tv1::ProcessInfo {
                pid: p.pid,
                info: any_from_shim(&p.info),
            })
            .collect();
        Ok(Response::new(pb::ListPidsResponse { processes }))
    }

    async fn checkpoint(
        &self,
        _req: Request<pb::CheckpointTaskRequest>,
    ) -> Result<Response<pb::CheckpointTaskResponse>, Status> {
        Err(Status::unimplemented(
            "checkpointing tasks is not supported by wharfd",
        ))
    }

    async fn update(&self, req: Request<pb::UpdateTaskRequest>) -> Result<Response<Empty>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let shim = self.shim(&ns, &r.container_id).await?;
        let ur = api::UpdateTaskRequest {
            id: r.container_id,
            resources: any_to_shim(r.resources),
            annotations: r.annotations,
            ..Default::default()
        };
        shim.update(&ur).await.map_status()?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        req: Request<pb::MetricsRequest>,
    ) -> Result<Response<pb::MetricsResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_status()?;
        let mut metrics = Vec::new();
        for shim in self.0.runtime.list(&ns).await {
            let view = tv1::Process {
                container_id: shim.id.clone(),
                ..Default::default()
            };
            if !filter.matches(&TaskView(&view)) {
                continue;
            }
            if let Ok(st) = shim.stats().await {
                metrics.push(types::Metric {
                    timestamp: Some(std::time::SystemTime::now().into()),
                    id: shim.id.clone(),
                    data: any_from_shim(&st.stats),
                });
            }
        }
        Ok(Response::new(pb::MetricsResponse { metrics }))
    }

    async fn wait(
        &self,
        req: Request<pb::WaitRequest>,
    ) -> Result<Response<pb::WaitResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let shim = self.shim(&ns, &r.container_id).await?;
        let resp = match shim.wait(&r.exec_id).await {
            Ok(w) => pb::WaitResponse {
                exit_status: w.exit_status,
                exited_at: ts(&w.exited_at),
            },
            // The shim died: its task is gone with it.
            Err(wharf_core::Error::Unavailable(_)) => pb::WaitResponse {
                exit_status: 137,
                exited_at: Some(std::time::SystemTime::now().into()),
            },
            Err(e) => return Err(crate::error::to_status(e)),
        };
        Ok(Response::new(resp))
    }
}
