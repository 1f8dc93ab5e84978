//! ContainerStats and ListContainerStats from the shims' cgroup metrics (containerd's v1 or v2
//! `Metrics` messages): CPU time in core nanoseconds, memory working set (usage minus inactive
//! file pages, as containerd and cAdvisor count it).

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::Message;
use wharf_api::cri as pb;

use crate::store::{self, CriContainer};
use crate::{now_nanos, Cri, Error, Result};

/// A CRI optional figure.
pub(crate) fn u64v(v: u64) -> Option<pb::UInt64Value> {
    Some(pb::UInt64Value { value: v })
}

/// (cpu core nanos, memory usage, working set, rss, page faults, major page faults)
type Sample = (u64, u64, u64, u64, u64, u64);

fn decode(type_url: &str, value: &[u8]) -> Result<Sample> {
    let bad = |e: String| Error::Internal(format!("decode {type_url}: {e}"));
    if type_url.ends_with("cgroups.v2.Metrics") {
        let m = v2::Metrics::parse_from_bytes(value).map_err(|e| bad(e.to_string()))?;
        let cpu = m.cpu.as_ref().map(|c| c.usage_usec * 1000).unwrap_or(0);
        let mem = m.memory.as_ref();
        let usage = mem.map(|m| m.usage).unwrap_or(0);
        let inactive = mem.map(|m| m.inactive_file).unwrap_or(0);
        Ok((
            cpu,
            usage,
            usage.saturating_sub(inactive),
            mem.map(|m| m.anon).unwrap_or(0),
            mem.map(|m| m.pgfault).unwrap_or(0),
            mem.map(|m| m.pgmajfault).unwrap_or(0),
        ))
    } else {
        let m = v1::Metrics::parse_from_bytes(value).map_err(|e| bad(e.to_string()))?;
        let cpu = m
            .cpu
            .as_ref()
            .and_then(|c| c.usage.as_ref())
            .map(|u| u.total)
            .unwrap_or(0);
        let mem = m.memory.as_ref();
        let usage = mem
            .and_then(|m| m.usage.as_ref())
            .map(|u| u.usage)
            .unwrap_or(0);
        let inactive = mem.map(|m| m.total_inactive_file).unwrap_or(0);
        Ok((
            cpu,
            usage,
            usage.saturating_sub(inactive),
            mem.map(|m| m.total_rss.max(m.rss)).unwrap_or(0),
            mem.map(|m| m.pg_fault).unwrap_or(0),
            mem.map(|m| m.pg_maj_fault).unwrap_or(0),
        ))
    }
}

impl Cri {
    /// The CPU rate since the previous sample of `id` (containerd's usage_nano_cores: 0 on the
    /// first sample, whose figures are kept for the next).
    pub(crate) fn nano_cores(&self, id: &str, ts: i64, usage_ns: u64) -> u64 {
        let Ok(mut samples) = self.cpu_samples.lock() else {
            return 0;
        };
        match samples.insert(id.to_string(), (ts, usage_ns)) {
            Some((t0, u0)) if ts > t0 => {
                (u128::from(usage_ns.saturating_sub(u0)) * 1_000_000_000 / (ts - t0) as u128) as u64
            }
            _ => 0,
        }
    }

    /// Drops the CPU sample of a removed container or sandbox.
    pub(crate) fn forget_cpu_sample(&self, id: &str) {
        if let Ok(mut samples) = self.cpu_samples.lock() {
            samples.remove(id);
        }
    }

    pub(crate) async fn stats_of(&self, c: &CriContainer) -> Result<pb::ContainerStats> {
        let attributes = Some(pb::ContainerAttributes {
            id: c.id().to_string(),
            metadata: c.config.metadata.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
        });
        let ts = now_nanos();
        let sample = match self.shim(c.id()).await {
            Some(shim) => match shim.stats().await {
                Ok(r) => match r.stats.as_ref() {
                    Some(any) => Some(decode(&any.type_url, &any.value)?),
                    None => None,
                },
                Err(_) => None,
            },
            None => None,
        };
        let usage = self.snapshotter.usage(crate::NAMESPACE, c.id()).ok();
        let writable_layer = usage.map(|u| pb::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(pb::FilesystemIdentifier {
                mountpoint: self.snapshotter.root().display().to_string(),
            }),
            used_bytes: u64v(u.size.max(0) as u64),
            inodes_used: u64v(u.inodes.max(0) as u64),
        });
        let Some((cpu, mem, ws, rss, pf, majf)) = sample else {
            return Ok(pb::ContainerStats {
                attributes,
                writable_layer,
                ..Default::default()
            });
        };
        Ok(pb::ContainerStats {
            attributes,
            cpu: Some(pb::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: u64v(cpu),
                usage_nano_cores: u64v(self.nano_cores(c.id(), ts, cpu)),
            }),
            memory: Some(pb::MemoryUsage {
                timestamp: ts,
                working_set_bytes: u64v(ws),
                available_bytes: None,
                usage_bytes: u64v(mem),
                rss_bytes: u64v(rss),
                page_faults: u64v(pf),
                major_page_faults: u64v(majf),
            }),
            writable_layer,
            swap: None,
        })
    }

    pub async fn container_stats(&self, id: &str) -> Result<pb::ContainerStats> {
        let c = self.container(id)?;
        self.stats_of(&c).await
    }

    pub async fn list_container_stats(
        &self,
        filter: Option<pb::ContainerStatsFilter>,
    ) -> Result<Vec<pb::ContainerStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for c in self.containers()?.iter() {
            if !f.id.is_empty() && !c.id().starts_with(&f.id) {
                continue;
            }
            if !f.pod_sandbox_id.is_empty() && !c.meta.sandbox_id.starts_with(&f.pod_sandbox_id) {
                continue;
            }
            if !store::selects(&f.label_selector, &c.config.labels) {
                continue;
            }
            if self.shim(c.id()).await.is_none() {
                continue;
            }
            out.push(self.stats_of(c).await?);
        }
        Ok(out)
    }
}
