//! TCP sockets for the Noise stream transport: binding, connecting with name resolution.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

use super::TransportError;
use crate::address::Host;

/// Resolves `host:port` into socket addresses (literal IPs pass through).
pub(crate) async fn resolve(host: &Host, port: u16) -> Result<Vec<SocketAddr>, TransportError> {
    match host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Dns { name, v4, v6 } => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), port))
                .await
                .map_err(|e| TransportError::io(format!("resolving {name}"), e))?
                .filter(|a| (a.is_ipv4() && *v4) || (a.is_ipv6() && *v6))
                .collect();
            if addrs.is_empty() {
                return Err(TransportError::io(
                    format!("resolving {name}"),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no address of the requested family",
                    ),
                ));
            }
            Ok(addrs)
        }
    }
}

/// Connects to the first of `addrs` that accepts.
pub(crate) async fn connect(
    addrs: &[SocketAddr],
    nodelay: bool,
) -> Result<TcpStream, TransportError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(nodelay);
                return Ok(s);
            }
            Err(e) => last = Some(TransportError::io(format!("connecting to {addr}"), e)),
        }
    }
    Err(last.unwrap_or_else(|| {
        TransportError::io(
            "connecting",
            std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
        )
    }))
}

/// Binds a listening socket.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| TransportError::io(format!("listening on tcp {addr}"), e))
}
