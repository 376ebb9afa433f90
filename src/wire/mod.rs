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
