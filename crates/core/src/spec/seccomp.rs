//! Seccomp: wharf's default profile, docker-format profiles (with capability- and architecture-
//! conditional rules), and their resolution into the OCI spec's `LinuxSeccomp`.
//!
//! The default profile is written for wharf (not copied from docker) but matches docker's default in
//! effect: everything not listed fails with `EPERM`; ordinary syscalls are allowed; syscalls that
//! reach kernel state shared with the host (keyrings, modules, mounts, namespaces, clocks, swap,
//! kexec, accounting, BPF, perf, NUMA policy, raw I/O ports…) are only allowed when the container
//! holds the capability the kernel checks for them, so `--cap-add SYS_ADMIN` opens `mount`,
//! `unshare` and `setns` the way it does with docker.
//!
//! Choices where docker's behaviour depends on the host:
//! - `ptrace`, `process_vm_readv` and `process_vm_writev` are allowed on kernels ≥ 4.8 (where
//!   seccomp can no longer be bypassed through ptrace), like docker; older kernels need SYS_PTRACE.
//! - `io_uring_*` are denied (docker removed them from its default in 2023: io_uring bypasses
//!   seccomp for the operations it performs).
//! - `adjtimex`/`clock_adjtime` need SYS_TIME even to read (docker allows the read-only form).
//! - `clone3` fails with `ENOSYS` instead of `EPERM` so glibc falls back to `clone`, whose flags
//!   seccomp can inspect (clone3 passes them in memory).

use std::path::Path;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What the spec should say about seccomp.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Seccomp {
    /// wharf's default profile, resolved against the container's capabilities.
    #[default]
    Default,
    /// No filter at all (`--security-opt seccomp=unconfined`, privileged containers).
    Unconfined,
    /// A ready OCI `LinuxSeccomp`, used as is.
    Custom(LinuxSeccomp),
    /// A docker- or OCI-format profile file's content; its capability/architecture conditions are
    /// resolved when the spec is generated.
    Profile(Profile),
}

impl Seccomp {
    /// Loads a profile file (docker's `seccomp.json` format or the OCI `linux.seccomp` object).
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(Seccomp::Profile(Profile::load(path)?))
    }
}

/// A seccomp profile in docker's JSON format, a superset of the OCI `linux.seccomp` object:
/// rules may carry `includes`/`excludes` conditions and architectures may come as an `archMap`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<Arch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arch_map: Vec<ArchMap>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub syscalls: Vec<Rule>,
}

/// One native architecture and the compat architectures a process on it can also use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Vec<Arch>,
}

/// A profile rule. `name` is docker's older single-name form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    pub action: LinuxSeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<LinuxSeccompArg>,
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub includes: Filter,
    #[serde(default, skip_serializing_if = "Filter::is_empty")]
    pub excludes: Filter,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Conditions of a rule: capabilities (`CAP_…`), architectures (Go names: `amd64`, `arm64`, `s390x`…)
/// and a minimum kernel version (`"4.8"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arches: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_kernel: Option<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

/// The host facts a profile is resolved against.
#[derive(Debug, Clone)]
pub struct Target {
    /// Go-style architecture name (`amd64`, `arm64`…).
    pub arch: String,
    /// Kernel `(major, minor)`, `None` when unknown (then `minKernel` rules are left out).
    pub kernel: Option<(u32, u32)>,
}

impl Target {
    /// The machine wharf runs on.
    pub fn host() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|s| parse_kernel_version(&s));
        Target {
            arch: go_arch().to_string(),
            kernel,
        }
    }
}

/// Go's name of the architecture wharf was built for (docker's profiles use them in `arches`).
pub fn go_arch() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "amd64"
    } else if cfg!(target_arch = "aarch64") {
        "arm64"
    } else if cfg!(target_arch = "x86") {
        "386"
    } else if cfg!(target_arch = "arm") {
        "arm"
    } else if cfg!(target_arch = "powerpc64") {
        "ppc64le"
    } else if cfg!(target_arch = "s390x") {
        "s390x"
    } else if cfg!(target_arch = "riscv64") {
        "riscv64"
    } else if cfg!(target_arch = "loongarch64") {
        "loong64"
    } else {
        "unknown"
    }
}

fn native_seccomp_arch(go: &str) -> Option<Arch> {
    Some(match go {
        "amd64" => Arch::ScmpArchX86_64,
        "arm64" => Arch::ScmpArchAarch64,
        "386" => Arch::ScmpArchX86,
        "arm" => Arch::ScmpArchArm,
        "ppc64le" => Arch::ScmpArchPpc64le,
        "s390x" => Arch::ScmpArchS390x,
        "riscv64" => Arch::ScmpArchRiscv64,
        "loong64" => Arch::ScmpArchLoongarch64,
        _ => return None,
    })
}

/// `"6.1.0-18-amd64"` → `(6, 1)`.
fn parse_kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

fn canonical_cap(c: &str) -> String {
    let upper = c.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

impl Profile {
    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Self> {
        let data =
            std::fs::read(path).map_err(|e| Error::io_path("read seccomp profile", path, e))?;
        Self::parse(&data)
            .map_err(|e| Error::InvalidArgument(format!("seccomp profile {}: {e}", path.display())))
    }

    /// Parses and checks a profile (docker or OCI format).
    pub fn parse(data: &[u8]) -> Result<Self> {
        let p: Profile = serde_json::from_slice(data)
            .map_err(|e| Error::InvalidArgument(format!("malformed seccomp profile: {e}")))?;
        for (i, r) in p.syscalls.iter().enumerate() {
            if r.name.is_none() && r.names.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "seccomp profile rule {i} names no syscall"
                )));
            }
            if r.args.len() > 6 || r.args.iter().any(|a| a.index() > 5) {
                return Err(Error::InvalidArgument(format!(
                    "seccomp profile rule {i}: syscalls have at most 6 arguments (index 0-5)"
                )));
            }
        }
        Ok(p)
    }

    /// The OCI filter for a container holding `caps` on `target`: rules whose conditions do not
    /// hold are dropped, `archMap` picks the native architecture and its compat ones.
    pub fn resolve(&self, caps: &[String], target: &Target) -> LinuxSeccomp {
        let caps: Vec<String> = caps.iter().map(|c| canonical_cap(c)).collect();
        let mut arches = self.architectures.clone();
        if arches.is_empty() {
            if let Some(native) = native_seccomp_arch(&target.arch) {
                for m in self.arch_map.iter().filter(|m| m.architecture == native) {
                    arches.push(m.architecture);
                    arches.extend(m.sub_architectures.iter().copied());
                }
            }
        }
        let applies = |r: &Rule| -> bool {
            let inc = &r.includes;
            if !inc.caps.iter().all(|c| caps.contains(&canonical_cap(c))) {
                return false;
            }
            if !inc.arches.is_empty() && !inc.arches.contains(&target.arch) {
                return false;
            }
            if let Some(min) = &inc.min_kernel {
                match (parse_kernel_version(min), target.kernel) {
                    (Some(min), Some(have)) if have >= min => {}
                    _ => return false,
                }
            }
            let exc = &r.excludes;
            if exc.caps.iter().any(|c| caps.contains(&canonical_cap(c))) {
                return false;
            }
            if exc.arches.contains(&target.arch) {
                return false;
            }
            if let Some(min) = &exc.min_kernel {
                if let (Some(min), Some(have)) = (parse_kernel_version(min), target.kernel) {
                    if have >= min {
                        return false;
                    }
                }
            }
            true
        };
        let mut syscalls = Vec::new();
        for r in self.syscalls.iter().filter(|r| applies(r)) {
            let mut names = r.names.clone();
            if let Some(n) = &r.name {
                names.insert(0, n.clone());
            }
            let mut sc = LinuxSyscall::default();
            sc.set_names(names);
            sc.set_action(r.action);
            sc.set_errno_ret(r.errno_ret);
            sc.set_args((!r.args.is_empty()).then(|| r.args.clone()));
            syscalls.push(sc);
        }
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures((!arches.is_empty()).then_some(arches));
        out.set_flags((!self.flags.is_empty()).then(|| self.flags.clone()));
        out.set_syscalls(Some(syscalls));
        out
    }
}

/// Syscalls every container may use.
#[rustfmt::skip]
const ALLOWED: &[&str] = &[
    "accept", "accept4", "access", "alarm", "bind", "brk", "capget", "capset", "chdir", "chmod",
    "chown", "chown32", "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
    "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range", "connect",
    "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl",
    "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd",
    "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
    "fadvise64_64", "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchown",
    "fchown32", "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock",
    "fork", "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64",
    "fsync", "ftruncate", "ftruncate64", "futex", "futex_time64", "futex_waitv", "futimesat",
    "get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents", "getdents64", "getegid",
    "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups", "getgroups32",
    "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority",
    "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32", "getrlimit", "getrusage",
    "getsid", "getsockname", "getsockopt", "gettid", "gettimeofday", "getuid", "getuid32",
    "getxattr", "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch",
    "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "io_setup",
    "io_submit", "ioctl", "ioprio_get", "ioprio_set", "ipc", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link",
    "linkat", "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr",
    "lstat", "lstat64", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
    "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
    "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
    "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv",
    "msgsnd", "msync", "munlock", "munlockall", "munmap", "nanosleep", "newfstatat", "_newselect",
    "open", "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2",
    "pkey_alloc", "pkey_free", "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64",
    "preadv", "preadv2", "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64",
    "pwritev", "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv",
    "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr",
    "rename", "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction",
    "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend",
    "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_get_priority_max",
    "sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
    "sched_getscheduler", "sched_rr_get_interval", "sched_rr_get_interval_time64",
    "sched_setaffinity", "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
    "seccomp", "select", "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send",
    "sendfile", "sendfile64", "sendmmsg", "sendmsg", "sendto", "set_robust_list", "set_thread_area",
    "set_tid_address", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
    "setgroups", "setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32",
    "setresgid", "setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
    "setsid", "setsockopt", "setuid", "setuid32", "setxattr", "shmat", "shmctl", "shmdt", "shmget",
    "shutdown", "sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socket",
    "socketcall", "socketpair", "splice", "stat", "stat64", "statfs", "statfs64", "statx",
    "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
    "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_gettime64",
    "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime", "timerfd_gettime64",
    "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate", "truncate64",
    "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat", "utimensat_time64",
    "utimes", "vfork", "wait4", "waitid", "waitpid", "write", "writev",
];

/// Architecture-specific syscalls, allowed on the named (Go) architectures only.
const ALLOWED_BY_ARCH: &[(&[&str], &[&str])] = &[
    (&["amd64", "386"], &["arch_prctl", "modify_ldt"]),
    (
        &["arm", "arm64"],
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "breakpoint",
            "cacheflush",
            "set_tls",
            "sync_file_range2",
        ],
    ),
];

/// Syscalls allowed only when the container holds the capability the kernel checks for them.
const ALLOWED_BY_CAP: &[(&str, &[&str])] = &[
    ("CAP_DAC_READ_SEARCH", &["open_by_handle_at"]),
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "name_to_handle_at",
            "open_tree",
            "perf_event_open",
            "pivot_root",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "swapoff",
            "swapon",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    (
        "CAP_SYS_MODULE",
        &["delete_module", "finit_module", "init_module"],
    ),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
            "userfaultfd",
        ],
    ),
    ("CAP_SYS_RAWIO", &["ioperm", "iopl"]),
    (
        "CAP_SYS_TIME",
        &[
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
            "clock_settime",
            "clock_settime64",
            "settimeofday",
            "stime",
        ],
    ),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &[
            "get_mempolicy",
            "mbind",
            "migrate_pages",
            "move_pages",
            "set_mempolicy",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// `personality(2)` values a container may set: Linux, 32-bit, UNAME26 (and their combination)
/// and the 0xffffffff query. Others (e.g. ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC) weaken ASLR/NX.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// Namespace flags of clone(2): NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET.
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn arg(
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> LinuxSeccompArg {
    let b = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    let b = match value_two {
        Some(v) => b.value_two(v),
        None => b,
    };
    // Every field is set (or has a builder default), so build() cannot fail.
    b.build().unwrap_or_default()
}

fn allow(list: &[&str]) -> Rule {
    Rule {
        names: names(list),
        action: LinuxSeccompAction::ScmpActAllow,
        ..Default::default()
    }
}

/// wharf's default profile, unresolved (with its capability and architecture conditions).
/// Serialize it to get a docker-format `seccomp.json` users can start their own profile from.
pub fn default_profile() -> Profile {
    let mut rules = vec![allow(ALLOWED)];
    for (arches, list) in ALLOWED_BY_ARCH {
        rules.push(Rule {
            includes: Filter {
                arches: names(arches),
                ..Default::default()
            },
            ..allow(list)
        });
    }
    rules.push(Rule {
        args: PERSONALITIES
            .iter()
            .map(|&v| arg(0, LinuxSeccompOperator::ScmpCmpEq, v, None))
            .collect(),
        comment: Some("personality: only the harmless execution domains".into()),
        ..allow(&["personality"])
    });
    rules.push(Rule {
        includes: Filter {
            min_kernel: Some("4.8".into()),
            ..Default::default()
        },
        comment: Some("seccomp cannot be bypassed with ptrace since Linux 4.8".into()),
        ..allow(&["ptrace", "process_vm_readv", "process_vm_writev"])
    });
    // clone without namespace flags: `(flags & NS) == 0`, written the way runc and crun read
    // SCMP_CMP_MASKED_EQ (value = mask, valueTwo = datum). The flags are argument 0 (1 on s390).
    // youki's libcontainer reads the two the other way round: see [`libcontainer_compat`].
    for (index, arches_inc, arches_exc) in [
        (0, vec![], names(&["s390", "s390x"])),
        (1, names(&["s390", "s390x"]), vec![]),
    ] {
        rules.push(Rule {
            args: vec![arg(
                index,
                LinuxSeccompOperator::ScmpCmpMaskedEq,
                CLONE_NAMESPACE_FLAGS,
                Some(0),
            )],
            includes: Filter {
                arches: arches_inc,
                ..Default::default()
            },
            excludes: Filter {
                caps: names(&["CAP_SYS_ADMIN"]),
                arches: arches_exc,
                ..Default::default()
            },
            comment: Some("clone without namespace flags".into()),
            ..allow(&["clone"])
        });
    }
    rules.push(Rule {
        names: names(&["clone3"]),
        action: LinuxSeccompAction::ScmpActErrno,
        errno_ret: Some(libc::ENOSYS as u32),
        excludes: Filter {
            caps: names(&["CAP_SYS_ADMIN"]),
            ..Default::default()
        },
        comment: Some(
            "clone3's flags cannot be filtered: ENOSYS makes libc fall back to clone".into(),
        ),
        ..Default::default()
    });
    for (cap, list) in ALLOWED_BY_CAP {
        rules.push(Rule {
            includes: Filter {
                caps: vec![cap.to_string()],
                ..Default::default()
            },
            ..allow(list)
        });
    }
    Profile {
        default_action: LinuxSeccompAction::ScmpActErrno,
        default_errno_ret: Some(libc::EPERM as u32),
        architectures: Vec::new(),
        arch_map: vec![
            ArchMap {
                architecture: Arch::ScmpArchX86_64,
                sub_architectures: vec![Arch::ScmpArchX86, Arch::ScmpArchX32],
            },
            ArchMap {
                architecture: Arch::ScmpArchAarch64,
                sub_architectures: vec![Arch::ScmpArchArm],
            },
            ArchMap {
                architecture: Arch::ScmpArchPpc64le,
                sub_architectures: vec![Arch::ScmpArchPpc64, Arch::ScmpArchPpc],
            },
            ArchMap {
                architecture: Arch::ScmpArchS390x,
                sub_architectures: vec![Arch::ScmpArchS390],
            },
            ArchMap {
                architecture: Arch::ScmpArchRiscv64,
                sub_architectures: vec![],
            },
        ],
        flags: Vec::new(),
        syscalls: rules,
    }
}

/// The default profile for a container with docker's default capabilities on this host.
pub fn default_seccomp() -> LinuxSeccomp {
    default_seccomp_for(&super::caps::default_capabilities(), &Target::host())
}

/// The default profile for a container holding `caps` on `target`.
pub fn default_seccomp_for(caps: &[String], target: &Target) -> LinuxSeccomp {
    default_profile().resolve(caps, target)
}

/// Every syscall name the default profile mentions (for checks against libseccomp).
pub fn default_profile_syscall_names() -> Vec<String> {
    let mut out: Vec<String> = default_profile()
        .syscalls
        .iter()
        .flat_map(|r| r.names.iter().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A copy of `seccomp` that means the same to youki's libcontainer (0.7) as the original means to
/// runc and crun.
///
/// The OCI spec does not say which of `value`/`valueTwo` is the mask of `SCMP_CMP_MASKED_EQ`; runc
/// and crun (and docker's profiles) use `value` as the mask and `valueTwo` as the datum, while
/// libcontainer passes `valueTwo` as the mask. Given the runc form, libcontainer ends up with a
/// zero mask, which libseccomp treats as "always true" — the default profile's namespace check on
/// `clone` would silently become an unconditional allow. Runtimes built on libcontainer must
/// apply this before handing the spec over.
pub fn libcontainer_compat(seccomp: &LinuxSeccomp) -> LinuxSeccomp {
    let mut out = seccomp.clone();
    let Some(syscalls) = seccomp.syscalls() else {
        return out;
    };
    let swapped = syscalls
        .iter()
        .map(|sc| {
            let mut sc = sc.clone();
            if let Some(args) = sc.args().clone() {
                let args = args
                    .into_iter()
                    .map(|a| {
                        if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                            arg(
                                a.index(),
                                a.op(),
                                a.value_two().unwrap_or(0),
                                Some(a.value()),
                            )
                        } else {
                            a
                        }
                    })
                    .collect();
                sc.set_args(Some(args));
            }
            sc
        })
        .collect();
    out.set_syscalls(Some(swapped));
    out
}
