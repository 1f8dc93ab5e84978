//! The container's cgroup: statistics in containerd's metrics types (v1 and v2), pids, OOM
//! notifications, and removing the empty parent directories libcontainer leaves behind.

use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use libcgroups::common::{create_cgroup_manager, CgroupConfig, CgroupManager, CgroupSetup};

use crate::events::pack;

const ROOT: &str = "/sys/fs/cgroup";

pub struct Cgroup {
    /// The spec's cgroupsPath, e.g. `/default/t1`.
    pub path: PathBuf,
    pub id: String,
    /// Made on first use and kept: on cgroup v1, making one reads the mount table once per
    /// controller, and kubelet asks every container's stats every few seconds.
    manager: std::sync::OnceLock<libcgroups::common::AnyCgroupManager>,
}

fn setup() -> Option<CgroupSetup> {
    libcgroups::common::get_cgroup_setup().ok()
}

fn unified() -> bool {
    matches!(setup(), Some(CgroupSetup::Unified))
}

impl Cgroup {
    pub fn new(path: PathBuf, id: String) -> Cgroup {
        Cgroup {
            path,
            id,
            manager: std::sync::OnceLock::new(),
        }
    }

    pub fn manager(&self) -> Result<&libcgroups::common::AnyCgroupManager, String> {
        if let Some(m) = self.manager.get() {
            return Ok(m);
        }
        let m = create_cgroup_manager(CgroupConfig {
            cgroup_path: self.path.clone(),
            systemd_cgroup: false,
            container_name: self.id.clone(),
        })
        .map_err(|e| format!("cgroup {}: {e}", self.path.display()))?;
        Ok(self.manager.get_or_init(|| m))
    }

    pub fn pids(&self) -> Result<Vec<u32>, String> {
        let m = self.manager()?;
        let pids = m
            .get_all_pids()
            .map_err(|e| format!("list pids of cgroup {}: {e}", self.path.display()))?;
        Ok(pids.into_iter().map(|p| p.as_raw() as u32).collect())
    }

    /// Statistics packed as containerd packs them: `io.containerd.cgroups.v1.Metrics` on v1 and
    /// hybrid hosts, `io.containerd.cgroups.v2.Metrics` on unified ones.
    pub fn metrics(&self) -> Result<Any, String> {
        let s = self
            .manager()?
            .stats()
            .map_err(|e| format!("cgroup stats of {}: {e}", self.path.display()))?;
        if unified() {
            let mut m = v2::Metrics::new();
            m.pids = Some(v2::PidsStat {
                current: s.pids.current,
                limit: s.pids.limit,
                ..Default::default()
            })
            .into();
            m.cpu = Some(v2::CPUStat {
                usage_usec: s.cpu.usage.usage_total / 1000,
                user_usec: s.cpu.usage.usage_user / 1000,
                system_usec: s.cpu.usage.usage_kernel / 1000,
                nr_periods: s.cpu.throttling.periods,
                nr_throttled: s.cpu.throttling.throttled_periods,
                throttled_usec: s.cpu.throttling.throttled_time / 1000,
                ..Default::default()
            })
            .into();
            let stat = |k: &str| s.memory.stats.get(k).copied().unwrap_or_default();
            m.memory = Some(v2::MemoryStat {
                usage: s.memory.memory.usage,
                usage_limit: s.memory.memory.limit,
                swap_usage: s.memory.memswap.usage,
                swap_limit: s.memory.memswap.limit,
                anon: stat("anon"),
                file: stat("file"),
                ..Default::default()
            })
            .into();
            let mut any = pack(&m);
            any.type_url = "io.containerd.cgroups.v2.Metrics".into();
            return Ok(any);
        }
        let mut m = v1::Metrics::new();
        m.pids = Some(v1::PidsStat {
            current: s.pids.current,
            limit: s.pids.limit,
            ..Default::default()
        })
        .into();
        m.cpu = Some(v1::CPUStat {
            usage: Some(v1::CPUUsage {
                total: s.cpu.usage.usage_total,
                kernel: s.cpu.usage.usage_kernel,
                user: s.cpu.usage.usage_user,
                per_cpu: s.cpu.usage.per_core_usage_total.clone(),
                ..Default::default()
            })
            .into(),
            throttling: Some(v1::Throttle {
                periods: s.cpu.throttling.periods,
                throttled_periods: s.cpu.throttling.throttled_periods,
                throttled_time: s.cpu.throttling.throttled_time,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
        .into();
        let entry = |d: &libcgroups::stats::MemoryData| v1::MemoryEntry {
            usage: d.usage,
            max: d.max_usage,
            failcnt: d.fail_count,
            limit: d.limit,
            ..Default::default()
        };
        let stat = |k: &str| s.memory.stats.get(k).copied().unwrap_or_default();
        m.memory = Some(v1::MemoryStat {
            cache: stat("cache"),
            rss: stat("rss"),
            rss_huge: stat("rss_huge"),
            mapped_file: stat("mapped_file"),
            pg_fault: stat("pgfault"),
            pg_maj_fault: stat("pgmajfault"),
            total_cache: stat("total_cache"),
            total_rss: stat("total_rss"),
            usage: Some(entry(&s.memory.memory)).into(),
            swap: Some(entry(&s.memory.memswap)).into(),
            kernel: Some(entry(&s.memory.kernel)).into(),
            kernel_tcp: Some(entry(&s.memory.kernel_tcp)).into(),
            ..Default::default()
        })
        .into();
        let mut any = pack(&m);
        any.type_url = "io.containerd.cgroups.v1.Metrics".into();
        Ok(any)
    }

    /// The directory of a v1 controller's hierarchy for this cgroup, or the v2 directory.
    pub fn dir(&self, controller: &str) -> PathBuf {
        let rel = self.path.strip_prefix("/").unwrap_or(&self.path);
        if unified() {
            Path::new(ROOT).join(rel)
        } else {
            Path::new(ROOT).join(controller).join(rel)
        }
    }

    /// Removes the container's own cgroup directory in every hierarchy if libcontainer left it
    /// (a process lingered while it deleted). Parents (`/<namespace>`) are shared by the
    /// namespace's containers and stay, as with containerd.
    pub fn remove_leftovers(&self) {
        let rel = self
            .path
            .strip_prefix("/")
            .unwrap_or(&self.path)
            .to_path_buf();
        let escapes = rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if rel.as_os_str().is_empty() || escapes {
            return;
        }
        let roots: Vec<PathBuf> = if unified() {
            vec![PathBuf::from(ROOT)]
        } else {
            std::fs::read_dir(ROOT)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default()
        };
        for root in roots {
            let dir = root.join(&rel);
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %e, "remove cgroup");
                }
            }
        }
    }
}

/// Watches for OOM kills in the container's memory cgroup; resolves once per OOM event.
pub struct OomWatch {
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    /// v2: the memory.events file whose oom_kill count is compared.
    events: Option<(PathBuf, u64)>,
    /// v1: the memory cgroup dir (the eventfd also fires when it is removed).
    v1_dir: Option<PathBuf>,
}

impl OomWatch {
    /// v1: an eventfd registered on memory.oom_control. v2: inotify on memory.events.
    pub fn new(cg: &Cgroup) -> Result<OomWatch, String> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        if unified() {
            let file = cg.dir("").join("memory.events");
            let ifd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if ifd < 0 {
                return Err(format!("inotify: {}", std::io::Error::last_os_error()));
            }
            let ifd = unsafe { OwnedFd::from_raw_fd(ifd) };
            let c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
                .map_err(|e| e.to_string())?;
            if unsafe { libc::inotify_add_watch(ifd.as_raw_fd(), c.as_ptr(), libc::IN_MODIFY) } < 0
            {
                return Err(format!(
                    "watch {}: {}",
                    file.display(),
                    std::io::Error::last_os_error()
                ));
            }
            let count = oom_kills(&file);
            return Ok(OomWatch {
                fd: register(ifd)?,
                events: Some((file, count)),
                v1_dir: None,
            });
        }
        let dir = cg.dir("memory");
        let control = std::fs::File::open(dir.join("memory.oom_control"))
            .map_err(|e| format!("open {}/memory.oom_control: {e}", dir.display()))?;
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        std::fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
        )
        .map_err(|e| format!("register OOM eventfd: {e}"))?;
        // The registration holds its own reference to memory.oom_control.
        drop(control);
        Ok(OomWatch {
            fd: register(efd)?,
            events: None,
            v1_dir: Some(dir),
        })
    }

    /// Waits for the next OOM kill; None when the cgroup is gone.
    pub async fn next(&mut self) -> Option<()> {
        use std::os::fd::AsRawFd;
        loop {
            let mut guard = self.fd.readable().await.ok()?;
            let mut buf = [0u8; 4096];
            let n = unsafe {
                libc::read(
                    guard.get_inner().as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    guard.clear_ready();
                    continue;
                }
                return None;
            }
            match &mut self.events {
                None => {
                    let gone = self
                        .v1_dir
                        .as_ref()
                        .is_none_or(|d| !d.join("memory.oom_control").exists());
                    return if gone { None } else { Some(()) };
                }
                Some((file, count)) => {
                    if !file.exists() {
                        return None;
                    }
                    let now = oom_kills(file);
                    if now > *count {
                        *count = now;
                        return Some(());
                    }
                }
            }
        }
    }
}

/// Registers an fd this watch owns (an eventfd or inotify fd, never shared) with tokio.
fn register(
    fd: std::os::fd::OwnedFd,
) -> Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>, String> {
    // SAFETY: the OwnedFd moves into the AsyncFd, which deregisters it before closing it.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.to_string())
}

fn oom_kills(memory_events: &Path) -> u64 {
    std::fs::read_to_string(memory_events)
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Starts, on a thread, the RCU grace period the kernel waits for on the first cgroup
/// migration after a quiet spell (cgroup v1 takes a global percpu rwsem whose write side waits
/// for one; ~10 ms here). Re-attaching the shim to its own cgroup costs exactly that wait, and
/// libcontainer's migration of the new container, which comes a few milliseconds later, then
/// shares the same grace period instead of starting its own.
///
/// One worker thread serves every request, for the shim's life (a pod's shim sees a create per
/// container and an exec per probe: a thread each would pile up, parked). A request made while
/// one is pending joins it.
pub fn prewarm_attach() {
    static WORKER: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<()>>> =
        std::sync::OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        crate::threads::spawn_ready("cg-prewarm", 64 * 1024, move || {
            while rx.recv().is_ok() {
                prewarm();
            }
            crate::threads::park_forever();
        })
        .ok()
        .map(|()| tx)
    });
    if let Some(tx) = worker {
        let _ = tx.try_send(());
    }
}

fn prewarm() {
    {
        let Ok(own) = std::fs::read_to_string("/proc/self/cgroup") else {
            return;
        };
        // "ID:controllers:/path": the first hierarchy that is mounted where expected.
        for line in own.lines() {
            let mut f = line.splitn(3, ':');
            let (_, ctrl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            let dir = if ctrl.is_empty() {
                if !unified() {
                    continue;
                }
                Path::new(ROOT).to_path_buf()
            } else {
                let name = ctrl.split(',').next().unwrap_or("");
                if name.starts_with("name=") {
                    continue;
                }
                Path::new(ROOT).join(name)
            };
            let procs = dir.join(path.trim_start_matches('/')).join("cgroup.procs");
            if std::fs::write(&procs, std::process::id().to_string()).is_ok() {
                return;
            }
        }
    }
}
