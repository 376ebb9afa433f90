//! Kademlia DHT: the keyspace, routing table, iterative lookups, record and provider stores
//! and the protocol core, all sans-IO (time and randomness are passed in), plus the driver
//! that connects the core to a node.
//!
//! This module owns distances, buckets, queries and the DHT wire messages. It must not open
//! sockets, read the clock or use a thread RNG inside the core: [`Kademlia`] is driven by
//! `handle_message(now, from, msg)` / `handle_timeout(now, rng)` and drained with
//! `poll_action()`. The same core runs under the tokio driver and under the simulator
//! ([`crate::sim`]).

mod config;
mod driver;
mod key;
mod message;
mod protocol;
mod query;
mod routing_table;
mod store;

pub use config::{KademliaConfig, Mode};
pub use driver::{Dht, DhtError, DhtPersistence};
pub use key::{Distance, Key};
pub use message::{Message, MessageLimits, PeerRecord, Record, Request, Response};
pub use protocol::{
    Action, KadEvent, Kademlia, Persisted, Progress, QueryError, QueryId, QueryOutcome, QueryStats,
    RecordValidator,
};
pub use query::Lookup;
pub use routing_table::{BucketSnapshot, Entry, RoutingTable, RoutingTableSnapshot, Update};
pub use store::{ProviderStore, RecordStore, StoreError, StoredRecord};
