//! DHT messages and their codec: PING, FIND_NODE, GET_VALUE, PUT_VALUE, ADD_PROVIDER,
//! GET_PROVIDERS, each with closer peers and their addresses.
//!
//! Postcard-encoded; enums only ever gain variants at the end. [`Message::decode`] is total:
//! it checks the message size first, then every list length and address count against
//! [`MessageLimits`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Key;
use crate::address::Multiaddr;
use crate::identity::PeerId;
use crate::wire::WireError;

/// A peer and the addresses it can be reached at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// Identity.
    pub peer: PeerId,
    /// Dialable addresses (without `/p2p`).
    pub addrs: Vec<Multiaddr>,
}

/// A value stored in the DHT under `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Application key (hashed to a [`Key`] for placement).
    pub key: Bytes,
    /// Application value.
    pub value: Bytes,
    /// Who published it, if known.
    pub publisher: Option<PeerId>,
    /// Remaining lifetime in seconds, as the sender sees it (clocks are not compared).
    pub ttl_secs: u32,
}

/// Requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness check.
    Ping,
    /// The k peers closest to `key` that the recipient knows.
    FindNode {
        /// Target point.
        key: Key,
    },
    /// The record under `key`, or closer peers.
    GetValue {
        /// Application key.
        key: Bytes,
    },
    /// Store `record`.
    PutValue {
        /// The record.
        record: Record,
    },
    /// `provider` can serve content for `key`.
    AddProvider {
        /// Application key.
        key: Bytes,
        /// Who provides (must be the sender).
        provider: PeerRecord,
    },
    /// Known providers of `key`, and closer peers.
    GetProviders {
        /// Application key.
        key: Bytes,
    },
}

/// Responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong,
    /// Answer to `FindNode`.
    Nodes {
        /// Closest known peers.
        closer: Vec<PeerRecord>,
    },
    /// Answer to `GetValue`.
    Value {
        /// The record, if stored here.
        record: Option<Record>,
        /// Closest known peers.
        closer: Vec<PeerRecord>,
    },
    /// `PutValue` or `AddProvider` accepted.
    Stored,
    /// Answer to `GetProviders`.
    Providers {
        /// Known providers.
        providers: Vec<PeerRecord>,
        /// Closest known peers.
        closer: Vec<PeerRecord>,
    },
    /// The request was refused (invalid record, client mode, …).
    Error {
        /// Why.
        reason: String,
    },
}

/// One DHT message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A request. `sender` carries the sender's listen addresses when it is a DHT server, so
    /// the recipient can add it to its routing table; clients send `None`.
    Request {
        /// Matches the response.
        id: u64,
        /// The sender as a server, if it is one.
        sender: Option<PeerRecord>,
        /// What is asked.
        body: Request,
    },
    /// A response to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        body: Response,
    },
}

/// Limits every decoded message is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest encoded message.
    pub max_message_size: usize,
    /// Most peers in one `closer` or `providers` list.
    pub max_peers: usize,
    /// Most addresses per peer.
    pub max_addrs_per_peer: usize,
    /// Largest application key.
    pub max_key_len: usize,
    /// Largest record value.
    pub max_value_len: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        Self {
            max_message_size: 1024 * 1024,
            max_peers: 64,
            max_addrs_per_peer: 16,
            max_key_len: 512,
            max_value_len: 64 * 1024,
        }
    }
}

impl Message {
    /// The request id this message carries (a response repeats its request's).
    pub fn id(&self) -> u64 {
        match self {
            Message::Request { id, .. } | Message::Response { id, .. } => *id,
        }
    }

    /// Encodes with postcard.
    pub fn encode(&self) -> Bytes {
        postcard::to_allocvec(self)
            .map(Bytes::from)
            .unwrap_or_default()
    }

    /// Decodes and validates. Total: never panics.
    pub fn decode(bytes: &[u8], limits: &MessageLimits) -> Result<Self, WireError> {
        let msg: Message =
            crate::wire::decode_bounded(bytes, limits.max_message_size, "kademlia message")?;
        msg.validate(limits)?;
        Ok(msg)
    }

    fn validate(&self, l: &MessageLimits) -> Result<(), WireError> {
        let bad = |r| Err(WireError::malformed("kademlia message", r));
        let peers = |list: &[PeerRecord]| -> Result<(), WireError> {
            if list.len() > l.max_peers {
                return bad("too many peers");
            }
            if list.iter().any(|p| p.addrs.len() > l.max_addrs_per_peer) {
                return bad("too many addresses for one peer");
            }
            Ok(())
        };
        let key = |k: &Bytes| {
            if k.len() > l.max_key_len {
                bad("key too long")
            } else {
                Ok(())
            }
        };
        let record = |r: &Record| -> Result<(), WireError> {
            key(&r.key)?;
            if r.value.len() > l.max_value_len {
                return bad("record value too large");
            }
            Ok(())
        };
        match self {
            Message::Request { sender, body, .. } => {
                if let Some(s) = sender {
                    peers(std::slice::from_ref(s))?;
                }
                match body {
                    Request::Ping | Request::FindNode { .. } => Ok(()),
                    Request::GetValue { key: k } | Request::GetProviders { key: k } => key(k),
                    Request::PutValue { record: r } => record(r),
                    Request::AddProvider { key: k, provider } => {
                        key(k)?;
                        peers(std::slice::from_ref(provider))
                    }
                }
            }
            Message::Response { body, .. } => match body {
                Response::Pong | Response::Stored => Ok(()),
                Response::Error { reason } => {
                    if reason.len() > 1024 {
                        bad("error reason too long")
                    } else {
                        Ok(())
                    }
                }
                Response::Nodes { closer } => peers(closer),
                Response::Value { record: r, closer } => {
                    if let Some(r) = r {
                        record(r)?;
                    }
                    peers(closer)
                }
                Response::Providers { providers, closer } => {
                    peers(providers)?;
                    peers(closer)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: usize) -> PeerRecord {
        PeerRecord {
            peer: PeerId::random(),
            addrs: (0..n)
                .map(|i| {
                    format!("/ip6/2001:db8::{i}/udp/4001/quic-v1")
                        .parse()
                        .unwrap()
                })
                .collect(),
        }
    }

    #[test]
    fn a_full_k_closest_reply_with_addresses_fits() {
        let l = MessageLimits::default();
        let msg = Message::Response {
            id: 7,
            body: Response::Providers {
                providers: (0..20).map(|_| peer(8)).collect(),
                closer: (0..20).map(|_| peer(8)).collect(),
            },
        };
        let bytes = msg.encode();
        assert!(
            bytes.len() < l.max_message_size / 16,
            "{} bytes",
            bytes.len()
        );
        assert_eq!(Message::decode(&bytes, &l).unwrap(), msg);
    }

    #[test]
    fn limits_are_enforced() {
        let l = MessageLimits {
            max_peers: 2,
            ..MessageLimits::default()
        };
        let msg = Message::Response {
            id: 1,
            body: Response::Nodes {
                closer: vec![peer(1), peer(1), peer(1)],
            },
        };
        assert!(Message::decode(&msg.encode(), &l).is_err());
        assert!(Message::decode(&[0xff; 10], &l).is_err());
        assert!(Message::decode(&vec![0; 2 * 1024 * 1024], &MessageLimits::default()).is_err());
    }
}
