//! Exec, Attach and PortForward RPCs: validate the request as the kubelet's streaming server
//! and containerd do, then answer the streaming server's URL for it.

use wharf_api::cri as pb;

use crate::streaming::Request;
use crate::{Cri, Error, Result};

/// The stdio flags every remote-command request must satisfy.
fn check_stdio(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<()> {
    if tty && stderr {
        // A terminal multiplexes nothing: its output is one stream.
        return Err(Error::InvalidArgument(
            "tty and stderr cannot both be true".into(),
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Error::InvalidArgument(
            "one of stdin, stdout, or stderr must be set".into(),
        ));
    }
    Ok(())
}

impl Cri {
    /// The full ID of the container `id` names (or prefixes), which must be running.
    async fn running_container_id(&self, id: &str) -> Result<String> {
        let c = self
            .container(id)
            .map_err(|e| e.context(format!("failed to find container {id:?}")))?;
        self.running_shim(c.id()).await?;
        Ok(c.id().to_string())
    }

    pub async fn exec_url(&self, mut r: pb::ExecRequest) -> Result<String> {
        if r.cmd.is_empty() {
            return Err(Error::InvalidArgument("cmd must not be empty".into()));
        }
        check_stdio(r.stdin, r.stdout, r.stderr, r.tty)?;
        r.container_id = self.running_container_id(&r.container_id).await?;
        self.stream_url(Request::Exec(r))
    }

    pub async fn attach_url(&self, mut r: pb::AttachRequest) -> Result<String> {
        check_stdio(r.stdin, r.stdout, r.stderr, r.tty)?;
        r.container_id = self.running_container_id(&r.container_id).await?;
        self.stream_url(Request::Attach(r))
    }

    pub async fn port_forward_url(&self, mut r: pb::PortForwardRequest) -> Result<String> {
        if r.pod_sandbox_id.is_empty() {
            return Err(Error::InvalidArgument(
                "missing required pod_sandbox_id".into(),
            ));
        }
        let s = self
            .sandbox(&r.pod_sandbox_id)
            .map_err(|e| e.context(format!("failed to find sandbox {:?}", r.pod_sandbox_id)))?;
        let (state, _) = self.sandbox_state(&s).await;
        if state != pb::PodSandboxState::SandboxReady {
            return Err(Error::FailedPrecondition(format!(
                "sandbox {} is not running",
                s.id()
            )));
        }
        if let Some(p) = r.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Error::InvalidArgument(format!("invalid port {p}")));
        }
        r.pod_sandbox_id = s.id().to_string();
        self.stream_url(Request::PortForward(r))
    }
}
