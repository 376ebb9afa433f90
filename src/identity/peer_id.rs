use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{IdentityError, PublicKey};

/// Identity multihash (code 0x00, length 36) of the protobuf-encoded Ed25519 public key
/// (field 1 KeyType = 1, field 2 Data = 32 bytes).
const MULTIHASH_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// Length of [`PeerId::to_bytes`].
pub const PEER_ID_BYTES_LEN: usize = 38;

/// The identity of a node: derived from its Ed25519 public key.
///
/// Displayed and parsed as `12D3KooW…`. Ordering and hashing follow the key bytes.
///
/// On the binary wire (postcard) a `PeerId` is the 32 raw key bytes. Those bytes are an
/// identifier, not a proof: whether a key with that id exists is established by the transport
/// handshake, so wire decoding does not pay for point decompression. Text parsing
/// ([`FromStr`]) does check that the key is a valid Ed25519 point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; 32]);

impl PeerId {
    /// The `PeerId` for the raw 32-byte Ed25519 public key. The key is not validated.
    pub fn from_public_key_bytes(key: [u8; 32]) -> Self {
        PeerId(key)
    }

    /// The raw 32-byte Ed25519 public key behind this id.
    pub fn public_key_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key, if the bytes are a valid Ed25519 point.
    pub fn public_key(&self) -> Result<PublicKey, IdentityError> {
        PublicKey::from_bytes(&self.0)
    }

    /// The multihash bytes (38 bytes) whose base58 form is the text form. DHT distances are
    /// computed over SHA-256 of these bytes.
    pub fn to_bytes(&self) -> [u8; PEER_ID_BYTES_LEN] {
        let mut out = [0u8; PEER_ID_BYTES_LEN];
        out[..6].copy_from_slice(&MULTIHASH_PREFIX);
        out[6..].copy_from_slice(&self.0);
        out
    }

    /// Parses multihash bytes as produced by [`PeerId::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, &'static str> {
        let key = bytes.strip_prefix(&MULTIHASH_PREFIX[..]).ok_or_else(|| {
            match bytes.first() {
                Some(0x12) => "a SHA-256 multihash peer id (RSA/secp256k1 key); only Ed25519 identities are supported",
                Some(0x00) => "an identity multihash that does not hold an Ed25519 public key",
                _ => "not an identity multihash of an Ed25519 public key",
            }
        })?;
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| "wrong length for an Ed25519 peer id")?;
        Ok(PeerId(key))
    }

    /// A random `PeerId` (its key is a valid point). For tests and simulations.
    pub fn random() -> Self {
        super::Keypair::generate().peer_id()
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.to_bytes()).into_string())
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| IdentityError::InvalidPeerId {
            input: s.chars().take(100).collect(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        // A base58 Ed25519 peer id is 52 characters; refuse long input before decoding it.
        if s.len() > 64 {
            return Err(err("too long for an Ed25519 peer id"));
        }
        let mut buf = [0u8; 64];
        let n = bs58::decode(s)
            .onto(&mut buf[..])
            .map_err(|_| err("not valid base58btc"))?;
        let id = PeerId::from_bytes(&buf[..n]).map_err(err)?;
        id.public_key()
            .map_err(|_| err("the embedded Ed25519 public key is not a valid curve point"))?;
        Ok(id)
    }
}

impl Serialize for PeerId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for PeerId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(deserializer).map(PeerId)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    #[test]
    fn spec_test_vector() {
        // The Ed25519 private key from the libp2p peer-id spec's test vectors; every
        // implementation prints this PeerId for it.
        let hex = "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d\
                   1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let kp = Keypair::from_protobuf_encoding(&bytes).unwrap();
        let id = kp.peer_id();
        assert_eq!(
            id.to_string(),
            "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
        );
        assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        assert_eq!(kp.to_protobuf_encoding(), bytes);
    }

    #[test]
    fn rejects_bad_text_with_reasons() {
        for (input, needle) in [
            ("", "empty"),
            ("0OIl", "base58"),
            (
                "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N",
                "SHA-256 multihash",
            ),
            ("12D3KooW", "Ed25519"),
        ] {
            let e = input.parse::<PeerId>().unwrap_err().to_string();
            assert!(e.contains(needle), "{input}: {e}");
        }
    }
}
