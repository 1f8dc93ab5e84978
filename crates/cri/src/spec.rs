//! CRI configs → core's [`SpecOptions`]: the pause container of a sandbox and the containers
//! of a pod, in the spirit of containerd's CRI plugin (its annotations, the pod's namespaces
//! joined by path, the pod's /etc files bind-mounted, cgroups under the pod's parent).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;
use wharf_api::cri as pb;
use wharf_core::spec::{DeviceMapping, NamespaceMode, Namespaces, Seccomp, SpecOptions};

use crate::store::{namespace_options, Sandbox};
use crate::{Error, Result};

const ANN_TYPE: &str = "io.kubernetes.cri.container-type";
const ANN_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const ANN_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const ANN_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const ANN_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const ANN_LOG_DIR: &str = "io.kubernetes.cri.sandbox-log-directory";
const ANN_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const ANN_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

/// containerd's sandbox container OOM score: the last thing the kernel kills.
const SANDBOX_OOM_SCORE_ADJ: i32 = -998;

/// An OOM score a process of ours may set: lowering below our own score needs
/// CAP_SYS_RESOURCE, which wharfd may lack (in a container, for example), so scores are
/// raised to ours, as containerd's `restrict_oom_score_adj` does.
fn oom_score(want: i32) -> i32 {
    let ours = std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(-1000);
    want.max(ours)
}

/// `<parent>/<id>` (cgroupfs driver); `/k8s.io/<id>` without a parent (the shim's default,
/// made explicit so OOM kills can be read back from the cgroup).
fn cgroups_path(parent: &str, id: &str) -> Option<String> {
    if parent.is_empty() {
        Some(format!("/{}/{id}", crate::NAMESPACE))
    } else {
        Some(format!("{}/{id}", parent.trim_end_matches('/')))
    }
}

/// Did the kernel OOM-kill a process of the cgroup at `path` (the spec's `cgroupsPath`)?
/// Reads `oom_kill` from memory.oom_control (v1) or memory.events (v2).
pub fn cgroup_oom_killed(path: &str) -> bool {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return false;
    }
    let root = Path::new("/sys/fs/cgroup");
    [
        root.join("memory").join(rel).join("memory.oom_control"),
        root.join(rel).join("memory.events"),
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(f).ok())
    .flat_map(|t| {
        t.lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .collect::<Vec<_>>()
    })
    .any(|n| n > 0)
}

/// `uid[:gid]` or `name[:gid]` for core's user resolution.
fn user(
    uid: Option<&pb::Int64Value>,
    username: &str,
    gid: Option<&pb::Int64Value>,
) -> Option<String> {
    let who = match uid {
        Some(u) => u.value.to_string(),
        None if !username.is_empty() => username.to_string(),
        None => {
            if gid.is_some() {
                // A group alone is not enough to know the user (containerd refuses it too).
                return Some(String::new());
            }
            return None;
        }
    };
    Some(match gid {
        Some(g) => format!("{who}:{}", g.value),
        None => who,
    })
}

fn gids(groups: &[i64]) -> Result<Vec<u32>> {
    groups
        .iter()
        .map(|g| {
            u32::try_from(*g)
                .map_err(|_| Error::InvalidArgument(format!("supplemental group {g} is invalid")))
        })
        .collect()
}

/// The seccomp choice of a security profile (or the deprecated path form); unset means
/// unconfined, as containerd 1.6 does.
pub fn seccomp(profile: Option<&pb::SecurityProfile>, legacy_path: &str) -> Result<Seccomp> {
    use pb::security_profile::ProfileType;
    if let Some(p) = profile {
        return match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(Seccomp::Default),
            Ok(ProfileType::Unconfined) => Ok(Seccomp::Unconfined),
            Ok(ProfileType::Localhost) => localhost_seccomp(&p.localhost_ref),
            Err(_) => Err(Error::InvalidArgument(format!(
                "seccomp profile type {}",
                p.profile_type
            ))),
        };
    }
    match legacy_path {
        "" | "unconfined" => Ok(Seccomp::Unconfined),
        "runtime/default" | "docker/default" => Ok(Seccomp::Default),
        p => match p.strip_prefix("localhost/") {
            Some(path) => localhost_seccomp(path),
            None => Err(Error::InvalidArgument(format!("seccomp profile {p:?}"))),
        },
    }
}

fn localhost_seccomp(path: &str) -> Result<Seccomp> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "localhost seccomp profile {path:?} must be an absolute path"
        )));
    }
    Seccomp::from_file(p).map_err(|e| Error::from(e).context("load seccomp profile"))
}

fn mode(m: i32) -> pb::NamespaceMode {
    pb::NamespaceMode::try_from(m).unwrap_or(pb::NamespaceMode::Pod)
}

/// The pause container's options.
#[allow(deprecated)] // seccomp_profile_path: older kubelets still send it
pub fn sandbox_options(
    id: &str,
    config: &pb::PodSandboxConfig,
    netns: &str,
) -> Result<SpecOptions> {
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let ns = namespace_options(config.linux.as_ref());
    let md = config.metadata.clone().unwrap_or_default();
    let host_net = mode(ns.network) == pb::NamespaceMode::Node;
    let host_or_new = |m: i32| {
        if mode(m) == pb::NamespaceMode::Node {
            NamespaceMode::Host
        } else {
            NamespaceMode::New
        }
    };
    let namespaces = Namespaces {
        network: if host_net {
            NamespaceMode::Host
        } else {
            NamespaceMode::Path(PathBuf::from(netns))
        },
        pid: host_or_new(ns.pid),
        ipc: host_or_new(ns.ipc),
        uts: if host_net {
            NamespaceMode::Host
        } else {
            NamespaceMode::New
        },
        cgroup: NamespaceMode::New,
    };
    let annotations = HashMap::from([
        (ANN_TYPE.to_string(), "sandbox".to_string()),
        (ANN_SANDBOX_ID.to_string(), id.to_string()),
        (ANN_SANDBOX_NAME.to_string(), md.name.clone()),
        (ANN_SANDBOX_NAMESPACE.to_string(), md.namespace.clone()),
        (ANN_SANDBOX_UID.to_string(), md.uid.clone()),
        (ANN_LOG_DIR.to_string(), config.log_directory.clone()),
    ]);
    Ok(SpecOptions {
        user: user(sc.run_as_user.as_ref(), "", sc.run_as_group.as_ref()),
        additional_gids: gids(&sc.supplemental_groups)?,
        hostname: (!host_net && !config.hostname.is_empty()).then(|| config.hostname.clone()),
        read_only_rootfs: sc.readonly_rootfs,
        privileged: sc.privileged,
        seccomp: if sc.privileged {
            Seccomp::Unconfined
        } else {
            seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?
        },
        cpu_shares: Some(2),
        oom_score_adj: Some(oom_score(SANDBOX_OOM_SCORE_ADJ)),
        cgroups_path: cgroups_path(&linux.cgroup_parent, id),
        namespaces,
        sysctls: linux.sysctls.clone(),
        annotations,
        ..Default::default()
    })
}

/// A host path bind mount of the CRI request; missing host directories are made, as
/// containerd does.
fn bind(m: &pb::Mount) -> Result<Mount> {
    if m.container_path.is_empty() || !m.container_path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "mount container path {:?} must be absolute",
            m.container_path
        )));
    }
    let src = Path::new(&m.host_path);
    if !src.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "mount host path {:?} must be absolute",
            m.host_path
        )));
    }
    if !src.exists() {
        std::fs::create_dir_all(src)
            .map_err(|e| Error::Internal(format!("create host path {}: {e}", src.display())))?;
    }
    let propagation = match pb::MountPropagation::try_from(m.propagation) {
        Ok(pb::MountPropagation::PropagationBidirectional) => "rshared",
        Ok(pb::MountPropagation::PropagationHostToContainer) => "rslave",
        _ => "rprivate",
    };
    Ok(bind_mount(
        &m.container_path,
        src,
        &["rbind", propagation, if m.readonly { "ro" } else { "rw" }],
    ))
}

fn bind_mount(dest: &str, src: &Path, options: &[&str]) -> Mount {
    let mut mount = Mount::default();
    mount.set_destination(PathBuf::from(dest));
    mount.set_typ(Some("bind".into()));
    mount.set_source(Some(src.to_path_buf()));
    mount.set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    mount
}

/// What a pod's container joins: the pause task's pid for /proc/<pid>/ns/*.
pub struct PodContext<'a> {
    pub sandbox: &'a Sandbox,
    pub pause_pid: u32,
    pub image_name: &'a str,
}

/// A container's options.
#[allow(deprecated)] // seccomp_profile_path: older kubelets still send it
pub fn container_options(
    id: &str,
    c: &pb::ContainerConfig,
    pod: &PodContext<'_>,
) -> Result<SpecOptions> {
    let sandbox = pod.sandbox;
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let res = linux.resources.clone().unwrap_or_default();
    let pod_ns = namespace_options(sandbox.config.linux.as_ref());
    let ns = sc.namespace_options.clone().unwrap_or(pod_ns.clone());
    let proc_ns = |kind: &str| {
        NamespaceMode::Path(PathBuf::from(format!("/proc/{}/ns/{kind}", pod.pause_pid)))
    };
    let host_net = sandbox.host_network();
    if pod.pause_pid == 0 {
        return Err(Error::FailedPrecondition(format!(
            "sandbox {} has no running pause process",
            sandbox.id()
        )));
    }
    let namespaces = Namespaces {
        network: if host_net {
            NamespaceMode::Host
        } else {
            NamespaceMode::Path(PathBuf::from(&sandbox.meta.netns))
        },
        pid: match mode(ns.pid) {
            pb::NamespaceMode::Node => NamespaceMode::Host,
            pb::NamespaceMode::Pod => proc_ns("pid"),
            pb::NamespaceMode::Target => {
                return Err(Error::InvalidArgument(
                    "pid namespace mode TARGET is not supported".into(),
                ))
            }
            pb::NamespaceMode::Container => NamespaceMode::New,
        },
        ipc: if mode(pod_ns.ipc) == pb::NamespaceMode::Node {
            NamespaceMode::Host
        } else {
            proc_ns("ipc")
        },
        uts: if host_net {
            NamespaceMode::Host
        } else {
            proc_ns("uts")
        },
        cgroup: NamespaceMode::New,
    };
    let mut mounts = Vec::new();
    for m in &c.mounts {
        mounts.push(bind(m)?);
    }
    let etc = Path::new(&sandbox.meta.etc_dir);
    for name in ["hosts", "hostname", "resolv.conf"] {
        let dest = format!("/etc/{name}");
        if c.mounts.iter().any(|m| m.container_path == dest) {
            continue;
        }
        let ro = if sc.readonly_rootfs { "ro" } else { "rw" };
        mounts.push(bind_mount(
            &dest,
            &etc.join(name),
            &["rbind", "rprivate", ro],
        ));
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    let md = sandbox.metadata();
    let annotations = HashMap::from([
        (ANN_TYPE.to_string(), "container".to_string()),
        (ANN_SANDBOX_ID.to_string(), sandbox.id().to_string()),
        (ANN_SANDBOX_NAME.to_string(), md.name.clone()),
        (ANN_SANDBOX_NAMESPACE.to_string(), md.namespace.clone()),
        (ANN_SANDBOX_UID.to_string(), md.uid.clone()),
        (
            ANN_CONTAINER_NAME.to_string(),
            c.metadata.clone().unwrap_or_default().name,
        ),
        (ANN_IMAGE_NAME.to_string(), pod.image_name.to_string()),
    ]);
    let mut env: Vec<String> = c
        .envs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    if !host_net
        && !sandbox.config.hostname.is_empty()
        && !env.iter().any(|e| e.starts_with("HOSTNAME="))
    {
        env.push(format!("HOSTNAME={}", sandbox.config.hostname));
    }
    let pos = |v: i64| (v > 0).then_some(v);
    let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
    let parent = sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    let user = user(
        sc.run_as_user.as_ref(),
        &sc.run_as_username,
        sc.run_as_group.as_ref(),
    );
    if user.as_deref() == Some("") {
        return Err(Error::InvalidArgument(
            "user group is specified without user".into(),
        ));
    }
    Ok(SpecOptions {
        entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
        args: (!c.args.is_empty()).then(|| c.args.clone()),
        env,
        working_dir: (!c.working_dir.is_empty()).then(|| c.working_dir.clone()),
        user,
        additional_gids: gids(&sc.supplemental_groups)?,
        terminal: c.tty,
        read_only_rootfs: sc.readonly_rootfs,
        privileged: sc.privileged,
        cap_add: caps.add_capabilities.clone(),
        cap_drop: caps.drop_capabilities.clone(),
        no_new_privileges: sc.no_new_privs,
        seccomp: if sc.privileged {
            Seccomp::Unconfined
        } else {
            seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?
        },
        mounts,
        memory_limit: pos(res.memory_limit_in_bytes),
        memory_swap: pos(res.memory_swap_limit_in_bytes)
            .filter(|s| res.memory_limit_in_bytes > 0 && *s >= res.memory_limit_in_bytes),
        cpu_quota: pos(res.cpu_quota),
        cpu_period: pos(res.cpu_period).map(|p| p as u64),
        cpu_shares: pos(res.cpu_shares).map(|s| s as u64),
        cpuset_cpus: (!res.cpuset_cpus.is_empty()).then(|| res.cpuset_cpus.clone()),
        oom_score_adj: (res.oom_score_adj != 0).then(|| oom_score(res.oom_score_adj as i32)),
        cgroups_path: cgroups_path(&parent, id),
        namespaces,
        annotations,
        masked_paths: list(&sc.masked_paths),
        readonly_paths: list(&sc.readonly_paths),
        devices: c
            .devices
            .iter()
            .map(|d| DeviceMapping {
                host_path: PathBuf::from(&d.host_path),
                container_path: d.container_path.clone(),
                permissions: d.permissions.clone(),
            })
            .collect(),
        apparmor_profile: None,
        ..Default::default()
    })
}

/// The v1 controllers libcontainer makes a container's cgroup in.
const V1_CONTROLLERS: [&str; 12] = [
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
];

/// A container joining the pod's PID namespace (shareProcessNamespace) on a cgroup v1 host:
/// libcontainer 0.7 resolves a `cgroup` mount by looking the container's parent process up by
/// its PID in the joined namespace, which fails (or finds another process). The mount is
/// spelled out instead, as runc makes it: a tmpfs with the container's own cgroup of each
/// controller bound read-only beneath (libcontainer makes those cgroups before the mounts).
pub fn adjust_for_pod_pid(spec: &mut oci_spec::runtime::Spec, opts: &SpecOptions) {
    let joins_pid = matches!(opts.namespaces.pid, NamespaceMode::Path(_));
    let v1 = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if !(joins_pid && v1) {
        return;
    }
    let cgroup = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().clone())
        .map(|p| p.to_string_lossy().trim_start_matches('/').to_string());
    let Some(mounts) = spec.mounts().clone() else {
        return;
    };
    let mut kept = Vec::with_capacity(mounts.len() + V1_CONTROLLERS.len());
    for m in mounts {
        if m.typ().as_deref() != Some("cgroup") {
            kept.push(m);
            continue;
        }
        let Some(cgroup) = cgroup
            .as_deref()
            .filter(|c| !c.split('/').any(|x| x == ".."))
        else {
            continue;
        };
        let dest = m.destination().clone();
        let mut tmpfs = Mount::default();
        tmpfs.set_destination(dest.clone());
        tmpfs.set_typ(Some("tmpfs".into()));
        tmpfs.set_source(Some(PathBuf::from("tmpfs")));
        tmpfs.set_options(Some(
            ["nosuid", "noexec", "nodev", "mode=755"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        ));
        kept.push(tmpfs);
        for name in v1_hierarchies(Path::new("/sys/fs/cgroup")) {
            let src = Path::new("/sys/fs/cgroup").join(&name).join(cgroup);
            let dest = dest.join(&name);
            kept.push(bind_mount(
                &dest.to_string_lossy(),
                &src,
                &["rbind", "ro", "nosuid", "noexec", "nodev"],
            ));
        }
    }
    spec.set_mounts(Some(kept));
}

/// The mounted v1 hierarchies under `root` whose controllers libcontainer manages (a directory
/// such as `cpu,cpuacct` counts; its symlinked aliases do not).
fn v1_hierarchies(root: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut out: Vec<String> = rd
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.split(',').all(|c| V1_CONTROLLERS.contains(&c)))
        .collect();
    out.sort();
    out
}

/// A directory holding the image's `/etc/passwd` and `/etc/group` as the container will see
/// them: the topmost of `layers` (the image's snapshot directories, top first) that has them,
/// for user name resolution before the container's snapshot exists.
pub fn passwd_root(layers: &[PathBuf]) -> Option<PathBuf> {
    layers
        .iter()
        .find(|d| d.join("etc/passwd").exists())
        .cloned()
}

/// The resources of UpdateContainerResources as the OCI `LinuxResources` JSON shims take.
pub fn linux_resources(r: &pb::LinuxContainerResources) -> serde_json::Value {
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), r.cpu_shares.into());
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), r.cpu_quota.into());
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), r.cpu_period.into());
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), r.cpuset_cpus.clone().into());
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), r.cpuset_mems.clone().into());
    }
    let mut out = serde_json::Map::new();
    if !cpu.is_empty() {
        out.insert("cpu".into(), cpu.into());
    }
    if r.memory_limit_in_bytes > 0 {
        let mut mem = serde_json::Map::new();
        mem.insert("limit".into(), r.memory_limit_in_bytes.into());
        if r.memory_swap_limit_in_bytes > 0 {
            mem.insert("swap".into(), r.memory_swap_limit_in_bytes.into());
        }
        out.insert("memory".into(), mem.into());
    }
    if !r.unified.is_empty() {
        out.insert(
            "unified".into(),
            serde_json::to_value(&r.unified).unwrap_or_default(),
        );
    }
    out.into()
}
