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
use ggen_p2p::kademlia::{
    Key, Message as KadMessage, MessageLimits, PeerRecord as KadPeer, Record as KadRecord,
    Request as KadRequest, Response as KadResponse,
};
use ggen_p2p::transport::mux::{MuxHeader, Reassembler};
use ggen_p2p::transport::noise::{HandshakePayload, SIGNATURE_DOMAIN};
use ggen_p2p::wire::{Envelope, FrameCodec, Limits, ProtocolId};
use ggen_p2p::{Keypair, Multiaddr, PeerId};

/// A `ggen_p2p::fuzzing` entry point.
type Entry = fn(&[u8]);

/// Every fuzz target and the entry point it calls.
const TARGETS: [(&str, Entry); 8] = [
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
            // Any byte string is a valid event sequence; the entry point below checks it.
            "kademlia_core" => {}
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

    out
}
