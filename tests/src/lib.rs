//! wharf-tests: the shared harness of the integration tests. It starts real processes — Debian's
//! `docker-registry` on a free 127.0.0.1 port, wharfd on a temporary root — builds OCI test images
//! from the installed `busybox-static`, and runs Debian's `ctr` against wharfd.
//!
//! The binaries under test are those of `cargo build --workspace` (scripts/test.sh builds them
//! first); [`bin`] finds them.

pub mod daemon;
pub mod events;
pub mod fake_registry;
pub mod images;
pub mod listing;
pub mod registry;
pub mod reliability;
pub mod stream_client;

use std::path::PathBuf;

/// A binary of this workspace, from the target dir of the current profile.
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("target/<profile>");
    let p = profile_dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace first (cargo build --workspace)",
        p.display()
    );
    p
}

/// Is this process root? Tests that need root fail loudly without it rather than skip.
pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test must run as root (it mounts and runs containers)"
    );
}
