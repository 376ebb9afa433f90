//! Transports: authenticated, multiplexed message connections to a known `PeerId`.
//!
//! This module owns sockets and cryptographic handshakes. It turns an address into a
//! [`Connection`] whose remote identity has been proven, and drives that connection
//! (delivering whole inbound messages to an [`InboundSink`], sending queued outbound ones).
//! It knows nothing about protocols above it: a message is opaque bytes here.
//!
//! - [`tcp`]: TCP + Noise XX (snow), messages chunked into ≤ 64 KiB Noise frames and
//!   interleaved so that a large message does not hold back small ones ([`mux`]).
//! - [`quic`]: QUIC v1 (quinn) with TLS 1.3 (rustls, `ring` provider) authenticated by raw
//!   Ed25519 public keys (RFC 7250); one unidirectional stream per message.
//! - [`memory`]: in-process byte pipes (`/memory/N`) running the same Noise and mux code as TCP.
//!
//! Messages to one peer are delivered reliably and whole, but not necessarily in the order
//! they were sent: a small message may overtake a large one. Protocols must not depend on
//! ordering between messages.

mod connection;
mod error;
pub mod memory;
pub mod mux;
pub mod noise;
pub mod quic;
pub mod tcp;
mod tls;
#[allow(clippy::module_inception)]
mod transport;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use connection::{
    CloseReason, Connection, ConnectionHandle, ConnectionInfo, Direction, InboundSink, SendError,
    Start,
};
pub use error::TransportError;
pub use transport::{Incoming, Listener, Transport};

use crate::wire::Limits;

/// Transport settings. Every field has a default; `#[serde(default)]` lets a TOML file name
/// only what it changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransportConfig {
    /// Size limits on what peers send.
    pub limits: Limits,
    /// Time allowed for the cryptographic handshake of one connection (default 10 s).
    #[serde(with = "crate::node::duration_secs")]
    pub handshake_timeout: Duration,
    /// Bytes of outbound messages that may wait in one connection's send queue (default 32 MiB;
    /// at least `limits.max_message_size`). Senders wait, or fail with `try_send`, past it.
    pub send_queue_bytes: usize,
    /// Disable Nagle's algorithm on TCP sockets (default true).
    pub tcp_nodelay: bool,
    /// Buffer size of each direction of an in-memory pipe (default 256 KiB).
    pub memory_pipe_bytes: usize,
    /// QUIC: concurrent unidirectional streams (that is, messages in flight) we allow a peer
    /// to open towards us (default 256).
    pub quic_max_streams: u32,
    /// QUIC: per-stream receive window in bytes (default 4 MiB).
    pub quic_stream_window: u32,
    /// QUIC: per-connection receive and send window in bytes (default 16 MiB).
    pub quic_connection_window: u32,
    /// QUIC: close a connection after this long without any packet (default 60 s; the node's
    /// keepalive pings keep live connections busier than that).
    #[serde(with = "crate::node::duration_secs")]
    pub quic_max_idle: Duration,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(10),
            send_queue_bytes: 32 * 1024 * 1024,
            tcp_nodelay: true,
            memory_pipe_bytes: 256 * 1024,
            quic_max_streams: 256,
            quic_stream_window: 4 * 1024 * 1024,
            quic_connection_window: 16 * 1024 * 1024,
            quic_max_idle: Duration::from_secs(60),
        }
    }
}
