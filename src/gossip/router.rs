//! The gossipsub router, sans-IO: topics and subscriptions, the mesh (GRAFT/PRUNE in a
//! heartbeat, backoff both ways, opportunistic grafting, peer exchange), fanout, eager
//! forwarding with IDONTWANT, lazy IHAVE/IWANT gossip with promise tracking, de-duplication,
//! application validation, peer scoring and per-peer send queues.
//!
//! Driven with `now` and an `Rng` from outside; output is pulled: [`Gossipsub::poll_action`]
//! for events and dials, [`Gossipsub::next_outbound`] for the bytes each peer should be sent
//! next (control first, then our publishes, then forwards). It never reads a clock, spawns or
//! touches a socket, so the simulator and the fuzzers drive exactly this code.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngCore;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache::{MessageCache, SeenCache};
use super::config::{GossipsubConfig, MessageIdFn, ValidationMode};
use super::message::{
    Choke, Control, GossipMessage, Graft, IDontWant, IHave, IWant, MessageId, PeerExchange, Prune,
    Rpc, RpcLimits, SignedPeerRecord, SubOpts, Topic,
};
use super::queue::{Outbound, PeerQueue, Priority};
use super::score::{PeerScore, RejectReason, ScoreSnapshot};
use crate::address::Multiaddr;
use crate::identity::{Keypair, PeerId};

/// Seen-cache capacity: de-duplication memory stays bounded under any flood.
const SEEN_CAP: usize = 250_000;
/// Messages waiting for the application's verdict at most.
const MAX_PENDING_VALIDATION: usize = 10_000;
/// Publisher keys kept decoded at most.
const KEY_CACHE: usize = 10_000;
/// Longest backoff we accept from a PRUNE.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// The application's verdict on a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Validation {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop, and penalise the peers that sent it.
    Reject,
    /// Not for us (say, stale): drop without penalty.
    Ignore,
}

/// Why a publish failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Nobody to send it to.
    #[error("insufficient peers for topic {topic}: {reason}")]
    InsufficientPeers {
        /// The topic.
        topic: Topic,
        /// Why (no subscriber connected, or all below the publish threshold).
        reason: String,
    },
    /// Every candidate's send queue was full.
    #[error("all {peers} peers of topic {topic} have full send queues")]
    QueuesFull {
        /// The topic.
        topic: Topic,
        /// How many were tried.
        peers: usize,
    },
    /// Larger than `max_transmit_size`.
    #[error("message of {len} bytes exceeds max_transmit_size {max}")]
    MessageTooLarge {
        /// Its encoded size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The same message (by id) was published or seen already.
    #[error("duplicate message")]
    Duplicate,
}

/// Something a researcher, an operator or the application wants to know.
#[derive(Clone, Debug, PartialEq)]
pub enum GossipEvent {
    /// A message for the application, on a topic we subscribe to. With
    /// `validate_messages` on, it waits for [`Gossipsub::report_validation`].
    Message {
        /// The peer we received it from.
        propagation_source: PeerId,
        /// Its id.
        id: MessageId,
        /// The message.
        message: GossipMessage,
        /// True if the router waits for a verdict before forwarding.
        needs_validation: bool,
    },
    /// A peer joined a topic.
    Subscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
    },
    /// A peer left a topic.
    Unsubscribed {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
    },
    /// A peer entered our mesh for a topic.
    Graft {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
        /// True if the peer asked, false if we did.
        by_peer: bool,
    },
    /// A peer left our mesh for a topic.
    Prune {
        /// The peer.
        peer: PeerId,
        /// The topic.
        topic: Topic,
        /// True if the peer pruned us, false if we pruned it.
        by_peer: bool,
    },
    /// A message we had already seen.
    Duplicate {
        /// Who sent it again.
        peer: PeerId,
        /// Its id.
        id: MessageId,
    },
    /// A message refused (bad signature, application reject, ...).
    Rejected {
        /// Who sent it.
        peer: PeerId,
        /// Its id.
        id: MessageId,
        /// Why.
        reason: RejectReason,
    },
    /// Something for `peer` could not be queued: its queue is full.
    Dropped {
        /// The slow peer.
        peer: PeerId,
        /// What was dropped.
        priority: Priority,
    },
    /// A peer's score crossed a threshold (checked each heartbeat).
    ScoreChanged {
        /// The peer.
        peer: PeerId,
        /// Its score now.
        score: f64,
        /// Which band it is in now: "ok", "below gossip", "below publish", "graylisted".
        band: &'static str,
    },
}

/// What the driver must do besides sending queued bytes.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Dial this peer (offered by peer exchange, signature checked).
    Dial {
        /// The peer.
        peer: PeerId,
        /// Its signed addresses.
        addrs: Vec<Multiaddr>,
    },
    /// Report this.
    Event(GossipEvent),
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipMetrics {
    /// Messages we published.
    pub published: u64,
    /// Messages delivered to the application (first receipt, accepted).
    pub delivered: u64,
    /// Messages received again.
    pub duplicates: u64,
    /// Messages refused.
    pub rejected: u64,
    /// Messages ignored by the application.
    pub ignored: u64,
    /// Copies forwarded to mesh peers.
    pub forwarded: u64,
    /// Forwards not sent because the peer said IDONTWANT.
    pub idontwant_saved: u64,
    /// Forwards dropped because a peer's queue was full.
    pub dropped_forwards: u64,
    /// Own publishes dropped because a peer's queue was full.
    pub dropped_publishes: u64,
    /// Control messages dropped because a peer's control allowance was full.
    pub dropped_control: u64,
    /// RPCs ignored because the sender is graylisted.
    pub graylisted_rpcs: u64,
    /// GRAFTs sent / received.
    pub grafts_sent: u64,
    /// GRAFTs received.
    pub grafts_received: u64,
    /// PRUNEs sent.
    pub prunes_sent: u64,
    /// PRUNEs received.
    pub prunes_received: u64,
    /// IHAVE entries sent.
    pub ihave_sent: u64,
    /// Message ids requested by IWANT.
    pub iwant_sent: u64,
    /// Messages sent in answer to IWANT.
    pub iwant_answered: u64,
    /// IDONTWANT ids sent.
    pub idontwant_sent: u64,
    /// IWANT promises broken by peers (penalised).
    pub broken_promises: u64,
    /// Dials requested by peer exchange.
    pub px_dials: u64,
    /// CHOKEs sent.
    pub chokes_sent: u64,
    /// UNCHOKEs sent.
    pub unchokes_sent: u64,
    /// Forwards not pushed because the mesh peer choked us (it gets IHAVE instead).
    pub choked_skips: u64,
    /// Encoded RPC bytes handed to peers' queues.
    pub bytes_queued: u64,
    /// Messages not handed to the application because its subscription was not read
    /// (filled in by the driver).
    pub app_dropped: u64,
}

/// A snapshot of one topic's mesh, for debugging and research.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeshSnapshot {
    /// The topic.
    pub topic: Topic,
    /// Mesh peers.
    pub mesh: Vec<PeerId>,
    /// Every connected peer subscribed to it.
    pub subscribers: Vec<PeerId>,
    /// Fanout peers, if we publish without subscribing.
    pub fanout: Vec<PeerId>,
}

struct PeerState {
    topics: BTreeSet<Topic>,
    outbound: bool,
    ip: Option<IpAddr>,
    record: Option<SignedPeerRecord>,
    queue: PeerQueue,
    dont_want: HashSet<MessageId>,
    dont_want_order: VecDeque<MessageId>,
    ihaves_this_beat: usize,
    iwant_asked_this_beat: usize,
    band: &'static str,
    /// Topics for which we told this peer not to push to us.
    choked_by_us: BTreeSet<Topic>,
    /// Topics for which this peer told us not to push to it.
    chokes_us: BTreeSet<Topic>,
    /// Recent (first deliveries, duplicates) from this peer, per topic, halved each heartbeat.
    window: BTreeMap<Topic, (u32, u32)>,
}

struct Deferred {
    peer: PeerId,
    id: MessageId,
    bytes: Bytes,
}

struct Pending {
    message: GossipMessage,
    source: PeerId,
    received: Instant,
    also_from: Vec<PeerId>,
}

/// The router.
pub struct Gossipsub {
    config: GossipsubConfig,
    limits: RpcLimits,
    key: Keypair,
    local: PeerId,
    record: SignedPeerRecord,
    peers: HashMap<PeerId, PeerState>,
    subscribed: BTreeSet<Topic>,
    mesh: BTreeMap<Topic, BTreeSet<PeerId>>,
    fanout: BTreeMap<Topic, BTreeSet<PeerId>>,
    fanout_last: BTreeMap<Topic, Instant>,
    backoff: HashMap<(Topic, PeerId), Instant>,
    mcache: MessageCache,
    seen: SeenCache,
    pending: HashMap<MessageId, Pending>,
    promises: HashMap<PeerId, HashMap<MessageId, Instant>>,
    score: Option<PeerScore>,
    seqno: u64,
    ticks: u64,
    next_heartbeat: Instant,
    /// Staggered forwards waiting for their time, by (time, sequence).
    deferred: BTreeMap<(Instant, u64), Deferred>,
    deferred_seq: u64,
    /// Publishers' decoded keys (decoding is a large part of a signature check).
    keys: HashMap<PeerId, crate::identity::PublicKey>,
    control: BTreeMap<PeerId, Control>,
    ready: BTreeSet<PeerId>,
    actions: VecDeque<Action>,
    metrics: GossipMetrics,
}

impl Gossipsub {
    /// A router for the node with identity `key`, advertising `addrs` in its signed record.
    pub fn new(
        key: Keypair,
        addrs: Vec<Multiaddr>,
        config: GossipsubConfig,
        now: Instant,
    ) -> Result<Self, String> {
        config.validate()?;
        // Sequence numbers start at 0; a driver that outlives restarts seeds them with
        // `set_initial_seqno` so a restarted node does not reuse its earlier ids.
        let local = key.peer_id();
        let record = SignedPeerRecord::new(&key, addrs, 1);
        Ok(Self {
            limits: config.rpc_limits(),
            mcache: MessageCache::new(config.history_length, config.history_gossip),
            seen: SeenCache::new(config.seen_ttl, SEEN_CAP),
            score: config
                .scoring
                .then(|| PeerScore::new(config.score_params.clone(), now)),
            next_heartbeat: now + config.heartbeat_interval,
            deferred: BTreeMap::new(),
            deferred_seq: 0,
            keys: HashMap::new(),
            config,
            key,
            local,
            record,
            peers: HashMap::new(),
            subscribed: BTreeSet::new(),
            mesh: BTreeMap::new(),
            fanout: BTreeMap::new(),
            fanout_last: BTreeMap::new(),
            backoff: HashMap::new(),
            pending: HashMap::new(),
            promises: HashMap::new(),
            seqno: 0,
            ticks: 0,
            control: BTreeMap::new(),
            ready: BTreeSet::new(),
            actions: VecDeque::new(),
            metrics: GossipMetrics::default(),
        })
    }

    /// Makes sequence numbers start at `seqno` (the driver seeds it from the clock so a
    /// restarted node does not reuse ids still in its peers' seen caches).
    pub fn set_initial_seqno(&mut self, seqno: u64) {
        self.seqno = seqno;
    }

    /// Moves the first heartbeat to a random point within one interval from `now`, so that
    /// nodes started together do not all run their heartbeats (and send their IHAVE gossip)
    /// at the same instant every interval.
    pub fn randomize_heartbeat_phase(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let interval = self.config.heartbeat_interval;
        let nanos = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.next_heartbeat = now + Duration::from_nanos(rng.next_u64() % nanos);
    }

    /// Our identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &GossipsubConfig {
        &self.config
    }

    /// Decode limits for RPCs from peers.
    pub fn limits(&self) -> &RpcLimits {
        &self.limits
    }

    /// Counters.
    pub fn metrics(&self) -> &GossipMetrics {
        &self.metrics
    }

    /// When [`Gossipsub::heartbeat`] is due next.
    pub fn next_heartbeat(&self) -> Instant {
        self.next_heartbeat
    }

    /// When [`Gossipsub::on_timeout`] has something to do next (the heartbeat, or a
    /// staggered forward).
    pub fn next_timeout(&self) -> Instant {
        match self.deferred.keys().next() {
            Some((at, _)) => (*at).min(self.next_heartbeat),
            None => self.next_heartbeat,
        }
    }

    /// Runs what is due at `now`: staggered forwards, and the heartbeat if it is due.
    pub fn on_timeout(&mut self, now: Instant, rng: &mut dyn RngCore) {
        self.release_deferred(now);
        if now >= self.next_heartbeat {
            self.heartbeat(now, rng);
        }
    }

    /// Sends the staggered forwards whose time has come, except to peers that meanwhile
    /// showed they have the message (IDONTWANT, or sent it to us).
    fn release_deferred(&mut self, now: Instant) {
        while let Some(entry) = self.deferred.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let d = entry.remove();
            let Some(p) = self.peers.get(&d.peer) else {
                continue;
            };
            if p.dont_want.contains(&d.id) {
                self.metrics.idontwant_saved += 1;
                continue;
            }
            if self.enqueue(
                d.peer,
                Outbound {
                    bytes: d.bytes,
                    priority: Priority::Forward,
                    message: Some(d.id),
                },
            ) {
                self.metrics.forwarded += 1;
            }
        }
    }

    /// The next event or dial.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Peers with queued bytes, taken (each is listed again when more is queued).
    pub fn take_ready(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.ready).into_iter().collect()
    }

    /// The next RPC to send to `peer`, highest priority first.
    pub fn next_outbound(&mut self, peer: &PeerId) -> Option<Outbound> {
        self.peers.get_mut(peer)?.queue.pop()
    }

    /// Puts back what [`Gossipsub::next_outbound`] returned when the connection had no room.
    pub fn unsend(&mut self, peer: &PeerId, item: Outbound) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.queue.unpop(item);
        }
    }

    /// Bytes queued for `peer`.
    pub fn queued_bytes(&self, peer: &PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.queue.bytes())
    }

    /// Topics we subscribe to.
    pub fn subscriptions(&self) -> impl Iterator<Item = &Topic> {
        self.subscribed.iter()
    }

    /// Connected peers known to the router.
    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// The connected peers known to the router.
    pub fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// True if `peer` is known as connected.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// Mesh, subscribers and fanout of `topic`.
    pub fn mesh_snapshot(&self, topic: &Topic) -> MeshSnapshot {
        MeshSnapshot {
            topic: topic.clone(),
            mesh: self
                .mesh
                .get(topic)
                .map(|m| m.iter().copied().collect())
                .unwrap_or_default(),
            subscribers: self.topic_peers(topic),
            fanout: self
                .fanout
                .get(topic)
                .map(|m| m.iter().copied().collect())
                .unwrap_or_default(),
        }
    }

    /// Mesh peers of `topic`.
    pub fn mesh_peers(&self, topic: &Topic) -> Vec<PeerId> {
        self.mesh
            .get(topic)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Topics that have a mesh (each one we subscribe to; for invariant checks).
    pub fn mesh_topics(&self) -> impl Iterator<Item = &Topic> {
        self.mesh.keys()
    }

    /// `peer`'s score now (0 with scoring off).
    pub fn peer_score(&self, now: Instant, peer: &PeerId) -> f64 {
        self.score.as_ref().map_or(0.0, |s| s.score(now, peer))
    }

    /// `peer`'s score broken down.
    pub fn score_snapshot(&self, now: Instant, peer: &PeerId) -> Option<ScoreSnapshot> {
        self.score.as_ref()?.snapshot(now, peer)
    }

    /// Sets the application-specific part (P5) of `peer`'s score.
    pub fn set_application_score(&mut self, peer: &PeerId, score: f64) -> bool {
        self.score
            .as_mut()
            .is_some_and(|s| s.set_application_score(peer, score))
    }

    fn topic_peers(&self, topic: &Topic) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.topics.contains(topic))
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    fn emit(&mut self, e: GossipEvent) {
        self.actions.push_back(Action::Event(e));
    }

    fn enqueue(&mut self, peer: PeerId, item: Outbound) -> bool {
        let (max, max_control) = (
            self.config.max_queue_bytes,
            self.config.max_control_queue_bytes,
        );
        let Some(p) = self.peers.get_mut(&peer) else {
            return false;
        };
        let len = item.bytes.len() as u64;
        match p.queue.push(item, max, max_control) {
            Ok(evicted) => {
                self.metrics.bytes_queued += len;
                self.metrics.dropped_forwards += evicted as u64;
                self.ready.insert(peer);
                true
            }
            Err(d) => {
                match d.0 {
                    Priority::Forward => self.metrics.dropped_forwards += 1,
                    Priority::Publish => self.metrics.dropped_publishes += 1,
                    Priority::Control => self.metrics.dropped_control += 1,
                }
                self.emit(GossipEvent::Dropped {
                    peer,
                    priority: d.0,
                });
                false
            }
        }
    }

    fn control_for(&mut self, peer: PeerId) -> &mut Control {
        self.control.entry(peer).or_default()
    }

    /// Queues the control messages gathered during one call, one RPC per peer.
    fn flush_control(&mut self) {
        for (peer, control) in std::mem::take(&mut self.control) {
            if control.is_empty() {
                continue;
            }
            let rpc = Rpc {
                control,
                ..Rpc::default()
            };
            self.enqueue(
                peer,
                Outbound {
                    bytes: rpc.encode(),
                    priority: Priority::Control,
                    message: None,
                },
            );
        }
    }

    fn in_backoff(&self, now: Instant, topic: &Topic, peer: &PeerId) -> bool {
        self.backoff
            .get(&(topic.clone(), *peer))
            .is_some_and(|t| *t > now)
    }

    fn set_backoff(&mut self, now: Instant, topic: &Topic, peer: PeerId, d: Duration) {
        let until = now.checked_add(d.min(MAX_BACKOFF)).unwrap_or(now);
        let e = self.backoff.entry((topic.clone(), peer)).or_insert(until);
        if *e < until {
            *e = until;
        }
    }

    fn message_id(&self, m: &GossipMessage) -> MessageId {
        match self.config.message_id {
            MessageIdFn::PublisherSeqno => {
                let mut v = Vec::with_capacity(46);
                if let Some(from) = &m.from {
                    v.extend_from_slice(&from.to_bytes());
                }
                v.extend_from_slice(&m.seqno.unwrap_or(0).to_be_bytes());
                MessageId(Bytes::from(v))
            }
            MessageIdFn::ContentHash => {
                let mut h = Sha256::new();
                h.update((m.topic.as_str().len() as u64).to_be_bytes());
                h.update(m.topic.as_str().as_bytes());
                h.update(&m.data);
                MessageId(Bytes::copy_from_slice(&h.finalize()))
            }
        }
    }

    // ---- peers ---------------------------------------------------------------------------

    /// A connection to `peer` is up. `outbound`: we dialed it. Sends it our subscriptions
    /// and signed record.
    pub fn on_connected(&mut self, now: Instant, peer: PeerId, outbound: bool, ip: Option<IpAddr>) {
        if peer == self.local || self.peers.contains_key(&peer) {
            return;
        }
        self.peers.insert(
            peer,
            PeerState {
                topics: BTreeSet::new(),
                outbound,
                ip,
                record: None,
                queue: PeerQueue::default(),
                dont_want: HashSet::new(),
                dont_want_order: VecDeque::new(),
                ihaves_this_beat: 0,
                iwant_asked_this_beat: 0,
                band: "ok",
                choked_by_us: BTreeSet::new(),
                chokes_us: BTreeSet::new(),
                window: BTreeMap::new(),
            },
        );
        if let Some(s) = self.score.as_mut() {
            s.add_peer(now, peer);
            if let Some(ip) = ip {
                s.add_ip(&peer, ip);
            }
        }
        let hello = Rpc {
            subscriptions: self
                .subscribed
                .iter()
                .map(|t| SubOpts {
                    subscribe: true,
                    topic: t.clone(),
                })
                .collect(),
            record: Some(self.record.clone()),
            ..Rpc::default()
        };
        self.enqueue(
            peer,
            Outbound {
                bytes: hello.encode(),
                priority: Priority::Control,
                message: None,
            },
        );
    }

    /// The connection to `peer` is gone.
    pub fn on_disconnected(&mut self, now: Instant, peer: &PeerId) {
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        for (topic, mesh) in self.mesh.iter_mut() {
            if mesh.remove(peer) {
                if let Some(s) = self.score.as_mut() {
                    s.prune(now, peer, topic);
                }
            }
        }
        for f in self.fanout.values_mut() {
            f.remove(peer);
        }
        self.promises.remove(peer);
        self.control.remove(peer);
        self.ready.remove(peer);
        if let Some(s) = self.score.as_mut() {
            if let Some(ip) = state.ip {
                s.remove_ip(peer, &ip);
            }
            s.remove_peer(now, peer);
        }
    }

    // ---- subscriptions ---------------------------------------------------------------------

    /// Joins `topic`: announces it, builds the mesh (from fanout first). False if already
    /// subscribed or at `max_subscribed_topics`.
    pub fn subscribe(&mut self, now: Instant, topic: Topic, rng: &mut dyn RngCore) -> bool {
        if self.subscribed.contains(&topic)
            || self.subscribed.len() >= self.config.max_subscribed_topics
        {
            return false;
        }
        self.subscribed.insert(topic.clone());
        self.announce(&topic, true);
        let mut mesh: BTreeSet<PeerId> = BTreeSet::new();
        if let Some(f) = self.fanout.remove(&topic) {
            self.fanout_last.remove(&topic);
            mesh.extend(
                f.into_iter()
                    .filter(|p| self.peer_score(now, p) >= 0.0 && !self.in_backoff(now, &topic, p))
                    .take(self.config.mesh_n),
            );
        }
        if mesh.len() < self.config.mesh_n {
            let mut candidates: Vec<PeerId> = self
                .topic_peers(&topic)
                .into_iter()
                .filter(|p| {
                    !mesh.contains(p)
                        && !self.in_backoff(now, &topic, p)
                        && self.peer_score(now, p) >= 0.0
                })
                .collect();
            candidates.shuffle(rng);
            let need = self.config.mesh_n - mesh.len();
            mesh.extend(candidates.into_iter().take(need));
        }
        for p in &mesh {
            self.graft_peer(now, &topic, *p);
        }
        self.mesh.insert(topic, mesh);
        self.flush_control();
        true
    }

    /// Leaves `topic`: announces it and prunes the mesh (with peer exchange and the
    /// unsubscribe backoff). False if not subscribed.
    pub fn unsubscribe(&mut self, now: Instant, topic: &Topic) -> bool {
        if !self.subscribed.remove(topic) {
            return false;
        }
        self.announce(topic, false);
        let backoff = self.config.unsubscribe_backoff;
        for p in self.mesh.remove(topic).unwrap_or_default() {
            self.clear_chokes(&p, topic);
            self.prune_peer(now, topic, p, backoff, true);
        }
        self.flush_control();
        true
    }

    fn announce(&mut self, topic: &Topic, subscribe: bool) {
        let rpc = Rpc {
            subscriptions: vec![SubOpts {
                subscribe,
                topic: topic.clone(),
            }],
            ..Rpc::default()
        };
        let bytes = rpc.encode();
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for p in peers {
            self.enqueue(
                p,
                Outbound {
                    bytes: bytes.clone(),
                    priority: Priority::Control,
                    message: None,
                },
            );
        }
    }

    /// Adds `peer` to our mesh of `topic` and tells it (GRAFT).
    fn graft_peer(&mut self, now: Instant, topic: &Topic, peer: PeerId) {
        self.control_for(peer).graft.push(Graft {
            topic: topic.clone(),
        });
        self.metrics.grafts_sent += 1;
        if let Some(s) = self.score.as_mut() {
            s.graft(now, &peer, topic);
        }
        self.emit(GossipEvent::Graft {
            peer,
            topic: topic.clone(),
            by_peer: false,
        });
    }

    /// Tells `peer` it is out of our mesh of `topic` (the caller removed it) with a backoff,
    /// and records the backoff on our side too.
    fn prune_peer(
        &mut self,
        now: Instant,
        topic: &Topic,
        peer: PeerId,
        backoff: Duration,
        px: bool,
    ) {
        let peers = if px {
            self.px_for(now, topic, &peer)
        } else {
            Vec::new()
        };
        self.control_for(peer).prune.push(Prune {
            topic: topic.clone(),
            peers,
            backoff_secs: Some(backoff.as_secs()),
        });
        self.metrics.prunes_sent += 1;
        self.set_backoff(now, topic, peer, backoff);
        if let Some(s) = self.score.as_mut() {
            s.prune(now, &peer, topic);
        }
        self.emit(GossipEvent::Prune {
            peer,
            topic: topic.clone(),
            by_peer: false,
        });
    }

    /// Peer exchange for a PRUNE to `pruned`: other well-scored topic peers whose signed
    /// record we hold.
    fn px_for(&self, now: Instant, topic: &Topic, pruned: &PeerId) -> Vec<PeerExchange> {
        if self.config.prune_peers == 0 {
            return Vec::new();
        }
        // Sorted, so a simulation with one seed always offers the same peers.
        let mut offered: Vec<PeerExchange> = self
            .peers
            .iter()
            .filter(|(id, p)| *id != pruned && p.topics.contains(topic) && p.record.is_some())
            .filter(|(id, _)| self.peer_score(now, id) >= 0.0)
            .map(|(id, p)| PeerExchange {
                peer: *id,
                record: p.record.clone(),
            })
            .collect();
        offered.sort_by_key(|x| x.peer);
        offered.truncate(self.config.prune_peers);
        offered
    }

    // ---- publishing ------------------------------------------------------------------------

    /// Publishes `data` on `topic`: to the mesh (or fanout when not subscribed), or to every
    /// topic peer above the publish threshold with `flood_publish`.
    pub fn publish(
        &mut self,
        now: Instant,
        topic: Topic,
        data: Bytes,
        rng: &mut dyn RngCore,
    ) -> Result<MessageId, PublishError> {
        let mut message = GossipMessage {
            from: None,
            seqno: None,
            topic: topic.clone(),
            data,
            signature: None,
        };
        if self.config.validation_mode != ValidationMode::Anonymous {
            self.seqno = self.seqno.wrapping_add(1);
            message.seqno = Some(self.seqno);
            message.sign(&self.key);
        }
        let rpc = Rpc {
            publish: vec![message.clone()],
            ..Rpc::default()
        };
        let bytes = rpc.encode();
        if bytes.len() > self.config.max_transmit_size {
            return Err(PublishError::MessageTooLarge {
                len: bytes.len(),
                max: self.config.max_transmit_size,
            });
        }
        let id = self.message_id(&message);
        if self.seen.contains(&id) {
            return Err(PublishError::Duplicate);
        }
        let threshold = self.config.score_thresholds.publish_threshold;
        let subscribers = self.topic_peers(&topic);
        let recipients: Vec<PeerId> = if self.config.flood_publish {
            subscribers
                .iter()
                .copied()
                .filter(|p| self.peer_score(now, p) >= threshold)
                .collect()
        } else if self.subscribed.contains(&topic) {
            let mesh = self.mesh_peers(&topic);
            if mesh.is_empty() {
                // No mesh yet (just subscribed, or everybody pruned us): reach whoever we can.
                subscribers
                    .iter()
                    .copied()
                    .filter(|p| self.peer_score(now, p) >= threshold)
                    .collect()
            } else {
                mesh
            }
        } else {
            let fanout = self.fanout.entry(topic.clone()).or_default();
            fanout.retain(|p| subscribers.contains(p));
            if fanout.len() < self.config.mesh_n {
                let mut more: Vec<PeerId> = subscribers
                    .iter()
                    .copied()
                    .filter(|p| !fanout.contains(p))
                    .collect();
                more.shuffle(rng);
                let need = self.config.mesh_n - fanout.len();
                fanout.extend(more.into_iter().take(need));
            }
            let f: Vec<PeerId> = fanout.iter().copied().collect();
            self.fanout_last.insert(topic.clone(), now);
            f.into_iter()
                .filter(|p| self.peer_score(now, p) >= threshold)
                .collect()
        };
        if recipients.is_empty() {
            let reason = if subscribers.is_empty() {
                format!("no connected peer is subscribed to {topic}")
            } else {
                format!(
                    "{} connected peers are subscribed to {topic}, all scored below the publish threshold {threshold}",
                    subscribers.len()
                )
            };
            return Err(PublishError::InsufficientPeers { topic, reason });
        }
        let mut sent = 0;
        for p in &recipients {
            if self.enqueue(
                *p,
                Outbound {
                    bytes: bytes.clone(),
                    priority: Priority::Publish,
                    message: Some(id.clone()),
                },
            ) {
                sent += 1;
            }
        }
        if sent == 0 {
            return Err(PublishError::QueuesFull {
                topic,
                peers: recipients.len(),
            });
        }
        self.seen.insert(now, id.clone());
        self.mcache.put(id.clone(), message);
        self.metrics.published += 1;
        Ok(id)
    }

    // ---- receiving ---------------------------------------------------------------------------

    /// Handles one RPC from `from`.
    pub fn handle_rpc(&mut self, now: Instant, from: PeerId, rpc: Rpc) {
        if !self.peers.contains_key(&from) {
            return;
        }
        // Scored once per RPC: the graylist and gossip thresholds read the same figure.
        let score = self.peer_score(now, &from);
        if self.score.is_some() && score < self.config.score_thresholds.graylist_threshold {
            self.metrics.graylisted_rpcs += 1;
            return;
        }
        if let Some(r) = rpc.record {
            self.on_record(from, r);
        }
        for s in rpc.subscriptions {
            self.on_subscription(from, s);
        }
        for m in rpc.publish {
            self.on_message(now, from, m);
        }
        if !rpc.control.is_empty() {
            self.on_control(now, from, score, rpc.control);
        }
        self.flush_control();
    }

    fn on_record(&mut self, from: PeerId, r: SignedPeerRecord) {
        if r.peer != from || !r.verify() {
            if let Some(s) = self.score.as_mut() {
                s.add_penalty(&from, 1);
            }
            return;
        }
        if let Some(p) = self.peers.get_mut(&from) {
            if p.record.as_ref().is_none_or(|old| old.seq < r.seq) {
                p.record = Some(r);
            }
        }
    }

    fn on_subscription(&mut self, from: PeerId, s: SubOpts) {
        let max = self.config.max_topics_per_peer;
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        if s.subscribe {
            if p.topics.contains(&s.topic) || p.topics.len() >= max {
                return;
            }
            p.topics.insert(s.topic.clone());
            self.emit(GossipEvent::Subscribed {
                peer: from,
                topic: s.topic,
            });
        } else {
            if !p.topics.remove(&s.topic) {
                return;
            }
            p.choked_by_us.remove(&s.topic);
            p.chokes_us.remove(&s.topic);
            if let Some(m) = self.mesh.get_mut(&s.topic) {
                m.remove(&from);
            }
            if let Some(f) = self.fanout.get_mut(&s.topic) {
                f.remove(&from);
            }
            self.emit(GossipEvent::Unsubscribed {
                peer: from,
                topic: s.topic,
            });
        }
    }

    fn reject(
        &mut self,
        now: Instant,
        from: PeerId,
        id: MessageId,
        topic: &Topic,
        reason: RejectReason,
    ) {
        if let Some(s) = self.score.as_mut() {
            s.reject_message(now, &from, &id, topic, reason);
        }
        self.metrics.rejected += 1;
        self.emit(GossipEvent::Rejected {
            peer: from,
            id,
            reason,
        });
    }

    fn on_message(&mut self, now: Instant, from: PeerId, m: GossipMessage) {
        let id = self.message_id(&m);
        // De-duplication first: a duplicate costs no signature check.
        if self.seen.contains(&id) {
            self.metrics.duplicates += 1;
            let mut redundant = false;
            if let Some(p) = self.peers.get_mut(&from) {
                if let Some(w) = p.window.get_mut(&m.topic) {
                    w.1 += 1;
                    // Checked every `choke_min_samples` copies, not on each one: when the
                    // minimum unchoked set is reached the check would find nothing to do.
                    let total = w.0.saturating_add(w.1);
                    redundant = self.config.choke
                        && total % self.config.choke_min_samples.max(1) == 0
                        && !p.choked_by_us.contains(&m.topic)
                        && is_redundant(*w, &self.config);
                } else if p.window.len() < 64 {
                    p.window.insert(m.topic.clone(), (0, 1));
                }
            }
            if redundant {
                // Enough evidence already: choke now rather than at the next heartbeat.
                self.maintain_chokes(&m.topic);
                self.flush_control();
            }
            if let Some(s) = self.score.as_mut() {
                s.duplicate_message(now, &from, &id, &m.topic);
            }
            // The sender has it: a copy still queued or staggered for it is waste (an
            // implicit IDONTWANT).
            let max = self.config.max_idontwant_ids.max(1);
            if let Some(p) = self.peers.get_mut(&from) {
                if p.queue.cancel_forward(&id) {
                    self.metrics.idontwant_saved += 1;
                }
                if !self.deferred.is_empty() && p.dont_want.insert(id.clone()) {
                    p.dont_want_order.push_back(id.clone());
                    while p.dont_want_order.len() > max {
                        if let Some(old) = p.dont_want_order.pop_front() {
                            p.dont_want.remove(&old);
                        }
                    }
                }
            }
            if let Some(p) = self.pending.get_mut(&id) {
                if !p.also_from.contains(&from) && p.also_from.len() < 64 {
                    p.also_from.push(from);
                }
            }
            self.emit(GossipEvent::Duplicate { peer: from, id });
            return;
        }
        self.seen.insert(now, id.clone());
        let mut unchoke = false;
        if let Some(p) = self.peers.get_mut(&from) {
            if let Some(w) = p.window.get_mut(&m.topic) {
                w.0 += 1;
            } else if p.window.len() < 64 {
                p.window.insert(m.topic.clone(), (1, 0));
            }
            // A peer we choked delivered something first (an IWANT answer that beat every
            // other copy): it is useful after all.
            unchoke = p.choked_by_us.contains(&m.topic);
        }
        if unchoke {
            self.unchoke_peer(from, &m.topic);
        }
        for promised in self.promises.values_mut() {
            promised.remove(&id);
        }
        if let Some(s) = self.score.as_mut() {
            s.validate_message(now, &from, &id, &m.topic);
        }
        let signature_ok = match self.config.validation_mode {
            ValidationMode::Strict => self.verify(&m),
            ValidationMode::Permissive => m.signature.is_none() || self.verify(&m),
            ValidationMode::Anonymous => {
                m.from.is_none() && m.seqno.is_none() && m.signature.is_none()
            }
        };
        if !signature_ok {
            self.reject(
                now,
                from,
                id,
                &m.topic.clone(),
                RejectReason::InvalidSignature,
            );
            return;
        }
        if m.from == Some(self.local) {
            // Our own message came back: not the sender's fault.
            self.reject(now, from, id, &m.topic.clone(), RejectReason::SelfOrigin);
            return;
        }
        if !self.subscribed.contains(&m.topic) {
            // Not our topic: remembered as seen, neither delivered nor forwarded.
            return;
        }
        if self.config.validate_messages {
            // Forwarding waits for the application: tell the mesh now that we have it, so
            // they do not send it too. (Without validation the forward follows at once and
            // tells them the same thing; `accept` covers the peers it skips.)
            if m.data.len() >= self.config.idontwant_message_size_threshold {
                let mesh = self.mesh_peers(&m.topic);
                for p in mesh
                    .into_iter()
                    .filter(|p| *p != from && Some(*p) != m.from)
                {
                    self.send_idontwant(p, &id);
                }
                self.flush_control();
            }
            if self.pending.len() >= MAX_PENDING_VALIDATION {
                self.reject(
                    now,
                    from,
                    id,
                    &m.topic.clone(),
                    RejectReason::ValidationQueueFull,
                );
                return;
            }
            self.pending.insert(
                id.clone(),
                Pending {
                    message: m.clone(),
                    source: from,
                    received: now,
                    also_from: Vec::new(),
                },
            );
            self.emit(GossipEvent::Message {
                propagation_source: from,
                id,
                message: m,
                needs_validation: true,
            });
        } else {
            self.accept(now, from, id.clone(), m.clone());
            self.metrics.delivered += 1;
            self.emit(GossipEvent::Message {
                propagation_source: from,
                id,
                message: m,
                needs_validation: false,
            });
        }
    }

    /// Checks the publisher's signature, with its decoded key cached (bounded: the cache is
    /// cleared when it reaches `KEY_CACHE`).
    fn verify(&mut self, m: &GossipMessage) -> bool {
        let Some(from) = m.from else {
            return false;
        };
        let key = match self.keys.get(&from) {
            Some(k) => *k,
            None => {
                let Ok(k) = from.public_key() else {
                    return false;
                };
                if self.keys.len() >= KEY_CACHE {
                    self.keys.clear();
                }
                self.keys.insert(from, k);
                k
            }
        };
        m.verify_with(&key)
    }

    /// Marks a message valid: scores the sender, caches and forwards it.
    fn accept(&mut self, now: Instant, from: PeerId, id: MessageId, m: GossipMessage) {
        if let Some(s) = self.score.as_mut() {
            s.deliver_message(now, &from, &id, &m.topic);
        }
        let mesh = self.mesh_peers(&m.topic);
        let publisher = m.from;
        let topic = m.topic.clone();
        let size = m.data.len();
        let bytes = Rpc {
            publish: vec![m.clone()],
            ..Rpc::default()
        }
        .encode();
        self.mcache.put(id.clone(), m);
        let (eager, stagger) = (self.config.forward_eager, self.config.forward_stagger);
        // Peers that will not get the forward now learn by IDONTWANT that we have it (when
        // validation ran, `on_message` already told the whole mesh).
        let idontwant =
            !self.config.validate_messages && size >= self.config.idontwant_message_size_threshold;
        let mut sent = 0usize;
        for p in mesh {
            if p == from || Some(p) == publisher {
                continue;
            }
            if self
                .peers
                .get(&p)
                .is_some_and(|s| s.dont_want.contains(&id))
            {
                self.metrics.idontwant_saved += 1;
                continue;
            }
            if let Some(s) = self.peers.get(&p).filter(|s| s.chokes_us.contains(&topic)) {
                // It asked for IHAVE only; the next heartbeat advertises the message. If we
                // still let it push to us, say we have this one.
                let pushes_to_us = !s.choked_by_us.contains(&topic);
                self.metrics.choked_skips += 1;
                if idontwant && pushes_to_us {
                    self.send_idontwant(p, &id);
                }
                continue;
            }
            if !stagger.is_zero() && sent >= eager {
                // Staggered: later mesh peers get it a little later, unless they show by
                // then (IDONTWANT, or a copy from them) that they already have it.
                if idontwant {
                    self.send_idontwant(p, &id);
                }
                let at = now + stagger * (sent + 1 - eager) as u32;
                self.deferred_seq += 1;
                self.deferred.insert(
                    (at, self.deferred_seq),
                    Deferred {
                        peer: p,
                        id: id.clone(),
                        bytes: bytes.clone(),
                    },
                );
                sent += 1;
                continue;
            }
            sent += 1;
            if self.enqueue(
                p,
                Outbound {
                    bytes: bytes.clone(),
                    priority: Priority::Forward,
                    message: Some(id.clone()),
                },
            ) {
                self.metrics.forwarded += 1;
            }
        }
    }

    /// Queues an IDONTWANT for `id` to `peer` (sent at the next `flush_control`).
    fn send_idontwant(&mut self, peer: PeerId, id: &MessageId) {
        self.control_for(peer).idontwant.push(IDontWant {
            message_ids: vec![id.clone()],
        });
        self.metrics.idontwant_sent += 1;
    }

    /// The application's verdict on a message delivered with `needs_validation`.
    pub fn report_validation(&mut self, now: Instant, id: &MessageId, verdict: Validation) {
        let Some(p) = self.pending.remove(id) else {
            return;
        };
        let topic = p.message.topic.clone();
        match verdict {
            Validation::Accept => {
                self.metrics.delivered += 1;
                self.accept(now, p.source, id.clone(), p.message);
            }
            Validation::Reject => {
                self.reject(now, p.source, id.clone(), &topic, RejectReason::Invalid);
            }
            Validation::Ignore => {
                self.metrics.ignored += 1;
                if let Some(s) = self.score.as_mut() {
                    s.reject_message(now, &p.source, id, &topic, RejectReason::ValidationIgnored);
                }
            }
        }
        self.flush_control();
    }

    fn on_control(&mut self, now: Instant, from: PeerId, score: f64, c: Control) {
        let gossip_ok =
            self.score.is_none() || score >= self.config.score_thresholds.gossip_threshold;
        if gossip_ok {
            self.on_ihave(now, from, c.ihave);
            self.on_iwant(from, c.iwant);
        }
        for g in c.graft {
            self.on_graft(now, from, g.topic);
        }
        for p in c.prune {
            self.on_prune(now, from, p);
        }
        if !c.idontwant.is_empty() {
            self.on_idontwant(from, c.idontwant);
        }
        let in_mesh = |this: &Self, t: &Topic| this.mesh.get(t).is_some_and(|m| m.contains(&from));
        let chokes: Vec<Topic> = c
            .choke
            .into_iter()
            .map(|x| x.topic)
            .filter(|t| in_mesh(self, t))
            .collect();
        if let Some(p) = self.peers.get_mut(&from) {
            for t in chokes {
                if p.chokes_us.len() < self.config.max_topics_per_peer {
                    p.chokes_us.insert(t);
                }
            }
            for x in c.unchoke {
                p.chokes_us.remove(&x.topic);
            }
        }
    }

    /// Tells `peer` to push `topic` to us again.
    fn unchoke_peer(&mut self, peer: PeerId, topic: &Topic) {
        if let Some(p) = self.peers.get_mut(&peer) {
            if p.choked_by_us.remove(topic) {
                self.metrics.unchokes_sent += 1;
                self.control_for(peer).unchoke.push(Choke {
                    topic: topic.clone(),
                });
            }
        }
    }

    /// Forgets every choke between us and `peer` on `topic` (it left our mesh).
    fn clear_chokes(&mut self, peer: &PeerId, topic: &Topic) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.choked_by_us.remove(topic);
            p.chokes_us.remove(topic);
        }
    }

    /// Heartbeat part of choking: per topic, choke the unchoked mesh peers whose copies were
    /// duplicates at least `choke_duplicate_ratio` of the time (with enough samples), worst
    /// first, keeping at least `choke_min_unchoked`; unchoke peers if fewer than that remain.
    fn maintain_chokes(&mut self, topic: &Topic) {
        let c = &self.config;
        let min_unchoked = c.choke_min_unchoked;
        let mesh = self.mesh_peers(topic);
        let unchoked: Vec<PeerId> = mesh
            .iter()
            .copied()
            .filter(|p| {
                self.peers
                    .get(p)
                    .is_some_and(|s| !s.choked_by_us.contains(topic))
            })
            .collect();
        if unchoked.len() < min_unchoked {
            let choked: Vec<PeerId> = mesh
                .iter()
                .copied()
                .filter(|p| !unchoked.contains(p))
                .take(min_unchoked - unchoked.len())
                .collect();
            for p in choked {
                self.unchoke_peer(p, topic);
            }
        } else if unchoked.len() > min_unchoked {
            // Worst first, while more than the minimum stay unchoked.
            let mut redundant: Vec<(u32, PeerId)> = unchoked
                .iter()
                .filter_map(|p| {
                    let (first, dup) = self.peers.get(p)?.window.get(topic).copied()?;
                    is_redundant((first, dup), &self.config)
                        .then_some((dup * 1000 / (first + dup).max(1), *p))
                })
                .collect();
            redundant.sort_by(|a, b| b.cmp(a));
            let room = unchoked.len() - min_unchoked;
            for (_, p) in redundant.into_iter().take(room) {
                if let Some(s) = self.peers.get_mut(&p) {
                    s.choked_by_us.insert(topic.clone());
                    self.metrics.chokes_sent += 1;
                    self.control_for(p).choke.push(Choke {
                        topic: topic.clone(),
                    });
                }
            }
        }
    }

    fn on_ihave(&mut self, now: Instant, from: PeerId, ihave: Vec<IHave>) {
        if ihave.is_empty() {
            return;
        }
        let (max_msgs, max_len) = (self.config.max_ihave_messages, self.config.max_ihave_length);
        let mut wanted = Vec::new();
        {
            let Some(p) = self.peers.get_mut(&from) else {
                return;
            };
            p.ihaves_this_beat += 1;
            if p.ihaves_this_beat > max_msgs {
                return;
            }
            for h in ihave {
                if !self.subscribed.contains(&h.topic) {
                    continue;
                }
                for id in h.message_ids {
                    if p.iwant_asked_this_beat >= max_len {
                        break;
                    }
                    if self.seen.contains(&id) || wanted.contains(&id) {
                        continue;
                    }
                    p.iwant_asked_this_beat += 1;
                    wanted.push(id);
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        let deadline = now + self.config.iwant_followup_time;
        let promised = self.promises.entry(from).or_default();
        for id in &wanted {
            promised.entry(id.clone()).or_insert(deadline);
        }
        self.metrics.iwant_sent += wanted.len() as u64;
        self.control_for(from).iwant.push(IWant {
            message_ids: wanted,
        });
    }

    fn on_iwant(&mut self, from: PeerId, iwant: Vec<IWant>) {
        let max = self.config.gossip_retransmission;
        for w in iwant {
            for id in w.message_ids {
                if self
                    .peers
                    .get(&from)
                    .is_some_and(|p| p.dont_want.contains(&id))
                {
                    continue;
                }
                let Some((m, count)) = self.mcache.get_for_peer(&id, from) else {
                    continue;
                };
                if count > max {
                    continue;
                }
                let bytes = Rpc {
                    publish: vec![m.clone()],
                    ..Rpc::default()
                }
                .encode();
                if self.enqueue(
                    from,
                    Outbound {
                        bytes,
                        priority: Priority::Forward,
                        message: Some(id),
                    },
                ) {
                    self.metrics.iwant_answered += 1;
                }
            }
        }
    }

    fn on_graft(&mut self, now: Instant, from: PeerId, topic: Topic) {
        self.metrics.grafts_received += 1;
        let peer_in_topic = self
            .peers
            .get(&from)
            .is_some_and(|p| p.topics.contains(&topic));
        if !self.subscribed.contains(&topic) || !peer_in_topic {
            // Not our topic, or not one the peer joined (a mesh holds only peers subscribed
            // to its topic): tell it, without peer exchange.
            let backoff = self.config.prune_backoff;
            self.control_for(from).prune.push(Prune {
                topic: topic.clone(),
                peers: Vec::new(),
                backoff_secs: Some(backoff.as_secs()),
            });
            self.metrics.prunes_sent += 1;
            return;
        }
        if self.mesh.get(&topic).is_some_and(|m| m.contains(&from)) {
            return;
        }
        let backoff = self.config.prune_backoff;
        if let Some(until) = self.backoff.get(&(topic.clone(), from)).copied() {
            if until > now {
                // GRAFT during backoff: a behaviour penalty, two if it is a flood (right
                // after the PRUNE).
                let mut penalty = 1;
                let pruned_at = until.checked_sub(backoff).unwrap_or(until);
                if now < pruned_at + self.config.graft_flood_threshold {
                    penalty += 1;
                }
                if let Some(s) = self.score.as_mut() {
                    s.add_penalty(&from, penalty);
                }
                self.control_for(from).prune.push(Prune {
                    topic: topic.clone(),
                    peers: Vec::new(),
                    backoff_secs: Some(backoff.as_secs()),
                });
                self.metrics.prunes_sent += 1;
                self.set_backoff(now, &topic, from, backoff);
                return;
            }
        }
        let score = self.peer_score(now, &from);
        let outbound = self.peers.get(&from).is_some_and(|p| p.outbound);
        let full = self
            .mesh
            .get(&topic)
            .is_some_and(|m| m.len() >= self.config.mesh_n_high);
        if score < 0.0 || (full && !outbound) {
            let px = score >= 0.0;
            self.prune_peer(now, &topic, from, backoff, px);
            return;
        }
        self.mesh.entry(topic.clone()).or_default().insert(from);
        if let Some(s) = self.score.as_mut() {
            s.graft(now, &from, &topic);
        }
        self.emit(GossipEvent::Graft {
            peer: from,
            topic,
            by_peer: true,
        });
    }

    fn on_prune(&mut self, now: Instant, from: PeerId, prune: Prune) {
        self.metrics.prunes_received += 1;
        let topic = prune.topic;
        self.clear_chokes(&from, &topic);
        if self.mesh.get_mut(&topic).is_some_and(|m| m.remove(&from)) {
            if let Some(s) = self.score.as_mut() {
                s.prune(now, &from, &topic);
            }
            self.emit(GossipEvent::Prune {
                peer: from,
                topic: topic.clone(),
                by_peer: true,
            });
        }
        let backoff = prune
            .backoff_secs
            .map_or(self.config.prune_backoff, Duration::from_secs);
        self.set_backoff(now, &topic, from, backoff);
        if !self.config.do_px || prune.peers.is_empty() {
            return;
        }
        if self.score.is_some()
            && self.peer_score(now, &from) < self.config.score_thresholds.accept_px_threshold
        {
            return;
        }
        for px in prune.peers.into_iter().take(self.config.prune_peers) {
            if px.peer == self.local || self.peers.contains_key(&px.peer) {
                continue;
            }
            let Some(record) = px.record else {
                continue;
            };
            if record.peer != px.peer || record.addrs.is_empty() || !record.verify() {
                continue;
            }
            self.metrics.px_dials += 1;
            self.actions.push_back(Action::Dial {
                peer: px.peer,
                addrs: record.addrs,
            });
        }
    }

    fn on_idontwant(&mut self, from: PeerId, lists: Vec<IDontWant>) {
        let max = self.config.max_idontwant_ids.max(1);
        let Some(p) = self.peers.get_mut(&from) else {
            return;
        };
        let mut new = HashSet::new();
        for l in lists {
            for id in l.message_ids {
                if p.dont_want.insert(id.clone()) {
                    p.dont_want_order.push_back(id.clone());
                    new.insert(id);
                }
            }
        }
        while p.dont_want_order.len() > max {
            if let Some(old) = p.dont_want_order.pop_front() {
                p.dont_want.remove(&old);
            }
        }
        let cancelled = p.queue.cancel_forwards(&new);
        self.metrics.idontwant_saved += cancelled as u64;
    }

    // ---- heartbeat ---------------------------------------------------------------------------

    /// Mesh maintenance, fanout expiry, gossip emission, promise checks, cache shifts and
    /// score decay. Call when [`Gossipsub::next_heartbeat`] is due.
    pub fn heartbeat(&mut self, now: Instant, rng: &mut dyn RngCore) {
        self.next_heartbeat = now + self.config.heartbeat_interval;
        self.ticks += 1;
        if let Some(s) = self.score.as_mut() {
            s.refresh(now);
        }
        self.backoff.retain(|_, until| *until > now);
        let topics: Vec<Topic> = self.mesh.keys().cloned().collect();
        for topic in &topics {
            self.maintain_mesh(now, topic, rng);
            if self.config.choke {
                self.maintain_chokes(topic);
            }
        }
        self.maintain_fanout(now, rng);
        self.emit_gossip(now, rng);
        self.check_promises(now);
        self.check_pending(now);
        self.check_bands(now);
        for p in self.peers.values_mut() {
            p.ihaves_this_beat = 0;
            p.iwant_asked_this_beat = 0;
            // Halve rather than forget: a peer is judged on the last few windows, so choking
            // converges in a few heartbeats even when each window holds few messages.
            for w in p.window.values_mut() {
                *w = (w.0 / 2, w.1 / 2);
            }
            p.window.retain(|_, w| w.0 + w.1 > 0);
        }
        self.mcache.shift();
        self.seen.expire(now);
        self.flush_control();
    }

    fn maintain_mesh(&mut self, now: Instant, topic: &Topic, rng: &mut dyn RngCore) {
        let c = &self.config;
        let (d, d_lo, d_hi, d_score, d_out) = (
            c.mesh_n,
            c.mesh_n_low,
            c.mesh_n_high,
            c.mesh_n_score,
            c.mesh_outbound_min,
        );
        let backoff = c.prune_backoff;
        let mut mesh: Vec<PeerId> = self.mesh_peers(topic);
        // Negative scores leave the mesh.
        let negative: Vec<PeerId> = mesh
            .iter()
            .copied()
            .filter(|p| self.peer_score(now, p) < 0.0)
            .collect();
        for p in &negative {
            self.remove_from_mesh(topic, p);
            self.prune_peer(now, topic, *p, backoff, false);
        }
        mesh.retain(|p| !negative.contains(p));

        let candidates = |this: &Self, mesh: &[PeerId]| -> Vec<PeerId> {
            this.topic_peers(topic)
                .into_iter()
                .filter(|p| {
                    !mesh.contains(p)
                        && !this.in_backoff(now, topic, p)
                        && this.peer_score(now, p) >= 0.0
                })
                .collect()
        };
        if mesh.len() < d_lo {
            let mut more = candidates(self, &mesh);
            more.shuffle(rng);
            for p in more.into_iter().take(d - mesh.len()) {
                self.add_to_mesh(topic, p);
                self.graft_peer(now, topic, p);
                mesh.push(p);
            }
        }
        if mesh.len() > d_hi {
            // Keep the D_score best, then random ones up to D, with at least D_out outbound.
            let mut by_score = mesh.clone();
            by_score.shuffle(rng);
            by_score.sort_by(|a, b| self.peer_score(now, b).total_cmp(&self.peer_score(now, a)));
            let mut keep: Vec<PeerId> = by_score.iter().take(d_score).copied().collect();
            let mut rest: Vec<PeerId> = by_score.iter().skip(d_score).copied().collect();
            rest.shuffle(rng);
            keep.extend(rest.iter().take(d.saturating_sub(keep.len())).copied());
            let outbound = |this: &Self, p: &PeerId| this.peers.get(p).is_some_and(|s| s.outbound);
            let mut have_out = keep.iter().filter(|p| outbound(self, p)).count();
            if have_out < d_out {
                let spare: Vec<PeerId> = mesh
                    .iter()
                    .filter(|p| !keep.contains(p) && outbound(self, p))
                    .copied()
                    .collect();
                for p in &spare {
                    if have_out >= d_out {
                        break;
                    }
                    // Swap out an inbound peer among the random part.
                    if let Some(pos) = keep.iter().rposition(|k| !outbound(self, k)) {
                        keep[pos] = *p;
                        have_out += 1;
                    }
                }
            }
            let drop: Vec<PeerId> = mesh.iter().copied().filter(|p| !keep.contains(p)).collect();
            for p in drop {
                self.remove_from_mesh(topic, &p);
                self.prune_peer(now, topic, p, backoff, true);
            }
            mesh = keep;
        }
        if mesh.len() >= d_lo {
            let outbound = mesh
                .iter()
                .filter(|p| self.peers.get(p).is_some_and(|s| s.outbound))
                .count();
            if outbound < d_out {
                let mut more: Vec<PeerId> = candidates(self, &mesh)
                    .into_iter()
                    .filter(|p| self.peers.get(p).is_some_and(|s| s.outbound))
                    .collect();
                more.shuffle(rng);
                for p in more.into_iter().take(d_out - outbound) {
                    self.add_to_mesh(topic, p);
                    self.graft_peer(now, topic, p);
                    mesh.push(p);
                }
            }
        }
        let every = self.config.opportunistic_graft_ticks.max(1);
        if self.score.is_some() && self.ticks % every == 0 && mesh.len() > 1 {
            let mut scores: Vec<f64> = mesh.iter().map(|p| self.peer_score(now, p)).collect();
            scores.sort_by(f64::total_cmp);
            let median = scores.get(scores.len() / 2).copied().unwrap_or(0.0);
            if median < self.config.score_thresholds.opportunistic_graft_threshold {
                let mut better: Vec<PeerId> = candidates(self, &mesh)
                    .into_iter()
                    .filter(|p| self.peer_score(now, p) > median)
                    .collect();
                better.shuffle(rng);
                for p in better
                    .into_iter()
                    .take(self.config.opportunistic_graft_peers)
                {
                    self.add_to_mesh(topic, p);
                    self.graft_peer(now, topic, p);
                }
            }
        }
    }

    fn add_to_mesh(&mut self, topic: &Topic, peer: PeerId) {
        self.mesh.entry(topic.clone()).or_default().insert(peer);
    }

    fn remove_from_mesh(&mut self, topic: &Topic, peer: &PeerId) {
        if let Some(m) = self.mesh.get_mut(topic) {
            m.remove(peer);
        }
        self.clear_chokes(peer, topic);
    }

    fn maintain_fanout(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let ttl = self.config.fanout_ttl;
        let expired: Vec<Topic> = self
            .fanout_last
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= ttl)
            .map(|(topic, _)| topic.clone())
            .collect();
        for t in expired {
            self.fanout.remove(&t);
            self.fanout_last.remove(&t);
        }
        let threshold = self.config.score_thresholds.publish_threshold;
        let topics: Vec<Topic> = self.fanout.keys().cloned().collect();
        for topic in topics {
            let subscribers = self.topic_peers(&topic);
            let keep: BTreeSet<PeerId> = self
                .fanout
                .get(&topic)
                .map(|f| {
                    f.iter()
                        .copied()
                        .filter(|p| subscribers.contains(p) && self.peer_score(now, p) >= threshold)
                        .collect()
                })
                .unwrap_or_default();
            let mut more: Vec<PeerId> = subscribers
                .into_iter()
                .filter(|p| !keep.contains(p) && self.peer_score(now, p) >= threshold)
                .collect();
            more.shuffle(rng);
            let need = self.config.mesh_n.saturating_sub(keep.len());
            let mut f = keep;
            f.extend(more.into_iter().take(need));
            self.fanout.insert(topic, f);
        }
    }

    fn emit_gossip(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let topics: Vec<Topic> = self
            .mesh
            .keys()
            .chain(self.fanout.keys())
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let threshold = self.config.score_thresholds.gossip_threshold;
        for topic in topics {
            let mut ids = self.mcache.gossip_ids(&topic);
            if ids.is_empty() {
                continue;
            }
            if ids.len() > self.config.max_ihave_length {
                ids.shuffle(rng);
                ids.truncate(self.config.max_ihave_length);
            }
            let exclude: BTreeSet<PeerId> = self
                .mesh
                .get(&topic)
                .into_iter()
                .chain(self.fanout.get(&topic))
                .flatten()
                .copied()
                .collect();
            let eligible: Vec<PeerId> = self
                .topic_peers(&topic)
                .into_iter()
                .filter(|p| !exclude.contains(p))
                .filter(|p| self.score.is_none() || self.peer_score(now, p) >= threshold)
                .collect();
            let target = self
                .config
                .gossip_lazy
                .max((self.config.gossip_factor * eligible.len() as f64) as usize);
            let mut chosen: Vec<PeerId> = eligible.choose_multiple(rng, target).copied().collect();
            // Mesh peers that choked us learn of messages only this way.
            chosen.extend(
                self.mesh
                    .get(&topic)
                    .into_iter()
                    .flatten()
                    .filter(|p| {
                        self.peers
                            .get(p)
                            .is_some_and(|s| s.chokes_us.contains(&topic))
                    })
                    .copied(),
            );
            let max_ids = self.limits.max_ids;
            for p in chosen {
                // Every topic's IHAVE for `p` goes out in one RPC: keep their ids together
                // within what a peer with our limits accepts, or it refuses the whole RPC.
                let control = self.control_for(p);
                let room = max_ids.saturating_sub(
                    control
                        .ihave
                        .iter()
                        .map(|h| h.message_ids.len())
                        .sum::<usize>(),
                );
                if room == 0 {
                    continue;
                }
                control.ihave.push(IHave {
                    topic: topic.clone(),
                    message_ids: ids.iter().take(room).cloned().collect(),
                });
                self.metrics.ihave_sent += 1;
            }
        }
    }

    fn check_promises(&mut self, now: Instant) {
        let mut broken: Vec<(PeerId, usize)> = Vec::new();
        for (peer, promised) in self.promises.iter_mut() {
            let before = promised.len();
            promised.retain(|_, deadline| *deadline > now);
            let n = before - promised.len();
            if n > 0 {
                broken.push((*peer, n));
            }
        }
        self.promises.retain(|_, p| !p.is_empty());
        for (peer, n) in broken {
            self.metrics.broken_promises += n as u64;
            if let Some(s) = self.score.as_mut() {
                s.add_penalty(&peer, n);
            }
        }
    }

    fn check_pending(&mut self, now: Instant) {
        let timeout = self.config.validation_timeout;
        let mut late: Vec<MessageId> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.received) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        late.sort();
        for id in late {
            self.report_validation(now, &id, Validation::Ignore);
        }
    }

    fn check_bands(&mut self, now: Instant) {
        if self.score.is_none() {
            return;
        }
        let t = self.config.score_thresholds.clone();
        let mut changes = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            let score = self.score.as_ref().map_or(0.0, |s| s.score(now, id));
            let band = if score < t.graylist_threshold {
                "graylisted"
            } else if score < t.publish_threshold {
                "below publish"
            } else if score < t.gossip_threshold {
                "below gossip"
            } else {
                "ok"
            };
            if band != p.band {
                p.band = band;
                changes.push((*id, score, band));
            }
        }
        for (peer, score, band) in changes {
            self.emit(GossipEvent::ScoreChanged { peer, score, band });
        }
    }
}

/// Whether a mesh peer's (first deliveries, duplicates) counts make it a choking candidate:
/// enough samples, and at least `choke_duplicate_ratio` of them duplicates.
fn is_redundant((first, dup): (u32, u32), config: &GossipsubConfig) -> bool {
    let total = first.saturating_add(dup);
    total >= config.choke_min_samples
        && f64::from(dup) >= config.choke_duplicate_ratio * f64::from(total)
}

#[cfg(test)]
mod tests;
