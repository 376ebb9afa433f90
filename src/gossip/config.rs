//! Every gossip knob: mesh degrees, heartbeat, caches, gossip, backpressure, size limits and
//! the peer-score parameters. Defaults cite their source: the gossipsub v1.0/v1.1/v1.2 specs
//! (D = 6, D_lo = 4, D_hi = 12, D_lazy = 6, heartbeat 1 s, history 5/3, gossip factor 0.25,
//! PRUNE backoff 1 min) and the seed's `GossipsubConfig` (`mesh_n` 6, `mesh_n_low` 4,
//! `mesh_n_high` 12, `heartbeat_interval` 1000 ms, `history_length` 5, `history_gossip` 3,
//! `topic_prefix` "ggen-marketplace").

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::message::{RpcLimits, Topic};

/// How message ids are derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageIdFn {
    /// Publisher PeerId bytes followed by the sequence number (the spec's default).
    PublisherSeqno,
    /// SHA-256 of topic and data: identical payloads are one message, whoever publishes them.
    ContentHash,
}

/// Whether messages are signed and whether unsigned ones are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValidationMode {
    /// We sign; we accept only messages with a valid publisher signature (default).
    Strict,
    /// We sign; we accept unsigned messages, but a signature present must be valid.
    Permissive,
    /// We send neither publisher nor sequence number nor signature; we accept only such
    /// messages (the ids must then come from the content: use `MessageIdFn::ContentHash`).
    Anonymous,
}

/// Per-topic score parameters (gossipsub v1.1 P1–P4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicScoreParams {
    /// Weight of this topic's score in the total.
    pub topic_weight: f64,
    /// P1: weight of time in mesh (positive).
    pub time_in_mesh_weight: f64,
    /// P1: time in mesh is counted in quanta of this length.
    #[serde(with = "crate::node::duration_secs")]
    pub time_in_mesh_quantum: Duration,
    /// P1: cap on the counted quanta.
    pub time_in_mesh_cap: f64,
    /// P2: weight of first deliveries (positive).
    pub first_message_deliveries_weight: f64,
    /// P2: decay factor per decay interval.
    pub first_message_deliveries_decay: f64,
    /// P2: cap on the counter.
    pub first_message_deliveries_cap: f64,
    /// P3: weight of the mesh delivery deficit (negative; 0 turns P3 and P3b off).
    pub mesh_message_deliveries_weight: f64,
    /// P3: decay factor.
    pub mesh_message_deliveries_decay: f64,
    /// P3: cap on the counter.
    pub mesh_message_deliveries_cap: f64,
    /// P3: deliveries expected; below it the deficit squared is penalised.
    pub mesh_message_deliveries_threshold: f64,
    /// P3: a duplicate arriving within this window after the first still counts.
    #[serde(with = "crate::node::duration_secs")]
    pub mesh_message_deliveries_window: Duration,
    /// P3: the deficit only counts after the peer has been in the mesh this long.
    #[serde(with = "crate::node::duration_secs")]
    pub mesh_message_deliveries_activation: Duration,
    /// P3b: weight of the sticky penalty for leaving the mesh with a deficit (negative).
    pub mesh_failure_penalty_weight: f64,
    /// P3b: decay factor.
    pub mesh_failure_penalty_decay: f64,
    /// P4: weight of invalid messages (negative; the counter is squared).
    pub invalid_message_deliveries_weight: f64,
    /// P4: decay factor.
    pub invalid_message_deliveries_decay: f64,
}

impl Default for TopicScoreParams {
    /// Moderate defaults for a topic with irregular traffic (a package registry's updates):
    /// P1 and P2 reward presence and useful deliveries, P4 punishes invalid messages hard
    /// (one invalid message crosses the graylist threshold for about a second, five keep
    /// the sender graylisted for about 16 s), P3 is off because a quiet topic
    /// would otherwise punish honest mesh peers for the publisher's silence.
    fn default() -> Self {
        Self {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.01,
            time_in_mesh_quantum: Duration::from_secs(1),
            time_in_mesh_cap: 3600.0,
            first_message_deliveries_weight: 1.0,
            first_message_deliveries_decay: 0.5,
            first_message_deliveries_cap: 20.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_message_deliveries_decay: 0.5,
            mesh_message_deliveries_cap: 100.0,
            mesh_message_deliveries_threshold: 1.0,
            mesh_message_deliveries_window: Duration::from_millis(10),
            mesh_message_deliveries_activation: Duration::from_secs(5),
            mesh_failure_penalty_weight: 0.0,
            mesh_failure_penalty_decay: 0.5,
            invalid_message_deliveries_weight: -100.0,
            invalid_message_deliveries_decay: 0.9,
        }
    }
}

/// Peer-score parameters (gossipsub v1.1 P5–P7, decay, and the per-topic part).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerScoreParams {
    /// Per-topic parameters; topics not listed use `default_topic`.
    pub topics: BTreeMap<Topic, TopicScoreParams>,
    /// Parameters for every topic not in `topics`.
    pub default_topic: TopicScoreParams,
    /// Cap on the sum of the topic parts (0 = no cap).
    pub topic_score_cap: f64,
    /// P5: weight of the application-specific score.
    pub app_specific_weight: f64,
    /// P6: weight of IP colocation (negative; the surplus is squared).
    pub ip_colocation_factor_weight: f64,
    /// P6: peers per IP tolerated before the penalty starts.
    pub ip_colocation_factor_threshold: f64,
    /// P6: addresses exempt from the colocation penalty.
    pub ip_colocation_factor_whitelist: Vec<IpAddr>,
    /// P6: loopback addresses are exempt (default true: one-machine networks and tests).
    pub ip_colocation_exempt_loopback: bool,
    /// P7: weight of behaviour penalties (negative; the excess is squared).
    pub behaviour_penalty_weight: f64,
    /// P7: penalties tolerated before they count.
    pub behaviour_penalty_threshold: f64,
    /// P7: decay factor.
    pub behaviour_penalty_decay: f64,
    /// How often counters decay.
    #[serde(with = "crate::node::duration_secs")]
    pub decay_interval: Duration,
    /// A decayed counter below this becomes 0.
    pub decay_to_zero: f64,
    /// How long a disconnected peer's score is remembered (so reconnecting does not reset a
    /// bad score).
    #[serde(with = "crate::node::duration_secs")]
    pub retain_score: Duration,
}

impl Default for PeerScoreParams {
    fn default() -> Self {
        Self {
            topics: BTreeMap::new(),
            default_topic: TopicScoreParams::default(),
            topic_score_cap: 100.0,
            app_specific_weight: 1.0,
            ip_colocation_factor_weight: -10.0,
            ip_colocation_factor_threshold: 3.0,
            ip_colocation_factor_whitelist: Vec::new(),
            ip_colocation_exempt_loopback: true,
            behaviour_penalty_weight: -1.0,
            behaviour_penalty_threshold: 6.0,
            behaviour_penalty_decay: 0.9,
            decay_interval: Duration::from_secs(1),
            decay_to_zero: 0.01,
            retain_score: Duration::from_secs(3600),
        }
    }
}

impl PeerScoreParams {
    /// The parameters for `topic`.
    pub fn topic(&self, topic: &Topic) -> &TopicScoreParams {
        self.topics.get(topic).unwrap_or(&self.default_topic)
    }
}

/// Score thresholds (gossipsub v1.1), each applied as described.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeerScoreThresholds {
    /// Below it: we neither gossip to the peer nor accept its gossip (IHAVE/IWANT).
    pub gossip_threshold: f64,
    /// Below it: our own publishes do not go to the peer (flood publish and fanout).
    pub publish_threshold: f64,
    /// Below it: everything from the peer is ignored.
    pub graylist_threshold: f64,
    /// Peer exchange from a pruning peer is followed only above it.
    pub accept_px_threshold: f64,
    /// When the median mesh score falls below it, we graft better-scoring peers.
    pub opportunistic_graft_threshold: f64,
}

impl Default for PeerScoreThresholds {
    fn default() -> Self {
        Self {
            gossip_threshold: -10.0,
            publish_threshold: -50.0,
            graylist_threshold: -80.0,
            accept_px_threshold: 10.0,
            opportunistic_graft_threshold: 5.0,
        }
    }
}

/// Every gossip knob.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipsubConfig {
    /// Protocol name on the wire.
    pub protocol_name: String,
    /// Prefix the facade puts before its topic names (seed: "ggen-marketplace").
    pub topic_prefix: String,
    /// D: target mesh degree (seed `mesh_n` 6).
    pub mesh_n: usize,
    /// D_lo: below it the heartbeat grafts (seed `mesh_n_low` 4).
    pub mesh_n_low: usize,
    /// D_hi: above it the heartbeat prunes (seed `mesh_n_high` 12).
    pub mesh_n_high: usize,
    /// D_score: peers kept by score when pruning (default 4).
    pub mesh_n_score: usize,
    /// D_out: outbound connections the mesh keeps at least (default 2; < D_lo, ≤ D/2).
    pub mesh_outbound_min: usize,
    /// D_lazy: peers gossiped to per heartbeat at least (default 6).
    pub gossip_lazy: usize,
    /// Fraction of eligible peers gossiped to, if more than D_lazy (default 0.25).
    pub gossip_factor: f64,
    /// Heartbeat period (seed `heartbeat_interval` 1000 ms).
    #[serde(with = "crate::node::duration_secs")]
    pub heartbeat_interval: Duration,
    /// Heartbeat windows of the message cache (seed `history_length` 5).
    pub history_length: usize,
    /// Windows whose ids go into IHAVE (seed `history_gossip` 3).
    pub history_gossip: usize,
    /// How long a fanout topic (published to, not subscribed) is kept (default 60 s).
    #[serde(with = "crate::node::duration_secs")]
    pub fanout_ttl: Duration,
    /// How long message ids stay in the seen cache (default 120 s).
    #[serde(with = "crate::node::duration_secs")]
    pub seen_ttl: Duration,
    /// Backoff after a PRUNE, both ways (spec: 1 min).
    #[serde(with = "crate::node::duration_secs")]
    pub prune_backoff: Duration,
    /// Backoff sent with the PRUNEs of an unsubscribe (default 10 s).
    #[serde(with = "crate::node::duration_secs")]
    pub unsubscribe_backoff: Duration,
    /// Slack added when checking a peer's GRAFT against our backoff (spec: one heartbeat or two).
    #[serde(with = "crate::node::duration_secs")]
    pub graft_flood_threshold: Duration,
    /// Heartbeats between opportunistic grafting rounds (default 60).
    pub opportunistic_graft_ticks: u64,
    /// Peers grafted per opportunistic round (default 2).
    pub opportunistic_graft_peers: usize,
    /// IHAVE messages accepted from one peer per heartbeat (default 10).
    pub max_ihave_messages: usize,
    /// Message ids we ask for (IWANT) from one peer per heartbeat (default 5000).
    pub max_ihave_length: usize,
    /// How long an IWANT may go unanswered before the promise breaks (penalty; default 3 s).
    #[serde(with = "crate::node::duration_secs")]
    pub iwant_followup_time: Duration,
    /// How many times one peer may ask for the same message (default 3).
    pub gossip_retransmission: u32,
    /// Peers offered in a PRUNE's peer exchange (default 16; 0 = no PX).
    pub prune_peers: usize,
    /// Whether to follow peer exchange (dial the offered peers) at all.
    pub do_px: bool,
    /// Our own messages go to every topic peer above the publish threshold, not just the
    /// mesh (gossipsub v1.1's defence against eclipse of a publisher). Off by default here:
    /// with every receiver forwarding to its mesh, flooding multiplies duplicates, and
    /// publishers in a registry are few and known; turn it on where publishers are targets.
    pub flood_publish: bool,
    /// Forwards go to this many mesh peers at once; the others follow `forward_stagger`
    /// apart, unless they show by then that they have the message (default 2).
    pub forward_eager: usize,
    /// Delay between staggered forwards (0 = every mesh peer at once, plain gossipsub).
    /// Trades a little latency on sparse paths for far fewer duplicate transmissions.
    #[serde(with = "crate::node::duration_secs")]
    pub forward_stagger: Duration,
    /// Choking (an extension to gossipsub, on by default; only our own nodes speak it): a
    /// mesh peer whose recent copies were mostly duplicates (decayed counts, judged at each
    /// heartbeat and as soon as enough samples arrive) is told to stop pushing (CHOKE) while
    /// at least `choke_min_unchoked` mesh peers keep pushing. A choked peer stays in the mesh
    /// and advertises by IHAVE each heartbeat; it is unchoked when it delivers a message
    /// before anyone else did (an IWANT answer that filled a gap), or when fewer than the
    /// minimum remain unchoked. On a 200-node loopback network this cuts duplicates per
    /// delivery from about 5 to about 1.6 and lowers latency (less CPU per message). A
    /// peer that does not understand CHOKE ignores it, which only costs duplicates.
    pub choke: bool,
    /// Mesh peers per topic that always stay unchoked (default 3).
    pub choke_min_unchoked: usize,
    /// Share of a peer's copies that must have been duplicates to choke it (default 0.7).
    pub choke_duplicate_ratio: f64,
    /// Copies a peer must have sent in the window before it can be judged (default 5).
    pub choke_min_samples: u32,
    /// Messages of at least this many bytes trigger IDONTWANT to the mesh (spec v1.2: 1000).
    pub idontwant_message_size_threshold: usize,
    /// Message ids remembered per peer from its IDONTWANTs (default 10 000).
    pub max_idontwant_ids: usize,
    /// Largest RPC sent or accepted, in bytes (default 1 MiB); a message that cannot fit is
    /// refused at publish.
    pub max_transmit_size: usize,
    /// Topics one peer may be subscribed to; beyond it its subscriptions are ignored (default 128).
    pub max_topics_per_peer: usize,
    /// Topics we may join (default 1 000).
    pub max_subscribed_topics: usize,
    /// Signing and verification of publisher signatures.
    pub validation_mode: ValidationMode,
    /// How message ids are derived.
    pub message_id: MessageIdFn,
    /// Received messages wait for the application's verdict (`report_validation`) before
    /// they are forwarded; off: everything well-formed is accepted at once.
    pub validate_messages: bool,
    /// Verdicts not given within this time count as "ignore" (default 10 s).
    #[serde(with = "crate::node::duration_secs")]
    pub validation_timeout: Duration,
    /// Per-peer send queue: bytes waiting at most (default 4 MiB); forwards are dropped
    /// first when it is full, then our own publishes; control messages always fit up to
    /// `max_control_queue_bytes`.
    pub max_queue_bytes: usize,
    /// Per-peer send queue: extra room for control messages (default 256 KiB).
    pub max_control_queue_bytes: usize,
    /// Peer scoring on or off.
    pub scoring: bool,
    /// Score parameters.
    pub score_params: PeerScoreParams,
    /// Score thresholds.
    pub score_thresholds: PeerScoreThresholds,
}

impl Default for GossipsubConfig {
    fn default() -> Self {
        Self {
            protocol_name: "/ggen/gossip/1.1.0".into(),
            topic_prefix: "ggen-marketplace".into(),
            mesh_n: 6,
            mesh_n_low: 4,
            mesh_n_high: 12,
            mesh_n_score: 4,
            mesh_outbound_min: 2,
            gossip_lazy: 6,
            gossip_factor: 0.25,
            heartbeat_interval: Duration::from_secs(1),
            history_length: 5,
            history_gossip: 3,
            fanout_ttl: Duration::from_secs(60),
            seen_ttl: Duration::from_secs(120),
            prune_backoff: Duration::from_secs(60),
            unsubscribe_backoff: Duration::from_secs(10),
            graft_flood_threshold: Duration::from_secs(10),
            opportunistic_graft_ticks: 60,
            opportunistic_graft_peers: 2,
            max_ihave_messages: 10,
            max_ihave_length: 5000,
            iwant_followup_time: Duration::from_secs(3),
            gossip_retransmission: 3,
            prune_peers: 16,
            do_px: true,
            flood_publish: false,
            choke: true,
            choke_min_unchoked: 3,
            choke_duplicate_ratio: 0.7,
            choke_min_samples: 5,
            forward_eager: 2,
            forward_stagger: Duration::ZERO,
            idontwant_message_size_threshold: 1000,
            max_idontwant_ids: 10_000,
            max_transmit_size: 1024 * 1024,
            max_topics_per_peer: 128,
            max_subscribed_topics: 1000,
            validation_mode: ValidationMode::Strict,
            message_id: MessageIdFn::PublisherSeqno,
            validate_messages: false,
            validation_timeout: Duration::from_secs(10),
            max_queue_bytes: 4 * 1024 * 1024,
            max_control_queue_bytes: 256 * 1024,
            scoring: true,
            score_params: PeerScoreParams::default(),
            score_thresholds: PeerScoreThresholds::default(),
        }
    }
}

impl GossipsubConfig {
    /// The topic `name` under the configured prefix: `"<prefix>/<name>"` (or `name` alone
    /// when the prefix is empty).
    pub fn topic(&self, name: &str) -> Topic {
        if self.topic_prefix.is_empty() {
            Topic::new(name)
        } else {
            Topic::new(format!("{}/{name}", self.topic_prefix))
        }
    }

    /// The decode limits implied by this configuration.
    pub fn rpc_limits(&self) -> RpcLimits {
        RpcLimits {
            max_transmit_size: self.max_transmit_size,
            max_subscriptions: self.max_topics_per_peer.max(1) * 2,
            max_ids: self.max_ihave_length.max(self.max_idontwant_ids).max(1),
            ..RpcLimits::default()
        }
    }

    /// Checks the relations between values that the protocol needs.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.mesh_n_low <= self.mesh_n && self.mesh_n <= self.mesh_n_high) {
            return Err("need mesh_n_low <= mesh_n <= mesh_n_high".into());
        }
        if self.mesh_n == 0 {
            return Err("mesh_n must be at least 1".into());
        }
        if self.mesh_outbound_min >= self.mesh_n_low.max(1)
            || self.mesh_outbound_min > self.mesh_n / 2
        {
            return Err("need mesh_outbound_min < mesh_n_low and <= mesh_n / 2".into());
        }
        if self.history_gossip > self.history_length || self.history_length == 0 {
            return Err("need 0 < history_gossip <= history_length".into());
        }
        if self.heartbeat_interval.is_zero() {
            return Err("heartbeat_interval must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.gossip_factor) {
            return Err("gossip_factor must be between 0 and 1".into());
        }
        if self.validation_mode == ValidationMode::Anonymous
            && self.message_id == MessageIdFn::PublisherSeqno
        {
            return Err("anonymous mode needs message_id = ContentHash".into());
        }
        let t = &self.score_thresholds;
        if !(t.graylist_threshold <= t.publish_threshold
            && t.publish_threshold <= t.gossip_threshold
            && t.gossip_threshold <= 0.0)
        {
            return Err("need graylist <= publish <= gossip threshold <= 0".into());
        }
        if t.accept_px_threshold < 0.0 || t.opportunistic_graft_threshold < 0.0 {
            return Err("accept_px and opportunistic_graft thresholds must be >= 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_carry_the_seed_values() {
        let c = GossipsubConfig::default();
        c.validate().unwrap();
        assert_eq!((c.mesh_n, c.mesh_n_low, c.mesh_n_high), (6, 4, 12));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(1000));
        assert_eq!((c.history_length, c.history_gossip), (5, 3));
        assert_eq!(c.topic("updates").as_str(), "ggen-marketplace/updates");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = GossipsubConfig::default();
        let text = toml::to_string(&c).unwrap();
        let back: GossipsubConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: GossipsubConfig = toml::from_str("mesh_n = 8\nmesh_n_high = 16\n").unwrap();
        assert_eq!(partial.mesh_n, 8);
        assert_eq!(partial.mesh_n_low, 4);
    }
}
