//! The one error type of the distribution crate. Its kinds follow containerd's errdefs plus the two
//! a registry adds (Unauthenticated, PermissionDenied), so adapters can map them to gRPC codes.

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    /// No or wrong credentials (HTTP 401 after authenticating).
    #[error("{0}: unauthenticated")]
    Unauthenticated(String),
    /// Credentials accepted but not allowed (HTTP 403).
    #[error("{0}: permission denied")]
    PermissionDenied(String),
    /// Content that does not match what was asked for (digest, size, media type).
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    /// Network errors and registry errors that persisted through the retries.
    #[error("{0}: unavailable")]
    Unavailable(String),
    #[error("{0}: not implemented")]
    NotImplemented(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Core(#[from] wharf_core::Error),
    #[error("{0}")]
    Internal(String),
}

/// An error with its chain of causes (`reqwest` keeps the interesting part, such as a TLS
/// verification failure, in its sources).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        cur = s.source();
    }
    out
}

/// The kind of an [`Error`], for mapping to status codes in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    FailedPrecondition,
    Unavailable,
    NotImplemented,
    OutOfRange,
    Aborted,
    /// The disk is full (ENOSPC): containerd's clients see ResourceExhausted.
    ResourceExhausted,
    Internal,
}

/// ENOSPC, the one I/O error with a kind of its own.
fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Error::NotFound(_) => Kind::NotFound,
            Error::InvalidArgument(_) => Kind::InvalidArgument,
            Error::Unauthenticated(_) => Kind::Unauthenticated,
            Error::PermissionDenied(_) => Kind::PermissionDenied,
            Error::FailedPrecondition(_) => Kind::FailedPrecondition,
            Error::Unavailable(_) => Kind::Unavailable,
            Error::NotImplemented(_) => Kind::NotImplemented,
            Error::Io { source, .. } if is_enospc(source) => Kind::ResourceExhausted,
            Error::Io { .. } | Error::Internal(_) => Kind::Internal,
            Error::Core(e) => match e {
                wharf_core::Error::Io { source, .. } if is_enospc(source) => {
                    Kind::ResourceExhausted
                }
                wharf_core::Error::NotFound(_) => Kind::NotFound,
                wharf_core::Error::AlreadyExists(_) => Kind::AlreadyExists,
                wharf_core::Error::InvalidArgument(_) => Kind::InvalidArgument,
                wharf_core::Error::FailedPrecondition(_) => Kind::FailedPrecondition,
                wharf_core::Error::Unavailable(_) => Kind::Unavailable,
                wharf_core::Error::NotImplemented(_) => Kind::NotImplemented,
                wharf_core::Error::OutOfRange(_) => Kind::OutOfRange,
                wharf_core::Error::Aborted(_) => Kind::Aborted,
                wharf_core::Error::Io { .. } | wharf_core::Error::Internal(_) => Kind::Internal,
            },
        }
    }

    /// Prefixes the message with what was being done, keeping the kind.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            Error::NotFound(m) => Error::NotFound(format!("{what}: {m}")),
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
            Error::Unauthenticated(m) => Error::Unauthenticated(format!("{what}: {m}")),
            Error::PermissionDenied(m) => Error::PermissionDenied(format!("{what}: {m}")),
            Error::FailedPrecondition(m) => Error::FailedPrecondition(format!("{what}: {m}")),
            Error::Unavailable(m) => Error::Unavailable(format!("{what}: {m}")),
            Error::NotImplemented(m) => Error::NotImplemented(format!("{what}: {m}")),
            Error::Io { context, source } => Error::Io {
                context: format!("{what}: {context}"),
                source,
            },
            Error::Internal(m) => Error::Internal(format!("{what}: {m}")),
            e @ Error::Core(_) => e,
        }
    }
}

/// Core has no Unauthenticated/PermissionDenied kinds (containerd 1.6's errdefs has none either):
/// those become FailedPrecondition with the reason kept in the message.
impl From<Error> for wharf_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Core(e) => e,
            Error::NotFound(m) => wharf_core::Error::NotFound(m),
            Error::InvalidArgument(m) => wharf_core::Error::InvalidArgument(m),
            Error::Unauthenticated(m) => {
                wharf_core::Error::FailedPrecondition(format!("{m}: unauthenticated"))
            }
            Error::PermissionDenied(m) => {
                wharf_core::Error::FailedPrecondition(format!("{m}: permission denied"))
            }
            Error::FailedPrecondition(m) => wharf_core::Error::FailedPrecondition(m),
            Error::Unavailable(m) => wharf_core::Error::Unavailable(m),
            Error::NotImplemented(m) => wharf_core::Error::NotImplemented(m),
            Error::Io { context, source } => wharf_core::Error::Io { context, source },
            Error::Internal(m) => wharf_core::Error::Internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_survive_context_and_conversion() {
        let e = Error::Unauthenticated("GET x".into()).context("pull busybox");
        assert_eq!(e.kind(), Kind::Unauthenticated);
        assert!(e.to_string().contains("pull busybox: GET x"), "{e}");
        let c: wharf_core::Error = Error::NotFound("manifest".into()).into();
        assert!(c.is_not_found());
        let e: Error = wharf_core::Error::AlreadyExists("content".into()).into();
        assert_eq!(e.kind(), Kind::AlreadyExists);
    }
}
