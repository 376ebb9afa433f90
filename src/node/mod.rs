//! The per-node event loop: owns listeners and connections, routes inbound messages to the
//! protocol handlers registered for them, and runs connection housekeeping.
//!
//! One actor task per node ([`Node::spawn`]) owns every decision about connections: limits,
//! which of two simultaneous connections survives, keepalive and idle closing, reconnecting
//! to bootstrap peers with backoff. Callers hold a cheap [`NodeHandle`]. The hot paths do not
//! go through the actor: a connection's driver hands each inbound message straight to the
//! handler's queue, and [`NodeHandle::send`] writes straight into the connection's send queue.
//!
//! Protocol logic (Kademlia, gossip, RPC) lives above this module and reaches peers only
//! through `register`/`send`.

mod config;
mod dispatch;
mod error;
mod event;
mod event_loop;
mod handle;
mod metrics;

pub use config::NodeConfig;
pub use error::NodeError;
pub use event::NodeEvent;
pub use handle::{InboundMessage, Node, NodeHandle};
pub use metrics::NodeMetrics;

/// The built-in liveness protocol (`/ggen/ping`, version 1).
pub const PING_PROTOCOL: &str = "/ggen/ping";

/// Serde helper: a `Duration` as a number of seconds (fractions allowed), as config files
/// and the seed's `connection_timeout = 30` write it.
pub(crate) mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
