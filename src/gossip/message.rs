//! Gossip wire messages and their codec: one [`Rpc`] carries subscription changes, published
//! messages and control messages (GRAFT, PRUNE with peer exchange, IHAVE, IWANT, IDONTWANT).
//!
//! Postcard-encoded; enums and structs only ever gain fields at the end. [`Rpc::decode`] is
//! total: it checks the size first, then every list length against [`RpcLimits`].
//! Message and peer-record signatures cover a domain-separated, length-prefixed encoding so
//! that a signature made for one purpose is never valid for another.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::address::Multiaddr;
use crate::identity::{Keypair, PeerId};
use crate::wire::WireError;

/// A topic name, as given by the application (the router adds no prefix to the wire form;
/// see [`super::GossipsubConfig::topic`] for the configured prefix).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Topic(String);

impl Topic {
    /// A topic with exactly this name.
    pub fn new(name: impl Into<String>) -> Self {
        Topic(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Identifies a message for de-duplication, IHAVE/IWANT and IDONTWANT.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub Bytes);

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageId(")?;
        for b in self.0.iter().take(12) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > 12 {
            f.write_str("…")?;
        }
        f.write_str(")")
    }
}

/// A published message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipMessage {
    /// The publisher (absent in anonymous mode).
    pub from: Option<PeerId>,
    /// The publisher's sequence number (absent in anonymous mode).
    pub seqno: Option<u64>,
    /// Where it was published.
    pub topic: Topic,
    /// Application payload.
    pub data: Bytes,
    /// Ed25519 signature of the publisher over [`GossipMessage::signing_bytes`].
    pub signature: Option<Bytes>,
}

const MESSAGE_DOMAIN: &[u8] = b"ggen-p2p gossip message v1\0";
const RECORD_DOMAIN: &[u8] = b"ggen-p2p signed peer record v1\0";

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

impl GossipMessage {
    /// The bytes the publisher signs: domain, publisher, sequence number, topic, data.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MESSAGE_DOMAIN.len() + 80 + self.data.len());
        out.extend_from_slice(MESSAGE_DOMAIN);
        match &self.from {
            Some(p) => put_field(&mut out, &p.to_bytes()),
            None => put_field(&mut out, &[]),
        }
        out.extend_from_slice(&self.seqno.unwrap_or(0).to_be_bytes());
        put_field(&mut out, self.topic.as_str().as_bytes());
        put_field(&mut out, &self.data);
        out
    }

    /// Sets `from` to the key's identity and signs.
    pub fn sign(&mut self, key: &Keypair) {
        self.from = Some(key.peer_id());
        self.signature = Some(Bytes::copy_from_slice(&key.sign(&self.signing_bytes())));
    }

    /// True if it carries a valid signature by `from`.
    pub fn verify(&self) -> bool {
        let Some(Ok(key)) = self.from.map(|f| f.public_key()) else {
            return false;
        };
        self.verify_with(&key)
    }

    /// Like [`GossipMessage::verify`] with `from`'s key already decoded (the caller must
    /// have derived `key` from `from`; decoding a key costs about as much as a quarter of
    /// the check, so routers cache them).
    pub fn verify_with(&self, key: &crate::identity::PublicKey) -> bool {
        let Some(sig) = &self.signature else {
            return false;
        };
        key.verify(&self.signing_bytes(), sig)
    }

    /// Bytes this message takes on the wire, roughly (for size thresholds and accounting).
    pub fn wire_len(&self) -> usize {
        self.data.len() + self.topic.as_str().len() + 120
    }
}

/// A peer's own statement of where it can be reached, signed by it: peer exchange hands these
/// on, and the receiver checks the signature before dialing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPeerRecord {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses (without `/p2p`).
    pub addrs: Vec<Multiaddr>,
    /// Increases with every new record from the same peer; the highest wins.
    pub seq: u64,
    /// Ed25519 signature by `peer` over the fields above.
    pub signature: Bytes,
}

impl SignedPeerRecord {
    fn signing_bytes(peer: &PeerId, addrs: &[Multiaddr], seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_DOMAIN.len() + 64 + 40 * addrs.len());
        out.extend_from_slice(RECORD_DOMAIN);
        put_field(&mut out, &peer.to_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&(addrs.len() as u64).to_be_bytes());
        for a in addrs {
            put_field(&mut out, a.to_string().as_bytes());
        }
        out
    }

    /// Our record, signed.
    pub fn new(key: &Keypair, addrs: Vec<Multiaddr>, seq: u64) -> Self {
        let peer = key.peer_id();
        let signature = Bytes::copy_from_slice(&key.sign(&Self::signing_bytes(&peer, &addrs, seq)));
        Self {
            peer,
            addrs,
            seq,
            signature,
        }
    }

    /// True if `peer` signed exactly these fields.
    pub fn verify(&self) -> bool {
        let Ok(key) = self.peer.public_key() else {
            return false;
        };
        key.verify(
            &Self::signing_bytes(&self.peer, &self.addrs, self.seq),
            &self.signature,
        )
    }
}

/// A subscription change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubOpts {
    /// True to subscribe, false to unsubscribe.
    pub subscribe: bool,
    /// Which topic.
    pub topic: Topic,
}

/// "I have these messages" (lazy gossip).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IHave {
    /// Their topic.
    pub topic: Topic,
    /// The ids.
    pub message_ids: Vec<MessageId>,
}

/// "Send me these messages".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IWant {
    /// The ids.
    pub message_ids: Vec<MessageId>,
}

/// "Add me to your mesh for this topic".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graft {
    /// The topic.
    pub topic: Topic,
}

/// "You are out of my mesh for this topic", with other peers to try and a backoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prune {
    /// The topic.
    pub topic: Topic,
    /// Peer exchange: other peers in the topic, with their signed records when known.
    pub peers: Vec<PeerExchange>,
    /// Do not GRAFT again for this long.
    pub backoff_secs: Option<u64>,
}

/// One peer offered by peer exchange.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerExchange {
    /// The peer.
    pub peer: PeerId,
    /// Where it says it can be reached (only trusted if the signature checks).
    pub record: Option<SignedPeerRecord>,
}

/// "I already have these; do not send them to me" (gossipsub v1.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IDontWant {
    /// The ids.
    pub message_ids: Vec<MessageId>,
}

/// Control messages piggybacked on an RPC.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// IHAVE gossip.
    pub ihave: Vec<IHave>,
    /// IWANT requests.
    pub iwant: Vec<IWant>,
    /// GRAFTs.
    pub graft: Vec<Graft>,
    /// PRUNEs.
    pub prune: Vec<Prune>,
    /// IDONTWANTs.
    pub idontwant: Vec<IDontWant>,
    /// "Stop pushing this topic's messages to me; IHAVE is enough" (choking, an extension:
    /// a mesh peer whose copies nearly always arrive as duplicates is choked).
    pub choke: Vec<Choke>,
    /// "Push to me again."
    pub unchoke: Vec<Choke>,
}

/// A topic named in a CHOKE or UNCHOKE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choke {
    /// The topic.
    pub topic: Topic,
}

impl Control {
    /// True if it carries nothing.
    pub fn is_empty(&self) -> bool {
        self.ihave.is_empty()
            && self.iwant.is_empty()
            && self.graft.is_empty()
            && self.prune.is_empty()
            && self.idontwant.is_empty()
            && self.choke.is_empty()
            && self.unchoke.is_empty()
    }
}

/// One gossip RPC: what travels in one node message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rpc {
    /// Subscription changes of the sender.
    pub subscriptions: Vec<SubOpts>,
    /// Published (or forwarded) messages.
    pub publish: Vec<GossipMessage>,
    /// Control messages.
    pub control: Control,
    /// The sender's own signed record, sent with its first RPC on a connection.
    pub record: Option<SignedPeerRecord>,
}

/// Caps applied when decoding an [`Rpc`] from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcLimits {
    /// Largest RPC in bytes (gossipsub's `max_transmit_size`).
    pub max_transmit_size: usize,
    /// Subscription changes per RPC.
    pub max_subscriptions: usize,
    /// Messages per RPC.
    pub max_messages: usize,
    /// Message ids across all IHAVEs (or all IWANTs, or all IDONTWANTs) of one RPC.
    pub max_ids: usize,
    /// GRAFT or PRUNE entries per RPC.
    pub max_graft_prune: usize,
    /// Peers in one PRUNE's peer exchange.
    pub max_px: usize,
    /// Addresses in one signed record.
    pub max_addrs: usize,
    /// Topic name length in bytes.
    pub max_topic_len: usize,
    /// Message id length in bytes.
    pub max_id_len: usize,
}

impl Default for RpcLimits {
    fn default() -> Self {
        Self {
            max_transmit_size: 1024 * 1024,
            max_subscriptions: 256,
            max_messages: 256,
            max_ids: 5000,
            max_graft_prune: 256,
            max_px: 32,
            max_addrs: 8,
            max_topic_len: 256,
            max_id_len: 128,
        }
    }
}

impl Rpc {
    /// Encodes for the wire.
    pub fn encode(&self) -> Bytes {
        // Only types with infallible serialization are involved; an error would be a bug.
        Bytes::from(postcard::to_allocvec(self).unwrap_or_default())
    }

    /// True if it carries nothing at all.
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
            && self.publish.is_empty()
            && self.control.is_empty()
            && self.record.is_none()
    }

    /// Decodes bytes from a peer: size first, then the encoding, then every list against
    /// `limits`. Never panics.
    pub fn decode(bytes: &[u8], limits: &RpcLimits) -> Result<Self, WireError> {
        let rpc: Rpc = crate::wire::decode_bounded(bytes, limits.max_transmit_size, "gossip rpc")?;
        rpc.validate(limits)?;
        Ok(rpc)
    }

    fn validate(&self, l: &RpcLimits) -> Result<(), WireError> {
        let bad = |r| Err(WireError::malformed("gossip rpc", r));
        let topic_ok = |t: &Topic| t.as_str().len() <= l.max_topic_len;
        let ids_ok = |ids: &mut dyn Iterator<Item = &MessageId>| {
            let mut n = 0usize;
            for id in ids {
                n += 1;
                if n > l.max_ids || id.0.len() > l.max_id_len {
                    return false;
                }
            }
            true
        };
        let record_ok = |r: &SignedPeerRecord| r.addrs.len() <= l.max_addrs;
        if self.subscriptions.len() > l.max_subscriptions {
            return bad("too many subscriptions");
        }
        if !self.subscriptions.iter().all(|s| topic_ok(&s.topic)) {
            return bad("topic name too long");
        }
        if self.publish.len() > l.max_messages {
            return bad("too many messages");
        }
        if !self.publish.iter().all(|m| topic_ok(&m.topic)) {
            return bad("topic name too long");
        }
        let c = &self.control;
        if !c.ihave.iter().all(|h| topic_ok(&h.topic))
            || !c.graft.iter().all(|g| topic_ok(&g.topic))
            || !c.prune.iter().all(|p| topic_ok(&p.topic))
        {
            return bad("topic name too long");
        }
        if !ids_ok(&mut c.ihave.iter().flat_map(|h| h.message_ids.iter()))
            || !ids_ok(&mut c.iwant.iter().flat_map(|w| w.message_ids.iter()))
            || !ids_ok(&mut c.idontwant.iter().flat_map(|w| w.message_ids.iter()))
        {
            return bad("too many or too long message ids");
        }
        if c.ihave.len() > l.max_ids || c.iwant.len() > l.max_ids || c.idontwant.len() > l.max_ids {
            return bad("too many id lists");
        }
        if c.graft.len() > l.max_graft_prune
            || c.prune.len() > l.max_graft_prune
            || c.choke.len() > l.max_graft_prune
            || c.unchoke.len() > l.max_graft_prune
        {
            return bad("too many graft, prune or choke entries");
        }
        if !c.choke.iter().chain(&c.unchoke).all(|x| topic_ok(&x.topic)) {
            return bad("topic name too long");
        }
        for p in &c.prune {
            if p.peers.len() > l.max_px {
                return bad("too many peers in peer exchange");
            }
            if !p
                .peers
                .iter()
                .all(|x| x.record.as_ref().is_none_or(record_ok))
            {
                return bad("too many addresses in a peer record");
            }
        }
        if !self.record.as_ref().is_none_or(record_ok) {
            return bad("too many addresses in a peer record");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair) -> Rpc {
        let mut m = GossipMessage {
            from: None,
            seqno: Some(7),
            topic: Topic::new("ggen-marketplace/updates"),
            data: Bytes::from_static(b"hello"),
            signature: None,
        };
        m.sign(key);
        Rpc {
            subscriptions: vec![SubOpts {
                subscribe: true,
                topic: Topic::new("t"),
            }],
            publish: vec![m],
            control: Control {
                ihave: vec![IHave {
                    topic: Topic::new("t"),
                    message_ids: vec![MessageId(Bytes::from_static(b"id1"))],
                }],
                iwant: vec![IWant {
                    message_ids: vec![MessageId(Bytes::from_static(b"id2"))],
                }],
                graft: vec![Graft {
                    topic: Topic::new("t"),
                }],
                prune: vec![Prune {
                    topic: Topic::new("t"),
                    peers: vec![PeerExchange {
                        peer: key.peer_id(),
                        record: Some(SignedPeerRecord::new(
                            key,
                            vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
                            1,
                        )),
                    }],
                    backoff_secs: Some(60),
                }],
                idontwant: vec![IDontWant {
                    message_ids: vec![MessageId(Bytes::from_static(b"id3"))],
                }],
                choke: vec![Choke {
                    topic: Topic::new("t"),
                }],
                unchoke: vec![],
            },
            record: Some(SignedPeerRecord::new(key, vec![], 3)),
        }
    }

    #[test]
    fn round_trips_and_signatures_check() {
        let key = Keypair::generate();
        let rpc = sample(&key);
        let back = Rpc::decode(&rpc.encode(), &RpcLimits::default()).unwrap();
        assert_eq!(back, rpc);
        assert!(back.publish[0].verify());
        assert!(
            back.control.prune[0].peers[0]
                .record
                .as_ref()
                .unwrap()
                .verify()
        );
        assert!(back.record.as_ref().unwrap().verify());
    }

    #[test]
    fn tampering_breaks_signatures() {
        let key = Keypair::generate();
        let rpc = sample(&key);
        let mut m = rpc.publish[0].clone();
        m.data = Bytes::from_static(b"HELLO");
        assert!(!m.verify());
        let mut m = rpc.publish[0].clone();
        m.topic = Topic::new("other");
        assert!(!m.verify());
        let mut m = rpc.publish[0].clone();
        m.from = Some(Keypair::generate().peer_id());
        assert!(!m.verify());
        let mut r = rpc.record.clone().unwrap();
        r.seq += 1;
        assert!(!r.verify());
    }

    #[test]
    fn limits_are_enforced() {
        let key = Keypair::generate();
        let mut rpc = sample(&key);
        let tight = RpcLimits {
            max_ids: 2,
            ..RpcLimits::default()
        };
        rpc.control.iwant[0]
            .message_ids
            .extend((0..3).map(|i| MessageId(Bytes::from(vec![i]))));
        assert!(Rpc::decode(&rpc.encode(), &tight).is_err());
        let small = RpcLimits {
            max_transmit_size: 10,
            ..RpcLimits::default()
        };
        assert!(matches!(
            Rpc::decode(&sample(&key).encode(), &small),
            Err(WireError::FrameTooLarge { .. })
        ));
        for cut in 0..sample(&key).encode().len() {
            let bytes = sample(&key).encode();
            let _ = Rpc::decode(&bytes[..cut], &RpcLimits::default());
        }
    }
}
