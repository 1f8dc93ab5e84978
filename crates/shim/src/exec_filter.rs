//! The container's seccomp filter for exec'd processes under the built-in runtime.
//!
//! libcontainer's tenant (exec) path builds the new process's spec from the container's
//! namespaces and cgroup only, so the container's seccomp profile would be lost and an exec'd
//! process would run unfiltered (runc applies the container's profile to every exec). The shim
//! puts it back: the workload executor loads the filter right before execve.
//!
//! Loading a filter needs either no_new_privs or CAP_SYS_ADMIN, and by the time the executor
//! runs libcontainer has already dropped capabilities. When the process has no_new_privs the
//! filter loads as is. Otherwise the process is started with CAP_SYS_ADMIN and CAP_SETPCAP
//! added to its sets, and the executor drops them again right after loading the filter: the
//! same order runc and libcontainer's init use (filter first, then the capability drop).

use std::path::{Path, PathBuf};

use libcontainer::syscall::syscall::create_syscall;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, LinuxSeccomp, Process, Spec};

/// What the executor of an exec'd process applies just before execve.
#[derive(Clone, Debug)]
pub struct ExecFilter {
    pub seccomp: LinuxSeccomp,
    /// The capabilities the process must end with, when they were widened to load the filter.
    pub restore: Option<LinuxCapabilities>,
}

/// The filter for an exec of the container in `bundle` whose process spec is `process_file`,
/// and the process spec file to hand to libcontainer (a widened copy when capabilities had to
/// be added to load the filter).
pub fn plan(bundle: &Path, process_file: &Path) -> Result<(Option<ExecFilter>, PathBuf), String> {
    let config = bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("read {}: {e}", config.display()))?;
    let Some(seccomp) = spec.linux().as_ref().and_then(|l| l.seccomp().clone()) else {
        return Ok((None, process_file.to_path_buf()));
    };
    if seccomp.listener_path().is_some() {
        return Err("exec in a container whose seccomp profile uses a listener is not supported by the built-in runtime".into());
    }
    let text =
        std::fs::read(process_file).map_err(|e| format!("read {}: {e}", process_file.display()))?;
    let mut process: Process = serde_json::from_slice(&text)
        .map_err(|e| format!("parse {}: {e}", process_file.display()))?;
    if process.no_new_privileges() == Some(true) {
        return Ok((
            Some(ExecFilter {
                seccomp,
                restore: None,
            }),
            process_file.to_path_buf(),
        ));
    }
    // No capabilities listed: libcontainer leaves the shim's full set, CAP_SYS_ADMIN included.
    let Some(intended) = process.capabilities().clone() else {
        return Ok((
            Some(ExecFilter {
                seccomp,
                restore: None,
            }),
            process_file.to_path_buf(),
        ));
    };
    process.set_capabilities(Some(widen(&intended)));
    let widened = process_file.with_extension("filter.json");
    let bytes =
        serde_json::to_vec(&process).map_err(|e| format!("encode exec process spec: {e}"))?;
    std::fs::write(&widened, bytes).map_err(|e| format!("write {}: {e}", widened.display()))?;
    Ok((
        Some(ExecFilter {
            seccomp,
            restore: Some(intended),
        }),
        widened,
    ))
}

/// `caps` plus what loading a filter and dropping the bounding set afterwards need.
fn widen(caps: &LinuxCapabilities) -> LinuxCapabilities {
    let add = |set: &Option<Capabilities>| -> Option<Capabilities> {
        let mut s = set.clone().unwrap_or_default();
        s.insert(Capability::SysAdmin);
        s.insert(Capability::Setpcap);
        Some(s)
    };
    let mut out = caps.clone();
    out.set_bounding(add(caps.bounding()))
        .set_effective(add(caps.effective()))
        .set_permitted(add(caps.permitted()));
    out
}

/// Runs in the new process, after libcontainer's set-up and just before execve.
pub fn apply(f: &ExecFilter) -> Result<(), String> {
    libcontainer::seccomp::initialize_seccomp(&f.seccomp)
        .map_err(|e| format!("load the container's seccomp filter: {e}"))?;
    if let Some(caps) = &f.restore {
        let syscall = create_syscall();
        libcontainer::capabilities::reset_effective(syscall.as_ref())
            .map_err(|e| format!("reset capabilities: {e}"))?;
        libcontainer::capabilities::drop_privileges(caps, syscall.as_ref())
            .map_err(|e| format!("drop capabilities after loading the filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widen_adds_sys_admin_and_setpcap_to_the_sets_that_gate_filter_loading() {
        let mut caps = LinuxCapabilities::default();
        let mut only_chown = Capabilities::new();
        only_chown.insert(Capability::Chown);
        caps.set_bounding(Some(only_chown.clone()))
            .set_effective(Some(only_chown.clone()))
            .set_permitted(Some(only_chown.clone()))
            .set_inheritable(None)
            .set_ambient(None);
        let w = widen(&caps);
        for set in [w.bounding(), w.effective(), w.permitted()] {
            let set = set.clone().unwrap_or_default();
            assert!(set.contains(&Capability::SysAdmin));
            assert!(set.contains(&Capability::Setpcap));
            assert!(set.contains(&Capability::Chown));
        }
        assert!(w.inheritable().is_none());
    }
}
