//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/`) through the matching
//! `ggen_p2p::fuzzing` entry point, so that every input a fuzzer once found interesting stays
//! a regression test under plain `cargo test`.
//!
//! The seeds of that corpus are built here from the library's own encoders ([`seeds`]).
//! `seeds_are_valid_encodings` checks that every seed is accepted by its decoder; to write
//! them into `fuzz/corpus/` (for example after a wire format changes) run
//!
//! ```text
//! cargo test --test fuzz_corpus -- --ignored write_seed_corpus
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::BytesMut;
use ggen_p2p::fuzzing;
use ggen_p2p::gossip::{
    Choke, Control, GossipMessage, Graft, IDontWant, IHave, IWant, MessageId, PeerExchange, Prune,
    Rpc, RpcLimits, SignedPeerRecord, SubOpts, Topic,
};
use ggen_p2p::kademlia::{
    Key, Message as KadMessage, MessageLimits, PeerRecord as KadPeer, Record as KadRecord,
    Request as KadRequest, Response as KadResponse,
};
use ggen_p2p::rpc::content::{ContentHash, ContentRequest, InfoResponse, Manifest};
use ggen_p2p::rpc::{ErrorFrame, ErrorKind, Frame as RpcFrame, ProtocolName};
use ggen_p2p::transport::mux::{MuxHeader, Reassembler};
use ggen_p2p::transport::noise::{HandshakePayload, SIGNATURE_DOMAIN};
use ggen_p2p::wire::{Envelope, FrameCodec, Limits, ProtocolId};
use ggen_p2p::{Keypair, Multiaddr, PeerId};

/// A `ggen_p2p::fuzzing` entry point.
type Entry = fn(&[u8]);

/// Every fuzz target and the entry point it calls.
const TARGETS: [(&str, Entry); 13] = [
    ("frame_decode", fuzzing::frame_decode),
    ("envelope_decode", fuzzing::envelope_decode),
    ("multiaddr_parse", fuzzing::multiaddr_parse),
    ("peer_id_parse", fuzzing::peer_id_parse),
    (
        "handshake_payload_decode",
        fuzzing::handshake_payload_decode,
    ),
    ("mux_reassemble", fuzzing::mux_reassemble),
    ("kademlia_message_decode", fuzzing::kademlia_message_decode),
    ("kademlia_core", fuzzing::kademlia_core),
    ("gossip_rpc_decode", fuzzing::gossip_rpc_decode),
    ("gossip_router", fuzzing::gossip_router),
    ("rpc_frame_decode", fuzzing::rpc_frame_decode),
    ("rpc_core", fuzzing::rpc_core),
    ("content_message_decode", fuzzing::content_message_decode),
];

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
}

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_root().join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("reading corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn replay_corpus() {
    for (target, entry) in TARGETS {
        let files = corpus_files(target);
        assert!(!files.is_empty(), "corpus for `{target}` is empty");
        for path in files {
            let data = std::fs::read(&path).expect("reading corpus file");
            let outcome = std::panic::catch_unwind(|| entry(&data));
            assert!(
                outcome.is_ok(),
                "fuzzing::{target} panicked on {} ({} bytes)",
                path.display(),
                data.len()
            );
        }
    }
}

#[test]
fn every_corpus_directory_has_a_target() {
    let root = corpus_root();
    for entry in std::fs::read_dir(&root).expect("fuzz/corpus exists") {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/corpus/{name} has no matching target in this test"
            );
        }
    }
}

#[test]
fn seeds_are_valid_encodings() {
    let seeds = seeds();
    for (target, _) in TARGETS {
        assert!(
            seeds.iter().any(|s| s.target == target),
            "no seed for `{target}`"
        );
    }
    for seed in &seeds {
        let data = &seed.bytes[..];
        let what = format!("{}/{}", seed.target, seed.name);
        match seed.target {
            "frame_decode" => {
                let (frames, rest) = FrameCodec::new(64 * 1024).decode_all(data).expect(&what);
                assert!(!frames.is_empty() && rest.is_empty(), "{what}");
            }
            "envelope_decode" => {
                Envelope::decode(bytes::Bytes::copy_from_slice(data)).expect(&what);
            }
            "multiaddr_parse" => {
                Multiaddr::from_str(std::str::from_utf8(data).expect(&what)).expect(&what);
            }
            "peer_id_parse" => match std::str::from_utf8(data) {
                Ok(s) => {
                    PeerId::from_str(s).expect(&what);
                }
                Err(_) => {
                    PeerId::from_bytes(data).expect(&what);
                }
            },
            "handshake_payload_decode" => {
                HandshakePayload::decode(data).expect(&what);
            }
            "mux_reassemble" => {
                let limits = Limits {
                    max_message_size: 4096,
                    max_reassembly_bytes: 8192,
                    max_partial_messages: 4,
                    ..Limits::default()
                };
                let mut r = Reassembler::new(&limits);
                let mut complete = 0;
                for frame in split_mux_input(data) {
                    if r.push(frame).expect(&what).is_some() {
                        complete += 1;
                    }
                }
                assert!(complete > 0 && r.partial_messages() == 0, "{what}");
            }
            "kademlia_message_decode" => {
                KadMessage::decode(data, &MessageLimits::default()).expect(&what);
            }
            "gossip_rpc_decode" => {
                Rpc::decode(data, &RpcLimits::default()).expect(&what);
            }
            "rpc_frame_decode" => {
                RpcFrame::decode(data, 1 << 20).expect(&what);
            }
            "content_message_decode" => {
                let (which, body) = data.split_first().expect(&what);
                if which & 1 == 0 {
                    postcard::from_bytes::<ContentRequest>(body).expect(&what);
                } else {
                    postcard::from_bytes::<InfoResponse>(body).expect(&what);
                }
            }
            // Any byte string is a valid event sequence; the entry point below checks it.
            "kademlia_core" | "gossip_router" | "rpc_core" => {}
            other => panic!("seed for unknown target {other}"),
        }
        // And the entry point itself accepts it.
        let entry = TARGETS.iter().find(|(t, _)| *t == seed.target).unwrap().1;
        entry(data);
    }
}

/// Writes the seeds into `fuzz/corpus/<target>/seed-<name>`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand when the wire formats change"]
fn write_seed_corpus() {
    for seed in seeds() {
        let dir = corpus_root().join(seed.target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{}", seed.name)), &seed.bytes).unwrap();
    }
}

struct Seed {
    target: &'static str,
    name: String,
    bytes: Vec<u8>,
}

fn seed(target: &'static str, name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Seed {
    Seed {
        target,
        name: name.into(),
        bytes: bytes.into(),
    }
}

/// Deterministic keypairs, so regenerating the seeds gives the same files.
fn keypair(n: u8) -> Keypair {
    Keypair::from_secret_bytes([n; 32])
}

/// Splits the `mux_reassemble` input format (`[u16 BE length][frame]…`) into frames.
fn split_mux_input(mut data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while let Some((len, tail)) = data.split_first_chunk::<2>() {
        let len = (u16::from_be_bytes(*len) as usize).min(tail.len());
        let (frame, tail) = tail.split_at(len);
        frames.push(frame);
        data = tail;
    }
    frames
}

/// One mux frame in the `mux_reassemble` input format.
fn mux_frame(out: &mut Vec<u8>, header: MuxHeader, chunk: &[u8]) {
    let mut frame = Vec::new();
    header.encode(&mut frame);
    frame.extend_from_slice(chunk);
    out.extend_from_slice(&(frame.len() as u16).to_be_bytes());
    out.extend_from_slice(&frame);
}

fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let peers: Vec<PeerId> = (1..=3).map(|n| keypair(n).peer_id()).collect();

    // Frames.
    let codec = FrameCodec::new(64 * 1024);
    let frame_sets: [(&str, &[&[u8]]); 4] = [
        ("one", &[b"hello"]),
        ("empty-body", &[b""]),
        ("three", &[b"a", b"", b"/ggen/ping"]),
        ("large", &[&[0x5a; 1000]]),
    ];
    for (name, payloads) in frame_sets {
        let mut buf = BytesMut::new();
        for p in payloads {
            codec.encode(p, &mut buf).unwrap();
        }
        out.push(seed("frame_decode", name, buf.to_vec()));
    }

    // Envelopes.
    let envelopes: [(&str, &str, u16, &[u8]); 5] = [
        ("ping", "/ggen/ping", 1, b"ping"),
        ("empty-payload", "/ggen/ping", 1, b""),
        ("kad", "/ggen/kad", 2, &[0, 1, 2, 3, 0xff]),
        (
            "gossip-v300",
            "/ggen/gossip/1.0",
            300,
            b"{\"topic\":\"packages\"}",
        ),
        ("max-version", "/x", u16::MAX, &[0; 64]),
    ];
    for (name, proto, version, payload) in envelopes {
        let env = Envelope::new(ProtocolId::new(proto, version).unwrap(), payload.to_vec());
        out.push(seed("envelope_decode", name, env.encode().to_vec()));
    }
    let long_name = format!("/{}", "n".repeat(127));
    let env = Envelope::new(ProtocolId::new(long_name, 7).unwrap(), b"x".to_vec());
    out.push(seed(
        "envelope_decode",
        "longest-name",
        env.encode().to_vec(),
    ));

    // Multiaddrs.
    for (name, text) in [
        (
            "ip4-tcp-p2p",
            format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", peers[0]),
        ),
        ("ip4-tcp", "/ip4/0.0.0.0/tcp/0".to_string()),
        ("ip6-quic", "/ip6/::1/udp/4001/quic-v1".to_string()),
        (
            "ip6-quic-p2p",
            format!("/ip6/fe80::1:2/udp/9/quic-v1/p2p/{}", peers[1]),
        ),
        ("memory", "/memory/5".to_string()),
        ("memory-max", format!("/memory/{}", u64::MAX)),
        ("dns4", "/dns4/localhost/tcp/80".to_string()),
        (
            "dns6",
            "/dns6/node-1.example.org/udp/443/quic-v1".to_string(),
        ),
        (
            "dns",
            format!("/dns/boot_1.ggen.dev/tcp/4001/p2p/{}", peers[2]),
        ),
        ("ipfs-alias", format!("/ipfs/{}", peers[0])),
        ("trailing-slash", "/ip4/10.0.0.1/tcp/65535/".to_string()),
    ] {
        out.push(seed("multiaddr_parse", name, text.into_bytes()));
    }

    // Peer ids: text and bytes. The libp2p spec test vector's id is among them.
    out.push(seed(
        "peer_id_parse",
        "spec-vector-text",
        b"12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq".to_vec(),
    ));
    for (i, p) in peers.iter().enumerate() {
        out.push(seed(
            "peer_id_parse",
            format!("text-{i}"),
            p.to_string().into_bytes(),
        ));
        out.push(seed(
            "peer_id_parse",
            format!("bytes-{i}"),
            p.to_bytes().to_vec(),
        ));
    }

    // Handshake payloads: a correctly signed one, and one whose key is valid but whose
    // signature is over another static key.
    for n in 1..=2u8 {
        let kp = keypair(n);
        let mut msg = SIGNATURE_DOMAIN.to_vec();
        msg.extend_from_slice(&[0u8; 32]);
        let payload = HandshakePayload {
            identity_key: kp.public().to_bytes(),
            signature: kp.sign(&msg),
        };
        out.push(seed(
            "handshake_payload_decode",
            format!("signed-{n}"),
            payload.encode(),
        ));
    }
    let kp = keypair(3);
    let payload = HandshakePayload {
        identity_key: kp.public().to_bytes(),
        signature: kp.sign(b"some other message"),
    };
    let mut bytes = payload.encode();
    bytes.extend_from_slice(b"trailing-field");
    out.push(seed(
        "handshake_payload_decode",
        "wrong-signature-trailing",
        bytes,
    ));

    // Mux frame sequences.
    let h = |id, total_len, last| MuxHeader {
        id,
        total_len,
        last,
    };
    let mut single = Vec::new();
    mux_frame(&mut single, h(0, Some(5), true), b"hello");
    out.push(seed("mux_reassemble", "single", single));

    let mut empty = Vec::new();
    mux_frame(&mut empty, h(7, Some(0), true), b"");
    out.push(seed("mux_reassemble", "empty-message", empty));

    let mut chunked = Vec::new();
    mux_frame(&mut chunked, h(1, Some(10), false), b"0123");
    mux_frame(&mut chunked, h(1, None, false), b"456");
    mux_frame(&mut chunked, h(1, None, true), b"789");
    out.push(seed("mux_reassemble", "chunked", chunked));

    let mut interleaved = Vec::new();
    mux_frame(&mut interleaved, h(1, Some(4), false), b"ab");
    mux_frame(&mut interleaved, h(2, Some(3), false), b"x");
    mux_frame(&mut interleaved, h(3, Some(1), true), b"z");
    mux_frame(&mut interleaved, h(2, None, false), b"y");
    mux_frame(&mut interleaved, h(1, None, true), b"cd");
    mux_frame(&mut interleaved, h(2, None, true), b"w");
    out.push(seed("mux_reassemble", "interleaved", interleaved));

    let mut big = Vec::new();
    let body: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
    mux_frame(&mut big, h(u32::MAX, Some(4096), false), &body[..2000]);
    mux_frame(&mut big, h(u32::MAX, None, false), &body[2000..4000]);
    mux_frame(&mut big, h(u32::MAX, None, true), &body[4000..]);
    out.push(seed("mux_reassemble", "max-size", big));

    // Kademlia messages: every request and response shape, with peers and addresses.
    let rec = |i: usize| KadPeer {
        peer: peers[i % peers.len()],
        addrs: vec![
            "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            "/ip6/::1/udp/4001/quic-v1".parse().unwrap(),
        ],
    };
    let record = KadRecord {
        key: bytes::Bytes::from_static(b"pkg/serde@1.0.0"),
        value: bytes::Bytes::from_static(b"signed metadata"),
        publisher: Some(peers[0]),
        ttl_secs: 3600,
    };
    let key = bytes::Bytes::from_static(b"pkg/serde");
    let kad: Vec<(&str, KadMessage)> = vec![
        (
            "ping",
            KadMessage::Request {
                id: 1,
                sender: Some(rec(0)),
                body: KadRequest::Ping,
            },
        ),
        (
            "find-node",
            KadMessage::Request {
                id: 2,
                sender: None,
                body: KadRequest::FindNode {
                    key: Key::from_record_key(b"t"),
                },
            },
        ),
        (
            "get-value",
            KadMessage::Request {
                id: 3,
                sender: Some(rec(1)),
                body: KadRequest::GetValue { key: key.clone() },
            },
        ),
        (
            "put-value",
            KadMessage::Request {
                id: 4,
                sender: Some(rec(1)),
                body: KadRequest::PutValue {
                    record: record.clone(),
                },
            },
        ),
        (
            "add-provider",
            KadMessage::Request {
                id: 5,
                sender: Some(rec(2)),
                body: KadRequest::AddProvider {
                    key: key.clone(),
                    provider: rec(2),
                },
            },
        ),
        (
            "get-providers",
            KadMessage::Request {
                id: 6,
                sender: None,
                body: KadRequest::GetProviders { key },
            },
        ),
        (
            "nodes",
            KadMessage::Response {
                id: 2,
                body: KadResponse::Nodes {
                    closer: (0..20).map(rec).collect(),
                },
            },
        ),
        (
            "value",
            KadMessage::Response {
                id: 3,
                body: KadResponse::Value {
                    record: Some(record),
                    closer: vec![rec(0)],
                },
            },
        ),
        (
            "providers",
            KadMessage::Response {
                id: 6,
                body: KadResponse::Providers {
                    providers: vec![rec(2)],
                    closer: vec![rec(1)],
                },
            },
        ),
        (
            "stored",
            KadMessage::Response {
                id: 4,
                body: KadResponse::Stored,
            },
        ),
        (
            "error",
            KadMessage::Response {
                id: 4,
                body: KadResponse::Error {
                    reason: "refused".into(),
                },
            },
        ),
    ];
    for (name, m) in kad {
        out.push(seed("kademlia_message_decode", name, m.encode().to_vec()));
    }
    // Core event sequences: requests of every kind, queries, responses, time jumps.
    out.push(seed(
        "kademlia_core",
        "requests",
        (0..6u8)
            .flat_map(|k| [0, k, 1, k, 1, 2, k, 3])
            .collect::<Vec<u8>>(),
    ));
    out.push(seed(
        "kademlia_core",
        "queries-and-answers",
        vec![
            8, 1, 0, 8, 2, 0, 7, 0, 1, 7, 1, 2, 3, 0, 0, 5, 4, 1, 1, 6, 6, 40, 0, 0, 5, 3, 2, 9, 6,
            60, 0,
        ],
    ));
    out.push(seed(
        "kademlia_core",
        "bootstrap-then-timeouts",
        vec![8, 1, 0, 8, 5, 0, 7, 5, 0, 6, 200, 0, 6, 255, 0, 6, 255, 0],
    ));

    gossip_rpc_seeds(&mut out);
    gossip_router_seeds(&mut out);
    rpc_seeds(&mut out);
    out
}

/// RPC frames of every kind, and event scripts for the RPC core (see `fuzzing::rpc_core` for
/// the byte code: op, argument, then op-specific bytes).
fn rpc_seeds(out: &mut Vec<Seed>) {
    let frames = [
        (
            "request",
            RpcFrame::Request {
                id: 1,
                protocol: ProtocolName::new("/ggen/content", 1),
                payload: bytes::Bytes::from_static(b"range 0..262144"),
            },
        ),
        (
            "response-ok",
            RpcFrame::Response {
                id: 1,
                result: Ok(bytes::Bytes::from(vec![0xab; 300])),
            },
        ),
        (
            "response-busy",
            RpcFrame::Response {
                id: u64::MAX,
                result: Err(ErrorFrame {
                    kind: ErrorKind::Busy,
                    message: "64 of your requests in progress".into(),
                }),
            },
        ),
        ("cancel", RpcFrame::Cancel { id: 77 }),
    ];
    for (name, f) in frames {
        out.push(seed("rpc_frame_decode", name, f.encode().to_vec()));
    }
    let scripts: [(&str, Vec<u8>); 4] = [
        // Requests to two peers, one answered, one timing out, one cancelled.
        (
            "request-answer-timeout-cancel",
            vec![0, 0, 10, 0, 1, 5, 0, 0, 8, 0, 2, 7, 30, 1, 0, 0, 3],
        ),
        // Inbound requests up to the limits (busy), answered, then rate limited.
        (
            "inbound-limits",
            vec![
                4, 0, 1, 10, 4, 0, 2, 10, 4, 0, 3, 10, 4, 1, 4, 10, 4, 2, 5, 10, 6, 0, 0, 6, 1, 0,
                4, 0, 6, 200, 4, 0, 7, 10,
            ],
        ),
        // Unknown protocol, oversize request and garbage from peers.
        (
            "refusals-and-garbage",
            vec![4, 0x80, 1, 1, 4, 0, 2, 200, 3, 1, 5, 1, 2, 3, 4, 5, 3, 2, 0],
        ),
        // Handlers past their deadline, then a disconnect with work in both directions.
        (
            "handler-timeout-disconnect",
            vec![4, 0, 1, 1, 0, 0, 5, 7, 50, 4, 0, 2, 1, 0, 0, 5, 8, 0],
        ),
    ];
    for (name, bytes) in scripts {
        out.push(seed("rpc_core", name, bytes));
    }
    // Content transfer: requests (tag 0) and info answers (tag 1).
    let hash = ContentHash::of(b"package archive");
    let with_tag = |tag: u8, body: Vec<u8>| [vec![tag], body].concat();
    let requests = [
        ("info", ContentRequest::Info { hash }),
        (
            "range",
            ContentRequest::Range {
                hash,
                offset: 262_144,
                len: 262_144,
            },
        ),
    ];
    for (name, r) in requests {
        let body = postcard::to_stdvec(&r).unwrap();
        out.push(seed("content_message_decode", name, with_tag(0, body)));
    }
    let blob = vec![7u8; 600_000];
    let answers = [
        ("not-found", InfoResponse::NotFound),
        (
            "manifest",
            InfoResponse::Found(Manifest::of(&blob, 262_144)),
        ),
    ];
    for (name, a) in answers {
        let body = postcard::to_stdvec(&a).unwrap();
        out.push(seed("content_message_decode", name, with_tag(1, body)));
    }
}

/// A gossip message on `topic`, signed by `key`.
fn signed_message(key: &Keypair, topic: &str, seqno: u64, data: &[u8]) -> GossipMessage {
    let mut m = GossipMessage {
        from: None,
        seqno: Some(seqno),
        topic: Topic::new(topic),
        data: bytes::Bytes::copy_from_slice(data),
        signature: None,
    };
    m.sign(key);
    m
}

/// Gossip RPCs of every shape: subscriptions, signed and anonymous messages, each control
/// message, peer exchange with and without records, the sender's record.
fn gossip_rpc_seeds(out: &mut Vec<Seed>) {
    let (k1, k2, k3) = (keypair(1), keypair(2), keypair(3));
    let addrs: Vec<Multiaddr> = vec![
        "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
        "/ip6/::1/udp/4001/quic-v1".parse().unwrap(),
    ];
    let id = |s: &[u8]| MessageId(bytes::Bytes::copy_from_slice(s));
    let topic = "ggen-marketplace/updates";
    let subscriptions = vec![
        SubOpts {
            subscribe: true,
            topic: Topic::new(topic),
        },
        SubOpts {
            subscribe: false,
            topic: Topic::new("ggen-marketplace/other"),
        },
    ];
    let control = Control {
        ihave: vec![
            IHave {
                topic: Topic::new(topic),
                message_ids: vec![id(b"id-1"), id(&[7; 46])],
            },
            IHave {
                topic: Topic::new("t"),
                message_ids: vec![],
            },
        ],
        iwant: vec![IWant {
            message_ids: vec![id(b"id-1"), id(&[0; 32])],
        }],
        graft: vec![Graft {
            topic: Topic::new(topic),
        }],
        prune: vec![Prune {
            topic: Topic::new(topic),
            peers: vec![
                PeerExchange {
                    peer: k2.peer_id(),
                    record: Some(SignedPeerRecord::new(&k2, addrs.clone(), 5)),
                },
                PeerExchange {
                    peer: k3.peer_id(),
                    record: None,
                },
            ],
            backoff_secs: Some(60),
        }],
        idontwant: vec![IDontWant {
            message_ids: vec![id(b"id-2")],
        }],
        choke: vec![Choke {
            topic: Topic::new(topic),
        }],
        unchoke: vec![Choke {
            topic: Topic::new("t"),
        }],
    };
    let rpcs: Vec<(&str, Rpc)> = vec![
        ("empty", Rpc::default()),
        (
            "hello",
            Rpc {
                subscriptions: subscriptions.clone(),
                record: Some(SignedPeerRecord::new(&k1, addrs.clone(), 1)),
                ..Rpc::default()
            },
        ),
        (
            "signed-message",
            Rpc {
                publish: vec![signed_message(&k1, topic, 1, b"serde 1.0.0")],
                ..Rpc::default()
            },
        ),
        (
            "large-message",
            Rpc {
                publish: vec![signed_message(&k2, topic, u64::MAX, &[0xab; 1200])],
                ..Rpc::default()
            },
        ),
        (
            "anonymous-message",
            Rpc {
                publish: vec![GossipMessage {
                    from: None,
                    seqno: None,
                    topic: Topic::new(topic),
                    data: bytes::Bytes::from_static(b"anon"),
                    signature: None,
                }],
                ..Rpc::default()
            },
        ),
        (
            "ihave-iwant",
            Rpc {
                control: Control {
                    ihave: control.ihave.clone(),
                    iwant: control.iwant.clone(),
                    ..Control::default()
                },
                ..Rpc::default()
            },
        ),
        (
            "graft-prune-px",
            Rpc {
                control: Control {
                    graft: control.graft.clone(),
                    prune: control.prune.clone(),
                    ..Control::default()
                },
                ..Rpc::default()
            },
        ),
        (
            "idontwant",
            Rpc {
                control: Control {
                    idontwant: control.idontwant.clone(),
                    ..Control::default()
                },
                ..Rpc::default()
            },
        ),
        (
            "everything",
            Rpc {
                subscriptions,
                publish: vec![
                    signed_message(&k1, topic, 2, b"a"),
                    signed_message(&k3, "t", 3, b""),
                ],
                control,
                record: Some(SignedPeerRecord::new(&k1, addrs, 9)),
            },
        ),
    ];
    for (name, rpc) in rpcs {
        out.push(seed("gossip_rpc_decode", name, rpc.encode().to_vec()));
    }
}

/// `gossip_router` event scripts (the byte format is described at `fuzzing::gossip_router`).
struct Script(Vec<u8>);

/// An RPC for a script: which parts it carries, each in the entry point's byte format.
#[derive(Default)]
struct ScriptRpc {
    /// Subscription bytes: `sub(…)`.
    subs: Option<Vec<u8>>,
    /// Messages: `msg(…)`.
    msgs: Option<Vec<[u8; 2]>>,
    /// IHAVEs: topic byte and id bytes (below 0x80: one of the ids seen so far).
    ihave: Option<Vec<(u8, Vec<u8>)>>,
    /// IWANT id bytes.
    iwant: Option<Vec<u8>>,
    /// GRAFT topic bytes.
    graft: Option<Vec<u8>>,
    /// CHOKE topic bytes (at most 3).
    choke: Option<Vec<u8>>,
    /// UNCHOKE topic bytes (at most 3).
    unchoke: Option<Vec<u8>>,
    /// PRUNEs: topic byte, backoff byte, peer-exchange bytes.
    prune: Option<Vec<(u8, u8, Vec<u8>)>>,
    /// IDONTWANT id bytes.
    idontwant: Option<Vec<u8>>,
    /// The sender's record (`b % 5`: seq 1–3, 3 without addresses, 4 forged).
    record: Option<u8>,
}

/// A subscription change to topic `t` (0–2 local topics, 3 the remote-only one).
fn sub(subscribe: bool, t: u8) -> u8 {
    t << 1 | u8::from(!subscribe)
}

/// A message: `kind` 0 signed by the sender, 2 by another peer, 3 and 4 forged, 5 unsigned,
/// 6 replayed, 7 bad signature; `len` 0 tiny, 1 up to 255 bytes, 2 around the IDONTWANT
/// threshold, 3 large; `b` the fill byte (top bit: a fresh sequence number, else `b & 7`).
fn msg(kind: u8, len: u8, t: u8, b: u8) -> [u8; 2] {
    [kind | len << 3 | t << 5, b]
}

impl ScriptRpc {
    /// The bytes, in the order and with the counts the entry point reads (each list has a
    /// maximum length there: the `assert`s).
    fn bytes(&self) -> Vec<u8> {
        let len = |l: &Option<Vec<u8>>| l.as_ref().map_or(0, Vec::len);
        assert!(len(&self.subs) <= 4 && len(&self.iwant) <= 5 && len(&self.idontwant) <= 5);
        assert!(len(&self.graft) <= 3 && len(&self.choke) <= 3 && len(&self.unchoke) <= 3);
        assert!(
            self.msgs
                .as_ref()
                .is_none_or(|m| (1..=4).contains(&m.len()))
        );
        assert!(
            self.ihave.as_ref().is_none_or(
                |h| (1..=3).contains(&h.len()) && h.iter().all(|(_, ids)| ids.len() <= 5)
            )
        );
        assert!(
            self.prune.as_ref().is_none_or(
                |p| (1..=2).contains(&p.len()) && p.iter().all(|(_, _, px)| px.len() <= 3)
            )
        );
        let mut parts = 0u8;
        let mut body = Vec::new();
        let list = |body: &mut Vec<u8>, l: &[u8]| {
            body.push(l.len() as u8);
            body.extend_from_slice(l);
        };
        if let Some(s) = &self.subs {
            parts |= 1;
            list(&mut body, s);
        }
        if let Some(m) = &self.msgs {
            parts |= 2;
            body.push(m.len() as u8 - 1);
            body.extend(m.iter().flatten());
        }
        if let Some(h) = &self.ihave {
            parts |= 4;
            body.push(h.len() as u8 - 1);
            for (t, ids) in h {
                body.push(*t);
                list(&mut body, ids);
            }
        }
        if let Some(w) = &self.iwant {
            parts |= 8;
            list(&mut body, w);
        }
        if self.graft.is_some() || self.choke.is_some() || self.unchoke.is_some() {
            parts |= 16;
            let none = Vec::new();
            let (g, c, u) = (
                self.graft.as_ref().unwrap_or(&none),
                self.choke.as_ref().unwrap_or(&none),
                self.unchoke.as_ref().unwrap_or(&none),
            );
            list(&mut body, g);
            body.push(c.len() as u8 | (u.len() as u8) << 2);
            body.extend_from_slice(c);
            body.extend_from_slice(u);
        }
        if let Some(p) = &self.prune {
            parts |= 32;
            body.push(p.len() as u8 - 1);
            for (t, backoff, px) in p {
                body.extend_from_slice(&[*t, *backoff]);
                list(&mut body, px);
            }
        }
        if let Some(d) = &self.idontwant {
            parts |= 64;
            list(&mut body, d);
        }
        if let Some(r) = self.record {
            parts |= 128;
            body.push(r);
        }
        let mut out = vec![parts];
        out.extend(body);
        out
    }
}

impl Script {
    /// `flags`: bit 0 validation by the application, bit 1 scoring off, bit 2 flood
    /// publishing, bits 3–4 signature mode (strict, permissive, anonymous, strict with
    /// content ids), bit 5 no peer exchange, bit 6 staggered forwarding, bit 7 choking.
    fn new(flags: u8) -> Self {
        Script(vec![flags])
    }
    fn op(mut self, op: u8, arg: u8, rest: &[u8]) -> Self {
        self.0.extend_from_slice(&[op, arg]);
        self.0.extend_from_slice(rest);
        self
    }
    /// `ip`: 0 none, 1 its own, 2 shared, 3 loopback.
    fn connect(self, peer: u8, outbound: bool, ip: u8) -> Self {
        self.op(0, peer | ip << 4 | u8::from(outbound) << 6, &[])
    }
    /// The entry point connects the local node when the argument has its top bit set and is
    /// 8 modulo 9.
    fn connect_self(self) -> Self {
        self.op(0, 0x86, &[])
    }
    fn disconnect(self, peer: u8) -> Self {
        self.op(2, peer, &[])
    }
    fn subscribe(self, t: u8) -> Self {
        self.op(3, t, &[])
    }
    fn unsubscribe(self, t: u8) -> Self {
        self.op(4, t, &[])
    }
    /// `len`: 0 empty, 1–2 `fill` bytes, 3 threshold − 1, 4 threshold and a bit, 5 ~4 KB,
    /// 6 9000 (more than a queue holds), 7 more than `max_transmit_size`.
    fn publish(self, t: u8, len: u8, fill: u8) -> Self {
        self.op(5, t | len << 4, &[fill])
    }
    fn rpc(self, peer: u8, rpc: ScriptRpc) -> Self {
        self.op(7, peer, &rpc.bytes())
    }
    /// An encoded RPC, framed as the entry point reads it.
    fn raw(self, peer: u8, rpc: &Rpc) -> Self {
        let mut bytes = rpc.encode().to_vec();
        let len_byte = if bytes.len() < 128 {
            bytes.len() as u8
        } else {
            let steps = (bytes.len() - 128).div_ceil(8);
            assert!(steps < 128, "raw RPC seed too long");
            bytes.resize(128 + steps * 8, 0);
            (128 + steps) as u8
        };
        // The padding is ignored by the decoder.
        assert_eq!(
            Rpc::decode(&bytes, &RpcLimits::default()).ok().as_ref(),
            Some(rpc)
        );
        let mut rest = vec![len_byte];
        rest.extend(bytes);
        self.op(11, peer, &rest)
    }
    /// `class` 0: n × 20 ms, 1: 500 + n × 100 ms, 2: n × 5 s, 3: n minutes.
    fn wait(self, class: u8, n: u8) -> Self {
        self.op(12, class << 6 | n, &[])
    }
    /// A heartbeat's worth of time.
    fn beat(self) -> Self {
        self.wait(1, 6)
    }
    /// `verdict` 0 accept, 1 reject, 2 ignore; `pick` % 3: 0 a pending id, 1 a seen id, else made up.
    fn validate(self, verdict: u8, pick: u8) -> Self {
        self.op(13, verdict, &[pick])
    }
    /// `limit` items per peer (0: all); `unsend`: pop one and put it back first.
    fn drain(self, limit: u8, unsend: bool) -> Self {
        self.op(14, limit | u8::from(unsend) << 7, &[])
    }
    /// `score` 0: −1000, 1: −60, 2: 0, 3: +20.
    fn app_score(self, peer: u8, score: u8) -> Self {
        self.op(15, peer, &[score])
    }
}

/// `peers` connect (alternately outbound and inbound) and announce topics `topics` with their
/// records.
fn join(mut s: Script, peers: std::ops::Range<u8>, topics: &[u8]) -> Script {
    for p in peers {
        s = s.connect(p, p % 2 == 0, p % 4).rpc(
            p,
            ScriptRpc {
                subs: Some(topics.iter().map(|t| sub(true, *t)).collect()),
                record: Some(p % 3),
                ..ScriptRpc::default()
            },
        );
    }
    s
}

fn gossip_router_seeds(out: &mut Vec<Seed>) {
    // The world's keys, as the entry point derives them (to sign raw RPCs).
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(fuzzing::GOSSIP_ROUTER_KEY_SEED);
    let local = Keypair::generate_with(&mut rng);
    let keys: Vec<Keypair> = (0..8).map(|_| Keypair::generate_with(&mut rng)).collect();
    let topic = |t: &str| format!("ggen-marketplace/{t}");

    // Mesh building, publishing, forwarding, gossip and control traffic.
    let mesh = join(Script::new(0), 0..6, &[0, 1])
        .subscribe(0)
        .subscribe(1)
        .drain(0, false)
        .publish(0, 1, 7)
        .publish(0, 4, 8)
        .beat()
        .rpc(
            1,
            ScriptRpc {
                msgs: Some(vec![
                    msg(0, 0, 0, 0x81),
                    msg(0, 2, 0, 0x82),
                    msg(2, 1, 1, 3),
                ]),
                ..ScriptRpc::default()
            },
        )
        .drain(0, false)
        .rpc(
            2,
            ScriptRpc {
                ihave: Some(vec![(0, vec![0, 1, 0x90, 0x91]), (1, vec![0x92])]),
                iwant: Some(vec![0, 1, 2, 3]),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            5,
            ScriptRpc {
                msgs: Some(vec![msg(6, 0, 0, 1), msg(6, 0, 0, 2)]),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            3,
            ScriptRpc {
                graft: Some(vec![0, 1, 3]),
                idontwant: Some(vec![0, 1]),
                ..ScriptRpc::default()
            },
        )
        .drain(2, true)
        .beat()
        .rpc(
            4,
            ScriptRpc {
                prune: Some(vec![(0, 2, vec![0x11, 0x12, 0x25]), (1, 0, vec![0x33])]),
                ..ScriptRpc::default()
            },
        )
        .beat()
        .beat()
        .drain(0, false)
        .unsubscribe(1)
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "mesh-publish-control", mesh.0));

    // Application validation: accept, reject, ignore, and the timeout.
    let validation = join(Script::new(1), 0..4, &[0])
        .subscribe(0)
        .beat()
        .rpc(
            0,
            ScriptRpc {
                msgs: Some(vec![
                    msg(0, 0, 0, 0x81),
                    msg(0, 1, 0, 0x82),
                    msg(0, 2, 0, 0x83),
                    msg(2, 0, 0, 0x84),
                ]),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            1,
            ScriptRpc {
                msgs: Some(vec![msg(6, 0, 0, 0), msg(6, 0, 0, 1)]),
                ..ScriptRpc::default()
            },
        )
        .validate(0, 0)
        .validate(1, 3)
        .validate(2, 6)
        .validate(0, 1)
        .validate(0, 2)
        .wait(2, 1)
        .drain(0, false);
    out.push(seed("gossip_router", "validation", validation.0));

    // Forged messages, bad records, graylisting and application scores.
    let forged = join(Script::new(0), 0..3, &[0, 2])
        .subscribe(0)
        .subscribe(2)
        .rpc(
            0,
            ScriptRpc {
                msgs: Some(vec![msg(3, 0, 0, 1), msg(4, 0, 0, 2), msg(7, 0, 0, 3)]),
                record: Some(4),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            0,
            ScriptRpc {
                msgs: Some(vec![msg(3, 1, 2, 0x81), msg(7, 1, 0, 0x85)]),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            0,
            ScriptRpc {
                graft: Some(vec![0]),
                ..ScriptRpc::default()
            },
        )
        .app_score(1, 0)
        .app_score(2, 1)
        .beat()
        .rpc(
            1,
            ScriptRpc {
                msgs: Some(vec![msg(0, 0, 0, 0x81)]),
                ..ScriptRpc::default()
            },
        )
        .connect_self()
        .wait(2, 20)
        .app_score(1, 3)
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "forged-and-graylisted", forged.0));

    // Raw wire RPCs, signed with the world's keys.
    let mut raw = join(Script::new(0), 0..3, &[0]).subscribe(0);
    let hello = Rpc {
        subscriptions: vec![SubOpts {
            subscribe: true,
            topic: Topic::new(topic("a")),
        }],
        record: Some(SignedPeerRecord::new(
            &keys[3],
            vec![Multiaddr::memory(5)],
            1,
        )),
        ..Rpc::default()
    };
    raw = raw.connect(3, true, 1).raw(3, &hello);
    let m = signed_message(&keys[3], &topic("a"), 1, &[1; 40]);
    let m2 = signed_message(&keys[4], &topic("a"), 9, b"from another publisher");
    raw = raw.raw(
        3,
        &Rpc {
            publish: vec![m.clone(), m2],
            control: Control {
                graft: vec![Graft {
                    topic: Topic::new(topic("a")),
                }],
                ..Control::default()
            },
            ..Rpc::default()
        },
    );
    let own = signed_message(&local, &topic("a"), 1, b"ours");
    raw = raw
        .raw(
            0,
            &Rpc {
                publish: vec![m, own],
                control: Control {
                    prune: vec![Prune {
                        topic: Topic::new(topic("a")),
                        peers: vec![PeerExchange {
                            peer: keys[6].peer_id(),
                            record: Some(SignedPeerRecord::new(
                                &keys[6],
                                vec![Multiaddr::memory(8)],
                                3,
                            )),
                        }],
                        backoff_secs: Some(1),
                    }],
                    ..Control::default()
                },
                ..Rpc::default()
            },
        )
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "raw-rpcs", raw.0));

    // Anonymous mode: unsigned messages are the valid ones.
    let anonymous = join(Script::new(2 << 3), 0..3, &[0])
        .subscribe(0)
        .publish(0, 1, 1)
        .rpc(
            1,
            ScriptRpc {
                msgs: Some(vec![msg(5, 1, 0, 9), msg(5, 1, 0, 9), msg(0, 0, 0, 1)]),
                ..ScriptRpc::default()
            },
        )
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "anonymous", anonymous.0));

    // Scoring off, flood publishing, permissive: peer exchange is followed.
    let px = join(Script::new(2 | 4 | 1 << 3), 0..4, &[0, 1])
        .subscribe(0)
        .publish(0, 2, 3)
        .publish(2, 1, 4)
        .rpc(
            0,
            ScriptRpc {
                prune: Some(vec![
                    (0, 1, vec![0x15, 0x16, 0x17]),
                    (1, 3, vec![0x2a, 0x3b]),
                ]),
                msgs: Some(vec![msg(5, 0, 0, 1)]),
                ..ScriptRpc::default()
            },
        )
        .beat()
        .disconnect(1)
        .beat()
        .drain(0, true);
    out.push(seed("gossip_router", "flood-publish-px", px.0));

    // Queue pressure: large publishes and forwards without draining, then partial drains.
    let mut pressure = join(Script::new(0), 0..4, &[0]).subscribe(0);
    for i in 0..6 {
        pressure = pressure.publish(0, 5, i).publish(0, 6, i);
    }
    pressure = pressure
        .rpc(
            1,
            ScriptRpc {
                msgs: Some(vec![msg(0, 3, 0, 0x81), msg(0, 3, 0, 0x82)]),
                ..ScriptRpc::default()
            },
        )
        .publish(0, 7, 0)
        .drain(1, true)
        .drain(3, true)
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "queue-pressure", pressure.0));

    // Fanout: publishing to a topic we do not join, until the fanout expires; then joining.
    let fanout = join(Script::new(0), 0..5, &[2])
        .publish(2, 1, 1)
        .beat()
        .publish(2, 1, 2)
        .wait(2, 3)
        .subscribe(2)
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "fanout", fanout.0));

    // Staggered forwarding: later mesh peers get a forward after a delay, unless they send
    // the message (or IDONTWANT) first; some leave before their turn.
    let stagger = join(Script::new(0x40 | 2), 0..6, &[0])
        .subscribe(0)
        .beat()
        .rpc(
            0,
            ScriptRpc {
                msgs: Some(vec![msg(0, 1, 0, 0x81), msg(0, 2, 0, 0x82)]),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            1,
            ScriptRpc {
                msgs: Some(vec![msg(2, 1, 0, 0x81)]),
                idontwant: Some(vec![0, 1]),
                ..ScriptRpc::default()
            },
        )
        .wait(0, 1)
        .disconnect(2)
        .wait(0, 1)
        .drain(0, false)
        .wait(0, 5)
        .drain(0, false);
    out.push(seed("gossip_router", "staggered-forwards", stagger.0));

    // Gossip on every topic at once: enough recent messages in three topics that the IHAVEs
    // for one peer add up to more ids than one IHAVE may carry.
    let mut gossip = join(Script::new(2), 0..3, &[0, 1, 2])
        .subscribe(0)
        .subscribe(1)
        .subscribe(2);
    // Joins after the meshes are full: it only gets gossip.
    gossip = join(gossip, 3..4, &[0, 1, 2]);
    for i in 0..10 {
        gossip = gossip.publish(0, 1, i).publish(1, 1, i).publish(2, 1, i);
    }
    gossip = gossip.drain(0, false).beat().drain(0, false);
    out.push(seed("gossip_router", "gossip-on-every-topic", gossip.0));

    // Choking: mesh peers whose copies are mostly duplicates are choked at the heartbeat and
    // unchoked when they advertise something new; peers choke and unchoke us too.
    let mut choke = join(Script::new(0x80 | 2), 0..5, &[0, 1])
        .subscribe(0)
        .subscribe(1);
    for round in 0..3u8 {
        for p in 0..5 {
            choke = choke.rpc(
                p,
                ScriptRpc {
                    msgs: Some(vec![msg(2, 0, 0, 0x80 | (round * 8 + p))]),
                    ..ScriptRpc::default()
                },
            );
        }
        for p in 0..5 {
            // Copies of what the others sent: duplicates.
            choke = choke.rpc(
                p,
                ScriptRpc {
                    msgs: Some(vec![msg(6, 0, 0, p), msg(6, 0, 0, p + 1)]),
                    ..ScriptRpc::default()
                },
            );
        }
        choke = choke.drain(0, false).beat();
    }
    for p in 0..5 {
        // Something new from each: a peer we choked is unchoked.
        choke = choke.rpc(
            p,
            ScriptRpc {
                ihave: Some(vec![(0, vec![0xa0 + p])]),
                ..ScriptRpc::default()
            },
        );
    }
    choke = choke
        .rpc(
            1,
            ScriptRpc {
                choke: Some(vec![0, 1]),
                unchoke: Some(vec![2]),
                ihave: Some(vec![(0, vec![0x93, 0x94])]),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            2,
            ScriptRpc {
                graft: Some(vec![1]),
                choke: Some(vec![0]),
                ..ScriptRpc::default()
            },
        )
        .rpc(
            0,
            ScriptRpc {
                msgs: Some(vec![msg(0, 1, 0, 0x90)]),
                ..ScriptRpc::default()
            },
        )
        .beat()
        .rpc(
            2,
            ScriptRpc {
                unchoke: Some(vec![0]),
                ..ScriptRpc::default()
            },
        )
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "choking", choke.0));

    // GRAFTs from peers that did not join the topic (one never subscribed, one is over the
    // per-peer topic limit): they must not enter the mesh.
    let graft = Script::new(0)
        .subscribe(0)
        .connect(0, false, 0)
        .rpc(
            0,
            ScriptRpc {
                graft: Some(vec![0]),
                ..ScriptRpc::default()
            },
        )
        .connect(1, true, 0)
        .rpc(
            1,
            ScriptRpc {
                subs: Some(vec![sub(true, 3), sub(true, 1), sub(true, 2), sub(true, 0)]),
                graft: Some(vec![0]),
                ..ScriptRpc::default()
            },
        )
        .beat()
        .drain(0, false);
    out.push(seed("gossip_router", "graft-without-subscription", graft.0));

    // A crowded mesh: every peer subscribes and grafts; heartbeats prune down.
    let mut crowd = join(Script::new(0), 0..8, &[0, 1, 2]).subscribe(0);
    for p in 0..8 {
        crowd = crowd.rpc(
            p,
            ScriptRpc {
                graft: Some(vec![0]),
                ..ScriptRpc::default()
            },
        );
    }
    crowd = crowd.beat().drain(0, false);
    for p in 0..4 {
        crowd = crowd.disconnect(p);
    }
    crowd = crowd.beat().beat().wait(3, 2).beat().drain(0, false);
    out.push(seed("gossip_router", "crowded-mesh", crowd.0));
}
