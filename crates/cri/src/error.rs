//! The CRI crate's error and its gRPC status. Codes follow containerd's errdefs mapping
//! (containerd's CRI server returns `errdefs.ToGRPC(err)`); core and distribution errors take
//! theirs from `wharf_api::status`, as wharfd's containerd services do.

use tonic::{Code, Status};

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Not now (a sandbox not ready for stats): containerd's ErrUnavailable.
    #[error("{0}: unavailable")]
    Unavailable(String),
    #[error(transparent)]
    Network(#[from] wharf_network::Error),
    #[error("not implemented yet in wharf: {0}")]
    NotImplemented(String),
    #[error(transparent)]
    Core(#[from] wharf_core::Error),
    #[error(transparent)]
    Distribution(#[from] wharf_distribution::Error),
    #[error("{0}")]
    Internal(String),
    /// Another error with what was being done in front (its code is the inner one's).
    #[error("{what}: {source}")]
    Context {
        what: String,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// Prefixes the message with what was being done, keeping the code.
    pub fn context(self, what: impl Into<String>) -> Self {
        Error::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The gRPC code containerd would answer with.
    pub fn code(&self) -> Code {
        match self {
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Network(e) if e.is_not_found() => Code::NotFound,
            Error::Network(e) if e.is_already_exists() => Code::AlreadyExists,
            Error::Network(_) => Code::Internal,
            Error::NotImplemented(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
            Error::Context { source, .. } => source.code(),
            Error::Core(e) => wharf_api::status::core_code(e),
            Error::Distribution(e) => wharf_api::status::distribution_code(e),
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code() == Code::NotFound
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = e.code();
        if code == Code::Internal {
            tracing::error!(error = %e, "cri: internal error");
        }
        Status::new(code, e.to_string())
    }
}

/// The answer of every RPC wharf does not serve yet.
pub fn not_implemented(rpc: &str) -> Status {
    Error::NotImplemented(rpc.to_string()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_containerd() {
        let e = Error::from(wharf_distribution::Error::NotFound("ref".into()))
            .context("failed to pull and unpack image \"x\"");
        let s = Status::from(e);
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(
            s.message(),
            "failed to pull and unpack image \"x\": ref: not found"
        );
        assert_eq!(
            Status::from(Error::InvalidArgument("x".into())).code(),
            Code::InvalidArgument
        );
        let s = not_implemented("RunPodSandbox");
        assert_eq!(s.code(), Code::Unimplemented);
        assert_eq!(s.message(), "not implemented yet in wharf: RunPodSandbox");
        assert_eq!(
            Status::from(Error::from(wharf_core::Error::AlreadyExists("i".into()))).code(),
            Code::AlreadyExists
        );
    }
}
