//! Peer scoring (gossipsub v1.1), sans-IO.
//!
//! [`PeerScore`] keeps, for every peer the router tells it about, the counters behind the
//! v1.1 score function and evaluates it on demand:
//!
//! ```text
//! score = min(Σ_topics topic_weight · (P1·w1 + P2·w2 + P3·w3 + P3b·w3b + P4·w4), cap)
//!       + P5·w5 + P6·w6 + P7·w7
//! ```
//!
//! - P1: whole quanta of time in our mesh for the topic, capped (only while in the mesh).
//! - P2: first deliveries of valid messages (capped, decaying).
//! - P3: mesh delivery deficit: once the peer has been in the mesh for the activation time,
//!   `(threshold − deliveries)²` while its deliveries are below the threshold.
//! - P3b: sticky mesh failure penalty: the P3 deficit squared, added when the peer leaves
//!   the mesh (PRUNE or disconnection) with a deficit; decays.
//! - P4: invalid messages, squared (decaying).
//! - P5: the application's own score for the peer.
//! - P6: IP colocation: for each of the peer's IPs shared by more scored peers than the
//!   threshold, the surplus squared.
//! - P7: behaviour penalty above its threshold, squared (decaying).
//!
//! The cap applies only to a positive topic sum: penalties are never capped.
//!
//! Owns: the per-peer counters, the peers-per-IP counts and the message delivery records
//! (who delivered which message, and whether it turned out valid). Does not touch the mesh,
//! the seen cache or any IO; time comes in as `now` on every call and decay happens in
//! [`PeerScore::refresh`], which the router calls every heartbeat.
//!
//! Memory is bounded: delivery records expire after two minutes and are capped in number
//! (oldest evicted first); each record remembers a bounded number of peers; each peer keeps
//! a bounded number of topics and IPs; disconnected peers are retained for `retain_score`
//! and capped in number (the most favourable retained score is forgotten first, so that an
//! attacker cannot flush a bad score by churning identities).

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::config::{PeerScoreParams, TopicScoreParams};
use super::message::{MessageId, Topic};
use crate::identity::PeerId;

/// How long a message delivery record is kept (matches the default seen cache, 120 s).
const DELIVERY_RECORD_TTL: Duration = Duration::from_secs(120);
/// Delivery records kept at most; the oldest is evicted beyond it.
const MAX_DELIVERY_RECORDS: usize = 100_000;
/// Peers remembered per delivery record (the first sender plus duplicate senders).
const MAX_PEERS_PER_RECORD: usize = 64;
/// Topics tracked per peer (at least the default `max_subscribed_topics`, so that every
/// mesh we can be in fits).
const MAX_TOPICS_PER_PEER: usize = 1024;
/// IP addresses tracked per peer.
const MAX_IPS_PER_PEER: usize = 16;
/// Disconnected peers whose score is retained, at most.
const MAX_RETAINED_PEERS: usize = 10_000;

/// Why a received message was rejected; decides whether (and whom) P4 penalises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// The validator found the message invalid: the first sender and every peer that
    /// forwarded it while it was pending validation are penalised.
    Invalid,
    /// The publisher signature is missing or wrong: the sender is penalised. The message id
    /// is not trusted (it may collide with a genuine message), so no record is touched.
    InvalidSignature,
    /// The message claims to come from us but we did not publish it: the sender is
    /// penalised, as for `InvalidSignature`.
    SelfOrigin,
    /// The validator asked to drop the message without penalty.
    ValidationIgnored,
    /// Our own validation queue was full: our fault, nobody is penalised.
    ValidationQueueFull,
    /// The publisher is on our blacklist: the forwarder could not know, nobody is penalised.
    BlacklistedSource,
}

/// A peer's score and what it is made of, for diagnostics and metrics.
///
/// `score` equals the topic sum (each topic's `score`, summed and capped at
/// `topic_score_cap` when positive) plus `app_specific`, `ip_colocation` and
/// `behaviour_penalty`, which are weighted contributions, not raw counters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoreSnapshot {
    /// The total score.
    pub score: f64,
    /// Per-topic parts, ordered by topic.
    pub topics: Vec<TopicScoreSnapshot>,
    /// P5 contribution: application score × `app_specific_weight`.
    pub app_specific: f64,
    /// P6 contribution: Σ surplus² × `ip_colocation_factor_weight`.
    pub ip_colocation: f64,
    /// P7 contribution: excess² × `behaviour_penalty_weight`.
    pub behaviour_penalty: f64,
}

/// One topic's counters for a peer and the weighted part they add to its score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicScoreSnapshot {
    /// The topic.
    pub topic: Topic,
    /// Whether the peer is in our mesh for the topic.
    pub in_mesh: bool,
    /// Seconds since the peer was grafted (0 when not in the mesh).
    pub time_in_mesh_secs: f64,
    /// P2 counter.
    pub first_message_deliveries: f64,
    /// P3 counter.
    pub mesh_message_deliveries: f64,
    /// P3b counter (sum of squared deficits, decayed).
    pub mesh_failure_penalty: f64,
    /// P4 counter (before squaring).
    pub invalid_message_deliveries: f64,
    /// This topic's contribution: (P1…P4 weighted) × `topic_weight`, before the topic cap.
    pub score: f64,
}

/// Internal bounds; constants in production, smaller in tests.
#[derive(Clone, Debug)]
struct Limits {
    record_ttl: Duration,
    max_records: usize,
    max_peers_per_record: usize,
    max_topics_per_peer: usize,
    max_ips_per_peer: usize,
    max_retained: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            record_ttl: DELIVERY_RECORD_TTL,
            max_records: MAX_DELIVERY_RECORDS,
            max_peers_per_record: MAX_PEERS_PER_RECORD,
            max_topics_per_peer: MAX_TOPICS_PER_PEER,
            max_ips_per_peer: MAX_IPS_PER_PEER,
            max_retained: MAX_RETAINED_PEERS,
        }
    }
}

/// Counters of one peer in one topic.
#[derive(Clone, Debug, Default)]
struct TopicStats {
    /// When the peer was grafted, while it is in our mesh for the topic.
    grafted: Option<Instant>,
    first_message_deliveries: f64,
    mesh_message_deliveries: f64,
    mesh_failure_penalty: f64,
    invalid_message_deliveries: f64,
}

impl TopicStats {
    /// True once the peer has been in the mesh for the activation time (P3 counts).
    fn mesh_deliveries_active(&self, tp: &TopicScoreParams, now: Instant) -> bool {
        self.grafted.is_some_and(|g| {
            now.saturating_duration_since(g) >= tp.mesh_message_deliveries_activation
        })
    }

    /// The P3 deficit squared, if P3 is enabled, active and the peer is below the threshold.
    fn mesh_deficit_squared(&self, tp: &TopicScoreParams, now: Instant) -> f64 {
        if tp.mesh_message_deliveries_weight == 0.0 || !self.mesh_deliveries_active(tp, now) {
            return 0.0;
        }
        let deficit = tp.mesh_message_deliveries_threshold - self.mesh_message_deliveries;
        if deficit > 0.0 {
            deficit * deficit
        } else {
            0.0
        }
    }

    /// Leaves the mesh, adding the sticky P3b penalty if the peer leaves with a deficit.
    fn leave_mesh(&mut self, tp: &TopicScoreParams, now: Instant) {
        if self.grafted.is_some() {
            self.mesh_failure_penalty += self.mesh_deficit_squared(tp, now);
            self.grafted = None;
        }
    }

    /// This topic's weighted contribution (before the topic cap).
    fn score(&self, tp: &TopicScoreParams, now: Instant) -> f64 {
        let mut s = 0.0;
        if let Some(g) = self.grafted {
            let in_mesh = now.saturating_duration_since(g).as_nanos();
            let quanta = (in_mesh / tp.time_in_mesh_quantum.as_nanos().max(1)) as f64;
            s += quanta.min(tp.time_in_mesh_cap) * tp.time_in_mesh_weight;
        }
        s += self.first_message_deliveries * tp.first_message_deliveries_weight;
        s += self.mesh_deficit_squared(tp, now) * tp.mesh_message_deliveries_weight;
        s += self.mesh_failure_penalty * tp.mesh_failure_penalty_weight;
        s += self.invalid_message_deliveries
            * self.invalid_message_deliveries
            * tp.invalid_message_deliveries_weight;
        s * tp.topic_weight
    }

    /// True if the entry carries nothing and can be forgotten.
    fn is_empty(&self) -> bool {
        self.grafted.is_none()
            && self.first_message_deliveries == 0.0
            && self.mesh_message_deliveries == 0.0
            && self.mesh_failure_penalty == 0.0
            && self.invalid_message_deliveries == 0.0
    }
}

/// Everything scored about one peer.
#[derive(Clone, Debug)]
struct PeerStats {
    connected: bool,
    /// While disconnected: when the retained stats are dropped (`None`: never, only when
    /// `now + retain_score` overflows).
    expires: Option<Instant>,
    topics: BTreeMap<Topic, TopicStats>,
    /// Canonical IPs of the peer, each counted once in `peers_per_ip`.
    ips: Vec<IpAddr>,
    app_score: f64,
    behaviour_penalty: f64,
}

impl PeerStats {
    fn new() -> Self {
        Self {
            connected: true,
            expires: None,
            topics: BTreeMap::new(),
            ips: Vec::new(),
            app_score: 0.0,
            behaviour_penalty: 0.0,
        }
    }

    /// The stats for `topic`, created if needed. When the peer already tracks the maximum
    /// number of topics, the non-mesh entry most favourable to the peer is forgotten (only if
    /// it is not negative, so forgetting never helps the peer); failing that, `None`.
    fn topic_mut(
        &mut self,
        topic: &Topic,
        params: &PeerScoreParams,
        max_topics: usize,
        now: Instant,
    ) -> Option<&mut TopicStats> {
        if !self.topics.contains_key(topic) {
            if self.topics.len() >= max_topics {
                let victim = self
                    .topics
                    .iter()
                    .filter(|(_, ts)| ts.grafted.is_none())
                    .map(|(t, ts)| (ts.score(params.topic(t), now), t))
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                match victim {
                    Some((s, t)) if s >= 0.0 => {
                        let t = t.clone();
                        self.topics.remove(&t);
                    }
                    _ => return None,
                }
            }
            self.topics.insert(topic.clone(), TopicStats::default());
        }
        self.topics.get_mut(topic)
    }
}

/// What became of a message, as far as scoring is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeliveryStatus {
    /// Received, waiting for the validator.
    Pending,
    /// Validated and delivered.
    Valid,
    /// Rejected as invalid.
    Invalid,
    /// Dropped without penalty.
    Ignored,
}

/// One message's delivery record.
#[derive(Clone, Debug)]
struct DeliveryRecord {
    status: DeliveryStatus,
    first_seen: Instant,
    /// When it was found valid (start of the P3 duplicate window).
    validated: Option<Instant>,
    /// Peers that delivered it (first sender included), each once; emptied once the
    /// message is invalid or ignored.
    peers: Vec<PeerId>,
}

impl DeliveryRecord {
    /// A pending record, first seen `now`, with no peers yet.
    fn new(now: Instant) -> Self {
        Self {
            status: DeliveryStatus::Pending,
            first_seen: now,
            validated: None,
            peers: Vec::new(),
        }
    }
}

/// Delivery records, bounded in age and number.
#[derive(Clone, Debug, Default)]
struct DeliveryRecords {
    records: HashMap<MessageId, DeliveryRecord>,
    /// Ids in insertion order (oldest first); every record's id appears exactly once.
    order: VecDeque<MessageId>,
}

impl DeliveryRecords {
    /// The record for `id`, created (pending, seen now) if absent; evicts the oldest
    /// record when full.
    fn get_or_create(
        &mut self,
        id: &MessageId,
        now: Instant,
        limits: &Limits,
    ) -> &mut DeliveryRecord {
        if !self.records.contains_key(id) {
            while self.records.len() >= limits.max_records.max(1) {
                match self.order.pop_front() {
                    Some(old) => {
                        self.records.remove(&old);
                    }
                    None => break,
                }
            }
            // A private copy: the id may be a slice of a large received frame.
            let own = MessageId(Bytes::copy_from_slice(&id.0));
            self.order.push_back(own.clone());
            self.records.insert(own, DeliveryRecord::new(now));
        }
        self.records
            .entry(id.clone())
            .or_insert_with(|| DeliveryRecord::new(now))
    }

    /// Drops records first seen `ttl` or longer ago.
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while let Some(front) = self.order.front() {
            let expired = self
                .records
                .get(front)
                .is_none_or(|r| now.saturating_duration_since(r.first_seen) >= ttl);
            if !expired {
                break;
            }
            if let Some(id) = self.order.pop_front() {
                self.records.remove(&id);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

/// Decays a counter by `factor` and zeroes it below `to_zero`.
fn decay(value: &mut f64, factor: f64, to_zero: f64) {
    *value *= factor;
    if *value < to_zero {
        *value = 0.0;
    }
}

/// Decrements the peer count of `ip`, forgetting the IP at zero.
fn release_ip(counts: &mut HashMap<IpAddr, usize>, ip: &IpAddr) {
    if let Some(n) = counts.get_mut(ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(ip);
        }
    }
}

/// Gossipsub v1.1 peer scoring: counters per peer and topic, decay, retention of
/// disconnected peers, and the delivery records that feed P2, P3 and P4. Sans-IO: every
/// call takes the current time; [`PeerScore::refresh`] applies decay and expiry.
#[derive(Clone, Debug)]
pub struct PeerScore {
    params: PeerScoreParams,
    /// `ip_colocation_factor_whitelist`, canonicalised.
    whitelist: HashSet<IpAddr>,
    peers: HashMap<PeerId, PeerStats>,
    /// Scored peers (connected or retained) per canonical IP.
    peers_per_ip: HashMap<IpAddr, usize>,
    deliveries: DeliveryRecords,
    /// Start of the current decay interval.
    last_decay: Instant,
    /// Number of disconnected (retained) peers in `peers`.
    retained: usize,
    /// No retained peer expires before this (a lower bound; `None`: none retained).
    next_expiry: Option<Instant>,
    limits: Limits,
}

impl PeerScore {
    /// Scoring with these parameters; decay intervals are counted from `now`.
    pub fn new(params: PeerScoreParams, now: Instant) -> Self {
        let whitelist = params
            .ip_colocation_factor_whitelist
            .iter()
            .map(|ip| ip.to_canonical())
            .collect();
        Self {
            params,
            whitelist,
            peers: HashMap::new(),
            peers_per_ip: HashMap::new(),
            deliveries: DeliveryRecords::default(),
            last_decay: now,
            retained: 0,
            next_expiry: None,
            limits: Limits::default(),
        }
    }

    /// The parameters in use.
    pub fn params(&self) -> &PeerScoreParams {
        &self.params
    }

    /// A peer connected. A peer whose score is still retained from an earlier connection
    /// gets its old counters back (so a bad score is not reset by reconnecting).
    pub fn add_peer(&mut self, _now: Instant, peer: PeerId) {
        match self.peers.get_mut(&peer) {
            Some(stats) => {
                if !stats.connected {
                    stats.connected = true;
                    stats.expires = None;
                    self.retained = self.retained.saturating_sub(1);
                }
            }
            None => {
                self.peers.insert(peer, PeerStats::new());
            }
        }
    }

    /// A peer disconnected. It leaves every mesh (with the P3b penalty where it leaves with
    /// a deficit), its P2 credit is cleared, and its stats are retained for `retain_score`:
    /// they neither decay nor earn P1 until it reconnects or they expire.
    pub fn remove_peer(&mut self, now: Instant, peer: &PeerId) {
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        if !stats.connected {
            return;
        }
        for (topic, ts) in stats.topics.iter_mut() {
            ts.leave_mesh(self.params.topic(topic), now);
            ts.first_message_deliveries = 0.0;
        }
        stats.topics.retain(|_, ts| !ts.is_empty());
        if self.params.retain_score.is_zero() {
            self.drop_peer(peer);
            return;
        }
        stats.connected = false;
        stats.expires = now.checked_add(self.params.retain_score);
        self.retained += 1;
        if let Some(exp) = stats.expires {
            self.next_expiry = Some(self.next_expiry.map_or(exp, |t| t.min(exp)));
        }
        self.evict_retained_over_limit(now);
    }

    /// The peer is reachable at `ip` (an address of one of its connections). Ignored for
    /// unknown peers and beyond a small number of IPs per peer.
    pub fn add_ip(&mut self, peer: &PeerId, ip: IpAddr) {
        let ip = ip.to_canonical();
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        if stats.ips.contains(&ip) || stats.ips.len() >= self.limits.max_ips_per_peer {
            return;
        }
        stats.ips.push(ip);
        *self.peers_per_ip.entry(ip).or_insert(0) += 1;
    }

    /// The peer is no longer reachable at `ip`.
    pub fn remove_ip(&mut self, peer: &PeerId, ip: &IpAddr) {
        let ip = ip.to_canonical();
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some(pos) = stats.ips.iter().position(|x| *x == ip) {
            stats.ips.swap_remove(pos);
            release_ip(&mut self.peers_per_ip, &ip);
        }
    }

    /// The peer joined our mesh for `topic`: P1 starts counting, and P3 after the activation
    /// time. A graft of a peer already in the mesh keeps the original graft time.
    pub fn graft(&mut self, now: Instant, peer: &PeerId, topic: &Topic) {
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        if !stats.connected {
            return;
        }
        if let Some(ts) = stats.topic_mut(topic, &self.params, self.limits.max_topics_per_peer, now)
        {
            if ts.grafted.is_none() {
                ts.grafted = Some(now);
            }
        }
    }

    /// The peer left our mesh for `topic` (either side pruned): P1 stops, and if P3 was
    /// active with a deficit, the deficit squared is added to the sticky P3b penalty.
    pub fn prune(&mut self, now: Instant, peer: &PeerId, topic: &Topic) {
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some(ts) = stats.topics.get_mut(topic) {
            ts.leave_mesh(self.params.topic(topic), now);
        }
    }

    /// First receipt of message `id` from `from`, before validation: opens its delivery
    /// record, so that duplicates arriving while it is validated are remembered. Nothing
    /// happens if the message already has a record.
    pub fn validate_message(
        &mut self,
        now: Instant,
        from: &PeerId,
        id: &MessageId,
        _topic: &Topic,
    ) {
        if self.deliveries.records.contains_key(id) {
            return;
        }
        let record = self.deliveries.get_or_create(id, now, &self.limits);
        record.peers.push(*from);
    }

    /// Message `id`, first received from `from`, was validated and delivered: P2 (and P3 if
    /// `from` is in our mesh) for `from`, and P3 for the mesh peers that sent duplicates
    /// while it was pending. Ignored unless the message is new or pending.
    pub fn deliver_message(&mut self, now: Instant, from: &PeerId, id: &MessageId, topic: &Topic) {
        let max_peers = self.limits.max_peers_per_record;
        let record = self.deliveries.get_or_create(id, now, &self.limits);
        if record.status != DeliveryStatus::Pending {
            return;
        }
        record.status = DeliveryStatus::Valid;
        record.validated = Some(now);
        let earlier: Vec<PeerId> = record
            .peers
            .iter()
            .filter(|p| *p != from)
            .copied()
            .collect();
        if !record.peers.contains(from) && record.peers.len() < max_peers.max(1) {
            record.peers.push(*from);
        }
        self.mark_first_delivery(now, from, topic);
        for p in &earlier {
            self.mark_mesh_delivery(now, p, topic);
        }
    }

    /// Message `id`, first received from `from`, was rejected for `reason`; see
    /// [`RejectReason`] for who is penalised (P4).
    pub fn reject_message(
        &mut self,
        now: Instant,
        from: &PeerId,
        id: &MessageId,
        topic: &Topic,
        reason: RejectReason,
    ) {
        match reason {
            RejectReason::InvalidSignature | RejectReason::SelfOrigin => {
                self.mark_invalid(now, from, topic);
            }
            RejectReason::ValidationQueueFull | RejectReason::BlacklistedSource => {}
            RejectReason::ValidationIgnored => {
                let record = self.deliveries.get_or_create(id, now, &self.limits);
                if record.status == DeliveryStatus::Pending {
                    record.status = DeliveryStatus::Ignored;
                    record.peers = Vec::new();
                }
            }
            RejectReason::Invalid => {
                let record = self.deliveries.get_or_create(id, now, &self.limits);
                if record.status != DeliveryStatus::Pending {
                    return;
                }
                record.status = DeliveryStatus::Invalid;
                let forwarders = std::mem::take(&mut record.peers);
                self.mark_invalid(now, from, topic);
                for p in forwarders.iter().filter(|p| *p != from) {
                    self.mark_invalid(now, p, topic);
                }
            }
        }
    }

    /// `from` sent message `id` again (we had already received it). While the message is
    /// pending, the peer is remembered and credited if it validates; once valid, a mesh peer
    /// gets P3 if within `mesh_message_deliveries_window` of validation (once per message);
    /// once invalid, the peer gets P4. Messages without a record (unknown or expired) and
    /// ignored messages change nothing.
    pub fn duplicate_message(
        &mut self,
        now: Instant,
        from: &PeerId,
        id: &MessageId,
        topic: &Topic,
    ) {
        let max_peers = self.limits.max_peers_per_record.max(1);
        let Some(record) = self.deliveries.records.get_mut(id) else {
            return;
        };
        match record.status {
            DeliveryStatus::Pending => {
                if !record.peers.contains(from) && record.peers.len() < max_peers {
                    record.peers.push(*from);
                }
            }
            DeliveryStatus::Valid => {
                // A peer not remembered (record full) gets no credit: no double counting.
                if record.peers.contains(from) || record.peers.len() >= max_peers {
                    return;
                }
                record.peers.push(*from);
                let window = self.params.topic(topic).mesh_message_deliveries_window;
                let in_window = record
                    .validated
                    .is_none_or(|v| now.saturating_duration_since(v) <= window);
                if in_window {
                    self.mark_mesh_delivery(now, from, topic);
                }
            }
            DeliveryStatus::Invalid => self.mark_invalid(now, from, topic),
            DeliveryStatus::Ignored => {}
        }
    }

    /// Adds `count` to the peer's P7 behaviour penalty (broken promises, GRAFT flooding…).
    pub fn add_penalty(&mut self, peer: &PeerId, count: usize) {
        if let Some(stats) = self.peers.get_mut(peer) {
            stats.behaviour_penalty += count as f64;
        }
    }

    /// Sets the peer's application-specific score (P5). Returns false, changing nothing, if
    /// the peer is unknown or the score is not finite.
    pub fn set_application_score(&mut self, peer: &PeerId, score: f64) -> bool {
        if !score.is_finite() {
            return false;
        }
        match self.peers.get_mut(peer) {
            Some(stats) => {
                stats.app_score = score;
                true
            }
            None => false,
        }
    }

    /// The peer's score at `now`; 0.0 for unknown peers. Costs O(its topics + its IPs).
    pub fn score(&self, now: Instant, peer: &PeerId) -> f64 {
        match self.peers.get(peer) {
            Some(stats) => self.parts(now, stats).total(),
            None => 0.0,
        }
    }

    /// The peer's score with its parts, or `None` for unknown peers.
    pub fn snapshot(&self, now: Instant, peer: &PeerId) -> Option<ScoreSnapshot> {
        let stats = self.peers.get(peer)?;
        let parts = self.parts(now, stats);
        let topics = stats
            .topics
            .iter()
            .map(|(topic, ts)| TopicScoreSnapshot {
                topic: topic.clone(),
                in_mesh: ts.grafted.is_some(),
                time_in_mesh_secs: ts
                    .grafted
                    .map_or(0.0, |g| now.saturating_duration_since(g).as_secs_f64()),
                first_message_deliveries: ts.first_message_deliveries,
                mesh_message_deliveries: ts.mesh_message_deliveries,
                mesh_failure_penalty: ts.mesh_failure_penalty,
                invalid_message_deliveries: ts.invalid_message_deliveries,
                score: ts.score(self.params.topic(topic), now),
            })
            .collect();
        Some(ScoreSnapshot {
            score: parts.total(),
            topics,
            app_specific: parts.app_specific,
            ip_colocation: parts.ip_colocation,
            behaviour_penalty: parts.behaviour_penalty,
        })
    }

    /// Heartbeat work: expires old delivery records and retained peers, and applies one
    /// decay step per whole `decay_interval` elapsed since the last step. Cheap when no step
    /// is due.
    pub fn refresh(&mut self, now: Instant) {
        self.deliveries.expire(now, self.limits.record_ttl);
        if self.next_expiry.is_some_and(|t| now >= t) {
            self.expire_retained(now);
        }
        let steps = self.take_decay_steps(now);
        if steps > 0 {
            self.decay(steps);
        }
    }

    /// Peers tracked, connected or retained.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    // ---- internals ----

    /// +1 first delivery (P2) and, in the mesh, +1 mesh delivery (P3), both capped.
    fn mark_first_delivery(&mut self, now: Instant, peer: &PeerId, topic: &Topic) {
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        let tp = self.params.topic(topic);
        let Some(ts) = stats.topic_mut(topic, &self.params, self.limits.max_topics_per_peer, now)
        else {
            return;
        };
        ts.first_message_deliveries =
            (ts.first_message_deliveries + 1.0).min(tp.first_message_deliveries_cap);
        if ts.grafted.is_some() {
            ts.mesh_message_deliveries =
                (ts.mesh_message_deliveries + 1.0).min(tp.mesh_message_deliveries_cap);
        }
    }

    /// +1 mesh delivery (P3, capped) if the peer is in our mesh for the topic.
    fn mark_mesh_delivery(&mut self, _now: Instant, peer: &PeerId, topic: &Topic) {
        let Some(ts) = self
            .peers
            .get_mut(peer)
            .and_then(|stats| stats.topics.get_mut(topic))
        else {
            return;
        };
        if ts.grafted.is_some() {
            let cap = self.params.topic(topic).mesh_message_deliveries_cap;
            ts.mesh_message_deliveries = (ts.mesh_message_deliveries + 1.0).min(cap);
        }
    }

    /// +1 invalid message (P4).
    fn mark_invalid(&mut self, now: Instant, peer: &PeerId, topic: &Topic) {
        let Some(stats) = self.peers.get_mut(peer) else {
            return;
        };
        if let Some(ts) = stats.topic_mut(topic, &self.params, self.limits.max_topics_per_peer, now)
        {
            ts.invalid_message_deliveries += 1.0;
        }
    }

    /// The weighted parts of a peer's score.
    fn parts(&self, now: Instant, stats: &PeerStats) -> Parts {
        let p = &self.params;
        let mut topics = 0.0;
        for (topic, ts) in &stats.topics {
            topics += ts.score(p.topic(topic), now);
        }
        if p.topic_score_cap > 0.0 && topics > p.topic_score_cap {
            topics = p.topic_score_cap;
        }
        let mut surplus_sq = 0.0;
        for ip in &stats.ips {
            if self.whitelist.contains(ip) || (p.ip_colocation_exempt_loopback && ip.is_loopback())
            {
                continue;
            }
            let sharing = self.peers_per_ip.get(ip).copied().unwrap_or(0) as f64;
            let surplus = sharing - p.ip_colocation_factor_threshold;
            if surplus > 0.0 {
                surplus_sq += surplus * surplus;
            }
        }
        let excess = stats.behaviour_penalty - p.behaviour_penalty_threshold;
        let excess_sq = if excess > 0.0 { excess * excess } else { 0.0 };
        Parts {
            topics,
            app_specific: stats.app_score * p.app_specific_weight,
            ip_colocation: surplus_sq * p.ip_colocation_factor_weight,
            behaviour_penalty: excess_sq * p.behaviour_penalty_weight,
        }
    }

    /// Whole decay intervals elapsed since the last step; advances the interval start by
    /// that many intervals. A zero interval decays one step per call.
    fn take_decay_steps(&mut self, now: Instant) -> u128 {
        let elapsed = now.saturating_duration_since(self.last_decay);
        let interval = self.params.decay_interval.as_nanos();
        if interval == 0 {
            self.last_decay = now;
            return 1;
        }
        let steps = elapsed.as_nanos() / interval;
        if steps > 0 {
            let rest = u64::try_from(elapsed.as_nanos() % interval).unwrap_or(u64::MAX);
            self.last_decay = now.checked_sub(Duration::from_nanos(rest)).unwrap_or(now);
        }
        steps
    }

    /// Applies `steps` decay steps to every connected peer (retained peers are frozen) and
    /// forgets topic entries left empty.
    fn decay(&mut self, steps: u128) {
        let n = i32::try_from(steps).unwrap_or(i32::MAX);
        let p = &self.params;
        let to_zero = p.decay_to_zero;
        let behaviour = p.behaviour_penalty_decay.powi(n);
        for stats in self.peers.values_mut() {
            if !stats.connected {
                continue;
            }
            for (topic, ts) in stats.topics.iter_mut() {
                let tp = p.topic(topic);
                decay(
                    &mut ts.first_message_deliveries,
                    tp.first_message_deliveries_decay.powi(n),
                    to_zero,
                );
                decay(
                    &mut ts.mesh_message_deliveries,
                    tp.mesh_message_deliveries_decay.powi(n),
                    to_zero,
                );
                decay(
                    &mut ts.mesh_failure_penalty,
                    tp.mesh_failure_penalty_decay.powi(n),
                    to_zero,
                );
                decay(
                    &mut ts.invalid_message_deliveries,
                    tp.invalid_message_deliveries_decay.powi(n),
                    to_zero,
                );
            }
            stats.topics.retain(|_, ts| !ts.is_empty());
            decay(&mut stats.behaviour_penalty, behaviour, to_zero);
        }
    }

    /// Drops retained peers whose retention has run out.
    fn expire_retained(&mut self, now: Instant) {
        let counts = &mut self.peers_per_ip;
        let mut next: Option<Instant> = None;
        let mut dropped = 0usize;
        self.peers.retain(|_, stats| {
            if stats.connected {
                return true;
            }
            match stats.expires {
                Some(t) if t <= now => {
                    for ip in &stats.ips {
                        release_ip(counts, ip);
                    }
                    dropped += 1;
                    false
                }
                Some(t) => {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    true
                }
                None => true,
            }
        });
        self.retained = self.retained.saturating_sub(dropped);
        self.next_expiry = next;
    }

    /// While too many peers are retained, forgets the one whose score is most favourable to
    /// it (ties: the greatest id), so the penalties worth remembering stay.
    fn evict_retained_over_limit(&mut self, now: Instant) {
        while self.retained > self.limits.max_retained {
            let victim = self
                .peers
                .iter()
                .filter(|(_, s)| !s.connected)
                .map(|(peer, s)| (self.parts(now, s).total(), *peer))
                .max_by(|a, b| match a.0.total_cmp(&b.0) {
                    Ordering::Equal => a.1.cmp(&b.1),
                    o => o,
                });
            let Some((_, peer)) = victim else {
                break;
            };
            self.drop_peer(&peer);
        }
    }

    /// Forgets a peer entirely.
    fn drop_peer(&mut self, peer: &PeerId) {
        if let Some(stats) = self.peers.remove(peer) {
            for ip in &stats.ips {
                release_ip(&mut self.peers_per_ip, ip);
            }
            if !stats.connected {
                self.retained = self.retained.saturating_sub(1);
            }
        }
    }
}

/// The weighted parts of one peer's score.
struct Parts {
    /// Topic sum, after the cap.
    topics: f64,
    app_specific: f64,
    ip_colocation: f64,
    behaviour_penalty: f64,
}

impl Parts {
    fn total(&self) -> f64 {
        self.topics + self.app_specific + self.ip_colocation + self.behaviour_penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn peer(n: u8) -> PeerId {
        PeerId::from_public_key_bytes([n; 32])
    }

    fn mid(n: u32) -> MessageId {
        MessageId(Bytes::copy_from_slice(&n.to_be_bytes()))
    }

    fn topic() -> Topic {
        Topic::new("t")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A topic whose every component is switched off.
    fn quiet_topic() -> TopicScoreParams {
        TopicScoreParams {
            topic_weight: 1.0,
            time_in_mesh_weight: 0.0,
            time_in_mesh_quantum: secs(1),
            time_in_mesh_cap: 0.0,
            first_message_deliveries_weight: 0.0,
            first_message_deliveries_decay: 1.0,
            first_message_deliveries_cap: 1000.0,
            mesh_message_deliveries_weight: 0.0,
            mesh_message_deliveries_decay: 1.0,
            mesh_message_deliveries_cap: 1000.0,
            mesh_message_deliveries_threshold: 0.0,
            mesh_message_deliveries_window: ms(10),
            mesh_message_deliveries_activation: secs(0),
            mesh_failure_penalty_weight: 0.0,
            mesh_failure_penalty_decay: 1.0,
            invalid_message_deliveries_weight: 0.0,
            invalid_message_deliveries_decay: 1.0,
        }
    }

    /// Parameters with every component switched off and no decay.
    fn quiet(topic_params: TopicScoreParams) -> PeerScoreParams {
        PeerScoreParams {
            topics: BTreeMap::new(),
            default_topic: topic_params,
            topic_score_cap: 0.0,
            app_specific_weight: 0.0,
            ip_colocation_factor_weight: 0.0,
            ip_colocation_factor_threshold: 3.0,
            ip_colocation_factor_whitelist: Vec::new(),
            ip_colocation_exempt_loopback: true,
            behaviour_penalty_weight: 0.0,
            behaviour_penalty_threshold: 0.0,
            behaviour_penalty_decay: 1.0,
            decay_interval: secs(1),
            decay_to_zero: 0.01,
            retain_score: secs(3600),
        }
    }

    fn scorer(params: PeerScoreParams, t0: Instant, peers: &[PeerId]) -> PeerScore {
        let mut s = PeerScore::new(params, t0);
        for p in peers {
            s.add_peer(t0, *p);
        }
        s
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[track_caller]
    fn assert_score(s: &PeerScore, now: Instant, p: &PeerId, want: f64) {
        let got = s.score(now, p);
        assert!(close(got, want), "score {got}, want {want}");
    }

    fn topic_snap(s: &PeerScore, now: Instant, p: &PeerId) -> TopicScoreSnapshot {
        s.snapshot(now, p)
            .and_then(|snap| snap.topics.into_iter().find(|t| t.topic == topic()))
            .expect("topic stats")
    }

    #[test]
    fn p1_counts_whole_quanta_in_mesh_and_caps() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut tp = quiet_topic();
        tp.time_in_mesh_weight = 0.5;
        tp.time_in_mesh_cap = 10.0;
        let mut s = scorer(quiet(tp), t0, &[a]);
        assert_score(&s, t0, &a, 0.0);
        s.graft(t0, &a, &topic());
        assert_score(&s, t0 + ms(999), &a, 0.0);
        assert_score(&s, t0 + ms(3500), &a, 1.5);
        assert_score(&s, t0 + secs(100), &a, 5.0);
        let snap = topic_snap(&s, t0 + ms(3500), &a);
        assert!(snap.in_mesh && close(snap.time_in_mesh_secs, 3.5));
        // A second graft while in the mesh keeps the original graft time.
        s.graft(t0 + secs(5), &a, &topic());
        assert_score(&s, t0 + secs(6), &a, 3.0);
        s.prune(t0 + secs(100), &a, &topic());
        assert_score(&s, t0 + secs(101), &a, 0.0);
    }

    #[test]
    fn p2_counts_first_deliveries_caps_and_decays() {
        let t0 = Instant::now();
        let (a, b) = (peer(1), peer(2));
        let mut tp = quiet_topic();
        tp.first_message_deliveries_weight = 2.0;
        tp.first_message_deliveries_cap = 3.0;
        tp.first_message_deliveries_decay = 0.5;
        let mut params = quiet(tp);
        params.decay_to_zero = 0.1;
        let mut s = scorer(params, t0, &[a, b]);
        s.deliver_message(t0, &a, &mid(1), &topic());
        assert_score(&s, t0, &a, 2.0);
        // A duplicate earns no P2, and delivering the same message again changes nothing.
        s.duplicate_message(t0, &b, &mid(1), &topic());
        s.deliver_message(t0, &a, &mid(1), &topic());
        assert_score(&s, t0, &a, 2.0);
        assert_score(&s, t0, &b, 0.0);
        for i in 2..=5 {
            s.deliver_message(t0, &a, &mid(i), &topic());
        }
        assert!(close(topic_snap(&s, t0, &a).first_message_deliveries, 3.0));
        assert_score(&s, t0, &a, 6.0);
        s.refresh(t0 + secs(1));
        assert_score(&s, t0 + secs(1), &a, 3.0);
        s.refresh(t0 + secs(2));
        assert_score(&s, t0 + secs(2), &a, 1.5);
    }

    #[test]
    fn p3_deficit_counts_only_after_activation_and_with_a_weight() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut tp = quiet_topic();
        tp.mesh_message_deliveries_weight = -1.0;
        tp.mesh_message_deliveries_threshold = 4.0;
        tp.mesh_message_deliveries_activation = secs(5);
        let mut s = scorer(quiet(tp.clone()), t0, &[a]);
        s.graft(t0, &a, &topic());
        s.deliver_message(t0 + secs(1), &a, &mid(1), &topic());
        assert!(close(topic_snap(&s, t0, &a).mesh_message_deliveries, 1.0));
        assert_score(&s, t0 + secs(4), &a, 0.0);
        // Active: deficit 3 → −9.
        assert_score(&s, t0 + secs(5), &a, -9.0);
        s.deliver_message(t0 + secs(6), &a, &mid(2), &topic());
        assert_score(&s, t0 + secs(6), &a, -4.0);
        // Not in the mesh: no P3 (but first deliveries still do not count as mesh ones).
        let b = peer(2);
        s.add_peer(t0, b);
        s.deliver_message(t0, &b, &mid(3), &topic());
        assert!(close(topic_snap(&s, t0, &b).mesh_message_deliveries, 0.0));

        // Weight 0: neither P3 nor P3b, whatever the deficit.
        tp.mesh_message_deliveries_weight = 0.0;
        tp.mesh_failure_penalty_weight = -1.0;
        let mut s = scorer(quiet(tp), t0, &[a]);
        s.graft(t0, &a, &topic());
        assert_score(&s, t0 + secs(10), &a, 0.0);
        s.prune(t0 + secs(10), &a, &topic());
        assert_score(&s, t0 + secs(10), &a, 0.0);
    }

    #[test]
    fn p3_duplicates_count_once_within_the_window_or_while_pending() {
        let t0 = Instant::now();
        let (a, b, c, d) = (peer(1), peer(2), peer(3), peer(4));
        let mut tp = quiet_topic();
        tp.mesh_message_deliveries_weight = -1.0;
        tp.mesh_message_deliveries_threshold = 3.0;
        tp.mesh_message_deliveries_window = ms(10);
        let mut s = scorer(quiet(tp), t0, &[a, b, c, d]);
        for p in [a, b, c] {
            s.graft(t0, &p, &topic());
        }
        s.deliver_message(t0, &a, &mid(1), &topic());
        s.duplicate_message(t0 + ms(5), &b, &mid(1), &topic());
        s.duplicate_message(t0 + ms(6), &b, &mid(1), &topic());
        s.duplicate_message(t0 + ms(7), &a, &mid(1), &topic());
        s.duplicate_message(t0 + ms(20), &c, &mid(1), &topic());
        let now = t0 + ms(20);
        assert_score(&s, now, &a, -4.0);
        assert_score(&s, now, &b, -4.0);
        assert_score(&s, now, &c, -9.0);

        // Pending: duplicates are remembered and credited at validation, however late.
        s.validate_message(t0 + secs(1), &a, &mid(2), &topic());
        s.duplicate_message(t0 + secs(1), &b, &mid(2), &topic());
        s.duplicate_message(t0 + secs(1), &d, &mid(2), &topic());
        s.duplicate_message(t0 + secs(1), &a, &mid(2), &topic());
        s.deliver_message(t0 + secs(3), &a, &mid(2), &topic());
        let now = t0 + secs(3);
        assert_score(&s, now, &a, -1.0);
        assert_score(&s, now, &b, -1.0);
        assert_score(&s, now, &c, -9.0);
        // D is not in the mesh: no P3 stats at all.
        assert!(
            s.snapshot(now, &d)
                .is_some_and(|snap| snap.topics.is_empty())
        );
    }

    #[test]
    fn p3b_is_added_on_prune_with_a_deficit_and_sticks() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut tp = quiet_topic();
        tp.mesh_message_deliveries_weight = -1.0;
        tp.mesh_message_deliveries_threshold = 3.0;
        tp.mesh_message_deliveries_activation = secs(1);
        tp.mesh_failure_penalty_weight = -2.0;
        tp.mesh_failure_penalty_decay = 0.5;
        let mut s = scorer(quiet(tp), t0, &[a]);
        // Pruned before activation: no penalty.
        s.graft(t0, &a, &topic());
        s.prune(t0 + ms(500), &a, &topic());
        assert_score(&s, t0 + ms(500), &a, 0.0);

        s.graft(t0, &a, &topic());
        s.deliver_message(t0, &a, &mid(1), &topic());
        assert_score(&s, t0 + secs(2), &a, -4.0);
        s.prune(t0 + secs(2), &a, &topic());
        // Deficit 2 → P3b 4 → −8; P3 itself stops with the mesh.
        assert_score(&s, t0 + secs(2), &a, -8.0);
        assert!(close(
            topic_snap(&s, t0 + secs(2), &a).mesh_failure_penalty,
            4.0
        ));
        // A second prune adds nothing; grafting again does not clear it.
        s.prune(t0 + secs(2), &a, &topic());
        s.graft(t0 + secs(2), &a, &topic());
        assert_score(&s, t0 + secs(2), &a, -8.0);
        // Three decay steps since t0: P3b 4 × 0.5³ = 0.5 → −1; P3 is active again one
        // second after the new graft: deficit 2 → −4.
        s.refresh(t0 + secs(3));
        assert!(close(
            topic_snap(&s, t0 + secs(3), &a).mesh_failure_penalty,
            0.5
        ));
        assert_score(&s, t0 + secs(3), &a, -5.0);
    }

    #[test]
    fn leaving_by_disconnection_applies_p3b() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut tp = quiet_topic();
        tp.mesh_message_deliveries_weight = -1.0;
        tp.mesh_message_deliveries_threshold = 2.0;
        tp.mesh_failure_penalty_weight = -1.0;
        let mut s = scorer(quiet(tp), t0, &[a]);
        s.graft(t0, &a, &topic());
        s.remove_peer(t0 + secs(1), &a);
        let snap = topic_snap(&s, t0 + secs(1), &a);
        assert!(!snap.in_mesh && close(snap.mesh_failure_penalty, 4.0));
        assert_score(&s, t0 + secs(1), &a, -4.0);
    }

    #[test]
    fn p4_is_squared_and_hits_forwarders_of_invalid_messages() {
        let t0 = Instant::now();
        let [a, b, c, d, e] = [1, 2, 3, 4, 5].map(peer);
        let mut tp = quiet_topic();
        tp.invalid_message_deliveries_weight = -1.0;
        let mut s = scorer(quiet(tp), t0, &[a, b, c, d, e]);
        s.validate_message(t0, &a, &mid(1), &topic());
        s.duplicate_message(t0, &b, &mid(1), &topic());
        s.duplicate_message(t0, &c, &mid(1), &topic());
        s.duplicate_message(t0, &a, &mid(1), &topic());
        s.reject_message(t0, &a, &mid(1), &topic(), RejectReason::Invalid);
        for p in [a, b, c] {
            assert_score(&s, t0, &p, -1.0);
        }
        // A second rejection of the same message is not counted again.
        s.reject_message(t0, &a, &mid(1), &topic(), RejectReason::Invalid);
        assert_score(&s, t0, &a, -1.0);
        // Rejected without a prior validate_message: still counted, and squared.
        s.reject_message(t0, &a, &mid(2), &topic(), RejectReason::Invalid);
        assert_score(&s, t0, &a, -4.0);
        s.reject_message(t0, &a, &mid(3), &topic(), RejectReason::SelfOrigin);
        assert_score(&s, t0, &a, -9.0);
        assert!(close(
            topic_snap(&s, t0, &a).invalid_message_deliveries,
            3.0
        ));
        // Forwarding a known-invalid message after the verdict is penalised too.
        s.duplicate_message(t0, &d, &mid(1), &topic());
        assert_score(&s, t0, &d, -1.0);
        // A bad signature penalises the sender without touching the record.
        s.validate_message(t0, &a, &mid(4), &topic());
        s.reject_message(t0, &e, &mid(4), &topic(), RejectReason::InvalidSignature);
        assert_score(&s, t0, &e, -1.0);
        s.deliver_message(t0, &a, &mid(4), &topic());
        assert_score(&s, t0, &a, -9.0);
    }

    #[test]
    fn ignored_queue_full_and_blacklisted_are_not_penalised() {
        let t0 = Instant::now();
        let [a, b, c] = [1, 2, 3].map(peer);
        let mut tp = quiet_topic();
        tp.invalid_message_deliveries_weight = -1.0;
        tp.first_message_deliveries_weight = 1.0;
        let mut s = scorer(quiet(tp), t0, &[a, b, c]);
        s.validate_message(t0, &a, &mid(1), &topic());
        s.duplicate_message(t0, &b, &mid(1), &topic());
        s.reject_message(t0, &a, &mid(1), &topic(), RejectReason::ValidationIgnored);
        s.duplicate_message(t0, &c, &mid(1), &topic());
        // An ignored message cannot be delivered (nor rejected) later.
        s.deliver_message(t0, &a, &mid(1), &topic());
        s.reject_message(t0, &a, &mid(1), &topic(), RejectReason::Invalid);
        s.validate_message(t0, &a, &mid(2), &topic());
        s.reject_message(t0, &a, &mid(2), &topic(), RejectReason::ValidationQueueFull);
        s.reject_message(t0, &b, &mid(3), &topic(), RejectReason::BlacklistedSource);
        for p in [a, b, c] {
            assert_score(&s, t0, &p, 0.0);
        }
    }

    #[test]
    fn p5_application_score() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut params = quiet(quiet_topic());
        params.app_specific_weight = 2.0;
        let mut s = scorer(params, t0, &[a]);
        assert!(s.set_application_score(&a, 3.0));
        assert_score(&s, t0, &a, 6.0);
        assert!(s.set_application_score(&a, -1.5));
        assert_score(&s, t0, &a, -3.0);
        assert!(!s.set_application_score(&peer(9), 1.0));
        assert!(!s.set_application_score(&a, f64::NAN));
        assert_score(&s, t0, &a, -3.0);
        let snap = s.snapshot(t0, &a).expect("known");
        assert!(close(snap.app_specific, -3.0) && close(snap.score, -3.0));
    }

    #[test]
    fn p6_penalises_the_surplus_on_a_shared_ip_except_exempt_ones() {
        let t0 = Instant::now();
        let peers: Vec<PeerId> = (1..=5).map(peer).collect();
        let shared = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mapped_loopback = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let listed = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let mut params = quiet(quiet_topic());
        params.ip_colocation_factor_weight = -10.0;
        params.ip_colocation_factor_threshold = 3.0;
        params.ip_colocation_factor_whitelist = vec![listed];
        let mut s = scorer(params.clone(), t0, &peers);
        for p in &peers {
            s.add_ip(p, shared);
            s.add_ip(p, shared);
            s.add_ip(p, loopback);
            s.add_ip(p, mapped_loopback);
            s.add_ip(p, listed);
        }
        // 5 peers, threshold 3: surplus 2 → 4 × −10.
        for p in &peers {
            assert_score(&s, t0, p, -40.0);
        }
        let snap = s.snapshot(t0, &peers[0]).expect("known");
        assert!(close(snap.ip_colocation, -40.0));
        s.remove_ip(&peers[0], &shared);
        assert_score(&s, t0, &peers[0], 0.0);
        assert_score(&s, t0, &peers[1], -10.0);

        // Loopback counts when not exempt (the mapped form is the same address).
        params.ip_colocation_exempt_loopback = false;
        let mut s = scorer(params, t0, &peers);
        for p in &peers {
            s.add_ip(p, loopback);
            s.add_ip(p, mapped_loopback);
        }
        assert_score(&s, t0, &peers[4], -40.0);
        // Unknown peers' IPs are not tracked.
        s.add_ip(&peer(99), loopback);
        assert_score(&s, t0, &peers[4], -40.0);
    }

    #[test]
    fn p7_counts_the_excess_over_the_threshold_squared() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut params = quiet(quiet_topic());
        params.behaviour_penalty_weight = -1.0;
        params.behaviour_penalty_threshold = 2.0;
        params.behaviour_penalty_decay = 0.5;
        let mut s = scorer(params, t0, &[a]);
        s.add_penalty(&a, 2);
        assert_score(&s, t0, &a, 0.0);
        s.add_penalty(&a, 3);
        assert_score(&s, t0, &a, -9.0);
        s.refresh(t0 + secs(1));
        // 5 × 0.5 = 2.5 → excess 0.5 → −0.25.
        assert_score(&s, t0 + secs(1), &a, -0.25);
        let snap = s.snapshot(t0 + secs(1), &a).expect("known");
        assert!(close(snap.behaviour_penalty, -0.25));
    }

    #[test]
    fn decay_applies_one_step_per_whole_interval_and_zeroes_small_counters() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut tp = quiet_topic();
        tp.first_message_deliveries_weight = 1.0;
        tp.first_message_deliveries_decay = 0.5;
        let mut params = quiet(tp);
        params.decay_to_zero = 1.0;
        let mut s = scorer(params, t0, &[a]);
        for i in 0..10 {
            s.deliver_message(t0, &a, &mid(i), &topic());
        }
        s.refresh(t0 + ms(500));
        assert_score(&s, t0, &a, 10.0);
        s.refresh(t0 + ms(3200));
        assert_score(&s, t0, &a, 1.25);
        // The interval start moved to t0 + 3 s: nothing due at 3.9 s, one step at 4 s.
        s.refresh(t0 + ms(3900));
        assert_score(&s, t0, &a, 1.25);
        s.refresh(t0 + secs(4));
        assert_score(&s, t0, &a, 0.0);
        // The emptied topic entry is forgotten.
        assert!(
            s.snapshot(t0, &a)
                .is_some_and(|snap| snap.topics.is_empty())
        );
    }

    #[test]
    fn retained_scores_survive_reconnection_and_expire() {
        let t0 = Instant::now();
        let (a, b) = (peer(1), peer(2));
        let mut tp = quiet_topic();
        tp.invalid_message_deliveries_weight = -1.0;
        tp.invalid_message_deliveries_decay = 0.5;
        tp.time_in_mesh_weight = 1.0;
        tp.time_in_mesh_cap = 100.0;
        let mut params = quiet(tp);
        params.retain_score = secs(60);
        let mut s = scorer(params, t0, &[a, b]);
        s.add_ip(&a, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        s.reject_message(t0, &a, &mid(1), &topic(), RejectReason::Invalid);
        s.reject_message(t0, &a, &mid(2), &topic(), RejectReason::Invalid);
        s.graft(t0, &a, &topic());
        assert_score(&s, t0 + secs(2), &a, -2.0);
        s.remove_peer(t0 + secs(2), &a);
        // Out of the mesh (no P1), P4 kept and frozen while disconnected.
        s.refresh(t0 + secs(10));
        assert_score(&s, t0 + secs(10), &a, -4.0);
        assert_eq!(s.peer_count(), 2);
        // A graft of a disconnected peer is ignored.
        s.graft(t0 + secs(10), &a, &topic());
        assert_score(&s, t0 + secs(20), &a, -4.0);
        s.add_peer(t0 + secs(10), a);
        assert_score(&s, t0 + secs(10), &a, -4.0);
        s.remove_peer(t0 + secs(10), &a);
        s.refresh(t0 + secs(69));
        assert_eq!(s.peer_count(), 2);
        s.refresh(t0 + secs(70));
        assert_eq!(s.peer_count(), 1);
        assert_score(&s, t0 + secs(70), &a, 0.0);
        assert!(s.snapshot(t0 + secs(70), &a).is_none());
        assert!(s.peers_per_ip.is_empty());
        s.add_peer(t0 + secs(70), a);
        assert_score(&s, t0 + secs(70), &a, 0.0);
    }

    #[test]
    fn retained_peers_are_bounded_forgetting_the_best_first() {
        let t0 = Instant::now();
        let [a, b, c] = [1, 2, 3].map(peer);
        let mut params = quiet(quiet_topic());
        params.app_specific_weight = 1.0;
        let mut s = scorer(params, t0, &[a, b, c]);
        s.limits.max_retained = 2;
        s.set_application_score(&a, -5.0);
        s.set_application_score(&b, 1.0);
        s.set_application_score(&c, -1.0);
        for p in [a, b, c] {
            s.remove_peer(t0, &p);
        }
        assert_eq!(s.peer_count(), 2);
        assert_score(&s, t0, &a, -5.0);
        assert!(s.snapshot(t0, &b).is_none());
        assert_score(&s, t0, &c, -1.0);
    }

    #[test]
    fn topic_weight_and_cap_apply_to_the_positive_topic_sum_only() {
        let t0 = Instant::now();
        let a = peer(1);
        let (t1, t2) = (Topic::new("one"), Topic::new("two"));
        let mut tp = quiet_topic();
        tp.first_message_deliveries_weight = 1.0;
        tp.invalid_message_deliveries_weight = -1.0;
        let mut params = quiet(tp.clone());
        tp.topic_weight = 3.0;
        params.topics.insert(t2.clone(), tp);
        params.topic_score_cap = 50.0;
        params.app_specific_weight = 1.0;
        let mut s = scorer(params, t0, &[a]);
        for i in 0..20 {
            s.deliver_message(t0, &a, &mid(i), &t1);
        }
        assert_score(&s, t0, &a, 20.0);
        for i in 100..110 {
            s.deliver_message(t0, &a, &mid(i), &t2);
        }
        // 20 + 3 × 10 = 50: exactly at the cap.
        assert_score(&s, t0, &a, 50.0);
        s.deliver_message(t0, &a, &mid(110), &t2);
        assert_score(&s, t0, &a, 50.0);
        s.set_application_score(&a, -10.0);
        assert_score(&s, t0, &a, 40.0);
        let snap = s.snapshot(t0, &a).expect("known");
        assert_eq!(snap.topics.len(), 2);
        assert!(close(snap.topics[1].score, 33.0));
        // A negative sum is not capped.
        let b = peer(2);
        s.add_peer(t0, b);
        for i in 200..210 {
            s.reject_message(t0, &b, &mid(i), &t1, RejectReason::Invalid);
        }
        assert_score(&s, t0, &b, -100.0);
    }

    #[test]
    fn delivery_records_are_bounded_and_expire() {
        let t0 = Instant::now();
        let (a, b) = (peer(1), peer(2));
        let mut tp = quiet_topic();
        tp.invalid_message_deliveries_weight = -1.0;
        let mut s = scorer(quiet(tp), t0, &[a, b]);
        assert_eq!(s.limits.max_records, 100_000);
        s.limits.max_records = 10;
        for i in 0..25 {
            s.validate_message(t0 + ms(u64::from(i)), &a, &mid(i), &topic());
        }
        assert_eq!(s.deliveries.len(), 10);
        assert_eq!(s.deliveries.order.len(), 10);
        // The oldest were evicted: a pending forwarder of message 0 is no longer known.
        s.duplicate_message(t0, &b, &mid(0), &topic());
        s.duplicate_message(t0, &b, &mid(24), &topic());
        s.reject_message(t0, &a, &mid(24), &topic(), RejectReason::Invalid);
        assert_score(&s, t0, &b, -1.0);
        s.refresh(t0 + secs(120) + ms(14));
        assert_eq!(s.deliveries.len(), 10);
        s.refresh(t0 + secs(120) + ms(20));
        assert_eq!(s.deliveries.len(), 4);
        s.refresh(t0 + secs(200));
        assert_eq!(s.deliveries.len(), 0);
        assert!(s.deliveries.order.is_empty());
        // Duplicates of expired messages change nothing and create no record.
        s.duplicate_message(t0 + secs(200), &b, &mid(24), &topic());
        assert_eq!(s.deliveries.len(), 0);
        assert_score(&s, t0, &b, -1.0);
    }

    #[test]
    fn per_peer_topics_and_record_peers_are_bounded() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut tp = quiet_topic();
        tp.first_message_deliveries_weight = 1.0;
        tp.invalid_message_deliveries_weight = -1.0;
        let mut s = scorer(quiet(tp), t0, &[a]);
        s.limits.max_topics_per_peer = 2;
        s.limits.max_peers_per_record = 3;
        s.reject_message(t0, &a, &mid(1), &Topic::new("x"), RejectReason::Invalid);
        s.deliver_message(t0, &a, &mid(2), &Topic::new("y"));
        // Full: the positive entry ("y") makes room, the penalty stays.
        s.deliver_message(t0, &a, &mid(3), &Topic::new("z"));
        let snap = s.snapshot(t0, &a).expect("known");
        let names: Vec<&str> = snap.topics.iter().map(|t| t.topic.as_str()).collect();
        assert_eq!(names, ["x", "z"]);
        assert_score(&s, t0, &a, 0.0);
        s.validate_message(t0, &a, &mid(9), &topic());
        for n in 2..10 {
            s.add_peer(t0, peer(n));
            s.duplicate_message(t0, &peer(n), &mid(9), &topic());
        }
        let record = s.deliveries.records.get(&mid(9)).expect("record");
        assert_eq!(record.peers.len(), 3);
    }

    #[test]
    fn unknown_peers_score_zero_and_events_about_them_are_ignored() {
        let t0 = Instant::now();
        let x = peer(7);
        let mut s = PeerScore::new(PeerScoreParams::default(), t0);
        s.graft(t0, &x, &topic());
        s.deliver_message(t0, &x, &mid(1), &topic());
        s.add_penalty(&x, 100);
        s.add_ip(&x, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        s.remove_peer(t0, &x);
        s.prune(t0, &x, &topic());
        assert_eq!(s.score(t0, &x), 0.0);
        assert!(s.snapshot(t0, &x).is_none());
        assert_eq!(s.peer_count(), 0);
        assert_eq!(s.params(), &PeerScoreParams::default());
    }

    #[test]
    fn snapshot_adds_up_and_round_trips() {
        let t0 = Instant::now();
        let a = peer(1);
        let mut s = PeerScore::new(PeerScoreParams::default(), t0);
        s.add_peer(t0, a);
        s.graft(t0, &a, &topic());
        s.deliver_message(t0, &a, &mid(1), &topic());
        s.reject_message(t0, &a, &mid(2), &Topic::new("other"), RejectReason::Invalid);
        s.add_penalty(&a, 8);
        s.set_application_score(&a, 2.0);
        let now = t0 + secs(30);
        let snap = s.snapshot(now, &a).expect("known");
        let topics: f64 = snap.topics.iter().map(|t| t.score).sum();
        let sum = topics + snap.app_specific + snap.ip_colocation + snap.behaviour_penalty;
        assert!(close(snap.score, sum));
        assert!(close(snap.score, s.score(now, &a)));
        // P1 0.3 + P2 1 = 1.3; P4 −100; P5 2; P7 −4.
        assert!(close(snap.score, 1.3 - 100.0 + 2.0 - 4.0), "{}", snap.score);
        let json = toml::to_string(&snap).expect("serialize");
        let back: ScoreSnapshot = toml::from_str(&json).expect("deserialize");
        assert_eq!(back, snap);
    }
}
