//! Reading containerd's request headers: the namespace (`containerd-namespace`) and the lease
//! (`containerd-lease`) a call runs under.

use tonic::{Request, Status};

pub const NAMESPACE_HEADER: &str = "containerd-namespace";
pub const LEASE_HEADER: &str = "containerd-lease";

/// The validated namespace of a request; missing is an error, as in containerd.
pub fn namespace<T>(req: &Request<T>) -> Result<String, Status> {
    let ns = req
        .metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Status::failed_precondition("namespace is required: failed precondition"))?;
    wharf_core::identifiers::validate(ns)
        .map_err(|e| Status::invalid_argument(format!("namespace validation: {e}")))?;
    Ok(ns.to_string())
}

/// The lease a request runs under, if any.
pub fn lease<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
