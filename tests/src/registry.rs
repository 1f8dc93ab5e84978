//! A real Debian `docker-registry` (distribution 2.8) on a free 127.0.0.1 port, with its own
//! temporary storage; killed and removed on drop.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Registry {
    /// Starts a registry; `htpasswd` (a bcrypt htpasswd file's contents) turns on basic auth.
    pub fn start_with(htpasswd: Option<&str>) -> Result<Registry> {
        for _ in 0..5 {
            let dir = tempfile::tempdir()?;
            let port = free_port()?;
            let auth = match htpasswd {
                Some(h) => {
                    let p = dir.path().join("htpasswd");
                    std::fs::write(&p, h)?;
                    format!(
                        "auth:\n  htpasswd:\n    realm: wharf-test\n    path: {}\n",
                        p.display()
                    )
                }
                None => String::new(),
            };
            let config = format!(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth}",
                dir.path().join("data").display()
            );
            let cfg = dir.path().join("config.yml");
            std::fs::write(&cfg, config)?;
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start docker-registry (Debian package docker-registry)")?;
            let mut r = Registry {
                child,
                port,
                _dir: dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = r.child.try_wait() {
                    break; // port taken in between: try another
                }
                match ureq::get(&format!("{}/v2/", r.url())).call() {
                    Ok(_) | Err(ureq::Error::Status(401, _)) => return Ok(r),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        bail!("docker-registry did not start")
    }

    pub fn start() -> Result<Registry> {
        Self::start_with(None)
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
