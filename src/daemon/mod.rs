//! The daemon's local control API and its client.
//!
//! `ggen p2p start` runs a registry node and, beside it, an HTTP server on loopback
//! (`127.0.0.1:5001` by default) that speaks JSON: status, peers, search, package info,
//! publish, content, deprecate, bootstrap, statistics, a health check (`/healthz`),
//! Prometheus metrics (`/metrics`, see [`crate::metrics`]) and server-sent package updates
//! (`/api/v0/events`). The short-lived CLI verbs (`ggen p2p publish`, `search`, `install`, …)
//! are clients of it: the node, its connections and the content it serves outlive them,
//! the way Kubo's and radicle-node's CLIs talk to their daemons.
//!
//! This module owns the wire types of that API ([`api`]), the server ([`ApiServer`]),
//! its authentication, and the blocking client the CLI uses ([`client`]).
//!
//! # Finding the daemon, and authentication
//!
//! On start the daemon writes two files into its data directory: [`API_ADDR_FILE`] (the
//! address it listens on) and [`API_TOKEN_FILE`] (a random bearer token, mode 0600). A
//! client given the same data directory reads both. Every call that changes something
//! (`POST`) needs `Authorization: Bearer <token>` and gets 401 without it; reads are open
//! to local processes unless [`ApiConfig::auth_reads`] is set. The server listens on
//! loopback unless told otherwise; the token is what keeps other local users out of the
//! mutating calls.

pub mod api;
pub mod client;
mod server;

pub use server::{ApiConfig, ApiServer};

/// File in the data directory holding the API's address (`host:port`).
pub const API_ADDR_FILE: &str = "api.addr";
/// File in the data directory holding the API's bearer token (mode 0600).
pub const API_TOKEN_FILE: &str = "api.token";
/// Where the API listens unless told otherwise.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:5001";
/// Path prefix of the versioned JSON API.
pub const API_PREFIX: &str = "/api/v0";
