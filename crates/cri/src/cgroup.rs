//! A cgroup's usage read straight from cgroupfs, for pod sandbox stats: the pod's cgroup (the
//! sandbox's cgroup parent, made by kubelet) belongs to no shim, so no shim reports on it.
//! cgroup v1 (one hierarchy per controller, as on hybrid hosts) and v2 (unified) layouts.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// What CRI reports of a cgroup, children included.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ns: u64,
    pub memory_usage: u64,
    /// Usage minus inactive file pages (containerd's and cAdvisor's working set).
    pub working_set: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub pids: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.cpu_ns += o.cpu_ns;
        self.memory_usage += o.memory_usage;
        self.working_set += o.working_set;
        self.rss += o.rss;
        self.page_faults += o.page_faults;
        self.major_page_faults += o.major_page_faults;
        self.pids += o.pids;
    }
}

/// A cgroup filesystem: its mount point and layout.
pub struct CgroupFs {
    root: PathBuf,
    v2: bool,
}

impl CgroupFs {
    /// The host's, at /sys/fs/cgroup: v2 only when the unified hierarchy is mounted there
    /// (hybrid hosts keep the controllers on v1, as libcontainer does).
    pub fn host() -> CgroupFs {
        let root = PathBuf::from("/sys/fs/cgroup");
        let v2 = root.join("cgroup.controllers").exists();
        CgroupFs { root, v2 }
    }

    #[cfg(test)]
    fn at(root: &Path, v2: bool) -> CgroupFs {
        CgroupFs {
            root: root.to_path_buf(),
            v2,
        }
    }

    /// Does the cgroup at `path` (a spec's `cgroupsPath`, absolute in the hierarchy) exist?
    pub fn exists(&self, path: &str) -> bool {
        let Ok(rel) = relative(path) else {
            return false;
        };
        let dir = if self.v2 {
            self.root.join(rel)
        } else {
            self.root.join("memory").join(rel)
        };
        dir.is_dir()
    }

    /// The usage of the cgroup at `path`.
    pub fn usage(&self, path: &str) -> Result<Usage> {
        let rel = relative(path)?;
        if self.v2 {
            self.usage_v2(&self.root.join(rel))
        } else {
            self.usage_v1(rel)
        }
    }

    fn usage_v1(&self, rel: &Path) -> Result<Usage> {
        let mem = self.root.join("memory").join(rel);
        let stat = read(&mem.join("memory.stat"))?;
        let memory_usage = number(&read(&mem.join("memory.usage_in_bytes"))?, &mem)?;
        let cpu = self.root.join("cpuacct").join(rel).join("cpuacct.usage");
        Ok(Usage {
            cpu_ns: number(&read(&cpu)?, &cpu)?,
            memory_usage,
            working_set: memory_usage.saturating_sub(key(&stat, "total_inactive_file")),
            rss: key(&stat, "total_rss"),
            page_faults: key(&stat, "total_pgfault"),
            major_page_faults: key(&stat, "total_pgmajfault"),
            pids: pids(&self.root.join("pids").join(rel)),
        })
    }

    fn usage_v2(&self, dir: &Path) -> Result<Usage> {
        let stat = read(&dir.join("memory.stat"))?;
        let memory_usage = number(&read(&dir.join("memory.current"))?, dir)?;
        let cpu = read(&dir.join("cpu.stat"))?;
        Ok(Usage {
            cpu_ns: key(&cpu, "usage_usec").saturating_mul(1000),
            memory_usage,
            working_set: memory_usage.saturating_sub(key(&stat, "inactive_file")),
            rss: key(&stat, "anon"),
            page_faults: key(&stat, "pgfault"),
            major_page_faults: key(&stat, "pgmajfault"),
            pids: pids(dir),
        })
    }
}

/// What the host's cgroups can limit, as container specs need to know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostLimits {
    /// The controllers are on the unified (v2) hierarchy.
    pub v2: bool,
    /// Memory+swap can be limited (v1 `memory.memsw.*`, v2 `memory.swap.max`).
    pub swap: bool,
    /// HugeTLB page sizes the kernel has, as cgroup files name them (`2MB`, `1GB`).
    pub hugepage_sizes: Vec<String>,
}

/// The host's limits, read once: none of them changes while the kernel runs.
pub fn host_limits() -> &'static HostLimits {
    static LIMITS: std::sync::OnceLock<HostLimits> = std::sync::OnceLock::new();
    LIMITS.get_or_init(|| {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        CgroupFs::host().limits(&own, Path::new("/sys/kernel/mm/hugepages"))
    })
}

impl CgroupFs {
    /// `own_cgroup` is /proc/self/cgroup's text: on v2 the swap file exists only below the
    /// root, so it is looked for in our own cgroup (as containerd does).
    fn limits(&self, own_cgroup: &str, hugepages: &Path) -> HostLimits {
        let swap = if self.v2 {
            own_cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .and_then(|p| relative(p).ok().map(Path::to_path_buf))
                .is_some_and(|rel| self.root.join(rel).join("memory.swap.max").exists())
        } else {
            self.root
                .join("memory/memory.memsw.limit_in_bytes")
                .exists()
        };
        let mut hugepage_sizes: Vec<String> = std::fs::read_dir(hugepages)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let kb: u64 = name
                    .strip_prefix("hugepages-")?
                    .strip_suffix("kB")?
                    .parse()
                    .ok()?;
                Some(page_size_name(kb))
            })
            .collect();
        hugepage_sizes.sort();
        HostLimits {
            v2: self.v2,
            swap,
            hugepage_sizes,
        }
    }
}

/// `2048` (kB) → `2MB`, the kernel's hugetlb file naming.
fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

/// `path` below the hierarchy's root, refusing `..`.
fn relative(path: &str) -> Result<&Path> {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return Err(Error::InvalidArgument(format!("cgroup path {path:?}")));
    }
    Ok(Path::new(rel))
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("cgroup file {}", p.display())),
        _ => Error::Internal(format!("read {}: {e}", p.display())),
    })
}

fn number(text: &str, p: &Path) -> Result<u64> {
    text.trim()
        .parse()
        .map_err(|e| Error::Internal(format!("{}: {text:?}: {e}", p.display())))
}

/// The value of `name` in a flat-keyed file (`name value` lines); 0 when absent.
fn key(text: &str, name: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `pids.current` of a cgroup directory (0 when the pids controller is not there).
fn pids(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("pids.current"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_v1_hierarchies() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(&r.join("memory/pod/memory.usage_in_bytes"), "1000\n");
        write(
            &r.join("memory/pod/memory.stat"),
            "inactive_file 5\ntotal_inactive_file 300\ntotal_rss 400\nrss 1\ntotal_pgfault 7\ntotal_pgmajfault 2\n",
        );
        write(&r.join("cpuacct/pod/cpuacct.usage"), "123456\n");
        write(&r.join("pids/pod/pids.current"), "3\n");
        let u = CgroupFs::at(r, false).usage("/pod").unwrap();
        assert_eq!(
            u,
            Usage {
                cpu_ns: 123456,
                memory_usage: 1000,
                working_set: 700,
                rss: 400,
                page_faults: 7,
                major_page_faults: 2,
                pids: 3,
            }
        );
        assert!(CgroupFs::at(r, false).exists("/pod"));
        assert!(!CgroupFs::at(r, false).exists("/other"));
        assert!(CgroupFs::at(r, false)
            .usage("/other")
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn reads_v2_unified() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(&r.join("kubepods/pod/memory.current"), "2000\n");
        write(
            &r.join("kubepods/pod/memory.stat"),
            "anon 900\nfile 1000\ninactive_file 500\npgfault 11\npgmajfault 1\n",
        );
        write(
            &r.join("kubepods/pod/cpu.stat"),
            "usage_usec 42\nuser_usec 40\nsystem_usec 2\n",
        );
        write(&r.join("kubepods/pod/pids.current"), "2\n");
        let u = CgroupFs::at(r, true).usage("kubepods/pod").unwrap();
        assert_eq!(u.cpu_ns, 42_000);
        assert_eq!(u.memory_usage, 2000);
        assert_eq!(u.working_set, 1500);
        assert_eq!(u.rss, 900);
        assert_eq!((u.page_faults, u.major_page_faults, u.pids), (11, 1, 2));
    }

    #[test]
    fn host_limits_swap_and_hugepage_sizes() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let huge = r.join("hugepages");
        for kb in ["2048", "1048576", "64"] {
            std::fs::create_dir_all(huge.join(format!("hugepages-{kb}kB"))).unwrap();
        }
        std::fs::create_dir_all(huge.join("not-a-size")).unwrap();
        // v1: swap is limited when memory.memsw.* exists at the memory hierarchy's root.
        let v1 = CgroupFs::at(r, false);
        let l = v1.limits("", &huge);
        assert_eq!(l.hugepage_sizes, ["1GB", "2MB", "64KB"]);
        assert!(!l.swap && !l.v2);
        write(&r.join("memory/memory.memsw.limit_in_bytes"), "-1\n");
        assert!(v1.limits("", &huge).swap);
        // v2: memory.swap.max exists below the root only, so our own cgroup is asked.
        let v2 = CgroupFs::at(r, true);
        let own = "0::/system.slice/wharf.service\n";
        assert!(!v2.limits(own, &huge).swap);
        write(
            &r.join("system.slice/wharf.service/memory.swap.max"),
            "max\n",
        );
        let l = v2.limits(own, &huge);
        assert!(l.swap && l.v2);
        assert!(!v2.limits("0::/\n", &huge).swap);
        assert!(v2.limits("", &r.join("none")).hugepage_sizes.is_empty());
    }

    #[test]
    fn refuses_paths_out_of_the_hierarchy() {
        let fs = CgroupFs::at(Path::new("/nonexistent"), false);
        assert!(fs.usage("/a/../../etc").is_err());
        assert!(fs.usage("/").is_err());
    }
}
