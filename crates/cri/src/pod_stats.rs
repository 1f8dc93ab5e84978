//! PodSandboxStats and ListPodSandboxStats: the pod's CPU, memory and process count from its
//! cgroup (the sandbox's cgroup parent; without one, the sum of the pause's and the
//! containers' own cgroups), the traffic of its network namespace's interfaces, and its
//! containers' stats. A sandbox that is not ready has none (Unavailable, as containerd);
//! ListPodSandboxStats leaves those out.

use wharf_api::cri as pb;

use crate::cgroup::{CgroupFs, Usage};
use crate::stats::u64v;
use crate::store::Sandbox;
use crate::{now_nanos, Cri, Error, Result};

/// The interface CNI plugins give a pod (CRI's default interface).
const DEFAULT_INTERFACE: &str = "eth0";

/// The `cgroupsPath` of a record's spec.
fn cgroups_path(record: &wharf_core::metadata::Container) -> Option<String> {
    let spec = record.spec.as_ref()?;
    let v: serde_json::Value = serde_json::from_slice(&spec.value).ok()?;
    v["linux"]["cgroupsPath"].as_str().map(str::to_string)
}

/// Interface counters from a `/proc/<pid>/net/dev` text: (name, rx bytes, rx errors, tx bytes,
/// tx errors) of every interface but loopback.
fn parse_net_dev(text: &str) -> Vec<pb::NetworkInterfaceUsage> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            (name != "lo" && f.len() >= 11).then(|| pb::NetworkInterfaceUsage {
                name: name.to_string(),
                rx_bytes: u64v(f[0]),
                rx_errors: u64v(f[2]),
                tx_bytes: u64v(f[8]),
                tx_errors: u64v(f[10]),
            })
        })
        .collect()
}

/// The network usage seen from inside the namespace of process `pid` (the pause).
fn network_usage(pid: u32, timestamp: i64) -> Result<pb::NetworkUsage> {
    let path = format!("/proc/{pid}/net/dev");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Error::Internal(format!("read {path}: {e}")))?;
    let interfaces = parse_net_dev(&text);
    Ok(pb::NetworkUsage {
        timestamp,
        default_interface: interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .cloned(),
        interfaces,
    })
}

impl Cri {
    pub async fn pod_sandbox_stats(&self, id: &str) -> Result<pb::PodSandboxStats> {
        let s = self.sandbox(id)?;
        self.sandbox_stats_of(&s).await
    }

    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<pb::PodSandboxStatsFilter>,
    ) -> Result<Vec<pb::PodSandboxStats>> {
        let f = filter.unwrap_or_default();
        let mut out = Vec::new();
        for s in self.sandboxes()?.iter() {
            if !s.selected(&f.id, &f.label_selector) {
                continue;
            }
            match self.sandbox_stats_of(s).await {
                Ok(st) => out.push(st),
                // Not ready, or gone meanwhile: no stats, as containerd skips them.
                Err(e) if matches!(e.code(), tonic::Code::Unavailable | tonic::Code::NotFound) => {
                    tracing::debug!(id = s.id(), error = %e, "cri: no pod sandbox stats");
                }
                Err(e) => {
                    return Err(e.context(format!("pod sandbox {} stats", s.id())));
                }
            }
        }
        Ok(out)
    }

    async fn sandbox_stats_of(&self, s: &Sandbox) -> Result<pb::PodSandboxStats> {
        let id = s.id();
        let (state, pid) = self.sandbox_state(s).await;
        if state != pb::PodSandboxState::SandboxReady {
            return Err(Error::Unavailable(format!(
                "failed to get pod sandbox stats since sandbox container {id:?} is not in ready state"
            )));
        }
        let cgroups = CgroupFs::host();
        let parent = s
            .config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.trim_end_matches('/').to_string())
            .unwrap_or_default();
        // The pod's own cgroup holds every member; without one, the members' add up.
        let pod_cgroup = (!parent.is_empty() && cgroups.exists(&parent)).then_some(parent);
        let mut usage = match &pod_cgroup {
            Some(p) => cgroups.usage(p)?,
            None => match cgroups_path(&s.record) {
                Some(p) => cgroups.usage(&p).unwrap_or_default(),
                None => Usage::default(),
            },
        };
        let mut containers = Vec::new();
        for c in self.containers()?.iter() {
            if c.meta.sandbox_id != id || self.shim(c.id()).await.is_none() {
                continue;
            }
            if pod_cgroup.is_none() {
                if let Some(p) = cgroups_path(&c.record) {
                    // A container whose task just ended has no cgroup left: nothing to add.
                    usage += cgroups.usage(&p).unwrap_or_default();
                }
            }
            containers.push(self.stats_of(c).await?);
        }
        let ts = now_nanos();
        let network = if s.host_network() || pid == 0 {
            None
        } else {
            // The pause may just have exited: the pod's other figures still stand.
            network_usage(pid, ts)
                .inspect_err(|e| tracing::debug!(id, error = %e, "cri: pod network stats"))
                .ok()
        };
        Ok(pb::PodSandboxStats {
            attributes: Some(pb::PodSandboxAttributes {
                id: id.to_string(),
                metadata: Some(s.metadata()),
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
            }),
            linux: Some(pb::LinuxPodSandboxStats {
                cpu: Some(pb::CpuUsage {
                    timestamp: ts,
                    usage_core_nano_seconds: u64v(usage.cpu_ns),
                    usage_nano_cores: u64v(self.nano_cores(id, ts, usage.cpu_ns)),
                }),
                memory: Some(pb::MemoryUsage {
                    timestamp: ts,
                    working_set_bytes: u64v(usage.working_set),
                    available_bytes: None,
                    usage_bytes: u64v(usage.memory_usage),
                    rss_bytes: u64v(usage.rss),
                    page_faults: u64v(usage.page_faults),
                    major_page_faults: u64v(usage.major_page_faults),
                }),
                network,
                process: Some(pb::ProcessUsage {
                    timestamp: ts,
                    process_count: u64v(usage.pids),
                }),
                containers,
            }),
            windows: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    5000      40    3    0    0     0          0         0     7000      50    4    0    0     0       0          0
";
        let i = parse_net_dev(text);
        assert_eq!(i.len(), 1, "{i:?}");
        assert_eq!(i[0].name, "eth0");
        assert_eq!(i[0].rx_bytes, u64v(5000));
        assert_eq!(i[0].rx_errors, u64v(3));
        assert_eq!(i[0].tx_bytes, u64v(7000));
        assert_eq!(i[0].tx_errors, u64v(4));
    }
}
