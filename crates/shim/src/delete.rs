//! `delete`: the daemon's clean-up after a shim that died. Kills whatever is left of the
//! container, removes libcontainer's state and the cgroup, unmounts the rootfs and prints a
//! DeleteResponse (exit status 137, as containerd reports a task whose shim is gone).

use std::io::Write;
use std::path::PathBuf;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::Message;

use crate::args::Args;
use crate::cgroup::Cgroup;
use crate::events::timestamp;

pub fn run(args: &Args) -> Result<(), String> {
    let bundle = match &args.bundle {
        Some(b) => b.clone(),
        None => std::env::current_dir().map_err(|e| format!("bundle dir: {e}"))?,
    };
    let root = args.runtime_root(&args.id);
    let pid = crate::engine::delete_after_crash(&root, &args.id).map_or(0, |p| p.max(0) as u32);
    let _ = std::fs::remove_dir_all(&root);
    let rootfs = bundle.join("rootfs");
    let _ = wharf_core::mount::unmount(&rootfs);
    let config = std::fs::read(bundle.join("config.json")).unwrap_or_default();
    let cg_path = serde_json::from_slice::<oci_spec::runtime::Spec>(&config)
        .ok()
        .and_then(|s| s.linux().as_ref().and_then(|l| l.cgroups_path().clone()))
        .unwrap_or_else(|| PathBuf::from(format!("/{}/{}", args.namespace, args.id)));
    Cgroup::new(cg_path, args.id.clone()).remove_leftovers();
    // The socket may be a group's whose shim still serves other tasks (a pod's container that
    // failed to start): only a dead shim's goes.
    crate::daemon::remove_socket(
        &args.socket_path(&wharf_core::spec::shim_group(&config, &args.id)),
    );
    let resp = DeleteResponse {
        pid,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(timestamp(std::time::SystemTime::now())).into(),
        ..Default::default()
    };
    let bytes = resp
        .write_to_bytes()
        .map_err(|e| format!("encode response: {e}"))?;
    std::io::stdout()
        .write_all(&bytes)
        .map_err(|e| format!("write response: {e}"))?;
    Ok(())
}
