//! Running one CNI plugin: find the executable, build its stdin (the plugin's config with the
//! list's `name` and `cniVersion`, `prevResult`, `runtimeConfig`), set the CNI_* environment,
//! run it with a timeout, and read its result or its error object.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use crate::attachment::{Attachment, PortMapping};
use crate::config::{plugin_type, NetworkConfig};
use crate::error::{Error, PluginError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
    Check,
}

impl Command {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

/// The environment of one invocation, shared by every plugin of the chain.
pub(crate) struct Env<'a> {
    pub container_id: &'a str,
    /// Empty on DEL when the namespace is gone (the CNI spec allows that).
    pub netns: &'a str,
    pub ifname: &'a str,
    pub args: &'a [(String, String)],
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

/// The first executable named `name` in `dirs`.
pub(crate) fn find_plugin(dirs: &[PathBuf], name: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    for dir in dirs {
        let p = dir.join(name);
        if let Ok(meta) = std::fs::metadata(&p) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(p);
            }
        }
    }
    Err(Error::PluginNotFound {
        plugin: name.to_string(),
        dirs: join_paths(dirs),
    })
}

fn join_paths(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

/// The stdin of one plugin of the list, as libcni builds it.
pub(crate) fn plugin_config(
    net: &NetworkConfig,
    plugin: &Value,
    prev_result: Option<&Value>,
    ports: &[PortMapping],
) -> Value {
    let mut conf = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), Value::String(net.name.clone()));
    conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wants = |cap: &str| {
        plugin
            .get("capabilities")
            .and_then(|c| c.get(cap))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut runtime = Map::new();
    if wants("portMappings") && !ports.is_empty() {
        runtime.insert("portMappings".into(), json!(ports));
    }
    if !runtime.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime));
    }
    Value::Object(conf)
}

/// Runs one plugin. Returns its parsed stdout for ADD, `None` for DEL and CHECK.
pub(crate) async fn exec(env: &Env<'_>, cmd: Command, conf: &Value) -> Result<Option<Value>> {
    let name = plugin_type(conf).to_string();
    let path = find_plugin(env.bin_dirs, &name)?;
    let stdin = serde_json::to_vec(conf)
        .map_err(|e| Error::Internal(format!("encode config of plugin {name}: {e}")))?;
    let started = Instant::now();
    let output = run(env, cmd, &path, &name, &stdin).await?;
    tracing::debug!(
        plugin = %name,
        command = cmd.as_str(),
        id = env.container_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        status = ?output.status.code(),
        "CNI plugin"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if !output.status.success() {
        let error = serde_json::from_slice::<PluginError>(&output.stdout)
            .ok()
            .filter(|e| e.code != 0 || !e.msg.is_empty())
            .unwrap_or_else(|| PluginError {
                code: 0,
                msg: format!(
                    "{} {}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout).trim()
                )
                .trim()
                .to_string(),
                details: String::new(),
            });
        return Err(Error::Plugin {
            plugin: name,
            command: cmd.as_str(),
            error,
            stderr,
        });
    }
    if cmd != Command::Add {
        return Ok(None);
    }
    let result: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| Error::InvalidResult {
            plugin: name.clone(),
            command: cmd.as_str(),
            reason: format!("{e}: {:?}", String::from_utf8_lossy(&output.stdout)),
        })?;
    if !result.is_object() {
        return Err(Error::InvalidResult {
            plugin: name,
            command: cmd.as_str(),
            reason: "not a JSON object".into(),
        });
    }
    Ok(Some(result))
}

async fn run(
    env: &Env<'_>,
    cmd: Command,
    path: &Path,
    name: &str,
    stdin: &[u8],
) -> Result<std::process::Output> {
    let mut child = tokio::process::Command::new(path)
        .env("CNI_COMMAND", cmd.as_str())
        .env("CNI_CONTAINERID", env.container_id)
        .env("CNI_NETNS", env.netns)
        .env("CNI_IFNAME", env.ifname)
        .env("CNI_ARGS", Attachment::cni_args(env.args))
        .env("CNI_PATH", join_paths(env.bin_dirs))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io_path("run CNI plugin", path, e))?;
    let mut pipe = child
        .stdin
        .take()
        .ok_or_else(|| Error::Internal("plugin stdin not piped".into()))?;
    let feed = async move {
        // A plugin that exits without reading its config is judged by its exit status.
        let _ = pipe.write_all(stdin).await;
        drop(pipe);
    };
    let work = async {
        let (_, out) = tokio::join!(feed, child.wait_with_output());
        out
    };
    match tokio::time::timeout(env.timeout, work).await {
        Ok(out) => out.map_err(|e| Error::io_path("wait for CNI plugin", path, e)),
        // Dropping the future drops the child, which kills it (kill_on_drop).
        Err(_) => Err(Error::Timeout {
            plugin: name.to_string(),
            command: cmd.as_str(),
            timeout: env.timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_injection() {
        let net = NetworkConfig::from_conflist(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[
                {"type":"bridge","cniVersion":"0.1.0"},
                {"type":"portmap","capabilities":{"portMappings":true}},
                {"type":"firewall","capabilities":{"portMappings":false}}]}"#,
        )
        .unwrap();
        let ports = [PortMapping::tcp(8080, 80)];
        let c = plugin_config(&net, &net.plugins[0], None, &ports);
        assert_eq!(c["name"], "n");
        assert_eq!(c["cniVersion"], "1.0.0");
        assert!(c.get("prevResult").is_none() && c.get("runtimeConfig").is_none());
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let c = plugin_config(&net, &net.plugins[1], Some(&prev), &ports);
        assert_eq!(c["prevResult"], prev);
        assert_eq!(
            c["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
        );
        let c = plugin_config(&net, &net.plugins[1], None, &[]);
        assert!(c.get("runtimeConfig").is_none());
        let c = plugin_config(&net, &net.plugins[2], None, &ports);
        assert!(c.get("runtimeConfig").is_none());
    }

    #[test]
    fn missing_plugin() {
        let dirs = [
            PathBuf::from("/nonexistent/a"),
            PathBuf::from("/nonexistent/b"),
        ];
        let e = find_plugin(&dirs, "bridge").unwrap_err();
        assert_eq!(
            e.to_string(),
            "CNI plugin bridge not found in /nonexistent/a:/nonexistent/b"
        );
    }
}
