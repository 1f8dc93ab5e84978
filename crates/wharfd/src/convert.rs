//! Conversions between containerd's protobuf messages and core types (the adapters' one job
//! besides delegating).

use std::time::SystemTime;

use prost_types::Timestamp;
use wharf_api::pb;
use wharf_api::types;
use wharf_core::content::Status as IngestStatus;
use wharf_core::metadata::{ContentInfo, Descriptor, Image, Labels, Lease, Namespace};

pub fn ts(t: SystemTime) -> Option<Timestamp> {
    Some(Timestamp::from(t))
}

pub fn labels(m: std::collections::HashMap<String, String>) -> Labels {
    m.into_iter().collect()
}

pub fn labels_pb(l: &Labels) -> std::collections::HashMap<String, String> {
    l.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn fieldpaths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}

pub fn namespace_pb(n: &Namespace) -> pb::Namespace {
    pb::Namespace {
        name: n.name.clone(),
        labels: labels_pb(&n.labels),
    }
}

pub fn content_info_pb(i: &ContentInfo) -> pb::Info {
    pb::Info {
        digest: i.digest.clone(),
        size: i.size as i64,
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
        labels: labels_pb(&i.labels),
    }
}

pub fn ingest_status_pb(s: &IngestStatus) -> pb::Status {
    pb::Status {
        started_at: ts(s.started_at),
        updated_at: ts(s.updated_at),
        r#ref: s.reference.clone(),
        offset: s.offset as i64,
        total: s.total as i64,
        expected: s
            .expected
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
    }
}

pub fn descriptor(d: Option<types::Descriptor>) -> Descriptor {
    let d = d.unwrap_or_default();
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: labels(d.annotations),
    }
}

pub fn descriptor_pb(d: &Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: labels_pb(&d.annotations),
    }
}

pub fn image(i: pb::Image) -> Image {
    Image {
        name: i.name,
        labels: labels(i.labels),
        target: descriptor(i.target),
        created_at: SystemTime::UNIX_EPOCH,
        updated_at: SystemTime::UNIX_EPOCH,
    }
}

pub fn image_pb(i: &Image) -> pb::Image {
    pb::Image {
        name: i.name.clone(),
        labels: labels_pb(&i.labels),
        target: Some(descriptor_pb(&i.target)),
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
    }
}

pub fn lease_pb(l: &Lease) -> pb::Lease {
    pb::Lease {
        id: l.id.clone(),
        created_at: ts(l.created_at),
        labels: labels_pb(&l.labels),
    }
}

/// An OCI descriptor (as parsed from manifests) in the API's form.
pub fn oci_descriptor_pb(d: &wharf_core::images::Descriptor) -> types::Descriptor {
    types::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone().into_iter().collect(),
    }
}
