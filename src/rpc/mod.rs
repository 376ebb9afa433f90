//! Request-response RPC: typed protocols over the node's connections.
//!
//! This module owns request tracking (ids, timeouts, cancellation), admission of inbound
//! requests (registered protocols, size limits per protocol, per-peer rate limits, per-peer
//! and per-node concurrency limits answered `Busy`), peer reputation counters, and the wire
//! format of both. [`core::RpcCore`] is the sans-IO state machine; [`Rpc`] is the tokio
//! driver's handle: `register::<P>(handler)`, `request::<P>(peer, req)`. [`content`] moves
//! SHA-256-addressed blobs over it, from several providers at once.

pub mod config;
pub mod content;
pub mod core;
pub mod driver;
pub mod error;
pub mod message;

pub use config::{ProtocolLimits, RateLimit, RpcConfig};
pub use content::{
    ContentConfig, ContentError, ContentHash, ContentMetrics, ContentService, ContentSource,
    Manifest, Progress,
};
pub use core::{Action, Reputation, RequestId, RpcCore, RpcMetrics};
pub use driver::{HandlerError, HandlerFuture, Protocol, RawHandler, Rpc};
pub use error::RpcError;
pub use message::{EncodedFrame, ErrorFrame, ErrorKind, Frame, ProtocolName};
