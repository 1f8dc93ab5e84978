//! ingest-bench: Content/Write throughput of a daemon (wharfd or containerd) with a client
//! that is not the bottleneck, for bench/foundation.py. `ctr content ingest` waits for the
//! answer to each 1 MiB chunk before it sends the next, so its figure includes its own
//! round trips; this client keeps `--window` chunks in flight, as a daemon-side pull does.
//! Prints one JSON object: `{"mib_per_s": [...], "bytes": N}`.
//!
//! ```text
//! ingest-bench --endpoint /run/wharf/wharfd.sock --file blob --runs 3
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let a = Args::parse();
    let data = std::fs::read(&a.file).with_context(|| format!("read {}", a.file))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&data)));
    let ch = containerd_client::connect(&a.endpoint)
        .await
        .with_context(|| format!("connect to {}", a.endpoint))?;
    let mut figures = Vec::new();
    for run in 0..a.runs {
        let mut c = ContentClient::new(ch.clone());
        let reference = format!("ingest-bench-{}-{run}", std::process::id());
        let t0 = Instant::now();
        ingest(&mut c, &a, &reference, &data, &digest).await?;
        let secs = t0.elapsed().as_secs_f64();
        figures.push(data.len() as f64 / (1 << 20) as f64 / secs);
        // Each run writes the same blob: delete it so the next one is a fresh write.
        let mut req = tonic::Request::new(containerd_client::services::v1::DeleteContentRequest {
            digest: digest.clone(),
        });
        req.metadata_mut()
            .insert("containerd-namespace", a.namespace.parse()?);
        c.delete(req).await.context("delete the blob")?;
    }
    println!(
        "{}",
        serde_json::json!({"mib_per_s": figures, "bytes": data.len()})
    );
    Ok(())
}

async fn ingest(
    c: &mut ContentClient<tonic::transport::Channel>,
    a: &Args,
    reference: &str,
    data: &[u8],
    digest: &str,
) -> Result<()> {
    let (tx, rx) = mpsc::channel::<WriteContentRequest>(a.window.max(1));
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("containerd-namespace", a.namespace.parse()?);
    let total = data.len() as i64;
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
    let chunks: Vec<(usize, Vec<u8>)> = data
        .chunks(a.chunk.max(1))
        .scan(0usize, |off, b| {
            let o = *off;
            *off += b.len();
            Some((o, b.to_vec()))
        })
        .collect();
    let n = chunks.len();
    // Sending runs beside reading the answers; the channel bounds the chunks in flight.
    let sender = tokio::spawn(async move {
        for (offset, b) in chunks {
            let w = WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: offset as i64,
                data: b,
                ..Default::default()
            };
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
