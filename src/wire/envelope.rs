use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::WireError;

/// Longest protocol name accepted, in bytes.
pub const MAX_PROTOCOL_NAME_LEN: usize = 128;

/// Names a protocol carried over a connection: a path-like name (`/ggen/kad`) and a version.
///
/// Two nodes talk a protocol only if both name and version match; a node may register several
/// versions of one name side by side.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolId {
    name: Cow<'static, str>,
    version: u16,
}

impl ProtocolId {
    /// A protocol id from a static name. Fails if the name is empty, does not start with `/`,
    /// is longer than [`MAX_PROTOCOL_NAME_LEN`] or holds non-printable or non-ASCII characters.
    pub fn new(name: impl Into<Cow<'static, str>>, version: u16) -> Result<Self, WireError> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Self { name, version })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version.
    pub fn version(&self) -> u16 {
        self.version
    }
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl fmt::Debug for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProtocolId({self})")
    }
}

fn validate_name(name: &str) -> Result<(), WireError> {
    if name.len() > MAX_PROTOCOL_NAME_LEN {
        return Err(WireError::malformed("protocol id", "name too long"));
    }
    if !name.starts_with('/') {
        return Err(WireError::malformed(
            "protocol id",
            "name must start with `/`",
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WireError::malformed(
            "protocol id",
            "name must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// A message on the wire: which protocol it belongs to, and the protocol's payload.
///
/// Layout: a postcard-encoded header `(name: str, version: u16)` followed by the payload bytes,
/// which run to the end of the message. The payload is never copied on decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The protocol.
    pub protocol: ProtocolId,
    /// The protocol's bytes.
    pub payload: Bytes,
}

/// A decoded envelope that borrows from the message bytes (no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeRef<'a> {
    /// Protocol name.
    pub name: &'a str,
    /// Protocol version.
    pub version: u16,
    /// Offset of the payload in the message.
    pub payload_offset: usize,
}

impl<'a> EnvelopeRef<'a> {
    /// Decodes the header of `message`. Total: never panics, never allocates.
    pub fn decode(message: &'a [u8]) -> Result<Self, WireError> {
        let ((name, version), rest): ((&str, u16), &[u8]) = postcard::take_from_bytes(message)
            .map_err(|_| WireError::malformed("envelope", "bad header"))?;
        validate_name(name)?;
        Ok(Self {
            name,
            version,
            payload_offset: message.len() - rest.len(),
        })
    }
}

impl Envelope {
    /// Builds an envelope.
    pub fn new(protocol: ProtocolId, payload: impl Into<Bytes>) -> Self {
        Self {
            protocol,
            payload: payload.into(),
        }
    }

    /// The encoded header alone (the payload follows it on the wire).
    pub fn encode_header(protocol: &ProtocolId) -> Bytes {
        let mut buf = BytesMut::with_capacity(protocol.name.len() + 6);
        let header = (protocol.name(), protocol.version());
        // Serializing a str and a u16 into a growable buffer cannot fail.
        if let Ok(v) = postcard::to_extend(&header, Vec::with_capacity(protocol.name.len() + 6)) {
            buf.put_slice(&v);
        }
        buf.freeze()
    }

    /// Header and payload in one buffer.
    pub fn encode(&self) -> Bytes {
        let header = Self::encode_header(&self.protocol);
        let mut buf = BytesMut::with_capacity(header.len() + self.payload.len());
        buf.put_slice(&header);
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    /// Decodes a whole message; the payload shares `message`'s memory.
    pub fn decode(message: Bytes) -> Result<Self, WireError> {
        let r = EnvelopeRef::decode(&message)?;
        let protocol = ProtocolId {
            name: Cow::Owned(r.name.to_owned()),
            version: r.version,
        };
        Ok(Self {
            protocol,
            payload: message.slice(r.payload_offset..),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_names() {
        let p = ProtocolId::new("/ggen/ping", 1).unwrap();
        let e = Envelope::new(p.clone(), Bytes::from_static(b"abc"));
        let d = Envelope::decode(e.encode()).unwrap();
        assert_eq!(d, e);
        assert!(ProtocolId::new("ping", 1).is_err());
        assert!(ProtocolId::new("/a b", 1).is_err());
        assert!(Envelope::decode(Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
    }
}
