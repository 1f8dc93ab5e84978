//! Fuzz targets for the parsers and checks that take untrusted input: image references,
//! manifests/indexes/configs, hosts.toml, layer tars (applied into a scratch root, with an
//! escape check after every input) and request messages at the service edge.
//!
//! Each target is a `run(&[u8])` that panics only on a bug (a crash or a broken invariant), plus
//! seed inputs. Two drivers run them: `cargo fuzz` (coverage-guided libFuzzer, the
//! `fuzz_targets/` binaries; needs `RUSTC_BOOTSTRAP=1` on stable) and [`driver`], a
//! coverage-less mutation loop on stable Rust that CI runs for a few seconds per target and
//! the `wharf-fuzz` binary runs for as long as asked.

pub mod driver;
pub mod targets;

/// A fuzz target: its entry point, the inputs it starts from and tokens worth splicing in.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Vec<u8>>,
    pub dictionary: &'static [&'static [u8]],
}

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    targets::reference::TARGET,
    targets::manifest::TARGET,
    targets::hosts::TARGET,
    targets::tar_apply::TARGET,
    targets::request::TARGET,
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
