//! Peer discovery: bootstrap list, mDNS, DHT random walk, manual addition.
//!
//! Not built yet beyond what the node loop does itself (dialing and re-dialing configured
//! bootstrap addresses, see [`crate::node::NodeConfig::bootstrap`]).
