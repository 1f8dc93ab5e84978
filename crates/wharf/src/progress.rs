//! Pull progress: one bar per blob being fetched (bytes, speed, ETA) on a terminal, plain lines
//! otherwise. Fed with the content store's ingest statuses.

use std::collections::HashMap;
use std::io::IsTerminal;

use containerd_client::services::v1::Status;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::table::human_size;

pub struct Pull {
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// Plain mode: refs seen downloading (with their size), and refs reported done.
    seen: HashMap<String, u64>,
    done: Vec<String>,
}

fn short(reference: &str) -> String {
    // "layer-sha256:0123…" → "layer 0123456789ab"
    let (kind, digest) = reference.split_once('-').unwrap_or(("blob", reference));
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("{kind} {}", &hex[..hex.len().min(12)])
}

impl Pull {
    pub fn new(reference: &str, quiet: bool) -> Pull {
        let tty = std::io::stderr().is_terminal();
        let multi = (tty && !quiet).then(|| {
            let m = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let _ = m.println(format!("pulling {reference}"));
            m
        });
        if !tty && !quiet {
            eprintln!("pulling {reference}");
        }
        Pull {
            quiet,
            multi,
            bars: HashMap::new(),
            seen: HashMap::new(),
            done: Vec::new(),
        }
    }

    pub fn update(&mut self, statuses: &[Status]) {
        if self.quiet {
            return;
        }
        let live: Vec<&str> = statuses.iter().map(|s| s.r#ref.as_str()).collect();
        if let Some(multi) = &self.multi {
            let style = ProgressStyle::with_template(
                "{prefix:<20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            for s in statuses {
                let bar = self.bars.entry(s.r#ref.clone()).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(s.total.max(0) as u64));
                    b.set_style(style.clone());
                    b.set_prefix(short(&s.r#ref));
                    b
                });
                if s.total > 0 {
                    bar.set_length(s.total as u64);
                }
                bar.set_position(s.offset.max(0) as u64);
            }
            // A ref that left the ingest list was committed (or aborted: finish() says which).
            for (r, bar) in &self.bars {
                if !live.contains(&r.as_str()) && !bar.is_finished() {
                    if let Some(len) = bar.length() {
                        bar.set_position(len);
                    }
                    bar.finish();
                }
            }
        } else {
            for s in statuses {
                if !self.seen.contains_key(&s.r#ref) {
                    eprintln!(
                        "{}: downloading {}",
                        short(&s.r#ref),
                        human_size(s.total.max(0) as u64)
                    );
                }
                self.seen.insert(s.r#ref.clone(), s.total.max(0) as u64);
            }
            let done: Vec<String> = self
                .seen
                .keys()
                .filter(|r| !live.contains(&r.as_str()))
                .cloned()
                .collect();
            for r in done {
                if let Some(total) = self.seen.remove(&r) {
                    eprintln!("{}: done ({})", short(&r), human_size(total));
                    self.done.push(r);
                }
            }
        }
    }

    /// Shows the blobs of a pull that went by faster than the display polls (or were present
    /// already) as done: `blobs` are (ingest-style ref, size).
    pub fn complete(&mut self, blobs: &[(String, u64)]) {
        if self.quiet {
            return;
        }
        for (r, size) in blobs {
            if let Some(multi) = &self.multi {
                if !self.bars.contains_key(r) {
                    let style = ProgressStyle::with_template(
                        "{prefix:<20} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                    let b = multi.add(ProgressBar::new(*size));
                    b.set_style(style);
                    b.set_prefix(short(r));
                    b.set_position(*size);
                    b.finish();
                    self.bars.insert(r.clone(), b);
                }
            } else if !self.done.contains(r) {
                self.seen.entry(r.clone()).or_insert(*size);
            }
        }
    }

    /// Ends the display: every bar finished (or abandoned on failure), the screen left clean.
    pub fn finish(&mut self, ok: bool) {
        for bar in self.bars.values() {
            if ok {
                if let Some(len) = bar.length() {
                    bar.set_position(len);
                }
                bar.finish();
            } else {
                bar.abandon();
            }
        }
        if let Some(m) = &self.multi {
            // Leave the finished bars on screen (as docker does); only a failure clears them.
            if !ok {
                let _ = m.clear();
            }
        }
        if !ok || self.quiet {
            return;
        }
        for (r, total) in self.seen.drain() {
            eprintln!("{}: done ({})", short(&r), human_size(total));
        }
    }
}
