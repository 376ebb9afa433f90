//! The Kademlia protocol core, sans-IO: fed messages, timeouts and the time, drained of
//! actions (send this message to that peer, report this event). It owns the routing table,
//! the stores and every query; it never touches a socket, a clock or a thread RNG.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::message::{Message, MessageLimits, PeerRecord, Record, Request, Response};
use super::query::Lookup;
use super::routing_table::{RoutingTable, RoutingTableSnapshot, Update};
use super::store::{ProviderStore, RecordStore};
use super::{KademliaConfig, Key, Mode};
use crate::address::Multiaddr;
use crate::identity::PeerId;

/// Identifies a query.
pub type QueryId = u64;

/// Decides whether a record may be stored or returned (the registry rejects unsigned or
/// forged records here). It is given the wall-clock time (see
/// [`Kademlia::set_wall_clock`]) and reads no clock of its own.
pub trait RecordValidator: Send + Sync + 'static {
    /// `Ok` to accept, `Err(reason)` to refuse; `now` is the wall-clock time.
    fn validate(&self, record: &Record, now: SystemTime) -> Result<(), String>;
}

/// Something for the driver to do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Send `message` to `peer`, dialing `addrs` if not connected. If a request cannot be
    /// delivered, report it with [`Kademlia::on_send_failed`].
    Send {
        /// Recipient.
        peer: PeerId,
        /// Where to reach it.
        addrs: Vec<Multiaddr>,
        /// The message.
        message: Message,
    },
    /// Something to tell the application.
    Event(KadEvent),
    /// A record or provider record was stored here: write it to durable storage, so a
    /// restarted node still holds what the network placed on it. Emitted only with
    /// [`Kademlia::set_persistence`] on.
    Persist(Persisted),
}

/// A stored entry for durable storage (see [`Action::Persist`]); replaces any earlier entry
/// under the same key (and, for providers, the same peer). Expired entries are the storage's
/// to drop: each carries its expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// A record.
    Record {
        /// The record (its `ttl_secs` is not meaningful here; `expires` is).
        record: Record,
        /// When it expires.
        expires: Instant,
        /// We published it (we republish it).
        local: bool,
    },
    /// A provider record.
    Provider {
        /// The content key.
        key: Bytes,
        /// Who provides it.
        provider: PeerRecord,
        /// When the announcement expires.
        expires: Instant,
    },
}

/// Why a query did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum QueryError {
    /// The query ran past `query_timeout`.
    #[error("DHT lookup timeout")]
    Timeout,
    /// The lookup finished without finding the record or any provider.
    #[error("not found in the DHT")]
    NotFound,
    /// Fewer peers stored the record than the quorum asked for.
    #[error("stored on {stored} peers, quorum was {needed}")]
    QuorumFailed {
        /// Peers that stored it.
        stored: usize,
        /// Quorum.
        needed: usize,
    },
    /// The routing table is empty: nobody to ask.
    #[error("no known peers to query")]
    NoPeers,
}

/// What a finished query produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryOutcome {
    /// `find_closest_peers`: the k closest peers that answered, nearest first.
    ClosestPeers(Vec<PeerRecord>),
    /// `get_record`: the valid records found (at least one on success).
    GetRecord(Result<Vec<Record>, QueryError>),
    /// `put_record`: number of remote peers that stored it.
    PutRecord(Result<usize, QueryError>),
    /// `start_providing`: number of remote peers that stored the provider record.
    StartProviding(Result<usize, QueryError>),
    /// `get_providers`: providers found.
    GetProviders(Result<Vec<PeerRecord>, QueryError>),
    /// `bootstrap`: routing table size afterwards.
    Bootstrap(Result<usize, QueryError>),
}

/// Figures of one query, for operators and researchers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryStats {
    /// Hops to the closest answering peer set (peers from our own table are hop 1).
    pub hops: u32,
    /// Distinct peers contacted.
    pub peers_contacted: usize,
    /// Requests sent.
    pub messages: usize,
    /// Wall (or virtual) time from start to finish.
    pub duration: Duration,
    /// Whether it achieved its goal.
    pub success: bool,
}

/// Partial results, streamed while a query runs so a caller can stop early.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// A valid record, from `from`.
    Record {
        /// The record.
        record: Record,
        /// Who returned it.
        from: PeerId,
    },
    /// Providers not reported before.
    Providers {
        /// New providers.
        providers: Vec<PeerRecord>,
    },
}

/// Events for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KadEvent {
    /// A running query found something.
    Progress {
        /// Query.
        query: QueryId,
        /// What.
        progress: Progress,
    },
    /// A query ended.
    Finished {
        /// Query.
        query: QueryId,
        /// Result.
        outcome: QueryOutcome,
        /// Figures.
        stats: QueryStats,
    },
    /// A peer entered the routing table.
    PeerAdded(PeerId),
    /// A peer left the routing table.
    PeerRemoved(PeerId),
    /// A peer stored a valid record here.
    RecordStored {
        /// Application key.
        key: Bytes,
        /// Who sent it.
        from: PeerId,
    },
}

#[derive(Debug)]
enum Kind {
    FindNode,
    GetRecord {
        key: Bytes,
        quorum: usize,
        found: Vec<Record>,
        without: Vec<PeerRecord>,
    },
    PutRecord {
        record: Record,
        quorum: usize,
    },
    StartProviding {
        key: Bytes,
    },
    GetProviders {
        key: Bytes,
        found: HashMap<PeerId, PeerRecord>,
    },
    Bootstrap {
        remaining: Vec<Key>,
        planned: bool,
    },
}

#[derive(Debug)]
struct Storing {
    pending: HashSet<PeerId>,
    stored: usize,
}

#[derive(Debug)]
struct Query {
    kind: Kind,
    lookup: Lookup,
    started: Instant,
    messages: usize,
    contacted: usize,
    storing: Option<Storing>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Lookup(QueryId),
    Store(QueryId),
    Liveness,
    Fire,
}

#[derive(Debug)]
struct Outstanding {
    peer: PeerRecord,
    purpose: Purpose,
    deadline: Instant,
}

/// The Kademlia state machine of one node.
pub struct Kademlia {
    local: PeerId,
    config: KademliaConfig,
    limits: MessageLimits,
    table: RoutingTable,
    records: RecordStore,
    providers: ProviderStore,
    providing: HashMap<Bytes, Instant>,
    listen_addrs: Vec<Multiaddr>,
    bootstrap_peers: Vec<PeerRecord>,
    validator: Option<Arc<dyn RecordValidator>>,
    /// A monotonic instant and the wall-clock time at it (see `set_wall_clock`).
    wall_anchor: Option<(Instant, SystemTime)>,
    queries: HashMap<QueryId, Query>,
    requests: HashMap<u64, Outstanding>,
    actions: VecDeque<Action>,
    next_query: QueryId,
    next_request: u64,
    next_maintenance: Instant,
    bootstrap_query: Option<QueryId>,
    persist: bool,
    /// Restored records and provider keys of our own, republished at the next maintenance.
    republish_soon: HashSet<Bytes>,
    reprovide_soon: HashSet<Bytes>,
}

impl std::fmt::Debug for Kademlia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kademlia")
            .field("local", &self.local)
            .field("peers", &self.table.len())
            .field("queries", &self.queries.len())
            .finish_non_exhaustive()
    }
}

fn maintenance_period(cfg: &KademliaConfig) -> Duration {
    cfg.rebootstrap_interval
        .min(cfg.bucket_refresh_interval)
        .min(cfg.replication_interval)
        .max(Duration::from_millis(100))
}

impl Kademlia {
    /// A node with identity `local`.
    pub fn new(local: PeerId, config: KademliaConfig, now: Instant) -> Self {
        let limits = MessageLimits {
            max_message_size: config.max_message_size,
            max_peers: (config.k * 2).max(config.max_providers_per_key).max(20),
            max_addrs_per_peer: config.max_addrs_per_peer.max(1),
            max_key_len: 512,
            max_value_len: config.max_record_size,
        };
        Self {
            local,
            table: RoutingTable::new(local, &config),
            records: RecordStore::with_budget(
                config.max_records,
                config.max_record_size,
                config.max_record_bytes,
            ),
            providers: ProviderStore::new(config.max_provider_keys, config.max_providers_per_key),
            providing: HashMap::new(),
            listen_addrs: Vec::new(),
            bootstrap_peers: Vec::new(),
            validator: None,
            wall_anchor: None,
            queries: HashMap::new(),
            requests: HashMap::new(),
            actions: VecDeque::new(),
            next_query: 1,
            next_request: 1,
            next_maintenance: now + maintenance_period(&config),
            bootstrap_query: None,
            persist: false,
            republish_soon: HashSet::new(),
            reprovide_soon: HashSet::new(),
            limits,
            config,
        }
    }

    /// Our identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &KademliaConfig {
        &self.config
    }

    /// Message limits derived from the configuration (for decoding).
    pub fn message_limits(&self) -> &MessageLimits {
        &self.limits
    }

    /// Installs the record validator.
    pub fn set_validator(&mut self, v: Arc<dyn RecordValidator>) {
        self.validator = Some(v);
    }

    /// Turns [`Action::Persist`] on or off (off by default).
    pub fn set_persistence(&mut self, on: bool) {
        self.persist = on;
    }

    /// Puts back a record that durable storage kept from an earlier run, expiring at
    /// `expires`. A record we published is republished at the next maintenance (the network
    /// may have lost it while we were away). Validated like a record from a peer;
    /// returns false if refused (invalid, expired, or the store is full).
    pub fn restore_record(
        &mut self,
        now: Instant,
        record: Record,
        expires: Instant,
        local: bool,
    ) -> bool {
        let Some(ttl) = expires.checked_duration_since(now).filter(|t| !t.is_zero()) else {
            return false;
        };
        if let Some(v) = &self.validator {
            if v.validate(&record, self.wall(now)).is_err() {
                return false;
            }
        }
        let key = record.key.clone();
        if self.records.put(now, record, ttl, local).is_err() {
            return false;
        }
        if local {
            self.republish_soon.insert(key);
        }
        true
    }

    /// Puts back a provider record from durable storage. Our own announcements are
    /// re-announced at the next maintenance. Returns false if refused.
    pub fn restore_provider(
        &mut self,
        now: Instant,
        key: Bytes,
        provider: PeerRecord,
        expires: Instant,
    ) -> bool {
        let Some(ttl) = expires.checked_duration_since(now).filter(|t| !t.is_zero()) else {
            return false;
        };
        if provider.peer == self.local {
            self.providing.insert(key.clone(), now);
            self.reprovide_soon.insert(key.clone());
        }
        self.providers.add(now, key, provider, ttl)
    }

    fn persist_record(&mut self, now: Instant, key: &[u8]) {
        if !self.persist {
            return;
        }
        if let Some(r) = self.records.stored(key) {
            let (record, expires, local) = (r.record.clone(), r.expires, r.local);
            if expires > now {
                self.actions.push_back(Action::Persist(Persisted::Record {
                    record,
                    expires,
                    local,
                }));
            }
        }
    }

    fn persist_provider(&mut self, key: Bytes, provider: PeerRecord, ttl: Duration, now: Instant) {
        if self.persist {
            self.actions.push_back(Action::Persist(Persisted::Provider {
                key,
                provider,
                expires: now + ttl,
            }));
        }
    }

    /// The addresses we tell others to reach us at (server mode).
    pub fn set_listen_addrs(&mut self, addrs: Vec<Multiaddr>) {
        self.listen_addrs = addrs;
    }

    /// Peers used to (re-)join the network when the table is empty.
    pub fn add_bootstrap_peer(&mut self, now: Instant, peer: PeerId, addr: Multiaddr) {
        let addr = addr.without_peer_id();
        match self.bootstrap_peers.iter_mut().find(|p| p.peer == peer) {
            Some(p) if !p.addrs.contains(&addr) => p.addrs.push(addr.clone()),
            Some(_) => {}
            None => self.bootstrap_peers.push(PeerRecord {
                peer,
                addrs: vec![addr.clone()],
            }),
        }
        self.add_address(now, peer, addr);
    }

    /// Adds a peer we believe to be a DHT server to the routing table.
    pub fn add_address(&mut self, now: Instant, peer: PeerId, addr: Multiaddr) {
        self.table_update(now, peer, &[addr]);
    }

    /// Number of peers in the routing table.
    pub fn table_len(&self) -> usize {
        self.table.len()
    }

    /// The routing table (read-only).
    pub fn routing_table(&self) -> &RoutingTable {
        &self.table
    }

    /// Bucket occupancy, peers and last-seen ages.
    pub fn routing_table_snapshot(&self, now: Instant) -> RoutingTableSnapshot {
        self.table.snapshot(now)
    }

    /// Records stored here.
    pub fn record_store(&self) -> &RecordStore {
        &self.records
    }

    /// Provider records stored here.
    pub fn provider_store(&self) -> &ProviderStore {
        &self.providers
    }

    /// Running queries.
    pub fn active_queries(&self) -> usize {
        self.queries.len()
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Kademlia::handle_timeout`] must next be called.
    pub fn next_timeout(&self) -> Instant {
        let mut t = self.next_maintenance;
        for r in self.requests.values() {
            t = t.min(r.deadline);
        }
        for q in self.queries.values() {
            t = t.min(q.started + self.config.query_timeout);
        }
        t
    }

    fn self_record(&self) -> Option<PeerRecord> {
        (self.config.mode == Mode::Server && !self.listen_addrs.is_empty()).then(|| PeerRecord {
            peer: self.local,
            addrs: self.listen_addrs.clone(),
        })
    }

    fn emit(&mut self, e: KadEvent) {
        self.actions.push_back(Action::Event(e));
    }

    fn table_update(&mut self, now: Instant, peer: PeerId, addrs: &[Multiaddr]) {
        match self.table.update(now, peer, addrs) {
            Update::Inserted => self.emit(KadEvent::PeerAdded(peer)),
            Update::Pending { ping } => {
                if let Some(e) = self.table.get(&ping) {
                    let rec = e.record();
                    self.send_request(now, rec, Purpose::Liveness, Request::Ping);
                }
            }
            _ => {}
        }
    }

    fn send_request(&mut self, now: Instant, peer: PeerRecord, purpose: Purpose, body: Request) {
        let id = self.next_request;
        self.next_request += 1;
        let message = Message::Request {
            id,
            sender: self.self_record(),
            body,
        };
        self.actions.push_back(Action::Send {
            peer: peer.peer,
            addrs: peer.addrs.clone(),
            message,
        });
        self.requests.insert(
            id,
            Outstanding {
                peer,
                purpose,
                deadline: now + self.config.request_timeout,
            },
        );
    }

    fn closest_records(&self, key: &Key, exclude: &PeerId) -> Vec<PeerRecord> {
        self.table
            .closest(key, self.config.k + 1)
            .into_iter()
            .filter(|e| e.peer != *exclude)
            .take(self.config.k)
            .map(|e| e.record())
            .collect()
    }

    // ---- starting queries -------------------------------------------------------------

    /// A lookup towards `target`, seeded with the k closest peers in our table (or the
    /// bootstrap peers when the table is empty).
    fn new_lookup(&self, target: Key) -> Lookup {
        let mut seeds: Vec<PeerRecord> = self
            .table
            .closest(&target, self.config.k)
            .into_iter()
            .map(|e| e.record())
            .collect();
        if seeds.is_empty() {
            seeds = self.bootstrap_peers.clone();
        }
        Lookup::new(
            target,
            self.local,
            seeds,
            self.config.k,
            self.config.alpha,
            self.config.beta,
            self.config.disjoint_paths,
        )
    }

    fn start(&mut self, now: Instant, target: Key, kind: Kind) -> QueryId {
        let id = self.next_query;
        self.next_query += 1;
        let lookup = self.new_lookup(target);
        self.queries.insert(
            id,
            Query {
                kind,
                lookup,
                started: now,
                messages: 0,
                contacted: 0,
                storing: None,
            },
        );
        self.advance(now, id);
        id
    }

    /// Finds the k peers closest to `key`.
    pub fn find_closest_peers(&mut self, now: Instant, key: Key) -> QueryId {
        self.start(now, key, Kind::FindNode)
    }

    /// Looks up the record under `key`; ends as soon as `quorum` valid records are found
    /// (`None`: the configured `get_quorum`). A local copy counts.
    pub fn get_record(&mut self, now: Instant, key: Bytes, quorum: Option<usize>) -> QueryId {
        let quorum = quorum.unwrap_or(self.config.get_quorum).max(1);
        let mut found = Vec::new();
        if let Some(r) = self.records.get(now, &key) {
            if self.valid(now, &r) {
                found.push(r);
            }
        }
        let target = Key::from_record_key(&key);
        let id = self.start(
            now,
            target,
            Kind::GetRecord {
                key,
                quorum,
                found: Vec::new(),
                without: Vec::new(),
            },
        );
        for r in found {
            self.record_found(now, id, r, self.local);
        }
        id
    }

    /// Stores `record` locally and on the `replication_factor` closest peers; succeeds when
    /// `quorum` remote peers stored it (`None`: the configured `put_quorum`).
    pub fn put_record(
        &mut self,
        now: Instant,
        mut record: Record,
        quorum: Option<usize>,
    ) -> QueryId {
        record.publisher.get_or_insert(self.local);
        record.ttl_secs = self.config.record_ttl.as_secs().min(u32::MAX as u64) as u32;
        if self
            .records
            .put(now, record.clone(), self.config.record_ttl, true)
            .is_ok()
        {
            self.persist_record(now, &record.key);
        }
        let quorum = quorum.unwrap_or(self.config.put_quorum).max(1);
        let target = Key::from_record_key(&record.key);
        self.start(now, target, Kind::PutRecord { record, quorum })
    }

    /// Announces that we provide `key`, and keeps re-announcing it.
    pub fn start_providing(&mut self, now: Instant, key: Bytes) -> QueryId {
        self.providing.insert(key.clone(), now);
        if let Some(me) = self.self_record() {
            let ttl = self.config.provider_record_ttl;
            if self.providers.add(now, key.clone(), me.clone(), ttl) {
                self.persist_provider(key.clone(), me, ttl, now);
            }
        }
        let target = Key::from_record_key(&key);
        self.start(now, target, Kind::StartProviding { key })
    }

    /// Stops re-announcing `key` (existing provider records expire on their own).
    pub fn stop_providing(&mut self, key: &[u8]) {
        self.providing.remove(key);
    }

    /// Finds providers of `key`, streaming them as they arrive.
    pub fn get_providers(&mut self, now: Instant, key: Bytes) -> QueryId {
        let local = self.providers.get(now, &key);
        let target = Key::from_record_key(&key);
        let id = self.start(
            now,
            target,
            Kind::GetProviders {
                key,
                found: HashMap::new(),
            },
        );
        if !local.is_empty() {
            self.providers_found(id, local);
        }
        id
    }

    /// Joins (or re-joins) the network: a lookup of our own key, then a lookup in every bucket
    /// beyond our nearest neighbour's.
    pub fn bootstrap(&mut self, now: Instant, rng: &mut dyn RngCore) -> QueryId {
        let _ = rng;
        let me = Key::from_peer(&self.local);
        let id = self.start(
            now,
            me,
            Kind::Bootstrap {
                remaining: Vec::new(),
                planned: false,
            },
        );
        self.bootstrap_query = Some(id);
        id
    }

    /// Abandons a query without a `Finished` event.
    pub fn cancel(&mut self, id: QueryId) {
        self.queries.remove(&id);
        if self.bootstrap_query == Some(id) {
            self.bootstrap_query = None;
        }
    }

    fn valid(&self, now: Instant, r: &Record) -> bool {
        r.value.len() <= self.config.max_record_size
            && self
                .validator
                .as_ref()
                .is_none_or(|v| v.validate(r, self.wall(now)).is_ok())
    }

    /// Sets the wall-clock time at `now`: validators are given the wall-clock time derived
    /// from it (drivers set it when they start and at every timeout, the simulator from its
    /// own clock). Until it is set, validators are given the Unix epoch.
    pub fn set_wall_clock(&mut self, now: Instant, wall: SystemTime) {
        self.wall_anchor = Some((now, wall));
    }

    /// The wall-clock time at `now`.
    fn wall(&self, now: Instant) -> SystemTime {
        match self.wall_anchor {
            Some((at, wall)) if now >= at => wall + (now - at),
            Some((at, wall)) => wall.checked_sub(at - now).unwrap_or(UNIX_EPOCH),
            None => UNIX_EPOCH,
        }
    }

    // ---- driving queries --------------------------------------------------------------

    fn advance(&mut self, now: Instant, id: QueryId) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        if let Some(s) = &q.storing {
            if s.pending.is_empty() {
                self.finish(now, id, false);
            }
            return;
        }
        if !q.lookup.is_finished() {
            let next = q.lookup.next_requests();
            let body = match &q.kind {
                Kind::GetRecord { key, .. } => Request::GetValue { key: key.clone() },
                Kind::GetProviders { key, .. } => Request::GetProviders { key: key.clone() },
                _ => Request::FindNode {
                    key: *q.lookup.target(),
                },
            };
            q.messages += next.len();
            q.contacted += next.len();
            let pending = q.lookup.waiting();
            for peer in next {
                self.send_request(now, peer, Purpose::Lookup(id), body.clone());
            }
            if pending > 0 {
                return;
            }
        }
        // The lookup is over (or stuck with nobody left to ask).
        enum Next {
            Store(Request),
            Provide(Bytes),
            Bootstrap,
            Finish,
        }
        let next = match self.queries.get(&id).map(|q| &q.kind) {
            Some(Kind::PutRecord { record, .. }) => Next::Store(Request::PutValue {
                record: record.clone(),
            }),
            Some(Kind::StartProviding { key }) => Next::Provide(key.clone()),
            Some(Kind::Bootstrap { .. }) => Next::Bootstrap,
            _ => Next::Finish,
        };
        match next {
            Next::Store(body) => self.start_storing(now, id, body),
            Next::Provide(key) => match self.self_record() {
                Some(provider) => {
                    self.start_storing(now, id, Request::AddProvider { key, provider })
                }
                None => self.finish(now, id, false),
            },
            Next::Bootstrap => self.bootstrap_step(now, id),
            Next::Finish => self.finish(now, id, false),
        }
    }

    /// After the self-lookup, one lookup per bucket farther than our nearest neighbour's
    /// (paper §2.3), farthest first; then the bootstrap query finishes.
    fn bootstrap_step(&mut self, now: Instant, id: QueryId) {
        let planned = matches!(
            self.queries.get(&id),
            Some(Query {
                kind: Kind::Bootstrap { planned: true, .. },
                ..
            })
        );
        let targets = if planned {
            Vec::new()
        } else {
            self.refresh_targets(now)
        };
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Kind::Bootstrap { remaining, planned } = &mut q.kind else {
            return;
        };
        if !*planned {
            *planned = true;
            *remaining = targets;
        }
        let Some(target) = remaining.pop() else {
            self.finish(now, id, false);
            return;
        };
        let lookup = self.new_lookup(target);
        if let Some(q) = self.queries.get_mut(&id) {
            q.lookup = lookup;
        }
        self.advance(now, id);
    }

    /// A target key in every bucket farther than our nearest neighbour's, nearest first.
    /// Targets are derived from our key and the bucket index (no RNG needed here, which keeps
    /// simulations reproducible); the buckets are marked refreshed.
    fn refresh_targets(&mut self, now: Instant) -> Vec<Key> {
        let Some(nearest) = self.table.nearest_bucket() else {
            return Vec::new();
        };
        let me = Key::from_peer(&self.local);
        (nearest + 1..256)
            .map(|b| {
                self.table.touch_bucket(b, now);
                let seed = Key::from_record_key(&[me.as_bytes().as_slice(), &[b as u8]].concat());
                me.random_in_bucket(b, *seed.as_bytes())
            })
            .collect()
    }

    fn start_storing(&mut self, now: Instant, id: QueryId, body: Request) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let targets: Vec<PeerRecord> = q
            .lookup
            .result(self.config.replication_factor)
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        q.storing = Some(Storing {
            pending: targets.iter().map(|t| t.peer).collect(),
            stored: 0,
        });
        q.messages += targets.len();
        if targets.is_empty() {
            self.finish(now, id, false);
            return;
        }
        for t in targets {
            self.send_request(now, t, Purpose::Store(id), body.clone());
        }
    }

    fn finish(&mut self, now: Instant, id: QueryId, timed_out: bool) {
        let Some(q) = self.queries.remove(&id) else {
            return;
        };
        if self.bootstrap_query == Some(id) {
            self.bootstrap_query = None;
        }
        self.requests.retain(
            |_, r| !matches!(r.purpose, Purpose::Lookup(qid) | Purpose::Store(qid) if qid == id),
        );
        let result = q.lookup.result(self.config.k);
        let hops = result.iter().map(|(_, d)| *d).max().unwrap_or(0);
        let closest: Vec<PeerRecord> = result.into_iter().map(|(r, _)| r).collect();
        let stored = q.storing.as_ref().map_or(0, |s| s.stored);
        let fail = |e: QueryError| if timed_out { QueryError::Timeout } else { e };
        let outcome = match q.kind {
            Kind::FindNode => QueryOutcome::ClosestPeers(closest),
            Kind::GetRecord {
                key,
                found,
                without,
                ..
            } => {
                if found.is_empty() {
                    QueryOutcome::GetRecord(Err(fail(QueryError::NotFound)))
                } else {
                    if self.config.cache_on_get {
                        // Cache at the closest peer that answered without the record.
                        let target = Key::from_record_key(&key);
                        if let Some(peer) = without
                            .into_iter()
                            .min_by_key(|p| target.distance(&Key::from_peer(&p.peer)))
                        {
                            let record = found[0].clone();
                            self.send_request(
                                now,
                                peer,
                                Purpose::Fire,
                                Request::PutValue { record },
                            );
                        }
                    }
                    QueryOutcome::GetRecord(Ok(found))
                }
            }
            Kind::PutRecord { quorum, .. } => QueryOutcome::PutRecord(if stored >= quorum {
                Ok(stored)
            } else if closest.is_empty() && stored == 0 {
                Err(fail(QueryError::NoPeers))
            } else {
                Err(fail(QueryError::QuorumFailed {
                    stored,
                    needed: quorum,
                }))
            }),
            Kind::StartProviding { .. } => QueryOutcome::StartProviding(if stored >= 1 {
                Ok(stored)
            } else if closest.is_empty() {
                Err(fail(QueryError::NoPeers))
            } else {
                Err(fail(QueryError::QuorumFailed { stored, needed: 1 }))
            }),
            Kind::GetProviders { found, .. } => QueryOutcome::GetProviders(if found.is_empty() {
                Err(fail(QueryError::NotFound))
            } else {
                Ok(found.into_values().collect())
            }),
            Kind::Bootstrap { .. } => QueryOutcome::Bootstrap(if self.table.is_empty() {
                Err(fail(QueryError::NoPeers))
            } else {
                Ok(self.table.len())
            }),
        };
        let success = match &outcome {
            QueryOutcome::ClosestPeers(p) => !p.is_empty(),
            QueryOutcome::GetRecord(r) => r.is_ok(),
            QueryOutcome::PutRecord(r)
            | QueryOutcome::StartProviding(r)
            | QueryOutcome::Bootstrap(r) => r.is_ok(),
            QueryOutcome::GetProviders(r) => r.is_ok(),
        };
        let stats = QueryStats {
            hops,
            peers_contacted: q.contacted,
            messages: q.messages,
            duration: now.saturating_duration_since(q.started),
            success,
        };
        self.emit(KadEvent::Finished {
            query: id,
            outcome,
            stats,
        });
    }

    fn record_found(&mut self, now: Instant, id: QueryId, record: Record, from: PeerId) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Kind::GetRecord { found, quorum, .. } = &mut q.kind else {
            return;
        };
        found.push(record.clone());
        let done = found.len() >= *quorum;
        self.emit(KadEvent::Progress {
            query: id,
            progress: Progress::Record { record, from },
        });
        if done {
            self.finish(now, id, false);
        }
    }

    fn providers_found(&mut self, id: QueryId, providers: Vec<PeerRecord>) {
        let Some(q) = self.queries.get_mut(&id) else {
            return;
        };
        let Kind::GetProviders { found, .. } = &mut q.kind else {
            return;
        };
        let mut new = Vec::new();
        for p in providers {
            if let std::collections::hash_map::Entry::Vacant(slot) = found.entry(p.peer) {
                slot.insert(p.clone());
                new.push(p);
            }
        }
        if !new.is_empty() {
            self.emit(KadEvent::Progress {
                query: id,
                progress: Progress::Providers { providers: new },
            });
        }
    }

    // ---- inbound ------------------------------------------------------------------------

    /// Handles one message from `from` (already decoded with [`Message::decode`]).
    pub fn handle_message(&mut self, now: Instant, from: PeerId, message: Message) {
        match message {
            Message::Request { id, sender, body } => {
                if let Some(s) = sender.filter(|s| s.peer == from) {
                    self.table_update(now, from, &s.addrs);
                }
                let response = self.answer(now, from, body);
                self.actions.push_back(Action::Send {
                    peer: from,
                    addrs: Vec::new(),
                    message: Message::Response { id, body: response },
                });
            }
            Message::Response { id, body } => {
                let Some(out) = self.requests.get(&id) else {
                    return;
                };
                if out.peer.peer != from {
                    return; // a response id from the wrong peer: ignore it
                }
                let Some(out) = self.requests.remove(&id) else {
                    return;
                };
                let failed = matches!(body, Response::Error { .. });
                if !failed {
                    self.table_update(now, from, &out.peer.addrs);
                }
                self.on_response(now, out, Some(body));
            }
        }
    }

    fn answer(&mut self, now: Instant, from: PeerId, body: Request) -> Response {
        if self.config.mode == Mode::Client {
            return Response::Error {
                reason: "client mode: not serving DHT requests".into(),
            };
        }
        match body {
            Request::Ping => Response::Pong,
            Request::FindNode { key } => Response::Nodes {
                closer: self.closest_records(&key, &from),
            },
            Request::GetValue { key } => {
                let target = Key::from_record_key(&key);
                Response::Value {
                    record: self.records.get(now, &key),
                    closer: self.closest_records(&target, &from),
                }
            }
            Request::PutValue { record } => {
                if let Some(v) = &self.validator {
                    if let Err(reason) = v.validate(&record, self.wall(now)) {
                        return Response::Error { reason };
                    }
                }
                let ttl = Duration::from_secs(record.ttl_secs as u64).min(self.config.record_ttl);
                let key = record.key.clone();
                match self.records.put(now, record, ttl, false) {
                    Ok(()) => {
                        self.persist_record(now, &key);
                        self.emit(KadEvent::RecordStored { key, from });
                        Response::Stored
                    }
                    Err(e) => Response::Error {
                        reason: e.to_string(),
                    },
                }
            }
            Request::AddProvider { key, provider } => {
                if provider.peer != from {
                    return Response::Error {
                        reason: "a peer can only announce itself as provider".into(),
                    };
                }
                let ttl = self.config.provider_record_ttl;
                if self.providers.add(now, key.clone(), provider.clone(), ttl) {
                    self.persist_provider(key, provider, ttl, now);
                    Response::Stored
                } else {
                    Response::Error {
                        reason: "provider store full".into(),
                    }
                }
            }
            Request::GetProviders { key } => {
                let target = Key::from_record_key(&key);
                Response::Providers {
                    providers: self.providers.get(now, &key),
                    closer: self.closest_records(&target, &from),
                }
            }
        }
    }

    /// `body` is `None` for a timeout or a delivery failure.
    /// A request whose connection closed before the answer: retried by its lookup, and not
    /// held against the peer (the closing may have been our own connection eviction).
    fn on_lost(&mut self, now: Instant, out: Outstanding) {
        match out.purpose {
            Purpose::Lookup(id) => {
                if let Some(q) = self.queries.get_mut(&id) {
                    q.lookup.on_lost_link(&out.peer.peer);
                }
                self.advance(now, id);
            }
            _ => self.on_response(now, out, None),
        }
    }

    fn on_response(&mut self, now: Instant, out: Outstanding, body: Option<Response>) {
        let peer = out.peer.peer;
        // No answer at all (timeout, undeliverable) counts against the peer; an error answer
        // does not: the peer is alive, it only refused.
        if body.is_none() && out.purpose != Purpose::Liveness {
            if let Some(promoted) = self.table.failure(&peer) {
                self.emit(KadEvent::PeerRemoved(peer));
                if let Some(added) = promoted {
                    self.emit(KadEvent::PeerAdded(added));
                }
            }
        }
        match out.purpose {
            Purpose::Fire => {}
            Purpose::Liveness => {
                let alive = matches!(body, Some(Response::Pong));
                if !alive {
                    self.emit(KadEvent::PeerRemoved(peer));
                }
                if let Some(added) = self.table.liveness(now, &peer, alive) {
                    self.emit(KadEvent::PeerAdded(added));
                }
            }
            Purpose::Store(id) => {
                if let Some(s) = self.queries.get_mut(&id).and_then(|q| q.storing.as_mut()) {
                    if s.pending.remove(&peer) && matches!(body, Some(Response::Stored)) {
                        s.stored += 1;
                    }
                }
                self.advance(now, id);
            }
            Purpose::Lookup(id) => {
                let Some(q) = self.queries.get_mut(&id) else {
                    return;
                };
                match body {
                    Some(Response::Nodes { closer }) => q.lookup.on_success(&peer, closer),
                    Some(Response::Value { record, closer }) => {
                        let mut got = None;
                        if let Kind::GetRecord { key, without, .. } = &mut q.kind {
                            match record {
                                Some(r) if r.key == *key => got = Some(r),
                                _ => without.push(out.peer.clone()),
                            }
                        }
                        q.lookup.on_success(&peer, closer);
                        if let Some(r) = got {
                            if self.valid(now, &r) {
                                self.record_found(now, id, r, peer);
                            } else if let Some(Query {
                                kind: Kind::GetRecord { without, .. },
                                ..
                            }) = self.queries.get_mut(&id)
                            {
                                without.push(out.peer.clone());
                            }
                        }
                    }
                    Some(Response::Providers { providers, closer }) => {
                        q.lookup.on_success(&peer, closer);
                        self.providers_found(id, providers);
                    }
                    _ => q.lookup.on_failure(&peer),
                }
                self.advance(now, id);
            }
        }
    }

    /// The driver could not deliver the request carried by `message` to `peer` (dial
    /// failure, connection lost): it counts as an immediate timeout.
    pub fn on_send_failed(&mut self, now: Instant, peer: PeerId, message: &Message) {
        if let Message::Request { id, .. } = message {
            if self.requests.get(id).is_some_and(|o| o.peer.peer == peer) {
                if let Some(out) = self.requests.remove(id) {
                    self.on_response(now, out, None);
                }
            }
        }
    }

    /// The connection to `peer` closed: its outstanding requests can no longer be answered,
    /// so they fail now instead of at their timeout.
    pub fn on_disconnected(&mut self, now: Instant, peer: PeerId) {
        let lost: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, o)| o.peer.peer == peer)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(out) = self.requests.remove(&id) {
                self.on_lost(now, out);
            }
        }
    }

    // ---- time -------------------------------------------------------------------------

    /// Processes everything due at `now`: request and query timeouts, and maintenance
    /// (expiry, re-bootstrap, bucket refresh, republish, re-replication, re-provide).
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let expired: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(out) = self.requests.remove(&id) {
                tracing::debug!(local = %self.local, peer = %out.peer.peer, id, purpose = ?out.purpose, "DHT request timed out");
                self.on_response(now, out, None);
            }
        }
        let late: Vec<QueryId> = self
            .queries
            .iter()
            .filter(|(_, q)| q.started + self.config.query_timeout <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.finish(now, id, true);
        }
        if now >= self.next_maintenance {
            self.next_maintenance = now + maintenance_period(&self.config);
            self.maintain(now, rng);
        }
    }

    fn maintain(&mut self, now: Instant, rng: &mut dyn RngCore) {
        self.records.expire(now);
        self.providers.expire(now);
        if self.table.len() < self.config.k
            && self.bootstrap_query.is_none()
            && (!self.table.is_empty() || !self.bootstrap_peers.is_empty())
        {
            self.bootstrap(now, rng);
        }
        let stale = self
            .table
            .stale_buckets(now, self.config.bucket_refresh_interval);
        let me = Key::from_peer(&self.local);
        for b in stale.into_iter().rev().take(4) {
            let mut r = [0u8; 32];
            rng.fill_bytes(&mut r);
            self.table.touch_bucket(b, now);
            self.find_closest_peers(now, me.random_in_bucket(b, r));
        }
        let ready = !self.table.is_empty();
        let due: Vec<Record> = self
            .records
            .iter()
            .filter(|r| {
                let every = if r.local {
                    self.config.republish_interval
                } else {
                    self.config.replication_interval
                };
                now.saturating_duration_since(r.last_replicated) >= every
                    || (ready && self.republish_soon.contains(&r.record.key))
            })
            .map(|r| r.record.clone())
            .collect();
        for record in due {
            self.records.mark_replicated(&record.key, now);
            let target = Key::from_record_key(&record.key);
            self.start(now, target, Kind::PutRecord { record, quorum: 1 });
        }
        let reprovide: Vec<Bytes> = self
            .providing
            .iter()
            .filter(|(k, t)| {
                now.saturating_duration_since(**t) >= self.config.provider_republish_interval
                    || (ready && self.reprovide_soon.contains(*k))
            })
            .map(|(k, _)| k.clone())
            .collect();
        // Restored entries wait for a peer to send them to.
        if ready {
            self.republish_soon.clear();
            self.reprovide_soon.clear();
        }
        for key in reprovide {
            self.start_providing(now, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;

    fn record(key: &str) -> Record {
        Record {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::from_static(b"value"),
            publisher: None,
            ttl_secs: 3600,
        }
    }

    fn drain(k: &mut Kademlia) -> Vec<Action> {
        std::iter::from_fn(|| k.poll_action()).collect()
    }

    fn persisted(actions: &[Action]) -> Vec<Persisted> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Persist(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn stored_records_and_providers_are_reported_for_persistence_only_when_on() {
        let now = Instant::now();
        let (me, peer) = (Keypair::generate().peer_id(), Keypair::generate().peer_id());
        let put = |id| Message::Request {
            id,
            sender: None,
            body: Request::PutValue {
                record: record("k"),
            },
        };
        let mut k = Kademlia::new(me, KademliaConfig::default(), now);
        k.handle_message(now, peer, put(1));
        assert!(persisted(&drain(&mut k)).is_empty(), "off by default");

        k.set_persistence(true);
        k.handle_message(now, peer, put(2));
        let p = persisted(&drain(&mut k));
        assert!(
            matches!(&p[..], [Persisted::Record { record, local: false, expires }]
                if record.key == record_key("k") && *expires > now),
            "{p:?}"
        );
        let provider = PeerRecord {
            peer,
            addrs: vec![addr(1)],
        };
        k.handle_message(
            now,
            peer,
            Message::Request {
                id: 3,
                sender: None,
                body: Request::AddProvider {
                    key: record_key("c"),
                    provider: provider.clone(),
                },
            },
        );
        let p = persisted(&drain(&mut k));
        assert!(
            matches!(&p[..], [Persisted::Provider { key, provider: got, .. }]
                if *key == record_key("c") && *got == provider),
            "{p:?}"
        );
    }

    fn record_key(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn restored_entries_are_served_and_our_own_are_republished_at_the_next_maintenance() {
        let now = Instant::now();
        let (me, peer) = (Keypair::generate().peer_id(), Keypair::generate().peer_id());
        let config = KademliaConfig::default();
        let mut k = Kademlia::new(me, config.clone(), now);
        k.set_listen_addrs(vec![addr(2)]);
        let hour = Duration::from_secs(3600);
        assert!(
            !k.restore_record(now, record("gone"), now, false),
            "expired"
        );
        assert!(k.restore_record(now, record("theirs"), now + hour, false));
        assert!(k.restore_record(now, record("mine"), now + hour, true));
        let me_record = PeerRecord {
            peer: me,
            addrs: vec![addr(2)],
        };
        assert!(k.restore_provider(now, record_key("blob"), me_record, now + hour));
        assert!(k.record_store().get(now, b"theirs").is_some());
        assert!(k.record_store().get(now, b"gone").is_none());
        assert_eq!(k.provider_store().get(now, b"blob").len(), 1);

        // With a peer to send to, the next maintenance pushes our record and our
        // announcement again, and not the record we only hold for others.
        k.add_address(now, peer, addr(1));
        drain(&mut k);
        let later = now + maintenance_period(&config);
        k.handle_timeout(later, &mut rand::rng());
        // Every query looks up the closest peers first: the one peer answers with no others,
        // and the queries go on to their stores.
        let mut sent: Vec<Request> = Vec::new();
        let mut pending = drain(&mut k);
        while !pending.is_empty() {
            for a in std::mem::take(&mut pending) {
                if let Action::Send {
                    message: Message::Request { id, body, .. },
                    ..
                } = a
                {
                    let answer = match &body {
                        Request::FindNode { .. } => Response::Nodes { closer: vec![] },
                        Request::GetProviders { .. } => Response::Providers {
                            providers: vec![],
                            closer: vec![],
                        },
                        _ => Response::Stored,
                    };
                    sent.push(body);
                    k.handle_message(later, peer, Message::Response { id, body: answer });
                }
            }
            pending = drain(&mut k);
        }
        let puts: Vec<&Bytes> = sent
            .iter()
            .filter_map(|b| match b {
                Request::PutValue { record } => Some(&record.key),
                _ => None,
            })
            .collect();
        assert_eq!(puts, vec![&record_key("mine")], "{sent:?}");
        assert!(
            sent.iter().any(
                |b| matches!(b, Request::AddProvider { key, .. } if *key == record_key("blob"))
            ),
            "{sent:?}"
        );
    }
}
