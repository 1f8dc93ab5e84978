//! Builds wharf's pause program (`pause/pause.c`) as a static executable into `OUT_DIR/pause`,
//! embedded by `src/pause.rs`. `CC` picks the compiler (default `cc`); glibc's static libc
//! (Debian's libc6-dev) is enough.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"))
        .join("pause/pause.c");
    println!("cargo:rerun-if-changed={}", src.display());
    println!("cargo:rerun-if-env-changed=CC");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let bin = out.join("pause");
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror"])
        .arg(format!("-DWHARF_VERSION=\"{version}\""))
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("run {cc} to build the pause program: {e}"));
    assert!(
        status.success(),
        "{cc} -static failed to build {} (is a static libc installed? Debian: libc6-dev)",
        src.display()
    );
}
