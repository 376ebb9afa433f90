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
