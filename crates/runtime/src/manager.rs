//! The shim manager: starts a shim per task (a pod's containers join its sandbox's shim) with
//! containerd's runtime v2 contract, keeps one ttrpc connection per task, finds them again after a
//! restart, and cleans up after dead ones.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::Message;
use tokio::sync::{mpsc, Mutex};
use wharf_core::{Error, Result};

use crate::bundle::Bundle;
use crate::client::Shim;

/// What a new task needs.
pub struct NewTask {
    pub namespace: String,
    pub id: String,
    /// Runtime name, e.g. `io.containerd.runc.v2` or `io.containerd.wharf.v2`.
    pub runtime: String,
    /// The OCI spec (config.json).
    pub spec: Vec<u8>,
    pub request: api::CreateTaskRequest,
}

pub struct Manager {
    /// `<state>/io.containerd.runtime.v2.task`
    state: PathBuf,
    /// `<root>/io.containerd.runtime.v2.task`
    root: PathBuf,
    /// The daemon's gRPC socket and its ttrpc twin, passed to shims.
    address: PathBuf,
    ttrpc_address: PathBuf,
    shims: Mutex<HashMap<(String, String), Arc<Shim>>>,
    /// Log forwarders, stopped when their task is deleted.
    logs: std::sync::Mutex<HashMap<(String, String), tokio::task::AbortHandle>>,
    /// Where shims that died are reported (namespace, id), for the daemon's exit events.
    deaths: std::sync::Mutex<Option<mpsc::UnboundedSender<(String, String)>>>,
    /// Configured shim binaries by runtime name (before containerd's naming rule).
    shim_overrides: std::collections::BTreeMap<String, String>,
}

/// wharf's own shim binary, which groups a pod's tasks (see [`Manager::create`]).
const OWN_SHIM: &str = "containerd-shim-wharf-v2";

/// `io.containerd.runc.v2` → `containerd-shim-runc-v2`.
pub fn shim_binary_name(runtime: &str) -> Result<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2
        || parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return Err(Error::InvalidArgument(format!(
            "invalid runtime name {runtime:?}"
        )));
    }
    let n = parts.len();
    Ok(format!("containerd-shim-{}-{}", parts[n - 2], parts[n - 1]))
}

/// Copies a shim's log FIFO into wharfd's log until the shim closes it for good (its task ends
/// with the returned handle's abort).
fn forward_log(bundle: &Path, id: &str) -> Option<tokio::task::AbortHandle> {
    use tokio::io::AsyncBufReadExt;
    // Read-write, so the FIFO never reports end-of-file between two writers (shim restarts).
    let rx = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(bundle.join("log"))
        .ok()?;
    let id = id.to_string();
    let task = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(rx).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "shim", id = %id, "{line}");
        }
    });
    Some(task.abort_handle())
}

/// Finds a shim binary next to the daemon's executable first, then in PATH.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::NotFound(format!(
        "runtime binary {name} (looked next to wharfd and in PATH)"
    )))
}

impl Manager {
    pub fn new(state: &Path, root: &Path, address: &Path, ttrpc_address: &Path) -> Manager {
        Manager {
            state: state.join("io.containerd.runtime.v2.task"),
            root: root.join("io.containerd.runtime.v2.task"),
            address: address.to_path_buf(),
            ttrpc_address: ttrpc_address.to_path_buf(),
            shims: Mutex::new(HashMap::new()),
            logs: std::sync::Mutex::new(HashMap::new()),
            deaths: std::sync::Mutex::new(None),
            shim_overrides: Default::default(),
        }
    }

    /// `<state>/io.containerd.runtime.v2.task`: one bundle per task, `<ns>/<id>`.
    pub fn bundle_root(&self) -> &Path {
        &self.state
    }

    /// `<root>/io.containerd.runtime.v2.task`: the bundles' `work` directories, `<ns>/<id>`.
    pub fn work_root(&self) -> &Path {
        &self.root
    }

    /// Shim binaries for runtime names, from the configuration (absolute paths, or names looked
    /// up as containerd's shims are).
    pub fn with_shims(mut self, shims: std::collections::BTreeMap<String, String>) -> Manager {
        self.shim_overrides = shims;
        self
    }

    /// The shim binary for a runtime name: a configured one, else containerd's naming rule.
    fn shim_binary(&self, runtime: &str) -> Result<PathBuf> {
        match self.shim_overrides.get(runtime) {
            Some(b) if Path::new(b).is_absolute() => {
                let p = PathBuf::from(b);
                if p.is_file() {
                    Ok(p)
                } else {
                    Err(Error::NotFound(format!(
                        "runtime {runtime}: configured shim {b} does not exist"
                    )))
                }
            }
            Some(b) if !b.is_empty() && !b.contains('/') => find_binary(b),
            Some(b) => Err(Error::InvalidArgument(format!(
                "runtime {runtime}: configured shim {b:?} must be a file name or an absolute path"
            ))),
            None => find_binary(&shim_binary_name(runtime)?),
        }
    }

    /// Shims that die from now on are reported on the returned channel; the daemon then calls
    /// [`Manager::shim_died`] and publishes the exit.
    pub fn watch_deaths(&self) -> mpsc::UnboundedReceiver<(String, String)> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut d) = self.deaths.lock() {
            *d = Some(tx);
        }
        rx
    }

    /// Keeps a Wait pending on the shim: it fails only when the connection drops, which is how
    /// a crashed shim shows (no polling, no thread per shim).
    fn monitor(&self, shim: &Arc<Shim>) {
        let Some(tx) = self.deaths.lock().ok().and_then(|d| d.clone()) else {
            return;
        };
        let shim = shim.clone();
        tokio::spawn(async move {
            if let Err(Error::Unavailable(_)) = shim.wait("").await {
                if !shim.closing.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = tx.send((shim.namespace.clone(), shim.id.clone()));
                }
            }
        });
    }

    /// Cleans up after a shim that crashed (`<shim> delete`: kill what is left, unmount,
    /// remove the bundle). The task stays listed, STOPPED, until the client deletes it.
    pub async fn shim_died(&self, ns: &str, id: &str) -> Option<api::DeleteResponse> {
        let shim = self.get(ns, id).await?;
        if shim.closing.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        tracing::warn!(namespace = ns, id, "shim died: cleaning up after it");
        Some(self.cleanup_dead(ns, id, &shim.bundle).await)
    }

    fn shim_command(
        &self,
        binary: &Path,
        ns: &str,
        id: &str,
        bundle: &Path,
    ) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(binary);
        c.arg("-namespace")
            .arg(ns)
            .arg("-address")
            .arg(&self.address)
            .arg("-publish-binary")
            .arg(std::env::current_exe().unwrap_or_else(|_| "wharfd".into()))
            .arg("-id")
            .arg(id);
        // As containerd does when it logs at debug level: the shim logs its own debug lines.
        if tracing::enabled!(target: "shim", tracing::Level::DEBUG) {
            c.arg("-debug");
        }
        c.current_dir(bundle)
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .env("GOMAXPROCS", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// The shim of a task, if it has one.
    pub async fn get(&self, ns: &str, id: &str) -> Option<Arc<Shim>> {
        self.shims
            .lock()
            .await
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
    }

    /// Every task of a namespace.
    pub async fn list(&self, ns: &str) -> Vec<Arc<Shim>> {
        self.shims
            .lock()
            .await
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Every task of every namespace.
    pub async fn all(&self) -> Vec<Arc<Shim>> {
        self.shims.lock().await.values().cloned().collect()
    }

    /// Creates a task: bundle, shim start, connect, Create. On failure nothing is left behind.
    pub async fn create(&self, mut t: NewTask) -> Result<(Arc<Shim>, u32)> {
        let key = (t.namespace.clone(), t.id.clone());
        if self.shims.lock().await.contains_key(&key) {
            return Err(Error::AlreadyExists(format!("task {}", t.id)));
        }
        let binary = self.shim_binary(&t.runtime)?;
        let bundle = Bundle::create(&self.state, &self.root, &t.namespace, &t.id, &t.spec)?;
        std::fs::write(
            bundle.path.join("shim-binary-path"),
            binary.as_os_str().as_encoded_bytes(),
        )
        .map_err(|e| Error::io("record shim binary", e))?;
        self.watch_log(&bundle.path, &t.namespace, &t.id);
        let mut req = std::mem::take(&mut t.request);
        req.id = t.id.clone();
        req.bundle = bundle.path.to_string_lossy().into_owned();
        let result = async {
            let t0 = std::time::Instant::now();
            let (shim, joined) = match self.join_group(&binary, &t, &bundle.path).await {
                Some(shim) => (shim, true),
                None => {
                    let address = self.start_shim(&binary, &t, &bundle.path).await?;
                    let shim =
                        Shim::connect(&address, &t.namespace, &t.id, bundle.path.clone()).await?;
                    (shim, false)
                }
            };
            let t1 = std::time::Instant::now();
            let resp = match shim.create(&req).await {
                Ok(r) => r,
                Err(e) => {
                    // The shim serves nothing now: stop it, as containerd does after a failed
                    // create (the `delete` below only cleans up the container's state).
                    if let Err(se) = shim.shutdown().await {
                        tracing::debug!(id = %t.id, error = %se, "shutdown after failed create");
                    }
                    return Err(e);
                }
            };
            tracing::debug!(
                id = %t.id,
                joined,
                shim_us = (t1 - t0).as_micros() as u64,
                create_us = t1.elapsed().as_micros() as u64,
                "task created"
            );
            Ok((Arc::new(shim), resp.pid))
        }
        .await;
        match result {
            Ok((shim, pid)) => {
                self.monitor(&shim);
                self.shims.lock().await.insert(key, shim.clone());
                Ok((shim, pid))
            }
            Err(e) => {
                self.cleanup_dead(&t.namespace, &t.id, &bundle.path).await;
                Err(e)
            }
        }
    }

    /// `<shim> start`: the shim's address (a new shim's, or its group's running one).
    async fn start_shim(&self, binary: &Path, t: &NewTask, bundle: &Path) -> Result<String> {
        let out = self
            .shim_command(binary, &t.namespace, &t.id, bundle)
            .arg("start")
            .output()
            .await
            .map_err(|e| Error::io(format!("run {} start", binary.display()), e))?;
        if !out.status.success() {
            return Err(Error::Internal(format!(
                "{} start: {}",
                binary.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let address = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let _ = std::fs::write(bundle.join("address"), &address);
        Ok(address)
    }

    /// The running shim of the task's group (its pod's sandbox), connected for this task, when
    /// wharfd holds a live connection to it from the same binary. The pod's next container then
    /// costs no `<shim> start`, a process run only to print that shim's address again. Only for
    /// wharf's own shim, whose grouping this relies on: any other binary is asked.
    async fn join_group(&self, binary: &Path, t: &NewTask, bundle: &Path) -> Option<Shim> {
        if binary.file_name()? != OWN_SHIM {
            return None;
        }
        let group = wharf_core::spec::shim_group(&t.spec, &t.id);
        if group == t.id {
            return None;
        }
        let leader = self.get(&t.namespace, &group).await?;
        if leader.closing.load(std::sync::atomic::Ordering::SeqCst)
            || std::fs::read(leader.bundle.join("shim-binary-path")).ok()?
                != binary.as_os_str().as_encoded_bytes()
        {
            return None;
        }
        // A shim that went away since answers nothing: `start` then makes a new one.
        let shim = Shim::connect(&leader.address, &t.namespace, &t.id, bundle.to_path_buf())
            .await
            .ok()?;
        std::fs::write(bundle.join("address"), &leader.address).ok()?;
        Some(shim)
    }

    /// Deletes a task's init process, stops its shim and removes its bundle.
    pub async fn delete(&self, ns: &str, id: &str) -> Result<api::DeleteResponse> {
        let shim = self
            .get(ns, id)
            .await
            .ok_or_else(|| Error::NotFound(format!("task {id}")))?;
        let resp = match shim.delete("").await {
            Ok(r) => r,
            // The shim's task was deleted already (wharfd died between Delete and Shutdown):
            // end the shim and remove its bundle all the same, or both would be left forever.
            Err(Error::NotFound(_)) => api::DeleteResponse::default(),
            Err(e) => return Err(e),
        };
        shim.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        if let Err(e) = shim.shutdown().await {
            tracing::warn!(id, error = %e, "shim shutdown");
        }
        self.shims
            .lock()
            .await
            .remove(&(ns.to_string(), id.to_string()));
        self.stop_log(ns, id);
        Bundle {
            path: shim.bundle.clone(),
            work: self.root.join(ns).join(id),
        }
        .remove();
        Ok(resp)
    }

    /// Forgets a shim whose connection is gone and cleans up after it (`<shim> delete`).
    pub async fn reap(&self, ns: &str, id: &str) -> Option<api::DeleteResponse> {
        let shim = self
            .shims
            .lock()
            .await
            .remove(&(ns.to_string(), id.to_string()))?;
        Some(self.cleanup_dead(ns, id, &shim.bundle).await)
    }

    fn watch_log(&self, bundle: &Path, ns: &str, id: &str) {
        if let Some(h) = forward_log(bundle, id) {
            if let Ok(mut logs) = self.logs.lock() {
                if let Some(old) = logs.insert((ns.to_string(), id.to_string()), h) {
                    old.abort();
                }
            }
        }
    }

    fn stop_log(&self, ns: &str, id: &str) {
        if let Ok(mut logs) = self.logs.lock() {
            if let Some(h) = logs.remove(&(ns.to_string(), id.to_string())) {
                h.abort();
            }
        }
    }

    /// Runs `<shim> -bundle B delete` for a shim that is gone, then removes the bundle.
    async fn cleanup_dead(&self, ns: &str, id: &str, bundle: &Path) -> api::DeleteResponse {
        self.stop_log(ns, id);
        let mut resp = api::DeleteResponse {
            exit_status: 137,
            ..Default::default()
        };
        let binary = std::fs::read(bundle.join("shim-binary-path"))
            .ok()
            .map(|b| PathBuf::from(String::from_utf8_lossy(&b).into_owned()));
        if let Some(binary) = binary {
            let out = self
                .shim_command(&binary, ns, id, bundle)
                .arg("-bundle")
                .arg(bundle)
                .arg("delete")
                .output()
                .await;
            match out {
                Ok(o) if o.status.success() => {
                    if let Ok(r) = api::DeleteResponse::parse_from_bytes(&o.stdout) {
                        resp = r;
                    }
                }
                Ok(o) => {
                    tracing::warn!(id, stderr = %String::from_utf8_lossy(&o.stderr).trim(), "shim delete")
                }
                Err(e) => tracing::warn!(id, error = %e, "run shim delete"),
            }
        }
        Bundle {
            path: bundle.to_path_buf(),
            work: self.root.join(ns).join(id),
        }
        .remove();
        resp
    }

    /// After a restart: reconnects to every live shim under the state dir and cleans up after
    /// dead ones. Returns the tasks that were found dead, for exit events.
    pub async fn restore(&self) -> Vec<(String, String, api::DeleteResponse)> {
        let mut dead = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&self.state) else {
            return dead;
        };
        for ns in namespaces.flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            let Ok(tasks) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for t in tasks.flatten() {
                let id = t.file_name().to_string_lossy().into_owned();
                let bundle = t.path();
                let address = std::fs::read_to_string(bundle.join("address")).unwrap_or_default();
                let connected = if address.trim().is_empty() {
                    None
                } else {
                    Shim::connect(address.trim(), &ns_name, &id, bundle.clone())
                        .await
                        .ok()
                };
                match connected {
                    // A shim without a task: wharfd died between the shim's Delete and its
                    // Shutdown (or between starting it and Create). Nothing can use it: finish
                    // the delete, or the task would be listed without a container and the shim
                    // left running forever.
                    Some(shim) if matches!(shim.state("").await, Err(Error::NotFound(_))) => {
                        tracing::info!(namespace = %ns_name, id = %id, "shim has no task: shutting it down");
                        shim.closing
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        if let Err(e) = shim.shutdown().await {
                            tracing::warn!(id, error = %e, "shim shutdown");
                        }
                        Bundle {
                            path: bundle.clone(),
                            work: self.root.join(&ns_name).join(&id),
                        }
                        .remove();
                    }
                    Some(shim) => {
                        tracing::info!(namespace = %ns_name, id = %id, "reconnected to shim");
                        self.watch_log(&bundle, &ns_name, &id);
                        let shim = Arc::new(shim);
                        self.monitor(&shim);
                        self.shims.lock().await.insert((ns_name.clone(), id), shim);
                    }
                    None => {
                        tracing::info!(namespace = %ns_name, id = %id, "shim is gone: cleaning up");
                        let r = self.cleanup_dead(&ns_name, &id, &bundle).await;
                        dead.push((ns_name.clone(), id, r));
                    }
                }
            }
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_map_to_binaries() {
        assert_eq!(
            shim_binary_name("io.containerd.runc.v2").unwrap(),
            "containerd-shim-runc-v2"
        );
        assert_eq!(
            shim_binary_name("io.containerd.wharf.v2").unwrap(),
            "containerd-shim-wharf-v2"
        );
        assert!(shim_binary_name("../../bin/sh").is_err());
        assert!(shim_binary_name("x").is_err());
    }
}
