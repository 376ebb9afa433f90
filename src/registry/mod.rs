//! The registry facade (`P2PRegistryBuilder`, `Registry`): packages, search, publish, get.
//!
//! Not built yet: this module is the home the registry issue fills, on top of the DHT, gossip
//! and RPC layers.
