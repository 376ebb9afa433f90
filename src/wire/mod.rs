//! Wire formats shared by every transport: length-prefixed frames, the message envelope
//! (protocol id + version + payload), and the limits every decoder checks.
//!
//! This module owns byte layouts only. Every decoder here is total: it returns `Result`, never
//! panics, and checks a length against its limit before allocating for it. The decoders are
//! public so that fuzzing harnesses outside this crate can call them directly.

mod envelope;
mod error;
mod frame;
mod limits;

pub use envelope::{Envelope, EnvelopeRef, MAX_PROTOCOL_NAME_LEN, ProtocolId};
pub use error::WireError;
pub use frame::{FRAME_HEADER_LEN, FrameCodec};
pub use limits::Limits;

/// Decodes a postcard message from a peer: refuses it unencoded if it is larger than `max`
/// bytes, then decodes (`what` names it in the error). Postcard never allocates more than the
/// input could fill; the caller checks list lengths against its own limits afterwards.
pub(crate) fn decode_bounded<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max: usize,
    what: &'static str,
) -> Result<T, WireError> {
    if bytes.len() > max {
        return Err(WireError::FrameTooLarge {
            len: bytes.len() as u64,
            max: max as u64,
        });
    }
    postcard::from_bytes(bytes).map_err(|_| WireError::malformed(what, "not a valid encoding"))
}
