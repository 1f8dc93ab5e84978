//! Layers: applying an OCI layer tar to a directory ([`apply`]) and creating one from the changes
//! between two trees ([`create`]), with path handling confined to the target ([`safepath`]).

pub mod apply;
pub mod create;
pub mod safepath;

pub use apply::{apply_layer, apply_to_snapshot, sync_fs, ApplyMode, ApplyResult, Compression};
pub use create::{write_diff, HashingWriter};

#[cfg(test)]
mod tests;
