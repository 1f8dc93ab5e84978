//! `wharf stats`: CPU %, memory and pids of running containers from the Tasks Metrics API
//! (cgroup v1 or v2 metrics, as containerd packs them), refreshed every second.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use containerd_client::services::v1 as pb;
use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::Message;

use crate::client::{Client, Explain};
use crate::table::{human_size, Table};

/// One sample: cumulative CPU time (ns), memory usage and limit (bytes), pids.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu_ns: u64,
    pub mem: u64,
    pub limit: u64,
    pub pids: u64,
}

pub fn decode(type_url: &str, value: &[u8]) -> Option<Sample> {
    if type_url.ends_with("cgroups.v2.Metrics") {
        let m = v2::Metrics::parse_from_bytes(value).ok()?;
        return Some(Sample {
            cpu_ns: m.cpu.usage_usec * 1000,
            mem: m.memory.usage,
            limit: m.memory.usage_limit,
            pids: m.pids.current,
        });
    }
    let m = v1::Metrics::parse_from_bytes(value).ok()?;
    Some(Sample {
        cpu_ns: m.cpu.usage.total,
        mem: m.memory.usage.usage,
        limit: m.memory.usage.limit,
        pids: m.pids.current,
    })
}

async fn sample(c: &Client, ids: &[String]) -> Result<HashMap<String, Sample>> {
    let metrics = c
        .tasks()
        .metrics(c.req(pb::MetricsRequest {
            filters: ids.iter().map(|i| format!("id=={i}")).collect(),
        }))
        .await
        .explain(c, "")?
        .metrics;
    Ok(metrics
        .into_iter()
        .filter_map(|m| {
            let d = m.data?;
            Some((m.id, decode(&d.type_url, &d.value)?))
        })
        .collect())
}

pub async fn stats(c: &Client, ids: Vec<String>, no_stream: bool) -> Result<()> {
    let host_mem = nix::sys::sysinfo::sysinfo()
        .map(|s| s.ram_total())
        .unwrap_or(u64::MAX);
    let mut prev = sample(c, &ids).await?;
    let mut at = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample(c, &ids).await?;
        let wall = at.elapsed().as_nanos().max(1) as f64;
        at = Instant::now();
        let mut t = Table::new(&["NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "PIDS"]);
        let mut names: Vec<&String> = now.keys().collect();
        names.sort();
        for id in names {
            let s = now[id];
            let cpu = prev
                .get(id)
                .map(|p| s.cpu_ns.saturating_sub(p.cpu_ns) as f64 / wall * 100.0)
                .unwrap_or(0.0);
            // An unlimited cgroup reports a huge limit: show the host's memory instead.
            let limit = if s.limit == 0 || s.limit > host_mem {
                host_mem
            } else {
                s.limit
            };
            t.row(vec![
                id.clone(),
                format!("{cpu:.2}%"),
                format!("{} / {}", human_size(s.mem), human_size(limit)),
                format!("{:.2}%", s.mem as f64 / limit.max(1) as f64 * 100.0),
                s.pids.to_string(),
            ]);
        }
        let mut out = std::io::stdout().lock();
        if !no_stream && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
            // Redraw in place.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{}", t.render())?;
        out.flush()?;
        if no_stream {
            return Ok(());
        }
        prev = now;
    }
}
