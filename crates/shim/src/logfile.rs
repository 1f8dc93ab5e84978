//! Structured container logs written by the shim itself, so no daemon copies log bytes.
//!
//! A stdio URI `file:///path?format=json` (docker's json-file lines) or `?format=cri` (the
//! kubelet's `<time> <stream> <P|F> <line>`) makes the shim hand the container a pipe per stream
//! and copy each line, stamped with its stream and time, into one file. `max-size=BYTES` rotates
//! the file (`path.1`, `path.2`, …) keeping `max-file` files in all. A plain `file://` URI without
//! a format stays a raw append of the bytes, as containerd's shim does.
//!
//! A log file renamed or removed from under the shim (kubelet's rotation, which then asks the
//! runtime to reopen the log) is noticed within [`REOPEN_CHECK`]: the next record goes to a
//! file at the original path again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the log path is compared with the open file (a rename makes a new file).
pub const REOPEN_CHECK: Duration = Duration::from_secs(1);

/// Longest line kept whole; longer ones are split into partial records (docker and CRI do too).
const MAX_LINE: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Cri,
}

/// A parsed `file://` URI with a log format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogUri {
    pub path: PathBuf,
    pub format: Format,
    pub max_size: u64,
    pub max_files: u32,
}

impl LogUri {
    /// `Ok(None)` for a plain `file://` URI or anything else; errors name the bad parameter.
    pub fn parse(uri: &str) -> std::io::Result<Option<LogUri>> {
        let Some(rest) = uri.strip_prefix("file://") else {
            return Ok(None);
        };
        let Some((path, query)) = rest.split_once('?') else {
            return Ok(None);
        };
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let mut out = LogUri {
            path: PathBuf::from(path),
            format: Format::Json,
            max_size: 0,
            max_files: 1,
        };
        let mut formatted = false;
        for kv in query.split('&').filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match k {
                "format" => {
                    formatted = true;
                    out.format = match v {
                        "json" | "json-file" => Format::Json,
                        "cri" => Format::Cri,
                        _ => return Err(bad(format!("log format {v:?}: want json or cri"))),
                    }
                }
                "max-size" => {
                    out.max_size = v
                        .parse()
                        .map_err(|_| bad(format!("log max-size {v:?}: want bytes")))?
                }
                "max-file" => {
                    out.max_files = v
                        .parse()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad(format!("log max-file {v:?}: want a count >= 1")))?
                }
                _ => return Err(bad(format!("unknown log URI parameter {k:?}"))),
            }
        }
        if !out.path.is_absolute() {
            return Err(bad(format!("log path {path:?} is not absolute")));
        }
        Ok(formatted.then_some(out))
    }
}

/// The shared log file the stream copiers append to.
pub struct Sink {
    uri: LogUri,
    file: File,
    size: u64,
    checked: Instant,
}

impl Sink {
    pub fn open(uri: LogUri) -> std::io::Result<Arc<Mutex<Sink>>> {
        if let Some(dir) = uri.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&uri.path)?;
        let size = file.metadata()?.len();
        Ok(Arc::new(Mutex::new(Sink {
            uri,
            file,
            size,
            checked: Instant::now(),
        })))
    }

    /// Opens the path again if it no longer names the open file. A log whose directory is
    /// gone (its container being removed) is not made again: writes go on to the open file.
    fn reopen_if_moved(&mut self) {
        let Ok(open) = self.file.metadata() else {
            return;
        };
        let same = std::fs::metadata(&self.uri.path)
            .is_ok_and(|m| m.ino() == open.ino() && m.dev() == open.dev());
        if same || !self.uri.path.parent().is_some_and(Path::is_dir) {
            return;
        }
        if let Ok(file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.uri.path)
        {
            self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = file;
        }
    }

    fn rotated(path: &Path, n: u32) -> PathBuf {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let path = self.uri.path.clone();
        if self.uri.max_files <= 1 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.uri.max_files - 1).rev() {
                let from = Self::rotated(&path, n);
                if from.exists() {
                    std::fs::rename(&from, Self::rotated(&path, n + 1))?;
                }
            }
            std::fs::rename(&path, Self::rotated(&path, 1))?;
            self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        }
        self.size = 0;
        Ok(())
    }

    fn record(&mut self, stream: &str, line: &[u8], partial: bool) -> std::io::Result<()> {
        if self.checked.elapsed() >= REOPEN_CHECK {
            self.checked = Instant::now();
            self.reopen_if_moved();
        }
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let text = String::from_utf8_lossy(line);
        let mut out = match self.uri.format {
            Format::Json => {
                let rec = serde_json::json!({"log": text, "stream": stream, "time": time});
                let mut s = rec.to_string();
                s.push('\n');
                s
            }
            Format::Cri => {
                let body = text.strip_suffix('\n').unwrap_or(&text);
                format!(
                    "{time} {stream} {} {body}\n",
                    if partial { "P" } else { "F" }
                )
            }
        };
        if self.uri.max_size > 0
            && self.size > 0
            && self.size + out.len() as u64 > self.uri.max_size
        {
            self.rotate()?;
        }
        self.file.write_all(out.as_bytes())?;
        self.size += out.len() as u64;
        out.clear();
        Ok(())
    }
}

/// Starts a copier for one stream: returns the pipe's write end for the container. `done` is
/// dropped when the copier has written everything (the pipe reached EOF).
pub fn stream(
    sink: Arc<Mutex<Sink>>,
    stream: &'static str,
    done: mpsc::Sender<()>,
) -> std::io::Result<OwnedFd> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    crate::threads::spawn_ready(&format!("log-{stream}"), 64 * 1024, move || {
        let _done = done;
        copy(File::from(r), &sink, stream);
    })?;
    Ok(w)
}

fn copy(mut input: File, sink: &Mutex<Sink>, stream: &str) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let emit = |line: &[u8], partial: bool| {
        if let Ok(mut s) = sink.lock() {
            if let Err(e) = s.record(stream, line, partial) {
                tracing::warn!(error = %e, "container log write failed");
            }
        }
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(i) = pending[start..].iter().position(|b| *b == b'\n') {
            let mut line = &pending[start..start + i + 1];
            while line.len() > MAX_LINE {
                emit(&line[..MAX_LINE], true);
                line = &line[MAX_LINE..];
            }
            emit(line, false);
            start += i + 1;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            emit(&pending[..MAX_LINE], true);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        emit(&pending, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        assert_eq!(LogUri::parse("file:///a/b").ok().flatten(), None);
        assert_eq!(LogUri::parse("/tmp/fifo").ok().flatten(), None);
        let u = LogUri::parse("file:///a/b.log?format=cri&max-size=100&max-file=3")
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(u.format, Format::Cri);
        assert_eq!((u.max_size, u.max_files), (100, 3));
        assert!(LogUri::parse("file:///a?format=xml").is_err());
        assert!(LogUri::parse("file:///a?format=json&max-file=0").is_err());
        assert!(LogUri::parse("file://rel?format=json").is_err());
        assert!(LogUri::parse("file:///a?colour=red").is_err());
    }

    fn run(format: &str, input: &[u8], max: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let uri = LogUri::parse(&format!("file://{}?format={format}{max}", path.display()))
            .unwrap()
            .unwrap();
        let sink = Sink::open(uri).unwrap();
        let (tx, rx) = mpsc::channel();
        let w = stream(sink, "stdout", tx).unwrap();
        let mut f = File::from(w);
        f.write_all(input).unwrap();
        drop(f);
        assert!(rx.recv_timeout(std::time::Duration::from_secs(5)).is_err());
        (dir, path)
    }

    #[test]
    fn json_lines_with_partial_tail() {
        let (_d, path) = run("json", b"hi\nthere\nno-newline", "");
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["log"], "hi\n");
        assert_eq!(lines[0]["stream"], "stdout");
        assert_eq!(lines[2]["log"], "no-newline");
        assert!(lines[1]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn cri_lines_and_long_line_split() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.push(b'\n');
        let (_d, path) = run("cri", &input, "");
        let text = std::fs::read_to_string(path).unwrap();
        let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
        assert_eq!(tags, vec!["P", "F"]);
        assert!(text.lines().all(|l| l.split(' ').nth(1) == Some("stdout")));
    }

    #[test]
    fn reopens_a_moved_file() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("0.log");
        let uri = LogUri::parse(&format!("file://{}?format=cri", path.display()))
            .unwrap()
            .unwrap();
        let sink = Sink::open(uri).unwrap();
        sink.lock()
            .unwrap()
            .record("stdout", b"one\n", false)
            .unwrap();
        std::fs::rename(&path, d.path().join("0.log.1")).unwrap();
        let mut s = sink.lock().unwrap();
        s.checked = Instant::now() - REOPEN_CHECK;
        s.record("stdout", b"two\n", false).unwrap();
        drop(s);
        assert!(std::fs::read_to_string(d.path().join("0.log.1"))
            .unwrap()
            .ends_with(" stdout F one\n"));
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .ends_with(" stdout F two\n"));
    }

    #[test]
    fn rotates_by_size() {
        let input: Vec<u8> = (0..200)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let (_d, path) = run("json", &input, "&max-size=2000&max-file=3");
        let cur = std::fs::metadata(&path).unwrap().len();
        assert!(cur <= 2000, "current log is {cur} bytes");
        assert!(Sink::rotated(&path, 1).exists());
        assert!(Sink::rotated(&path, 2).exists());
        assert!(!Sink::rotated(&path, 3).exists());
        // The newest line is in the current file.
        assert!(std::fs::read_to_string(&path).unwrap().contains("line 199"));
    }
}
