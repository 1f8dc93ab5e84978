//! wharf-api: generated server bindings for containerd API v1 (over containerd-client message types).
