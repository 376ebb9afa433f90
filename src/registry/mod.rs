//! The registry facade (`P2PRegistryBuilder`, `Registry`): packages, search, publish, get.
//!
//! This module owns the registry's data types ([`types`]), its configuration ([`config`])
//! and errors ([`error`]), signed records and the ownership rules ([`signed`]), the wire
//! protocol between registry nodes ([`protocol`]), the searchable catalogue ([`index`]), the
//! crash-safe on-disk store ([`store`]) and the facade itself ([`facade`]), which ties the
//! DHT, gossip, RPC, content and discovery layers together.

pub mod config;
pub mod error;
pub mod facade;
pub mod index;
pub mod protocol;
pub mod signed;
pub mod store;
pub mod types;
mod writer;

pub use config::{
    BootstrapConfig, BootstrapNode, DHTConfig, GossipsubConfig, KeyType, NetworkConfig, P2PConfig,
    Protocol, RegistryConfig, SecurityConfig,
};
pub use error::{RegistryError, Result, is_transient};
pub use facade::{BoxFuture, P2PRegistry, P2PRegistryBuilder, Registry};
pub use index::{Catalogue, InsertOutcome};
pub use signed::SignedPackage;
pub use store::{Batch, Store, StoreError};
pub use types::{
    NetworkStats, Package, PackageMetadata, PackageUpdate, Query, SearchResult, UpdateType,
};
