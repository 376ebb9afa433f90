//! Peer discovery: bootstrap nodes, mDNS, DHT random walks and manual addition.
//!
//! [`Discovery::spawn`] runs, next to a node (and optionally its DHT):
//! - one task per bootstrap node ([`bootstrap`]): dial with the PeerId pinned, retry with
//!   exponential backoff capped at `retry_interval`, redial when the connection is lost;
//! - mDNS ([`mdns`]), if enabled: announce `_ggen-p2p._udp.local.`, dial what it hears;
//! - the DHT random walk ([`walk`]): a lookup of a random key soon after start and then every
//!   `walk_interval`.
//!
//! Every peer found lands in a bounded [`PeerBook`] with the [`DiscoveryMethod`] that found
//! it first. Discovered peers are hints: connections are authenticated by the handshake
//! against the PeerId the hint claims. There are no built-in bootstrap nodes.

mod book;
pub mod bootstrap;
pub mod mdns;
pub mod walk;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use book::{DiscoveredPeer, MethodCounts, PeerBook};
pub use bootstrap::parse_bootstrap_node;
pub use mdns::{Mdns, MdnsConfig, MdnsInterfaces};

use crate::address::Multiaddr;
use crate::identity::PeerId;
use crate::kademlia::{Dht, DhtError};
use crate::node::{NodeError, NodeHandle};
use crate::registry::{BootstrapConfig, BootstrapNode};

/// How a peer was discovered (the seed's enum).
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiscoveryMethod {
    /// A configured bootstrap node.
    Bootstrap,
    /// Announced on the local network.
    MDNS,
    /// Learned from DHT lookups.
    DHT,
    /// Added by hand ([`Discovery::add_manual`]).
    Manual,
}

/// Errors from discovery.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// A bootstrap entry does not parse, or its address names another peer.
    #[error("bad bootstrap node {peer_id} at {address}: {why}")]
    BadBootstrapNode {
        /// The entry's peer id.
        peer_id: String,
        /// The entry's address.
        address: String,
        /// What is wrong.
        why: String,
    },
    /// A manual address names a peer other than the one given.
    #[error("address {addr} names a different peer than {peer}")]
    PeerMismatch {
        /// The peer given.
        peer: PeerId,
        /// The address.
        addr: Multiaddr,
    },
    /// The configuration is invalid.
    #[error("invalid discovery configuration: {0}")]
    Config(String),
    /// mDNS could not start.
    #[error("mDNS: {0}")]
    Mdns(String),
    /// The node refused or failed the dial.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A DHT operation failed.
    #[error(transparent)]
    Dht(#[from] DhtError),
    /// No DHT to walk.
    #[error("discovery runs without a DHT")]
    NoDht,
    /// Discovery was stopped.
    #[error("discovery is stopped")]
    Stopped,
}

/// Discovery settings. Defaults: no bootstrap nodes, backoff from 1 s doubling to a 30 s cap
/// (the seed's `retry_interval`), mDNS off (see [`MdnsConfig`]), a DHT random walk 10 s after
/// start and every 5 minutes after that, at most 10 000 peers remembered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DiscoveryConfig {
    /// Bootstrap nodes to dial and keep connected (default none; there are no public ones).
    pub bootstrap: Vec<BootstrapNode>,
    /// First delay before redialing an unreachable bootstrap node (default 1 s); doubles per
    /// failure.
    #[serde(with = "crate::node::duration_secs")]
    pub retry_initial: Duration,
    /// Largest delay between redials of a bootstrap node (default 30 s).
    #[serde(with = "crate::node::duration_secs")]
    pub retry_interval: Duration,
    /// mDNS settings (default off).
    pub mdns: MdnsConfig,
    /// Run DHT random walks (default true; needs a DHT).
    pub walk_enabled: bool,
    /// Delay before the first walk (default 10 s).
    #[serde(with = "crate::node::duration_secs")]
    pub walk_first: Duration,
    /// Time between walks (default 300 s).
    #[serde(with = "crate::node::duration_secs")]
    pub walk_interval: Duration,
    /// Most peers the book remembers (default 10 000).
    pub max_peers: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            bootstrap: Vec::new(),
            retry_initial: Duration::from_secs(1),
            retry_interval: Duration::from_secs(30),
            mdns: MdnsConfig::default(),
            walk_enabled: true,
            walk_first: Duration::from_secs(10),
            walk_interval: Duration::from_secs(300),
            max_peers: 10_000,
        }
    }
}

impl DiscoveryConfig {
    /// From the seed's `[bootstrap]` section: its nodes (if `enabled`), `retry_interval` and
    /// `mdns_enabled` (on every interface).
    pub fn from_bootstrap(b: &BootstrapConfig) -> Self {
        Self {
            bootstrap: if b.enabled {
                b.nodes.clone()
            } else {
                Vec::new()
            },
            retry_interval: Duration::from_secs(b.retry_interval.max(1)),
            mdns: MdnsConfig {
                enabled: b.mdns_enabled,
                ..MdnsConfig::default()
            },
            ..Self::default()
        }
    }

    /// Checks values that would make discovery misbehave.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_initial.is_zero() {
            return Err("retry_initial must be positive".into());
        }
        if self.retry_interval < self.retry_initial {
            return Err("retry_interval must be at least retry_initial".into());
        }
        if self.walk_interval.is_zero() {
            return Err("walk_interval must be positive".into());
        }
        if self.max_peers == 0 {
            return Err("max_peers must be at least 1".into());
        }
        Ok(())
    }
}

/// A snapshot of what discovery knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryStats {
    /// Peers per first method.
    pub by_method: MethodCounts,
    /// Peers in the book.
    pub total: usize,
    /// Bootstrap nodes being kept connected.
    pub bootstrap_nodes: usize,
    /// Whether mDNS runs.
    pub mdns_running: bool,
    /// Whether random walks run.
    pub walking: bool,
}

/// Handle to running discovery. Cheap to clone; [`Discovery::stop`] ends every task.
#[derive(Clone, Debug)]
pub struct Discovery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node: NodeHandle,
    dht: Option<Dht>,
    book: PeerBook,
    config: DiscoveryConfig,
    cancel: CancellationToken,
    mdns: Mutex<Option<Mdns>>,
    bootstrap_peers: Mutex<Vec<PeerId>>,
    walk: Option<mpsc::UnboundedSender<walk::WalkRequest>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Discovery {
    /// Starts discovery for `node`: bootstrap tasks for `config.bootstrap`, mDNS if enabled,
    /// random walks if enabled and `dht` is given. Must run inside a tokio runtime.
    pub fn spawn(
        node: NodeHandle,
        dht: Option<Dht>,
        config: DiscoveryConfig,
    ) -> Result<Discovery, DiscoveryError> {
        config.validate().map_err(DiscoveryError::Config)?;
        let parsed = config
            .bootstrap
            .iter()
            .map(parse_bootstrap_node)
            .collect::<Result<Vec<_>, _>>()?;
        let book = PeerBook::new(config.max_peers);
        let cancel = CancellationToken::new();
        let mdns = if config.mdns.enabled {
            Some(Mdns::start(&node, book.clone(), &config.mdns)?)
        } else {
            None
        };
        let walk = match (&dht, config.walk_enabled) {
            (Some(dht), true) => {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(walk::run(
                    dht.clone(),
                    book.clone(),
                    config.walk_first,
                    config.walk_interval,
                    rx,
                    cancel.clone(),
                ));
                Some(tx)
            }
            _ => None,
        };
        let d = Discovery {
            inner: Arc::new(Inner {
                node,
                dht,
                book,
                config,
                cancel,
                mdns: Mutex::new(mdns),
                bootstrap_peers: Mutex::new(Vec::new()),
                walk,
            }),
        };
        for (peer, addr) in parsed {
            d.start_bootstrap(peer, addr);
        }
        Ok(d)
    }

    fn start_bootstrap(&self, peer: PeerId, addr: Multiaddr) {
        let i = &self.inner;
        {
            let mut list = i.bootstrap_peers.lock().unwrap_or_else(|e| e.into_inner());
            if list.contains(&peer) {
                return;
            }
            list.push(peer);
        }
        i.node.add_address(peer, addr.clone());
        i.book.record(
            peer,
            DiscoveryMethod::Bootstrap,
            std::slice::from_ref(&addr),
        );
        tokio::spawn(bootstrap::run(
            i.node.clone(),
            i.dht.clone(),
            i.book.clone(),
            peer,
            addr,
            bootstrap::Backoff {
                initial: i.config.retry_initial,
                max: i.config.retry_interval,
            },
            i.cancel.clone(),
        ));
    }

    /// Adds a bootstrap node at run time: it is dialed now and kept connected like the
    /// configured ones. Returns its PeerId. A node already in the list is not added twice.
    pub fn add_bootstrap_node(&self, node: &BootstrapNode) -> Result<PeerId, DiscoveryError> {
        if self.inner.cancel.is_cancelled() {
            return Err(DiscoveryError::Stopped);
        }
        let (peer, addr) = parse_bootstrap_node(node)?;
        self.start_bootstrap(peer, addr);
        Ok(peer)
    }

    /// Records `peer` as added by hand, remembers `addr` for it and dials it (identity
    /// pinned). `addr` may end in `/p2p/<peer>`, not in another id. Seeds the DHT with the
    /// peer once connected.
    pub async fn add_manual(&self, peer: PeerId, addr: Multiaddr) -> Result<(), DiscoveryError> {
        if addr.peer_id().is_some_and(|p| p != peer) {
            return Err(DiscoveryError::PeerMismatch { peer, addr });
        }
        if self.inner.cancel.is_cancelled() {
            return Err(DiscoveryError::Stopped);
        }
        let addr = addr.without_peer_id();
        let i = &self.inner;
        i.book
            .record(peer, DiscoveryMethod::Manual, std::slice::from_ref(&addr));
        i.node.add_address(peer, addr.clone());
        i.node.dial(addr.with_peer_id(peer)).await?;
        if let Some(dht) = &i.dht {
            dht.add_peer(peer, addr);
        }
        Ok(())
    }

    /// Runs one DHT random walk now; returns how many peers were new to the book.
    pub async fn walk_now(&self) -> Result<usize, DiscoveryError> {
        let tx = self.inner.walk.as_ref().ok_or(DiscoveryError::NoDht)?;
        let (reply, rx) = oneshot::channel();
        tx.send(reply).map_err(|_| DiscoveryError::Stopped)?;
        Ok(rx.await.map_err(|_| DiscoveryError::Stopped)??)
    }

    /// The method that first found `peer`.
    pub fn method_of(&self, peer: &PeerId) -> Option<DiscoveryMethod> {
        self.inner.book.method_of(peer)
    }

    /// The peer book (shared: it keeps updating).
    pub fn book(&self) -> &PeerBook {
        &self.inner.book
    }

    /// Every discovered peer.
    pub fn peers(&self) -> Vec<DiscoveredPeer> {
        self.inner.book.peers()
    }

    /// Counts for monitoring.
    pub fn stats(&self) -> DiscoveryStats {
        let i = &self.inner;
        let by_method = i.book.counts();
        DiscoveryStats {
            by_method,
            total: by_method.total(),
            bootstrap_nodes: i
                .bootstrap_peers
                .lock()
                .map(|l| l.len())
                .unwrap_or_default(),
            mdns_running: i
                .mdns
                .lock()
                .map(|m| m.as_ref().is_some_and(Mdns::is_running))
                .unwrap_or_default(),
            walking: i.walk.is_some() && !i.cancel.is_cancelled(),
        }
    }

    /// Stops every discovery task and mDNS. Connections stay; the book stays readable.
    pub fn stop(&self) {
        self.inner.cancel.cancel();
        if let Ok(mut m) = self.inner.mdns.lock() {
            if let Some(mut m) = m.take() {
                m.stop();
            }
        }
    }

    /// True until [`Discovery::stop`].
    pub fn is_running(&self) -> bool {
        !self.inner.cancel.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_round_trip_and_follow_the_seed() {
        let d = DiscoveryConfig::default();
        assert_eq!(d.max_peers, 10_000);
        assert_eq!(d.walk_interval, Duration::from_secs(300));
        assert_eq!(d.retry_interval, Duration::from_secs(30));
        assert!(!d.mdns.enabled && d.bootstrap.is_empty());
        assert!(d.validate().is_ok());
        let back: DiscoveryConfig = toml::from_str(&toml::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
        let partial: DiscoveryConfig = toml::from_str(
            "walk_interval = 60\n[mdns]\nenabled = true\ninterfaces = \"loopback\"\n",
        )
        .unwrap();
        assert_eq!(partial.walk_interval, Duration::from_secs(60));
        assert_eq!(partial.mdns.interfaces, MdnsInterfaces::Loopback);
        assert_eq!(partial.mdns.port, 5353);
        let seed = BootstrapConfig::default();
        let from = DiscoveryConfig::from_bootstrap(&seed);
        assert!(from.mdns.enabled);
        assert_eq!(from.retry_interval, Duration::from_secs(30));
        let bad = DiscoveryConfig {
            retry_interval: Duration::from_millis(1),
            ..DiscoveryConfig::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn method_names_are_the_seeds() {
        let all = [
            DiscoveryMethod::Bootstrap,
            DiscoveryMethod::MDNS,
            DiscoveryMethod::DHT,
            DiscoveryMethod::Manual,
        ];
        let json: Vec<String> = all
            .iter()
            .map(|m| serde_json::to_string(m).unwrap())
            .collect();
        assert_eq!(json, ["\"Bootstrap\"", "\"MDNS\"", "\"DHT\"", "\"Manual\""]);
    }
}
