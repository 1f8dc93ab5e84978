//! `wharf logs`: reads the JSON-lines log the shim writes for a container (no daemon in the data
//! path), with --tail, --since, -t and -f (follows until the container stops).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use wharf_core::labels;

use crate::client::Client;
use crate::containers;

/// The log file behind a `file://path?format=json` URI.
pub fn log_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    Some(PathBuf::from(rest.split('?').next().unwrap_or(rest)))
}

/// `--since`: RFC 3339, a unix time, or a duration back from now (`10m`, `1h30m`, `45s`).
pub fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    if let Ok(secs) = s.parse::<i64>() {
        return chrono::DateTime::from_timestamp(secs, 0).context("unix time out of range");
    }
    let d = parse_duration(s).with_context(|| {
        format!("--since {s:?}: want RFC 3339, a unix time, or a duration like 10m")
    })?;
    Ok(chrono::Utc::now() - chrono::Duration::from_std(d)?)
}

/// `1h30m`, `10m`, `45s`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(ch) = chars.next() {
        if ch.is_ascii_digit() || ch == '.' {
            num.push(ch);
            continue;
        }
        let mut unit = ch.to_string();
        if ch == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: f64 = num.parse().with_context(|| format!("bad duration {s:?}"))?;
        num.clear();
        let secs = match unit.as_str() {
            "h" => n * 3600.0,
            "m" => n * 60.0,
            "s" => n,
            "ms" => n / 1000.0,
            _ => bail!("bad duration unit {unit:?} in {s:?}"),
        };
        total += Duration::from_secs_f64(secs);
        any = true;
    }
    if !num.is_empty() || !any {
        bail!("bad duration {s:?} (want e.g. 10m, 1h30m, 45s)");
    }
    Ok(total)
}

pub struct Options {
    pub follow: bool,
    pub tail: Option<usize>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub timestamps: bool,
}

struct Record {
    log: String,
    stderr: bool,
    time: String,
}

fn parse_line(line: &str) -> Option<Record> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Record {
        log: v["log"].as_str()?.to_string(),
        stderr: v["stream"].as_str() == Some("stderr"),
        time: v["time"].as_str().unwrap_or_default().to_string(),
    })
}

/// Prints records; returns false when the reader should stop (stdout closed).
fn emit(r: &Record, o: &Options) -> bool {
    if let Some(since) = o.since {
        match chrono::DateTime::parse_from_rfc3339(&r.time) {
            Ok(t) if t < since => return true,
            _ => {}
        }
    }
    let text = if o.timestamps {
        format!("{} {}", r.time, r.log)
    } else {
        r.log.clone()
    };
    let res = if r.stderr {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes()).and_then(|_| out.flush())
    };
    res.is_ok()
}

/// Prints the log file's existing lines honouring --tail; returns the reader positioned at the end.
fn print_existing(path: &Path, o: &Options) -> Result<Option<BufReader<File>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    let mut reader = BufReader::new(f);
    let mut kept: VecDeque<Record> = VecDeque::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let Some(r) = parse_line(&line) else { continue };
        match o.tail {
            Some(0) => {}
            Some(n) => {
                if kept.len() == n {
                    kept.pop_front();
                }
                kept.push_back(r);
            }
            None => {
                if !emit(&r, o) {
                    return Ok(None);
                }
            }
        }
    }
    for r in kept {
        if !emit(&r, o) {
            return Ok(None);
        }
    }
    Ok(Some(reader))
}

/// Reads newly appended lines; reopens after a rotation. Returns false when stdout closed.
fn drain(path: &Path, reader: &mut Option<BufReader<File>>, o: &Options) -> Result<bool> {
    // Rotated: the path names a new file (or the old one was truncated).
    if let Some(r) = reader.as_mut() {
        let pos = r.stream_position()?;
        let cur = r.get_ref().metadata()?;
        match std::fs::metadata(path) {
            Ok(m) if m.ino() != cur.ino() || m.len() < pos => {
                // Finish the old file first, then switch.
                read_new(r, o)?;
                *reader = File::open(path).ok().map(BufReader::new);
            }
            _ => {}
        }
    } else {
        *reader = File::open(path).ok().map(BufReader::new);
    }
    match reader.as_mut() {
        Some(r) => read_new(r, o),
        None => Ok(true),
    }
}

fn read_new(r: &mut BufReader<File>, o: &Options) -> Result<bool> {
    let mut line = String::new();
    loop {
        let pos = r.stream_position()?;
        line.clear();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            return Ok(true);
        }
        if !line.ends_with('\n') {
            // A line still being written: read it again next time.
            r.seek(SeekFrom::Start(pos))?;
            return Ok(true);
        }
        if let Some(rec) = parse_line(&line) {
            if !emit(&rec, o) {
                return Ok(false);
            }
        }
    }
}

/// Follows `path` until `done` resolves, then prints what is left.
pub async fn follow_until<F: std::future::Future>(
    path: &Path,
    o: &Options,
    done: F,
) -> Result<F::Output> {
    let mut reader = print_existing(path, o)?;
    tokio::pin!(done);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            out = &mut done => {
                drain(path, &mut reader, o)?;
                return Ok(out);
            }
            _ = tick.tick() => {
                if !drain(path, &mut reader, o)? {
                    std::process::exit(0);
                }
            }
        }
    }
}

pub async fn logs(c: &Client, id: &str, o: Options) -> Result<()> {
    let ctr = containers::get(c, id).await?;
    let uri = ctr.labels.get(labels::LOG_URI).cloned().with_context(|| {
        format!("container {id} has no log (it was not created by wharf, or with -i/-t)")
    })?;
    let path =
        log_path(&uri).with_context(|| format!("container {id}: log URI {uri:?} is not a file"))?;
    if !o.follow {
        print_existing(&path, &o)?;
        return Ok(());
    }
    let c2 = c.clone();
    let id2 = id.to_string();
    follow_until(&path, &o, async move {
        // Follow while the container runs.
        loop {
            match containers::task(&c2, &id2).await {
                Ok(t) if containers::running(&t) => {
                    let _ = containers::wait(&c2, &id2, Some(Duration::from_secs(1))).await;
                }
                _ => return,
            }
        }
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_paths() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("3x").is_err());
        assert_eq!(
            log_path("file:///var/x.log?format=json").unwrap(),
            PathBuf::from("/var/x.log")
        );
        assert!(parse_since("10m").is_ok());
        assert!(parse_since("yesterday").is_err());
    }
}
