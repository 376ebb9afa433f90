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
