use crate::address::Multiaddr;
use crate::identity::PeerId;
use crate::transport::{SendError, TransportError};
use crate::wire::ProtocolId;

/// Errors from the node and its handle.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// Dialing or listening failed in the transport.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A dial did not complete within `connection_timeout`.
    #[error("Connection timeout: dialing {addr} took longer than {secs:.1} s")]
    ConnectionTimeout {
        /// The address.
        addr: Multiaddr,
        /// The limit.
        secs: f64,
    },
    /// The peer is not connected and no address for it is known.
    #[error("not connected to {0} and no address is known for it")]
    NotConnected(PeerId),
    /// The node already has `max_connections` connections.
    #[error("connection limit of {0} reached")]
    ConnectionLimit(usize),
    /// Queuing the message failed.
    #[error("sending to {peer}: {source}")]
    Send {
        /// The peer.
        peer: PeerId,
        /// Why.
        #[source]
        source: SendError,
    },
    /// A handler for this protocol is already registered.
    #[error("a handler for {0} is already registered")]
    AlreadyRegistered(ProtocolId),
    /// No pong arrived in time.
    #[error("ping to {0} timed out")]
    PingTimeout(PeerId),
    /// Dialing our own identity.
    #[error("refusing to dial our own peer id")]
    SelfDial,
    /// The node has shut down.
    #[error("node is not running")]
    Stopped,
    /// The configuration is invalid.
    #[error("invalid node configuration: {0}")]
    Config(String),
}

impl NodeError {
    /// True when a retry later might succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            NodeError::Transport(e) => e.is_transient(),
            NodeError::ConnectionTimeout { .. }
            | NodeError::NotConnected(_)
            | NodeError::ConnectionLimit(_)
            | NodeError::PingTimeout(_) => true,
            NodeError::Send { source, .. } => {
                matches!(source, SendError::QueueFull | SendError::Closed)
            }
            _ => false,
        }
    }
}
