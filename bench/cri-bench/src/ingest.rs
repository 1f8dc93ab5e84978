//! ingest-bench: Content/Write throughput of a daemon (wharfd or containerd) with a client
//! that is not the bottleneck, for bench/foundation.py. `ctr content ingest` waits for the
//! answer to each 1 MiB chunk before it sends the next, so its figure includes its own
//! round trips; this client keeps `--window` chunks in flight, as a daemon-side pull does.
//! With `--floor-dir`, each run is followed by the floor the issue measures against: the same
//! bytes hashed (SHA-256) and written in the same chunks to a file there, then fsynced, in
//! this process; and by that floor again with the disk writes started every 4 MiB as it goes
//! (`sync_file_range`), as wharfd's content store does. Prints one JSON object:
//! `{"mib_per_s": [...], "floor_mib_per_s": [...], "floor_early_mib_per_s": [...], "bytes": N}`.
//!
//! ```text
//! ingest-bench --endpoint /run/wharf/wharfd.sock --file blob --runs 3 --floor-dir /var/lib/wharf
//! ```

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use containerd_client::services::v1::content_client::ContentClient;
use containerd_client::services::v1::{WriteAction, WriteContentRequest};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser)]
struct Args {
    /// The daemon's gRPC unix socket.
    #[arg(long)]
    endpoint: String,
    /// The bytes to ingest (read into memory first: the disk read is not timed).
    #[arg(long)]
    file: String,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Bytes per WRITE.
    #[arg(long, default_value_t = 1 << 20)]
    chunk: usize,
    /// WRITEs sent ahead of their answers.
    #[arg(long, default_value_t = 4)]
    window: usize,
    #[arg(long, default_value = "bench")]
    namespace: String,
    /// Also time hashing + writing + fsync of the same bytes to a file in this directory.
    #[arg(long)]
    floor_dir: Option<std::path::PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    let mut data = std::fs::read(&a.file).with_context(|| format!("read {}", a.file))?;
    if data.len() < 16 {
        bail!("{} is too small to time", a.file);
    }
    let ch = containerd_client::connect(&a.endpoint)
        .await
        .with_context(|| format!("connect to {}", a.endpoint))?;
    let mut figures = Vec::new();
    let mut floor = Vec::new();
    let mut floor_early = Vec::new();
    for run in 0..a.runs {
        let mut c = ContentClient::new(ch.clone());
        let reference = format!("ingest-bench-{}-{run}", std::process::id());
        // A blob of its own each run: a deleted blob stays on disk until the daemon collects
        // it, and writing it again then only shares it back (AlreadyExists, as containerd).
        let nonce = format!("{:08x}{run:08x}", std::process::id());
        data[..16].copy_from_slice(nonce.as_bytes());
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
        // The WRITE messages are made before the clock starts: what is timed is the daemon.
        let writes: Vec<WriteContentRequest> = data
            .chunks(a.chunk.max(1))
            .scan(0usize, |off, b| {
                let offset = *off as i64;
                *off += b.len();
                Some(WriteContentRequest {
                    action: WriteAction::Write as i32,
                    offset,
                    data: b.to_vec(),
                    ..Default::default()
                })
            })
            .collect();
        let t0 = Instant::now();
        ingest(&mut c, &a, &reference, data.len() as i64, writes, &digest).await?;
        let secs = t0.elapsed().as_secs_f64();
        figures.push(data.len() as f64 / (1 << 20) as f64 / secs);
        let mut req = tonic::Request::new(containerd_client::services::v1::DeleteContentRequest {
            digest: digest.clone(),
        });
        req.metadata_mut()
            .insert("containerd-namespace", a.namespace.parse()?);
        c.delete(req).await.context("delete the blob")?;
        if let Some(dir) = &a.floor_dir {
            let path = dir.join(format!("{reference}.floor"));
            let mib = data.len() as f64 / (1 << 20) as f64;
            // Each twice, in the order plain, early, early, plain: whichever runs second
            // finds the disk busier with the first one's writes.
            let mut secs = [0.0f64; 2];
            for early in [false, true, true, false] {
                secs[usize::from(early)] += hash_write_sync(&path, &data, a.chunk, early)?;
            }
            floor.push(2.0 * mib / secs[0]);
            floor_early.push(2.0 * mib / secs[1]);
        }
    }
    println!(
        "{}",
        serde_json::json!({"mib_per_s": figures, "floor_mib_per_s": floor,
            "floor_early_mib_per_s": floor_early, "bytes": data.len()})
    );
    Ok(())
}

/// Seconds to hash and write `data` in `chunk`s to a new file at `path`, then fsync it; with
/// `early`, the disk writes are started on the way, in the content store's steps.
fn hash_write_sync(path: &std::path::Path, data: &[u8], chunk: usize, early: bool) -> Result<f64> {
    use std::io::Write;
    let t0 = Instant::now();
    let mut f =
        std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut h = Sha256::new();
    let (mut written, mut started) = (0usize, 0usize);
    for b in data.chunks(chunk.max(1)) {
        h.update(b);
        f.write_all(b)
            .with_context(|| format!("write {}", path.display()))?;
        written += b.len();
        if early && (written - started) as u64 >= wharf_core::content::WRITEBACK_STEP {
            wharf_core::content::start_writeback(&f, started as u64, (written - started) as u64);
            started = written;
        }
    }
    f.sync_all()?;
    std::hint::black_box(h.finalize());
    let secs = t0.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(path)?;
    Ok(secs)
}

async fn ingest(
    c: &mut ContentClient<tonic::transport::Channel>,
    a: &Args,
    reference: &str,
    total: i64,
    writes: Vec<WriteContentRequest>,
    digest: &str,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(a.window.max(1));
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("containerd-namespace", a.namespace.parse()?);
    let first = WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: reference.to_string(),
        total,
        expected: digest.to_string(),
        ..Default::default()
    };
    tx.send(first).await.context("send STAT")?;
    let mut answers = c.write(req).await.context("Content/Write")?.into_inner();
    answers.message().await?.context("no answer to STAT")?;
    let n = writes.len();
    // Sending runs beside reading the answers; the channel bounds the chunks in flight.
    let sender = tokio::spawn(async move {
        for w in writes {
            if tx.send(w).await.is_err() {
                return None;
            }
        }
        Some(tx)
    });
    for _ in 0..n {
        answers
            .message()
            .await?
            .context("stream ended before every WRITE was answered")?;
    }
    let Some(tx) = sender.await? else {
        bail!("the daemon stopped reading");
    };
    tx.send(WriteContentRequest {
        action: WriteAction::Commit as i32,
        offset: total,
        total,
        expected: digest.to_string(),
        ..Default::default()
    })
    .await
    .context("send COMMIT")?;
    let done = answers.message().await?.context("no answer to COMMIT")?;
    if done.digest != digest {
        bail!("committed {:?}, expected {digest}", done.digest);
    }
    Ok(())
}
