//! Multiaddr text addresses: `/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…`.
//!
//! This module owns parsing, printing and inspecting addresses. It knows which component
//! sequences our transports can dial (`/…/tcp/N`, `/…/udp/N/quic-v1`, `/memory/N`, each with an
//! optional trailing `/p2p/<PeerId>`), but it opens no sockets and resolves no names.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::identity::PeerId;

/// Longest address text we parse. Real addresses are far shorter.
pub const MAX_MULTIADDR_LEN: usize = 1024;
/// Most components in one address.
pub const MAX_COMPONENTS: usize = 16;

/// One component of a [`Multiaddr`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// `/ip4/<address>`
    Ip4(Ipv4Addr),
    /// `/ip6/<address>`
    Ip6(Ipv6Addr),
    /// `/dns/<name>`: resolved to IPv4 or IPv6.
    Dns(String),
    /// `/dns4/<name>`: resolved to IPv4 only.
    Dns4(String),
    /// `/dns6/<name>`: resolved to IPv6 only.
    Dns6(String),
    /// `/tcp/<port>`
    Tcp(u16),
    /// `/udp/<port>`
    Udp(u16),
    /// `/quic-v1` (QUIC version 1, RFC 9000, over the preceding UDP port).
    QuicV1,
    /// `/memory/<n>`: the in-process transport.
    Memory(u64),
    /// `/p2p/<PeerId>`: the identity expected at this address.
    P2p(PeerId),
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Ip4(a) => write!(f, "/ip4/{a}"),
            Protocol::Ip6(a) => write!(f, "/ip6/{a}"),
            Protocol::Dns(n) => write!(f, "/dns/{n}"),
            Protocol::Dns4(n) => write!(f, "/dns4/{n}"),
            Protocol::Dns6(n) => write!(f, "/dns6/{n}"),
            Protocol::Tcp(p) => write!(f, "/tcp/{p}"),
            Protocol::Udp(p) => write!(f, "/udp/{p}"),
            Protocol::QuicV1 => f.write_str("/quic-v1"),
            Protocol::Memory(n) => write!(f, "/memory/{n}"),
            Protocol::P2p(id) => write!(f, "/p2p/{id}"),
        }
    }
}

/// Why an address failed to parse; `Display` names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid multiaddr `{input}`: {problem}")]
pub struct MultiaddrError {
    input: String,
    problem: String,
}

impl MultiaddrError {
    fn new(input: &str, problem: impl Into<String>) -> Self {
        let mut input: String = input.chars().take(120).collect();
        if input.len() < 120 {
            input.shrink_to_fit();
        }
        Self {
            input,
            problem: problem.into(),
        }
    }

    /// An error about a parsed address that no transport can use as asked.
    pub fn from_problem(addr: &Multiaddr, problem: impl Into<String>) -> Self {
        Self::new(&addr.to_string(), problem)
    }

    /// What is wrong, naming the bad part.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

/// The transport an address is dialed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransportKind {
    /// TCP with Noise.
    Tcp,
    /// QUIC v1 with TLS 1.3.
    Quic,
    /// The in-process memory transport.
    Memory,
}

/// The host part of a dialable address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A literal IP address.
    Ip(IpAddr),
    /// A DNS name and which address families it may resolve to.
    Dns {
        /// The name.
        name: String,
        /// Accept IPv4 results.
        v4: bool,
        /// Accept IPv6 results.
        v6: bool,
    },
}

/// A dialable (or listenable) address broken into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// TCP or QUIC to host:port.
    Socket {
        /// TCP or QUIC.
        kind: TransportKind,
        /// Where.
        host: Host,
        /// Port.
        port: u16,
    },
    /// The in-process transport, port `n`.
    Memory(u64),
}

/// A self-describing network address.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Multiaddr {
    components: Vec<Protocol>,
}

impl Multiaddr {
    /// An empty address.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The components in order.
    pub fn iter(&self) -> impl Iterator<Item = &Protocol> {
        self.components.iter()
    }

    /// Appends a component.
    pub fn push(&mut self, p: Protocol) {
        self.components.push(p);
    }

    /// This address with `p` appended.
    pub fn with(mut self, p: Protocol) -> Self {
        self.push(p);
        self
    }

    /// The `/p2p/<PeerId>` at the end, if any.
    pub fn peer_id(&self) -> Option<PeerId> {
        match self.components.last() {
            Some(Protocol::P2p(id)) => Some(*id),
            _ => None,
        }
    }

    /// This address without a trailing `/p2p/…`.
    pub fn without_peer_id(&self) -> Multiaddr {
        let mut c = self.components.clone();
        if matches!(c.last(), Some(Protocol::P2p(_))) {
            c.pop();
        }
        Multiaddr { components: c }
    }

    /// This address ending in `/p2p/<peer>` (replacing any existing one).
    pub fn with_peer_id(&self, peer: PeerId) -> Multiaddr {
        self.without_peer_id().with(Protocol::P2p(peer))
    }

    /// Builds `/ip4|ip6/<ip>/tcp/<port>`.
    pub fn tcp(addr: SocketAddr) -> Self {
        Multiaddr {
            components: vec![ip_component(addr.ip()), Protocol::Tcp(addr.port())],
        }
    }

    /// Builds `/ip4|ip6/<ip>/udp/<port>/quic-v1`.
    pub fn quic(addr: SocketAddr) -> Self {
        Multiaddr {
            components: vec![
                ip_component(addr.ip()),
                Protocol::Udp(addr.port()),
                Protocol::QuicV1,
            ],
        }
    }

    /// Builds `/memory/<n>`.
    pub fn memory(n: u64) -> Self {
        Multiaddr {
            components: vec![Protocol::Memory(n)],
        }
    }

    /// Breaks the address into what a transport needs, or says why no transport can use it.
    pub fn endpoint(&self) -> Result<Endpoint, MultiaddrError> {
        let parts = self.without_peer_id().components;
        let unsupported = || {
            MultiaddrError::new(
                &self.to_string(),
                "no transport for this address (expected /ip4|ip6|dns…/H/tcp/N, \
                 /ip4|ip6|dns…/H/udp/N/quic-v1 or /memory/N, optionally ending in /p2p/<PeerId>)",
            )
        };
        let host = |p: &Protocol| -> Option<Host> {
            Some(match p {
                Protocol::Ip4(a) => Host::Ip(IpAddr::V4(*a)),
                Protocol::Ip6(a) => Host::Ip(IpAddr::V6(*a)),
                Protocol::Dns(n) => Host::Dns {
                    name: n.clone(),
                    v4: true,
                    v6: true,
                },
                Protocol::Dns4(n) => Host::Dns {
                    name: n.clone(),
                    v4: true,
                    v6: false,
                },
                Protocol::Dns6(n) => Host::Dns {
                    name: n.clone(),
                    v4: false,
                    v6: true,
                },
                _ => return None,
            })
        };
        match parts.as_slice() {
            [Protocol::Memory(n)] => Ok(Endpoint::Memory(*n)),
            [h, Protocol::Tcp(port)] => Ok(Endpoint::Socket {
                kind: TransportKind::Tcp,
                host: host(h).ok_or_else(unsupported)?,
                port: *port,
            }),
            [h, Protocol::Udp(port), Protocol::QuicV1] => Ok(Endpoint::Socket {
                kind: TransportKind::Quic,
                host: host(h).ok_or_else(unsupported)?,
                port: *port,
            }),
            _ => Err(unsupported()),
        }
    }

    /// The transport this address is dialed with, if any.
    pub fn transport_kind(&self) -> Option<TransportKind> {
        match self.endpoint().ok()? {
            Endpoint::Socket { kind, .. } => Some(kind),
            Endpoint::Memory(_) => Some(TransportKind::Memory),
        }
    }

    /// The socket address, when the host is a literal IP.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.endpoint().ok()? {
            Endpoint::Socket {
                host: Host::Ip(ip),
                port,
                ..
            } => Some(SocketAddr::new(ip, port)),
            _ => None,
        }
    }
}

fn ip_component(ip: IpAddr) -> Protocol {
    match ip {
        IpAddr::V4(a) => Protocol::Ip4(a),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => Protocol::Ip4(v4),
            None => Protocol::Ip6(a),
        },
    }
}

impl fmt::Display for Multiaddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.components {
            fmt::Display::fmt(c, f)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Multiaddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Multiaddr({self})")
    }
}

fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl FromStr for Multiaddr {
    type Err = MultiaddrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| MultiaddrError::new(input, problem);
        if input.len() > MAX_MULTIADDR_LEN {
            return Err(err(format!("longer than {MAX_MULTIADDR_LEN} bytes")));
        }
        let rest = input
            .strip_prefix('/')
            .ok_or_else(|| err("must start with `/`".into()))?;
        let mut parts = rest.split('/');
        let mut components = Vec::new();
        while let Some(name) = parts.next() {
            if name.is_empty() {
                if parts.clone().next().is_none() && !components.is_empty() {
                    break; // a single trailing slash
                }
                return Err(err("empty component (`//` or missing protocol)".into()));
            }
            if components.len() >= MAX_COMPONENTS {
                return Err(err(format!("more than {MAX_COMPONENTS} components")));
            }
            let mut value = |what: &str| {
                parts
                    .next()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| err(format!("`/{name}` needs {what} after it")))
            };
            let port = |v: &str| {
                v.parse::<u16>()
                    .map_err(|_| err(format!("`{v}` in `/{name}/{v}` is not a port (0-65535)")))
            };
            let component = match name {
                "ip4" => {
                    let v = value("an IPv4 address")?;
                    Protocol::Ip4(v.parse().map_err(|_| {
                        err(format!("`{v}` in `/ip4/{v}` is not a valid IPv4 address"))
                    })?)
                }
                "ip6" => {
                    let v = value("an IPv6 address")?;
                    Protocol::Ip6(v.parse().map_err(|_| {
                        err(format!("`{v}` in `/ip6/{v}` is not a valid IPv6 address"))
                    })?)
                }
                "dns" | "dns4" | "dns6" => {
                    let v = value("a host name")?;
                    if !valid_dns_name(v) {
                        return Err(err(format!(
                            "`{v}` in `/{name}/{v}` is not a valid DNS name"
                        )));
                    }
                    let v = v.to_ascii_lowercase();
                    match name {
                        "dns" => Protocol::Dns(v),
                        "dns4" => Protocol::Dns4(v),
                        _ => Protocol::Dns6(v),
                    }
                }
                "tcp" => Protocol::Tcp(port(value("a port")?)?),
                "udp" => Protocol::Udp(port(value("a port")?)?),
                "quic-v1" => Protocol::QuicV1,
                "quic" => {
                    return Err(err(
                        "`/quic` (draft-29) is not supported; use `/quic-v1`".into()
                    ));
                }
                "memory" => {
                    let v = value("a number")?;
                    Protocol::Memory(v.parse().map_err(|_| {
                        err(format!(
                            "`{v}` in `/memory/{v}` is not a 64-bit unsigned number"
                        ))
                    })?)
                }
                "p2p" | "ipfs" => {
                    let v = value("a peer id")?;
                    Protocol::P2p(v.parse().map_err(|e: crate::identity::IdentityError| {
                        err(format!("`/{name}/{v}`: {e}"))
                    })?)
                }
                other => return Err(err(format!("unknown protocol `{other}`"))),
            };
            components.push(component);
        }
        if components.is_empty() {
            return Err(err("no components".into()));
        }
        Ok(Multiaddr { components })
    }
}

impl Serialize for Multiaddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Multiaddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_endpoints() {
        let id = PeerId::random();
        for s in [
            "/ip4/127.0.0.1/tcp/4001".to_string(),
            "/ip6/::1/udp/4001/quic-v1".to_string(),
            "/dns4/localhost/tcp/80".to_string(),
            "/memory/7".to_string(),
            format!("/ip4/0.0.0.0/tcp/0/p2p/{id}"),
        ] {
            let a: Multiaddr = s.parse().unwrap();
            assert_eq!(a.to_string(), s);
            assert!(a.endpoint().is_ok(), "{s}");
        }
        let a: Multiaddr = format!("/ip4/1.2.3.4/udp/9/quic-v1/p2p/{id}")
            .parse()
            .unwrap();
        assert_eq!(a.peer_id(), Some(id));
        assert_eq!(a.transport_kind(), Some(TransportKind::Quic));
        assert_eq!(a.socket_addr(), Some("1.2.3.4:9".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_bad_part() {
        for (s, needle) in [
            ("ip4/1.2.3.4", "start with"),
            ("/ip4/1.2.3/tcp/1", "`1.2.3`"),
            ("/ip4/1.2.3.4/tcp/70000", "`70000`"),
            ("/ip4/1.2.3.4/tcp", "needs a port"),
            ("/foo/1", "`foo`"),
            ("/p2p/xyz", "peer id"),
            ("/dns/a..b/tcp/1", "`a..b`"),
            ("/ip4/1.2.3.4//tcp/1", "empty component"),
        ] {
            let e = s.parse::<Multiaddr>().unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
        let e = "/ip4/1.2.3.4/udp/1"
            .parse::<Multiaddr>()
            .unwrap()
            .endpoint()
            .unwrap_err();
        assert!(e.to_string().contains("no transport"));
    }
}
