//! Gossip mesh (gossipsub v1.1-style pubsub): the sans-IO router and its driver.
//!
//! Not built yet: this module is the home the gossip issue fills. It will own topics, mesh
//! maintenance, message caches and peer scoring; it must not open sockets or read the clock.
