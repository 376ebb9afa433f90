//! Deterministic discrete-event simulator over the sans-IO protocol cores.
//!
//! Not built yet: this module is the home the Kademlia issue's many-node harness grows into.
