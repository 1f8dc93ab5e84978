//! Gives back the resident pages of code and read-only data a long-lived process no longer
//! touches (the shim after creating its container, wharfd after start-up).
//!
//! Code that ran once stays mapped and counts in the process's RSS although it is clean page
//! cache shared with every other process of the same binary. `MADV_DONTNEED` on clean,
//! read-only file mappings drops this process's page-table entries only: the page cache keeps
//! the pages and whatever is needed again faults back in from memory. Mappings holding private
//! copies (relocated RELRO data, anything writable) are never touched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static PENDING: AtomicBool = AtomicBool::new(false);

/// Trims `after` the current burst of work, once per burst (needs a tokio runtime).
pub fn trim_soon(after: Duration) {
    if PENDING.swap(true, Ordering::SeqCst) {
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        PENDING.store(false, Ordering::SeqCst);
        let pages = trim_now();
        tracing::debug!(kib = pages * 4, "trimmed clean file mappings");
    });
}

/// Drops this process's mappings of clean, read-only file pages; returns the pages dropped.
pub fn trim_now() -> usize {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut dropped = 0;
    let mut current: Option<(usize, usize, bool)> = None;
    let mut rss = 0usize;
    let mut flush = |m: Option<(usize, usize, bool)>, rss: usize, anon_free: bool| {
        if let Some((start, end, eligible)) = m {
            if eligible && anon_free && rss > 0 {
                // SAFETY: the range is a whole mapping of this process, file-backed, not
                // writable and without private (anonymous) pages: dropping it only unmaps
                // pages that are identical to the file and fault back in on access.
                let r = unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED)
                };
                if r == 0 {
                    dropped += rss / 4;
                }
            }
        }
    };
    for line in smaps.lines() {
        let mut parts = line.split_whitespace();
        let Some(first) = parts.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                let perms = parts.next().unwrap_or("");
                let path = parts.nth(3).unwrap_or("");
                let eligible = perms.starts_with('r')
                    && perms.as_bytes().get(1) == Some(&b'-')
                    && path.starts_with('/');
                current = Some((start, end, eligible));
                rss = 0;
                continue;
            }
        }
        match first {
            "Rss:" => rss = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "Anonymous:" => {
                let anon: usize = parts.next().and_then(|v| v.parse().ok()).unwrap_or(1);
                flush(current.take(), rss, anon == 0);
            }
            _ => {}
        }
    }
    dropped
}
