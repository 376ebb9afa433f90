//! Property tests: every wire type survives encode → decode unchanged, and every decoder is
//! total (returns, never panics) on arbitrary bytes.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use ggen_p2p::address::{MAX_COMPONENTS, Protocol};
use ggen_p2p::fuzzing;
use ggen_p2p::identity::PEER_ID_BYTES_LEN;
use ggen_p2p::transport::mux::{MuxHeader, Reassembler};
use ggen_p2p::transport::noise::{HandshakePayload, SIGNATURE_DOMAIN};
use ggen_p2p::wire::{
    Envelope, EnvelopeRef, FrameCodec, Limits, MAX_PROTOCOL_NAME_LEN, ProtocolId,
};
use ggen_p2p::{Keypair, Multiaddr, PeerId, PublicKey};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// Cases for properties that derive Ed25519 keys: fewer, as that is slow in a debug build
/// whose dependencies are not optimized.
fn key_config() -> ProptestConfig {
    ProptestConfig::with_cases(128)
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn keypair() -> impl Strategy<Value = Keypair> {
    any::<[u8; 32]>().prop_map(Keypair::from_secret_bytes)
}

fn peer_id() -> impl Strategy<Value = PeerId> {
    keypair().prop_map(|k| k.peer_id())
}

/// A DNS name the parser accepts, already in the lower case it normalizes to; short enough
/// that `MAX_COMPONENTS` of them stay under `MAX_MULTIADDR_LEN`.
fn dns_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9_-]{1,12}", 1..=4).prop_map(|labels| labels.join("."))
}

/// Any single address component.
fn component(peers: bool) -> BoxedStrategy<Protocol> {
    let mut options = vec![
        any::<[u8; 4]>()
            .prop_map(|b| Protocol::Ip4(Ipv4Addr::from(b)))
            .boxed(),
        any::<[u8; 16]>()
            .prop_map(|b| Protocol::Ip6(Ipv6Addr::from(b)))
            .boxed(),
        dns_name().prop_map(Protocol::Dns).boxed(),
        dns_name().prop_map(Protocol::Dns4).boxed(),
        dns_name().prop_map(Protocol::Dns6).boxed(),
        any::<u16>().prop_map(Protocol::Tcp).boxed(),
        any::<u16>().prop_map(Protocol::Udp).boxed(),
        Just(Protocol::QuicV1).boxed(),
        any::<u64>().prop_map(Protocol::Memory).boxed(),
    ];
    if peers {
        options.push(peer_id().prop_map(Protocol::P2p).boxed());
    }
    prop::strategy::Union::new(options).boxed()
}

fn host() -> impl Strategy<Value = Protocol> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|b| Protocol::Ip4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| Protocol::Ip6(Ipv6Addr::from(b))),
        dns_name().prop_map(Protocol::Dns),
        dns_name().prop_map(Protocol::Dns4),
        dns_name().prop_map(Protocol::Dns6),
    ]
}

/// Addresses a transport dials: `H/tcp/N`, `H/udp/N/quic-v1` or `/memory/N`, with an optional
/// trailing `/p2p/<PeerId>`.
fn dialable_multiaddr() -> impl Strategy<Value = Multiaddr> {
    let base = prop_oneof![
        (host(), any::<u16>()).prop_map(|(h, p)| vec![h, Protocol::Tcp(p)]),
        (host(), any::<u16>()).prop_map(|(h, p)| vec![h, Protocol::Udp(p), Protocol::QuicV1]),
        any::<u64>().prop_map(|n| vec![Protocol::Memory(n)]),
    ];
    (base, prop::option::of(peer_id())).prop_map(|(mut parts, peer)| {
        parts.extend(peer.map(Protocol::P2p));
        from_components(parts)
    })
}

/// Any sequence of valid components (the parser does not insist on a dialable order).
fn any_multiaddr() -> impl Strategy<Value = Multiaddr> {
    prop::collection::vec(component(false), 1..=MAX_COMPONENTS).prop_map(from_components)
}

fn from_components(parts: Vec<Protocol>) -> Multiaddr {
    parts.into_iter().fold(Multiaddr::empty(), Multiaddr::with)
}

/// A protocol name `ProtocolId::new` accepts: `/` then printable ASCII, at most 128 bytes.
fn protocol_name() -> impl Strategy<Value = String> {
    prop::string::string_regex(&format!("/[!-~]{{0,{}}}", MAX_PROTOCOL_NAME_LEN - 1)).unwrap()
}

fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Mux frames of one message: `message` cut at arbitrary points (empty chunks included), a
/// valid header on each chunk.
fn mux_frames(id: u32, message: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (message.len() + 1)).collect();
    points.push(0);
    points.push(message.len());
    points.sort_unstable();
    let chunks = points.len() - 1;
    points
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let header = MuxHeader {
                id,
                total_len: (i == 0).then_some(message.len() as u32),
                last: i == chunks - 1,
            };
            let mut frame = Vec::new();
            header.encode(&mut frame);
            frame.extend_from_slice(&message[w[0]..w[1]]);
            frame
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Identity
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(key_config())]

    #[test]
    fn peer_id_text_bytes_and_postcard(p in peer_id()) {
        let text = p.to_string();
        prop_assert!(text.starts_with("12D3KooW"), "{text}");
        prop_assert_eq!(text.parse::<PeerId>().unwrap(), p);

        let bytes = p.to_bytes();
        prop_assert_eq!(bytes.len(), PEER_ID_BYTES_LEN);
        prop_assert_eq!(PeerId::from_bytes(&bytes).unwrap(), p);

        let wire = postcard::to_allocvec(&p).unwrap();
        prop_assert_eq!(&wire[..], &p.public_key_bytes()[..]);
        prop_assert_eq!(postcard::from_bytes::<PeerId>(&wire).unwrap(), p);

        // Human-readable serde (TOML here) uses the text form.
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Doc { peer: PeerId }
        let doc = toml::to_string(&Doc { peer: p }).unwrap();
        prop_assert!(doc.contains(&text));
        prop_assert_eq!(toml::from_str::<Doc>(&doc).unwrap(), Doc { peer: p });
    }

    #[test]
    fn keypair_protobuf_round_trip(k in keypair(), msg in payload(64)) {
        let encoded = k.to_protobuf_encoding();
        prop_assert_eq!(encoded.len(), 68);
        let back = Keypair::from_protobuf_encoding(&encoded).unwrap();
        prop_assert_eq!(back.secret_bytes(), k.secret_bytes());
        prop_assert_eq!(back.peer_id(), k.peer_id());
        prop_assert_eq!(back.public(), k.public());
        // The decoded key signs what the original key's public half verifies.
        prop_assert!(k.public().verify(&msg, &back.sign(&msg)));
        // And the public key bytes survive too.
        prop_assert_eq!(PublicKey::from_bytes(&k.public().to_bytes()).unwrap(), k.public());
    }

    #[test]
    fn keypair_protobuf_rejects_a_mismatched_public_half(k in keypair(), bit in 0usize..256) {
        let mut encoded = k.to_protobuf_encoding();
        encoded[36 + bit / 8] ^= 1 << (bit % 8);
        prop_assert!(Keypair::from_protobuf_encoding(&encoded).is_err());
    }
}

proptest! {
    #[test]
    fn peer_id_bytes_and_postcard_for_any_key_bytes(key in any::<[u8; 32]>()) {
        // Binary forms carry any 32 bytes (points are checked by the handshake, not here).
        let p = PeerId::from_public_key_bytes(key);
        prop_assert_eq!(PeerId::from_bytes(&p.to_bytes()).unwrap(), p);
        let wire = postcard::to_allocvec(&p).unwrap();
        prop_assert_eq!(postcard::from_bytes::<PeerId>(&wire).unwrap(), p);
    }
}

// ---------------------------------------------------------------------------------------------
// Multiaddr
// ---------------------------------------------------------------------------------------------

#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct AddrDoc {
    listen: Vec<Multiaddr>,
}

proptest! {
    #![proptest_config(key_config())]

    #[test]
    fn dialable_multiaddr_round_trip(a in dialable_multiaddr()) {
        let text = a.to_string();
        let back: Multiaddr = text.parse().unwrap();
        prop_assert_eq!(&back, &a);
        prop_assert_eq!(&back.to_string(), &text);
        prop_assert!(a.endpoint().is_ok(), "{a}");
        prop_assert!(a.transport_kind().is_some());
        prop_assert_eq!(a.peer_id(), a.iter().last().and_then(|p| match p {
            Protocol::P2p(id) => Some(*id),
            _ => None,
        }));
        // A trailing slash is accepted and dropped.
        prop_assert_eq!(format!("{text}/").parse::<Multiaddr>().unwrap(), a);
    }

    #[test]
    fn multiaddr_serde_round_trip(list in prop::collection::vec(dialable_multiaddr(), 0..4)) {
        let doc = AddrDoc { listen: list };
        let text = toml::to_string(&doc).unwrap();
        prop_assert_eq!(toml::from_str::<AddrDoc>(&text).unwrap(), doc);
    }
}

proptest! {
    #[test]
    fn any_component_sequence_round_trips(a in any_multiaddr()) {
        let text = a.to_string();
        prop_assert_eq!(text.parse::<Multiaddr>().unwrap(), a);
    }

    #[test]
    fn dns_names_are_normalized_to_lower_case(name in "[a-zA-Z0-9_-]{1,30}(\\.[a-zA-Z0-9_-]{1,30}){0,3}") {
        let a: Multiaddr = format!("/dns4/{name}/tcp/1").parse().unwrap();
        prop_assert_eq!(a.to_string(), format!("/dns4/{}/tcp/1", name.to_ascii_lowercase()));
    }

    #[test]
    fn multiaddr_parser_is_total_on_address_like_text(
        s in "(/(ip4|ip6|dns|dns4|dns6|tcp|udp|quic-v1|quic|memory|p2p|ipfs|x|)(/[0-9a-fA-FK.:_+-]{0,12})?){0,8}/?"
    ) {
        fuzzing::multiaddr_parse(s.as_bytes());
    }

    #[test]
    fn multiaddr_deserialize_rejects_what_parse_rejects(s in "\\PC{0,40}") {
        use serde::de::IntoDeserializer;
        let de: serde::de::value::StrDeserializer<'_, serde::de::value::Error> =
            s.as_str().into_deserializer();
        let via_serde = Multiaddr::deserialize(de).ok();
        prop_assert_eq!(via_serde, s.parse::<Multiaddr>().ok());
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope, frames, handshake payload, mux
// ---------------------------------------------------------------------------------------------

proptest! {
    #[test]
    fn envelope_round_trip(name in protocol_name(), version in any::<u16>(), body in payload(512)) {
        let protocol = ProtocolId::new(name.clone(), version).unwrap();
        let env = Envelope::new(protocol, body.clone());
        let encoded = env.encode();
        prop_assert_eq!(&encoded[..Envelope::encode_header(&env.protocol).len()],
            &Envelope::encode_header(&env.protocol)[..]);

        let back = Envelope::decode(encoded.clone()).unwrap();
        prop_assert_eq!(back.protocol.name(), name.as_str());
        prop_assert_eq!(back.protocol.version(), version);
        prop_assert_eq!(&back.payload[..], &body[..]);
        prop_assert_eq!(&back, &env);

        let r = EnvelopeRef::decode(&encoded).unwrap();
        prop_assert_eq!((r.name, r.version), (name.as_str(), version));
        prop_assert_eq!(&encoded[r.payload_offset..], &body[..]);
    }

    #[test]
    fn protocol_id_rejects_invalid_names(name in "[^/]\\PC{0,20}|/.{0,10}[ \\x00-\\x1f\\x7f-\\x{ff}].{0,10}|/[!-~]{128,140}") {
        prop_assert!(ProtocolId::new(name, 1).is_err());
    }

    #[test]
    fn frame_codec_round_trip_at_any_split(
        payloads in prop::collection::vec(payload(300), 0..8),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let codec = FrameCodec::new(1024);
        let mut wire = BytesMut::new();
        for p in &payloads {
            codec.encode(p, &mut wire).unwrap();
        }
        let wire = wire.freeze();

        // All at once.
        let (frames, rest) = codec.decode_all(&wire).unwrap();
        prop_assert!(rest.is_empty());
        prop_assert_eq!(frames.len(), payloads.len());
        for (f, p) in frames.iter().zip(&payloads) {
            prop_assert_eq!(*f, &p[..]);
        }

        // Fed in pieces cut at arbitrary points.
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(wire.len());
        points.sort_unstable();
        let mut buf = BytesMut::new();
        let mut decoded: Vec<Bytes> = Vec::new();
        let mut from = 0;
        for to in points {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded.len(), payloads.len());
        for (f, p) in decoded.iter().zip(&payloads) {
            prop_assert_eq!(&f[..], &p[..]);
        }
    }

    #[test]
    fn frame_codec_refuses_oversized(len in 1025usize..100_000) {
        let codec = FrameCodec::new(1024);
        prop_assert!(codec.encode_header(len).is_err());
        prop_assert!(codec.decode_header((len as u32).to_be_bytes()).is_err());
        let mut buf = BytesMut::from(&(len as u32).to_be_bytes()[..]);
        prop_assert!(codec.decode(&mut buf).is_err());
    }

    #[test]
    fn handshake_payload_round_trip(
        key in any::<[u8; 32]>(),
        sig in prop::collection::vec(any::<u8>(), 64),
        trailing in payload(16),
    ) {
        let p = HandshakePayload { identity_key: key, signature: sig.try_into().unwrap() };
        let mut encoded = p.encode();
        prop_assert_eq!(HandshakePayload::decode(&encoded).unwrap(), p.clone());
        // Later versions may append fields.
        encoded.extend_from_slice(&trailing);
        prop_assert_eq!(HandshakePayload::decode(&encoded).unwrap(), p);
    }

    #[test]
    fn mux_header_round_trip(
        id in any::<u32>(),
        total_len in prop::option::of(any::<u32>()),
        last in any::<bool>(),
        chunk in payload(64),
    ) {
        let h = MuxHeader { id, total_len, last };
        let mut frame = Vec::new();
        h.encode(&mut frame);
        prop_assert_eq!(frame.len(), h.encoded_len());
        frame.extend_from_slice(&chunk);
        let (back, offset) = MuxHeader::decode(&frame).unwrap();
        prop_assert_eq!(back, h);
        prop_assert_eq!(offset, h.encoded_len());
        prop_assert_eq!(&frame[offset..], &chunk[..]);
    }

    #[test]
    fn reassembler_rebuilds_interleaved_messages(
        messages in prop::collection::vec(
            (payload(2000), prop::collection::vec(any::<usize>(), 0..6)), 1..5),
        first_id in any::<u32>(),
        schedule in prop::collection::vec(any::<prop::sample::Index>(), 0..64),
    ) {
        let frames: Vec<Vec<Vec<u8>>> = messages
            .iter()
            .enumerate()
            .map(|(i, (m, cuts))| mux_frames(first_id.wrapping_add(i as u32), m, cuts))
            .collect();
        let mut next = vec![0usize; frames.len()];
        let mut r = Reassembler::new(&Limits::default());
        let mut schedule = schedule.into_iter();
        let mut completed = 0;
        loop {
            let pending: Vec<usize> =
                (0..frames.len()).filter(|&i| next[i] < frames[i].len()).collect();
            if pending.is_empty() {
                break;
            }
            // The schedule picks which message sends its next chunk; in order once it runs out.
            let i = match schedule.next() {
                Some(ix) => pending[ix.index(pending.len())],
                None => pending[0],
            };
            let frame = &frames[i][next[i]];
            next[i] += 1;
            let out = r.push(frame).unwrap();
            if next[i] == frames[i].len() {
                prop_assert_eq!(out.as_deref(), Some(&messages[i].0[..]));
                completed += 1;
            } else {
                prop_assert_eq!(out, None);
            }
        }
        prop_assert_eq!(completed, messages.len());
        prop_assert_eq!(r.buffered_bytes(), 0);
        prop_assert_eq!(r.partial_messages(), 0);
    }

    #[test]
    fn reassembler_rejects_a_message_longer_than_announced(
        message in payload(200),
        extra in prop::collection::vec(any::<u8>(), 1..20),
    ) {
        let mut r = Reassembler::new(&Limits::default());
        let mut first = Vec::new();
        MuxHeader { id: 1, total_len: Some(message.len() as u32), last: false }.encode(&mut first);
        first.extend_from_slice(&message);
        prop_assert_eq!(r.push(&first).unwrap(), None);
        let mut more = Vec::new();
        MuxHeader { id: 1, total_len: None, last: true }.encode(&mut more);
        more.extend_from_slice(&extra);
        prop_assert!(r.push(&more).is_err());
    }
}

proptest! {
    #![proptest_config(key_config())]

    #[test]
    fn signed_handshake_payload_verifies(k in keypair(), noise_static in any::<[u8; 32]>()) {
        let mut msg = SIGNATURE_DOMAIN.to_vec();
        msg.extend_from_slice(&noise_static);
        let p = HandshakePayload { identity_key: k.public().to_bytes(), signature: k.sign(&msg) };
        let back = HandshakePayload::decode(&p.encode()).unwrap();
        prop_assert_eq!(back.verify(&noise_static).unwrap(), k.peer_id());
        let mut other = noise_static;
        other[0] ^= 1;
        prop_assert!(back.verify(&other).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Totality: every decoder returns on arbitrary bytes
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn decoders_are_total(data in payload(600)) {
        for entry in [
            fuzzing::frame_decode,
            fuzzing::envelope_decode,
            fuzzing::multiaddr_parse,
            fuzzing::peer_id_parse,
            fuzzing::handshake_payload_decode,
            fuzzing::mux_reassemble,
        ] {
            entry(&data);
        }
        let _ = Envelope::decode(Bytes::copy_from_slice(&data));
        let _ = EnvelopeRef::decode(&data);
        let _ = FrameCodec::new(16).decode_all(&data);
        let _ = FrameCodec::new(16).decode(&mut BytesMut::from(&data[..]));
        let _ = MuxHeader::decode(&data);
        let _ = Reassembler::new(&Limits::default()).push(&data);
        let _ = HandshakePayload::decode(&data);
        let _ = PeerId::from_bytes(&data);
        let _ = postcard::from_bytes::<PeerId>(&data);
        let _ = Keypair::from_protobuf_encoding(&data);
        let _ = PublicKey::from_bytes(&data);
        let text = String::from_utf8_lossy(&data);
        let _ = PeerId::from_str(&text);
        let _ = Multiaddr::from_str(&text);
    }

    #[test]
    fn decoders_are_total_on_near_valid_input(
        k in 0usize..4,
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        truncate in any::<prop::sample::Index>(),
    ) {
        // Valid encodings with a few bytes changed and a tail cut off.
        let env = Envelope::new(ProtocolId::new("/ggen/ping", 1).unwrap(), vec![1, 2, 3]).encode();
        let hs = HandshakePayload { identity_key: [7; 32], signature: [9; 64] }.encode();
        let mut mux = Vec::new();
        for (id, total, last, body) in [(1u32, Some(4u32), false, &b"ab"[..]), (1, None, true, b"cd")] {
            let mut f = Vec::new();
            MuxHeader { id, total_len: total, last }.encode(&mut f);
            f.extend_from_slice(body);
            mux.extend_from_slice(&(f.len() as u16).to_be_bytes());
            mux.extend_from_slice(&f);
        }
        let peer = PeerId::from_public_key_bytes([3; 32]).to_bytes().to_vec();
        let (mut data, entry): (Vec<u8>, fn(&[u8])) = match k {
            0 => (env.to_vec(), fuzzing::envelope_decode),
            1 => (hs, fuzzing::handshake_payload_decode),
            2 => (mux, fuzzing::mux_reassemble),
            _ => (peer, fuzzing::peer_id_parse),
        };
        for (at, byte) in mutations {
            let i = at.index(data.len());
            data[i] = byte;
        }
        data.truncate(truncate.index(data.len() + 1));
        entry(&data);
    }
}
