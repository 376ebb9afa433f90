//! The registry's configuration, shaped as the seed documents it: [`P2PConfig`] with its
//! [`NetworkConfig`], [`SecurityConfig`], [`BootstrapConfig`], [`DHTConfig`] and
//! [`GossipsubConfig`] parts, plus what a serious node needs beyond the seed (data
//! directory, catalogue mode, RPC and content settings). Every field is either honoured or
//! refused by [`P2PConfig::validate`] with a clear reason; nothing is silently ignored.
//!
//! The seed's configuration blocks, as they compile here:
//!
//! ```
//! use std::path::PathBuf;
//! use ggen_p2p::{BootstrapNode, KeyType, NetworkConfig, P2PConfig, P2PRegistryBuilder, Protocol, SecurityConfig};
//!
//! let mut config = P2PConfig::default();
//! config.network.protocols = vec![Protocol::TCP, Protocol::QUIC];
//! config.network.max_connections = 100;
//! config.network.connection_timeout = 30;
//!
//! config.security.noise_enabled = true;
//! config.security.key_type = KeyType::Ed25519;
//! config.security.identity_path = Some(PathBuf::from("identity.key"));
//! assert!(config.validate().is_ok());
//! let _: (&NetworkConfig, &SecurityConfig) = (&config.network, &config.security);
//!
//! let nodes = vec![BootstrapNode {
//!     peer_id: "12D3KooWExample".to_string(),
//!     address: "/ip4/104.131.131.82/tcp/4001".to_string(),
//! }];
//! let registry = P2PRegistryBuilder::new().with_bootstrap_nodes(nodes).build();
//! // The seed's placeholder is not a real PeerId: `build` refuses it (and nothing is dialed).
//! assert!(registry.unwrap_err().to_string().contains("peer id"));
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::gossip::GossipsubConfig;
use crate::rpc::RpcConfig;
use crate::rpc::content::ContentConfig;

/// The DHT settings: the Kademlia configuration (the seed's `replication_factor` is its
/// field of that name; `k`, `alpha`, timeouts, TTLs and store bounds are there too).
pub type DHTConfig = crate::kademlia::KademliaConfig;

/// A transport protocol a node listens and dials on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP with Noise XX.
    TCP,
    /// QUIC (TLS 1.3 with raw Ed25519 keys).
    QUIC,
    /// WebSocket: not implemented; refused by [`P2PConfig::validate`].
    WebSocket,
}

/// The identity key type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    /// Ed25519: the only one implemented.
    Ed25519,
    /// secp256k1: refused by [`P2PConfig::validate`] until it exists.
    Secp256k1,
    /// RSA: refused by [`P2PConfig::validate`] until it exists.
    Rsa,
}

/// Network settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    /// Multiaddrs to listen on (port 0 picks a free port; see `listen_addresses()`).
    /// Default: TCP and QUIC on 0.0.0.0 port 4001.
    pub listen_addresses: Vec<String>,
    /// Transports in use (default TCP and QUIC). A listen address of a transport not listed
    /// is refused; dials use the listed ones only.
    pub protocols: Vec<Protocol>,
    /// Most open connections (default 100).
    pub max_connections: usize,
    /// Dial and handshake timeout in seconds (default 30).
    pub connection_timeout: u64,
    /// Idle connections close after this many seconds (default 300), except bootstrap
    /// peers'.
    pub idle_timeout: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            listen_addresses: vec![
                "/ip4/0.0.0.0/tcp/4001".to_string(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".to_string(),
            ],
            protocols: vec![Protocol::TCP, Protocol::QUIC],
            max_connections: 100,
            connection_timeout: 30,
            idle_timeout: 300,
        }
    }
}

/// Identity and encryption settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// Noise encryption on TCP (default true). Plaintext is not offered: `false` is refused.
    pub noise_enabled: bool,
    /// The identity key type (default Ed25519, the only one implemented).
    pub key_type: KeyType,
    /// Where the identity key lives. Default: `<data dir>/identity.key` when a data
    /// directory is set, else a fresh key per run.
    pub identity_path: Option<PathBuf>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            noise_enabled: true,
            key_type: KeyType::Ed25519,
            identity_path: None,
        }
    }
}

/// A bootstrap peer: its PeerId (`12D3KooW…`) and a multiaddr to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BootstrapNode {
    /// The peer's id; the handshake must prove it.
    pub peer_id: String,
    /// Where it listens (without `/p2p/…`, or with the same id).
    pub address: String,
}

/// How a node finds its first peers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapConfig {
    /// Dial the bootstrap nodes at start (default true).
    pub enabled: bool,
    /// The bootstrap nodes (none built in: there are no public defaults).
    pub nodes: Vec<BootstrapNode>,
    /// Announce and discover peers with mDNS on the local network (default true).
    pub mdns_enabled: bool,
    /// Seconds between redials of an unreachable bootstrap node, the cap of its backoff
    /// (default 30).
    pub retry_interval: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            nodes: Vec::new(),
            mdns_enabled: true,
            retry_interval: 30,
        }
    }
}

/// Registry behaviour beyond the seed's fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// Where the store, identity (unless `security.identity_path`) and content live. None:
    /// everything in memory, a fresh identity per run.
    pub data_dir: Option<PathBuf>,
    /// Keep the full catalogue of package metadata (a full node, default true). A light
    /// node (false) answers `search` by asking full peers.
    pub catalogue: bool,
    /// Gossip topic (under the gossipsub `topic_prefix`) where packages are announced
    /// (default `packages`).
    pub packages_topic: String,
    /// Seconds between anti-entropy syncs with a random peer (default 30).
    pub sync_interval: u64,
    /// Fetch, keep and serve the content of every package this node admits (a seeder, e.g.
    /// a bootstrap host), up to `registry.content.max_content_size` each (default false).
    pub replicate_content: bool,
    /// How new names are claimed: the race window and the ownership polls.
    pub ownership: OwnershipConfig,
    /// The RPC layer's settings.
    pub rpc: RpcConfig,
    /// Content transfer settings.
    pub content: ContentConfig,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            catalogue: true,
            packages_topic: "packages".to_string(),
            sync_interval: 30,
            replicate_content: false,
            ownership: OwnershipConfig::default(),
            rpc: RpcConfig::default(),
            content: ContentConfig::default(),
        }
    }
}

/// How a new name's claim settles (see `docs/ARCHITECTURE.md`, "Trust model").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OwnershipConfig {
    /// How long after a node first sees a name's claim a rival claim by another key can
    /// still win the name (decided by polling peers), in seconds (default 10). After it, and
    /// once a poll confirms the claimant, the claim is settled for good.
    #[serde(with = "crate::node::duration_secs")]
    pub race_window: Duration,
    /// Peers sampled per ownership poll, among those connected and those lost within
    /// `peer_memory` (default 8).
    pub poll_peers: usize,
    /// Time between polls of a contested or unconfirmed name, in seconds (default 1).
    #[serde(with = "crate::node::duration_secs")]
    pub poll_interval: Duration,
    /// How long a lost peer still counts (against every claimant) in polls, in seconds
    /// (default 1 800): a node cut off from most of its peers does not settle claims.
    #[serde(with = "crate::node::duration_secs")]
    pub peer_memory: Duration,
}

impl Default for OwnershipConfig {
    fn default() -> Self {
        Self {
            race_window: Duration::from_secs(10),
            poll_peers: 8,
            poll_interval: Duration::from_secs(1),
            peer_memory: Duration::from_secs(1800),
        }
    }
}

/// The whole configuration of a registry node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct P2PConfig {
    /// Listening, transports, connection limits.
    pub network: NetworkConfig,
    /// Identity and encryption.
    pub security: SecurityConfig,
    /// Bootstrap nodes and mDNS.
    pub bootstrap: BootstrapConfig,
    /// The Kademlia DHT.
    pub dht: DHTConfig,
    /// The gossip mesh (the seed's `mesh_n` 6, `mesh_n_low` 4, `mesh_n_high` 12,
    /// `heartbeat_interval` 1 s, `history_length` 5, `history_gossip` 3, `topic_prefix`).
    pub gossipsub: GossipsubConfig,
    /// Store, catalogue, sync, RPC and content.
    pub registry: RegistryConfig,
}

impl P2PConfig {
    /// Replaces the bootstrap nodes.
    pub fn with_bootstrap_nodes(mut self, nodes: Vec<BootstrapNode>) -> Self {
        self.bootstrap.nodes = nodes;
        self
    }

    /// Replaces the listen addresses.
    pub fn with_listen_addresses(mut self, addresses: Vec<String>) -> Self {
        self.network.listen_addresses = addresses;
        self
    }

    /// Sets the identity key's path.
    pub fn with_identity_path(mut self, path: PathBuf) -> Self {
        self.security.identity_path = Some(path);
        self
    }

    /// Sets the data directory.
    pub fn with_data_dir(mut self, dir: PathBuf) -> Self {
        self.registry.data_dir = Some(dir);
        self
    }

    /// The connection timeout as a duration.
    pub fn connection_timeout(&self) -> Duration {
        Duration::from_secs(self.network.connection_timeout)
    }

    /// Checks every field: unsupported choices (a key type other than Ed25519, WebSocket,
    /// plaintext TCP) and inconsistent values are refused with the reason.
    pub fn validate(&self) -> Result<(), String> {
        if self.security.key_type != KeyType::Ed25519 {
            return Err(format!(
                "key type {:?} is not supported (only Ed25519)",
                self.security.key_type
            ));
        }
        if self.network.protocols.contains(&Protocol::WebSocket) {
            return Err("the WebSocket transport is not supported (use TCP or QUIC)".into());
        }
        if self.network.protocols.is_empty() {
            return Err("network.protocols is empty: enable TCP, QUIC or both".into());
        }
        if !self.security.noise_enabled && self.network.protocols.contains(&Protocol::TCP) {
            return Err(
                "security.noise_enabled = false is not supported: TCP is always encrypted with Noise"
                    .into(),
            );
        }
        if self.network.max_connections == 0 {
            return Err("network.max_connections must be at least 1".into());
        }
        if self.network.connection_timeout == 0 {
            return Err("network.connection_timeout must be at least 1 second".into());
        }
        if self.bootstrap.retry_interval == 0 {
            return Err("bootstrap.retry_interval must be at least 1 second".into());
        }
        if self.registry.sync_interval == 0 {
            return Err("registry.sync_interval must be at least 1 second".into());
        }
        if self.registry.packages_topic.is_empty() {
            return Err("registry.packages_topic must not be empty".into());
        }
        self.dht.validate().map_err(|e| format!("dht: {e}"))?;
        self.gossipsub
            .validate()
            .map_err(|e| format!("gossipsub: {e}"))?;
        self.registry
            .rpc
            .validate()
            .map_err(|e| format!("registry.rpc: {e}"))?;
        self.registry
            .content
            .validate()
            .map_err(|e| format!("registry.content: {e}"))?;
        for a in &self.network.listen_addresses {
            let addr: crate::Multiaddr = a
                .parse()
                .map_err(|e| format!("listen address {a:?}: {e}"))?;
            let is_quic = a.contains("/quic");
            let wanted = if is_quic {
                Protocol::QUIC
            } else {
                Protocol::TCP
            };
            if addr.socket_addr().is_some() && !self.network.protocols.contains(&wanted) {
                return Err(format!(
                    "listen address {a} uses {wanted:?}, which network.protocols does not enable"
                ));
            }
        }
        for n in &self.bootstrap.nodes {
            n.peer_id
                .parse::<crate::PeerId>()
                .map_err(|e| format!("bootstrap node peer id {:?}: {e}", n.peer_id))?;
            n.address
                .parse::<crate::Multiaddr>()
                .map_err(|e| format!("bootstrap node address {:?}: {e}", n.address))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seeds_and_valid() {
        let c = P2PConfig::default();
        assert_eq!(c.network.protocols, vec![Protocol::TCP, Protocol::QUIC]);
        assert_eq!(c.network.max_connections, 100);
        assert_eq!(c.network.connection_timeout, 30);
        assert!(c.security.noise_enabled);
        assert_eq!(c.security.key_type, KeyType::Ed25519);
        assert!(c.bootstrap.enabled && c.bootstrap.mdns_enabled);
        assert!(
            c.bootstrap.nodes.is_empty(),
            "no public bootstrap nodes built in"
        );
        assert_eq!(c.dht.replication_factor, 20);
        assert_eq!(c.gossipsub.mesh_n, 6);
        assert_eq!(c.gossipsub.topic_prefix, "ggen-marketplace");
        c.validate().unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<P2PConfig>(&json).unwrap(), c);
    }

    #[test]
    fn unsupported_choices_are_refused_with_a_reason() {
        let refused = |f: &dyn Fn(&mut P2PConfig)| {
            let mut c = P2PConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(refused(&|c| c.security.key_type = KeyType::Rsa).contains("Ed25519"));
        assert!(refused(&|c| c.network.protocols.push(Protocol::WebSocket)).contains("WebSocket"));
        assert!(refused(&|c| c.security.noise_enabled = false).contains("Noise"));
        assert!(
            refused(&|c| c.network.protocols = vec![Protocol::QUIC]).contains("does not enable")
        );
        assert!(
            refused(&|c| c.bootstrap.nodes.push(BootstrapNode {
                peer_id: "12D3KooWExample".into(),
                address: "/ip4/127.0.0.1/tcp/4001".into(),
            }))
            .contains("peer id")
        );
    }
}
