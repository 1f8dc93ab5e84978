//! `wharf exec`: a new process in a running container, from the container's own process spec
//! with the command, env, user and working dir replaced.

use anyhow::{bail, Context, Result};
use clap::Args;
use containerd_client::services::v1 as pb;

use crate::client::{Client, Explain};
use crate::{attach, containers};

#[derive(Args, Clone, Debug)]
pub struct ExecArgs {
    #[arg(short, long)]
    pub interactive: bool,
    #[arg(short, long)]
    pub tty: bool,
    #[arg(short, long)]
    pub detach: bool,
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// USER[:GROUP] by name (looked up in the container) or id.
    #[arg(short, long)]
    pub user: Option<String>,
    #[arg(short, long)]
    pub workdir: Option<String>,
    pub container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub async fn exec(c: &Client, a: &ExecArgs) -> Result<u8> {
    let ctr = containers::get(c, &a.container).await?;
    let task = containers::task(c, &a.container).await?;
    if !containers::running(&task) {
        bail!("container {} is not running", a.container);
    }
    let pid = task.map(|t| t.pid).unwrap_or(0);
    let spec: serde_json::Value = ctr
        .spec
        .as_ref()
        .map(|s| serde_json::from_slice(&s.value))
        .transpose()
        .context("the container's spec is not JSON")?
        .unwrap_or_default();
    let mut process = spec
        .get("process")
        .cloned()
        .context("the container's spec has no process")?;
    process["args"] = serde_json::json!(a.command);
    process["terminal"] = serde_json::json!(a.tty);
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            bail!("-w {w:?}: the working directory must be absolute");
        }
        process["cwd"] = serde_json::json!(w);
    }
    if !a.env.is_empty() {
        let mut env: Vec<String> = process["env"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for e in &a.env {
            let key = e.split('=').next().unwrap_or(e);
            env.retain(|x| x.split('=').next() != Some(key));
            env.push(e.clone());
        }
        process["env"] = serde_json::json!(env);
    }
    if let Some(u) = &a.user {
        // The container's own /etc/passwd, through its init's root.
        let root = std::path::PathBuf::from(format!("/proc/{pid}/root"));
        let (uid, gid, extra) = wharf_core::spec::resolve_user(Some(&root), u)
            .map_err(|e| anyhow::anyhow!("-u {u:?}: {e}"))?;
        process["user"] = serde_json::json!({"uid": uid, "gid": gid, "additionalGids": extra});
    }
    let exec_id = format!("exec-{:08x}", rand::random::<u32>());
    let mut fifos = attach::Fifos::new(a.interactive, a.tty)?;
    let (stdin, stdout, stderr) = if a.detach {
        Default::default()
    } else {
        fifos.paths()
    };
    c.tasks()
        .exec(c.req(pb::ExecProcessRequest {
            container_id: a.container.clone(),
            stdin,
            stdout,
            stderr,
            terminal: a.tty,
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: serde_json::to_vec(&process)?,
            }),
            exec_id: exec_id.clone(),
        }))
        .await
        .explain(c, "")?;
    let copier = if a.detach {
        None
    } else {
        Some(fifos.attach(c, &a.container, &exec_id).await?)
    };
    let mut tasks = c.tasks();
    let wait = tasks.wait(c.req(pb::WaitRequest {
        container_id: a.container.clone(),
        exec_id: exec_id.clone(),
    }));
    let started = c
        .tasks()
        .start(c.req(pb::StartRequest {
            container_id: a.container.clone(),
            exec_id: exec_id.clone(),
        }))
        .await
        .explain(c, "");
    if let Err(e) = started {
        let _ = c
            .tasks()
            .delete_process(c.req(pb::DeleteProcessRequest {
                container_id: a.container.clone(),
                exec_id: exec_id.clone(),
            }))
            .await;
        let msg = format!("{e:#}");
        let code = if msg.contains("no such file") || msg.contains("not found") {
            127
        } else if msg.contains("permission denied") {
            126
        } else {
            125
        };
        return Err(crate::run::ExitCode(code, msg).into());
    }
    if a.detach {
        return Ok(0);
    }
    let status = wait.await;
    if let Some(cp) = copier {
        cp.finish().await;
    }
    let code = status.explain(c, "")?.exit_status;
    let _ = c
        .tasks()
        .delete_process(c.req(pb::DeleteProcessRequest {
            container_id: a.container.clone(),
            exec_id,
        }))
        .await;
    Ok(code.min(255) as u8)
}
