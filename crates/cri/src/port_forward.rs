//! PortForward's connections: a TCP connection to a port on the pod's loopback, made from a
//! short-lived thread inside the pod's network namespace (the socket stays in it), or on the
//! host for host-network pods.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::TcpStream;
use wharf_network::Netns;

use crate::{Cri, Error, Result};

fn dial(port: u16) -> std::io::Result<std::net::TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::net::TcpStream::connect(v4)
        .or_else(|e| std::net::TcpStream::connect((Ipv6Addr::LOCALHOST, port)).map_err(|_| e))
}

impl Cri {
    pub(crate) async fn port_forward_dial(&self, sandbox_id: &str, port: u16) -> Result<TcpStream> {
        let s = self.sandbox(sandbox_id)?;
        let netns = s.meta.netns.clone();
        let std = tokio::task::spawn_blocking(move || -> Result<std::net::TcpStream> {
            let failed = |e: std::io::Error| Error::Internal(format!("dial localhost:{port}: {e}"));
            if netns.is_empty() {
                return dial(port).map_err(failed);
            }
            let ns = Netns::open(&netns)?;
            ns.run(|| dial(port))?.map_err(failed)
        })
        .await
        .map_err(|e| Error::Internal(format!("dial task: {e}")))??;
        std.set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(std))
            .map_err(|e| Error::Internal(format!("connection to port {port}: {e}")))
    }
}
