//! The registry facade (`P2PRegistryBuilder`, `Registry`): packages, search, publish, get.
//!
//! This module owns the registry's data types ([`types`]), its configuration ([`config`])
//! and errors ([`error`]), signed records and the ownership rules ([`signed`]), the wire
//! protocol between registry nodes ([`protocol`]), the searchable catalogue ([`index`]), the
//! crash-safe on-disk store ([`store`]), the sans-IO core that makes every registry
//! decision ([`core`]), the driver task that owns it, and the facade ([`facade`]), a thin
//! handle that ties the DHT, gossip, RPC, content and discovery layers together.

pub mod config;
pub mod core;
mod driver;
pub mod error;
pub mod facade;
pub mod index;
pub mod protocol;
pub mod signed;
pub mod store;
pub mod types;
mod writer;

pub use config::{
    BootstrapConfig, BootstrapNode, DHTConfig, GossipsubConfig, KeyType, NetworkConfig,
    OwnershipConfig, P2PConfig, Protocol, RegistryConfig, SecurityConfig,
};
pub use error::{RegistryError, Result, is_transient};
pub use facade::{
    BoxFuture, NameOwnership, P2PRegistry, P2PRegistryBuilder, PeerSummary, Registry,
};
pub use index::{Catalogue, InsertOutcome};
pub use signed::{NameAction, NameStatement, SignedPackage};
pub use store::{Batch, Store, StoreError};
pub use types::{
    NetworkStats, Package, PackageMetadata, PackageUpdate, Query, SearchResult, UpdateType,
};
