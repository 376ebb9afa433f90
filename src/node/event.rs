use crate::address::{Multiaddr, TransportKind};
use crate::identity::PeerId;
use crate::transport::Direction;

/// Something that happened to a node's connections, broadcast to every
/// [`crate::node::NodeHandle::events`] subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A listener is bound.
    Listening {
        /// The bound address.
        addr: Multiaddr,
    },
    /// A connection to `peer` is established and in use.
    ConnectionEstablished {
        /// The authenticated peer.
        peer: PeerId,
        /// Its address.
        addr: Multiaddr,
        /// Who dialed.
        direction: Direction,
        /// Transport.
        kind: TransportKind,
    },
    /// The connection to `peer` ended.
    ConnectionClosed {
        /// The peer.
        peer: PeerId,
        /// Its address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// An outbound dial failed.
    DialFailed {
        /// The address dialed.
        addr: Multiaddr,
        /// Why.
        error: String,
    },
    /// An inbound connection was turned away or failed its handshake.
    InboundFailed {
        /// Where it came from.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
}
