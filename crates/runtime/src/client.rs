//! A ttrpc connection to one shim. The generated client of containerd-shim-protos is bound to
//! `containerd.task.v3.Task`; containerd 1.6's shims serve `containerd.task.v2.Task` (same
//! messages), so calls go through a small generic client that knows which name the shim serves.

use std::time::Duration;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::MessageFull;
use ttrpc::r#async::Client;
use wharf_core::{Error, Result};

const V2: &str = "containerd.task.v2.Task";
const V3: &str = "containerd.task.v3.Task";

/// Calls that must return promptly; Wait has no timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Create mounts, makes cgroups and forks the container: under a burst of creates on a small
/// machine it can take far longer than other calls (containerd sets no deadline on it at all).
const CREATE_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Shim {
    client: Client,
    /// Set when wharfd itself ends the shim (Delete/Shutdown), so a closing connection is not
    /// mistaken for a crash.
    pub closing: std::sync::atomic::AtomicBool,
    service: &'static str,
    pub address: String,
    pub namespace: String,
    pub id: String,
    pub bundle: std::path::PathBuf,
}

/// Maps a ttrpc error to a core error the way containerd's errdefs read shim errors.
pub fn from_ttrpc(what: &str, e: ttrpc::Error) -> Error {
    match e {
        ttrpc::Error::RpcStatus(s) => {
            let msg = format!("{what}: {}", s.message());
            match s.code() {
                ttrpc::Code::NOT_FOUND => Error::NotFound(msg),
                ttrpc::Code::ALREADY_EXISTS => Error::AlreadyExists(msg),
                ttrpc::Code::FAILED_PRECONDITION => Error::FailedPrecondition(msg),
                ttrpc::Code::INVALID_ARGUMENT => Error::InvalidArgument(msg),
                ttrpc::Code::UNIMPLEMENTED => Error::NotImplemented(msg),
                ttrpc::Code::UNAVAILABLE => Error::Unavailable(msg),
                _ => Error::Internal(msg),
            }
        }
        other => Error::Unavailable(format!("{what}: shim connection: {other}")),
    }
}

impl Shim {
    /// Connects to a shim at `address` (`unix:///path`) and finds which task service it serves.
    pub async fn connect(
        address: &str,
        namespace: &str,
        id: &str,
        bundle: std::path::PathBuf,
    ) -> Result<Shim> {
        let client = Client::connect(address)
            .await
            .map_err(|e| Error::Unavailable(format!("connect to shim {address}: {e}")))?;
        let mut shim = Shim {
            client,
            closing: std::sync::atomic::AtomicBool::new(false),
            service: V2,
            address: address.to_string(),
            namespace: namespace.to_string(),
            id: id.to_string(),
            bundle,
        };
        let req = api::ConnectRequest {
            id: id.to_string(),
            ..Default::default()
        };
        match shim
            .call::<_, api::ConnectResponse>("Connect", &req, Some(CALL_TIMEOUT))
            .await
        {
            Ok(_) => {}
            Err(Error::NotImplemented(_)) | Err(Error::NotFound(_)) => {
                shim.service = V3;
                shim.call::<_, api::ConnectResponse>("Connect", &req, Some(CALL_TIMEOUT))
                    .await?;
            }
            Err(e) => return Err(e),
        }
        Ok(shim)
    }

    async fn call<Req, Resp>(
        &self,
        method: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp>
    where
        Req: MessageFull,
        Resp: MessageFull,
    {
        let ctx = ttrpc::context::with_timeout(timeout.map(|t| t.as_nanos() as i64).unwrap_or(0));
        let r: ttrpc::Result<Resp> = async {
            let mut cres = Resp::new();
            let service = self.service;
            ttrpc::async_client_request!(self, ctx, req, service, method, cres);
        }
        .await;
        r.map_err(|e| from_ttrpc(&format!("shim {} {method}", self.id), e))
    }

    pub async fn create(&self, req: &api::CreateTaskRequest) -> Result<api::CreateTaskResponse> {
        self.call("Create", req, Some(CREATE_TIMEOUT)).await
    }

    pub async fn start(&self, exec_id: &str) -> Result<api::StartResponse> {
        let req = api::StartRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.call("Start", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn state(&self, exec_id: &str) -> Result<api::StateResponse> {
        let req = api::StateRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.call("State", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn delete(&self, exec_id: &str) -> Result<api::DeleteResponse> {
        let req = api::DeleteRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.call("Delete", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let req = api::KillRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            signal,
            all,
            ..Default::default()
        };
        self.call::<_, api::Empty>("Kill", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    /// Blocks until the process exits.
    pub async fn wait(&self, exec_id: &str) -> Result<api::WaitResponse> {
        let req = api::WaitRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.call("Wait", &req, None).await
    }

    pub async fn exec(&self, req: &api::ExecProcessRequest) -> Result<()> {
        self.call::<_, api::Empty>("Exec", req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn resize_pty(&self, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let req = api::ResizePtyRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            width,
            height,
            ..Default::default()
        };
        self.call::<_, api::Empty>("ResizePty", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn close_io(&self, exec_id: &str, stdin: bool) -> Result<()> {
        let req = api::CloseIORequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            stdin,
            ..Default::default()
        };
        self.call::<_, api::Empty>("CloseIO", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn pids(&self) -> Result<api::PidsResponse> {
        let req = api::PidsRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        self.call("Pids", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn pause(&self) -> Result<()> {
        let req = api::PauseRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        self.call::<_, api::Empty>("Pause", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn resume(&self) -> Result<()> {
        let req = api::ResumeRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        self.call::<_, api::Empty>("Resume", &req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn update(&self, req: &api::UpdateTaskRequest) -> Result<()> {
        self.call::<_, api::Empty>("Update", req, Some(CALL_TIMEOUT))
            .await
            .map(|_| ())
    }

    pub async fn stats(&self) -> Result<api::StatsResponse> {
        let req = api::StatsRequest {
            id: self.id.clone(),
            ..Default::default()
        };
        self.call("Stats", &req, Some(CALL_TIMEOUT)).await
    }

    pub async fn shutdown(&self) -> Result<()> {
        let req = api::ShutdownRequest {
            id: self.id.clone(),
            now: false,
            ..Default::default()
        };
        // The shim exits while answering: a broken connection here is success.
        match self
            .call::<_, api::Empty>("Shutdown", &req, Some(CALL_TIMEOUT))
            .await
        {
            Ok(_) | Err(Error::Unavailable(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
