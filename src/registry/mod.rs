//! The registry facade (`P2PRegistryBuilder`, `Registry`): packages, search, publish, get.
//!
//! This module owns the registry's data types ([`types`]), its configuration ([`config`]),
//! errors ([`error`]) and its crash-safe on-disk store ([`store`]). The facade ties the DHT,
//! gossip and RPC layers together; it is being built in steps (see the README's status
//! table).

pub mod config;
pub mod error;
pub mod store;
pub mod types;

pub use config::{
    BootstrapConfig, BootstrapNode, DHTConfig, GossipsubConfig, KeyType, NetworkConfig, P2PConfig,
    Protocol, SecurityConfig,
};
pub use error::{RegistryError, Result};
pub use store::{Batch, Store, StoreError};
pub use types::{
    NetworkStats, Package, PackageMetadata, PackageUpdate, Query, SearchResult, UpdateType,
};
