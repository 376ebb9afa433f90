use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

#[derive(Default, Debug)]
pub(crate) struct Counters {
    pub connections_established: AtomicU64,
    pub connections_closed: AtomicU64,
    pub inbound_refused: AtomicU64,
    pub handshake_failures: AtomicU64,
    pub dial_failures: AtomicU64,
    pub messages_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub unknown_protocol: AtomicU64,
    pub malformed: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A snapshot of a node's counters since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// Connections currently established.
    pub connected_peers: u64,
    /// Connections established (kept, after duplicate resolution).
    pub connections_established: u64,
    /// Connections that ended.
    pub connections_closed: u64,
    /// Inbound connections refused by limits.
    pub inbound_refused: u64,
    /// Inbound handshakes that failed.
    pub handshake_failures: u64,
    /// Outbound dials that failed.
    pub dial_failures: u64,
    /// Protocol messages queued for sending.
    pub messages_sent: u64,
    /// Payload bytes queued for sending.
    pub bytes_sent: u64,
    /// Protocol messages received and routed.
    pub messages_received: u64,
    /// Payload bytes received and routed.
    pub bytes_received: u64,
    /// Messages for protocols with no handler.
    pub unknown_protocol: u64,
    /// Messages that did not decode (the connection carrying each was closed).
    pub malformed: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self, connected: usize) -> NodeMetrics {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NodeMetrics {
            connected_peers: connected as u64,
            connections_established: g(&self.connections_established),
            connections_closed: g(&self.connections_closed),
            inbound_refused: g(&self.inbound_refused),
            handshake_failures: g(&self.handshake_failures),
            dial_failures: g(&self.dial_failures),
            messages_sent: g(&self.messages_sent),
            bytes_sent: g(&self.bytes_sent),
            messages_received: g(&self.messages_received),
            bytes_received: g(&self.bytes_received),
            unknown_protocol: g(&self.unknown_protocol),
            malformed: g(&self.malformed),
        }
    }
}
