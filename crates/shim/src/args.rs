//! The shim's command line, in Go's flag style as containerd passes it
//! (`-namespace N -address A -publish-binary B -id ID [-bundle DIR] [-debug] start|delete`).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

#[derive(Debug, Default, Clone)]
pub struct Args {
    pub namespace: String,
    pub address: String,
    pub publish_binary: String,
    pub id: String,
    pub bundle: Option<PathBuf>,
    pub debug: bool,
    pub version: bool,
    pub action: Option<String>,
}

impl Args {
    pub fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut a = Args::default();
        let mut it = args.peekable();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix('-') else {
                a.action = Some(arg);
                continue;
            };
            let flag = flag.trim_start_matches('-');
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            match name {
                "debug" => a.debug = true,
                "v" | "version" => a.version = true,
                "namespace" | "address" | "publish-binary" | "id" | "bundle" | "socket" => {
                    let v = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| format!("flag -{name} needs a value"))?,
                    };
                    match name {
                        "namespace" => a.namespace = v,
                        "address" => a.address = v,
                        "publish-binary" => a.publish_binary = v,
                        "id" => a.id = v,
                        "bundle" => a.bundle = Some(PathBuf::from(v)),
                        _ => {}
                    }
                }
                other => return Err(format!("unknown flag -{other}")),
            }
        }
        if a.action.is_some() && (a.namespace.is_empty() || a.id.is_empty()) {
            return Err("-namespace and -id are required".to_string());
        }
        Ok(a)
    }

    /// A short stable name for `id` (a task, or a group of them), from the daemon's address and
    /// namespace too, as containerd names its shim sockets (paths must stay under the 108-byte
    /// sun_path limit).
    fn key(&self, id: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.address.as_bytes());
        h.update(b"\0");
        h.update(self.namespace.as_bytes());
        h.update(b"\0");
        h.update(id.as_bytes());
        hex::encode(h.finalize())
    }

    /// The socket of the shim that serves `group` (a task's id, or its pod's: see `group`):
    /// `/run/wharf/s/<sha256>`.
    pub fn socket_path(&self, group: &str) -> PathBuf {
        PathBuf::from("/run/wharf/s").join(self.key(group))
    }

    /// libcontainer's state root for task `id` (kept apart from every other task's).
    pub fn runtime_root(&self, id: &str) -> PathBuf {
        PathBuf::from("/run/wharf/c").join(&self.key(id)[..32])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        Args::parse(s.split_whitespace().map(String::from))
    }

    #[test]
    fn parses_containerds_flags() {
        let a = parse(
            "-namespace default -address /run/x.sock -publish-binary /bin/wharfd -id t1 start",
        )
        .unwrap();
        assert_eq!(a.namespace, "default");
        assert_eq!(a.id, "t1");
        assert_eq!(a.address, "/run/x.sock");
        assert_eq!(a.action.as_deref(), Some("start"));
        let b = parse("-namespace=n -id=x -bundle /b -debug delete").unwrap();
        assert_eq!(b.bundle, Some(PathBuf::from("/b")));
        assert!(b.debug);
        assert_eq!(b.action.as_deref(), Some("delete"));
    }

    #[test]
    fn rejects_bad_flags() {
        assert!(parse("-namespace").is_err());
        assert!(parse("-bogus 1 start").is_err());
        assert!(parse("-id x start").is_err());
    }

    #[test]
    fn sockets_differ_per_group_and_fit_sun_path() {
        let a = parse("-namespace n -address /a -id x start").unwrap();
        let b = parse("-namespace m -address /a -id x start").unwrap();
        assert_ne!(a.socket_path("x"), a.socket_path("y"));
        assert_ne!(a.socket_path("x"), b.socket_path("x"));
        assert!(a.socket_path("x").as_os_str().len() < 100);
        assert_ne!(a.runtime_root("x"), a.runtime_root("y"));
    }
}
