use std::sync::Arc;

use crate::address::{Multiaddr, MultiaddrError};
use crate::identity::PeerId;
use crate::wire::WireError;

/// Why a connection could not be established or was lost. `Clone`, so one failed dial can
/// be reported to everyone waiting on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The address has no transport, or names something we cannot do (e.g. DNS with no result).
    #[error(transparent)]
    Address(#[from] MultiaddrError),
    /// Listening on a memory port that is taken, or dialing one nobody listens on.
    #[error("memory address {0} is not available")]
    MemoryAddress(Multiaddr),
    /// Socket-level failure (connection refused, address in use, reset …).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The OS error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// The handshake did not finish in time.
    #[error("handshake with {addr} timed out after {secs:.1} s")]
    HandshakeTimeout {
        /// Remote address.
        addr: Multiaddr,
        /// The limit.
        secs: f64,
    },
    /// The Noise or TLS handshake failed (bad message, failed decryption, wrong protocol).
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The remote's identity payload was malformed.
    #[error("invalid identity payload in handshake: {0}")]
    InvalidPayload(#[from] WireError),
    /// The remote's signature over its handshake key does not verify.
    #[error("remote identity signature does not verify: the peer cannot prove it owns key {0}")]
    BadIdentitySignature(PeerId),
    /// We dialed `/…/p2p/<expected>` and authenticated a different key.
    #[error("peer id mismatch: dialed {expected} but the remote authenticated as {actual}")]
    PeerIdMismatch {
        /// The id in the dialed address.
        expected: PeerId,
        /// The id the remote proved.
        actual: PeerId,
    },
    /// The remote authenticated as ourselves.
    #[error("dialed our own peer id")]
    SelfDial,
    /// QUIC connection error after the handshake started.
    #[error("QUIC: {0}")]
    Quic(String),
    /// The listener was closed.
    #[error("listener closed")]
    ListenerClosed,
}

impl TransportError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TransportError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// True when trying again later might succeed (timeouts, refused or reset connections).
    /// Identity failures are not transient.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            TransportError::Io { .. }
                | TransportError::HandshakeTimeout { .. }
                | TransportError::Quic(_)
                | TransportError::MemoryAddress(_)
        )
    }
}
