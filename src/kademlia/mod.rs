//! Kademlia DHT: routing table, iterative lookups, record and provider stores (sans-IO), and
//! the driver that connects them to the node loop.
//!
//! Not built yet: this module is the home the Kademlia issue fills. It will own distances,
//! k-buckets and queries; it must not open sockets or read the clock itself.
