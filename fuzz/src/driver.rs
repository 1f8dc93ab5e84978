//! A coverage-less mutation fuzzer on stable Rust: it starts from a target's seeds (and any
//! corpus files given), applies a few random mutations per input (bit flips, interesting
//! bytes, inserted/removed/duplicated ranges, dictionary tokens, splices of two inputs) and runs
//! the target, catching panics. Crashing inputs are written to a directory so they can be
//! replayed (`wharf-fuzz <target> --replay FILE`) and kept as regression seeds.
//!
//! Without coverage feedback it finds less than libFuzzer does, but it needs neither nightly
//! nor a sanitizer runtime, so CI runs it on every change.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Target;

/// A small xorshift generator: reproducible from a seed, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'/', b'.', b'0', b'\n', b'"', b':', b'@',
];
/// Inputs larger than this are cut (the targets' interesting inputs are small).
const MAX_INPUT: usize = 64 * 1024;

/// Returns a mutated copy of `input`.
pub fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], dict: &[&[u8]]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(6) {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next_u64() as u8;
            }
            3 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                v.splice(i..i, bytes);
            }
            4 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            5 if len > 0 => {
                // Duplicate a range somewhere else (repeats structures: tar entries, JSON items).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(1024));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            6 if !dict.is_empty() => {
                let tok = dict[rng.below(dict.len())];
                let i = rng.below(len + 1);
                if rng.below(2) == 0 || i + tok.len() > len {
                    v.splice(i..i, tok.iter().copied());
                } else {
                    v[i..i + tok.len()].copy_from_slice(tok);
                }
            }
            7 if !corpus.is_empty() => {
                // Splice: our head, another input's tail.
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            8 if len > 0 => {
                // Overwrite with a decimal number: sizes, modes, counts in text formats.
                let i = rng.below(len);
                let num = match rng.below(4) {
                    0 => "-1".to_string(),
                    1 => u64::MAX.to_string(),
                    2 => "0".to_string(),
                    _ => (rng.next_u64() % 100_000).to_string(),
                };
                let end = (i + num.len()).min(len);
                v.splice(i..end, num.bytes());
            }
            _ => {}
        }
    }
    v.truncate(MAX_INPUT);
    v
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub executions: u64,
    pub elapsed: Duration,
    /// Crashing inputs as written to the crash directory.
    pub crashes: Vec<PathBuf>,
}

/// Reads every file of `dir` (missing: none).
pub fn read_corpus(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let p = e?.path();
        if p.is_file() {
            out.push(std::fs::read(&p)?);
        }
    }
    Ok(out)
}

/// Runs one input, turning a panic into its message.
pub fn run_one(target: &Target, input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| (target.run)(input))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic".into())
    })
}

/// Fuzzes `target` for `duration` from its seeds plus `corpus`; stops at the first `max_crashes`
/// crashes, each saved under `crash_dir` as `<target>-<n>`.
pub fn fuzz(
    target: &Target,
    duration: Duration,
    corpus: Vec<Vec<u8>>,
    crash_dir: &Path,
    seed: u64,
    max_crashes: usize,
) -> std::io::Result<Report> {
    let mut inputs = (target.seeds)();
    inputs.extend(corpus);
    if inputs.is_empty() {
        inputs.push(Vec::new());
    }
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let start = Instant::now();
    let save = |input: &[u8], why: String, report: &mut Report| -> std::io::Result<()> {
        std::fs::create_dir_all(crash_dir)?;
        let p = crash_dir.join(format!("{}-{}", target.name, report.crashes.len()));
        std::fs::write(&p, input)?;
        eprintln!("{}: crash saved to {}: {why}", target.name, p.display());
        report.crashes.push(p);
        Ok(())
    };
    // The seeds themselves first: they are the regression inputs.
    for input in inputs.clone() {
        report.executions += 1;
        if let Err(why) = run_one(target, &input) {
            save(&input, why, &mut report)?;
        }
    }
    while start.elapsed() < duration && report.crashes.len() < max_crashes {
        let base = &inputs[rng.below(inputs.len())];
        let input = mutate(&mut rng, base, &inputs, target.dictionary);
        report.executions += 1;
        if let Err(why) = run_one(target, &input) {
            save(&input, why, &mut report)?;
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
