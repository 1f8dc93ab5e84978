//! AppArmor for a pod's containers where the kernel has it, as containerd's CRI plugin does:
//! RuntimeDefault (and no profile at all) confines the container in wharf's own profile,
//! loaded on first use with `apparmor_parser`; Localhost names a profile already loaded;
//! Unconfined and privileged containers run without one. Where AppArmor is off, requests
//! are ignored, as containerd does.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use wharf_api::cri as pb;

use crate::{Error, Result};

/// The profile of RuntimeDefault.
pub const DEFAULT_PROFILE: &str = "wharf-default";

/// What a container asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Unconfined,
    RuntimeDefault,
    Localhost(String),
}

/// The choice of a security context: its `apparmor` profile, else the deprecated string
/// (`runtime/default`, `unconfined`, `localhost/<name>`); neither means RuntimeDefault.
/// A privileged container is unconfined unless it names a profile of its own.
#[allow(deprecated)] // apparmor_profile: older kubelets still send it
pub fn choice(sc: &pb::LinuxContainerSecurityContext) -> Result<Choice> {
    use pb::security_profile::ProfileType;
    let asked = match &sc.apparmor {
        Some(p) => match ProfileType::try_from(p.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Choice::RuntimeDefault,
            Ok(ProfileType::Unconfined) => Choice::Unconfined,
            Ok(ProfileType::Localhost) => localhost(&p.localhost_ref)?,
            Err(_) => {
                return Err(Error::InvalidArgument(format!(
                    "apparmor profile type {}",
                    p.profile_type
                )))
            }
        },
        None => match sc.apparmor_profile.as_str() {
            "" | "runtime/default" => Choice::RuntimeDefault,
            "unconfined" => Choice::Unconfined,
            p => match p.strip_prefix("localhost/") {
                Some(name) => localhost(name)?,
                None => {
                    return Err(Error::InvalidArgument(format!(
                    "apparmor profile {p:?}: want runtime/default, unconfined or localhost/<name>"
                )))
                }
            },
        },
    };
    Ok(match asked {
        Choice::RuntimeDefault if sc.privileged => Choice::Unconfined,
        c => c,
    })
}

/// A Localhost profile is a loaded profile's name (`localhost/` in front is tolerated).
fn localhost(name: &str) -> Result<Choice> {
    let name = name.strip_prefix("localhost/").unwrap_or(name);
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidArgument(format!(
            "apparmor localhost profile {name:?} must be a profile name"
        )));
    }
    Ok(Choice::Localhost(name.to_string()))
}

/// The host's AppArmor: is it on, which profiles are loaded, how to load ours.
pub struct AppArmor {
    enabled: bool,
    /// The kernel's list of loaded profiles (`name (mode)` lines).
    profiles: PathBuf,
    /// Where our profile's source is written for the parser.
    dir: PathBuf,
    /// Serialises loading (two creates must not both run the parser).
    loading: Mutex<()>,
}

impl AppArmor {
    /// The host's: on when the module says so and its filesystem is there (containerd's test),
    /// and `disabled` (the `disable_apparmor` setting) is not set.
    pub fn host(state: &Path, disabled: bool) -> AppArmor {
        let on = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|s| s.starts_with('Y'))
            && Path::new("/sys/kernel/security/apparmor").is_dir();
        AppArmor {
            enabled: on && !disabled,
            profiles: PathBuf::from("/sys/kernel/security/apparmor/profiles"),
            dir: state.join("apparmor"),
            loading: Mutex::new(()),
        }
    }

    #[cfg(test)]
    fn at(profiles: &Path, dir: &Path) -> AppArmor {
        AppArmor {
            enabled: true,
            profiles: profiles.to_path_buf(),
            dir: dir.to_path_buf(),
            loading: Mutex::new(()),
        }
    }

    /// Whether profiles apply here (the kernel has AppArmor and it is not disabled).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The profile a container runs under; None: unconfined (or AppArmor is off). May run
    /// `apparmor_parser` (once): call it where blocking is fine.
    pub fn profile_for(&self, sc: &pb::LinuxContainerSecurityContext) -> Result<Option<String>> {
        let choice = choice(sc)?;
        if !self.enabled {
            return Ok(None);
        }
        match choice {
            Choice::Unconfined => Ok(None),
            Choice::Localhost(name) => {
                if self.loaded(&name)? {
                    Ok(Some(name))
                } else {
                    Err(Error::FailedPrecondition(format!(
                        "apparmor profile {name:?} is not loaded on this host"
                    )))
                }
            }
            Choice::RuntimeDefault => {
                self.ensure_default()?;
                Ok(Some(DEFAULT_PROFILE.to_string()))
            }
        }
    }

    fn loaded(&self, name: &str) -> Result<bool> {
        let text = std::fs::read_to_string(&self.profiles)
            .map_err(|e| Error::Internal(format!("read {}: {e}", self.profiles.display())))?;
        Ok(text
            .lines()
            .filter_map(|l| l.rsplit_once(" ("))
            .any(|(n, _)| n == name))
    }

    /// Loads wharf's profile unless the kernel has it already.
    fn ensure_default(&self) -> Result<()> {
        let _held = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if self.loaded(DEFAULT_PROFILE)? {
            return Ok(());
        }
        let text = default_profile(Path::new("/etc/apparmor.d"));
        let file = write_profile(&self.dir, &text)?;
        let out = std::process::Command::new("apparmor_parser")
            .args(["-K", "-r"])
            .arg(&file)
            .output()
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "AppArmor is on but apparmor_parser cannot run ({e}): install the apparmor \
                     package, or set disable_apparmor in the [cri] configuration"
                ))
            })?;
        if !out.status.success() {
            return Err(Error::Internal(format!(
                "apparmor_parser could not load {}: {}",
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }
}

/// Writes the profile source where the parser reads it (replaced whole, never half-written).
fn write_profile(dir: &Path, text: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::Internal(format!("create {}: {e}", dir.display())))?;
    let file = dir.join(DEFAULT_PROFILE);
    let tmp = dir.join(format!(".{DEFAULT_PROFILE}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &file))
        .map_err(|e| Error::Internal(format!("write {}: {e}", file.display())))?;
    Ok(file)
}

/// wharf's RuntimeDefault profile. It allows what a container normally does (files, network,
/// capabilities its spec grants, signals and ptrace among processes under this profile) and
/// denies what lets a root process in a container reach the host: mounting, the kernel's
/// memory and sysrq, firmware and LSM interfaces. The masked and read-only paths of the spec
/// and seccomp do the rest. The system's base abstraction is included where installed.
pub fn default_profile(apparmor_d: &Path) -> String {
    let has = |p: &str| apparmor_d.join(p).exists();
    let mut out = String::new();
    if has("abi/3.0") {
        out.push_str("abi <abi/3.0>,\n");
    }
    if has("tunables/global") {
        out.push_str("include <tunables/global>\n");
    }
    out.push_str(&format!(
        "\nprofile {DEFAULT_PROFILE} flags=(attach_disconnected,mediate_deleted) {{\n"
    ));
    if has("abstractions/base") {
        out.push_str("  include <abstractions/base>\n\n");
    }
    for rule in [
        "network,",
        "capability,",
        "file,",
        "umount,",
        "signal (receive) peer=unconfined,",
        &format!("signal (send,receive) peer={DEFAULT_PROFILE},"),
        &format!("ptrace (trace,read,tracedby,readby) peer={DEFAULT_PROFILE},"),
        "",
        "deny mount,",
        "deny /proc/sysrq-trigger rwklx,",
        "deny /proc/kcore rwklx,",
        "deny /proc/kmsg rwklx,",
        "deny /proc/sys/kernel/core_pattern w,",
        "deny /sys/firmware/** rwklx,",
        "deny /sys/kernel/security/** rwklx,",
    ] {
        if rule.is_empty() {
            out.push('\n');
        } else {
            out.push_str("  ");
            out.push_str(rule);
            out.push('\n');
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::security_profile::ProfileType;

    fn sc(
        profile: Option<(ProfileType, &str)>,
        legacy: &str,
        privileged: bool,
    ) -> pb::LinuxContainerSecurityContext {
        #[allow(deprecated)]
        pb::LinuxContainerSecurityContext {
            apparmor: profile.map(|(t, r)| pb::SecurityProfile {
                profile_type: t as i32,
                localhost_ref: r.into(),
            }),
            apparmor_profile: legacy.into(),
            privileged,
            ..Default::default()
        }
    }

    #[test]
    fn choices_follow_containerd() {
        let local = |n: &str| Choice::Localhost(n.into());
        for (ctx, want) in [
            (sc(None, "", false), Choice::RuntimeDefault),
            (sc(None, "runtime/default", false), Choice::RuntimeDefault),
            (sc(None, "unconfined", false), Choice::Unconfined),
            (sc(None, "localhost/k8s-nginx", false), local("k8s-nginx")),
            (
                sc(Some((ProfileType::RuntimeDefault, "")), "unconfined", false),
                Choice::RuntimeDefault,
            ),
            (
                sc(Some((ProfileType::Unconfined, "")), "", false),
                Choice::Unconfined,
            ),
            (
                sc(Some((ProfileType::Localhost, "k8s-nginx")), "", false),
                local("k8s-nginx"),
            ),
            (
                sc(Some((ProfileType::Localhost, "localhost/a")), "", false),
                local("a"),
            ),
            // Privileged: unconfined unless a profile is named.
            (sc(None, "", true), Choice::Unconfined),
            (
                sc(Some((ProfileType::RuntimeDefault, "")), "", true),
                Choice::Unconfined,
            ),
            (
                sc(Some((ProfileType::Localhost, "p")), "", true),
                local("p"),
            ),
        ] {
            assert_eq!(choice(&ctx).unwrap(), want, "{ctx:?}");
        }
        for bad in [
            sc(None, "docker-default", false),
            sc(Some((ProfileType::Localhost, "")), "", false),
            sc(Some((ProfileType::Localhost, "a b")), "", false),
        ] {
            assert!(
                matches!(choice(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn localhost_profiles_must_be_loaded_and_off_means_ignored() {
        let d = tempfile::tempdir().unwrap();
        let profiles = d.path().join("profiles");
        std::fs::write(&profiles, "k8s-nginx (enforce)\n/usr/bin/man (complain)\n").unwrap();
        let aa = AppArmor::at(&profiles, &d.path().join("state"));
        let local = |n: &str| sc(Some((ProfileType::Localhost, n)), "", false);
        assert_eq!(
            aa.profile_for(&local("k8s-nginx")).unwrap().as_deref(),
            Some("k8s-nginx")
        );
        assert_eq!(
            aa.profile_for(&local("/usr/bin/man")).unwrap().as_deref(),
            Some("/usr/bin/man")
        );
        assert!(matches!(
            aa.profile_for(&local("k8s")),
            Err(Error::FailedPrecondition(_))
        ));
        assert_eq!(
            aa.profile_for(&sc(None, "unconfined", false)).unwrap(),
            None
        );
        // Already loaded: RuntimeDefault needs no parser.
        std::fs::write(&profiles, format!("{DEFAULT_PROFILE} (enforce)\n")).unwrap();
        assert_eq!(
            aa.profile_for(&sc(None, "", false)).unwrap().as_deref(),
            Some(DEFAULT_PROFILE)
        );

        let off = AppArmor {
            enabled: false,
            ..AppArmor::at(&profiles, d.path())
        };
        assert_eq!(off.profile_for(&local("missing")).unwrap(), None);
        // A request that makes no sense is refused even where AppArmor is off.
        assert!(off.profile_for(&sc(None, "bogus", false)).is_err());
    }

    /// The profile compiles with the system's parser (in userspace: this kernel may lack
    /// AppArmor), includes and all.
    #[test]
    fn default_profile_compiles() {
        let d = tempfile::tempdir().unwrap();
        let text = default_profile(Path::new("/etc/apparmor.d"));
        assert!(
            text.contains("include <abstractions/base>"),
            "setup installs apparmor:\n{text}"
        );
        let file = write_profile(d.path(), &text).unwrap();
        let out = std::process::Command::new("apparmor_parser")
            .args(["-Q", "-K", "-o"])
            .arg(d.path().join("compiled"))
            .arg(&file)
            .output()
            .expect("apparmor_parser (scripts/setup.sh installs apparmor)");
        assert!(
            out.status.success(),
            "{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::metadata(d.path().join("compiled")).unwrap().len() > 0);
        // And a broken rule would have been caught.
        let bad = write_profile(d.path(), &text.replace("network,", "network bogus,")).unwrap();
        let out = std::process::Command::new("apparmor_parser")
            .args(["-Q", "-K"])
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!out.status.success());
    }
}
