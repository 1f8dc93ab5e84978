//! CRI configs → core's [`SpecOptions`]: the pause container of a sandbox and the containers
//! of a pod, in the spirit of containerd's CRI plugin (its annotations, the pod's namespaces
//! joined by path, the pod's /etc files bind-mounted, cgroups under the pod's parent).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;
use wharf_api::cri as pb;
use wharf_core::spec::{DeviceMapping, NamespaceMode, Namespaces, Seccomp, SpecOptions};

use crate::cgroup::HostLimits;
use crate::propagation::Need;
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
/// made explicit so OOM kills can be read back from the cgroup). A systemd slice name (what a
/// kubelet using the systemd cgroup driver sends) is refused: as a cgroupfs path it would put
/// the pod outside the kubelet's hierarchy, and its limits would not apply.
fn cgroups_path(parent: &str, id: &str) -> Result<Option<String>> {
    let parent = parent.trim_end_matches('/');
    if !parent.contains('/') && parent.ends_with(".slice") {
        return Err(Error::InvalidArgument(format!(
            "cgroup parent {parent:?} is a systemd slice, but wharf uses the cgroupfs driver: \
             set the kubelet's cgroupDriver to cgroupfs (kubelets from 1.31 on read it from \
             RuntimeConfig)"
        )));
    }
    Ok(Some(if parent.is_empty() {
        format!("/{}/{id}", crate::NAMESPACE)
    } else {
        format!("{parent}/{id}")
    }))
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
    shm: &str,
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
    // The pod's shared /dev/shm; pause only holds it.
    let mounts = if shm.is_empty() {
        Vec::new()
    } else {
        vec![bind_mount("/dev/shm", Path::new(shm), &["rbind", "ro"])]
    };
    Ok(SpecOptions {
        user: user(sc.run_as_user.as_ref(), "", sc.run_as_group.as_ref()),
        additional_gids: gids(&sc.supplemental_groups)?,
        hostname: (!host_net && !config.hostname.is_empty()).then(|| config.hostname.clone()),
        // Pause writes nothing and gains nothing (containerd's sandbox settings).
        read_only_rootfs: true,
        inherit_rlimits: true,
        no_new_privileges: true,
        mounts,
        privileged: sc.privileged,
        seccomp: if sc.privileged {
            Seccomp::Unconfined
        } else {
            seccomp(sc.seccomp.as_ref(), &sc.seccomp_profile_path)?
        },
        cpu_shares: Some(2),
        oom_score_adj: Some(oom_score(SANDBOX_OOM_SCORE_ADJ)),
        cgroups_path: cgroups_path(&linux.cgroup_parent, id)?,
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

pub(crate) fn bind_mount(dest: &str, src: &Path, options: &[&str]) -> Mount {
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

/// Sets the cgroup limits of `opts` from CRI's resources, as containerd does: a memory limit
/// also caps memory+swap (no swapping past the limit) where the host can limit swap;
/// hugepage sizes must be the host's, unified (v2) files need a v2 host.
fn set_resources(
    opts: &mut SpecOptions,
    res: &pb::LinuxContainerResources,
    host: &HostLimits,
) -> Result<()> {
    let pos = |v: i64| (v > 0).then_some(v);
    let (limit, swap) = (res.memory_limit_in_bytes, res.memory_swap_limit_in_bytes);
    opts.memory_limit = pos(limit);
    opts.memory_swap = match (host.swap, swap, limit) {
        (false, _, _) => None,
        (true, 0, l) => pos(l),
        (true, s, _) => Some(s),
    };
    // -1 lifts a quota (UpdateContainerResources), as containerd passes it.
    opts.cpu_quota = (res.cpu_quota != 0).then_some(res.cpu_quota);
    opts.cpu_period = pos(res.cpu_period).map(|p| p as u64);
    opts.cpu_shares = pos(res.cpu_shares).map(|s| s as u64);
    opts.cpuset_cpus = (!res.cpuset_cpus.is_empty()).then(|| res.cpuset_cpus.clone());
    opts.cpuset_mems = (!res.cpuset_mems.is_empty()).then(|| res.cpuset_mems.clone());
    opts.hugepage_limits = Vec::with_capacity(res.hugepage_limits.len());
    for h in &res.hugepage_limits {
        if !host.hugepage_sizes.contains(&h.page_size) {
            return Err(Error::InvalidArgument(format!(
                "hugepage size {:?} is not one this host has ({})",
                h.page_size,
                host.hugepage_sizes.join(", ")
            )));
        }
        opts.hugepage_limits.push((h.page_size.clone(), h.limit));
    }
    if !res.unified.is_empty() && !host.v2 {
        return Err(Error::InvalidArgument(
            "unified (cgroup v2) resources cannot be set on a cgroup v1 host".into(),
        ));
    }
    opts.unified = res.unified.clone();
    Ok(())
}

/// A container's options.
#[allow(deprecated)] // seccomp_profile_path: older kubelets still send it
pub fn container_options(
    id: &str,
    c: &pb::ContainerConfig,
    pod: &PodContext<'_>,
    host: &HostLimits,
) -> Result<SpecOptions> {
    let sandbox = pod.sandbox;
    let linux = c.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let res = linux.resources.clone().unwrap_or_default();
    let pod_privileged = sandbox
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|s| s.privileged);
    if sc.privileged && !pod_privileged {
        return Err(Error::InvalidArgument(
            "no privileged container allowed in sandbox: the pod is not privileged".into(),
        ));
    }
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
    let needs: Vec<Need> = c.mounts.iter().map(Need::of).collect();
    if needs.iter().any(|n| *n != Need::None) {
        let info = wharf_core::mount::mountinfo()
            .map_err(|e| Error::Internal(format!("read /proc/self/mountinfo: {e}")))?;
        for (m, need) in c.mounts.iter().zip(&needs) {
            crate::propagation::check(&info, Path::new(&m.host_path), *need)?;
        }
    }
    if !sandbox.meta.shm.is_empty() && !c.mounts.iter().any(|m| m.container_path == "/dev/shm") {
        mounts.push(bind_mount(
            "/dev/shm",
            Path::new(&sandbox.meta.shm),
            &["rbind", "rprivate", "rw"],
        ));
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
    let mut opts = SpecOptions {
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
        rootfs_propagation: Need::rootfs(needs.into_iter()),
        // The runtime's limits (wharfd's LimitNOFILE), not 1024 open files: containerd's CRI
        // sets none either, and pods expect the node's.
        inherit_rlimits: true,
        // Always set, 0 included: left unset, the container would inherit the shim's score.
        oom_score_adj: Some(oom_score(res.oom_score_adj.clamp(-1000, 1000) as i32)),
        cgroups_path: cgroups_path(&parent, id)?,
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
        // AppArmor is the host's business: the caller sets it (crate::apparmor).
        ..Default::default()
    };
    set_resources(&mut opts, &res, host)?;
    Ok(opts)
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

/// The resources of UpdateContainerResources as the OCI `LinuxResources` JSON shims take,
/// checked and defaulted as at creation.
pub fn linux_resources(
    r: &pb::LinuxContainerResources,
    host: &HostLimits,
) -> Result<serde_json::Value> {
    let mut opts = SpecOptions::default();
    set_resources(&mut opts, r, host)?;
    let res = wharf_core::spec::resources(&opts)?;
    serde_json::to_value(res).map_err(|e| Error::Internal(format!("resources: {e}")))
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use wharf_core::metadata::Container;

    use super::*;
    use crate::store::SandboxMeta;

    const MI: i64 = 1 << 20;

    fn host_v1() -> HostLimits {
        HostLimits {
            v2: false,
            swap: true,
            hugepage_sizes: vec!["1GB".into(), "2MB".into()],
        }
    }

    fn pod(privileged: bool, host_net: bool) -> Sandbox {
        let mode = if host_net {
            pb::NamespaceMode::Node
        } else {
            pb::NamespaceMode::Pod
        };
        Sandbox {
            record: Container {
                id: "pod1".into(),
                labels: Default::default(),
                image: String::new(),
                runtime_name: String::new(),
                runtime_options: None,
                spec: None,
                snapshotter: String::new(),
                snapshot_key: String::new(),
                extensions: Default::default(),
                sandbox: String::new(),
                created_at: SystemTime::UNIX_EPOCH,
                updated_at: SystemTime::UNIX_EPOCH,
            },
            meta: SandboxMeta {
                netns: "/run/wharf/netns/pod1".into(),
                etc_dir: "/run/wharf/pods/pod1".into(),
                shm: "/run/wharf/pods/pod1/shm".into(),
                ..Default::default()
            },
            config: pb::PodSandboxConfig {
                metadata: Some(pb::PodSandboxMetadata {
                    name: "web".into(),
                    namespace: "default".into(),
                    uid: "u1".into(),
                    attempt: 0,
                }),
                hostname: "web-0".into(),
                linux: Some(pb::LinuxPodSandboxConfig {
                    cgroup_parent: "/kubepods/pod-u1/".into(),
                    security_context: Some(pb::LinuxSandboxSecurityContext {
                        privileged,
                        namespace_options: Some(pb::NamespaceOption {
                            network: mode as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        }
    }

    fn config(
        res: pb::LinuxContainerResources,
        sc: pb::LinuxContainerSecurityContext,
    ) -> pb::ContainerConfig {
        pb::ContainerConfig {
            metadata: Some(pb::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            command: vec!["sleep".into()],
            args: vec!["60".into()],
            linux: Some(pb::LinuxContainerConfig {
                resources: Some(res),
                security_context: Some(sc),
            }),
            ..Default::default()
        }
    }

    fn options(
        sandbox: &Sandbox,
        c: &pb::ContainerConfig,
        host: &HostLimits,
    ) -> Result<SpecOptions> {
        container_options(
            "c1",
            c,
            &PodContext {
                sandbox,
                pause_pid: 4242,
                image_name: "busybox:latest",
            },
            host,
        )
    }

    fn invalid(r: Result<SpecOptions>, what: &str) {
        match r {
            Err(Error::InvalidArgument(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("want InvalidArgument about {what:?}, got {other:?}"),
        }
    }

    #[test]
    fn resources_as_containerd_sets_them() {
        let sandbox = pod(false, false);
        let res = pb::LinuxContainerResources {
            memory_limit_in_bytes: 64 * MI,
            cpu_shares: 512,
            cpu_quota: 50_000,
            cpu_period: 100_000,
            cpuset_cpus: "0".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![
                pb::HugepageLimit {
                    page_size: "2MB".into(),
                    limit: 4 << 20,
                },
                pb::HugepageLimit {
                    page_size: "1GB".into(),
                    limit: 0,
                },
            ],
            ..Default::default()
        };
        let c = config(res.clone(), Default::default());
        let o = options(&sandbox, &c, &host_v1()).unwrap();
        assert_eq!(o.memory_limit, Some(64 * MI));
        // No swapping past the memory limit where swap can be limited.
        assert_eq!(o.memory_swap, Some(64 * MI));
        assert_eq!(
            (o.cpu_shares, o.cpu_quota, o.cpu_period),
            (Some(512), Some(50_000), Some(100_000))
        );
        assert_eq!(
            (o.cpuset_cpus.as_deref(), o.cpuset_mems.as_deref()),
            (Some("0"), Some("0"))
        );
        assert_eq!(
            o.hugepage_limits,
            [("2MB".to_string(), 4 << 20), ("1GB".to_string(), 0)]
        );
        // oom_score_adj 0 is a score, not "unset": never below ours, never inherited.
        let ours: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(o.oom_score_adj, Some(ours.max(0)));
        assert_eq!(o.cgroups_path.as_deref(), Some("/kubepods/pod-u1/c1"));

        // A host without swap accounting gets no swap limit; an explicit one is kept.
        let no_swap = HostLimits {
            swap: false,
            ..host_v1()
        };
        assert_eq!(options(&sandbox, &c, &no_swap).unwrap().memory_swap, None);
        for (swap, want) in [(-1, Some(-1)), (128 * MI, Some(128 * MI))] {
            let c = config(
                pb::LinuxContainerResources {
                    memory_swap_limit_in_bytes: swap,
                    ..res.clone()
                },
                Default::default(),
            );
            assert_eq!(options(&sandbox, &c, &host_v1()).unwrap().memory_swap, want);
        }

        // The update path takes the same values, as the shim's OCI JSON.
        let json = linux_resources(&res, &host_v1()).unwrap();
        assert_eq!(json["memory"]["limit"], 64 * MI);
        assert_eq!(json["memory"]["swap"], 64 * MI);
        assert_eq!(json["cpu"]["shares"], 512);
        assert_eq!(json["cpu"]["mems"], "0");
        assert_eq!(json["hugepageLimits"][0]["pageSize"], "2MB");
        assert_eq!(json["hugepageLimits"][0]["limit"], 4 << 20);
        assert!(json.get("devices").is_none() && json.get("pids").is_none());
        let only_cpu = pb::LinuxContainerResources {
            cpu_quota: 20_000,
            ..Default::default()
        };
        let json = linux_resources(&only_cpu, &host_v1()).unwrap();
        assert_eq!(json, serde_json::json!({"cpu": {"quota": 20_000}}));
        let no_quota = pb::LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        let json = linux_resources(&no_quota, &host_v1()).unwrap();
        assert_eq!(json, serde_json::json!({"cpu": {"quota": -1}}));
    }

    #[test]
    fn resources_the_host_cannot_honour_are_refused() {
        let sandbox = pod(false, false);
        let huge = pb::LinuxContainerResources {
            hugepage_limits: vec![pb::HugepageLimit {
                page_size: "16MB".into(),
                limit: 1 << 24,
            }],
            ..Default::default()
        };
        let c = config(huge.clone(), Default::default());
        invalid(
            options(&sandbox, &c, &host_v1()),
            "not one this host has (1GB, 2MB)",
        );
        assert_eq!(
            linux_resources(&huge, &host_v1()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );

        let unified = pb::LinuxContainerResources {
            unified: [("memory.high".to_string(), "64M".to_string())].into(),
            ..Default::default()
        };
        let c = config(unified.clone(), Default::default());
        invalid(options(&sandbox, &c, &host_v1()), "cgroup v1 host");
        let v2 = HostLimits {
            v2: true,
            ..host_v1()
        };
        assert_eq!(
            options(&sandbox, &c, &v2).unwrap().unified["memory.high"],
            "64M"
        );
        let escape = pb::LinuxContainerResources {
            unified: [("../../memory.high".to_string(), "1".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(
            linux_resources(&escape, &v2).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let small_swap = pb::LinuxContainerResources {
            memory_limit_in_bytes: 64 * MI,
            memory_swap_limit_in_bytes: 32 * MI,
            ..Default::default()
        };
        assert_eq!(
            linux_resources(&small_swap, &host_v1()).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn privileged_container_needs_a_privileged_pod() {
        let sc = pb::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        };
        let c = config(Default::default(), sc);
        invalid(
            options(&pod(false, false), &c, &host_v1()),
            "no privileged container allowed in sandbox",
        );
        let o = options(&pod(true, false), &c, &host_v1()).unwrap();
        assert!(o.privileged);
        assert!(matches!(o.seccomp, Seccomp::Unconfined));
    }

    #[test]
    fn a_container_joins_its_pod() {
        let sandbox = pod(false, false);
        let sc = pb::LinuxContainerSecurityContext {
            run_as_user: Some(pb::Int64Value { value: 1000 }),
            run_as_group: Some(pb::Int64Value { value: 3000 }),
            supplemental_groups: vec![4000],
            readonly_rootfs: true,
            no_new_privs: true,
            capabilities: Some(pb::Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["CHOWN".into()],
                ..Default::default()
            }),
            masked_paths: vec!["/proc/kcore".into()],
            ..Default::default()
        };
        let mut c = config(Default::default(), sc);
        c.mounts = vec![pb::Mount {
            container_path: "/etc/hosts".into(),
            host_path: "/etc/hosts".into(),
            readonly: true,
            // (HostToContainer needs a slave or shared host mount: see propagation.rs and the
            // integration test.)
            propagation: pb::MountPropagation::PropagationPrivate as i32,
            ..Default::default()
        }];
        c.envs = vec![pb::KeyValue {
            key: "A".into(),
            value: "b".into(),
        }];
        let o = options(&sandbox, &c, &host_v1()).unwrap();
        assert_eq!(
            o.namespaces.network,
            NamespaceMode::Path("/run/wharf/netns/pod1".into())
        );
        for (got, kind) in [
            (&o.namespaces.pid, "pid"),
            (&o.namespaces.ipc, "ipc"),
            (&o.namespaces.uts, "uts"),
        ] {
            assert_eq!(
                *got,
                NamespaceMode::Path(format!("/proc/4242/ns/{kind}").into())
            );
        }
        assert_eq!(o.user.as_deref(), Some("1000:3000"));
        assert_eq!(o.additional_gids, [4000]);
        assert!(o.read_only_rootfs && o.no_new_privileges && o.inherit_rlimits);
        assert_eq!(
            (o.cap_add.as_slice(), o.cap_drop.as_slice()),
            (&["NET_ADMIN".to_string()][..], &["CHOWN".to_string()][..])
        );
        assert_eq!(
            o.masked_paths.as_deref(),
            Some(&["/proc/kcore".to_string()][..])
        );
        assert_eq!(o.readonly_paths, None);
        assert_eq!(o.rootfs_propagation, None);
        assert_eq!(o.env, ["A=b", "HOSTNAME=web-0"]);
        // The user's /etc/hosts wins; the pod's hostname and resolv.conf are bound read-only
        // like the rootfs; /dev/shm is the pod's.
        let mounts: Vec<(String, Vec<String>)> = o
            .mounts
            .iter()
            .map(|m| {
                (
                    m.destination().to_string_lossy().into_owned(),
                    m.options().clone().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            mounts,
            [
                (
                    "/etc/hosts".to_string(),
                    vec!["rbind".to_string(), "rprivate".into(), "ro".into()]
                ),
                // The pod's shared memory, writable even with a read-only rootfs.
                (
                    "/dev/shm".to_string(),
                    vec!["rbind".to_string(), "rprivate".into(), "rw".into()]
                ),
                (
                    "/etc/hostname".to_string(),
                    vec!["rbind".to_string(), "rprivate".into(), "ro".into()]
                ),
                (
                    "/etc/resolv.conf".to_string(),
                    vec!["rbind".to_string(), "rprivate".into(), "ro".into()]
                ),
            ]
        );
        assert_eq!(o.annotations[ANN_SANDBOX_ID], "pod1");
        assert_eq!(o.annotations[ANN_CONTAINER_NAME], "app");
        assert_eq!(o.annotations[ANN_TYPE], "container");

        // Host networking: the host's net and UTS, no HOSTNAME from the pod.
        let host = pod(false, true);
        let o = options(
            &host,
            &config(Default::default(), Default::default()),
            &host_v1(),
        )
        .unwrap();
        assert_eq!(
            (o.namespaces.network.clone(), o.namespaces.uts.clone()),
            (NamespaceMode::Host, NamespaceMode::Host)
        );
        assert!(o.env.is_empty());
    }

    #[test]
    fn container_requests_that_cannot_be_met_are_refused() {
        let sandbox = pod(false, false);
        for (sc, what) in [
            (
                pb::LinuxContainerSecurityContext {
                    run_as_group: Some(pb::Int64Value { value: 10 }),
                    ..Default::default()
                },
                "without user",
            ),
            (
                pb::LinuxContainerSecurityContext {
                    namespace_options: Some(pb::NamespaceOption {
                        pid: pb::NamespaceMode::Target as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                "TARGET",
            ),
            (
                pb::LinuxContainerSecurityContext {
                    supplemental_groups: vec![-1],
                    ..Default::default()
                },
                "supplemental group",
            ),
        ] {
            let c = config(Default::default(), sc);
            invalid(options(&sandbox, &c, &host_v1()), what);
        }
        let mut relative = config(Default::default(), Default::default());
        relative.mounts = vec![pb::Mount {
            container_path: "data".into(),
            host_path: "/tmp".into(),
            ..Default::default()
        }];
        invalid(options(&sandbox, &relative, &host_v1()), "must be absolute");
        let no_pause = container_options(
            "c1",
            &config(Default::default(), Default::default()),
            &PodContext {
                sandbox: &sandbox,
                pause_pid: 0,
                image_name: "busybox",
            },
            &host_v1(),
        );
        assert!(matches!(no_pause, Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn the_pause_container_holds_the_pod() {
        let sandbox = pod(false, false);
        let o = sandbox_options(
            "pod1",
            &sandbox.config,
            "/run/wharf/netns/pod1",
            "/run/wharf/pods/pod1/shm",
        )
        .unwrap();
        assert_eq!(
            o.namespaces.network,
            NamespaceMode::Path("/run/wharf/netns/pod1".into())
        );
        assert_eq!(
            (
                o.namespaces.pid.clone(),
                o.namespaces.ipc.clone(),
                o.namespaces.uts.clone()
            ),
            (NamespaceMode::New, NamespaceMode::New, NamespaceMode::New)
        );
        assert_eq!(o.hostname.as_deref(), Some("web-0"));
        assert_eq!(o.cpu_shares, Some(2));
        assert!(o.oom_score_adj.is_some_and(|s| s >= SANDBOX_OOM_SCORE_ADJ));
        assert_eq!(o.cgroups_path.as_deref(), Some("/kubepods/pod-u1/pod1"));
        assert_eq!(o.annotations[ANN_TYPE], "sandbox");
        assert_eq!(o.annotations[ANN_SANDBOX_UID], "u1");
        // It holds the pod's shared /dev/shm, read-only, and can neither write nor gain.
        let shm: Vec<_> = o
            .mounts
            .iter()
            .map(|m| {
                (
                    m.destination().clone(),
                    m.source().clone(),
                    m.options().clone(),
                )
            })
            .collect();
        assert_eq!(
            shm,
            [(
                PathBuf::from("/dev/shm"),
                Some(PathBuf::from("/run/wharf/pods/pod1/shm")),
                Some(vec!["rbind".to_string(), "ro".to_string()])
            )]
        );
        assert!(o.read_only_rootfs && o.no_new_privileges);
        assert!(o.inherit_rlimits);

        // A kubelet on the systemd cgroup driver is told what to change.
        let mut slice = sandbox.config.clone();
        if let Some(l) = slice.linux.as_mut() {
            l.cgroup_parent = "kubepods-besteffort-podu1.slice".into();
        }
        match sandbox_options("pod1", &slice, "", "") {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("cgroupDriver"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut root = sandbox.config.clone();
        if let Some(l) = root.linux.as_mut() {
            l.cgroup_parent = String::new();
        }
        let o = sandbox_options("pod1", &root, "", "").unwrap();
        assert_eq!(o.cgroups_path.as_deref(), Some("/k8s.io/pod1"));

        let host = pod(true, true);
        let o = sandbox_options("pod2", &host.config, "", "/dev/shm").unwrap();
        assert_eq!(
            (o.namespaces.network.clone(), o.namespaces.uts.clone()),
            (NamespaceMode::Host, NamespaceMode::Host)
        );
        assert_eq!(o.hostname, None);
        assert!(o.privileged && matches!(o.seccomp, Seccomp::Unconfined));
    }
}
