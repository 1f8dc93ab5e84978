//! ExecSync: a process in a running container with the container's process settings and the
//! request's command; its stdout and stderr come back through FIFOs wharfd reads, up to a cap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use tokio::io::AsyncReadExt;
use wharf_runtime::{api, Shim};

use crate::task::TaskStatus;
use crate::{Cri, Error, Result};

/// Output kept per stream (kubelet's probes read little; containerd caps at 16 MiB).
const MAX_OUTPUT: usize = 16 << 20;
const SIGKILL: u32 = 9;

/// Output after the process exited is read for at most this long (children that keep the
/// FIFO open must not hold the answer).
const DRAIN: Duration = Duration::from_secs(2);

pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// A directory of FIFOs, removed when dropped.
pub(crate) struct FifoDir(pub PathBuf);

impl Drop for FifoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn mkfifo(p: &Path) -> Result<()> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| Error::Internal(format!("mkfifo {}: {e}", p.display())))
}

async fn read_capped(mut r: tokio::net::unix::pipe::Receiver) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    out
}

impl Cri {
    /// What an exec in a container needs: its full id, its shim (it must be running) and the
    /// OCI process to run (the container's, with `cmd` and `tty`).
    pub(crate) async fn exec_target(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
    ) -> Result<(String, Arc<Shim>, serde_json::Value)> {
        let c = self.container(id)?;
        let id = c.id().to_string();
        let shim = self.running_shim(&id).await?;
        let spec: serde_json::Value = c
            .record
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .ok_or_else(|| Error::Internal(format!("container {id} has no spec")))?;
        let mut process = spec["process"].clone();
        process["args"] = serde_json::json!(cmd);
        process["terminal"] = serde_json::json!(tty);
        Ok((id, shim, process))
    }

    /// The shim of a container whose task is running.
    pub(crate) async fn running_shim(&self, id: &str) -> Result<Arc<Shim>> {
        let not_running = || Error::FailedPrecondition(format!("container {id} is not running"));
        match self.task_state(id).await {
            Some(t) if t.status == TaskStatus::Running => {}
            _ => return Err(not_running()),
        }
        self.shim(id).await.ok_or_else(not_running)
    }

    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: i64) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(Error::InvalidArgument(
                "exec command must not be empty".into(),
            ));
        }
        let (id, shim, process) = self.exec_target(id, &cmd, false).await?;
        let exec_id = format!("exec-{}", &crate::store::new_id()?[..16]);
        let dir = FifoDir(self.state.join("cri").join("exec").join(&exec_id));
        std::fs::create_dir_all(&dir.0)
            .map_err(|e| Error::Internal(format!("create {}: {e}", dir.0.display())))?;
        let (out_path, err_path) = (dir.0.join("stdout"), dir.0.join("stderr"));
        mkfifo(&out_path)?;
        mkfifo(&err_path)?;
        let open = |p: &Path| {
            tokio::net::unix::pipe::OpenOptions::new()
                .open_receiver(p)
                .map_err(|e| Error::Internal(format!("open {}: {e}", p.display())))
        };
        let out_rx = open(&out_path)?;
        let err_rx = open(&err_path)?;
        let out_task = tokio::spawn(read_capped(out_rx));
        let err_task = tokio::spawn(read_capped(err_rx));

        let req = api::ExecProcessRequest {
            id: id.clone(),
            exec_id: exec_id.clone(),
            terminal: false,
            stdout: out_path.display().to_string(),
            stderr: err_path.display().to_string(),
            spec: process_spec(&process)?,
            ..Default::default()
        };
        let run = async {
            shim.exec(&req).await?;
            shim.start(&exec_id).await?;
            let waited = if timeout > 0 {
                match tokio::time::timeout(Duration::from_secs(timeout as u64), shim.wait(&exec_id))
                    .await
                {
                    Ok(w) => Some(w?),
                    Err(_) => None,
                }
            } else {
                Some(shim.wait(&exec_id).await?)
            };
            Ok::<_, wharf_core::Error>(waited)
        }
        .await;
        let waited = match run {
            Ok(w) => w,
            Err(e) => {
                let _ = shim.delete(&exec_id).await;
                out_task.abort();
                err_task.abort();
                return Err(Error::from(e).context(format!("failed to exec in container {id}")));
            }
        };
        let Some(w) = waited else {
            let _ = shim.kill(&exec_id, SIGKILL, false).await;
            let _ = tokio::time::timeout(DRAIN, shim.wait(&exec_id)).await;
            let _ = shim.delete(&exec_id).await;
            out_task.abort();
            err_task.abort();
            return Err(Error::DeadlineExceeded(format!(
                "failed to exec in container {id}: timeout {timeout}s exceeded"
            )));
        };
        let _ = shim.delete(&exec_id).await;
        let collect = |t: tokio::task::JoinHandle<Vec<u8>>| async move {
            match tokio::time::timeout(DRAIN, t).await {
                Ok(Ok(v)) => v,
                _ => Vec::new(),
            }
        };
        let stdout = collect(out_task).await;
        let stderr = collect(err_task).await;
        Ok(ExecOutput {
            stdout,
            stderr,
            exit_code: w.exit_status as i32,
        })
    }
}

/// An OCI Process as the shim's ExecProcessRequest carries it.
pub(crate) fn process_spec<T: serde::Serialize>(process: &T) -> Result<MessageField<Any>> {
    Ok(MessageField::some(Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(process).map_err(|e| Error::Internal(format!("process: {e}")))?,
        ..Default::default()
    }))
}
