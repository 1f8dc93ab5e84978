//! CI's fuzzing: every target for a few seconds under the stable mutation driver (seeds first,
//! so they double as regression inputs). `WHARF_FUZZ_SECONDS` sets the time per target.

use std::time::Duration;

fn fuzz(name: &str) {
    let t = wharf_fuzz::target(name).expect("a known target");
    let secs = std::env::var("WHARF_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let crashes = std::env::temp_dir().join(format!("wharf-fuzz-crashes-{}", std::process::id()));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let r = wharf_fuzz::driver::fuzz(t, Duration::from_secs(secs), Vec::new(), &crashes, seed, 1)
        .expect("fuzz run");
    eprintln!("{name}: {} executions, seed {seed}", r.executions);
    assert!(
        r.crashes.is_empty(),
        "{name} crashed (seed {seed}): {:?}",
        r.crashes
    );
    assert!(r.executions > 100, "{name} barely ran: {r:?}");
}

#[test]
fn reference() {
    fuzz("reference");
}

#[test]
fn manifest() {
    fuzz("manifest");
}

#[test]
fn hosts() {
    fuzz("hosts");
}

#[test]
fn tar_apply() {
    fuzz("tar_apply");
}

#[test]
fn request() {
    fuzz("request");
}
