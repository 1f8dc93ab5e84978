use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxNamespaceType, LinuxSeccomp, LinuxSeccompAction, Mount, PosixRlimitBuilder,
    PosixRlimitType, Spec,
};

use super::seccomp::{default_profile, Profile, Target};
use super::*;

fn image(config: serde_json::Value) -> ImageConfig {
    ImageConfig {
        architecture: "amd64".into(),
        os: "linux".into(),
        config: Some(config),
        ..Default::default()
    }
}

fn busybox() -> ImageConfig {
    image(serde_json::json!({
        "Env": ["PATH=/bin:/usr/bin", "LANG=C"],
        "Entrypoint": ["/entry.sh"],
        "Cmd": ["serve", "--port", "80"],
        "WorkingDir": "/srv",
    }))
}

fn gen(opts: &SpecOptions) -> Spec {
    generate(&busybox(), None, opts).unwrap()
}

fn process(spec: &Spec) -> &oci_spec::runtime::Process {
    spec.process().as_ref().unwrap()
}

fn linux(spec: &Spec) -> &oci_spec::runtime::Linux {
    spec.linux().as_ref().unwrap()
}

fn args(spec: &Spec) -> Vec<String> {
    process(spec).args().clone().unwrap()
}

fn env(spec: &Spec) -> Vec<String> {
    process(spec).env().clone().unwrap()
}

fn caps(spec: &Spec) -> HashSet<Capability> {
    process(spec)
        .capabilities()
        .as_ref()
        .unwrap()
        .effective()
        .clone()
        .unwrap()
}

fn rootfs_with_users() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(
        dir.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n\
         # a comment\n\
         www:x:33:33:www:/var/www:/bin/false\n\
         alice:x:1000:1000:Alice:/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("etc/group"),
        "root:x:0:\n\
         www:x:33:\n\
         alice:x:1000:\n\
         audio:x:29:alice,bob\n\
         video:x:44:bob, alice\n\
         staff:x:50:bob\n",
    )
    .unwrap();
    dir
}

#[test]
fn entrypoint_cmd_and_env_merge_like_docker() {
    let spec = gen(&SpecOptions::default());
    assert_eq!(args(&spec), ["/entry.sh", "serve", "--port", "80"]);
    assert_eq!(env(&spec), ["PATH=/bin:/usr/bin", "LANG=C"]);
    assert_eq!(process(&spec).cwd(), Path::new("/srv"));
    assert_eq!(spec.version(), OCI_VERSION);
    assert_eq!(spec.root().as_ref().unwrap().path(), Path::new("rootfs"));
    assert_eq!(spec.hostname(), &None);

    // args replace Cmd, keep Entrypoint.
    let spec = gen(&SpecOptions {
        args: Some(vec!["debug".into()]),
        env: vec!["LANG=C.UTF-8".into(), "NEW=1".into()],
        ..Default::default()
    });
    assert_eq!(args(&spec), ["/entry.sh", "debug"]);
    assert_eq!(env(&spec), ["PATH=/bin:/usr/bin", "LANG=C.UTF-8", "NEW=1"]);

    // A user entrypoint drops the image's Cmd; Some([]) clears the entrypoint.
    let spec = gen(&SpecOptions {
        entrypoint: Some(vec!["/bin/sh".into()]),
        ..Default::default()
    });
    assert_eq!(args(&spec), ["/bin/sh"]);
    let spec = gen(&SpecOptions {
        entrypoint: Some(vec![]),
        args: Some(vec!["ls".into(), "-l".into()]),
        ..Default::default()
    });
    assert_eq!(args(&spec), ["ls", "-l"]);

    // Nothing to run.
    let err = generate(&image(serde_json::json!({})), None, &SpecOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m == "no command specified"),
        "{err}"
    );
    // Image without config: PATH default, cwd /.
    let spec = generate(
        &ImageConfig::default(),
        None,
        &SpecOptions {
            args: Some(vec!["true".into()]),
            env: vec!["A=b=c".into()],
            hostname: Some("box".into()),
            terminal: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        env(&spec),
        [DEFAULT_PATH, "A=b=c", "HOSTNAME=box", "TERM=xterm"]
    );
    assert_eq!(process(&spec).cwd(), Path::new("/"));
    assert_eq!(spec.hostname().as_deref(), Some("box"));
    assert_eq!(process(&spec).terminal(), Some(true));

    // Bad env entries and working dirs are the user's mistake.
    for opts in [
        SpecOptions {
            env: vec!["NOEQUALS".into()],
            ..Default::default()
        },
        SpecOptions {
            env: vec!["=x".into()],
            ..Default::default()
        },
        SpecOptions {
            working_dir: Some("relative".into()),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            generate(&busybox(), None, &opts),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[test]
fn entrypoint_cleared_without_args_is_an_error() {
    let err = generate(
        &busybox(),
        None,
        &SpecOptions {
            entrypoint: Some(vec![]),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)));
}

#[test]
fn user_by_name_with_supplementary_groups() {
    let root = rootfs_with_users();
    assert_eq!(
        resolve_user(Some(root.path()), "alice").unwrap(),
        (1000, 1000, vec![29, 44])
    );
    // Explicit group: no implicit supplementary groups (runc).
    assert_eq!(
        resolve_user(Some(root.path()), "alice:www").unwrap(),
        (1000, 33, vec![])
    );
    assert_eq!(
        resolve_user(Some(root.path()), "1000").unwrap(),
        (1000, 1000, vec![29, 44])
    );
    assert_eq!(
        resolve_user(Some(root.path()), "4242:7").unwrap(),
        (4242, 7, vec![])
    );
    assert_eq!(resolve_user(None, "33").unwrap(), (33, 0, vec![]));
    assert_eq!(resolve_user(None, "").unwrap(), (0, 0, vec![]));
    assert_eq!(resolve_group(Some(root.path()), "staff").unwrap(), 50);

    // Image User, plus additional gids from the options.
    let img = image(serde_json::json!({"User": "www", "Cmd": ["httpd"]}));
    let spec = generate(
        &img,
        Some(root.path()),
        &SpecOptions {
            additional_gids: vec![44, 44, 7],
            ..Default::default()
        },
    )
    .unwrap();
    let u = process(&spec).user();
    assert_eq!((u.uid(), u.gid()), (33, 33));
    assert_eq!(u.additional_gids().as_deref(), Some(&[44, 7][..]));

    // The option wins over the image's User.
    let spec = generate(
        &img,
        Some(root.path()),
        &SpecOptions {
            user: Some("alice".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let u = process(&spec).user();
    assert_eq!((u.uid(), u.gid()), (1000, 1000));
    assert_eq!(u.additional_gids().as_deref(), Some(&[29, 44][..]));
}

#[test]
fn unknown_user_or_group_is_a_clear_error() {
    let root = rootfs_with_users();
    let err = resolve_user(Some(root.path()), "mallory").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m == "unable to find user mallory: no matching entries in passwd file"),
        "{err}"
    );
    let err = resolve_user(Some(root.path()), "alice:nogroup").unwrap_err();
    assert!(
        err.to_string().contains("unable to find group nogroup"),
        "{err}"
    );
    // A name cannot be resolved without the rootfs.
    let err = resolve_user(None, "alice").unwrap_err();
    assert!(
        err.to_string().contains("unable to find user alice"),
        "{err}"
    );
    assert!(matches!(
        resolve_user(None, "1:"),
        Err(Error::InvalidArgument(_))
    ));
    // An image without /etc/passwd only knows numeric users.
    let empty = tempfile::tempdir().unwrap();
    assert!(resolve_user(Some(empty.path()), "alice").is_err());
    assert_eq!(
        resolve_user(Some(empty.path()), "5:6").unwrap(),
        (5, 6, vec![])
    );
}

/// A hostile image's `/etc/passwd` lookup never reads a host file: symlinks (absolute, `..`
/// chains, a symlinked `/etc` directory) resolve inside the rootfs, as in the container.
#[test]
fn passwd_lookup_stays_in_the_rootfs() {
    let t = tempfile::tempdir().unwrap();
    // The "host": a passwd outside the rootfs with a user only it has.
    let host = t.path().join("host");
    std::fs::create_dir_all(host.join("etc")).unwrap();
    std::fs::write(host.join("etc/passwd"), "hostonly:x:4242:4242::/:/bin/sh\n").unwrap();
    std::fs::write(host.join("etc/group"), "hostgroup:x:4343:\n").unwrap();
    let host_etc = host.join("etc");
    let rootfs = |name: &str| {
        let r = t.path().join(name);
        std::fs::create_dir_all(&r).unwrap();
        r
    };
    let cases: Vec<PathBuf> = vec![
        // /etc is an absolute symlink to the host's /etc.
        {
            let r = rootfs("abs-etc");
            std::os::unix::fs::symlink(&host_etc, r.join("etc")).unwrap();
            r
        },
        // /etc/passwd climbs out with `..`.
        {
            let r = rootfs("dotdot");
            std::fs::create_dir(r.join("etc")).unwrap();
            std::os::unix::fs::symlink("../../../host/etc/passwd", r.join("etc/passwd")).unwrap();
            std::os::unix::fs::symlink("../../../host/etc/group", r.join("etc/group")).unwrap();
            r
        },
        // /etc is a relative symlink climbing out.
        {
            let r = rootfs("rel-etc");
            std::os::unix::fs::symlink("../host/etc", r.join("etc")).unwrap();
            r
        },
        // /etc/passwd is an absolute symlink to the host's file.
        {
            let r = rootfs("abs-file");
            std::fs::create_dir(r.join("etc")).unwrap();
            std::os::unix::fs::symlink(host_etc.join("passwd"), r.join("etc/passwd")).unwrap();
            r
        },
    ];
    for r in &cases {
        let err = resolve_user(Some(r), "hostonly").unwrap_err();
        assert!(
            err.to_string().contains("unable to find user hostonly"),
            "{}: {err}",
            r.display()
        );
        assert!(
            resolve_group(Some(r), "hostgroup").is_err(),
            "{}",
            r.display()
        );
    }
    // A symlink that stays inside the rootfs is followed there, as the container would.
    let r = rootfs("inside");
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("data")).unwrap();
    std::fs::write(r.join("data/passwd"), "app:x:77:78::/:/bin/sh\n").unwrap();
    std::os::unix::fs::symlink("/data/passwd", r.join("etc/passwd")).unwrap();
    assert_eq!(resolve_user(Some(&r), "app").unwrap(), (77, 78, vec![]));
    // A FIFO is refused instead of blocking the caller.
    let r = rootfs("fifo");
    std::fs::create_dir_all(r.join("etc")).unwrap();
    nix::unistd::mkfifo(
        &r.join("etc/passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let err = resolve_user(Some(&r), "app").unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn capabilities_add_drop_all_and_unknown() {
    let default: HashSet<Capability> = caps::to_set(&default_capabilities()).unwrap();
    let spec = gen(&SpecOptions::default());
    assert_eq!(caps(&spec), default);
    let lc = process(&spec).capabilities().as_ref().unwrap();
    assert_eq!(lc.bounding().as_ref().unwrap(), &default);
    assert_eq!(lc.permitted().as_ref().unwrap(), &default);
    assert!(lc.inheritable().as_ref().unwrap().is_empty());
    assert!(lc.ambient().as_ref().unwrap().is_empty());
    assert_eq!(default.len(), 14);

    let spec = gen(&SpecOptions {
        cap_add: vec!["net_admin".into(), "CAP_SYS_PTRACE".into()],
        cap_drop: vec!["chown".into(), "Cap_Mknod".into()],
        ..Default::default()
    });
    let c = caps(&spec);
    assert!(c.contains(&Capability::NetAdmin) && c.contains(&Capability::SysPtrace));
    assert!(!c.contains(&Capability::Chown) && !c.contains(&Capability::Mknod));
    assert_eq!(c.len(), 14);

    let spec = gen(&SpecOptions {
        cap_drop: vec!["ALL".into()],
        cap_add: vec!["kill".into()],
        ..Default::default()
    });
    assert_eq!(caps(&spec), HashSet::from([Capability::Kill]));

    let spec = gen(&SpecOptions {
        cap_add: vec!["all".into()],
        cap_drop: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    let c = caps(&spec);
    assert_eq!(c.len(), caps::all_capabilities().len() - 1);
    assert!(!c.contains(&Capability::SysAdmin));

    for bad in ["CAP_NOPE", "sys-admin", ""] {
        let err = generate(
            &busybox(),
            None,
            &SpecOptions {
                cap_add: vec![bad.into()],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.contains("unknown capability")),
            "{err}"
        );
    }
    // Every name of the list is one oci-spec knows.
    let every: Vec<String> = caps::ALL_CAPABILITIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(caps::to_set(&every).unwrap().len(), every.len());
    // ALL is what this process holds: never a capability missing from its bounding set.
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    assert_eq!(
        caps::all_capabilities().len(),
        bounding.count_ones() as usize
    );
}

#[test]
fn privileged_gets_everything() {
    let spec = gen(&SpecOptions {
        privileged: true,
        cap_drop: vec!["ALL".into()],
        ..Default::default()
    });
    assert_eq!(caps(&spec).len(), caps::all_capabilities().len());
    let l = linux(&spec);
    assert!(l.seccomp().is_none());
    assert_eq!(l.masked_paths().as_deref(), Some(&[][..]));
    assert_eq!(l.readonly_paths().as_deref(), Some(&[][..]));
    let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(rules.len(), 1);
    assert!(rules[0].allow());
    assert_eq!(rules[0].typ(), Some(oci_spec::runtime::LinuxDeviceType::A));
    let mounts = spec.mounts().as_ref().unwrap();
    for dest in ["/sys", "/sys/fs/cgroup"] {
        let m = mounts
            .iter()
            .find(|m| m.destination() == Path::new(dest))
            .unwrap();
        let opts = m.options().as_ref().unwrap();
        assert!(opts.contains(&"rw".to_string()) && !opts.contains(&"ro".to_string()));
    }
    // Host devices are passed through, except the nodes every runtime creates itself (listing
    // /dev/null again makes libcontainer's mknod fail).
    let devices = l.devices().clone().unwrap_or_default();
    assert!(!devices.iter().any(|d| d.path() == Path::new("/dev/null")));
    if Path::new("/dev/loop-control").exists() {
        assert!(devices
            .iter()
            .any(|d| d.path() == Path::new("/dev/loop-control")));
    }
}

#[test]
fn unprivileged_defaults_like_containerd() {
    let spec = gen(&SpecOptions::default());
    let l = linux(&spec);
    assert_eq!(
        l.masked_paths().clone().unwrap(),
        DEFAULT_MASKED_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        l.readonly_paths().clone().unwrap(),
        DEFAULT_READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
    let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
    assert!(!rules[0].allow() && rules[0].access().as_deref() == Some("rwm"));
    let allowed: Vec<String> = rules[1..].iter().map(|r| r.to_string()).collect();
    for want in [
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:9 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
    ] {
        assert!(allowed.iter().any(|a| a == want), "{want} in {allowed:?}");
    }
    let dests: Vec<PathBuf> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().clone())
        .collect();
    for d in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ] {
        assert!(dests.contains(&PathBuf::from(d)), "{d}");
    }
    let rl = process(&spec).rlimits().clone().unwrap();
    assert_eq!(rl.len(), 1);
    assert_eq!(
        (rl[0].typ(), rl[0].soft(), rl[0].hard()),
        (PosixRlimitType::RlimitNofile, 1024, 1024)
    );
    assert_eq!(process(&spec).no_new_privileges(), Some(false));
    assert!(l.seccomp().is_some());
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(false));
    let ns: Vec<LinuxNamespaceType> = l
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        ns,
        [
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Cgroup
        ]
    );
}

#[test]
fn read_only_rootfs_and_process_options() {
    let spec = gen(&SpecOptions {
        read_only_rootfs: true,
        no_new_privileges: true,
        apparmor_profile: Some("docker-default".into()),
        oom_score_adj: Some(-500),
        rlimits: vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(4096u64)
                .hard(8192u64)
                .build()
                .unwrap(),
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNproc)
                .soft(100u64)
                .hard(100u64)
                .build()
                .unwrap(),
        ],
        ..Default::default()
    });
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    let p = process(&spec);
    assert_eq!(p.no_new_privileges(), Some(true));
    assert_eq!(p.apparmor_profile().as_deref(), Some("docker-default"));
    assert_eq!(p.oom_score_adj(), Some(-500));
    let rl = p.rlimits().clone().unwrap();
    assert_eq!(rl.len(), 2);
    assert_eq!((rl[0].soft(), rl[0].hard()), (4096, 8192));
    // By default 1024 open files (containerd's); inherited, none but the asked ones.
    let nofile = |spec: &Spec| {
        process(spec)
            .rlimits()
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|r| (r.typ(), r.soft(), r.hard()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        nofile(&gen(&SpecOptions::default())),
        [(PosixRlimitType::RlimitNofile, 1024, 1024)]
    );
    assert_eq!(
        nofile(&gen(&SpecOptions {
            inherit_rlimits: true,
            ..Default::default()
        })),
        []
    );
    let nproc = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNproc)
        .soft(10u64)
        .hard(10u64)
        .build()
        .unwrap();
    assert_eq!(
        nofile(&gen(&SpecOptions {
            inherit_rlimits: true,
            rlimits: vec![nproc],
            ..Default::default()
        })),
        [(PosixRlimitType::RlimitNproc, 10, 10)]
    );

    assert!(matches!(
        generate(
            &busybox(),
            None,
            &SpecOptions {
                oom_score_adj: Some(2000),
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn namespaces_host_and_path() {
    let spec = gen(&SpecOptions {
        namespaces: Namespaces {
            network: NamespaceMode::Path("/var/run/netns/cni-1".into()),
            pid: NamespaceMode::Host,
            ipc: NamespaceMode::Path("/proc/42/ns/ipc".into()),
            uts: NamespaceMode::Host,
            cgroup: NamespaceMode::Host,
        },
        ..Default::default()
    });
    let ns = linux(&spec).namespaces().clone().unwrap();
    let find = |t| ns.iter().find(|n| n.typ() == t);
    assert!(find(LinuxNamespaceType::Pid).is_none());
    assert!(find(LinuxNamespaceType::Uts).is_none());
    assert!(find(LinuxNamespaceType::Cgroup).is_none());
    assert_eq!(
        find(LinuxNamespaceType::Network).unwrap().path().as_deref(),
        Some(Path::new("/var/run/netns/cni-1"))
    );
    assert_eq!(
        find(LinuxNamespaceType::Ipc).unwrap().path().as_deref(),
        Some(Path::new("/proc/42/ns/ipc"))
    );
    let mnt = find(LinuxNamespaceType::Mount).unwrap();
    assert!(mnt.path().is_none());

    // Relative namespace path; hostname with the host's UTS namespace.
    for opts in [
        SpecOptions {
            namespaces: Namespaces {
                network: NamespaceMode::Path("netns".into()),
                ..Default::default()
            },
            ..Default::default()
        },
        SpecOptions {
            hostname: Some("x".into()),
            namespaces: Namespaces {
                uts: NamespaceMode::Host,
                ..Default::default()
            },
            ..Default::default()
        },
    ] {
        assert!(matches!(
            generate(&busybox(), None, &opts),
            Err(Error::InvalidArgument(_))
        ));
    }
}

fn bind(src: &str, dest: &str) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into());
    m.set_source(Some(src.into()));
    m.set_typ(Some("bind".into()));
    m.set_options(Some(vec!["rbind".into(), "ro".into()]));
    m
}

#[test]
fn user_mounts_replace_defaults() {
    let mut shm = Mount::default();
    shm.set_destination("/dev/shm/".into());
    shm.set_typ(Some("tmpfs".into()));
    shm.set_source(Some("shm".into()));
    shm.set_options(Some(vec!["size=1g".into()]));
    let spec = gen(&SpecOptions {
        mounts: vec![bind("/srv/data", "/data/sub"), bind("/srv", "/data"), shm],
        ..Default::default()
    });
    let mounts = spec.mounts().clone().unwrap();
    let at = |d: &str| -> Vec<&Mount> {
        mounts
            .iter()
            .filter(|m| m.destination() == Path::new(d))
            .collect()
    };
    let shm = at("/dev/shm");
    assert_eq!(shm.len(), 1);
    assert_eq!(
        shm[0].options().as_deref(),
        Some(&["size=1g".to_string()][..])
    );
    // Parents are mounted before children.
    let pos = |d: &str| {
        mounts
            .iter()
            .position(|m| m.destination() == Path::new(d))
            .unwrap()
    };
    assert!(pos("/data") < pos("/data/sub"));
    assert!(pos("/dev") < pos("/dev/shm"));

    // A bind over /sys replaces /sys/fs/cgroup as well.
    let spec = gen(&SpecOptions {
        mounts: vec![bind("/sys", "/sys")],
        ..Default::default()
    });
    let mounts = spec.mounts().clone().unwrap();
    assert!(!mounts
        .iter()
        .any(|m| m.destination() == Path::new("/sys/fs/cgroup")));
    assert_eq!(
        mounts
            .iter()
            .filter(|m| m.destination() == Path::new("/sys"))
            .count(),
        1
    );

    for bad in [
        bind("/srv", "relative"),
        bind("/srv", "/a/../b"),
        bind("/srv", "/"),
        bind("srv", "/data"),
    ] {
        let err = generate(
            &busybox(),
            None,
            &SpecOptions {
                mounts: vec![bad],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}

#[test]
fn resources_sysctls_annotations_cgroups_path() {
    let spec = gen(&SpecOptions {
        memory_limit: Some(64 << 20),
        memory_swap: Some(128 << 20),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        cpu_shares: Some(512),
        cpuset_cpus: Some("0-1".into()),
        cpuset_mems: Some("0".into()),
        hugepage_limits: vec![("2MB".into(), 4 << 20), ("1GB".into(), 0)],
        unified: [("memory.high".to_string(), "1G".to_string())].into(),
        pids_limit: Some(100),
        cgroups_path: Some("/wharf/default/c1".into()),
        sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
        annotations: [("io.wharf.test".to_string(), "yes".to_string())].into(),
        ..Default::default()
    });
    let l = linux(&spec);
    let r = l.resources().as_ref().unwrap();
    let mem = r.memory().unwrap();
    assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(128 << 20)));
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(
        (cpu.quota(), cpu.period(), cpu.shares()),
        (Some(50_000), Some(100_000), Some(512))
    );
    assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
    assert_eq!(cpu.mems().as_deref(), Some("0"));
    let huge: Vec<(String, i64)> = r
        .hugepage_limits()
        .as_ref()
        .unwrap()
        .iter()
        .map(|h| (h.page_size().clone(), h.limit()))
        .collect();
    assert_eq!(huge, [("2MB".to_string(), 4 << 20), ("1GB".to_string(), 0)]);
    assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1G");
    assert_eq!(r.pids().unwrap().limit(), 100);
    assert_eq!(
        l.cgroups_path().as_deref(),
        Some(Path::new("/wharf/default/c1"))
    );
    assert_eq!(l.sysctl().as_ref().unwrap()["net.ipv4.ip_forward"], "1");
    assert_eq!(spec.annotations().as_ref().unwrap()["io.wharf.test"], "yes");

    let bad = |opts: SpecOptions| {
        let err = generate(&busybox(), None, &opts).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    };
    bad(SpecOptions {
        memory_limit: Some(0),
        ..Default::default()
    });
    bad(SpecOptions {
        memory_limit: Some(100 << 20),
        memory_swap: Some(50 << 20),
        ..Default::default()
    });
    bad(SpecOptions {
        cpu_period: Some(10),
        ..Default::default()
    });
    bad(SpecOptions {
        cpuset_cpus: Some("all".into()),
        ..Default::default()
    });
    bad(SpecOptions {
        cpuset_mems: Some("node0".into()),
        ..Default::default()
    });
    // A page size or unified key names a file in the cgroup: nothing that walks out of it.
    for size in ["2MB/../../x", "3MB", "2mb", "MB", "0MB", "99999999999PB"] {
        bad(SpecOptions {
            hugepage_limits: vec![(size.into(), 1 << 21)],
            ..Default::default()
        });
    }
    for key in [
        "../memory.high",
        "memory.high/../x",
        "/etc/passwd",
        "memory",
        ".high",
    ] {
        bad(SpecOptions {
            unified: [(key.to_string(), "1".to_string())].into(),
            ..Default::default()
        });
    }
    bad(SpecOptions {
        sysctls: [("kernel.panic".to_string(), "1".to_string())].into(),
        ..Default::default()
    });
    bad(SpecOptions {
        sysctls: [("net.ipv4.ip_forward".to_string(), "1".to_string())].into(),
        namespaces: Namespaces {
            network: NamespaceMode::Host,
            ..Default::default()
        },
        ..Default::default()
    });
}

fn allowed_names(s: &LinuxSeccomp) -> HashSet<String> {
    s.syscalls()
        .iter()
        .flatten()
        .filter(|r| r.action() == LinuxSeccompAction::ScmpActAllow)
        .flat_map(|r| r.names().clone())
        .collect()
}

const DENIED_BY_DEFAULT: &[&str] = &[
    "keyctl",
    "add_key",
    "request_key",
    "unshare",
    "mount",
    "umount2",
    "pivot_root",
    "swapon",
    "swapoff",
    "reboot",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "bpf",
    "perf_event_open",
    "setns",
    "clone3",
    "open_by_handle_at",
    "acct",
    "quotactl",
    "lookup_dcookie",
    "mbind",
    "move_pages",
    "set_mempolicy",
    "userfaultfd",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "vhangup",
    "name_to_handle_at",
    "syslog",
    "nfsservctl",
    "io_uring_setup",
];

#[test]
fn default_seccomp_denies_the_dangerous_syscalls() {
    let s = default_seccomp();
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(json["defaultErrnoRet"], 1);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            json["architectures"],
            serde_json::json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
        );
    }
    let allowed = allowed_names(&s);
    assert!(allowed.len() > 250, "{}", allowed.len());
    for name in [
        "read",
        "write",
        "execve",
        "clone",
        "chroot",
        "socket",
        "personality",
    ] {
        assert!(allowed.contains(name), "{name} should be allowed");
    }
    for name in DENIED_BY_DEFAULT {
        assert!(!allowed.contains(*name), "{name} must not be allowed");
    }
    // clone is only allowed without namespace flags; clone3 fails with ENOSYS.
    for r in s.syscalls().iter().flatten() {
        if r.names().iter().any(|n| n == "clone") {
            assert!(r.args().as_ref().is_some_and(|a| a.len() == 1), "{r:?}");
        }
        if r.names().iter().any(|n| n == "clone3") {
            assert_eq!(r.action(), LinuxSeccompAction::ScmpActErrno);
            assert_eq!(r.errno_ret(), Some(libc::ENOSYS as u32));
        }
    }
    // Through a whole spec, the JSON names no denied syscall in an allow rule.
    let spec = serde_json::to_value(gen(&SpecOptions::default())).unwrap();
    for rule in spec["linux"]["seccomp"]["syscalls"].as_array().unwrap() {
        if rule["action"] == "SCMP_ACT_ALLOW" {
            let names = rule["names"].to_string();
            assert!(!names.contains("\"keyctl\"") && !names.contains("\"unshare\""));
        }
    }
}

#[test]
fn cap_add_opens_the_gated_syscalls() {
    let target = Target {
        arch: seccomp::go_arch().into(),
        kernel: Some((6, 1)),
    };
    let mut with_admin = default_capabilities();
    with_admin.push("CAP_SYS_ADMIN".into());
    let s = seccomp::default_seccomp_for(&with_admin, &target);
    let allowed = allowed_names(&s);
    for name in ["mount", "unshare", "setns", "umount2", "clone3"] {
        assert!(allowed.contains(name), "{name}");
    }
    // clone is unconditional with SYS_ADMIN and clone3 is no longer ENOSYS.
    assert!(s
        .syscalls()
        .iter()
        .flatten()
        .all(|r| !r.names().iter().any(|n| n == "clone") || r.args().is_none()));
    assert!(!allowed.contains("keyctl"));

    // Via generate: --cap-add SYS_TIME allows settimeofday; dropping SYS_CHROOT denies chroot.
    let spec = gen(&SpecOptions {
        cap_add: vec!["sys_time".into()],
        cap_drop: vec!["sys_chroot".into()],
        ..Default::default()
    });
    let allowed = allowed_names(linux(&spec).seccomp().as_ref().unwrap());
    assert!(allowed.contains("settimeofday") && !allowed.contains("chroot"));

    // ptrace follows the kernel version.
    let old = Target {
        kernel: Some((4, 4)),
        ..target.clone()
    };
    assert!(allowed_names(&seccomp::default_seccomp_for(
        &default_capabilities(),
        &target
    ))
    .contains("ptrace"));
    assert!(
        !allowed_names(&seccomp::default_seccomp_for(&default_capabilities(), &old))
            .contains("ptrace")
    );

    // Unconfined and custom profiles.
    let spec = gen(&SpecOptions {
        seccomp: Seccomp::Unconfined,
        ..Default::default()
    });
    assert!(linux(&spec).seccomp().is_none());
    let custom = seccomp::default_seccomp_for(&[], &target);
    let spec = gen(&SpecOptions {
        seccomp: Seccomp::Custom(custom.clone()),
        ..Default::default()
    });
    assert_eq!(linux(&spec).seccomp().as_ref(), Some(&custom));
}

#[test]
fn seccomp_profiles_round_trip_through_serde() {
    let s = default_seccomp();
    let json = serde_json::to_string_pretty(&s).unwrap();
    let back: LinuxSeccomp = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);

    let p = default_profile();
    let json = serde_json::to_vec(&p).unwrap();
    assert_eq!(Profile::parse(&json).unwrap(), p);
    // The docker-format profile resolves to the same filter as default_seccomp().
    assert_eq!(
        Profile::parse(&json)
            .unwrap()
            .resolve(&default_capabilities(), &Target::host()),
        s
    );
}

#[test]
fn docker_format_profile_file_loads_and_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.json");
    std::fs::write(
        &path,
        r#"{
          "defaultAction": "SCMP_ACT_ERRNO",
          "defaultErrnoRet": 1,
          "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
          ],
          "syscalls": [
            {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
            {"name": "getpid", "action": "SCMP_ACT_ALLOW", "comment": "old single-name form"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}],
             "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390x"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}}
          ]
        }"#,
    )
    .unwrap();
    let Seccomp::Profile(p) = Seccomp::from_file(&path).unwrap() else {
        panic!("expected a profile");
    };
    let target = Target {
        arch: "amd64".into(),
        kernel: Some((6, 1)),
    };
    let s = p.resolve(&default_capabilities(), &target);
    assert_eq!(
        s.architectures().as_deref(),
        Some(
            &[
                oci_spec::runtime::Arch::ScmpArchX86_64,
                oci_spec::runtime::Arch::ScmpArchX86,
                oci_spec::runtime::Arch::ScmpArchX32
            ][..]
        )
    );
    let allowed = allowed_names(&s);
    for n in ["read", "getpid", "clone", "ptrace"] {
        assert!(allowed.contains(n), "{n}");
    }
    assert!(!allowed.contains("mount"));
    let admin = p.resolve(&["sys_admin".into()], &target);
    let allowed = allowed_names(&admin);
    assert!(allowed.contains("mount") && !allowed.contains("clone"));

    // Through generate, with the container's caps.
    let spec = gen(&SpecOptions {
        seccomp: Seccomp::Profile(p),
        cap_add: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    assert!(allowed_names(linux(&spec).seccomp().as_ref().unwrap()).contains("mount"));

    // An OCI-format object loads too; garbage is InvalidArgument.
    std::fs::write(
        &path,
        serde_json::to_vec(&seccomp::default_seccomp_for(&[], &target)).unwrap(),
    )
    .unwrap();
    assert!(Seccomp::from_file(&path).is_ok());
    std::fs::write(&path, r#"{"defaultAction": "SCMP_ACT_NOPE"}"#).unwrap();
    assert!(matches!(
        Seccomp::from_file(&path),
        Err(Error::InvalidArgument(_))
    ));
    std::fs::write(
        &path,
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    assert!(matches!(
        Seccomp::from_file(&path),
        Err(Error::InvalidArgument(_))
    ));
    assert!(Seccomp::from_file(&dir.path().join("missing.json"))
        .unwrap_err()
        .is_not_found());
}

#[test]
fn device_passthrough() {
    if !Path::new("/dev/null").exists() {
        return;
    }
    let spec = gen(&SpecOptions {
        devices: vec![DeviceMapping {
            host_path: "/dev/null".into(),
            container_path: "/dev/mynull".into(),
            permissions: "rw".into(),
        }],
        ..Default::default()
    });
    let l = linux(&spec);
    let d = &l.devices().as_ref().unwrap()[0];
    assert_eq!(d.path(), Path::new("/dev/mynull"));
    assert_eq!((d.major(), d.minor()), (1, 3));
    let rules = l.resources().as_ref().unwrap().devices().clone().unwrap();
    assert_eq!(rules.last().unwrap().to_string(), "c 1:3 rw");

    for bad in [
        DeviceMapping {
            host_path: "/dev/null".into(),
            permissions: "rwx".into(),
            ..Default::default()
        },
        DeviceMapping {
            host_path: "/etc/hostname".into(),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            generate(
                &busybox(),
                None,
                &SpecOptions {
                    devices: vec![bad],
                    ..Default::default()
                }
            ),
            Err(Error::InvalidArgument(_)) | Err(Error::Io { .. })
        ));
    }
}

#[test]
fn etc_hosts_and_resolv_conf() {
    let h = etc::hosts(
        "web",
        Some("10.4.0.7"),
        &[("db".to_string(), "10.4.0.8".to_string())],
    );
    assert!(h.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
    assert!(h.contains("\n10.4.0.7\tweb\n"));
    assert!(h.ends_with("10.4.0.8\tdb\n"));
    assert!(etc::hosts("web", None, &[]).contains("127.0.0.1\tweb\n"));

    let host = "# generated\nnameserver 127.0.0.53\nnameserver ::1\nsearch corp.example\noptions edns0 trust-ad\n";
    assert_eq!(
        etc::resolv_conf(host, &[], &[], &[]),
        "search corp.example\nnameserver 8.8.8.8\nnameserver 8.8.4.4\noptions edns0 trust-ad\n"
    );
    let host = "nameserver 10.0.0.2\nnameserver 127.0.0.1\n";
    assert_eq!(
        etc::resolv_conf(host, &[], &[], &[]),
        "nameserver 10.0.0.2\n"
    );
    assert_eq!(
        etc::resolv_conf(
            "search a\nnameserver 10.0.0.2\n",
            &["1.1.1.1".into()],
            &["svc.cluster.local".into(), "cluster.local".into()],
            &["ndots:5".into()]
        ),
        "search svc.cluster.local cluster.local\nnameserver 1.1.1.1\noptions ndots:5\n"
    );
    assert_eq!(
        etc::resolv_conf("search a\nnameserver 10.0.0.2\n", &[], &[".".into()], &[]),
        "nameserver 10.0.0.2\n"
    );
}

/// Compiles the resolved default profile with libseccomp the way the shim's runtime (youki's
/// libcontainer 0.7) does — or runc, with `runc_masks` — loads it in a forked child and checks
/// which syscalls get through. `errno` stands in for the default EPERM so the filter's answer
/// cannot be mistaken for the kernel's own permission check.
#[cfg(target_os = "linux")]
fn run_filtered(
    profile: &LinuxSeccomp,
    runc_masks: bool,
    errno: i32,
    check: impl FnOnce() -> i32,
) -> i32 {
    use libseccomp::{
        ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
    };
    use oci_spec::runtime::{Arch, LinuxSeccompOperator};

    let action = |a: LinuxSeccompAction, e: Option<u32>| match a {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            let e = e.map(|e| e as i32).unwrap_or(libc::EPERM);
            ScmpAction::Errno(if e == libc::EPERM { errno } else { e })
        }
        other => panic!("unexpected action {other:?}"),
    };
    let default = action(profile.default_action(), profile.default_errno_ret());
    let mut ctx = ScmpFilterContext::new(default).unwrap();
    for arch in profile.architectures().iter().flatten() {
        let a = match arch {
            Arch::ScmpArchX86_64 => ScmpArch::X8664,
            Arch::ScmpArchX86 => ScmpArch::X86,
            Arch::ScmpArchX32 => ScmpArch::X32,
            Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
            Arch::ScmpArchArm => ScmpArch::Arm,
            other => panic!("unexpected arch {other:?}"),
        };
        ctx.add_arch(a).unwrap();
    }
    ctx.set_ctl_nnp(false).unwrap();
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            continue;
        }
        for name in rule.names() {
            let sc = ScmpSyscall::from_name(name)
                .unwrap_or_else(|e| panic!("libseccomp does not know {name}: {e}"));
            match rule.args() {
                None => {
                    ctx.add_rule(act, sc).unwrap();
                }
                Some(args) => {
                    let cmps: Vec<ScmpArgCompare> = args
                        .iter()
                        .map(|a| {
                            let op = match a.op() {
                                LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
                                LinuxSeccompOperator::ScmpCmpMaskedEq if runc_masks => {
                                    return ScmpArgCompare::new(
                                        a.index() as u32,
                                        ScmpCompareOp::MaskedEqual(a.value()),
                                        a.value_two().unwrap_or(0),
                                    )
                                }
                                LinuxSeccompOperator::ScmpCmpMaskedEq => {
                                    ScmpCompareOp::MaskedEqual(a.value_two().unwrap_or(0))
                                }
                                other => panic!("unexpected op {other:?}"),
                            };
                            ScmpArgCompare::new(a.index() as u32, op, a.value())
                        })
                        .collect();
                    // Comparisons on the same argument are separate rules (runc and youki).
                    let same_index =
                        cmps.len() > 1 && args.iter().all(|a| a.index() == args[0].index());
                    if same_index {
                        for c in &cmps {
                            ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                                .unwrap();
                        }
                    } else {
                        ctx.add_rule_conditional(act, sc, &cmps).unwrap();
                    }
                }
            }
        }
    }
    // SAFETY: the child only loads the prepared filter, makes raw syscalls and _exits.
    match unsafe { libc::fork() } {
        0 => {
            let code = unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(100);
                }
                if ctx.load().is_err() {
                    libc::_exit(101);
                }
                check()
            };
            unsafe { libc::_exit(code) }
        }
        pid if pid > 0 => {
            let mut status = 0;
            unsafe { libc::waitpid(pid, &mut status, 0) };
            assert!(libc::WIFEXITED(status), "child died: status {status}");
            libc::WEXITSTATUS(status)
        }
        _ => panic!("fork failed"),
    }
}

/// Raw syscall returning errno (0 on success); a successful clone's child exits at once.
#[cfg(target_os = "linux")]
unsafe fn sys(nr: libc::c_long, a: libc::c_ulong, b: libc::c_ulong) -> i32 {
    let r = libc::syscall(
        nr,
        a,
        b,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
        0 as libc::c_ulong,
    );
    if r == 0 && (nr == libc::SYS_clone) {
        libc::_exit(0);
    }
    if r < 0 {
        *libc::__errno_location()
    } else {
        if nr == libc::SYS_clone {
            libc::waitpid(r as i32, std::ptr::null_mut(), 0);
        }
        0
    }
}

#[cfg(target_os = "linux")]
#[test]
fn default_profile_is_enforced_by_libseccomp() {
    // Every name is one libseccomp (2.5 on Debian 12) knows.
    for name in seccomp::default_profile_syscall_names() {
        assert!(
            libseccomp::ScmpSyscall::from_name(&name).is_ok(),
            "libseccomp does not know {name}"
        );
    }
    const MARK: i32 = libc::EHWPOISON;
    let ns_flags = (libc::CLONE_NEWUTS | libc::SIGCHLD) as libc::c_ulong;
    let plain = libc::SIGCHLD as libc::c_ulong;
    let target = Target::host();
    // Without libcontainer_compat(), libcontainer sees a zero mask and clone is allowed with any
    // flags: the reason the shim must apply it.
    let raw = seccomp::default_seccomp_for(&default_capabilities(), &target);
    let code = run_filtered(&raw, false, MARK, || unsafe {
        (sys(libc::SYS_clone, ns_flags, 0) == MARK) as i32
    });
    assert_eq!(
        code, 0,
        "expected the uncompensated rule to let clone through"
    );
    // runc reads the spec as written; libcontainer gets it through libcontainer_compat().
    let for_runtime = |s: LinuxSeccomp, runc: bool| {
        if runc {
            s
        } else {
            seccomp::libcontainer_compat(&s)
        }
    };
    for runc_masks in [false, true] {
        let profile = for_runtime(
            seccomp::default_seccomp_for(&default_capabilities(), &target),
            runc_masks,
        );
        let code = run_filtered(&profile, runc_masks, MARK, || unsafe {
            let checks: [(i32, i32); 7] = [
                (sys(libc::SYS_getpid, 0, 0), 0),
                (sys(libc::SYS_unshare, libc::CLONE_NEWUTS as _, 0), MARK),
                (sys(libc::SYS_keyctl, 0, 0), MARK),
                (sys(libc::SYS_clone, plain, 0), 0),
                (sys(libc::SYS_clone, ns_flags, 0), MARK),
                (sys(libc::SYS_clone3, 0, 0), libc::ENOSYS),
                (sys(libc::SYS_personality, 0x0040000, 0), MARK),
            ];
            for (i, (got, want)) in checks.iter().enumerate() {
                if got != want {
                    return 10 + i as i32;
                }
            }
            0
        });
        assert_eq!(
            code,
            0,
            "check {} failed (runc masks: {runc_masks})",
            code - 10
        );

        // With SYS_ADMIN, unshare and namespace clones pass the filter (the kernel decides).
        let mut with_admin = default_capabilities();
        with_admin.push("CAP_SYS_ADMIN".into());
        let profile = for_runtime(
            seccomp::default_seccomp_for(&with_admin, &target),
            runc_masks,
        );
        let code = run_filtered(&profile, runc_masks, MARK, || unsafe {
            let checks = [
                sys(libc::SYS_unshare, libc::CLONE_NEWUTS as _, 0),
                sys(libc::SYS_clone, ns_flags, 0),
            ];
            for (i, got) in checks.iter().enumerate() {
                if *got == MARK {
                    return 20 + i as i32;
                }
            }
            0
        });
        assert_eq!(
            code,
            0,
            "SYS_ADMIN check {} (runc masks: {runc_masks})",
            code - 20
        );
    }
}

#[test]
fn hugepage_sizes_read_as_the_kernel_names_them() {
    use super::page_size_bytes;
    assert_eq!(page_size_bytes("64KB").unwrap(), 64 << 10);
    assert_eq!(page_size_bytes("2MB").unwrap(), 2 << 20);
    assert_eq!(page_size_bytes("1GB").unwrap(), 1 << 30);
    assert!(page_size_bytes("2MiB").is_err());
    assert!(page_size_bytes("16384PB").is_err());
}

#[test]
fn shim_groups_from_annotations() {
    let pod = br#"{"annotations": {"io.kubernetes.cri.sandbox-id": "pod1"}}"#;
    assert_eq!(shim_group(pod, "c1"), "pod1");
    let both = br#"{"annotations": {"io.kubernetes.cri.sandbox-id": "pod1",
        "io.containerd.runc.v2.group": "g"}}"#;
    assert_eq!(shim_group(both, "c1"), "g");
    assert_eq!(shim_group(br#"{"annotations": {}}"#, "c1"), "c1");
    assert_eq!(shim_group(br#"{"ociVersion": "1.0.2"}"#, "c1"), "c1");
    assert_eq!(
        shim_group(
            br#"{"annotations": {"io.kubernetes.cri.sandbox-id": ""}}"#,
            "c1"
        ),
        "c1"
    );
    assert_eq!(shim_group(b"not json", "c1"), "c1");
}
