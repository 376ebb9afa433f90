//! The 256-bit keyspace: keys are SHA-256 digests (of a PeerId's bytes, or of a record key),
//! distance is XOR.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::PeerId;

/// A point in the keyspace.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key([u8; 32]);

/// XOR distance between two keys; ordered as a 256-bit big-endian number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance([u8; 32]);

impl Key {
    /// The key of a peer: SHA-256 of its PeerId bytes.
    pub fn from_peer(peer: &PeerId) -> Self {
        Key(Sha256::digest(peer.to_bytes()).into())
    }

    /// The key of a record or provider key: SHA-256 of the bytes.
    pub fn from_record_key(bytes: &[u8]) -> Self {
        Key(Sha256::digest(bytes).into())
    }

    /// A key from its raw 32 bytes.
    pub fn from_raw(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// A key whose distance from `self` falls in bucket `bucket` (that is, shares exactly
    /// `255 - bucket` leading bits with `self`), with the remaining bits from `random`.
    pub fn random_in_bucket(&self, bucket: usize, random: [u8; 32]) -> Key {
        let bucket = bucket.min(255);
        // Distance with its highest set bit at position `bucket` (counting from the least
        // significant bit), random below it.
        let mut d = [0u8; 32];
        let top_byte = 31 - bucket / 8;
        let bit = bucket % 8;
        for (i, b) in d.iter_mut().enumerate() {
            if i > top_byte {
                *b = random[i];
            }
        }
        let below = if bit == 0 {
            0
        } else {
            random[top_byte] & ((1u8 << bit) - 1)
        };
        d[top_byte] = (1u8 << bit) | below;
        let mut k = [0u8; 32];
        for (i, b) in k.iter_mut().enumerate() {
            *b = self.0[i] ^ d[i];
        }
        Key(k)
    }
}

impl Distance {
    /// The bucket this distance falls in: index of the highest set bit (0 ..= 255), or `None`
    /// for distance zero (the key itself).
    pub fn bucket(&self) -> Option<usize> {
        let lz: u32 = {
            let mut n = 0;
            for b in self.0 {
                if b == 0 {
                    n += 8;
                } else {
                    n += b.leading_zeros();
                    break;
                }
            }
            n
        };
        (lz < 256).then(|| 255 - lz as usize)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_random_keys_agree() {
        let k = Key::from_record_key(b"x");
        assert_eq!(k.distance(&k).bucket(), None);
        for bucket in [0usize, 1, 7, 8, 100, 254, 255] {
            for seed in 0..5u8 {
                let r = k.random_in_bucket(bucket, [seed.wrapping_mul(37); 32]);
                assert_eq!(k.distance(&r).bucket(), Some(bucket), "bucket {bucket}");
            }
        }
    }
}
