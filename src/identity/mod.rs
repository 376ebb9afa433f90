//! Node identity: Ed25519 keypairs, the `PeerId` derived from them, and the identity file.
//!
//! This module owns everything about *who* a node is. It does not touch the network: the
//! transports (`crate::transport`) use these keys to prove identity during handshakes.
//!
//! A `PeerId` is written the way the wider peer-to-peer ecosystem writes Ed25519 peer ids
//! (`12D3KooW…`): base58btc of the identity multihash of the protobuf-encoded public key.
//! The same key therefore prints the same id here as in other tools.

mod error;
mod file;
mod keypair;
mod peer_id;

pub use error::IdentityError;
pub use file::{load_identity, load_or_create_identity, save_identity};
pub use keypair::{Keypair, PublicKey, SIGNATURE_LEN};
pub use peer_id::{PEER_ID_BYTES_LEN, PeerId};
