//! Helpers of the reliability tests (consistency check, fault injection, full disk, soak):
//! running `wharf system check`, making leftovers by hand, and reading a process's resources.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::daemon::Wharfd;

/// `wharf system check ARGS`: (exit code, stdout + stderr).
pub fn check(w: &Wharfd, args: &[&str]) -> (i32, String) {
    let mut a = vec!["system", "check"];
    a.extend_from_slice(args);
    let out = w.wharf(&a);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Asserts `wharf system check` finds nothing; returns its output.
pub fn assert_clean(w: &Wharfd, what: &str) -> String {
    let (code, out) = check(w, &[]);
    assert_eq!(code, 0, "{what}: check is not clean:\n{out}");
    assert!(out.contains(" 0 finding(s)"), "{what}: {out}");
    out
}

/// Sets a path's modification time `secs` seconds back (leftovers older than any work in
/// progress).
pub fn age(p: &Path, secs: u64) -> Result<()> {
    let st = Command::new("touch")
        .arg("-d")
        .arg(format!("{secs} seconds ago"))
        .arg(p)
        .status()
        .context("touch")?;
    if !st.success() {
        bail!("touch -d {} failed", p.display());
    }
    Ok(())
}

/// Mounts a small tmpfs on `p` (made if missing).
pub fn mount_tmpfs(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p)?;
    nix::mount::mount(
        Some("tmpfs"),
        p,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=1m"),
    )
    .with_context(|| format!("mount tmpfs on {}", p.display()))
}

/// Is something mounted exactly on `p`?
pub fn is_mounted(p: &Path) -> bool {
    let s = p.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*s))
}

/// Mount points under `dir`.
pub fn mounts_under(dir: &Path) -> usize {
    let s = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&s))
        .count()
}

/// Open file descriptors of a process.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Entries of a directory (0 when it does not exist).
pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// cgroups `/<ns>/*` in the memory hierarchy (v1) or the unified one.
pub fn cgroups_of(ns: &str) -> usize {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let base = if v2 {
        Path::new("/sys/fs/cgroup").join(ns)
    } else {
        Path::new("/sys/fs/cgroup/memory").join(ns)
    };
    std::fs::read_dir(base)
        .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
        .unwrap_or(0)
}

/// A small deterministic generator (xorshift64*), so a failing run can be replayed from its
/// printed seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded from the environment variable `var` when set, else from the clock; the seed is
    /// printed.
    pub fn from_env(var: &str) -> Rng {
        let seed = std::env::var(var)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("{var}={seed} (set it to replay this run)");
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}
