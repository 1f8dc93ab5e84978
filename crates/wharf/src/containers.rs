//! Container lifecycle commands that work on existing containers: ps, start, stop, restart,
//! kill, rm, inspect, top, stats, and the task bookkeeping they share.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use containerd_client::services::v1 as pb;
use containerd_client::types::v1::Status;
use wharf_core::labels;

use crate::client::{is_not_found, Client, Explain};
use crate::table::{ago, Table};

pub async fn get(c: &Client, id: &str) -> Result<pb::Container> {
    c.containers()
        .get(c.req(pb::GetContainerRequest { id: id.to_string() }))
        .await
        .explain(
            c,
            &format!("no such container {id}; `wharf ps -a` lists them"),
        )?
        .container
        .context("daemon returned no container")
}

/// The task of a container, if it has one.
pub async fn task(c: &Client, id: &str) -> Result<Option<containerd_client::types::v1::Process>> {
    match c
        .tasks()
        .get(c.req(pb::GetRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .explain(c, "")
    {
        Ok(r) => Ok(r.process),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn running(p: &Option<containerd_client::types::v1::Process>) -> bool {
    p.as_ref()
        .is_some_and(|p| p.status == Status::Running as i32 || p.status == Status::Paused as i32)
}

pub async fn set_labels(c: &Client, id: &str, set: &[(&str, String)]) -> Result<()> {
    let mut ctr = get(c, id).await?;
    for (k, v) in set {
        ctr.labels.insert(k.to_string(), v.clone());
    }
    c.containers()
        .update(c.req(pb::UpdateContainerRequest {
            container: Some(ctr),
            update_mask: Some(prost_types::FieldMask {
                paths: set.iter().map(|(k, _)| format!("labels.{k}")).collect(),
            }),
        }))
        .await
        .explain(c, "")?;
    Ok(())
}

/// Deletes the container's task (stopped), keeping its exit code on the container record.
pub async fn delete_task(c: &Client, id: &str) -> Result<Option<u32>> {
    match c
        .tasks()
        .delete(c.req(pb::DeleteTaskRequest {
            container_id: id.to_string(),
        }))
        .await
        .explain(c, "")
    {
        Ok(r) => {
            let at = r
                .exited_at
                .map(|t| {
                    chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32)
                        .unwrap_or_default()
                        .to_rfc3339()
                })
                .unwrap_or_default();
            let _ = set_labels(
                c,
                id,
                &[
                    (labels::EXIT_CODE, r.exit_status.to_string()),
                    (labels::EXITED_AT, at),
                ],
            )
            .await;
            Ok(Some(r.exit_status))
        }
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Waits for the task's init to exit, up to `timeout`; the exit status, or None on timeout.
pub async fn wait(c: &Client, id: &str, timeout: Option<Duration>) -> Result<Option<u32>> {
    let mut tasks = c.tasks();
    let call = tasks.wait(c.req(pb::WaitRequest {
        container_id: id.to_string(),
        exec_id: String::new(),
    }));
    let r = match timeout {
        Some(t) => match tokio::time::timeout(t, call).await {
            Ok(r) => r,
            Err(_) => return Ok(None),
        },
        None => call.await,
    };
    Ok(Some(r.explain(c, "")?.exit_status))
}

pub async fn signal(c: &Client, id: &str, sig: u32, all: bool) -> Result<()> {
    c.tasks()
        .kill(c.req(pb::KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal: sig,
            all,
        }))
        .await
        .explain(c, "")?;
    Ok(())
}

/// Signal numbers from names as docker takes them (`TERM`, `SIGTERM`, `15`).
pub fn parse_signal(s: &str) -> Result<u32> {
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as u32)
        .map_err(|_| anyhow::anyhow!("unknown signal {s:?}"))
}

/// docker stop: SIGTERM, then SIGKILL after `timeout`; the task is then deleted (freeing its
/// network) and the restart policy told that the user stopped it.
pub async fn stop(c: &Client, id: &str, timeout: u64) -> Result<()> {
    let _ = set_labels(c, id, &[(labels::RESTART_STATUS, "stopped".into())]).await;
    let t = task(c, id).await?;
    if running(&t) {
        signal(c, id, libc::SIGTERM as u32, false).await?;
        if wait(c, id, Some(Duration::from_secs(timeout)))
            .await?
            .is_none()
        {
            signal(c, id, libc::SIGKILL as u32, true).await?;
            wait(c, id, Some(Duration::from_secs(30)))
                .await?
                .with_context(|| format!("container {id} did not stop after SIGKILL"))?;
        }
    }
    if t.is_some() {
        delete_task(c, id).await?;
    }
    Ok(())
}

pub async fn kill(c: &Client, id: &str, sig: &str) -> Result<()> {
    let sig = parse_signal(sig)?;
    if !running(&task(c, id).await?) {
        bail!("container {id} is not running");
    }
    signal(c, id, sig, false).await
}

/// Starts a created or stopped container: a new task with the container's log URI.
pub async fn start(c: &Client, id: &str) -> Result<()> {
    let ctr = get(c, id).await?;
    let t = task(c, id).await?;
    if running(&t) {
        return Ok(());
    }
    if t.is_some() {
        delete_task(c, id).await?;
    }
    let log = ctr.labels.get(labels::LOG_URI).cloned().unwrap_or_default();
    c.tasks()
        .create(c.req(pb::CreateTaskRequest {
            container_id: id.to_string(),
            stdout: log.clone(),
            stderr: log,
            ..Default::default()
        }))
        .await
        .explain(c, "")?;
    if let Err(e) = c
        .tasks()
        .start(c.req(pb::StartRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        }))
        .await
        .explain(c, "")
    {
        let _ = delete_task(c, id).await;
        return Err(e);
    }
    if ctr.labels.contains_key(labels::RESTART_POLICY) {
        set_labels(c, id, &[(labels::RESTART_STATUS, "running".into())]).await?;
    }
    Ok(())
}

/// Removes a container: its task (killed with -f), record, snapshot and CLI data.
/// Removes a container (its task, record, snapshot and logs); with `volumes`, its anonymous
/// volumes too.
pub async fn remove(
    c: &Client,
    id: &str,
    force: bool,
    volumes: bool,
    data_root: &std::path::Path,
) -> Result<()> {
    let ctr = get(c, id).await?;
    let t = task(c, id).await?;
    if running(&t) {
        if !force {
            bail!("container {id} is running: stop it first, or use rm -f");
        }
        let _ = set_labels(c, id, &[(labels::RESTART_STATUS, "stopped".into())]).await;
        signal(c, id, libc::SIGKILL as u32, true).await?;
        wait(c, id, Some(Duration::from_secs(30))).await?;
    }
    if t.is_some() {
        delete_task(c, id).await?;
    }
    c.containers()
        .delete(c.req(pb::DeleteContainerRequest { id: id.to_string() }))
        .await
        .explain(c, "")?;
    if !ctr.snapshot_key.is_empty() {
        let r = c
            .snapshots()
            .remove(c.req(pb::snapshots::RemoveSnapshotRequest {
                snapshotter: ctr.snapshotter.clone(),
                key: ctr.snapshot_key.clone(),
            }))
            .await;
        if let Err(e) = r {
            if e.code() != tonic::Code::NotFound {
                return Err(c.explain(e, ""));
            }
        }
    }
    let dir = crate::run::data_dir(data_root, &c.ns, id);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    if volumes {
        crate::volumes::remove_anonymous(c, data_root, &ctr.labels).await?;
    }
    Ok(())
}

/// docker-style status text of a container.
fn status_text(
    ctr: &pb::Container,
    t: &Option<containerd_client::types::v1::Process>,
) -> (String, &'static str) {
    let exited = |code: String, at: Option<&String>| {
        let when = at
            .and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok())
            .map(|d| format!(" {}", ago(d.timestamp())))
            .unwrap_or_default();
        format!("Exited ({code}){when}")
    };
    match t {
        Some(p) if p.status == Status::Running as i32 => {
            let up = crate::run::process_age(p.pid)
                .map(|s| format!("Up {}", ago(s).replace(" ago", "")))
                .unwrap_or_else(|| "Up".into());
            (up, "running")
        }
        Some(p) if p.status == Status::Paused as i32 => ("Up (Paused)".into(), "paused"),
        Some(p) if p.status == Status::Stopped as i32 => {
            (exited(p.exit_status.to_string(), None), "exited")
        }
        Some(_) => ("Created".into(), "created"),
        None => match ctr.labels.get(labels::EXIT_CODE) {
            Some(code) => (
                exited(code.clone(), ctr.labels.get(labels::EXITED_AT)),
                "exited",
            ),
            None => ("Created".into(), "created"),
        },
    }
}

fn ports_text(ctr: &pb::Container) -> String {
    let Some(raw) = ctr.labels.get(labels::PORTS) else {
        return String::new();
    };
    let ports: Vec<serde_json::Value> = serde_json::from_str(raw).unwrap_or_default();
    ports
        .iter()
        .map(|p| {
            let ip = p["hostIP"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or("0.0.0.0");
            format!(
                "{ip}:{}->{}/{}",
                p["hostPort"],
                p["containerPort"],
                p["protocol"].as_str().unwrap_or("tcp")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn ps(c: &Client, all: bool, quiet: bool, format: Option<&str>) -> Result<()> {
    let containers = c
        .containers()
        .list(c.req(pb::ListContainersRequest { filters: vec![] }))
        .await
        .explain(c, "")?
        .containers;
    let tasks: BTreeMap<String, containerd_client::types::v1::Process> = c
        .tasks()
        .list(c.req(pb::ListTasksRequest {
            filter: String::new(),
        }))
        .await
        .explain(c, "")?
        .tasks
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect();
    let mut rows = Vec::new();
    let mut table = Table::new(&["NAME", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"]);
    for ctr in &containers {
        let t = tasks.get(&ctr.id).cloned();
        let (status, state) = status_text(ctr, &t);
        if !all && state != "running" && state != "paused" {
            continue;
        }
        if quiet {
            println!("{}", ctr.id);
            continue;
        }
        let command = ctr.labels.get(labels::COMMAND).cloned().unwrap_or_default();
        let created = ctr
            .created_at
            .as_ref()
            .map(|t| ago(t.seconds))
            .unwrap_or_default();
        let ports = ports_text(ctr);
        let mut shown = command.clone();
        if shown.chars().count() > 24 {
            shown = shown.chars().take(21).collect::<String>() + "...";
        }
        table.row(vec![
            ctr.id.clone(),
            ctr.image.clone(),
            format!("\"{shown}\""),
            created.clone(),
            status.clone(),
            ports.clone(),
        ]);
        rows.push(BTreeMap::from([
            ("Name".to_string(), serde_json::json!(ctr.id)),
            ("ID".to_string(), serde_json::json!(ctr.id)),
            ("Image".to_string(), serde_json::json!(ctr.image)),
            ("Command".to_string(), serde_json::json!(command)),
            ("CreatedAt".to_string(), serde_json::json!(created)),
            ("Status".to_string(), serde_json::json!(status)),
            ("State".to_string(), serde_json::json!(state)),
            ("Ports".to_string(), serde_json::json!(ports)),
            (
                "Pid".to_string(),
                serde_json::json!(t.as_ref().map(|t| t.pid).unwrap_or(0)),
            ),
            (
                "IP".to_string(),
                serde_json::json!(ctr.labels.get(labels::IP).cloned().unwrap_or_default()),
            ),
        ]));
    }
    if quiet {
        return Ok(());
    }
    crate::table::output(format, &rows, table)
}

/// `wharf inspect`: the container record, spec and task state as JSON.
pub async fn inspect(c: &Client, ids: &[String]) -> Result<()> {
    let mut out = Vec::new();
    for id in ids {
        let ctr = get(c, id).await?;
        let t = task(c, id).await?;
        let (status, state) = status_text(&ctr, &t);
        let spec: serde_json::Value = ctr
            .spec
            .as_ref()
            .and_then(|s| serde_json::from_slice(&s.value).ok())
            .unwrap_or_default();
        out.push(serde_json::json!({
            "Id": ctr.id,
            "Image": ctr.image,
            "Created": ctr.created_at.as_ref().map(|t| chrono::DateTime::from_timestamp(t.seconds, 0).unwrap_or_default().to_rfc3339()),
            "State": {
                "Status": state,
                "Text": status,
                "Running": state == "running",
                "Pid": t.as_ref().map(|t| t.pid).unwrap_or(0),
                "ExitCode": t.as_ref().filter(|_| state == "exited").map(|t| t.exit_status)
                    .or_else(|| ctr.labels.get(labels::EXIT_CODE).and_then(|c| c.parse().ok())),
            },
            "Runtime": ctr.runtime.as_ref().map(|r| r.name.clone()),
            "Snapshotter": ctr.snapshotter,
            "SnapshotKey": ctr.snapshot_key,
            "Labels": ctr.labels,
            "NetworkSettings": {
                "Mode": ctr.labels.get(labels::NETWORK),
                "IPAddress": ctr.labels.get(labels::IP),
                "Ports": ctr.labels.get(labels::PORTS).and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok()),
            },
            "Spec": spec,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub async fn top(c: &Client, id: &str) -> Result<()> {
    let pids = c
        .tasks()
        .list_pids(c.req(pb::ListPidsRequest {
            container_id: id.to_string(),
        }))
        .await
        .explain(c, "the container is not running")?
        .processes;
    let mut t = Table::new(&["PID", "CMD"]);
    for p in pids {
        let cmd = std::fs::read(format!("/proc/{}/cmdline", p.pid))
            .map(|b| {
                String::from_utf8_lossy(&b)
                    .split('\0')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default();
        t.row(vec![p.pid.to_string(), cmd]);
    }
    print!("{}", t.render());
    Ok(())
}
