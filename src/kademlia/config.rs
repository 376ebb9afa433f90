use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether a node answers DHT requests (server) or only asks (client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Queries only: never added to others' routing tables, answers no requests.
    Client,
    /// Full participant.
    Server,
}

/// Every Kademlia knob. Defaults cite their source: the Kademlia paper (Maymounkov and
/// Mazières 2002: k = 20, α = 3, hourly republish, 24 h expiry), S/Kademlia (Baumgart and
/// Mizrak 2007: d disjoint paths), and the seed's `DHTConfig` (protocol name, replication
/// factor 20, query timeout 60 s, provider record TTL 86 400 s, cache size 1 000).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KademliaConfig {
    /// Protocol name on the wire (seed: "/ggen/marketplace/1.0.0").
    pub protocol_name: String,
    /// Bucket size and number of closest peers a lookup returns (paper: k = 20).
    pub k: usize,
    /// Peers a record is stored on (seed: `replication_factor` 20).
    pub replication_factor: usize,
    /// Requests in flight per lookup (paper: α = 3).
    pub alpha: usize,
    /// A lookup ends when this many of the closest peers seen have answered and no closer
    /// peer is pending, even if fewer than k have (resiliency, β; default 20 = k, i.e.
    /// strict; values above k count as k, so changing only `k` keeps lookups strict).
    pub beta: usize,
    /// S/Kademlia disjoint lookup paths (1 = plain Kademlia).
    pub disjoint_paths: usize,
    /// Time a peer has to answer one request before it counts as failed (default 10 s).
    #[serde(with = "crate::node::duration_secs")]
    pub request_timeout: Duration,
    /// Whole-query timeout (seed: `query_timeout` 60 s).
    #[serde(with = "crate::node::duration_secs")]
    pub query_timeout: Duration,
    /// How long a stored record lives without being republished (paper: 24 h... we default
    /// to 36 h so a record survives one missed republish).
    #[serde(with = "crate::node::duration_secs")]
    pub record_ttl: Duration,
    /// How often the original publisher re-puts its records (paper: 24 h; default 22 h).
    #[serde(with = "crate::node::duration_secs")]
    pub republish_interval: Duration,
    /// How often a node re-replicates every record it stores to the current k closest
    /// (paper: hourly).
    #[serde(with = "crate::node::duration_secs")]
    pub replication_interval: Duration,
    /// Provider record lifetime (seed: `provider_record_ttl` 86 400 s).
    #[serde(with = "crate::node::duration_secs")]
    pub provider_record_ttl: Duration,
    /// How often a provider re-announces itself (default 12 h, half the TTL).
    #[serde(with = "crate::node::duration_secs")]
    pub provider_republish_interval: Duration,
    /// Records a node stores at most (default 32 768).
    pub max_records: usize,
    /// Keys and values a node stores at most, in bytes (default 32 MiB): with
    /// `max_records`, what bounds the memory that other peers' records can take.
    pub max_record_bytes: usize,
    /// Largest record value accepted (default 64 KiB).
    pub max_record_size: usize,
    /// Distinct provider keys stored at most (default 10 000).
    pub max_provider_keys: usize,
    /// Providers kept per key (default 20).
    pub max_providers_per_key: usize,
    /// Largest DHT message accepted, in bytes (default 1 MiB; a full k-closest reply with
    /// several addresses per peer is a few KiB, a maximal record 64 KiB).
    pub max_message_size: usize,
    /// Addresses kept and sent per peer (default 8).
    pub max_addrs_per_peer: usize,
    /// Refresh every bucket not touched for this long (paper: hourly; default 10 min).
    #[serde(with = "crate::node::duration_secs")]
    pub bucket_refresh_interval: Duration,
    /// When the routing table holds fewer than k peers, re-bootstrap this often (default 30 s).
    #[serde(with = "crate::node::duration_secs")]
    pub rebootstrap_interval: Duration,
    /// A full bucket pings its least-recently-seen entry (to make room for a newcomer) only if
    /// that entry has not been seen for this long (default 60 s); fresher buckets keep the
    /// newcomer as a replacement candidate for the first entry that fails.
    #[serde(with = "crate::node::duration_secs")]
    pub liveness_check_after: Duration,
    /// Consecutive failures after which a peer is dropped from the table (default 3).
    pub max_failures: u32,
    /// Peers of one IPv4 /24 or IPv6 /48 per bucket (default 2; `None` = no limit).
    pub bucket_ip_limit: Option<usize>,
    /// Peers of one IPv4 /24 or IPv6 /48 in the whole table (default 10; `None` = no limit).
    pub table_ip_limit: Option<usize>,
    /// Loopback addresses are exempt from the IP limits (default true: one-machine networks).
    pub ip_limits_exempt_loopback: bool,
    /// Client or server.
    pub mode: Mode,
    /// Records a `get` must find before it ends (default 1: return the first valid one).
    pub get_quorum: usize,
    /// Peers a `put` must store the record on to succeed (default 1).
    pub put_quorum: usize,
    /// After a `get`, store the record at the closest peer that answered without it (paper §2.3).
    pub cache_on_get: bool,
}

impl Default for KademliaConfig {
    fn default() -> Self {
        Self {
            protocol_name: "/ggen/marketplace/1.0.0".into(),
            k: 20,
            replication_factor: 20,
            alpha: 3,
            beta: 20,
            disjoint_paths: 1,
            request_timeout: Duration::from_secs(10),
            query_timeout: Duration::from_secs(60),
            record_ttl: Duration::from_secs(36 * 3600),
            republish_interval: Duration::from_secs(22 * 3600),
            replication_interval: Duration::from_secs(3600),
            provider_record_ttl: Duration::from_secs(86_400),
            provider_republish_interval: Duration::from_secs(12 * 3600),
            max_records: 32_768,
            max_record_bytes: 32 << 20,
            max_record_size: 64 * 1024,
            max_provider_keys: 10_000,
            max_providers_per_key: 20,
            max_message_size: 1024 * 1024,
            max_addrs_per_peer: 8,
            bucket_refresh_interval: Duration::from_secs(600),
            rebootstrap_interval: Duration::from_secs(30),
            liveness_check_after: Duration::from_secs(60),
            max_failures: 3,
            bucket_ip_limit: Some(2),
            table_ip_limit: Some(10),
            ip_limits_exempt_loopback: true,
            mode: Mode::Server,
            get_quorum: 1,
            put_quorum: 1,
            cache_on_get: true,
        }
    }
}

impl KademliaConfig {
    /// Checks values that would break the protocol.
    pub fn validate(&self) -> Result<(), String> {
        if self.k == 0 || self.alpha == 0 || self.disjoint_paths == 0 {
            return Err("k, alpha and disjoint_paths must be at least 1".into());
        }
        if self.beta == 0 {
            return Err("beta must be at least 1".into());
        }
        if self.replication_factor == 0 {
            return Err("replication_factor must be at least 1".into());
        }
        if self.max_record_bytes < self.max_record_size {
            return Err("max_record_bytes must be at least max_record_size".into());
        }
        if self.max_record_size + 4096 > self.max_message_size {
            return Err("max_message_size must exceed max_record_size by at least 4 KiB".into());
        }
        Ok(())
    }
}
