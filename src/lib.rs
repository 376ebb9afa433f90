//! # ggen-p2p
//!
//! A decentralized package registry for ggen and the peer-to-peer stack under it, written
//! without libp2p: authenticated TCP (Noise XX) and QUIC (TLS 1.3, raw Ed25519 keys)
//! transports, a per-node event loop, and (in later layers) a Kademlia DHT, a gossip mesh,
//! request-response RPC and the registry facade.
//!
//! Layers, bottom up (see `DESIGN.md`): [`identity`] and [`address`], [`wire`],
//! [`transport`], [`node`]; then [`kademlia`], [`gossip`], [`rpc`], [`discovery`],
//! [`registry`] and the simulator [`sim`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod discovery;
pub mod fuzzing;
pub mod gossip;
pub mod identity;
pub mod kademlia;
pub mod node;
pub mod registry;
pub mod rpc;
pub mod sim;
pub mod transport;
pub mod wire;

pub use address::{Multiaddr, MultiaddrError, Protocol as AddrProtocol};
pub use identity::{Keypair, PeerId, PublicKey};
pub use node::{Node, NodeConfig, NodeError, NodeEvent, NodeHandle};
pub use wire::{Envelope, ProtocolId};
