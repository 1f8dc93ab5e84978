//! The one error type of the network crate. Plugin failures keep what the plugin said (its CNI
//! error object and stderr), which plugin it was and which command ran, so that a log line or a
//! CRI status message is enough to find the cause.

use std::path::Path;
use std::time::Duration;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error object a CNI plugin prints on stdout when it fails (`{"code", "msg", "details"}`).
/// `code` is 0 when the plugin printed no such object (it crashed, or printed garbage).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginError {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin ran and failed.
    #[error(
        "CNI plugin {plugin} {command} failed: {}",
        plugin_message(error, stderr)
    )]
    Plugin {
        plugin: String,
        command: &'static str,
        error: PluginError,
        /// The plugin's stderr (trimmed, possibly empty).
        stderr: String,
    },
    /// No executable named like the plugin's `type` in any of the plugin directories.
    #[error("CNI plugin {plugin} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    /// A plugin did not finish in time; it was killed.
    #[error("CNI plugin {plugin} {command} timed out after {timeout:?}")]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout: Duration,
    },
    /// A plugin succeeded but printed a result that cannot be read.
    #[error("CNI plugin {plugin} {command}: invalid result: {reason}")]
    InvalidResult {
        plugin: String,
        command: &'static str,
        reason: String,
    },
    /// A network configuration that cannot be used.
    #[error("{0}: invalid network configuration")]
    InvalidConfig(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

fn plugin_message(error: &PluginError, stderr: &str) -> String {
    let mut out = if error.msg.is_empty() {
        "no error message".to_string()
    } else {
        error.msg.clone()
    };
    if error.code != 0 {
        out.push_str(&format!(" (code {})", error.code));
    }
    if !error.details.is_empty() {
        out.push_str(&format!(": {}", error.details));
    }
    if !stderr.is_empty() {
        out.push_str(&format!("; stderr: {stderr}"));
    }
    out
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an I/O error on a path.
    pub fn io_path(what: &str, path: &Path, source: std::io::Error) -> Self {
        Error::io(format!("{what} {}", path.display()), source)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
            || matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists(_))
    }

    /// The plugin that failed, for errors that come from one.
    pub fn plugin(&self) -> Option<&str> {
        match self {
            Error::Plugin { plugin, .. }
            | Error::PluginNotFound { plugin, .. }
            | Error::Timeout { plugin, .. }
            | Error::InvalidResult { plugin, .. } => Some(plugin),
            _ => None,
        }
    }
}

/// Attaches context to I/O results: `fs::read(p).ctx(|| format!("read {}", p.display()))`.
pub(crate) trait IoContext<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::io(f(), e))
    }
}

/// Converts a nix errno with context.
pub(crate) fn sys(context: impl Into<String>, e: nix::Error) -> Error {
    Error::io(context, std::io::Error::from(e))
}
