use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::address::Multiaddr;
use crate::transport::TransportConfig;

/// Everything a node's event loop can be told. Defaults follow the seed's `NetworkConfig`
/// (`max_connections` 100, `connection_timeout` 30 s, `idle_timeout` 300 s); the rest are
/// documented on each field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeConfig {
    /// Addresses to listen on. Empty: dial-only.
    pub listen: Vec<Multiaddr>,
    /// Peers dialed at start and redialed with backoff whenever the connection is lost.
    /// Normally `/…/p2p/<PeerId>` so the identity is pinned.
    pub bootstrap: Vec<Multiaddr>,
    /// Established plus handshaking connections, inbound and outbound (default 100).
    pub max_connections: usize,
    /// Inbound connections from one IP address (default 8).
    pub max_connections_per_ip: usize,
    /// Exempt loopback addresses from the per-IP limit (default true), so that one-machine
    /// networks of hundreds of nodes work.
    pub per_ip_limit_exempt_loopback: bool,
    /// Whole-dial timeout: connect plus handshake (default 30 s, the seed's value).
    #[serde(with = "super::duration_secs")]
    pub connection_timeout: Duration,
    /// Close a connection that carried no protocol message either way for this long
    /// (default 300 s, the seed's value). Pings do not count; bootstrap peers are kept.
    #[serde(with = "super::duration_secs")]
    pub idle_timeout: Duration,
    /// Ping a peer we have heard nothing from for this long (default 15 s).
    #[serde(with = "super::duration_secs")]
    pub keepalive_interval: Duration,
    /// Close a connection on which nothing at all arrived for this long (default 45 s).
    #[serde(with = "super::duration_secs")]
    pub keepalive_timeout: Duration,
    /// First delay before redialing a lost bootstrap peer (default 1 s); doubles per failure.
    #[serde(with = "super::duration_secs")]
    pub reconnect_initial_backoff: Duration,
    /// Largest delay between bootstrap redials (default 60 s).
    #[serde(with = "super::duration_secs")]
    pub reconnect_max_backoff: Duration,
    /// When the node is at `max_connections`, a new connection (inbound or dialed) evicts
    /// the connection that has carried no protocol message for longest, provided it has been
    /// idle at least this long (default 10 s; bootstrap peers are never evicted). `None`:
    /// refuse new connections instead.
    #[serde(default = "default_eviction", with = "opt_duration_secs")]
    pub eviction_min_idle: Option<Duration>,
    /// Messages queued for one protocol handler before the connections delivering to it wait
    /// (default 1024).
    pub handler_queue: usize,
    /// Transport settings.
    pub transport: TransportConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            max_connections: 100,
            max_connections_per_ip: 8,
            per_ip_limit_exempt_loopback: true,
            connection_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(45),
            reconnect_initial_backoff: Duration::from_secs(1),
            reconnect_max_backoff: Duration::from_secs(60),
            eviction_min_idle: default_eviction(),
            handler_queue: 1024,
            transport: TransportConfig::default(),
        }
    }
}

fn default_eviction() -> Option<Duration> {
    Some(Duration::from_secs(10))
}

mod opt_duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

impl NodeConfig {
    /// Checks values that would make the node misbehave.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.transport.limits;
        if l.max_reassembly_bytes < l.max_message_size {
            return Err(
                "transport.limits.max_reassembly_bytes must be at least max_message_size".into(),
            );
        }
        if self.max_connections == 0 {
            return Err("max_connections must be at least 1".into());
        }
        if self.keepalive_timeout <= self.keepalive_interval {
            return Err("keepalive_timeout must be longer than keepalive_interval".into());
        }
        if self.handler_queue == 0 {
            return Err("handler_queue must be at least 1".into());
        }
        if self.reconnect_initial_backoff.is_zero() {
            return Err("reconnect_initial_backoff must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_with_a_few_fields_fills_the_rest_with_defaults() {
        let cfg: NodeConfig = toml::from_str(
            r#"
            listen = ["/ip4/127.0.0.1/tcp/4001"]
            max_connections = 500
            idle_timeout = 60
            keepalive_interval = 2.5

            [transport]
            handshake_timeout = 5
            [transport.limits]
            max_message_size = 1048576
            "#,
        )
        .unwrap();
        assert_eq!(cfg.listen[0].to_string(), "/ip4/127.0.0.1/tcp/4001");
        assert_eq!(cfg.max_connections, 500);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(60));
        assert_eq!(cfg.keepalive_interval, Duration::from_millis(2500));
        assert_eq!(cfg.transport.handshake_timeout, Duration::from_secs(5));
        assert_eq!(cfg.transport.limits.max_message_size, 1 << 20);
        assert_eq!(cfg.connection_timeout, Duration::from_secs(30));
        assert!(cfg.validate().is_ok());
        let back: NodeConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn seed_defaults_and_validation() {
        let d = NodeConfig::default();
        assert_eq!(d.max_connections, 100);
        assert_eq!(d.connection_timeout, Duration::from_secs(30));
        assert_eq!(d.idle_timeout, Duration::from_secs(300));
        let bad = NodeConfig {
            keepalive_timeout: Duration::from_secs(1),
            ..NodeConfig::default()
        };
        assert!(bad.validate().is_err());
        let err = toml::from_str::<NodeConfig>("listen = [\"/ip4/1.2.3/tcp/1\"]").unwrap_err();
        assert!(err.to_string().contains("1.2.3"), "{err}");
    }
}
