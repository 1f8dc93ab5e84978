//! OCI runtime spec generation from an image config and run options, with docker's and
//! containerd's defaults. Shared by the `wharf` CLI (which builds the spec client-side, as ctr and
//! nerdctl do) and the CRI service, so both get the same security defaults.
//!
//! ```
//! use wharf_core::images::ImageConfig;
//! use wharf_core::spec::{generate, SpecOptions};
//!
//! let image = ImageConfig {
//!     config: Some(serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]})),
//!     ..Default::default()
//! };
//! let spec = generate(&image, None, &SpecOptions::default()).unwrap();
//! assert_eq!(spec.process().as_ref().unwrap().args().as_ref().unwrap(), &["sh"]);
//! ```

pub mod caps;
pub mod devices;
pub mod etc;
pub mod mounts;
pub mod seccomp;
mod user;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Linux, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxNamespace, LinuxNamespaceType,
    LinuxPids, LinuxResources, LinuxSeccomp, Mount, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Process, Root, Spec, User,
};
use serde::Deserialize;

pub use caps::default_capabilities;
pub use devices::DeviceMapping;
pub use seccomp::{default_seccomp, Seccomp};
pub use user::{resolve_group, resolve_user};

use crate::images::ImageConfig;
use crate::{Error, Result};

/// The OCI runtime spec version wharf writes.
pub const OCI_VERSION: &str = "1.1.0";

/// `PATH` for images that set none (docker's default).
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths masked (bind-mounted over with /dev/null or an empty tmpfs) in unprivileged containers.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
];

/// Paths remounted read-only in unprivileged containers.
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// How a container gets one kind of namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NamespaceMode {
    /// A new namespace of its own.
    #[default]
    New,
    /// The host's (the namespace is left out of the spec).
    Host,
    /// Join an existing one (e.g. a pod sandbox's `/proc/<pid>/ns/net` or a pinned netns file).
    Path(PathBuf),
}

/// Namespace choices. The mount namespace is always new; user namespaces are not supported yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    pub network: NamespaceMode,
    pub pid: NamespaceMode,
    pub ipc: NamespaceMode,
    pub uts: NamespaceMode,
    /// Private by default (docker's default on cgroup v2): `/sys/fs/cgroup` shows the container's
    /// own cgroup as its root.
    pub cgroup: NamespaceMode,
}

/// Everything besides the image that shapes a container's spec. `Default` is
/// `docker run IMAGE` with no flags.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    /// Replaces the image's `Cmd` (docker's `run IMAGE ARGS…`).
    pub args: Option<Vec<String>>,
    /// Replaces the image's `Entrypoint`; `Some(vec![])` clears it. Like docker, setting it also
    /// drops the image's `Cmd` (only `args` follow a user-given entrypoint).
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` entries overriding the image's by key.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name`, `name:group`; falls back to the image's `User`, then root.
    pub user: Option<String>,
    pub additional_gids: Vec<u32>,
    pub hostname: Option<String>,
    pub terminal: bool,
    pub read_only_rootfs: bool,
    /// All capabilities, no seccomp, no masked/read-only paths, read-write /sys and cgroupfs,
    /// every device allowed and the host's /dev nodes created in the container.
    pub privileged: bool,
    /// `ALL`, `chown`, `CAP_CHOWN`… (case-insensitive).
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
    /// Extra mounts; they replace default mounts at the same destination (or below it).
    pub mounts: Vec<Mount>,
    pub memory_limit: Option<i64>,
    /// Memory + swap limit; -1 = unlimited swap.
    pub memory_swap: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub cpuset_cpus: Option<String>,
    /// Memory nodes (NUMA), `0-1,3`.
    pub cpuset_mems: Option<String>,
    /// HugeTLB limits in bytes by page size (`2MB`, `1GB`).
    pub hugepage_limits: Vec<(String, u64)>,
    /// cgroup v2 files and values written as they are (`memory.high` → `1G`).
    pub unified: HashMap<String, String>,
    /// Maximum number of tasks; -1 (or 0) = unlimited.
    pub pids_limit: Option<i64>,
    pub oom_score_adj: Option<i32>,
    pub cgroups_path: Option<String>,
    pub namespaces: Namespaces,
    pub sysctls: HashMap<String, String>,
    pub annotations: HashMap<String, String>,
    /// Override the default `RLIMIT_NOFILE 1024/1024` (containerd's) and add others, by type.
    pub rlimits: Vec<PosixRlimit>,
    /// No default rlimits: the process keeps the runtime's own (what containerd's CRI does,
    /// so that pods get the daemon's `LimitNOFILE`); `rlimits` still apply.
    pub inherit_rlimits: bool,
    /// `None` = [`DEFAULT_MASKED_PATHS`] (empty for privileged containers).
    pub masked_paths: Option<Vec<String>>,
    /// `None` = [`DEFAULT_READONLY_PATHS`] (empty for privileged containers).
    pub readonly_paths: Option<Vec<String>>,
    pub devices: Vec<DeviceMapping>,
    pub apparmor_profile: Option<String>,
    /// The propagation of the container's root mount (`rshared`, `rslave`...; unset: the
    /// runtime's default, slave), as mounts with Bidirectional or HostToContainer propagation
    /// need it.
    pub rootfs_propagation: Option<String>,
}

/// The runtime part of an image config (`config` in the OCI image config JSON).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageRuntime {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

fn image_runtime(image: &ImageConfig) -> Result<ImageRuntime> {
    match &image.config {
        None | Some(serde_json::Value::Null) => Ok(ImageRuntime::default()),
        Some(v) => ImageRuntime::deserialize(v)
            .map_err(|e| Error::InvalidArgument(format!("malformed image config: {e}"))),
    }
}

fn env_key(e: &str) -> &str {
    e.split_once('=').map_or(e, |(k, _)| k)
}

/// Image env, then `overrides` replacing entries with the same key (docker's merge).
fn merge_env(image: &[String], overrides: &[String]) -> Result<Vec<String>> {
    let mut env: Vec<String> = image.to_vec();
    for o in overrides {
        let Some((key, _)) = o.split_once('=') else {
            return Err(Error::InvalidArgument(format!(
                "environment variable {o:?} must have the form KEY=VALUE"
            )));
        };
        if key.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "environment variable {o:?} has an empty name"
            )));
        }
        match env.iter_mut().find(|e| env_key(e) == key) {
            Some(e) => *e = o.clone(),
            None => env.push(o.clone()),
        }
    }
    Ok(env)
}

/// The command: entrypoint + cmd after docker's override rules.
fn command(img: &ImageRuntime, opts: &SpecOptions) -> Result<Vec<String>> {
    let entrypoint = match &opts.entrypoint {
        Some(e) => e.clone(),
        None => img.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = match (&opts.args, &opts.entrypoint) {
        (Some(a), _) => a.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => img.cmd.clone().unwrap_or_default(),
    };
    let mut args = entrypoint;
    args.extend(cmd);
    if args.is_empty() {
        return Err(Error::InvalidArgument("no command specified".into()));
    }
    Ok(args)
}

fn namespace(typ: LinuxNamespaceType, mode: &NamespaceMode) -> Result<Option<LinuxNamespace>> {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ);
    match mode {
        NamespaceMode::Host => return Ok(None),
        NamespaceMode::New => {}
        NamespaceMode::Path(p) => {
            if !p.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "{typ} namespace path {} is not absolute",
                    p.display()
                )));
            }
            ns.set_path(Some(p.clone()));
        }
    }
    Ok(Some(ns))
}

/// Sysctls docker accepts: only namespaced ones, and only when the container owns that namespace
/// (writing `net.*` in the host's network namespace would change the host).
fn check_sysctl(key: &str, ns: &Namespaces) -> Result<()> {
    const IPC_KEYS: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let (ok, which) = if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        (ns.ipc != NamespaceMode::Host, "IPC")
    } else if key.starts_with("net.") {
        (ns.network != NamespaceMode::Host, "network")
    } else if key == "kernel.domainname" || key == "kernel.hostname" {
        (ns.uts != NamespaceMode::Host, "UTS")
    } else {
        return Err(Error::InvalidArgument(format!(
            "sysctl {key:?} is not namespaced and cannot be set for a container"
        )));
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "sysctl {key:?} cannot be set: the container shares the host's {which} namespace"
        )))
    }
}

/// The annotations that put a task in the shim of a group, as containerd's runc shim reads them:
/// the containers of a Kubernetes pod share the shim of its sandbox.
const SHIM_GROUP_ANNOTATIONS: &[&str] = &[
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// The shim group of the task whose spec is `config` (config.json's bytes): its group
/// annotation, else the task's own id. An unreadable spec means no group (the create that
/// follows reports it). The shim names its socket after the group; wharfd's manager uses the
/// same rule to join a pod's running shim without starting one.
pub fn shim_group(config: &[u8], id: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Annotated {
        #[serde(default)]
        annotations: HashMap<String, String>,
    }
    let Ok(spec) = serde_json::from_slice::<Annotated>(config) else {
        return id.to_string();
    };
    SHIM_GROUP_ANNOTATIONS
        .iter()
        .find_map(|a| spec.annotations.get(*a).filter(|g| !g.is_empty()))
        .cloned()
        .unwrap_or_else(|| id.to_string())
}

/// The cgroup limits of `opts` (memory, CPU, cpuset, hugepages, unified, pids), checked.
pub fn resources(opts: &SpecOptions) -> Result<LinuxResources> {
    let mut r = LinuxResources::default();
    let invalid = |m: String| Err(Error::InvalidArgument(m));

    if opts.memory_limit.is_some() || opts.memory_swap.is_some() {
        let mut mem = LinuxMemory::default();
        if let Some(l) = opts.memory_limit {
            if l <= 0 {
                return invalid(format!("memory limit {l} must be positive"));
            }
            mem.set_limit(Some(l));
        }
        if let Some(s) = opts.memory_swap {
            if s != -1 && opts.memory_limit.is_some_and(|l| s < l) {
                return invalid(format!(
                    "memory+swap limit {s} must be at least the memory limit (or -1 for unlimited)"
                ));
            }
            if s < -1 || s == 0 {
                return invalid(format!("memory+swap limit {s} must be positive or -1"));
            }
            mem.set_swap(Some(s));
        }
        r.set_memory(Some(mem));
    }

    if opts.cpu_quota.is_some()
        || opts.cpu_period.is_some()
        || opts.cpu_shares.is_some()
        || opts.cpuset_cpus.is_some()
        || opts.cpuset_mems.is_some()
    {
        let mut cpu = LinuxCpu::default();
        if let Some(q) = opts.cpu_quota {
            if q != -1 && q < 1000 {
                return invalid(format!("CPU quota {q} must be at least 1000µs (or -1)"));
            }
            cpu.set_quota(Some(q));
        }
        if let Some(p) = opts.cpu_period {
            if !(1000..=1_000_000).contains(&p) {
                return invalid(format!("CPU period {p} must be between 1000 and 1000000µs"));
            }
            cpu.set_period(Some(p));
        }
        if let Some(s) = opts.cpu_shares {
            if s < 2 {
                return invalid(format!("CPU shares {s} must be at least 2"));
            }
            cpu.set_shares(Some(s));
        }
        if let Some(c) = &opts.cpuset_cpus {
            check_cpuset(c)?;
            cpu.set_cpus(Some(c.clone()));
        }
        if let Some(m) = &opts.cpuset_mems {
            check_cpuset(m)?;
            cpu.set_mems(Some(m.clone()));
        }
        r.set_cpu(Some(cpu));
    }

    if !opts.hugepage_limits.is_empty() {
        let mut limits = Vec::with_capacity(opts.hugepage_limits.len());
        for (size, limit) in &opts.hugepage_limits {
            page_size_bytes(size)?;
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(size.clone());
            l.set_limit(i64::try_from(*limit).map_err(|_| {
                Error::InvalidArgument(format!("hugepage limit {limit} is too large"))
            })?);
            limits.push(l);
        }
        r.set_hugepage_limits(Some(limits));
    }

    if !opts.unified.is_empty() {
        for key in opts.unified.keys() {
            // The runtime writes `<cgroup>/<key>`: a key is one file name, nothing else.
            let (controller, file) = key.split_once('.').unwrap_or(("", ""));
            if controller.is_empty()
                || file.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
            {
                return invalid(format!(
                    "unified cgroup key {key:?} must be a cgroup file name such as memory.high"
                ));
            }
        }
        r.set_unified(Some(opts.unified.clone()));
    }

    if let Some(p) = opts.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(if p <= 0 { -1 } else { p });
        r.set_pids(Some(pids));
    }
    Ok(r)
}

/// `0-3,5`: a cpuset list (CPUs or memory nodes).
fn check_cpuset(c: &str) -> Result<()> {
    if c.is_empty()
        || !c
            .chars()
            .all(|ch| ch.is_ascii_digit() || ch == ',' || ch == '-')
    {
        return Err(Error::InvalidArgument(format!(
            "cpuset {c:?} must look like \"0-3,5\""
        )));
    }
    Ok(())
}

/// The bytes of a HugeTLB page size as CRI and the cgroup files spell it (`2MB`, `1GB`, base
/// 1024), refusing anything else: the size becomes part of a cgroup file name.
fn page_size_bytes(size: &str) -> Result<u64> {
    let digits = size.chars().take_while(|c| c.is_ascii_digit()).count();
    let (n, unit) = size.split_at(digits);
    let shift = match unit {
        "KB" => 10,
        "MB" => 20,
        "GB" => 30,
        "TB" => 40,
        "PB" => 50,
        _ => 64,
    };
    n.parse::<u64>()
        .ok()
        .filter(|n| *n > 0 && shift < 64)
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|b| b.is_power_of_two())
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "hugepage size {size:?} must look like 2MB or 1GB (a power of two)"
            ))
        })
}

fn rlimits(extra: &[PosixRlimit], defaults: bool) -> Result<Vec<PosixRlimit>> {
    let mut out = Vec::new();
    if defaults {
        out.push(
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(1024u64)
                .hard(1024u64)
                .build()
                .map_err(Error::internal)?,
        );
    }
    for r in extra {
        if r.soft() > r.hard() {
            return Err(Error::InvalidArgument(format!(
                "rlimit {:?}: soft limit {} exceeds hard limit {}",
                r.typ(),
                r.soft(),
                r.hard()
            )));
        }
        match out.iter_mut().find(|o| o.typ() == r.typ()) {
            Some(o) => *o = *r,
            None => out.push(*r),
        }
    }
    Ok(out)
}

/// Builds the OCI runtime spec of a container.
///
/// `rootfs` is the container's root filesystem on this host when it is available (needed to look
/// up user and group names in its `/etc/passwd` and `/etc/group`); numeric users work without it.
/// The spec's `root.path` is always `rootfs` (relative to the bundle), as containerd writes it.
pub fn generate(image: &ImageConfig, rootfs: Option<&Path>, opts: &SpecOptions) -> Result<Spec> {
    let img = image_runtime(image)?;

    // Process.
    let args = command(&img, opts)?;
    let mut env = merge_env(img.env.as_deref().unwrap_or_default(), &opts.env)?;
    if !env.iter().any(|e| env_key(e) == "PATH") {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if let Some(h) = &opts.hostname {
        if !env.iter().any(|e| env_key(e) == "HOSTNAME") {
            env.push(format!("HOSTNAME={h}"));
        }
    }
    if opts.terminal && !env.iter().any(|e| env_key(e) == "TERM") {
        env.push("TERM=xterm".into());
    }
    let cwd = match opts.working_dir.as_deref().filter(|w| !w.is_empty()) {
        Some(w) if !w.starts_with('/') => {
            return Err(Error::InvalidArgument(format!(
                "working directory {w:?} is not an absolute path"
            )))
        }
        Some(w) => w.to_string(),
        None => match img.working_dir.as_deref().filter(|w| !w.is_empty()) {
            Some(w) if w.starts_with('/') => w.to_string(),
            Some(w) => format!("/{w}"),
            None => "/".to_string(),
        },
    };
    let user_str = opts
        .user
        .as_deref()
        .or(img.user.as_deref())
        .unwrap_or_default();
    let (uid, gid, mut gids) = resolve_user(rootfs, user_str)?;
    for g in &opts.additional_gids {
        if !gids.contains(g) {
            gids.push(*g);
        }
    }
    let mut user = User::default();
    user.set_uid(uid);
    user.set_gid(gid);
    user.set_additional_gids((!gids.is_empty()).then_some(gids));

    let cap_list = caps::resolve(opts.privileged, &opts.cap_add, &opts.cap_drop)?;

    let mut process = Process::default();
    process.set_terminal(Some(opts.terminal));
    process.set_user(user);
    process.set_args(Some(args));
    process.set_env(Some(env));
    process.set_cwd(PathBuf::from(cwd));
    process.set_capabilities(Some(caps::linux_capabilities(&cap_list)?));
    process.set_rlimits(Some(rlimits(&opts.rlimits, !opts.inherit_rlimits)?));
    process.set_no_new_privileges(Some(opts.no_new_privileges));
    process.set_apparmor_profile(opts.apparmor_profile.clone());
    if let Some(adj) = opts.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(Error::InvalidArgument(format!(
                "oom_score_adj {adj} must be between -1000 and 1000"
            )));
        }
    }
    process.set_oom_score_adj(opts.oom_score_adj);

    // Root and mounts.
    let mut root = Root::default();
    root.set_path(PathBuf::from("rootfs"));
    root.set_readonly(Some(opts.read_only_rootfs));
    let mounts = mounts::merge(mounts::default_mounts(opts.privileged), &opts.mounts)?;

    // Namespaces.
    let ns = &opts.namespaces;
    let mut namespaces = Vec::new();
    for (typ, mode) in [
        (LinuxNamespaceType::Pid, &ns.pid),
        (LinuxNamespaceType::Network, &ns.network),
        (LinuxNamespaceType::Ipc, &ns.ipc),
        (LinuxNamespaceType::Uts, &ns.uts),
        (LinuxNamespaceType::Mount, &NamespaceMode::New),
        (LinuxNamespaceType::Cgroup, &ns.cgroup),
    ] {
        namespaces.extend(namespace(typ, mode)?);
    }
    if opts.hostname.is_some() && ns.uts == NamespaceMode::Host {
        return Err(Error::InvalidArgument(
            "a hostname cannot be set for a container sharing the host's UTS namespace".into(),
        ));
    }

    for key in opts.sysctls.keys() {
        check_sysctl(key, ns)?;
    }

    // Devices.
    let mut res = resources(opts)?;
    let mut linux_devices = Vec::new();
    let mut cgroup_rules = if opts.privileged {
        linux_devices.extend(devices::host_devices());
        vec![devices::allow_all_rule()]
    } else {
        devices::default_cgroup_rules()
    };
    for d in &opts.devices {
        let (nodes, rules) = devices::resolve(d)?;
        for n in nodes {
            linux_devices.retain(|e: &oci_spec::runtime::LinuxDevice| e.path() != n.path());
            linux_devices.push(n);
        }
        if !opts.privileged {
            cgroup_rules.extend(rules);
        }
    }
    res.set_devices(Some(cgroup_rules));

    // Seccomp, masked and read-only paths.
    let seccomp: Option<LinuxSeccomp> = if opts.privileged {
        None
    } else {
        match &opts.seccomp {
            Seccomp::Unconfined => None,
            Seccomp::Default => Some(seccomp::default_seccomp_for(
                &cap_list,
                &seccomp::Target::host(),
            )),
            Seccomp::Profile(p) => Some(p.resolve(&cap_list, &seccomp::Target::host())),
            Seccomp::Custom(s) => Some(s.clone()),
        }
    };
    let defaults = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let (masked, readonly) = if opts.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            opts.masked_paths
                .clone()
                .unwrap_or_else(|| defaults(DEFAULT_MASKED_PATHS)),
            opts.readonly_paths
                .clone()
                .unwrap_or_else(|| defaults(DEFAULT_READONLY_PATHS)),
        )
    };

    let mut linux = Linux::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(res));
    linux.set_cgroups_path(opts.cgroups_path.as_ref().map(PathBuf::from));
    linux.set_devices((!linux_devices.is_empty()).then_some(linux_devices));
    linux.set_sysctl((!opts.sysctls.is_empty()).then(|| opts.sysctls.clone()));
    linux.set_seccomp(seccomp);
    linux.set_masked_paths(Some(masked));
    linux.set_readonly_paths(Some(readonly));
    linux.set_rootfs_propagation(opts.rootfs_propagation.clone());

    let mut spec = Spec::default();
    spec.set_version(OCI_VERSION.to_string());
    spec.set_process(Some(process));
    spec.set_root(Some(root));
    spec.set_hostname(opts.hostname.clone());
    spec.set_mounts(Some(mounts));
    spec.set_annotations((!opts.annotations.is_empty()).then(|| opts.annotations.clone()));
    spec.set_linux(Some(linux));
    Ok(spec)
}
