//! Entry points for fuzzing harnesses: one function per decoder or state machine, each taking
//! arbitrary bytes. They must never panic; `fuzz/` targets call them, and `cargo test` replays
//! the checked-in corpus through them.

use std::str::FromStr;

use crate::address::Multiaddr;
use crate::identity::PeerId;
use crate::transport::mux::{MuxHeader, Reassembler};
use crate::transport::noise::HandshakePayload;
use crate::wire::{Envelope, FrameCodec, Limits};

/// Length-prefixed frame decoding with a small limit.
pub fn frame_decode(data: &[u8]) {
    let codec = FrameCodec::new(64 * 1024);
    let _ = codec.decode_all(data);
    let mut buf = bytes::BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
}

/// Envelope decoding; a decoded envelope must re-encode to the same bytes.
pub fn envelope_decode(data: &[u8]) {
    if let Ok(env) = Envelope::decode(bytes::Bytes::copy_from_slice(data)) {
        let again = Envelope::decode(env.encode());
        assert_eq!(again.as_ref().ok(), Some(&env), "envelope round trip");
    }
}

/// Multiaddr parsing; a parsed address must print and re-parse to itself.
pub fn multiaddr_parse(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(a) = Multiaddr::from_str(s) {
            let printed = a.to_string();
            assert_eq!(
                Multiaddr::from_str(&printed).ok(),
                Some(a),
                "multiaddr round trip"
            );
        }
    }
}

/// PeerId parsing from text and from bytes.
pub fn peer_id_parse(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = PeerId::from_str(s) {
            assert_eq!(
                p.to_string().parse::<PeerId>().ok(),
                Some(p),
                "peer id round trip"
            );
        }
    }
    let _ = PeerId::from_bytes(data);
}

/// Noise handshake payload decoding and signature verification.
pub fn handshake_payload_decode(data: &[u8]) {
    if let Ok(p) = HandshakePayload::decode(data) {
        assert_eq!(HandshakePayload::decode(&p.encode()).ok(), Some(p.clone()));
        let _ = p.verify(&[0u8; 32]);
    }
}

/// The mux reassembler fed a sequence of frames. Input: frames separated as
/// `[u16 length][bytes]`, under small limits so that limit paths are reached.
pub fn mux_reassemble(data: &[u8]) {
    let limits = Limits {
        max_message_size: 4096,
        max_reassembly_bytes: 8192,
        max_partial_messages: 4,
        ..Limits::default()
    };
    let mut r = Reassembler::new(&limits);
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = (u16::from_be_bytes(*len) as usize).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        rest = tail;
        let _ = MuxHeader::decode(frame);
        match r.push(frame) {
            Ok(Some(m)) => assert!(m.len() <= limits.max_message_size),
            Ok(None) => {}
            Err(_) => break,
        }
        assert!(r.buffered_bytes() <= limits.max_reassembly_bytes);
        assert!(r.partial_messages() <= limits.max_partial_messages);
    }
}

/// Kademlia message decoding; a decoded message must re-encode and decode to itself.
pub fn kademlia_message_decode(data: &[u8]) {
    use crate::kademlia::{Message, MessageLimits};
    let limits = MessageLimits::default();
    if let Ok(m) = Message::decode(data, &limits) {
        assert_eq!(
            Message::decode(&m.encode(), &limits).ok(),
            Some(m),
            "kademlia round trip"
        );
    }
}

/// The Kademlia core driven by a byte-coded sequence of events: requests and responses from a
/// small pool of peers (with arbitrary ids, keys, records and peer lists), time jumps with
/// timeouts, delivery failures, and locally started queries. After every event the routing
/// table's invariants must hold (bucket sizes ≤ k, no self entry, entries in their buckets)
/// and `closest` must be ordered by distance.
pub fn kademlia_core(data: &[u8]) {
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use rand::SeedableRng;

    use crate::identity::Keypair;
    use crate::kademlia::{
        Action, Kademlia, KademliaConfig, Key, Message, PeerRecord, Record, Request, Response,
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let pool: Vec<PeerId> = (0..24u8)
        .map(|i| Keypair::from_secret_bytes([i; 32]).peer_id())
        .collect();
    let local = Keypair::from_secret_bytes([200; 32]).peer_id();
    let config = KademliaConfig {
        k: 4,
        alpha: 2,
        beta: 4,
        max_records: 8,
        max_provider_keys: 8,
        max_providers_per_key: 3,
        bucket_ip_limit: None,
        table_ip_limit: None,
        ..KademliaConfig::default()
    };
    let start = Instant::now();
    let mut now = start;
    let mut kad = Kademlia::new(local, config, now);
    kad.set_listen_addrs(vec![Multiaddr::memory(1)]);
    let mut sent: Vec<(PeerId, Message)> = Vec::new();

    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let rec = |i: u8| PeerRecord {
        peer: pool[i as usize % pool.len()],
        addrs: vec![Multiaddr::memory(i as u64 % 24 + 2)],
    };
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        let peer = rec(arg);
        let key = Bytes::from(vec![next().unwrap_or(0) % 4]);
        match op % 9 {
            0..=2 => {
                let body = match next().unwrap_or(0) % 6 {
                    0 => Request::Ping,
                    1 => Request::FindNode {
                        key: Key::from_record_key(&key),
                    },
                    2 => Request::GetValue { key: key.clone() },
                    3 => Request::PutValue {
                        record: Record {
                            key: key.clone(),
                            value: Bytes::from(vec![arg]),
                            publisher: None,
                            ttl_secs: arg as u32 * 60,
                        },
                    },
                    4 => Request::AddProvider {
                        key: key.clone(),
                        provider: if arg % 2 == 0 {
                            peer.clone()
                        } else {
                            rec(arg.wrapping_add(1))
                        },
                    },
                    _ => Request::GetProviders { key: key.clone() },
                };
                let sender = (op % 2 == 0).then(|| peer.clone());
                kad.handle_message(
                    now,
                    peer.peer,
                    Message::Request {
                        id: arg as u64,
                        sender,
                        body,
                    },
                );
            }
            3..=5 => {
                // A response to one of the requests we sent (or a bogus id), from its
                // recipient or from someone else.
                let pick = next().unwrap_or(0) as usize;
                let (to, id) = match sent.get(pick % sent.len().max(1)) {
                    Some((to, Message::Request { id, .. })) => (*to, *id),
                    _ => (peer.peer, pick as u64),
                };
                let from = if arg % 5 == 0 { peer.peer } else { to };
                let closer: Vec<PeerRecord> = (0..next().unwrap_or(0) % 8)
                    .map(|i| rec(arg.wrapping_add(i)))
                    .collect();
                let body = match op % 3 {
                    0 => Response::Nodes { closer },
                    1 => Response::Value {
                        record: (arg % 2 == 0).then(|| Record {
                            key: key.clone(),
                            value: Bytes::from_static(b"v"),
                            publisher: Some(peer.peer),
                            ttl_secs: 60,
                        }),
                        closer,
                    },
                    _ => match arg % 4 {
                        0 => Response::Pong,
                        1 => Response::Stored,
                        2 => Response::Providers {
                            providers: closer.clone(),
                            closer,
                        },
                        _ => Response::Error {
                            reason: "no".into(),
                        },
                    },
                };
                kad.handle_message(now, from, Message::Response { id, body });
            }
            6 => {
                now += Duration::from_millis(arg as u64 * 250);
                kad.handle_timeout(now, &mut rng);
            }
            7 => {
                let _ = match arg % 6 {
                    0 => kad.find_closest_peers(now, Key::from_record_key(&key)),
                    1 => kad.get_record(now, key, None),
                    2 => kad.put_record(
                        now,
                        Record {
                            key,
                            value: Bytes::from_static(b"x"),
                            publisher: None,
                            ttl_secs: 0,
                        },
                        None,
                    ),
                    3 => kad.start_providing(now, key),
                    4 => kad.get_providers(now, key),
                    _ => kad.bootstrap(now, &mut rng),
                };
            }
            _ => {
                kad.add_address(now, peer.peer, Multiaddr::memory(arg as u64 + 2));
                if let Some((to, m)) = sent.get(arg as usize % sent.len().max(1)).cloned() {
                    kad.on_send_failed(now, to, &m);
                }
            }
        }
        while let Some(a) = kad.poll_action() {
            if let Action::Send {
                peer,
                message: m @ Message::Request { .. },
                ..
            } = a
            {
                sent.push((peer, m));
                if sent.len() > 64 {
                    sent.remove(0);
                }
            }
        }
        let table = kad.routing_table();
        if let Err(e) = table.check_invariants() {
            panic!("routing table invariant broken: {e}");
        }
        let target = Key::from_record_key(&[op]);
        let closest = table.closest(&target, 8);
        assert!(
            closest
                .windows(2)
                .all(|w| target.distance(&w[0].key) <= target.distance(&w[1].key))
        );
        assert!(closest.iter().all(|e| e.peer != local));
    }
}

/// Gossip RPC decoding (subscriptions, messages and every control message) under the default
/// limits; a decoded RPC must re-encode and decode to itself, and checking its signatures
/// (messages, peer-exchange records, the sender's record) must not panic.
pub fn gossip_rpc_decode(data: &[u8]) {
    use crate::gossip::{Rpc, RpcLimits};
    let limits = RpcLimits::default();
    if let Ok(rpc) = Rpc::decode(data, &limits) {
        assert_eq!(
            Rpc::decode(&rpc.encode(), &limits).ok(),
            Some(rpc.clone()),
            "gossip rpc round trip"
        );
        for m in &rpc.publish {
            let _ = m.verify();
        }
        for p in &rpc.control.prune {
            for x in &p.peers {
                let _ = x.record.as_ref().map(|r| r.verify());
            }
        }
        let _ = rpc.record.as_ref().map(|r| r.verify());
    }
}

/// Reads the `gossip_router` input: one byte at a time, zeros once it is exhausted.
struct GossipInput<'a> {
    data: &'a [u8],
}

impl GossipInput<'_> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// `[length byte][bytes]`: lengths below 128 are exact, above in steps of 8 up to 1144
    /// (trailing bytes after an encoding are ignored by the decoder); cut to what is left.
    fn chunk(&mut self) -> &[u8] {
        let len = match self.byte() as usize {
            b @ 0..128 => b,
            b => 128 + (b - 128) * 8,
        };
        let (chunk, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        chunk
    }
}

/// Appends to a bounded pool, dropping the oldest entry when it is full.
fn pool_push<T>(pool: &mut Vec<T>, item: T) {
    if pool.len() >= 32 {
        pool.remove(0);
    }
    pool.push(item);
}

/// Seed of the `gossip_router` world's keys: `Keypair::generate_with` on a `StdRng` seeded
/// with it gives the local node's key, then the 8 remote peers' (seed corpora sign with them).
pub const GOSSIP_ROUTER_KEY_SEED: u64 = 0x6055_1950;

/// The fixed part of the `gossip_router` world, built once: keys (8 remote peers, then the
/// local node at index 8) and signed peer records for each (seq 1, 2 and 3, and one without
/// addresses), so that inputs do not pay for key generation and record signing every time.
struct GossipWorld {
    keys: Vec<crate::identity::Keypair>,
    records: Vec<[crate::gossip::SignedPeerRecord; 4]>,
}

/// Index of the local node in [`GossipWorld::keys`].
const GOSSIP_LOCAL: usize = 8;

fn gossip_world() -> &'static GossipWorld {
    use std::sync::OnceLock;

    use rand::SeedableRng;

    use crate::gossip::SignedPeerRecord;
    use crate::identity::Keypair;

    static WORLD: OnceLock<GossipWorld> = OnceLock::new();
    WORLD.get_or_init(|| {
        let mut rng = rand::rngs::StdRng::seed_from_u64(GOSSIP_ROUTER_KEY_SEED);
        let local = Keypair::generate_with(&mut rng);
        let mut keys: Vec<Keypair> = (0..8).map(|_| Keypair::generate_with(&mut rng)).collect();
        keys.push(local);
        let records = (0..keys.len() as u64)
            .map(|i| {
                let k = &keys[i as usize];
                let a = Multiaddr::memory(100 + i);
                let b = Multiaddr::memory(200 + i);
                [
                    SignedPeerRecord::new(k, vec![a.clone()], 1),
                    SignedPeerRecord::new(k, vec![a.clone(), b], 2),
                    SignedPeerRecord::new(k, vec![a], 3),
                    SignedPeerRecord::new(k, Vec::new(), 1),
                ]
            })
            .collect();
        GossipWorld { keys, records }
    })
}

/// Signs `m` (whose data is `fill` repeated) with the world's key `signer`, remembering the
/// signature: ed25519 signatures are deterministic, so a remembered one is the same bytes, and
/// fuzz inputs sign the same few messages over and over.
fn gossip_sign(m: &mut crate::gossip::GossipMessage, signer: usize, fill: u8) {
    use std::cell::RefCell;
    use std::collections::HashMap;

    type SigKey = (usize, Option<u64>, String, usize, u8);
    thread_local! {
        static SIGNATURES: RefCell<HashMap<SigKey, bytes::Bytes>> = RefCell::new(HashMap::new());
    }
    let key = &gossip_world().keys[signer];
    debug_assert!(m.data.iter().all(|b| *b == fill));
    let memo: SigKey = (
        signer,
        m.seqno,
        m.topic.as_str().to_owned(),
        m.data.len(),
        fill,
    );
    SIGNATURES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(sig) = cache.get(&memo) {
            m.from = Some(key.peer_id());
            m.signature = Some(sig.clone());
            return;
        }
        m.sign(key);
        if cache.len() >= 1 << 14 {
            cache.clear();
        }
        if let Some(sig) = &m.signature {
            cache.insert(memo, sig.clone());
        }
    });
}

/// The gossip router driven by a byte-coded sequence of events, in a small deterministic
/// world: the local router and 8 remote peers with fixed keys, 3 local topics (plus one only
/// remote peers use, and arbitrary ones).
///
/// The first byte picks the configuration (validation by the application on or off, scoring
/// on or off, flood publishing, strict / permissive / anonymous signatures, peer exchange,
/// staggered forwarding, choking); queues are small (8 KiB, 2 KiB for control) so their bounds are
/// reached. Then each event byte picks: connect or disconnect a peer (inbound or outbound,
/// with or without an IP), subscribe or unsubscribe a local topic, publish (small, around the
/// IDONTWANT threshold, larger than a queue or than `max_transmit_size`), an RPC from a peer
/// built from the next bytes (subscriptions; messages signed by that peer, by another,
/// forged, unsigned or replayed; IHAVE/IWANT/IDONTWANT with ids of real or made-up messages;
/// GRAFT, CHOKE, UNCHOKE; PRUNE with signed, forged or mismatched peer-exchange records; the sender's
/// record), a raw RPC decoded from the next bytes under the router's limits, a time jump
/// (`on_timeout` when due: staggered forwards and heartbeats), a validation verdict, the
/// application score of a peer, or draining send queues (popping an item and putting it
/// back with `unsend` too).
///
/// After every event: the router's peers are exactly the connected ones; meshes exist only
/// for subscribed topics, never contain the local peer, and hold only connected peers
/// subscribed to the topic; fanout peers are connected subscribers too; after a heartbeat a
/// mesh is at most `mesh_n_high` plus the peers the heartbeat may add after pruning (the
/// outbound quota and opportunistic grafting); every queue is within
/// `max_queue_bytes + max_control_queue_bytes`; every RPC the router emits decodes under its
/// own limits; events and dials make sense (no message from ourselves or on a topic we left,
/// no dial of ourselves or of a connected peer).
pub fn gossip_router(data: &[u8]) {
    use std::collections::BTreeSet;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use rand::SeedableRng;

    use crate::gossip::{
        Action, GossipEvent, GossipMessage, Gossipsub, GossipsubConfig, MessageId, MessageIdFn,
        Rpc, Topic, Validation, ValidationMode,
    };

    let world = gossip_world();
    let pool: Vec<PeerId> = world.keys[..GOSSIP_LOCAL]
        .iter()
        .map(|k| k.peer_id())
        .collect();
    let local = world.keys[GOSSIP_LOCAL].peer_id();

    let mut input = GossipInput { data };
    let flags = input.byte();
    let (validation_mode, message_id) = match (flags >> 3) & 3 {
        0 => (ValidationMode::Strict, MessageIdFn::PublisherSeqno),
        1 => (ValidationMode::Permissive, MessageIdFn::PublisherSeqno),
        2 => (ValidationMode::Anonymous, MessageIdFn::ContentHash),
        _ => (ValidationMode::Strict, MessageIdFn::ContentHash),
    };
    let config = GossipsubConfig {
        mesh_n: 3,
        mesh_n_low: 2,
        mesh_n_high: 4,
        mesh_n_score: 1,
        mesh_outbound_min: 1,
        gossip_lazy: 2,
        history_length: 4,
        history_gossip: 2,
        fanout_ttl: Duration::from_secs(10),
        seen_ttl: Duration::from_secs(30),
        prune_backoff: Duration::from_secs(5),
        unsubscribe_backoff: Duration::from_secs(2),
        graft_flood_threshold: Duration::from_secs(2),
        opportunistic_graft_ticks: 3,
        max_ihave_messages: 3,
        max_ihave_length: 8,
        iwant_followup_time: Duration::from_secs(1),
        prune_peers: 4,
        max_idontwant_ids: 16,
        max_transmit_size: 16 * 1024,
        max_topics_per_peer: 3,
        validation_timeout: Duration::from_secs(2),
        max_queue_bytes: 8 * 1024,
        max_control_queue_bytes: 2 * 1024,
        validate_messages: flags & 1 != 0,
        scoring: flags & 2 == 0,
        flood_publish: flags & 4 != 0,
        do_px: flags & 0x20 == 0,
        choke: flags & 0x80 != 0,
        choke_min_unchoked: 1,
        choke_duplicate_ratio: 0.5,
        choke_min_samples: 2,
        forward_eager: 1,
        forward_stagger: if flags & 0x40 != 0 {
            Duration::from_millis(10)
        } else {
            Duration::ZERO
        },
        validation_mode,
        message_id,
        ..GossipsubConfig::default()
    };
    let queue_bound = config.max_queue_bytes + config.max_control_queue_bytes;
    // After pruning to `mesh_n` (or keeping at most `mesh_n_high`), the heartbeat may graft
    // to reach the outbound quota and opportunistically graft better-scored peers.
    let mesh_bound =
        config.mesh_n_high + config.mesh_outbound_min + config.opportunistic_graft_peers;
    let threshold = config.idontwant_message_size_threshold;
    let max_transmit = config.max_transmit_size;
    let topics: Vec<Topic> = ["a", "b", "c", "remote-only"]
        .iter()
        .map(|t| config.topic(t))
        .collect();
    let topic = |b: u8| match b % 6 {
        5 => Topic::new(format!("t{}", b / 6 % 8)),
        i => topics[i as usize % 4].clone(),
    };

    let start = Instant::now();
    let mut now = start;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut router = Gossipsub::new(
        world.keys[GOSSIP_LOCAL].clone(),
        vec![Multiaddr::memory(1)],
        config,
        now,
    )
    .expect("fuzz configuration is valid");
    let limits = router.limits().clone();

    let mut connected = [false; 8];
    let mut messages: Vec<GossipMessage> = Vec::new();
    let mut ids: Vec<MessageId> = Vec::new();
    let mut pending: Vec<MessageId> = Vec::new();
    let mut seqno = 1000u64;

    // Checks one RPC the router emitted and harvests its messages and ids for later replay.
    let check_outbound = |bytes: &[u8],
                          message: Option<&MessageId>,
                          messages: &mut Vec<GossipMessage>,
                          ids: &mut Vec<MessageId>| {
        let rpc = match Rpc::decode(bytes, &limits) {
            Ok(rpc) => rpc,
            Err(e) => panic!("router emitted an RPC its own limits refuse: {e}"),
        };
        assert!(!rpc.is_empty(), "router emitted an empty RPC");
        if message.is_some() {
            assert_eq!(rpc.publish.len(), 1, "a message item carries one message");
        }
        for m in rpc.publish {
            pool_push(messages, m);
        }
        for h in rpc.control.ihave {
            for id in h.message_ids.into_iter().take(4) {
                pool_push(ids, id);
            }
        }
    };

    while !input.data.is_empty() {
        let op = input.byte();
        let arg = input.byte();
        let pi = arg as usize % pool.len();
        let peer = pool[pi];
        match op % 16 {
            0 | 1 => {
                // Connect; with the top bit, one argument in nine names ourselves instead,
                // which the router must ignore.
                let ip = match arg >> 4 & 3 {
                    0 => None,
                    1 => Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, pi as u8))),
                    2 => Some(IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1))),
                    _ => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                };
                let outbound = arg & 0x40 != 0;
                if arg & 0x80 != 0 && arg % 9 == 8 {
                    router.on_connected(now, local, outbound, ip);
                } else {
                    router.on_connected(now, peer, outbound, ip);
                    connected[pi] = true;
                }
            }
            2 => {
                router.on_disconnected(now, &peer);
                connected[pi] = false;
            }
            3 => {
                router.subscribe(now, topics[arg as usize % 3].clone(), &mut rng);
            }
            4 => {
                router.unsubscribe(now, &topics[arg as usize % 3]);
            }
            5 | 6 => {
                let fill = input.byte();
                let n = fill as usize;
                let len = match arg >> 4 & 7 {
                    0 => 0,
                    1 | 2 => n,
                    3 => threshold - 1,
                    4 => threshold + n % 4,
                    5 => 4000 + n,
                    6 => 9000,
                    _ => max_transmit + n,
                };
                let t = topics[arg as usize % 4].clone();
                if let Ok(id) = router.publish(now, t, Bytes::from(vec![fill; len]), &mut rng) {
                    pool_push(&mut ids, id);
                }
            }
            7..=10 => {
                let rpc = gossip_fuzz_rpc(
                    &mut input, pi, &topic, &mut seqno, &messages, &ids, threshold,
                );
                router.handle_rpc(now, peer, rpc);
            }
            11 => {
                let raw = input.chunk();
                if let Ok(rpc) = Rpc::decode(raw, &limits) {
                    router.handle_rpc(now, peer, rpc);
                }
            }
            12 => {
                let n = (arg & 63) as u64;
                now += match arg >> 6 {
                    0 => Duration::from_millis(n * 20),
                    1 => Duration::from_millis(500 + n * 100),
                    2 => Duration::from_secs(n * 5),
                    _ => Duration::from_secs(n * 60),
                };
            }
            13 => {
                let b = input.byte();
                let id = match (b % 3, pending.is_empty(), ids.is_empty()) {
                    (0, false, _) => pending[b as usize / 3 % pending.len()].clone(),
                    (1, _, false) => ids[b as usize / 3 % ids.len()].clone(),
                    _ => MessageId(Bytes::from(vec![b; 8])),
                };
                let verdict = match arg % 3 {
                    0 => Validation::Accept,
                    1 => Validation::Reject,
                    _ => Validation::Ignore,
                };
                router.report_validation(now, &id, verdict);
            }
            14 => {
                // Drain: at most `limit` items per peer (0: all); with the top bit, the first
                // item popped is put back (the connection had no room) and must restore the
                // queue exactly.
                for p in router.take_ready() {
                    assert!(router.knows(&p), "ready peer {p} is not connected");
                }
                let limit = (arg & 7) as usize;
                for p in &pool {
                    if arg & 0x80 != 0 {
                        let before = router.queued_bytes(p);
                        if let Some(item) = router.next_outbound(p) {
                            router.unsend(p, item);
                        }
                        assert_eq!(router.queued_bytes(p), before, "unsend restores the queue");
                    }
                    let mut n = 0;
                    while limit == 0 || n < limit {
                        let Some(out) = router.next_outbound(p) else {
                            break;
                        };
                        check_outbound(&out.bytes, out.message.as_ref(), &mut messages, &mut ids);
                        n += 1;
                    }
                }
            }
            _ => {
                let score = match input.byte() % 4 {
                    0 => -1000.0,
                    1 => -60.0,
                    2 => 0.0,
                    _ => 20.0,
                };
                router.set_application_score(&peer, score);
            }
        }

        // Staggered forwards and the heartbeat, when due.
        let heartbeat = now >= router.next_heartbeat();
        if now >= router.next_timeout() {
            router.on_timeout(now, &mut rng);
            assert!(router.next_timeout() > now, "on_timeout left work due");
        }

        // Events and dials.
        let subscribed: BTreeSet<Topic> = router.subscriptions().cloned().collect();
        while let Some(action) = router.poll_action() {
            match action {
                Action::Dial { peer, addrs } => {
                    assert!(peer != local, "dial of ourselves");
                    assert!(!router.knows(&peer), "dial of a connected peer");
                    assert!(!addrs.is_empty(), "dial without addresses");
                }
                Action::Event(GossipEvent::Message {
                    id,
                    message,
                    needs_validation,
                    ..
                }) => {
                    assert!(
                        subscribed.contains(&message.topic),
                        "message delivered on a topic we do not subscribe to"
                    );
                    assert!(message.from != Some(local), "our own message delivered");
                    if validation_mode == ValidationMode::Strict {
                        assert!(
                            message.verify(),
                            "unsigned message delivered in strict mode"
                        );
                    }
                    if needs_validation {
                        pool_push(&mut pending, id.clone());
                    }
                    pool_push(&mut ids, id);
                }
                Action::Event(
                    GossipEvent::Graft { peer, .. }
                    | GossipEvent::Subscribed { peer, .. }
                    | GossipEvent::Duplicate { peer, .. },
                ) => assert!(peer != local, "event about ourselves"),
                Action::Event(GossipEvent::Rejected { id, .. }) => pool_push(&mut ids, id),
                Action::Event(_) => {}
            }
        }

        // Peers, meshes, fanout, queues.
        let known: BTreeSet<PeerId> = router.peers().collect();
        let expected: BTreeSet<PeerId> = pool
            .iter()
            .zip(connected)
            .filter(|(_, c)| *c)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(
            known, expected,
            "router peers differ from the connected ones"
        );
        for t in router.mesh_topics() {
            assert!(subscribed.contains(t), "mesh for {t}, a topic we left");
        }
        for t in &topics {
            let snap = router.mesh_snapshot(t);
            for p in &snap.mesh {
                assert!(*p != local, "local peer in the mesh of {t}");
                assert!(router.knows(p), "mesh peer {p} of {t} not connected");
                assert!(
                    snap.subscribers.contains(p),
                    "mesh peer {p} of {t} not subscribed to it"
                );
            }
            if !subscribed.contains(t) {
                assert!(snap.mesh.is_empty(), "mesh peers for {t}, a topic we left");
            }
            for p in &snap.fanout {
                assert!(
                    snap.subscribers.contains(p),
                    "fanout peer {p} of {t} not a connected subscriber"
                );
            }
            if heartbeat {
                assert!(
                    snap.mesh.len() <= mesh_bound,
                    "mesh of {t} has {} peers after a heartbeat",
                    snap.mesh.len()
                );
            }
        }
        for (p, c) in pool.iter().zip(connected) {
            let q = router.queued_bytes(p);
            assert!(q <= queue_bound, "queue of {p} holds {q} bytes");
            if !c {
                assert_eq!(q, 0, "queue of disconnected {p}");
            }
        }
    }

    // Everything still queued must be valid on the wire too.
    for p in &pool {
        while let Some(out) = router.next_outbound(p) {
            check_outbound(&out.bytes, out.message.as_ref(), &mut messages, &mut ids);
        }
    }
}

/// An RPC from remote peer `sender` built from the next input bytes: a byte of flags says
/// which parts it carries, and each part reads its own bytes.
fn gossip_fuzz_rpc(
    input: &mut GossipInput<'_>,
    sender: usize,
    topic: &dyn Fn(u8) -> crate::gossip::Topic,
    seqno: &mut u64,
    messages: &[crate::gossip::GossipMessage],
    ids: &[crate::gossip::MessageId],
    threshold: usize,
) -> crate::gossip::Rpc {
    use bytes::Bytes;

    use crate::gossip::{
        Choke, Control, GossipMessage, Graft, IDontWant, IHave, IWant, MessageId, PeerExchange,
        Prune, Rpc, SubOpts,
    };

    let world = gossip_world();
    let other = (sender + 1) % GOSSIP_LOCAL;
    let forged = |peer: PeerId| {
        // Another peer's valid record, relabelled: the signature no longer matches.
        let mut r = world.records[other][0].clone();
        r.peer = peer;
        r
    };
    let id = |input: &mut GossipInput<'_>| {
        let b = input.byte();
        if b & 0x80 == 0 && !ids.is_empty() {
            ids[b as usize % ids.len()].clone()
        } else {
            MessageId(Bytes::from(vec![b; (b % 50) as usize]))
        }
    };
    let id_list = |input: &mut GossipInput<'_>| -> Vec<MessageId> {
        let n = input.byte() % 6;
        (0..n).map(|_| id(input)).collect()
    };
    let parts = input.byte();
    let mut rpc = Rpc::default();
    if parts & 1 != 0 {
        for _ in 0..input.byte() % 5 {
            let b = input.byte();
            rpc.subscriptions.push(SubOpts {
                subscribe: b & 1 == 0,
                topic: topic(b >> 1),
            });
        }
    }
    if parts & 2 != 0 {
        for _ in 0..input.byte() % 4 + 1 {
            let kind = input.byte();
            let b = input.byte();
            let len = match kind >> 3 & 3 {
                0 => b as usize % 16,
                1 => b as usize,
                2 => threshold - 1 + b as usize % 3,
                _ => threshold + 1000,
            };
            let seq = if b & 0x80 != 0 {
                *seqno += 1;
                *seqno
            } else {
                (b & 7) as u64
            };
            let mut m = GossipMessage {
                from: None,
                seqno: Some(seq),
                topic: topic(kind >> 5),
                data: Bytes::from(vec![b; len]),
                signature: None,
            };
            match kind % 8 {
                0 | 1 => gossip_sign(&mut m, sender, b),
                2 => gossip_sign(&mut m, other, b),
                3 => {
                    // Signed, then tampered with.
                    gossip_sign(&mut m, sender, b);
                    m.data = Bytes::from(vec![b.wrapping_add(1); len]);
                }
                4 => {
                    // Claims another publisher, signed with the sender's key.
                    gossip_sign(&mut m, sender, b);
                    m.from = Some(world.keys[other].peer_id());
                }
                5 => {
                    m.seqno = None;
                }
                6 => {
                    if let Some(old) = messages.get(b as usize % messages.len().max(1)) {
                        m = old.clone();
                    } else {
                        gossip_sign(&mut m, GOSSIP_LOCAL, b);
                    }
                }
                _ => {
                    m.from = Some(world.keys[sender].peer_id());
                    m.signature = Some(Bytes::from(vec![b; b as usize % 80]));
                }
            }
            rpc.publish.push(m);
        }
    }
    let mut control = Control::default();
    if parts & 4 != 0 {
        for _ in 0..input.byte() % 3 + 1 {
            let t = topic(input.byte());
            control.ihave.push(IHave {
                topic: t,
                message_ids: id_list(input),
            });
        }
    }
    if parts & 8 != 0 {
        control.iwant.push(IWant {
            message_ids: id_list(input),
        });
    }
    if parts & 16 != 0 {
        // GRAFTs, then a byte counting CHOKEs (low 2 bits) and UNCHOKEs (next 2) to follow.
        for _ in 0..input.byte() % 4 {
            control.graft.push(Graft {
                topic: topic(input.byte()),
            });
        }
        let c = input.byte();
        for _ in 0..c & 3 {
            control.choke.push(Choke {
                topic: topic(input.byte()),
            });
        }
        for _ in 0..c >> 2 & 3 {
            control.unchoke.push(Choke {
                topic: topic(input.byte()),
            });
        }
    }
    if parts & 32 != 0 {
        for _ in 0..input.byte() % 2 + 1 {
            let t = topic(input.byte());
            let b = input.byte();
            let backoff_secs = match b % 4 {
                0 => None,
                1 => Some(0),
                2 => Some(b as u64),
                _ => Some(u64::MAX),
            };
            let mut peers = Vec::new();
            for _ in 0..input.byte() % 4 {
                let b = input.byte();
                let k = if b % 11 == 10 {
                    GOSSIP_LOCAL
                } else {
                    b as usize % GOSSIP_LOCAL
                };
                let peer = world.keys[k].peer_id();
                let record = match b >> 4 & 3 {
                    0 => None,
                    1 => Some(world.records[k][b as usize % 3].clone()),
                    2 => Some(forged(peer)),
                    // A valid record, but another peer's (with the top bit: no addresses).
                    _ => Some(world.records[other][if b & 0x40 != 0 { 3 } else { 1 }].clone()),
                };
                peers.push(PeerExchange { peer, record });
            }
            control.prune.push(Prune {
                topic: t,
                peers,
                backoff_secs,
            });
        }
    }
    if parts & 64 != 0 {
        control.idontwant.push(IDontWant {
            message_ids: id_list(input),
        });
    }
    rpc.control = control;
    if parts & 128 != 0 {
        // Seq 1, 2 or 3, without addresses, or forged.
        rpc.record = Some(match input.byte() % 5 {
            b @ 0..4 => world.records[sender][b as usize].clone(),
            _ => forged(world.keys[sender].peer_id()),
        });
    }
    rpc
}

/// The RPC frame decoder: anything that decodes re-encodes to a frame that decodes equal.
pub fn rpc_frame_decode(data: &[u8]) {
    use crate::rpc::Frame;
    const MAX: usize = 1 << 20;
    let copied = Frame::decode(data, MAX);
    let shared = Frame::decode_bytes(&bytes::Bytes::copy_from_slice(data), MAX);
    assert_eq!(
        copied.as_ref().ok(),
        shared.as_ref().ok(),
        "both decoders agree"
    );
    if let Ok(frame) = copied {
        let encoded = frame.encode();
        assert_eq!(
            frame.encode_parts().to_vec(),
            encoded.to_vec(),
            "parts match"
        );
        assert_eq!(
            Frame::decode(&encoded, MAX).ok(),
            Some(frame),
            "rpc frame round trip"
        );
    }
}

/// The RPC core driven by a byte-coded sequence of events: our requests, cancels, failed
/// sends, arbitrary and well-formed frames from a small pool of peers, handler answers, time
/// jumps and disconnects. After every event: each request completes at most once, the core's
/// counts of outstanding and inbound requests match what its actions said, and the limits
/// hold.
pub fn rpc_core(data: &[u8]) {
    use std::collections::HashSet;
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use crate::identity::Keypair;
    use crate::rpc::{
        Action, ErrorFrame, ErrorKind, Frame, ProtocolLimits, ProtocolName, RateLimit, RpcConfig,
        RpcCore, RpcError,
    };

    // Derived once: key derivation would otherwise dominate each execution.
    static POOL: std::sync::OnceLock<Vec<PeerId>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        (1..=5u8)
            .map(|i| Keypair::from_secret_bytes([i; 32]).peer_id())
            .collect()
    });
    let config = RpcConfig {
        max_outbound_per_peer: 3,
        max_outbound_total: 8,
        max_inbound_per_peer: 2,
        max_inbound_total: 4,
        rate_limit: RateLimit {
            per_second: 5.0,
            burst: 3.0,
        },
        request_timeout: Duration::from_secs(1),
        handler_timeout: Duration::from_secs(2),
        ..RpcConfig::default()
    };
    let served = ProtocolName::new("/fuzz/a", 1);
    let other = ProtocolName::new("/fuzz/b", 1);
    let mut core = RpcCore::new(config.clone());
    core.register(
        served.clone(),
        ProtocolLimits {
            max_request: 64,
            max_response: 64,
        },
    );
    let mut now = Instant::now();
    let mut next_id = 0u64;
    let mut live: Vec<u64> = Vec::new();
    let mut inbound: HashSet<(PeerId, u64)> = HashSet::new();
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    while let Some(op) = next() {
        let arg = usize::from(next().unwrap_or(0));
        let peer = pool[arg % pool.len()];
        let protocol = if arg & 0x80 == 0 {
            served.clone()
        } else {
            other.clone()
        };
        match op % 9 {
            0 => {
                next_id += 1;
                let len = usize::from(next().unwrap_or(0));
                let timeout = (arg & 0x40 != 0).then(|| Duration::from_millis(300));
                let payload = Bytes::from(vec![0u8; len]);
                if core
                    .request(now, next_id, peer, protocol, payload, timeout, None)
                    .is_ok()
                {
                    live.push(next_id);
                }
            }
            1 => {
                if !live.is_empty() {
                    let id = live.remove(arg % live.len());
                    core.cancel(id);
                }
            }
            2 => {
                if let Some(&id) = live.get(arg % live.len().max(1)) {
                    core.send_failed(id, RpcError::ConnectionClosed { peer });
                }
            }
            3 => {
                let len = usize::from(next().unwrap_or(0)) % 48;
                let raw: Vec<u8> = (0..len).map(|_| next().unwrap_or(0)).collect();
                let _ = core.handle(now, peer, &raw);
            }
            4 => {
                let id = u64::from(next().unwrap_or(0) % 8);
                let len = usize::from(next().unwrap_or(0));
                let frame = Frame::Request {
                    id,
                    protocol,
                    payload: Bytes::from(vec![1u8; len]),
                };
                assert!(core.handle(now, peer, &frame.encode()));
            }
            5 => {
                // A response to one of our ids (or a stray one), from its peer or another.
                let id = live
                    .get(arg % live.len().max(1))
                    .copied()
                    .unwrap_or(u64::from(next().unwrap_or(0)));
                let len = usize::from(next().unwrap_or(0));
                let result = if arg & 0x20 == 0 {
                    Ok(Bytes::from(vec![2u8; len]))
                } else {
                    Err(ErrorFrame {
                        kind: ErrorKind::Busy,
                        message: "busy".into(),
                    })
                };
                assert!(core.handle(now, peer, &Frame::Response { id, result }.encode()));
            }
            6 => {
                let mut list: Vec<(PeerId, u64)> = inbound.iter().copied().collect();
                list.sort();
                if let Some(&(p, id)) = list.get(arg % list.len().max(1)) {
                    let len = usize::from(next().unwrap_or(0));
                    let result = if arg & 0x10 == 0 {
                        Ok(Bytes::from(vec![3u8; len]))
                    } else {
                        Err("failed".into())
                    };
                    core.respond(p, id, &served, result);
                    inbound.remove(&(p, id));
                }
            }
            7 => {
                now += Duration::from_millis(50 * (arg as u64 % 64));
                core.handle_timeout(now);
            }
            _ => core.on_disconnected(&peer),
        }
        while let Some(action) = core.poll_action() {
            match action {
                Action::Complete { id, .. } => {
                    let at = live.iter().position(|x| *x == id);
                    assert!(
                        at.is_some(),
                        "request {id} completed twice or never started"
                    );
                    if let Some(at) = at {
                        live.remove(at);
                    }
                }
                Action::Inbound { peer, id, .. } => {
                    assert!(inbound.insert((peer, id)), "inbound {id} admitted twice");
                }
                Action::AbortInbound { peer, id } => {
                    inbound.remove(&(peer, id));
                }
                Action::Send { frame, .. } => {
                    let whole = frame.to_vec();
                    let decoded = Frame::decode(&whole, core.max_frame());
                    assert!(decoded.is_ok());
                    assert_eq!(
                        decoded.ok(),
                        Frame::decode_bytes(&Bytes::from(whole), core.max_frame()).ok()
                    );
                }
            }
        }
        assert_eq!(core.outstanding(), live.len());
        assert_eq!(core.inbound_in_progress(), inbound.len());
        assert!(live.len() <= config.max_outbound_total);
        assert!(inbound.len() <= config.max_inbound_total);
        // Deadlines are set in the future and time moves only with `handle_timeout`.
        if let Some(t) = core.next_timeout() {
            assert!(t > now, "a deadline at or before now survived");
        }
    }
}

/// The content-transfer messages: the first byte picks a request (`Info`/`Range`) or an
/// `Info` answer (a manifest); whatever decodes within the protocol's limits re-encodes to
/// itself, and a decoded manifest's chunk arithmetic cannot overflow or panic.
pub fn content_message_decode(data: &[u8]) {
    use crate::rpc::content::{ContentRequest, InfoResponse, MAX_REQUEST, MAX_RESPONSE, Manifest};
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if which & 1 == 0 {
        if let Ok(r) = crate::wire::decode_bounded::<ContentRequest>(body, MAX_REQUEST, "c") {
            let again = postcard::to_stdvec(&r).unwrap_or_default();
            assert_eq!(
                crate::wire::decode_bounded::<ContentRequest>(&again, MAX_REQUEST, "c").ok(),
                Some(r),
                "content request round trip"
            );
        }
    } else if let Ok(info) = crate::wire::decode_bounded::<InfoResponse>(body, MAX_RESPONSE, "c") {
        let again = postcard::to_stdvec(&info).unwrap_or_default();
        assert_eq!(
            crate::wire::decode_bounded::<InfoResponse>(&again, MAX_RESPONSE, "c").ok(),
            Some(info.clone()),
            "content info round trip"
        );
        if let InfoResponse::Found(m) = info {
            let _ = Manifest::chunk_count(m.size, m.chunk_size);
            assert!(m.chunk_hashes.len() <= MAX_RESPONSE / 32);
        }
    }
}
