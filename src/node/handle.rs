use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::dispatch::{PeerConn, Shared};
use super::event_loop::{Command, EventLoop};
use super::metrics::inc;
use super::{NodeConfig, NodeError, NodeEvent, NodeMetrics};
use crate::address::Multiaddr;
use crate::identity::{Keypair, PeerId};
use crate::metrics::{Metrics, transport_index};
use crate::transport::{ConnectionInfo, SendError, Transport};
use crate::wire::{Envelope, ProtocolId};

/// A message received for a registered protocol.
#[derive(Clone, Debug)]
pub struct InboundMessage {
    /// The authenticated sender.
    pub peer: PeerId,
    /// The protocol it was sent under.
    pub protocol: ProtocolId,
    /// The protocol's bytes.
    pub payload: Bytes,
    /// Id of the connection that carried it.
    pub connection_id: u64,
}

/// Starts nodes.
#[derive(Debug)]
pub struct Node;

impl Node {
    /// Binds every listen address, starts the event loop and returns its handle. Bootstrap
    /// peers are dialed right away, in the background.
    pub async fn spawn(keypair: Keypair, config: NodeConfig) -> Result<NodeHandle, NodeError> {
        Self::spawn_with_metrics(keypair, config, Metrics::new()).await
    }

    /// [`Node::spawn`], recording into `metrics`: the node and every layer started on it
    /// (DHT, gossip, RPC, content) observe into it ([`NodeHandle::prometheus`]).
    pub async fn spawn_with_metrics(
        keypair: Keypair,
        config: NodeConfig,
        metrics: Metrics,
    ) -> Result<NodeHandle, NodeError> {
        config.validate().map_err(NodeError::Config)?;
        let transport = Transport::new(&keypair, config.transport.clone())?;
        let shared = Arc::new(Shared::new(keypair.clone(), metrics));
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = transport.listen(addr).await?;
            tracing::debug!(addr = %l.local_addr(), "listening");
            listeners.push(l);
        }
        let bound: Vec<Multiaddr> = listeners.iter().map(|l| l.local_addr().clone()).collect();
        if let Ok(mut l) = shared.listen_addrs.write() {
            *l = bound.clone();
        }
        for addr in bound {
            shared.emit(NodeEvent::Listening { addr });
        }
        let config = Arc::new(config);
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let event_loop =
            EventLoop::new(shared.clone(), config.clone(), transport, cmd_rx, listeners);
        tokio::spawn(event_loop.run());
        Ok(NodeHandle {
            shared,
            cmd: cmd_tx,
            config,
        })
    }
}

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<Command>,
    config: Arc<NodeConfig>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.shared.local_peer)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Our identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.shared.local_peer
    }

    /// The bound listen addresses (real ports), without `/p2p`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .listen_addrs
            .read()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// True until [`NodeHandle::shutdown`] (or the event loop ending).
    pub fn is_running(&self) -> bool {
        !self.cmd.is_closed()
    }

    /// Resolves once the node has stopped (its event loop ended): protocol drivers that
    /// keep a handle of their own use it to end with the node.
    pub async fn stopped(&self) {
        self.cmd.closed().await;
    }

    /// Dials `addr` and waits until the peer is connected (or the dial fails). A trailing
    /// `/p2p/<PeerId>` pins the identity; a connection that already exists is reused.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, NodeError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Dial { addr, reply })
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)?
    }

    /// Remembers an address for `peer`, so that [`NodeHandle::send`] can dial it when needed.
    pub fn add_address(&self, peer: PeerId, addr: Multiaddr) {
        let addr = addr.without_peer_id();
        let mut list = self.shared.addresses.entry(peer).or_default();
        if !list.contains(&addr) {
            list.push(addr);
            if list.len() > 8 {
                list.remove(0);
            }
        }
    }

    /// Known addresses of `peer`.
    pub fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.shared
            .addresses
            .get(peer)
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Registers the handler for `protocol`: every message for it arrives on the returned
    /// queue. Dropping the receiver stops delivery (messages are then counted as unknown).
    pub fn register(
        &self,
        protocol: ProtocolId,
    ) -> Result<mpsc::Receiver<InboundMessage>, NodeError> {
        let mut list = self
            .shared
            .handlers
            .entry(protocol.name().to_owned())
            .or_default();
        list.retain(|(_, tx)| !tx.is_closed());
        if list.iter().any(|(p, _)| p.version() == protocol.version()) {
            return Err(NodeError::AlreadyRegistered(protocol));
        }
        let (tx, rx) = mpsc::channel(self.config.handler_queue);
        list.push((protocol, tx));
        Ok(rx)
    }

    /// Sends `payload` to `peer` under `protocol`, waiting while the connection's send queue
    /// is full. Dials a known address first if the peer is not connected.
    pub async fn send(
        &self,
        peer: PeerId,
        protocol: &ProtocolId,
        payload: Bytes,
    ) -> Result<(), NodeError> {
        self.send_parts(peer, protocol, &[], payload).await
    }

    /// [`NodeHandle::send`] of the message `head ‖ body`, where `head` is small (it is
    /// copied once, after the envelope header) and `body` is passed on without a copy.
    pub async fn send_parts(
        &self,
        peer: PeerId,
        protocol: &ProtocolId,
        head: &[u8],
        payload: Bytes,
    ) -> Result<(), NodeError> {
        let pc = match self.shared.connection(&peer) {
            Some(pc) => pc,
            None => {
                self.dial_known(peer).await?;
                self.shared
                    .connection(&peer)
                    .ok_or(NodeError::NotConnected(peer))?
            }
        };
        let len = (head.len() + payload.len()) as u64;
        let header = header_with(protocol, head);
        let pc = match pc.handle.send(header.clone(), payload.clone()).await {
            Ok(()) => pc,
            // The connection was retired (a duplicate lost) or closed between lookup and
            // send: if the peer has another connection by now, use it.
            Err(SendError::Closed) => {
                let now = self.replacement(&peer, &pc)?;
                now.handle
                    .send(header, payload)
                    .await
                    .map_err(|source| NodeError::Send { peer, source })?;
                now
            }
            Err(source) => return Err(NodeError::Send { peer, source }),
        };
        pc.touch_app();
        inc(&self.shared.counters.messages_sent, 1);
        inc(&self.shared.counters.bytes_sent, len);
        self.shared.metrics.net().sent_bytes[transport_index(pc.handle.info().kind)].inc_by(len);
        Ok(())
    }

    /// The peer's current connection, if it is not `old`; otherwise a `Closed` send error.
    fn replacement(&self, peer: &PeerId, old: &PeerConn) -> Result<Arc<PeerConn>, NodeError> {
        self.shared
            .connection(peer)
            .filter(|c| c.handle.info().id != old.handle.info().id)
            .ok_or(NodeError::Send {
                peer: *peer,
                source: SendError::Closed,
            })
    }

    /// Sends without waiting: fails with a `QueueFull` send error when the connection's
    /// queue is full, and with `NotConnected` when there is no connection.
    pub fn try_send(
        &self,
        peer: PeerId,
        protocol: &ProtocolId,
        payload: Bytes,
    ) -> Result<(), NodeError> {
        self.try_send_parts(peer, protocol, &[], payload)
    }

    /// [`NodeHandle::try_send`] of the message `head ‖ body` (see
    /// [`NodeHandle::send_parts`]).
    pub fn try_send_parts(
        &self,
        peer: PeerId,
        protocol: &ProtocolId,
        head: &[u8],
        payload: Bytes,
    ) -> Result<(), NodeError> {
        let pc = self
            .shared
            .connection(&peer)
            .ok_or(NodeError::NotConnected(peer))?;
        let len = (head.len() + payload.len()) as u64;
        let header = header_with(protocol, head);
        let pc = match pc.handle.try_send(header.clone(), payload.clone()) {
            Ok(()) => pc,
            Err(SendError::Closed) => {
                let now = self.replacement(&peer, &pc)?;
                now.handle
                    .try_send(header, payload)
                    .map_err(|source| NodeError::Send { peer, source })?;
                now
            }
            Err(source) => return Err(NodeError::Send { peer, source }),
        };
        pc.touch_app();
        inc(&self.shared.counters.messages_sent, 1);
        inc(&self.shared.counters.bytes_sent, len);
        self.shared.metrics.net().sent_bytes[transport_index(pc.handle.info().kind)].inc_by(len);
        Ok(())
    }

    async fn dial_known(&self, peer: PeerId) -> Result<(), NodeError> {
        let addrs = self.addresses_of(&peer);
        if addrs.is_empty() {
            return Err(NodeError::NotConnected(peer));
        }
        let mut last = NodeError::NotConnected(peer);
        for addr in addrs {
            match self.dial(addr.with_peer_id(peer)).await {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Measures one round trip to a connected peer (or one we know an address for).
    pub async fn ping(&self, peer: PeerId) -> Result<Duration, NodeError> {
        if self.shared.connection(&peer).is_none() {
            self.dial_known(peer).await?;
        }
        let nonce: u64 = rand::random();
        let (tx, rx) = oneshot::channel();
        self.shared.pings.insert(nonce, tx);
        let start = tokio::time::Instant::now();
        if !self.shared.send_ping(&peer, false, nonce) {
            self.shared.pings.remove(&nonce);
            return Err(NodeError::NotConnected(peer));
        }
        let r = tokio::time::timeout(
            self.config.keepalive_interval.max(Duration::from_secs(10)),
            rx,
        )
        .await;
        self.shared.pings.remove(&nonce);
        match r {
            Ok(Ok(())) => Ok(start.elapsed()),
            _ => Err(NodeError::PingTimeout(peer)),
        }
    }

    /// The node's identity key (for protocols that sign in its name).
    pub(crate) fn keypair(&self) -> Keypair {
        self.shared.keypair.clone()
    }

    /// Closes the connection to `peer`, if any.
    pub fn disconnect(&self, peer: PeerId) {
        let _ = self.cmd.send(Command::Disconnect { peer });
    }

    /// Peers with an established connection.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.shared.connections.iter().map(|c| *c.key()).collect()
    }

    /// Number of established connections.
    pub fn connected_count(&self) -> usize {
        self.shared.connections.len()
    }

    /// Whether `peer` is connected.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.shared.connections.contains_key(peer)
    }

    /// Details of every established connection.
    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.shared
            .connections
            .iter()
            .map(|c| c.value().handle.info().clone())
            .collect()
    }

    /// Subscribes to connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.shared.events.subscribe()
    }

    /// The Prometheus instruments this node (and every layer on it) records into.
    pub fn prometheus(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Counters since start.
    pub fn metrics(&self) -> NodeMetrics {
        self.shared.counters.snapshot(self.shared.connections.len())
    }

    /// Closes every connection and listener and stops the event loop. Returns once the
    /// listen ports are released.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.cmd.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// The envelope header for `protocol`, followed by `head`.
fn header_with(protocol: &ProtocolId, head: &[u8]) -> Bytes {
    let header = Envelope::encode_header(protocol);
    if head.is_empty() {
        return header;
    }
    let mut out = Vec::with_capacity(header.len() + head.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(head);
    Bytes::from(out)
}
