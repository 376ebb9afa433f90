use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::connection::ConnectionIo;
use super::memory::{self, MemoryIncoming, Registration};
use super::noise::{self, BoxReader, BoxWriter, NoiseIdentity, Role};
use super::{Connection, ConnectionInfo, Direction, TransportConfig, TransportError, quic, tcp};
use crate::address::{Endpoint, Host, Multiaddr, TransportKind};
use crate::identity::{Keypair, PeerId};

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

struct Inner {
    keypair: Keypair,
    noise: NoiseIdentity,
    config: Arc<TransportConfig>,
    /// QUIC endpoints: the ones we listen on, then any created only for dialing.
    quic: Mutex<Vec<quinn::Endpoint>>,
}

/// Dials and listens on every address kind we support (TCP, QUIC, memory), producing
/// authenticated [`Connection`]s. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("peer_id", &self.inner.keypair.peer_id())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport for the identity `keypair`.
    pub fn new(keypair: &Keypair, config: TransportConfig) -> Result<Self, TransportError> {
        Ok(Self {
            inner: Arc::new(Inner {
                keypair: keypair.clone(),
                noise: NoiseIdentity::new(keypair)?,
                config: Arc::new(config),
                quic: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Our identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.keypair.peer_id()
    }

    /// The configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Starts listening on `addr` (port 0 picks a free port; [`Listener::local_addr`] tells
    /// which).
    pub async fn listen(&self, addr: &Multiaddr) -> Result<Listener, TransportError> {
        let inner = match addr.endpoint()? {
            Endpoint::Memory(port) => {
                let (reg, rx) = memory::listen(port)?;
                ListenerInner::Memory(reg, rx)
            }
            Endpoint::Socket { kind, host, port } => {
                let Host::Ip(ip) = host else {
                    return Err(crate::address::MultiaddrError::from_problem(
                        addr,
                        "listen addresses need a literal IP, not a DNS name",
                    )
                    .into());
                };
                let sa = SocketAddr::new(ip, port);
                match kind {
                    TransportKind::Tcp => ListenerInner::Tcp(tcp::bind(sa).await?),
                    TransportKind::Quic => {
                        let ep = quic::endpoint(sa, &self.inner.keypair, &self.inner.config)?;
                        if let Ok(mut eps) = self.inner.quic.lock() {
                            eps.insert(0, ep.clone());
                        }
                        ListenerInner::Quic(ep)
                    }
                    TransportKind::Memory => unreachable_memory(addr)?,
                }
            }
        };
        let local_addr = match &inner {
            ListenerInner::Tcp(l) => Multiaddr::tcp(
                l.local_addr()
                    .map_err(|e| TransportError::io("reading bound address", e))?,
            ),
            ListenerInner::Quic(ep) => Multiaddr::quic(
                ep.local_addr()
                    .map_err(|e| TransportError::io("reading bound address", e))?,
            ),
            ListenerInner::Memory(reg, _) => Multiaddr::memory(reg.0),
        };
        Ok(Listener {
            transport: self.clone(),
            local_addr,
            inner,
        })
    }

    /// Dials `addr`. A trailing `/p2p/<PeerId>` pins the identity the remote must prove;
    /// without it any identity is accepted and reported in the connection info.
    /// Bounded by the handshake timeout once the socket is open, not by a connect timeout:
    /// the caller bounds the whole dial.
    pub async fn dial(&self, addr: &Multiaddr) -> Result<Connection, TransportError> {
        let expected = addr.peer_id();
        let cfg = &self.inner.config;
        let limits = &cfg.limits;
        let timeout = cfg.handshake_timeout;
        let remote_addr = addr.without_peer_id();
        let timed_out = || TransportError::HandshakeTimeout {
            addr: remote_addr.clone(),
            secs: timeout.as_secs_f64(),
        };
        match addr.endpoint()? {
            Endpoint::Memory(port) => {
                let (stream, local) = memory::dial(port, cfg.memory_pipe_bytes).await?;
                let (r, w) = tokio::io::split(stream);
                let fut = noise::handshake(
                    Box::new(r),
                    Box::new(w),
                    &self.inner.noise,
                    Role::Initiator,
                    expected,
                    limits,
                );
                let s = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| timed_out())??;
                Ok(self.stream_connection(
                    s,
                    Direction::Outbound,
                    Multiaddr::memory(local),
                    remote_addr,
                    TransportKind::Memory,
                ))
            }
            Endpoint::Socket {
                kind: TransportKind::Tcp,
                host,
                port,
            } => {
                let addrs = tcp::resolve(&host, port).await?;
                let stream = tcp::connect(&addrs, cfg.tcp_nodelay).await?;
                let local = stream.local_addr().map(Multiaddr::tcp).unwrap_or_default();
                let remote = stream
                    .peer_addr()
                    .map(Multiaddr::tcp)
                    .unwrap_or_else(|_| remote_addr.clone());
                let (r, w) = stream.into_split();
                let fut = noise::handshake(
                    Box::new(r),
                    Box::new(w),
                    &self.inner.noise,
                    Role::Initiator,
                    expected,
                    limits,
                );
                let s = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| timed_out())??;
                Ok(self.stream_connection(
                    s,
                    Direction::Outbound,
                    local,
                    remote,
                    TransportKind::Tcp,
                ))
            }
            Endpoint::Socket {
                kind: TransportKind::Quic,
                host,
                port,
            } => {
                let addrs = tcp::resolve(&host, port).await?;
                let Some(&target) = addrs.first() else {
                    return Err(crate::address::MultiaddrError::from_problem(
                        addr,
                        "resolved to no address",
                    )
                    .into());
                };
                let ep = self.quic_endpoint_for(target)?;
                let fut = quic::dial(&ep, target, &self.inner.keypair, expected, cfg);
                let (conn, peer) = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| timed_out())??;
                let local = ep.local_addr().map(Multiaddr::quic).unwrap_or_default();
                Ok(self.quic_connection(
                    conn,
                    peer,
                    Direction::Outbound,
                    local,
                    Multiaddr::quic(target),
                ))
            }
            Endpoint::Socket {
                kind: TransportKind::Memory,
                ..
            } => unreachable_memory(addr),
        }
    }

    /// A QUIC endpoint of the target's address family: a listening one if we have it (so the
    /// remote sees our listen port), else a dial-only one bound to an ephemeral port.
    fn quic_endpoint_for(&self, target: SocketAddr) -> Result<quinn::Endpoint, TransportError> {
        let mut eps = self
            .inner
            .quic
            .lock()
            .map_err(|_| TransportError::Quic("endpoint table poisoned".into()))?;
        let family_matches = |ep: &quinn::Endpoint| {
            ep.local_addr()
                .is_ok_and(|a| a.is_ipv4() == target.is_ipv4())
        };
        if let Some(ep) = eps.iter().find(|ep| family_matches(ep)) {
            return Ok(ep.clone());
        }
        let bind: SocketAddr = if target.is_ipv4() {
            (IpAddr::from([0, 0, 0, 0]), 0).into()
        } else {
            (IpAddr::from([0u16; 8]), 0).into()
        };
        let ep = quic::endpoint(bind, &self.inner.keypair, &self.inner.config)?;
        eps.push(ep.clone());
        Ok(ep)
    }

    fn stream_connection(
        &self,
        s: noise::SecureStream,
        direction: Direction,
        local_addr: Multiaddr,
        remote_addr: Multiaddr,
        kind: TransportKind,
    ) -> Connection {
        Connection {
            info: ConnectionInfo {
                id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                local_peer: self.local_peer_id(),
                remote_peer: s.remote_peer,
                remote_addr,
                local_addr,
                direction,
                kind,
                tiebreak: s.handshake_hash,
            },
            io: ConnectionIo::Stream(s),
            config: self.inner.config.clone(),
        }
    }

    fn quic_connection(
        &self,
        conn: quinn::Connection,
        peer: PeerId,
        direction: Direction,
        local_addr: Multiaddr,
        remote_addr: Multiaddr,
    ) -> Connection {
        Connection {
            info: ConnectionInfo {
                id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
                local_peer: self.local_peer_id(),
                remote_peer: peer,
                remote_addr,
                local_addr,
                direction,
                kind: TransportKind::Quic,
                tiebreak: quic::tiebreak(&conn),
            },
            io: ConnectionIo::Quic(conn),
            config: self.inner.config.clone(),
        }
    }

    /// Closes every QUIC endpoint and releases its UDP port before returning.
    ///
    /// Peers are sent CONNECTION_CLOSE at once. quinn then keeps each closed connection in its
    /// draining state for three probe timeouts (up to about a second before RTT samples
    /// exist), holding the socket. We wait for that only briefly; a drain still running is
    /// moved to an ephemeral socket, so the listen port is free when this returns and the
    /// drain finishes in the background.
    pub async fn shutdown(&self) {
        let eps: Vec<quinn::Endpoint> = self
            .inner
            .quic
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default();
        for ep in &eps {
            ep.close(0u32.into(), b"shutdown");
        }
        let drains = eps.iter().map(|ep| async move {
            let drained =
                tokio::time::timeout(std::time::Duration::from_millis(100), ep.wait_idle()).await;
            if drained.is_err() {
                let any: SocketAddr = match ep.local_addr() {
                    Ok(a) if a.is_ipv6() => (IpAddr::from([0u16; 8]), 0).into(),
                    _ => (IpAddr::from([0, 0, 0, 0]), 0).into(),
                };
                if let Ok(socket) = std::net::UdpSocket::bind(any) {
                    let _ = ep.rebind(socket);
                }
            }
        });
        futures_util::future::join_all(drains).await;
    }
}

fn unreachable_memory<T>(addr: &Multiaddr) -> Result<T, TransportError> {
    Err(crate::address::MultiaddrError::from_problem(
        addr,
        "memory transport over a socket address",
    )
    .into())
}

enum ListenerInner {
    Tcp(TcpListener),
    Quic(quinn::Endpoint),
    Memory(Registration, mpsc::Receiver<MemoryIncoming>),
}

/// A bound listening address yielding unauthenticated [`Incoming`] connections.
pub struct Listener {
    transport: Transport,
    local_addr: Multiaddr,
    inner: ListenerInner,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// The bound address (with the real port).
    pub fn local_addr(&self) -> &Multiaddr {
        &self.local_addr
    }

    /// Waits for the next incoming connection. The handshake has not run yet: check limits on
    /// [`Incoming::remote_addr`], then call [`Incoming::upgrade`] (in its own task).
    pub async fn accept(&mut self) -> Result<Incoming, TransportError> {
        let local_addr = self.local_addr.clone();
        let transport = self.transport.clone();
        match &mut self.inner {
            ListenerInner::Tcp(l) => {
                let (stream, peer) = l
                    .accept()
                    .await
                    .map_err(|e| TransportError::io("accepting tcp connection", e))?;
                let _ = stream.set_nodelay(transport.inner.config.tcp_nodelay);
                let (r, w) = stream.into_split();
                Ok(Incoming {
                    transport,
                    local_addr,
                    remote_addr: Multiaddr::tcp(peer),
                    remote_ip: Some(peer.ip()),
                    kind: TransportKind::Tcp,
                    inner: IncomingInner::Stream(Box::new(r), Box::new(w)),
                })
            }
            ListenerInner::Quic(ep) => {
                let inc = ep.accept().await.ok_or(TransportError::ListenerClosed)?;
                let peer = inc.remote_address();
                Ok(Incoming {
                    transport,
                    local_addr,
                    remote_addr: Multiaddr::quic(peer),
                    remote_ip: Some(peer.ip()),
                    kind: TransportKind::Quic,
                    inner: IncomingInner::Quic(Box::new(inc)),
                })
            }
            ListenerInner::Memory(_, rx) => {
                let m = rx.recv().await.ok_or(TransportError::ListenerClosed)?;
                let (r, w) = tokio::io::split(m.stream);
                Ok(Incoming {
                    transport,
                    local_addr,
                    remote_addr: Multiaddr::memory(m.dialer),
                    remote_ip: None,
                    kind: TransportKind::Memory,
                    inner: IncomingInner::Stream(Box::new(r), Box::new(w)),
                })
            }
        }
    }
}

enum IncomingInner {
    Stream(BoxReader, BoxWriter),
    Quic(Box<quinn::Incoming>),
}

/// An accepted connection whose handshake has not run yet.
pub struct Incoming {
    transport: Transport,
    local_addr: Multiaddr,
    remote_addr: Multiaddr,
    remote_ip: Option<IpAddr>,
    kind: TransportKind,
    inner: IncomingInner,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("remote_addr", &self.remote_addr)
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// Where it comes from.
    pub fn remote_addr(&self) -> &Multiaddr {
        &self.remote_addr
    }

    /// The remote IP, for socket transports.
    pub fn remote_ip(&self) -> Option<IpAddr> {
        self.remote_ip
    }

    /// Which transport it arrived on.
    pub fn kind(&self) -> TransportKind {
        self.kind
    }

    /// Turns the connection away without a handshake.
    pub fn refuse(self) {
        if let IncomingInner::Quic(inc) = self.inner {
            inc.refuse();
        }
    }

    /// Runs the responder side of the handshake, bounded by the handshake timeout.
    pub async fn upgrade(self) -> Result<Connection, TransportError> {
        let t = &self.transport;
        let timeout = t.inner.config.handshake_timeout;
        let timed_out = TransportError::HandshakeTimeout {
            addr: self.remote_addr.clone(),
            secs: timeout.as_secs_f64(),
        };
        match self.inner {
            IncomingInner::Stream(r, w) => {
                let fut = noise::handshake(
                    r,
                    w,
                    &t.inner.noise,
                    Role::Responder,
                    None,
                    &t.inner.config.limits,
                );
                let s = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| timed_out)??;
                Ok(t.stream_connection(
                    s,
                    Direction::Inbound,
                    self.local_addr,
                    self.remote_addr,
                    self.kind,
                ))
            }
            IncomingInner::Quic(inc) => {
                let fut = quic::accept(*inc, t.local_peer_id());
                let (conn, peer) = tokio::time::timeout(timeout, fut)
                    .await
                    .map_err(|_| timed_out)??;
                Ok(t.quic_connection(
                    conn,
                    peer,
                    Direction::Inbound,
                    self.local_addr,
                    self.remote_addr,
                ))
            }
        }
    }
}
