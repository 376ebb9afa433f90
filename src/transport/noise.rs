//! The Noise XX handshake that authenticates stream transports (TCP, memory), and the
//! encrypted frame layer it produces.
//!
//! Pattern `Noise_XX_25519_ChaChaPoly_SHA256`, prologue [`PROLOGUE`]. Handshake messages and
//! transport frames are both prefixed by a 2-byte big-endian length, so no frame exceeds
//! 65 535 bytes. Message 1 carries no identity. In messages 2 (responder) and 3 (initiator)
//! each side sends a [`HandshakePayload`]: its Ed25519 public key and a signature over
//! [`SIGNATURE_DOMAIN`] ‖ its Noise static public key. The receiver verifies the signature
//! against the static key the Noise handshake proved, which binds the Ed25519 identity to
//! this session.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::TransportError;
use crate::identity::{Keypair, PeerId, PublicKey, SIGNATURE_LEN};
use crate::wire::{Limits, WireError};

/// Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Prologue mixed into the handshake: names our protocol and its version. Peers speaking a
/// different version fail the handshake instead of misreading each other.
pub const PROLOGUE: &[u8] = b"/ggen-p2p/noise/1.0.0";
/// Prefix of the message whose signature binds an Ed25519 identity to a Noise static key.
pub const SIGNATURE_DOMAIN: &[u8] = b"ggen-p2p-noise-static-key:";
/// Largest Noise message (the spec's limit).
pub const MAX_NOISE_MESSAGE: usize = 65_535;
/// Authentication tag added to every encrypted frame.
pub const TAG_LEN: usize = 16;
/// Largest plaintext one transport frame carries.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_LEN;

/// Reader half of a byte stream.
pub type BoxReader = Box<dyn AsyncRead + Send + Unpin>;
/// Writer half of a byte stream.
pub type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

/// The identity payload of handshake messages 2 and 3.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakePayload {
    /// The sender's Ed25519 public key.
    pub identity_key: [u8; 32],
    /// Signature by that key over [`SIGNATURE_DOMAIN`] ‖ the sender's Noise static key.
    pub signature: [u8; SIGNATURE_LEN],
}

#[derive(Serialize, Deserialize)]
struct PayloadWire<'a> {
    identity_key: &'a [u8],
    signature: &'a [u8],
}

impl HandshakePayload {
    /// Encodes with postcard.
    pub fn encode(&self) -> Vec<u8> {
        let wire = PayloadWire {
            identity_key: &self.identity_key,
            signature: &self.signature,
        };
        postcard::to_allocvec(&wire).unwrap_or_default()
    }

    /// Decodes; total. Trailing bytes are ignored so later versions can append fields.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (wire, _rest): (PayloadWire<'_>, _) = postcard::take_from_bytes(bytes)
            .map_err(|_| WireError::malformed("handshake payload", "not a valid encoding"))?;
        let identity_key = wire.identity_key.try_into().map_err(|_| {
            WireError::malformed("handshake payload", "identity key is not 32 bytes")
        })?;
        let signature = wire
            .signature
            .try_into()
            .map_err(|_| WireError::malformed("handshake payload", "signature is not 64 bytes"))?;
        Ok(Self {
            identity_key,
            signature,
        })
    }

    /// Checks the signature over `noise_static` and returns the sender's `PeerId`.
    pub fn verify(&self, noise_static: &[u8]) -> Result<PeerId, TransportError> {
        let key = PublicKey::from_bytes(&self.identity_key).map_err(|_| {
            TransportError::InvalidPayload(WireError::malformed(
                "handshake payload",
                "identity key is not a valid Ed25519 point",
            ))
        })?;
        if !key.verify(&signed_message(noise_static), &self.signature) {
            return Err(TransportError::BadIdentitySignature(key.peer_id()));
        }
        Ok(key.peer_id())
    }
}

fn signed_message(noise_static: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + noise_static.len());
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(noise_static);
    m
}

/// A node's Noise credentials: a static X25519 key generated for this process, and the
/// Ed25519 signature binding it to the node identity (computed once, sent in every handshake).
pub struct NoiseIdentity {
    keypair: Keypair,
    static_private: Vec<u8>,
    payload: Vec<u8>,
}

impl std::fmt::Debug for NoiseIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseIdentity")
            .field("peer_id", &self.keypair.peer_id())
            .finish_non_exhaustive()
    }
}

fn noise_error(e: snow::Error) -> TransportError {
    TransportError::Handshake(format!("noise: {e}"))
}

fn params() -> snow::params::NoiseParams {
    // A constant, valid pattern string; parsing it cannot fail.
    NOISE_PARAMS
        .parse()
        .unwrap_or_else(|_| unreachable!("NOISE_PARAMS is a valid Noise pattern"))
}

impl NoiseIdentity {
    /// Generates a static key for `keypair` and signs it.
    pub fn new(keypair: &Keypair) -> Result<Self, TransportError> {
        let kp = snow::Builder::new(params())
            .generate_keypair()
            .map_err(noise_error)?;
        let sig = keypair.sign(&signed_message(&kp.public));
        let payload = HandshakePayload {
            identity_key: keypair.public().to_bytes(),
            signature: sig,
        }
        .encode();
        Ok(Self {
            keypair: keypair.clone(),
            static_private: kp.private,
            payload,
        })
    }

    /// Our `PeerId`.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.peer_id()
    }
}

/// Which side of the handshake we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The dialer: sends message 1 and 3.
    Initiator,
    /// The listener: sends message 2.
    Responder,
}

/// An established Noise session over a byte stream.
pub struct SecureStream {
    pub(crate) reader: SecureReader,
    pub(crate) writer: SecureWriter,
    /// The authenticated remote identity.
    pub remote_peer: PeerId,
    /// The Noise handshake hash (identical on both ends).
    pub handshake_hash: [u8; 32],
}

impl std::fmt::Debug for SecureStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStream")
            .field("remote_peer", &self.remote_peer)
            .finish_non_exhaustive()
    }
}

/// Receiving half of a [`SecureStream`].
pub struct SecureReader {
    io: BoxReader,
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
    /// Ciphertext of the frame being read: reused while frames keep coming, released when
    /// the stream goes idle.
    cipher: Vec<u8>,
}

/// Sending half of a [`SecureStream`].
pub struct SecureWriter {
    pub(crate) io: BoxWriter,
    state: Arc<snow::StatelessTransportState>,
    nonce: u64,
}

impl SecureStream {
    /// Encrypts `plaintext` (at most [`MAX_FRAME_PLAINTEXT`] bytes) as one frame and writes it.
    pub async fn write_frame(&mut self, plaintext: &[u8]) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN + 2);
        self.writer.encrypt_frame(plaintext, &mut buf)?;
        self.writer.io.write_all(&buf).await?;
        self.writer.io.flush().await
    }

    /// Reads and decrypts one frame.
    pub async fn read_frame(&mut self) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.reader.read_frame_into(&mut out).await?;
        Ok(out)
    }

    /// Writes raw bytes, bypassing encryption. For tests that play a hostile peer.
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.io.write_all(bytes).await?;
        self.writer.io.flush().await
    }
}

impl SecureWriter {
    /// Appends `[len][ciphertext]` of `plaintext` to `out`.
    pub(crate) fn encrypt_frame(
        &mut self,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let len = plaintext.len() + TAG_LEN;
        if len > MAX_NOISE_MESSAGE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "frame plaintext exceeds the Noise limit",
            ));
        }
        let start = out.len();
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.resize(start + 2 + len, 0);
        let n = self
            .state
            .write_message(self.nonce, plaintext, &mut out[start + 2..])
            .map_err(|e| std::io::Error::other(format!("noise encrypt: {e}")))?;
        debug_assert_eq!(n, len);
        self.nonce += 1;
        Ok(())
    }
}

impl SecureReader {
    /// Reads the 2-byte length of the next frame. If no byte is ready, the ciphertext buffer
    /// and `out` are released before waiting, so an idle connection holds neither.
    async fn read_frame_len(&mut self, out: &mut Vec<u8>) -> std::io::Result<usize> {
        use std::task::Poll;
        let mut len = [0u8; 2];
        let mut filled = 0;
        let (io, cipher) = (&mut self.io, &mut self.cipher);
        std::future::poll_fn(|cx| {
            loop {
                let mut rb = tokio::io::ReadBuf::new(&mut len[filled..]);
                match std::pin::Pin::new(&mut *io).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                        return Poll::Ready(Err(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    Poll::Ready(Ok(())) => {
                        filled += rb.filled().len();
                        if filled == len.len() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {
                        if cipher.capacity() != 0 {
                            *cipher = Vec::new();
                            *out = Vec::new();
                        }
                        return Poll::Pending;
                    }
                }
            }
        })
        .await?;
        Ok(u16::from_be_bytes(len) as usize)
    }

    /// Reads one frame and decrypts it into `out` (replacing its contents). Buffers are reused
    /// from frame to frame while data keeps arriving.
    pub(crate) async fn read_frame_into(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let len = self.read_frame_len(out).await?;
        if len < TAG_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "noise frame shorter than its authentication tag",
            ));
        }
        // `len` ≤ 65 535 by construction: the 2-byte prefix is the limit. `resize` zeroes only
        // growth, so a reused buffer costs no memset.
        self.cipher.resize(len, 0);
        self.io.read_exact(&mut self.cipher).await?;
        // With `out` at least as long as the ciphertext, snow's ring backend decrypts in place
        // in `out` instead of copying the ciphertext to a temporary first.
        out.resize(len, 0);
        let n = self
            .state
            .read_message(self.nonce, &self.cipher, out)
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "noise frame failed to decrypt",
                )
            })?;
        out.truncate(n);
        self.nonce += 1;
        Ok(())
    }
}

async fn send_handshake_message(w: &mut BoxWriter, msg: &[u8]) -> Result<(), TransportError> {
    let mut buf = Vec::with_capacity(msg.len() + 2);
    buf.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    buf.extend_from_slice(msg);
    w.write_all(&buf)
        .await
        .map_err(|e| TransportError::io("sending handshake", e))?;
    w.flush()
        .await
        .map_err(|e| TransportError::io("sending handshake", e))
}

async fn recv_handshake_message(
    r: &mut BoxReader,
    limits: &Limits,
) -> Result<Vec<u8>, TransportError> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len)
        .await
        .map_err(|e| TransportError::io("reading handshake", e))?;
    let len = u16::from_be_bytes(len) as usize;
    if len > limits.max_handshake_message {
        return Err(TransportError::InvalidPayload(WireError::FrameTooLarge {
            len: len as u64,
            max: limits.max_handshake_message as u64,
        }));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)
        .await
        .map_err(|e| TransportError::io("reading handshake", e))?;
    Ok(buf)
}

/// Runs the XX handshake over `reader`/`writer`. With `expected`, fails with
/// [`TransportError::PeerIdMismatch`] if the remote proves a different identity.
/// The caller bounds the time it may take.
pub async fn handshake(
    mut reader: BoxReader,
    mut writer: BoxWriter,
    identity: &NoiseIdentity,
    role: Role,
    expected: Option<PeerId>,
    limits: &Limits,
) -> Result<SecureStream, TransportError> {
    let builder = snow::Builder::new(params())
        .prologue(PROLOGUE)
        .map_err(noise_error)?
        .local_private_key(&identity.static_private)
        .map_err(noise_error)?;
    let mut hs = match role {
        Role::Initiator => builder.build_initiator(),
        Role::Responder => builder.build_responder(),
    }
    .map_err(noise_error)?;
    let mut out = vec![0u8; 1024];
    let mut payload = vec![0u8; 1024];

    let check_remote =
        |hs: &snow::HandshakeState, payload: &[u8]| -> Result<PeerId, TransportError> {
            let remote_static = hs
                .get_remote_static()
                .ok_or_else(|| TransportError::Handshake("remote sent no static key".into()))?;
            let peer = HandshakePayload::decode(payload)?.verify(remote_static)?;
            if peer == identity.peer_id() {
                return Err(TransportError::SelfDial);
            }
            if let Some(expected) = expected {
                if expected != peer {
                    return Err(TransportError::PeerIdMismatch {
                        expected,
                        actual: peer,
                    });
                }
            }
            Ok(peer)
        };

    let remote = match role {
        Role::Initiator => {
            let n = hs.write_message(&[], &mut out).map_err(noise_error)?;
            send_handshake_message(&mut writer, &out[..n]).await?;
            let msg = recv_handshake_message(&mut reader, limits).await?;
            let n = hs.read_message(&msg, &mut payload).map_err(noise_error)?;
            let remote = check_remote(&hs, &payload[..n])?;
            let n = hs
                .write_message(&identity.payload, &mut out)
                .map_err(noise_error)?;
            send_handshake_message(&mut writer, &out[..n]).await?;
            remote
        }
        Role::Responder => {
            let msg = recv_handshake_message(&mut reader, limits).await?;
            hs.read_message(&msg, &mut payload).map_err(noise_error)?;
            let n = hs
                .write_message(&identity.payload, &mut out)
                .map_err(noise_error)?;
            send_handshake_message(&mut writer, &out[..n]).await?;
            let msg = recv_handshake_message(&mut reader, limits).await?;
            let n = hs.read_message(&msg, &mut payload).map_err(noise_error)?;
            check_remote(&hs, &payload[..n])?
        }
    };
    let mut handshake_hash = [0u8; 32];
    let h = hs.get_handshake_hash();
    let l = h.len().min(32);
    handshake_hash[..l].copy_from_slice(&h[..l]);
    let state = Arc::new(hs.into_stateless_transport_mode().map_err(noise_error)?);
    Ok(SecureStream {
        reader: SecureReader {
            io: reader,
            state: state.clone(),
            nonce: 0,
            cipher: Vec::new(),
        },
        writer: SecureWriter {
            io: writer,
            state,
            nonce: 0,
        },
        remote_peer: remote,
        handshake_hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> ((BoxReader, BoxWriter), (BoxReader, BoxWriter)) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        ((Box::new(ar), Box::new(aw)), (Box::new(br), Box::new(bw)))
    }

    #[tokio::test]
    async fn both_sides_learn_each_other_and_frames_flow() {
        let (ka, kb) = (Keypair::generate(), Keypair::generate());
        let (ia, ib) = (
            NoiseIdentity::new(&ka).unwrap(),
            NoiseIdentity::new(&kb).unwrap(),
        );
        let ((ar, aw), (br, bw)) = pipe();
        let limits = Limits::default();
        let (a, b) = tokio::join!(
            handshake(ar, aw, &ia, Role::Initiator, Some(kb.peer_id()), &limits),
            handshake(br, bw, &ib, Role::Responder, None, &limits),
        );
        let (mut a, mut b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.remote_peer, kb.peer_id());
        assert_eq!(b.remote_peer, ka.peer_id());
        assert_eq!(a.handshake_hash, b.handshake_hash);
        a.write_frame(b"hello").await.unwrap();
        assert_eq!(b.read_frame().await.unwrap(), b"hello");
        b.write_frame(b"back").await.unwrap();
        assert_eq!(a.read_frame().await.unwrap(), b"back");
    }

    #[tokio::test]
    async fn wrong_expected_peer_is_an_identity_error() {
        let (ka, kb) = (Keypair::generate(), Keypair::generate());
        let (ia, ib) = (
            NoiseIdentity::new(&ka).unwrap(),
            NoiseIdentity::new(&kb).unwrap(),
        );
        let ((ar, aw), (br, bw)) = pipe();
        let limits = Limits::default();
        let other = PeerId::random();
        let (a, _b) = tokio::join!(
            handshake(ar, aw, &ia, Role::Initiator, Some(other), &limits),
            handshake(br, bw, &ib, Role::Responder, None, &limits),
        );
        match a.unwrap_err() {
            TransportError::PeerIdMismatch { expected, actual } => {
                assert_eq!(expected, other);
                assert_eq!(actual, kb.peer_id());
            }
            e => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn payload_decode_is_total_and_checks_lengths() {
        let p = HandshakePayload {
            identity_key: [7; 32],
            signature: [9; 64],
        };
        assert_eq!(HandshakePayload::decode(&p.encode()).unwrap(), p);
        assert!(HandshakePayload::decode(&[]).is_err());
        assert!(HandshakePayload::decode(&[3, 1, 2, 3, 0]).is_err());
    }
}
