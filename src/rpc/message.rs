//! The RPC wire format: one [`Frame`] per node message, postcard-encoded.
//!
//! A request names its protocol (name and version) and carries an id chosen by the caller;
//! the response echoes the id. A caller that gives up sends [`Frame::Cancel`] so the serving
//! side stops working on it. Enums only ever gain variants at the end. [`Frame::decode`] is
//! total: it checks the size before decoding and every string against its limit after.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::wire::WireError;

/// Longest protocol name accepted on the wire.
pub const MAX_PROTOCOL_NAME: usize = 128;
/// Longest error message carried in a response (longer ones are cut when sent).
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// A request-response protocol: a name and a version. Two peers talk a protocol only when
/// both name and version match.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolName {
    /// The name, e.g. `/ggen/content`.
    pub name: String,
    /// The version; a server answers `UnsupportedProtocol` for a version it does not serve.
    pub version: u16,
}

impl ProtocolName {
    /// A protocol name with its version.
    pub fn new(name: impl Into<String>, version: u16) -> Self {
        Self {
            name: name.into(),
            version,
        }
    }
}

impl fmt::Display for ProtocolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.name, self.version)
    }
}

/// Why a request was not answered with a response body, as sent by the serving peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The peer does not serve this protocol (name or version).
    UnsupportedProtocol,
    /// The peer is at its limit of concurrent requests (per peer or in total).
    Busy,
    /// The peer's rate limit for us is exhausted.
    RateLimited,
    /// The request was larger than the protocol allows.
    RequestTooLarge,
    /// The handler's response was larger than the protocol allows.
    ResponseTooLarge,
    /// The handler failed; the message says why.
    Handler,
    /// The handler did not answer in time.
    Timeout,
    /// The request could not be decoded by the protocol.
    Malformed,
}

/// An error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Details for a human (at most [`MAX_ERROR_MESSAGE`] bytes).
    pub message: String,
}

/// One RPC message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// A request for `protocol`, answered by a [`Frame::Response`] with the same id.
    Request {
        /// Chosen by the caller, unique among its requests to this peer.
        id: u64,
        /// The protocol the payload belongs to.
        protocol: ProtocolName,
        /// The protocol's request bytes.
        payload: Bytes,
    },
    /// The answer to request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The protocol's response bytes, or why there are none.
        result: Result<Bytes, ErrorFrame>,
    },
    /// The caller no longer wants the answer to request `id`.
    Cancel {
        /// The request's id.
        id: u64,
    },
}

/// The same frame with its payload borrowed from the received bytes (decoded without
/// copying the payload; see [`Frame::decode_bytes`]).
#[derive(Deserialize)]
enum FrameRef<'a> {
    Request {
        id: u64,
        protocol: ProtocolName,
        #[serde(borrow)]
        payload: &'a [u8],
    },
    Response {
        id: u64,
        #[serde(borrow)]
        result: Result<&'a [u8], ErrorFrame>,
    },
    Cancel {
        id: u64,
    },
}

/// An encoded frame in two parts, `head ‖ body`: the body is the payload itself, shared rather
/// than copied, so a large response costs no copy before the transport's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedFrame {
    /// Everything before the payload (tag, id, protocol, length prefix).
    pub head: Bytes,
    /// The payload (empty for frames without one).
    pub body: Bytes,
}

impl EncodedFrame {
    /// Both parts in one buffer (a copy; for tests and tools).
    pub fn to_vec(&self) -> Vec<u8> {
        [&self.head[..], &self.body[..]].concat()
    }

    /// Total length.
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len()
    }

    /// Whether both parts are empty (never true for a real frame).
    pub fn is_empty(&self) -> bool {
        self.head.is_empty() && self.body.is_empty()
    }
}

impl Frame {
    /// The encoding.
    pub fn encode(&self) -> Bytes {
        // Encoding plain data into a Vec cannot fail.
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    /// The encoding as `head ‖ body`, where `body` shares the payload's buffer. The payload
    /// is the frame's last field and postcard writes bytes as a varint length then the bytes,
    /// so the head is the frame encoded with an empty payload, minus that empty length,
    /// plus the real length.
    pub fn encode_parts(&self) -> EncodedFrame {
        let (empty, body) = match self {
            Frame::Request {
                id,
                protocol,
                payload,
            } => (
                Frame::Request {
                    id: *id,
                    protocol: protocol.clone(),
                    payload: Bytes::new(),
                },
                payload.clone(),
            ),
            Frame::Response {
                id,
                result: Ok(payload),
            } => (
                Frame::Response {
                    id: *id,
                    result: Ok(Bytes::new()),
                },
                payload.clone(),
            ),
            other => {
                return EncodedFrame {
                    head: other.encode(),
                    body: Bytes::new(),
                };
            }
        };
        let mut head = postcard::to_stdvec(&empty).unwrap_or_default();
        // The empty payload's length, a single 0 byte, ends the encoding.
        head.pop();
        let mut len = body.len() as u64;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                head.push(byte);
                break;
            }
            head.push(byte | 0x80);
        }
        EncodedFrame {
            head: Bytes::from(head),
            body,
        }
    }

    /// Like [`Frame::decode`], but the payload is a slice of `bytes` rather than a copy.
    pub fn decode_bytes(bytes: &Bytes, max: usize) -> Result<Self, WireError> {
        if bytes.len() > max {
            return Err(WireError::FrameTooLarge {
                len: bytes.len() as u64,
                max: max as u64,
            });
        }
        let frame: FrameRef<'_> = postcard::from_bytes(bytes)
            .map_err(|_| WireError::malformed("rpc frame", "not a valid encoding"))?;
        let frame = match frame {
            FrameRef::Request {
                id,
                protocol,
                payload,
            } => Frame::Request {
                id,
                protocol,
                payload: bytes.slice_ref(payload),
            },
            FrameRef::Response { id, result } => Frame::Response {
                id,
                result: result.map(|p| bytes.slice_ref(p)),
            },
            FrameRef::Cancel { id } => Frame::Cancel { id },
        };
        Self::check(frame)
    }

    /// Decodes one frame of at most `max` bytes; never panics, never allocates past `max`.
    pub fn decode(bytes: &[u8], max: usize) -> Result<Self, WireError> {
        let frame: Frame = crate::wire::decode_bounded(bytes, max, "rpc frame")?;
        Self::check(frame)
    }

    fn check(frame: Frame) -> Result<Self, WireError> {
        match &frame {
            Frame::Request { protocol, .. } if protocol.name.len() > MAX_PROTOCOL_NAME => {
                Err(WireError::malformed("rpc frame", "protocol name too long"))
            }
            Frame::Response { result: Err(e), .. } if e.message.len() > MAX_ERROR_MESSAGE => {
                Err(WireError::malformed("rpc frame", "error message too long"))
            }
            _ => Ok(frame),
        }
    }
}

/// Cuts `message` to at most [`MAX_ERROR_MESSAGE`] bytes on a character boundary.
pub(crate) fn clip_message(mut message: String) -> String {
    if message.len() > MAX_ERROR_MESSAGE {
        let mut end = MAX_ERROR_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let frames = [
            Frame::Request {
                id: 7,
                protocol: ProtocolName::new("/ggen/echo", 1),
                payload: Bytes::from_static(b"hello"),
            },
            Frame::Response {
                id: 7,
                result: Ok(Bytes::from_static(b"hello")),
            },
            Frame::Response {
                id: 8,
                result: Err(ErrorFrame {
                    kind: ErrorKind::Busy,
                    message: "at 32 requests".into(),
                }),
            },
            Frame::Cancel { id: 9 },
        ];
        for f in frames {
            let bytes = f.encode();
            assert_eq!(Frame::decode(&bytes, 1024).unwrap(), f);
            assert_eq!(Frame::decode_bytes(&bytes, 1024).unwrap(), f);
            assert!(Frame::decode(&bytes, bytes.len() - 1).is_err());
            assert!(Frame::decode_bytes(&bytes, bytes.len() - 1).is_err());
            assert_eq!(f.encode_parts().to_vec(), bytes.to_vec());
        }
        // Length prefixes of every width.
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 1 << 20] {
            let f = Frame::Response {
                id: 300,
                result: Ok(Bytes::from(vec![9u8; len])),
            };
            let parts = f.encode_parts();
            assert_eq!(parts.to_vec(), f.encode().to_vec(), "len {len}");
            assert_eq!(parts.body.len(), len);
            let whole = Bytes::from(parts.to_vec());
            let back = Frame::decode_bytes(&whole, 2 << 20).unwrap();
            assert_eq!(back, f);
            // The payload is a view of the received buffer, not a copy.
            if let Frame::Response { result: Ok(p), .. } = back {
                if len > 0 {
                    assert_eq!(p.as_ptr(), whole[whole.len() - len..].as_ptr());
                }
            }
        }
        let long = Frame::Request {
            id: 1,
            protocol: ProtocolName::new("x".repeat(MAX_PROTOCOL_NAME + 1), 1),
            payload: Bytes::new(),
        };
        assert!(Frame::decode(&long.encode(), 4096).is_err());
        assert_eq!(clip_message("é".repeat(1000)).len(), MAX_ERROR_MESSAGE);
    }
}
