//! The restart monitor: keeps containers whose labels ask for it running, as containerd's
//! restart plugin does, and removes those labelled for auto-removal (`wharf run -d --rm`) once
//! their task exits (`containerd.io/restart.status=running` plus wharf's policy label
//! `containerd.io/restart.policy`: `always`, `unless-stopped`, `on-failure[:N]`). It reacts to
//! task exits at once and also reconciles every 10 seconds (and at start-up). Tasks are
//! recreated through the Tasks service itself, so networking and logs are set up as for any
//! client's task.

use std::sync::Arc;
use std::time::Duration;

use tonic::Request;
use wharf_api::pb;
use wharf_api::tasks::tasks_server::Tasks;
use wharf_core::filters::Filter;
use wharf_core::labels;
use wharf_core::metadata::Container;

use crate::server::Daemon;
use crate::services::tasks::TasksService;

const RECONCILE_EVERY: Duration = Duration::from_secs(10);

fn req<T>(ns: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.parse() {
        r.metadata_mut()
            .insert(crate::namespace::NAMESPACE_HEADER, v);
    }
    r
}

/// Should a task that exited with `code` be started again under `policy`?
pub fn wants_restart(policy: &str, code: u32, restarts: u32) -> bool {
    match policy {
        "always" | "unless-stopped" => true,
        "on-failure" => code != 0,
        p => match p
            .strip_prefix("on-failure:")
            .and_then(|n| n.parse::<u32>().ok())
        {
            Some(max) => code != 0 && restarts < max,
            None => false,
        },
    }
}

pub fn spawn(daemon: Arc<Daemon>) {
    tokio::spawn(async move {
        let mut exits = match daemon.exchange.subscribe(&["topic==\"/tasks/exit\""]) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "restart monitor cannot subscribe to events");
                return;
            }
        };
        let mut tick = tokio::time::interval(RECONCILE_EVERY);
        loop {
            let only_ns = tokio::select! {
                e = exits.next() => match e {
                    Some(e) => Some(e.namespace),
                    None => return,
                },
                _ = tick.tick() => None,
            };
            reconcile(&daemon, only_ns.as_deref()).await;
        }
    });
}

/// Deletes the stopped task, record and snapshot of containers labelled `io.wharf.auto-remove`.
async fn auto_remove(daemon: &Arc<Daemon>, ns: &str) {
    let Ok(filter) = Filter::parse(&[format!("labels.\"{}\"==true", labels::AUTO_REMOVE)]) else {
        return;
    };
    let Ok(containers) = daemon.db.container_list(ns, &filter) else {
        return;
    };
    let svc = TasksService(daemon.clone());
    for c in containers {
        let state = svc
            .get(req(
                ns,
                pb::GetRequest {
                    container_id: c.id.clone(),
                    exec_id: String::new(),
                },
            ))
            .await
            .ok()
            .and_then(|r| r.into_inner().process);
        match state {
            Some(p) if p.status == wharf_api::types::v1::Status::Stopped as i32 => {
                if let Err(e) = svc
                    .delete(req(
                        ns,
                        pb::DeleteTaskRequest {
                            container_id: c.id.clone(),
                        },
                    ))
                    .await
                {
                    tracing::warn!(namespace = ns, id = %c.id, error = %e, "auto-remove: delete task");
                    continue;
                }
            }
            // Running, or never started: not yet.
            _ => continue,
        }
        if let Err(e) = daemon.db.container_delete(ns, &c.id) {
            tracing::warn!(namespace = ns, id = %c.id, error = %e, "auto-remove: delete container");
            continue;
        }
        crate::events::publish(
            &daemon.exchange,
            ns,
            "/containers/delete",
            &wharf_api::events::ContainerDelete { id: c.id.clone() },
        );
        if let Some(s) = daemon.snapshotters.get(&c.snapshotter) {
            if let Err(e) = s.remove(ns, &c.snapshot_key) {
                tracing::warn!(namespace = ns, id = %c.id, error = %e, "auto-remove: snapshot");
            }
        }
        daemon.gc.trigger();
        tracing::info!(namespace = ns, id = %c.id, "auto-removed exited container");
    }
}

async fn reconcile(daemon: &Arc<Daemon>, only_ns: Option<&str>) {
    let namespaces = match only_ns {
        Some(ns) => vec![ns.to_string()],
        None => daemon
            .db
            .namespace_list()
            .map(|l| l.into_iter().map(|n| n.name).collect())
            .unwrap_or_default(),
    };
    let filter = match Filter::parse(&[format!("labels.\"{}\"==running", labels::RESTART_STATUS)]) {
        Ok(f) => f,
        Err(_) => return,
    };
    for ns in namespaces {
        auto_remove(daemon, &ns).await;
        let Ok(containers) = daemon.db.container_list(&ns, &filter) else {
            continue;
        };
        for c in containers {
            if let Err(e) = ensure_running(daemon, &ns, &c).await {
                tracing::warn!(namespace = %ns, id = %c.id, error = %e, "restart monitor");
            }
        }
    }
}

async fn ensure_running(
    daemon: &Arc<Daemon>,
    ns: &str,
    c: &Container,
) -> Result<(), tonic::Status> {
    let Some(policy) = c.labels.get(labels::RESTART_POLICY) else {
        return Ok(());
    };
    let svc = TasksService(daemon.clone());
    let state = svc
        .get(req(
            ns,
            pb::GetRequest {
                container_id: c.id.clone(),
                exec_id: String::new(),
            },
        ))
        .await
        .ok()
        .and_then(|r| r.into_inner().process);
    let code = match &state {
        Some(p) if p.status != wharf_api::types::v1::Status::Stopped as i32 => return Ok(()),
        Some(p) => p.exit_status,
        // No task: a container created to run (or whose task someone deleted) — start it.
        None => c
            .labels
            .get(labels::EXIT_CODE)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    let restarts: u32 = c
        .labels
        .get(labels::RESTART_COUNT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if state.is_some() {
        svc.delete(req(
            ns,
            pb::DeleteTaskRequest {
                container_id: c.id.clone(),
            },
        ))
        .await?;
    }
    if state.is_some() && !wants_restart(policy, code, restarts) {
        return Ok(());
    }
    let log = c
        .labels
        .get(labels::RESTART_LOGURI)
        .or_else(|| c.labels.get(labels::LOG_URI))
        .cloned()
        .unwrap_or_default();
    tracing::info!(namespace = ns, id = %c.id, policy = %policy, exit = code, "restarting container");
    svc.create(req(
        ns,
        pb::CreateTaskRequest {
            container_id: c.id.clone(),
            stdout: log.clone(),
            stderr: log,
            ..Default::default()
        },
    ))
    .await?;
    svc.start(req(
        ns,
        pb::StartRequest {
            container_id: c.id.clone(),
            exec_id: String::new(),
        },
    ))
    .await?;
    let mut updated = c.clone();
    updated.labels.insert(
        labels::RESTART_COUNT.to_string(),
        (restarts + 1).to_string(),
    );
    let _ =
        daemon
            .db
            .container_update(ns, &updated, &[format!("labels.{}", labels::RESTART_COUNT)]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::wants_restart;

    #[test]
    fn policies() {
        assert!(wants_restart("always", 0, 10));
        assert!(wants_restart("unless-stopped", 0, 0));
        assert!(!wants_restart("on-failure", 0, 0));
        assert!(wants_restart("on-failure", 1, 5));
        assert!(wants_restart("on-failure:2", 1, 1));
        assert!(!wants_restart("on-failure:2", 1, 2));
        assert!(!wants_restart("no", 1, 0));
    }
}
