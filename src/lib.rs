//! # ggen-p2p
//!
//! A decentralized package registry for ggen and the peer-to-peer stack under it, written
//! without libp2p: authenticated TCP (Noise XX) and QUIC (TLS 1.3, raw Ed25519 keys)
//! transports, a per-node event loop, and (in later layers) a Kademlia DHT, a gossip mesh,
//! request-response RPC and the registry facade.
//!
//! Layers, bottom up (see `DESIGN.md`): [`identity`] and [`address`], [`wire`],
//! [`transport`], [`node`]; then [`kademlia`], [`gossip`], [`rpc`], [`discovery`],
//! [`registry`] and the simulator [`sim`]; [`gpack`] reads, packs and unpacks packages, and
//! [`metrics`] holds each node's Prometheus instruments. [`daemon`] is the local control
//! API of `ggen p2p start` and its client.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod address;
pub mod daemon;
pub mod discovery;
pub mod fuzzing;
pub mod gossip;
/// Gpacks on disk: the `gpack.toml` manifest, deterministic packing and safe unpacking.
pub mod gpack;
pub mod identity;
pub mod kademlia;
pub mod metrics;
pub mod node;
pub mod registry;
pub mod rpc;
pub mod sim;
pub mod transport;
pub mod wire;

pub use address::{Multiaddr, MultiaddrError, Protocol as AddrProtocol};
pub use identity::{Keypair, PeerId, PublicKey};
pub use metrics::Metrics;
pub use node::{Node, NodeConfig, NodeError, NodeEvent, NodeHandle};
pub use wire::{Envelope, ProtocolId};

pub use discovery::DiscoveryMethod;
pub use registry::{
    BootstrapConfig, BootstrapNode, DHTConfig, GossipsubConfig, KeyType, NetworkConfig,
    NetworkStats, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, PackageMetadata,
    PackageUpdate, Protocol, Query, Registry, RegistryError, SearchResult, SecurityConfig,
    UpdateType, is_transient,
};

/// Hooks for the benchmarks in `benches/`: the raw QUIC endpoint with exactly the TLS
/// configuration our transport uses, so "raw quinn stream with the same crypto" is measured
/// against the same handshake and ciphers. Not part of the supported API.
#[doc(hidden)]
pub mod bench_support {
    use std::net::SocketAddr;

    use crate::identity::{Keypair, PeerId};
    use crate::transport::{TransportConfig, TransportError};

    /// A quinn endpoint (server and client) with our TLS configuration.
    pub fn quic_endpoint(
        bind: SocketAddr,
        keypair: &Keypair,
        cfg: &TransportConfig,
    ) -> Result<quinn::Endpoint, TransportError> {
        crate::transport::quic::endpoint(bind, keypair, cfg)
    }

    /// Dials with our TLS configuration; returns the raw quinn connection.
    pub async fn quic_dial(
        ep: &quinn::Endpoint,
        addr: SocketAddr,
        keypair: &Keypair,
        expected: Option<PeerId>,
        cfg: &TransportConfig,
    ) -> Result<quinn::Connection, TransportError> {
        crate::transport::quic::dial(ep, addr, keypair, expected, cfg)
            .await
            .map(|(c, _)| c)
    }

    /// Accepts with our TLS configuration; returns the raw quinn connection.
    pub async fn quic_accept(
        incoming: quinn::Incoming,
        local: PeerId,
    ) -> Result<quinn::Connection, TransportError> {
        crate::transport::quic::accept(incoming, local)
            .await
            .map(|(c, _)| c)
    }
}

/// The README's Rust examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
