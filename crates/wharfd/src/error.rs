//! The one place where core errors become gRPC statuses, the way containerd's errdefs map them.

use tonic::{Code, Status};
use wharf_core::Error;

/// Maps a core error to the status containerd would return; the message is the error's text.
pub fn to_status(e: Error) -> Status {
    let code = match &e {
        Error::NotFound(_) => Code::NotFound,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
        Error::Unavailable(_) => Code::Unavailable,
        Error::NotImplemented(_) => Code::Unimplemented,
        Error::Aborted(_) => Code::Aborted,
        Error::OutOfRange(_) => Code::OutOfRange,
        Error::Io { source, .. } if source.raw_os_error() == Some(libc_enospc()) => {
            Code::ResourceExhausted
        }
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Code::NotFound,
        Error::Io { .. } | Error::Internal(_) => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
    }
    Status::new(code, e.to_string())
}

const fn libc_enospc() -> i32 {
    28
}

/// Maps a distribution error (pull, push, archives) to the status containerd's transfer service
/// would return.
pub fn dist_to_status(e: wharf_distribution::Error) -> Status {
    use wharf_distribution::Kind;
    let code = match e.kind() {
        Kind::NotFound => Code::NotFound,
        Kind::AlreadyExists => Code::AlreadyExists,
        Kind::InvalidArgument => Code::InvalidArgument,
        Kind::Unauthenticated => Code::Unauthenticated,
        Kind::PermissionDenied => Code::PermissionDenied,
        Kind::FailedPrecondition => Code::FailedPrecondition,
        Kind::Unavailable => Code::Unavailable,
        Kind::NotImplemented => Code::Unimplemented,
        Kind::OutOfRange => Code::OutOfRange,
        Kind::Aborted => Code::Aborted,
        Kind::ResourceExhausted => Code::ResourceExhausted,
        Kind::Internal => Code::Internal,
    };
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
    }
    Status::new(code, e.to_string())
}

/// `result.map_status()?` in adapters.
pub trait MapStatus<T> {
    fn map_status(self) -> Result<T, Status>;
}

impl<T> MapStatus<T> for Result<T, Error> {
    fn map_status(self) -> Result<T, Status> {
        self.map_err(to_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_containerd() {
        assert_eq!(
            to_status(Error::NotFound("content sha256:x".into())).code(),
            Code::NotFound
        );
        assert_eq!(
            to_status(Error::NotFound("content sha256:x".into())).message(),
            "content sha256:x: not found"
        );
        assert_eq!(
            to_status(Error::AlreadyExists("x".into())).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            to_status(Error::FailedPrecondition("x".into())).code(),
            Code::FailedPrecondition
        );
        let enospc = std::io::Error::from_raw_os_error(28);
        assert_eq!(
            to_status(Error::io("write", enospc)).code(),
            Code::ResourceExhausted
        );
    }
}
