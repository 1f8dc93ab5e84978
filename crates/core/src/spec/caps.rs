//! Linux capabilities: docker's default set, `--cap-add`/`--cap-drop` resolution, and conversion to
//! the OCI spec's typed capability sets.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use crate::{Error, Result};

/// Every capability the kernel (up to 6.x) and the `oci-spec` crate know, in kernel number order.
/// `ALL` and privileged containers get exactly this list.
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Docker's (and containerd's) default capability set for unprivileged containers.
pub fn default_capabilities() -> Vec<String> {
    [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What `ALL` and `--privileged` grant: every known capability this process holds in its
/// bounding set (containerd's `WithAllCurrentCapabilities`). A runtime cannot give a container a
/// capability it lacks itself — asking for one makes container creation fail — and some hosts
/// (this project's CI machines lack CAP_SYS_RESOURCE) withhold some.
pub fn all_capabilities() -> Vec<String> {
    let bounding = current_bounding();
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        // The list is in kernel number order: index i is capability number i.
        .filter(|(i, _)| bounding.is_none_or(|b| b & (1u64 << i) != 0))
        .map(|(_, s)| s.to_string())
        .collect()
}

/// This process's bounding set from /proc, if readable.
fn current_bounding() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Canonical `CAP_…` name of a user-supplied capability (`chown`, `CAP_CHOWN`, `Cap_Chown`), or
/// `"ALL"`. Unknown names are an `InvalidArgument` error rather than silently ignored, so a typo in
/// `--cap-drop` cannot leave a capability in place.
pub fn normalize(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::InvalidArgument(format!(
            "unknown capability {name:?}"
        )))
    }
}

/// The capability set of a container: `base` (docker's defaults), then drops, then adds — the
/// order docker uses, so `--cap-drop ALL --cap-add NET_ADMIN` yields just NET_ADMIN and
/// `--cap-add ALL --cap-drop MKNOD` yields everything but MKNOD. Privileged containers get all.
pub fn resolve(privileged: bool, add: &[String], drop: &[String]) -> Result<Vec<String>> {
    let add = add
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>>>()?;
    let drop = drop
        .iter()
        .map(|c| normalize(c))
        .collect::<Result<Vec<_>>>()?;
    if privileged {
        return Ok(all_capabilities());
    }
    // --cap-add ALL starts from everything and ignores the other adds; --cap-drop ALL starts
    // from nothing. Remaining drops apply before adds, so an explicit add wins over a drop.
    let mut caps = if add.iter().any(|c| c == "ALL") {
        all_capabilities()
    } else if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        default_capabilities()
    };
    caps.retain(|c| !drop.contains(c));
    for c in add.into_iter().filter(|c| c != "ALL") {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// The typed set of the OCI spec from canonical names.
pub fn to_set(caps: &[String]) -> Result<Capabilities> {
    caps.iter()
        .map(|c| {
            let short = c.strip_prefix("CAP_").unwrap_or(c);
            short
                .parse::<Capability>()
                .map_err(|_| Error::InvalidArgument(format!("unknown capability {c:?}")))
        })
        .collect()
}

/// The process capabilities the way containerd sets them: bounding, effective and permitted hold
/// the set; inheritable and ambient stay empty so exec'd non-root programs do not keep them.
pub fn linux_capabilities(caps: &[String]) -> Result<LinuxCapabilities> {
    let set = to_set(caps)?;
    let mut lc = LinuxCapabilities::default();
    lc.set_bounding(Some(set.clone()));
    lc.set_effective(Some(set.clone()));
    lc.set_permitted(Some(set));
    lc.set_inheritable(Some(Capabilities::new()));
    lc.set_ambient(Some(Capabilities::new()));
    Ok(lc)
}
