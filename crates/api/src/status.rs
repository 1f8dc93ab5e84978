//! The one mapping from wharf's error kinds to gRPC codes, as containerd's errdefs map them.
//! Both adapters (wharfd's containerd services and the CRI service) answer with these codes.

use tonic::Code;

/// The code containerd answers a core error with. A full disk is ResourceExhausted; a file
/// that is not there, NotFound.
pub fn core_code(e: &wharf_core::Error) -> Code {
    use wharf_core::Error as E;
    match e {
        E::NotFound(_) => Code::NotFound,
        E::AlreadyExists(_) => Code::AlreadyExists,
        E::InvalidArgument(_) => Code::InvalidArgument,
        E::FailedPrecondition(_) => Code::FailedPrecondition,
        E::Unavailable(_) => Code::Unavailable,
        E::NotImplemented(_) => Code::Unimplemented,
        E::OutOfRange(_) => Code::OutOfRange,
        E::Aborted(_) => Code::Aborted,
        E::Io { source, .. } if source.raw_os_error() == Some(ENOSPC) => Code::ResourceExhausted,
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Code::NotFound,
        E::Io { .. } | E::Internal(_) => Code::Internal,
    }
}

/// The code containerd's transfer and image services answer a distribution error with.
pub fn distribution_code(e: &wharf_distribution::Error) -> Code {
    use wharf_distribution::Kind;
    match e.kind() {
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
    }
}

const ENOSPC: i32 = 28;
