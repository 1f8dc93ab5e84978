//! Pull progress: one bar per blob being fetched (bytes, speed, ETA) on a terminal, plain lines
//! otherwise. Fed with the progress events wharfd's Transfer service sends on a progress stream.

use std::collections::HashMap;
use std::io::IsTerminal;

use containerd_client::types::transfer::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::table::human_size;

pub struct Pull {
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// Plain mode: blobs seen downloading (with their size), and blobs reported done.
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

    /// Feeds one of wharfd's Transfer progress events (containerd's: "waiting",
    /// "downloading", "complete" per blob, named by ref key like `layer-sha256:…`; events
    /// without a name are about the whole pull and not shown).
    pub fn event(&mut self, p: &Progress) {
        if self.quiet || p.name.is_empty() || !p.name.contains("sha256:") {
            return;
        }
        let total = p.total.max(0) as u64;
        let offset = p.progress.max(0) as u64;
        match p.event.as_str() {
            "downloading" => {
                if let Some(multi) = &self.multi {
                    let bar = self.bars.entry(p.name.clone()).or_insert_with(|| {
                        let style = ProgressStyle::with_template(
                            "{prefix:<20} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} {eta:>4}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ");
                        let b = multi.add(ProgressBar::new(total));
                        b.set_style(style);
                        b.set_prefix(short(&p.name));
                        b
                    });
                    if total > 0 {
                        bar.set_length(total);
                    }
                    bar.set_position(offset);
                } else if !self.seen.contains_key(&p.name) && !self.done.contains(&p.name) {
                    eprintln!("{}: downloading {}", short(&p.name), human_size(total));
                    self.seen.insert(p.name.clone(), total);
                }
            }
            "complete" => {
                if let Some(multi) = &self.multi {
                    match self.bars.get(&p.name) {
                        Some(bar) => {
                            bar.set_length(total);
                            bar.set_position(total);
                            bar.finish();
                        }
                        None => {
                            // Present already, or went by between two events.
                            let style = ProgressStyle::with_template(
                                "{prefix:<20} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> ");
                            let b = multi.add(ProgressBar::new(total));
                            b.set_style(style);
                            b.set_prefix(short(&p.name));
                            b.set_position(total);
                            b.finish();
                            self.bars.insert(p.name.clone(), b);
                        }
                    }
                } else if !self.done.contains(&p.name) {
                    self.seen.remove(&p.name);
                    eprintln!("{}: done ({})", short(&p.name), human_size(total));
                    self.done.push(p.name.clone());
                }
            }
            _ => {}
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
