//! The node actor: one task that owns listeners, dials, connection limits, duplicate
//! resolution, keepalive, idle closing and bootstrap reconnection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatcher, PeerConn, Shared};
use super::metrics::inc;
use super::{NodeConfig, NodeError, NodeEvent};
use crate::address::Multiaddr;
use crate::identity::PeerId;
use crate::metrics::{direction_index, transport_index};
use crate::transport::{
    CloseReason, Connection, Direction, Incoming, Listener, Transport, TransportError,
};

pub(crate) type DialReply = oneshot::Sender<Result<PeerId, NodeError>>;

pub(crate) enum Command {
    Dial { addr: Multiaddr, reply: DialReply },
    Disconnect { peer: PeerId },
    Shutdown { reply: oneshot::Sender<()> },
}

enum Internal {
    Incoming(Incoming),
    Upgraded {
        result: Result<Connection, TransportError>,
        ip: Option<IpAddr>,
        remote: Multiaddr,
    },
    Dialed {
        dial_id: u64,
        addr: Multiaddr,
        result: Result<Connection, NodeError>,
    },
    Closed {
        peer: PeerId,
        id: u64,
        reason: CloseReason,
    },
}

struct PendingDial {
    expected: Option<PeerId>,
    waiters: Vec<DialReply>,
    bootstrap: Option<usize>,
}

struct Bootstrap {
    addr: Multiaddr,
    backoff: Duration,
    next_attempt: Option<Instant>,
    peer: Option<PeerId>,
}

struct Conn {
    ip: Option<IpAddr>,
}

pub(crate) struct EventLoop {
    shared: Arc<Shared>,
    config: Arc<NodeConfig>,
    transport: Transport,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    cancel: CancellationToken,
    /// Every connection that is running, kept or not yet closed, by id.
    running: HashMap<u64, Conn>,
    pending_inbound: usize,
    per_ip: HashMap<IpAddr, usize>,
    dials: HashMap<u64, PendingDial>,
    dialing_peer: HashMap<PeerId, u64>,
    next_dial_id: u64,
    bootstrap: Vec<Bootstrap>,
}

impl EventLoop {
    pub(crate) fn new(
        shared: Arc<Shared>,
        config: Arc<NodeConfig>,
        transport: Transport,
        cmd_rx: mpsc::UnboundedReceiver<Command>,
        listeners: Vec<Listener>,
    ) -> Self {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        for mut listener in listeners {
            let tx = internal_tx.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                loop {
                    let next = tokio::select! {
                        _ = cancel.cancelled() => break,
                        n = listener.accept() => n,
                    };
                    match next {
                        Ok(inc) => {
                            if tx.send(Internal::Incoming(inc)).is_err() {
                                break;
                            }
                        }
                        Err(TransportError::ListenerClosed) => break,
                        Err(e) => {
                            // Accept errors (EMFILE, aborted handshakes) are per-connection:
                            // pause briefly rather than spin, and keep listening.
                            tracing::debug!("accept failed on {}: {e}", listener.local_addr());
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            });
        }
        let now = Instant::now();
        let bootstrap = config
            .bootstrap
            .iter()
            .map(|addr| Bootstrap {
                addr: addr.clone(),
                backoff: config.reconnect_initial_backoff,
                next_attempt: Some(now),
                peer: None,
            })
            .collect();
        Self {
            shared,
            config,
            transport,
            cmd_rx,
            internal_tx,
            internal_rx,
            cancel,
            running: HashMap::new(),
            pending_inbound: 0,
            per_ip: HashMap::new(),
            dials: HashMap::new(),
            dialing_peer: HashMap::new(),
            next_dial_id: 0,
            bootstrap,
        }
    }

    pub(crate) async fn run(mut self) {
        let period = (self.config.keepalive_interval / 3)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut housekeeping = tokio::time::interval(period);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown_reply = loop {
            let next_bootstrap = self.bootstrap.iter().filter_map(|b| b.next_attempt).min();
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => break Some(reply),
                    Some(cmd) => self.on_command(cmd),
                    None => break None,
                },
                Some(ev) = self.internal_rx.recv() => self.on_internal(ev),
                _ = housekeeping.tick() => self.housekeeping(),
                _ = sleep_until_opt(next_bootstrap) => self.bootstrap_due(),
            }
        };
        self.shutdown().await;
        if let Some(reply) = shutdown_reply {
            let _ = reply.send(());
        }
    }

    async fn shutdown(&mut self) {
        self.cancel.cancel();
        let conns: Vec<_> = self
            .shared
            .connections
            .iter()
            .map(|c| c.value().clone())
            .collect();
        self.shared.connections.clear();
        for c in &conns {
            c.handle.close();
        }
        for (_, d) in self.dials.drain() {
            for w in d.waiters {
                let _ = w.send(Err(NodeError::Stopped));
            }
        }
        self.transport.shutdown().await;
        if let Ok(mut l) = self.shared.listen_addrs.write() {
            l.clear();
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => self.dial(addr, Some(reply), None),
            Command::Disconnect { peer } => {
                if let Some((_, pc)) = self.shared.connections.remove(&peer) {
                    pc.handle.close();
                    self.closed_event(peer, &pc.handle.info().remote_addr, "disconnected locally");
                }
            }
            Command::Shutdown { .. } => {}
        }
    }

    fn connection_count(&self) -> usize {
        self.shared.connections.len() + self.pending_inbound + self.dials.len()
    }

    /// At the connection limit: frees a slot by closing the connection idle the longest, if
    /// eviction is on and that connection has been idle long enough. True if a slot was freed.
    fn evict_idle(&mut self) -> bool {
        let Some(min_idle) = self.config.eviction_min_idle else {
            return false;
        };
        let keep: Vec<PeerId> = self.bootstrap.iter().filter_map(|b| b.peer).collect();
        let victim = self
            .shared
            .connections
            .iter()
            .filter(|c| !keep.contains(c.key()))
            .map(|c| (c.value().since_app(), *c.key()))
            .filter(|(idle, _)| *idle >= min_idle)
            .max();
        match victim {
            Some((_, peer)) => {
                if let Some((_, pc)) = self.shared.connections.remove(&peer) {
                    pc.handle.close();
                    self.closed_event(
                        peer,
                        &pc.handle.info().remote_addr,
                        "evicted: connection limit",
                    );
                }
                true
            }
            None => false,
        }
    }

    fn at_limit(&mut self) -> bool {
        self.connection_count() >= self.config.max_connections && !self.evict_idle()
    }

    fn dial(&mut self, addr: Multiaddr, reply: Option<DialReply>, bootstrap: Option<usize>) {
        let expected = addr.peer_id();
        if expected == Some(self.shared.local_peer) {
            if let Some(r) = reply {
                let _ = r.send(Err(NodeError::SelfDial));
            }
            return;
        }
        if let Some(peer) = expected {
            if self.shared.connections.contains_key(&peer) {
                if let Some(r) = reply {
                    let _ = r.send(Ok(peer));
                }
                if let Some(i) = bootstrap {
                    self.bootstrap_connected(i, peer);
                }
                return;
            }
            if let Some(id) = self.dialing_peer.get(&peer) {
                if let Some(d) = self.dials.get_mut(id) {
                    d.waiters.extend(reply);
                    if d.bootstrap.is_none() {
                        d.bootstrap = bootstrap;
                    }
                    return;
                }
            }
        }
        if self.at_limit() {
            let e = NodeError::ConnectionLimit(self.config.max_connections);
            self.shared.emit(NodeEvent::DialFailed {
                addr: addr.clone(),
                error: e.to_string(),
            });
            if let Some(r) = reply {
                let _ = r.send(Err(e));
            }
            if let Some(i) = bootstrap {
                self.bootstrap_failed(i);
            }
            return;
        }
        let dial_id = self.next_dial_id;
        self.next_dial_id += 1;
        self.dials.insert(
            dial_id,
            PendingDial {
                expected,
                waiters: reply.into_iter().collect(),
                bootstrap,
            },
        );
        if let Some(peer) = expected {
            self.dialing_peer.insert(peer, dial_id);
        }
        let transport = self.transport.clone();
        let tx = self.internal_tx.clone();
        let timeout = self.config.connection_timeout;
        if let Some(k) = addr.transport_kind() {
            self.shared.metrics.net().dials[transport_index(k)].inc();
        }
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, transport.dial(&addr)).await {
                Ok(r) => r.map_err(NodeError::from),
                Err(_) => Err(NodeError::ConnectionTimeout {
                    addr: addr.clone(),
                    secs: timeout.as_secs_f64(),
                }),
            };
            if let Ok(c) = &result {
                let (d, t) = (
                    direction_index(Direction::Outbound),
                    transport_index(c.info().kind),
                );
                metrics.net().handshake[d][t].observe(started.elapsed().as_secs_f64());
            }
            let _ = tx.send(Internal::Dialed {
                dial_id,
                addr,
                result,
            });
        });
    }

    fn on_internal(&mut self, ev: Internal) {
        match ev {
            Internal::Incoming(inc) => self.on_incoming(inc),
            Internal::Upgraded { result, ip, remote } => {
                self.pending_inbound = self.pending_inbound.saturating_sub(1);
                self.release_ip(ip);
                match result {
                    Ok(conn) => {
                        self.register(conn, ip);
                    }
                    Err(e) => {
                        inc(&self.shared.counters.handshake_failures, 1);
                        self.shared.metrics.net().handshake_failures.inc();
                        tracing::debug!(%remote, "inbound handshake failed: {e}");
                        self.shared.emit(NodeEvent::InboundFailed {
                            addr: remote,
                            reason: e.to_string(),
                        });
                    }
                }
            }
            Internal::Dialed {
                dial_id,
                addr,
                result,
            } => {
                let Some(pending) = self.dials.remove(&dial_id) else {
                    return;
                };
                if let Some(p) = pending.expected {
                    if self.dialing_peer.get(&p) == Some(&dial_id) {
                        self.dialing_peer.remove(&p);
                    }
                }
                match result {
                    Ok(conn) => {
                        let ip = conn.info().remote_addr.socket_addr().map(|s| s.ip());
                        let peer = self.register(conn, ip);
                        {
                            let dialed = addr.without_peer_id();
                            let mut known = self.shared.addresses.entry(peer).or_default();
                            known.retain(|a| a != &dialed);
                            known.insert(0, dialed);
                            known.truncate(8);
                        }
                        for w in pending.waiters {
                            let _ = w.send(Ok(peer));
                        }
                        if let Some(i) = pending.bootstrap {
                            self.bootstrap_connected(i, peer);
                        }
                    }
                    Err(e) => {
                        inc(&self.shared.counters.dial_failures, 1);
                        if let Some(k) = addr.transport_kind() {
                            self.shared.metrics.net().dial_errors[transport_index(k)].inc();
                        }
                        tracing::debug!(%addr, "dial failed: {e}");
                        self.shared.emit(NodeEvent::DialFailed {
                            addr: addr.clone(),
                            error: e.to_string(),
                        });
                        for w in pending.waiters {
                            let _ = w.send(Err(e.clone()));
                        }
                        if let Some(i) = pending.bootstrap {
                            self.bootstrap_failed(i);
                        }
                    }
                }
            }
            Internal::Closed { peer, id, reason } => {
                if let Some(c) = self.running.remove(&id) {
                    self.release_ip(c.ip);
                }
                let current = self
                    .shared
                    .connections
                    .remove_if(&peer, |_, pc| pc.handle.info().id == id);
                if let Some((_, pc)) = current {
                    self.closed_event(peer, &pc.handle.info().remote_addr, &reason.to_string());
                    let lost: Vec<usize> = (0..self.bootstrap.len())
                        .filter(|&i| self.bootstrap[i].peer == Some(peer))
                        .collect();
                    for i in lost {
                        tracing::debug!(bootstrap = i, "bootstrap peer lost, redialing");
                        self.bootstrap[i].peer = None;
                        self.schedule_bootstrap_retry(i);
                    }
                }
            }
        }
    }

    fn closed_event(&self, peer: PeerId, addr: &Multiaddr, reason: &str) {
        inc(&self.shared.counters.connections_closed, 1);
        tracing::info!(local = %self.shared.local_peer, %peer, %addr, reason, "disconnected");
        self.shared.emit(NodeEvent::ConnectionClosed {
            peer,
            addr: addr.clone(),
            reason: reason.to_string(),
        });
    }

    fn ip_limited(&self, ip: IpAddr) -> bool {
        !(self.config.per_ip_limit_exempt_loopback && ip.is_loopback())
    }

    fn release_ip(&mut self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            if let Some(n) = self.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&ip);
                }
            }
        }
    }

    fn on_incoming(&mut self, inc: Incoming) {
        let remote = inc.remote_addr().clone();
        let refuse = |this: &mut Self, inc: Incoming, reason: String| {
            inc_refused(this);
            tracing::debug!(%remote, "refusing inbound connection: {reason}");
            this.shared.emit(NodeEvent::InboundFailed {
                addr: remote.clone(),
                reason,
            });
            inc.refuse();
        };
        if self.at_limit() {
            let reason = format!(
                "connection limit of {} reached",
                self.config.max_connections
            );
            return refuse(self, inc, reason);
        }
        let ip = inc.remote_ip();
        if let Some(ip) = ip {
            let n = self.per_ip.get(&ip).copied().unwrap_or(0);
            if self.ip_limited(ip) && n >= self.config.max_connections_per_ip {
                let reason = format!(
                    "per-IP limit of {} reached for {ip}",
                    self.config.max_connections_per_ip
                );
                return refuse(self, inc, reason);
            }
            *self.per_ip.entry(ip).or_default() += 1;
        }
        self.pending_inbound += 1;
        let tx = self.internal_tx.clone();
        let metrics = self.shared.metrics.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = inc.upgrade().await;
            if let Ok(c) = &result {
                let (d, t) = (
                    direction_index(Direction::Inbound),
                    transport_index(c.info().kind),
                );
                metrics.net().handshake[d][t].observe(started.elapsed().as_secs_f64());
            }
            let _ = tx.send(Internal::Upgraded { result, ip, remote });
        });
    }

    /// Starts a freshly authenticated connection, or drops it if an existing connection to the
    /// same peer wins the tie-break. Returns the peer.
    fn register(&mut self, conn: Connection, ip: Option<IpAddr>) -> PeerId {
        let info = conn.info().clone();
        let peer = info.remote_peer;
        // Of two connections to one peer, both ends keep the same one (lowest rank). The other
        // is retired, not closed: whatever either side already queued on it is still
        // delivered, so a request sent in the race is not silently lost.
        if let Some(existing) = self.shared.connection(&peer) {
            if existing.handle.info().rank() <= info.rank() {
                tracing::debug!(local = %self.shared.local_peer, %peer, "retiring duplicate connection");
                let duplicate = conn.spawn(Arc::new(Dispatcher(self.shared.clone())), |_| {});
                duplicate.retire();
                return peer;
            }
            tracing::debug!(local = %self.shared.local_peer, %peer, "replacing connection with the one both sides keep");
            self.shared.connections.remove(&peer);
            existing.handle.retire();
        }
        if let Some(ip) = ip {
            *self.per_ip.entry(ip).or_default() += 1;
        }
        self.running.insert(info.id, Conn { ip });
        let tx = self.internal_tx.clone();
        let id = info.id;
        // Counted open from here until its driver ends (the guard goes with the callback).
        let open = OpenConnection::new(
            &self.shared.metrics.net().connections_open[direction_index(info.direction)]
                [transport_index(info.kind)],
        );
        // Published before it runs: a handler answering the first inbound message must find
        // this connection, or it would dial a second one.
        let (handle, start) =
            conn.spawn_paused(Arc::new(Dispatcher(self.shared.clone())), move |reason| {
                drop(open);
                let _ = tx.send(Internal::Closed { peer, id, reason });
            });
        let pc = Arc::new(PeerConn::new(handle));
        pc.touch_app();
        self.shared.connections.insert(peer, pc);
        start.start();
        inc(&self.shared.counters.connections_established, 1);
        tracing::info!(local = %self.shared.local_peer, %peer, addr = %info.remote_addr, direction = ?info.direction, id = info.id, "connected");
        self.shared.emit(NodeEvent::ConnectionEstablished {
            peer,
            addr: info.remote_addr.clone(),
            direction: info.direction,
            kind: info.kind,
        });
        if info.direction == Direction::Inbound {
            // A bootstrap peer that dialed us counts as connected.
            if let Some(i) = self
                .bootstrap
                .iter()
                .position(|b| b.addr.peer_id() == Some(peer))
            {
                self.bootstrap_connected(i, peer);
            }
        }
        peer
    }

    fn bootstrap_connected(&mut self, i: usize, peer: PeerId) {
        if let Some(b) = self.bootstrap.get_mut(i) {
            b.peer = Some(peer);
            b.next_attempt = None;
            b.backoff = self.config.reconnect_initial_backoff;
        }
    }

    fn bootstrap_failed(&mut self, i: usize) {
        self.schedule_bootstrap_retry(i);
    }

    /// Next attempt after the current delay; each further failure doubles the delay
    /// (1, 2, 4 … s by default) up to `reconnect_max_backoff`.
    fn schedule_bootstrap_retry(&mut self, i: usize) {
        let max = self.config.reconnect_max_backoff;
        if let Some(b) = self.bootstrap.get_mut(i) {
            b.next_attempt = Some(Instant::now() + b.backoff);
            b.backoff = (b.backoff * 2).min(max);
        }
    }

    fn bootstrap_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .bootstrap
            .iter()
            .enumerate()
            .filter(|(_, b)| b.next_attempt.is_some_and(|t| t <= now))
            .map(|(i, _)| i)
            .collect();
        for i in due {
            let addr = self.bootstrap[i].addr.clone();
            self.bootstrap[i].next_attempt = None;
            self.dial(addr, None, Some(i));
        }
    }

    fn housekeeping(&mut self) {
        let cfg = &self.config;
        let bootstrap_peers: Vec<PeerId> = self.bootstrap.iter().filter_map(|b| b.peer).collect();
        let conns: Vec<(PeerId, Arc<PeerConn>)> = self
            .shared
            .connections
            .iter()
            .map(|c| (*c.key(), c.value().clone()))
            .collect();
        for (peer, pc) in conns {
            let silent = pc.handle.since_last_received();
            if silent >= cfg.keepalive_timeout {
                tracing::debug!(%peer, "keepalive timeout");
                pc.handle.close();
                continue;
            }
            if pc.since_app() >= cfg.idle_timeout && !bootstrap_peers.contains(&peer) {
                tracing::debug!(%peer, "idle timeout");
                pc.handle.close();
                continue;
            }
            if silent >= cfg.keepalive_interval {
                self.shared.send_ping(&peer, false, rand::random());
            }
        }
    }
}

fn inc_refused(this: &EventLoop) {
    inc(&this.shared.counters.inbound_refused, 1);
    this.shared.metrics.net().inbound_refused.inc();
}

/// One connection in the `connections_open` gauge: counted while this lives. It moves into
/// the connection's close callback, so it ends when the connection does (or when the
/// callback is dropped unrun, the runtime shutting down).
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(g: &prometheus_client::metrics::gauge::Gauge) -> Self {
        g.inc();
        Self(g.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
