//! Typed RPC failures.

use crate::identity::PeerId;

use super::message::{ErrorFrame, ErrorKind};

/// Why a request produced no response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// The peer was not connected and could not be dialed.
    #[error("could not reach {peer}: {reason}")]
    Dial {
        /// The peer.
        peer: PeerId,
        /// The dial error.
        reason: String,
    },
    /// No answer within the request's timeout.
    #[error("{peer} did not answer in time")]
    Timeout {
        /// The peer.
        peer: PeerId,
    },
    /// The connection closed before the answer came.
    #[error("the connection to {peer} closed before it answered")]
    ConnectionClosed {
        /// The peer.
        peer: PeerId,
    },
    /// The peer does not serve the protocol.
    #[error("unsupported protocol: {0}")]
    UnsupportedProtocol(String),
    /// The peer's handler failed; its message.
    #[error("remote error: {0}")]
    Remote(String),
    /// A request or response above the protocol's limit (found by either side; the text
    /// gives the size and the limit).
    #[error("too large: {0}")]
    TooLarge(String),
    /// The peer is at its concurrency limit.
    #[error("peer busy: {0}")]
    Busy(String),
    /// The peer's rate limit for us is exhausted.
    #[error("rate limited: {0}")]
    RateLimited(String),
    /// The peer could not decode the request for its protocol, or we its response.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Our own limit of requests in flight is reached.
    #[error("too many requests in flight ({limit}{})", if *per_peer { " to this peer" } else { "" })]
    LocalLimit {
        /// The limit.
        limit: usize,
        /// Whether it is the per-peer limit.
        per_peer: bool,
    },
    /// A local misuse (e.g. a repeated request id).
    #[error("{0}")]
    Local(String),
    /// The RPC service has stopped.
    #[error("the rpc service is not running")]
    Stopped,
}

impl RpcError {
    /// Whether one retry (later, or against the same peer) may succeed: dial failures,
    /// timeouts, closed connections, busy, rate limited and our own in-flight limit.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RpcError::Dial { .. }
                | RpcError::Timeout { .. }
                | RpcError::ConnectionClosed { .. }
                | RpcError::Busy(_)
                | RpcError::RateLimited(_)
                | RpcError::LocalLimit { .. }
        )
    }

    /// Whether the failure says something about the peer (for its reputation).
    pub(crate) fn counts_against_peer(&self) -> bool {
        matches!(
            self,
            RpcError::Timeout { .. }
                | RpcError::ConnectionClosed { .. }
                | RpcError::Remote(_)
                | RpcError::Malformed(_)
                | RpcError::TooLarge(_)
        )
    }

    pub(crate) fn from_remote(e: ErrorFrame) -> Self {
        match e.kind {
            ErrorKind::UnsupportedProtocol => RpcError::UnsupportedProtocol(e.message),
            ErrorKind::Busy => RpcError::Busy(e.message),
            ErrorKind::RateLimited => RpcError::RateLimited(e.message),
            ErrorKind::RequestTooLarge | ErrorKind::ResponseTooLarge => {
                RpcError::TooLarge(e.message)
            }
            ErrorKind::Handler => RpcError::Remote(e.message),
            ErrorKind::Timeout => RpcError::Remote(format!("handler timeout: {}", e.message)),
            ErrorKind::Malformed => RpcError::Malformed(e.message),
        }
    }
}
