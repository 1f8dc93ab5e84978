//! `wharf-fuzz`: runs the stable mutation driver on one target for a while, replays a crash
//! file, or writes a target's seeds as a corpus for `cargo fuzz`.
//!
//! ```text
//! wharf-fuzz tar_apply --seconds 300 [--corpus DIR] [--crashes DIR] [--seed N]
//! wharf-fuzz tar_apply --replay FILE
//! wharf-fuzz tar_apply --write-seeds DIR
//! wharf-fuzz --list
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use wharf_fuzz::{driver, target, TARGETS};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Result<Option<T>, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("{name} needs a value")),
    }
}

fn main_() -> Result<bool, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for t in TARGETS {
            println!("{}", t.name);
        }
        return Ok(true);
    }
    let name = args
        .first()
        .ok_or("usage: wharf-fuzz TARGET [options] | --list")?;
    let t = target(name).ok_or_else(|| format!("no target {name:?} (see --list)"))?;
    if let Some(file) = arg::<PathBuf>(&args, "--replay")? {
        let input = std::fs::read(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
        return match driver::run_one(t, &input) {
            Ok(()) => Ok(true),
            Err(why) => {
                eprintln!("{name}: {} crashes: {why}", file.display());
                Ok(false)
            }
        };
    }
    if let Some(dir) = arg::<PathBuf>(&args, "--write-seeds")? {
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        for (i, s) in (t.seeds)().iter().enumerate() {
            let p = dir.join(format!("seed-{i}"));
            std::fs::write(&p, s).map_err(|e| format!("write {}: {e}", p.display()))?;
        }
        return Ok(true);
    }
    let secs: u64 = arg(&args, "--seconds")?.unwrap_or(10);
    let corpus = match arg::<PathBuf>(&args, "--corpus")? {
        Some(d) => driver::read_corpus(&d).map_err(|e| format!("read {}: {e}", d.display()))?,
        None => Vec::new(),
    };
    let crashes: PathBuf = arg(&args, "--crashes")?.unwrap_or_else(|| "fuzz-crashes".into());
    let seed: u64 = arg(&args, "--seed")?.unwrap_or_else(|| std::process::id() as u64);
    let r = driver::fuzz(t, Duration::from_secs(secs), corpus, &crashes, seed, 10)
        .map_err(|e| format!("save a crash under {}: {e}", crashes.display()))?;
    println!(
        "{name}: {} executions in {:.1} s ({:.0}/s), seed {seed}, {} crashes",
        r.executions,
        r.elapsed.as_secs_f64(),
        r.executions as f64 / r.elapsed.as_secs_f64().max(0.001),
        r.crashes.len()
    );
    Ok(r.crashes.is_empty())
}

fn main() -> ExitCode {
    match main_() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("wharf-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}
