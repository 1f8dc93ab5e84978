//! `wharf run` and `wharf create`: flags → OCI spec (core's spec module) → snapshot, container
//! record and task, with networking, logs and restarts left to wharfd through labels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use containerd_client::services::v1 as pb;
use wharf_core::labels;
use wharf_core::spec::{self, SpecOptions};

use crate::client::{Client, Explain};
use crate::{attach, containers, images, logs, volumes};

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Run in the background and print the container's name.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable KEY=VALUE (or KEY to take it from this shell).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    #[arg(long)]
    pub env_file: Vec<PathBuf>,
    /// HOST:CONTAINER[:ro|rw] (a bind mount), NAME:CONTAINER[:ro|rw|nocopy] (a named volume,
    /// made on first use) or CONTAINER (an anonymous volume).
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy].
    #[arg(long)]
    pub mount: Vec<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// USER[:GROUP] by name or id.
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(long)]
    pub entrypoint: Option<String>,
    #[arg(long)]
    pub hostname: Option<String>,
    /// Publish a port: [IP:]HOST:CONTAINER[/tcp|udp].
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// bridge (default), host or none.
    #[arg(long, alias = "net", default_value = "bridge")]
    pub network: String,
    #[arg(long)]
    pub dns: Vec<String>,
    /// Extra /etc/hosts entry NAME:IP.
    #[arg(long)]
    pub add_host: Vec<String>,
    /// Memory limit, e.g. 64m, 1g.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPUs, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    #[arg(long)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub read_only: bool,
    #[arg(long)]
    pub cap_add: Vec<String>,
    #[arg(long)]
    pub cap_drop: Vec<String>,
    #[arg(long)]
    pub privileged: bool,
    /// seccomp=unconfined|PROFILE.json, no-new-privileges.
    #[arg(long)]
    pub security_opt: Vec<String>,
    /// no, always, on-failure[:N], unless-stopped.
    #[arg(long, default_value = "no")]
    pub restart: String,
    #[arg(short, long)]
    pub label: Vec<String>,
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull the image: missing (default), always, never.
    #[arg(long, default_value = "missing")]
    pub pull: String,
    /// Runtime (shim) for the container.
    #[arg(long, default_value = "io.containerd.wharf.v2")]
    pub runtime: String,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Where the CLI keeps a container's own files (its log).
pub fn data_dir(root: &Path, ns: &str, id: &str) -> PathBuf {
    root.join(ns).join(id)
}

/// Seconds since the epoch when `pid` started, from /proc (for `Up 3 minutes`).
pub fn process_age(pid: u32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = 100.0; // USER_HZ is 100 on Linux.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some((now - uptime + start_ticks as f64 / hz) as i64)
}

/// Byte sizes as docker takes them: 64m, 1g, 512k, 1024.
pub fn parse_size(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| *n > 0.0)
        .with_context(|| format!("invalid size {s:?}: want e.g. 64m or 1g"))?;
    Ok((n * mult as f64) as i64)
}

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
pub struct Port {
    #[serde(rename = "hostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort")]
    pub container_port: u16,
    pub protocol: String,
    #[serde(rename = "hostIP")]
    pub host_ip: String,
}

/// `-p [IP:]HOST:CONTAINER[/proto]`.
pub fn parse_port(s: &str) -> Result<Port> {
    let bad = || anyhow::anyhow!("invalid -p {s:?}: want [IP:]HOSTPORT:CONTAINERPORT[/tcp|udp]");
    let (spec, proto) = match s.split_once('/') {
        Some((a, p)) if p == "tcp" || p == "udp" => (a, p),
        Some(_) => return Err(bad()),
        None => (s, "tcp"),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c, h] => ("", *h, *c),
        [c, h, ip] => (*ip, *h, *c),
        _ => return Err(bad()),
    };
    let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad);
    if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad());
    }
    Ok(Port {
        host_port: port(host)?,
        container_port: port(ctr)?,
        protocol: proto.to_string(),
        host_ip: ip.to_string(),
    })
}

/// What a `-v` or `--mount` asks for.
#[derive(Debug)]
pub enum MountArg {
    /// A bind mount or a tmpfs, as it goes into the spec.
    Spec(oci_spec::runtime::Mount),
    /// A volume: named, or anonymous (`name` None), made when the container is.
    Volume(VolumeMount),
}

#[derive(Debug, Clone)]
pub struct VolumeMount {
    pub name: Option<String>,
    pub dest: String,
    pub ro: bool,
    /// Do not seed a new (empty) volume with what the image holds at `dest`.
    pub nocopy: bool,
}

/// `-v HOST:CONTAINER[:OPTS]`, `-v NAME:CONTAINER[:OPTS]` or `-v CONTAINER`.
pub fn parse_volume(s: &str) -> Result<MountArg> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [d] => (None, *d, ""),
        [s, d] => (Some(*s), *d, ""),
        [s, d, m] => (Some(*s), *d, *m),
        _ => bail!("invalid -v {s:?}: want HOST:CONTAINER[:ro], NAME:CONTAINER[:ro] or CONTAINER"),
    };
    if !dst.starts_with('/') {
        bail!("invalid -v {s:?}: the container path must be absolute");
    }
    let (mut ro, mut nocopy) = (false, false);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => ro = true,
            "rw" => ro = false,
            "nocopy" => nocopy = true,
            m => bail!("invalid -v {s:?}: option {m:?} is not ro, rw or nocopy"),
        }
    }
    match src {
        Some(src) if src.starts_with('/') => {
            if nocopy {
                bail!("invalid -v {s:?}: nocopy is for volumes, not host paths");
            }
            Ok(MountArg::Spec(bind(src, dst, ro)?))
        }
        Some(name) if crate::volumes::valid_name(name) => Ok(MountArg::Volume(VolumeMount {
            name: Some(name.to_string()),
            dest: dst.to_string(),
            ro,
            nocopy,
        })),
        Some(other) => bail!("invalid -v {s:?}: {other:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"),
        None => Ok(MountArg::Volume(VolumeMount {
            name: None,
            dest: dst.to_string(),
            ro,
            nocopy,
        })),
    }
}

fn bind(src: &str, dst: &str, ro: bool) -> Result<oci_spec::runtime::Mount> {
    let mut opts = vec!["rbind".to_string(), "rprivate".to_string()];
    opts.push(if ro { "ro" } else { "rw" }.to_string());
    Ok(oci_spec::runtime::MountBuilder::default()
        .destination(dst)
        .source(src)
        .typ("bind")
        .options(opts)
        .build()?)
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy]`.
pub fn parse_mount(s: &str) -> Result<MountArg> {
    let mut kind = "bind";
    let (mut src, mut dst, mut ro, mut nocopy) = (None, None, false, false);
    let flag = |v: &str| v.is_empty() || v == "true" || v == "1";
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "type" => {
                kind = match v {
                    "tmpfs" => "tmpfs",
                    "bind" => "bind",
                    "volume" => "volume",
                    _ => bail!("--mount {s:?}: type {v:?} is not bind, volume or tmpfs"),
                }
            }
            "source" | "src" => src = Some(v),
            "target" | "destination" | "dst" => dst = Some(v),
            "readonly" | "ro" => ro = flag(v),
            "volume-nocopy" => nocopy = flag(v),
            _ => bail!("--mount {s:?}: unknown option {k:?}"),
        }
    }
    let dst = dst
        .filter(|d| d.starts_with('/'))
        .with_context(|| format!("--mount {s:?}: target must be an absolute path"))?;
    if kind == "volume" {
        let name = src.filter(|n| !n.is_empty());
        if let Some(n) = name.filter(|n| !crate::volumes::valid_name(n)) {
            bail!("--mount {s:?}: invalid volume name {n:?}");
        }
        return Ok(MountArg::Volume(VolumeMount {
            name: name.map(str::to_string),
            dest: dst.to_string(),
            ro,
            nocopy,
        }));
    }
    if nocopy {
        bail!("--mount {s:?}: volume-nocopy is for type=volume");
    }
    if kind == "tmpfs" {
        let mut opts = vec!["nosuid".to_string(), "nodev".to_string()];
        if ro {
            opts.push("ro".into());
        }
        return Ok(MountArg::Spec(
            oci_spec::runtime::MountBuilder::default()
                .destination(dst)
                .source("tmpfs")
                .typ("tmpfs")
                .options(opts)
                .build()?,
        ));
    }
    let src = src
        .filter(|s| s.starts_with('/'))
        .with_context(|| format!("--mount {s:?}: source must be an absolute host path"))?;
    Ok(MountArg::Spec(bind(src, dst, ro)?))
}

/// `--restart` values, checked before anything is created.
pub fn parse_restart(s: &str) -> Result<Option<String>> {
    match s {
        "" | "no" => Ok(None),
        "always" | "unless-stopped" | "on-failure" => Ok(Some(s.to_string())),
        _ => match s.strip_prefix("on-failure:") {
            Some(n) if n.parse::<u32>().is_ok() => Ok(Some(s.to_string())),
            _ => {
                bail!("invalid --restart {s:?}: want no, always, on-failure[:N] or unless-stopped")
            }
        },
    }
}

fn env_list(a: &RunArgs) -> Result<Vec<String>> {
    let mut env = Vec::new();
    for f in &a.env_file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("--env-file {}", f.display()))?;
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            env.push(line.to_string());
        }
    }
    env.extend(a.env.iter().cloned());
    Ok(env
        .into_iter()
        .filter_map(|e| {
            if e.contains('=') {
                Some(e)
            } else {
                std::env::var(&e).ok().map(|v| format!("{e}={v}"))
            }
        })
        .collect())
}

fn random_name() -> String {
    const A: [&str; 12] = [
        "brave", "calm", "eager", "fond", "happy", "jolly", "keen", "lucid", "nifty", "quiet",
        "swift", "witty",
    ];
    const N: [&str; 12] = [
        "albatross",
        "barge",
        "buoy",
        "cutter",
        "dinghy",
        "ferry",
        "galleon",
        "harbor",
        "keel",
        "lighthouse",
        "pier",
        "tugboat",
    ];
    let r: u32 = rand::random();
    format!(
        "{}_{}_{:04x}",
        A[(r % 12) as usize],
        N[((r / 12) % 12) as usize],
        r >> 16
    )
}

/// Everything validated from the flags before the daemon is asked to create anything.
struct Plan {
    id: String,
    opts: SpecOptions,
    labels: HashMap<String, String>,
    /// Volumes to make (or find) and mount when the container is created.
    volumes: Vec<VolumeMount>,
}

fn plan(a: &RunArgs) -> Result<Plan> {
    let id = match &a.name {
        Some(n) => {
            wharf_core::identifiers::validate(n)
                .map_err(|e| anyhow::anyhow!("invalid --name {n:?}: {e}"))?;
            n.clone()
        }
        None => random_name(),
    };
    let ports = a
        .publish
        .iter()
        .map(|p| parse_port(p))
        .collect::<Result<Vec<_>>>()?;
    let (mut mounts, mut volumes) = (Vec::new(), Vec::new());
    let args = a.volume.iter().map(|v| parse_volume(v));
    for m in args.chain(a.mount.iter().map(|m| parse_mount(m))) {
        match m? {
            MountArg::Spec(m) => mounts.push(m),
            MountArg::Volume(v) => volumes.push(v),
        }
    }
    let restart = parse_restart(&a.restart)?;
    if restart.is_some() && a.rm {
        bail!("--restart and --rm cannot be used together");
    }

    let network = match a.network.as_str() {
        "bridge" | "host" | "none" => a.network.clone(),
        n => bail!("invalid --network {n:?}: want bridge, host or none"),
    };
    if !ports.is_empty() && network != "bridge" {
        bail!("-p needs --network bridge (with {network}, the container already uses the host's ports or none)");
    }
    let mut add_hosts = Vec::new();
    for h in &a.add_host {
        match h.split_once(':') {
            Some((n, ip)) if !n.is_empty() && ip.parse::<std::net::IpAddr>().is_ok() => {
                add_hosts.push((n.to_string(), ip.to_string()))
            }
            _ => bail!("invalid --add-host {h:?}: want NAME:IP"),
        }
    }
    for d in &a.dns {
        if d.parse::<std::net::IpAddr>().is_err() {
            bail!("invalid --dns {d:?}: want an IP address");
        }
    }
    let mut opts = SpecOptions {
        env: env_list(a)?,
        working_dir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: Some(
            a.hostname
                .clone()
                .unwrap_or_else(|| id.chars().take(63).collect()),
        ),
        terminal: a.tty,
        read_only_rootfs: a.read_only,
        privileged: a.privileged,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        mounts,
        memory_limit: a.memory.as_deref().map(parse_size).transpose()?,
        pids_limit: a.pids_limit,
        ..Default::default()
    };
    if !a.command.is_empty() {
        opts.args = Some(a.command.clone());
    }
    if let Some(e) = &a.entrypoint {
        opts.entrypoint = Some(if e.is_empty() {
            vec![]
        } else {
            vec![e.clone()]
        });
        if a.command.is_empty() {
            // docker: --entrypoint resets the image's Cmd.
            opts.args = Some(vec![]);
        }
    }
    if let Some(cpus) = a.cpus {
        if cpus <= 0.0 {
            bail!("invalid --cpus {cpus}: must be positive");
        }
        opts.cpu_period = Some(100_000);
        opts.cpu_quota = Some((cpus * 100_000.0) as i64);
    }
    for so in &a.security_opt {
        let (k, v) = so.split_once(['=', ':']).unwrap_or((so.as_str(), ""));
        match k {
            "no-new-privileges" => opts.no_new_privileges = v.is_empty() || v == "true",
            "seccomp" if v == "unconfined" => opts.seccomp = spec::Seccomp::Unconfined,
            "seccomp" if !v.is_empty() => {
                opts.seccomp = spec::Seccomp::from_file(Path::new(v))
                    .map_err(|e| anyhow::anyhow!("--security-opt {so:?}: {e}"))?
            }
            _ => bail!("invalid --security-opt {so:?}: want seccomp=unconfined|PROFILE.json or no-new-privileges"),
        }
    }
    if network == "host" {
        opts.namespaces.network = spec::NamespaceMode::Host;
    }
    let mut labels = HashMap::new();
    for l in &a.label {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        if k.is_empty() {
            bail!("invalid --label {l:?}: want KEY=VALUE");
        }
        labels.insert(k.to_string(), v.to_string());
    }
    labels.insert(labels::NETWORK.into(), network);
    if a.rm && a.detach {
        // Nobody waits for a detached container: wharfd removes it when it exits.
        labels.insert(labels::AUTO_REMOVE.into(), "true".into());
    }
    if !ports.is_empty() {
        labels.insert(labels::PORTS.into(), serde_json::to_string(&ports)?);
    }
    if let Some(h) = &opts.hostname {
        labels.insert(labels::HOSTNAME.into(), h.clone());
    }
    if !add_hosts.is_empty() {
        labels.insert(
            labels::EXTRA_HOSTS.into(),
            serde_json::to_string(&add_hosts)?,
        );
    }
    if !a.dns.is_empty() {
        labels.insert(labels::DNS.into(), serde_json::to_string(&a.dns)?);
    }
    if let Some(r) = restart {
        // The desired state becomes `running` once the container is started.
        labels.insert(labels::RESTART_POLICY.into(), r);
    }
    Ok(Plan {
        id,
        opts,
        labels,
        volumes,
    })
}

/// Checks the flags alone (no daemon needed).
pub fn validate(a: &RunArgs) -> Result<()> {
    plan(a).map(|_| ())
}

/// Undoes a half-made container: record, snapshot, lease.
struct Undo<'a> {
    c: &'a Client,
    snapshot: Option<(String, String)>,
    container: Option<String>,
    lease: Option<String>,
    /// Anonymous volumes made for the container.
    volumes: Vec<String>,
    data_root: &'a Path,
}

impl Undo<'_> {
    async fn run(self) {
        let c = self.c;
        let store = volumes::Store::new(self.data_root, &c.ns);
        for v in &self.volumes {
            let _ = store.remove(v);
        }
        if let Some(id) = self.container {
            let _ = c
                .containers()
                .delete(c.req(pb::DeleteContainerRequest { id }))
                .await;
        }
        if let Some((snapshotter, key)) = self.snapshot {
            let _ = c
                .snapshots()
                .remove(c.req(pb::snapshots::RemoveSnapshotRequest { snapshotter, key }))
                .await;
        }
        if let Some(id) = self.lease {
            let _ = c
                .leases()
                .delete(c.req(pb::DeleteRequest { id, sync: false }))
                .await;
        }
    }
}

/// Creates the container (snapshot + record); returns its id.
pub async fn create(c: &Client, a: &RunArgs, data_root: &Path) -> Result<String> {
    let mut p = plan(a)?;
    let image = images::ensure(c, &a.image, &a.pull, a.platform.as_deref()).await?;
    let resolved = images::resolve(c, &image).await?;
    let exists = c
        .containers()
        .get(c.req(pb::GetContainerRequest { id: p.id.clone() }))
        .await
        .is_ok();
    if exists {
        bail!("the name {:?} is already in use by a container (remove it with `wharf rm {}`, or pick another --name)", p.id, p.id);
    }
    // The spec first: bad flags or a missing user must fail before anything exists.
    let snapshotter = "overlayfs".to_string();
    let mut undo = Undo {
        c,
        snapshot: None,
        container: None,
        lease: None,
        volumes: Vec::new(),
        data_root,
    };
    let result = async {
        let lease = c
            .leases()
            .create(c.req(pb::CreateRequest {
                id: format!("wharf-run-{}", p.id),
                labels: HashMap::from([(
                    "containerd.io/gc.expire".to_string(),
                    (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
                )]),
            }))
            .await
            .explain(c, "")?
            .lease
            .context("daemon returned no lease")?;
        undo.lease = Some(lease.id.clone());
        let mut cl = c.clone();
        cl.lease = Some(lease.id.clone());
        let mounts = cl
            .snapshots()
            .prepare(cl.req(pb::snapshots::PrepareSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: p.id.clone(),
                parent: resolved.chain_id.clone(),
                labels: HashMap::new(),
            }))
            .await
            .explain(c, "the image is not unpacked: pull it again")?
            .mounts;
        undo.snapshot = Some((snapshotter.clone(), p.id.clone()));
        let generated = {
            let needs_rootfs = user_needs_lookup(p.opts.user.as_deref(), &resolved.config);
            let core_mounts: Vec<wharf_core::snapshots::Mount> = mounts
                .iter()
                .map(|m| wharf_core::snapshots::Mount {
                    kind: m.r#type.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                })
                .collect();
            let wanted = volumes_for(&p, &resolved.config)?;
            let tmp = if needs_rootfs || wanted.iter().any(|v| !v.nocopy) {
                let mut ro = core_mounts.clone();
                for m in &mut ro {
                    m.options.retain(|o| o != "rw");
                    m.options.push("ro".into());
                }
                Some(wharf_core::mount::TempMount::new(
                    &ro,
                    &data_root.join(".mnt"),
                )?)
            } else {
                None
            };
            let store = volumes::Store::new(data_root, &c.ns);
            let image_root = match &tmp {
                Some(t) => Some(
                    wharf_core::diff::safepath::Root::open(t.path())
                        .map_err(|e| anyhow::anyhow!("{e}"))?,
                ),
                None => None,
            };
            let (mut names, mut anonymous) = (Vec::new(), Vec::new());
            for v in &wanted {
                let name = match &v.name {
                    Some(n) => n.clone(),
                    None => volumes::anonymous_name(),
                };
                let vol = store.create(&name, Default::default(), v.name.is_none())?;
                if v.name.is_none() {
                    undo.volumes.push(name.clone());
                    anonymous.push(name.clone());
                }
                if let (false, Some(root)) = (v.nocopy, &image_root) {
                    // Docker's copy-up: an empty volume gets what the image holds there.
                    wharf_core::volume::seed(root, &v.dest, &vol.mountpoint)
                        .map_err(|e| anyhow::anyhow!("volume {name}: {e}"))?;
                }
                p.opts
                    .mounts
                    .push(bind(&vol.mountpoint.display().to_string(), &v.dest, v.ro)?);
                names.push(name);
            }
            if !names.is_empty() {
                p.labels
                    .insert(labels::VOLUMES.into(), serde_json::to_string(&names)?);
            }
            if !anonymous.is_empty() {
                p.labels.insert(
                    labels::ANONYMOUS_VOLUMES.into(),
                    serde_json::to_string(&anonymous)?,
                );
            }
            spec::generate(&resolved.config, tmp.as_ref().map(|t| t.path()), &p.opts)
                .map_err(|e| anyhow::anyhow!("{e}"))?
        };
        let command = generated
            .process()
            .as_ref()
            .and_then(|pr| pr.args().clone())
            .unwrap_or_default()
            .join(" ");
        p.labels.insert(labels::COMMAND.into(), command);
        if !a.interactive && !a.tty {
            let dir = data_dir(data_root, &c.ns, &p.id);
            let uri = format!(
                "file://{}?format=json&max-size={}&max-file=3",
                dir.join(format!("{}-json.log", p.id)).display(),
                10 << 20
            );
            p.labels.insert(labels::LOG_URI.into(), uri.clone());
            if p.labels.contains_key(labels::RESTART_POLICY) {
                p.labels.insert(labels::RESTART_LOGURI.into(), uri);
            }
        }
        let spec_json = serde_json::to_vec(&generated)?;
        cl.containers()
            .create(cl.req(pb::CreateContainerRequest {
                container: Some(pb::Container {
                    id: p.id.clone(),
                    labels: p.labels.clone(),
                    image: image.clone(),
                    runtime: Some(pb::container::Runtime {
                        name: a.runtime.clone(),
                        options: None,
                    }),
                    spec: Some(prost_types::Any {
                        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                        value: spec_json,
                    }),
                    snapshotter: snapshotter.clone(),
                    snapshot_key: p.id.clone(),
                    ..Default::default()
                }),
            }))
            .await
            .explain(c, "")?;
        undo.container = Some(p.id.clone());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    if let Err(e) = result {
        undo.run().await;
        return Err(e);
    }
    // The container record now holds the snapshot; the lease is no longer needed.
    if let Some(id) = undo.lease.take() {
        let _ = c
            .leases()
            .delete(c.req(pb::DeleteRequest { id, sync: false }))
            .await;
    }
    Ok(p.id)
}

/// The volumes the container gets: those of `-v`/`--mount`, and an anonymous one for each
/// path the image declares a volume that no mount covers (as docker makes them).
fn volumes_for(p: &Plan, image: &wharf_core::images::ImageConfig) -> Result<Vec<VolumeMount>> {
    let mut wanted = p.volumes.clone();
    let mut covered: Vec<String> = p
        .opts
        .mounts
        .iter()
        .map(|m| wharf_core::volume::clean(&m.destination().display().to_string()))
        .collect();
    covered.extend(wanted.iter().map(|v| wharf_core::volume::clean(&v.dest)));
    let declared = wharf_core::volume::image_paths(image).map_err(|e| anyhow::anyhow!("{e}"))?;
    for dest in declared {
        if !covered.contains(&dest) {
            wanted.push(VolumeMount {
                name: None,
                dest,
                ro: false,
                nocopy: false,
            });
        }
    }
    Ok(wanted)
}

/// Does resolving the user need the image's /etc/passwd?
fn user_needs_lookup(user: Option<&str>, cfg: &wharf_core::images::ImageConfig) -> bool {
    let image_user = cfg
        .config
        .as_ref()
        .and_then(|c| c.get("User"))
        .and_then(|u| u.as_str())
        .map(str::to_string);
    let u = user.map(str::to_string).or(image_user).unwrap_or_default();
    !u.is_empty() && !u.split(':').all(|p| p.parse::<u32>().is_ok())
}

/// The exit code a failed start maps to, as docker does: 127 command not found, 126 cannot run.
fn start_failure_code(msg: &str) -> u8 {
    let m = msg.to_ascii_lowercase();
    if m.contains("no such file") || m.contains("not found") {
        127
    } else if m.contains("permission denied") || m.contains("exec format") {
        126
    } else {
        125
    }
}

/// An error carrying the exit code wharf should end with.
#[derive(Debug)]
pub struct ExitCode(pub u8, pub String);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}
impl std::error::Error for ExitCode {}

/// `wharf run`: create, start, and (unless -d) stream output and end with the container's code.
pub async fn run(c: &Client, a: &RunArgs, data_root: &Path) -> Result<u8> {
    let id = create(c, a, data_root).await?;
    let ctr = containers::get(c, &id).await?;
    let interactive = a.interactive || a.tty;
    let mut io = if interactive {
        Some(attach::Fifos::new(a.interactive, a.tty)?)
    } else {
        None
    };
    let log = ctr.labels.get(labels::LOG_URI).cloned().unwrap_or_default();
    let (stdin, stdout, stderr) = match &io {
        Some(f) => f.paths(),
        None => (String::new(), log.clone(), log.clone()),
    };
    let created = c
        .tasks()
        .create(c.req(pb::CreateTaskRequest {
            container_id: id.clone(),
            stdin,
            stdout,
            stderr,
            terminal: a.tty,
            ..Default::default()
        }))
        .await
        .explain(c, "");
    if let Err(e) = created {
        let code = start_failure_code(&e.to_string());
        let _ = containers::remove(c, &id, true, true, data_root).await;
        return Err(ExitCode(code, format!("{e:#}")).into());
    }
    let copier = match io.as_mut() {
        Some(f) => Some(f.attach(c, &id, "").await?),
        None => None,
    };
    // Ask for the exit before starting, so a fast process's exit is never missed.
    let mut tasks = c.tasks();
    let wait_req = c.req(pb::WaitRequest {
        container_id: id.clone(),
        exec_id: String::new(),
    });
    let started = c
        .tasks()
        .start(c.req(pb::StartRequest {
            container_id: id.clone(),
            exec_id: String::new(),
        }))
        .await
        .explain(c, "");
    if let Err(e) = started {
        let code = start_failure_code(&e.to_string());
        let _ = containers::remove(c, &id, true, true, data_root).await;
        return Err(ExitCode(code, format!("{e:#}")).into());
    }
    if ctr.labels.contains_key(labels::RESTART_POLICY) {
        containers::set_labels(c, &id, &[(labels::RESTART_STATUS, "running".into())]).await?;
    }
    if a.detach {
        println!("{id}");
        return Ok(0);
    }
    let wait = async move { tasks.wait(wait_req).await };
    let signals = forward_signals(c, &id);
    let status = if let Some(copier) = copier {
        let r = wait.await;
        copier.finish().await;
        r
    } else {
        let path = logs::log_path(&log).context("container has no log file")?;
        let o = logs::Options {
            follow: true,
            tail: None,
            since: None,
            timestamps: false,
        };
        logs::follow_until(&path, &o, wait).await?
    };
    signals.abort();
    let code = match status {
        Ok(r) => r.into_inner().exit_status,
        Err(e) => return Err(c.explain(e, "")),
    };
    if a.rm {
        containers::remove(c, &id, true, true, data_root).await?;
    } else {
        containers::delete_task(c, &id).await?;
    }
    Ok(code.min(255) as u8)
}

/// docker's sig-proxy: SIGINT/SIGTERM to the CLI go to the container.
fn forward_signals(c: &Client, id: &str) -> tokio::task::JoinHandle<()> {
    let c = c.clone();
    let id = id.to_string();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        loop {
            let sig = tokio::select! {
                _ = int.recv() => libc::SIGINT,
                _ = term.recv() => libc::SIGTERM,
            };
            let _ = containers::signal(&c, &id, sig as u32, false).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert!(parse_size("lots").is_err());
        assert_eq!(
            parse_port("18080:8080").unwrap(),
            Port {
                host_port: 18080,
                container_port: 8080,
                protocol: "tcp".into(),
                host_ip: "".into()
            }
        );
        assert_eq!(parse_port("127.0.0.1:53:53/udp").unwrap().protocol, "udp");
        for bad in ["8080", "a:b", "1:2/sctp", "0:80", "x.y:1:2", "70000:80"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert!(parse_volume("/data:rel").is_err());
        assert!(parse_volume("rel").is_err());
        assert!(parse_volume("-bad:/data").is_err());
        assert!(parse_volume("/srv:/data:nocopy").is_err());
        assert!(parse_volume("data:/data:sometimes").is_err());
        assert!(parse_volume("a:b:c:d").is_err());
        let MountArg::Spec(m) = parse_volume("/srv:/data:ro").unwrap() else {
            panic!("a host path is a bind mount")
        };
        assert!(m.options().as_ref().unwrap().contains(&"ro".to_string()));
        let MountArg::Volume(v) = parse_volume("data:/data:ro,nocopy").unwrap() else {
            panic!("a name is a volume")
        };
        assert_eq!(
            (v.name.as_deref(), v.dest.as_str(), v.ro, v.nocopy),
            (Some("data"), "/data", true, true)
        );
        let MountArg::Volume(v) = parse_volume("/cache").unwrap() else {
            panic!("a lone path is an anonymous volume")
        };
        assert_eq!((v.name, v.dest.as_str(), v.ro), (None, "/cache", false));
        let MountArg::Volume(v) = parse_mount("type=volume,src=db,dst=/db,volume-nocopy").unwrap()
        else {
            panic!("type=volume is a volume")
        };
        assert_eq!((v.name.as_deref(), v.nocopy), (Some("db"), true));
        assert!(parse_mount("type=volume,src=../x,dst=/db").is_err());
        assert!(parse_mount("type=bind,src=/x,dst=/db,volume-nocopy").is_err());
        assert!(parse_restart("on-failure:3").unwrap().is_some());
        assert!(parse_restart("sometimes").is_err());
        assert_eq!(
            start_failure_code("exec: \"nope\": executable file not found in $PATH"),
            127
        );
    }
}
