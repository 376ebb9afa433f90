//! State shared between the actor, the handles and the connection drivers, and the inbound
//! dispatcher that routes each message to its protocol's handler.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use super::metrics::{Counters, inc};
use super::{InboundMessage, NodeEvent, PING_PROTOCOL};
use crate::address::Multiaddr;
use crate::identity::{Keypair, PeerId};
use crate::metrics::{Metrics, transport_index};
use crate::transport::{ConnectionHandle, ConnectionInfo, InboundSink};
use crate::wire::{Envelope, EnvelopeRef, ProtocolId};

const PING: u8 = 0;
const PONG: u8 = 1;

/// The connection currently used for a peer, plus when it last carried a protocol message.
pub(crate) struct PeerConn {
    pub(crate) handle: ConnectionHandle,
    base: Instant,
    last_app_ms: AtomicU64,
}

impl PeerConn {
    pub(crate) fn new(handle: ConnectionHandle) -> Self {
        Self {
            handle,
            base: Instant::now(),
            last_app_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch_app(&self) {
        self.last_app_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(crate) fn since_app(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_app_ms.load(Ordering::Relaxed)))
    }
}

type HandlerList = Vec<(ProtocolId, mpsc::Sender<InboundMessage>)>;

pub(crate) struct Shared {
    pub(crate) local_peer: PeerId,
    /// Our identity key, for protocols that sign (gossip messages, peer records).
    pub(crate) keypair: Keypair,
    pub(crate) connections: DashMap<PeerId, Arc<PeerConn>>,
    pub(crate) handlers: DashMap<String, HandlerList>,
    pub(crate) listen_addrs: RwLock<Vec<Multiaddr>>,
    pub(crate) addresses: DashMap<PeerId, Vec<Multiaddr>>,
    pub(crate) events: broadcast::Sender<NodeEvent>,
    pub(crate) counters: Counters,
    /// The node's Prometheus instruments (shared with the layers above).
    pub(crate) metrics: Metrics,
    pub(crate) pings: DashMap<u64, oneshot::Sender<()>>,
    pub(crate) ping_header: Bytes,
}

impl Shared {
    pub(crate) fn new(keypair: Keypair, metrics: Metrics) -> Self {
        let local_peer = keypair.peer_id();
        let ping = ProtocolId::new(PING_PROTOCOL, 1)
            .unwrap_or_else(|_| unreachable!("PING_PROTOCOL is a valid protocol name"));
        Self {
            local_peer,
            keypair,
            connections: DashMap::new(),
            handlers: DashMap::new(),
            listen_addrs: RwLock::new(Vec::new()),
            addresses: DashMap::new(),
            events: broadcast::channel(1024).0,
            counters: Counters::default(),
            metrics,
            pings: DashMap::new(),
            ping_header: Envelope::encode_header(&ping),
        }
    }

    pub(crate) fn emit(&self, e: NodeEvent) {
        let _ = self.events.send(e);
    }

    pub(crate) fn connection(&self, peer: &PeerId) -> Option<Arc<PeerConn>> {
        self.connections.get(peer).map(|c| c.value().clone())
    }

    /// Sends a ping (or pong) frame without waiting for queue space.
    pub(crate) fn send_ping(&self, peer: &PeerId, kind_pong: bool, nonce: u64) -> bool {
        let Some(pc) = self.connection(peer) else {
            return false;
        };
        let mut p = BytesMut::with_capacity(9);
        p.put_u8(if kind_pong { PONG } else { PING });
        p.put_u64(nonce);
        pc.handle
            .try_send(self.ping_header.clone(), p.freeze())
            .is_ok()
    }

    fn close_if_current(&self, conn: &ConnectionInfo) {
        if let Some(pc) = self.connection(&conn.remote_peer) {
            if pc.handle.info().id == conn.id {
                pc.handle.close();
            }
        }
    }
}

/// Routes inbound messages by protocol id.
pub(crate) struct Dispatcher(pub(crate) Arc<Shared>);

impl InboundSink for Dispatcher {
    async fn deliver(&self, conn: &ConnectionInfo, message: Bytes) {
        let shared = &self.0;
        let env = match EnvelopeRef::decode(&message) {
            Ok(e) => e,
            Err(e) => {
                inc(&shared.counters.malformed, 1);
                tracing::debug!(peer = %conn.remote_peer, "malformed envelope, closing connection: {e}");
                shared.close_if_current(conn);
                return;
            }
        };
        let payload = message.slice(env.payload_offset..);
        if env.name == PING_PROTOCOL && env.version == 1 {
            let (Some(&kind), Some(nonce)) = (payload.first(), payload.get(1..9)) else {
                inc(&shared.counters.malformed, 1);
                shared.close_if_current(conn);
                return;
            };
            let mut n = [0u8; 8];
            n.copy_from_slice(nonce);
            let nonce = u64::from_be_bytes(n);
            match kind {
                PING => {
                    shared.send_ping(&conn.remote_peer, true, nonce);
                }
                PONG => {
                    if let Some((_, tx)) = shared.pings.remove(&nonce) {
                        let _ = tx.send(());
                    }
                }
                _ => {
                    inc(&shared.counters.malformed, 1);
                    shared.close_if_current(conn);
                }
            }
            return;
        }
        let target = shared.handlers.get(env.name).and_then(|list| {
            list.iter()
                .find(|(p, _)| p.version() == env.version)
                .map(|(p, tx)| (p.clone(), tx.clone()))
        });
        let Some((protocol, tx)) = target else {
            inc(&shared.counters.unknown_protocol, 1);
            tracing::trace!(peer = %conn.remote_peer, protocol = env.name, version = env.version, "no handler");
            return;
        };
        if let Some(pc) = shared.connection(&conn.remote_peer) {
            pc.touch_app();
        }
        inc(&shared.counters.messages_received, 1);
        inc(&shared.counters.bytes_received, payload.len() as u64);
        shared.metrics.net().received_bytes[transport_index(conn.kind)]
            .inc_by(payload.len() as u64);
        let msg = InboundMessage {
            peer: conn.remote_peer,
            protocol,
            payload,
            connection_id: conn.id,
        };
        if tx.send(msg).await.is_err() {
            inc(&shared.counters.unknown_protocol, 1);
        }
    }
}
