//! Core and distribution errors become gRPC statuses here (codes from `wharf_api::status`, the
//! one mapping both adapters use), with internal errors logged.

use tonic::{Code, Status};
use wharf_core::Error;

/// Maps a core error to the status containerd would return; the message is the error's text.
pub fn to_status(e: Error) -> Status {
    let code = wharf_api::status::core_code(&e);
    if code == Code::Internal {
        tracing::error!(error = %e, "internal error");
    }
    Status::new(code, e.to_string())
}

/// Maps a distribution error (pull, push, archives) to the status containerd's transfer service
/// would return.
pub fn dist_to_status(e: wharf_distribution::Error) -> Status {
    let code = wharf_api::status::distribution_code(&e);
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
