//! RPC configuration: timeouts, concurrency limits, the inbound rate limit, and the default
//! size limits of a protocol. Every field has a documented default.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Request and response size limits of one protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProtocolLimits {
    /// Largest request accepted or sent, in bytes (default 64 KiB).
    pub max_request: usize,
    /// Largest response accepted or sent, in bytes (default 1 MiB).
    pub max_response: usize,
}

impl Default for ProtocolLimits {
    fn default() -> Self {
        Self {
            max_request: 64 * 1024,
            max_response: 1024 * 1024,
        }
    }
}

/// Inbound requests each peer may make: a token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimit {
    /// Sustained requests per second per peer (default 1 000; 0 turns the limit off).
    pub per_second: f64,
    /// Requests a peer may make at once after being quiet (default 2 000).
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 1000.0,
            burst: 2000.0,
        }
    }
}

/// Configuration of the RPC layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RpcConfig {
    /// Node protocol name the RPC frames travel under (default `/ggen/rpc`).
    pub protocol_name: String,
    /// A request's default timeout (default 10 s; `request_with_timeout` overrides it).
    #[serde(with = "crate::node::duration_secs")]
    pub request_timeout: Duration,
    /// How long a handler may run before its request is answered `Timeout` (default 30 s).
    #[serde(with = "crate::node::duration_secs")]
    pub handler_timeout: Duration,
    /// Our requests in flight to one peer (default 64, below the default inbound limit so
    /// that two default nodes never refuse each other `Busy`); more fail at once with the
    /// transient [`super::RpcError::LocalLimit`].
    pub max_outbound_per_peer: usize,
    /// Our requests in flight in total (default 4 096).
    pub max_outbound_total: usize,
    /// One peer's requests we handle at once (default 128); more are answered `Busy`.
    pub max_inbound_per_peer: usize,
    /// Requests we handle at once in total (default 512); more are answered `Busy`.
    pub max_inbound_total: usize,
    /// The per-peer inbound rate limit.
    pub rate_limit: RateLimit,
    /// Size limits for protocols we call without serving them.
    pub default_limits: ProtocolLimits,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            protocol_name: "/ggen/rpc".into(),
            request_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(30),
            max_outbound_per_peer: 64,
            max_outbound_total: 4096,
            max_inbound_per_peer: 128,
            max_inbound_total: 512,
            rate_limit: RateLimit::default(),
            default_limits: ProtocolLimits::default(),
        }
    }
}

impl RpcConfig {
    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.request_timeout.is_zero() || self.handler_timeout.is_zero() {
            return Err("request_timeout and handler_timeout must be above zero".into());
        }
        if self.max_outbound_per_peer == 0
            || self.max_outbound_total == 0
            || self.max_inbound_per_peer == 0
            || self.max_inbound_total == 0
        {
            return Err("concurrency limits must be at least 1".into());
        }
        if !(self.rate_limit.per_second >= 0.0 && self.rate_limit.burst >= 0.0) {
            return Err("rate_limit values must be zero or positive numbers".into());
        }
        Ok(())
    }
}
