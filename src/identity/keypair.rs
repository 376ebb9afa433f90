use std::fmt;

use ed25519_dalek::Signer;
use rand::RngCore;

use super::{IdentityError, PeerId};

/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// Protobuf prefix of an Ed25519 private key in the libp2p key encoding:
/// field 1 (KeyType) = 1 (Ed25519), field 2 (Data) = 64 bytes (secret ‖ public).
const PRIVATE_KEY_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x40];

/// An Ed25519 keypair: the identity of a node.
#[derive(Clone)]
pub struct Keypair {
    signing: ed25519_dalek::SigningKey,
}

impl Keypair {
    /// Generates a new keypair from the operating system's random source.
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rng())
    }

    /// Generates a new keypair from the given random source (deterministic under a seeded RNG,
    /// which the simulator and tests rely on).
    pub fn generate_with<R: RngCore + ?Sized>(rng: &mut R) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_secret_bytes(seed)
    }

    /// Builds the keypair whose 32-byte secret seed is `secret`.
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte secret seed. Keep it secret.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// The `PeerId` of this keypair.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(msg).to_bytes()
    }

    /// The private key in the protobuf encoding used across the peer-to-peer ecosystem
    /// (68 bytes: a 4-byte header, the 32-byte secret, the 32-byte public key).
    pub fn to_protobuf_encoding(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(68);
        out.extend_from_slice(&PRIVATE_KEY_PREFIX);
        out.extend_from_slice(&self.signing.to_bytes());
        out.extend_from_slice(self.signing.verifying_key().as_bytes());
        out
    }

    /// Parses [`Keypair::to_protobuf_encoding`]. The embedded public key must match the secret.
    pub fn from_protobuf_encoding(bytes: &[u8]) -> Result<Self, &'static str> {
        let body = bytes
            .strip_prefix(&PRIVATE_KEY_PREFIX[..])
            .ok_or("not an Ed25519 private key (expected protobuf header 08 01 12 40)")?;
        if body.len() != 64 {
            return Err("expected 64 bytes of key material after the header");
        }
        let (secret, public) = body.split_at(32);
        let mut seed = [0u8; 32];
        seed.copy_from_slice(secret);
        let kp = Self::from_secret_bytes(seed);
        if kp.signing.verifying_key().as_bytes()[..] != public[..] {
            return Err("public key does not match the secret key");
        }
        Ok(kp)
    }

    /// The private key as PKCS#8 v1 DER (RFC 8410), the form TLS libraries load.
    pub(crate) fn to_pkcs8_der(&self) -> Vec<u8> {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        // Encoding a valid in-memory key cannot fail; fall back to the fixed RFC 8410 layout
        // rather than panic should the encoder ever change its mind.
        match self.signing.to_pkcs8_der() {
            Ok(doc) => doc.as_bytes().to_vec(),
            Err(_) => {
                let mut v = vec![
                    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04,
                    0x22, 0x04, 0x20,
                ];
                v.extend_from_slice(&self.signing.to_bytes());
                v
            }
        }
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl PublicKey {
    /// Parses a 32-byte compressed Ed25519 point; fails if it is not a valid point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| IdentityError::InvalidPublicKey("expected 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&arr)
            .map(PublicKey)
            .map_err(|_| IdentityError::InvalidPublicKey("not a valid Ed25519 point"))
    }

    /// The 32-byte compressed point.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The `PeerId` of this key.
    pub fn peer_id(&self) -> PeerId {
        PeerId::from_public_key_bytes(self.0.to_bytes())
    }

    /// Verifies `signature` over `msg` (strict verification: rejects malleable signatures and
    /// small-order keys).
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(msg, &sig).is_ok()
    }

    /// The key as a DER `SubjectPublicKeyInfo` (RFC 8410), as carried by TLS raw public keys.
    pub(crate) fn to_spki_der(self) -> Vec<u8> {
        use ed25519_dalek::pkcs8::EncodePublicKey;
        match self.0.to_public_key_der() {
            Ok(doc) => doc.as_bytes().to_vec(),
            Err(_) => {
                let mut v = vec![
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ];
                v.extend_from_slice(self.0.as_bytes());
                v
            }
        }
    }

    /// Parses a DER `SubjectPublicKeyInfo` holding an Ed25519 key.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, IdentityError> {
        use ed25519_dalek::pkcs8::DecodePublicKey;
        ed25519_dalek::VerifyingKey::from_public_key_der(der)
            .map(PublicKey)
            .map_err(|_| IdentityError::InvalidPublicKey("not an Ed25519 SubjectPublicKeyInfo"))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.peer_id())
    }
}
