//! The registry's sans-IO core: every decision a registry node makes, in one plain struct.
//!
//! [`RegistryCore`] owns the admitted records, the state of every package name (its
//! claimant, whether the claim is settled, its maintainers and its statement log), the
//! searchable catalogue, the known content providers, the anti-entropy rounds with peers
//! and the ownership polls. It is fed inputs (`handle_*`), each with the monotonic `now`
//! and, where records are checked, the wall-clock time; randomness comes in as an
//! `&mut dyn RngCore`. It never does I/O: what must happen next comes out as [`Effect`]s,
//! drained with [`RegistryCore::poll_effect`], and the next moment it wants to be woken is
//! [`RegistryCore::poll_timeout`]. One driver task owns it (`super::driver`); the
//! simulator runs the same struct.
//!
//! # Admission (one decision, in one place)
//!
//! Every record, wherever it comes from (a local publish, gossip, sync, a DHT answer, the
//! store at start), goes through [`RegistryCore::admit`]. Because one owner drives the
//! core, the check and the change are one step: two conflicting records cannot both pass.
//!
//! # Names (the trust model; `docs/ARCHITECTURE.md` argues it in full)
//!
//! - The first record of an unknown name makes its key the name's **claimant**, and the
//!   node notes when it first saw the claim (its own monotonic clock, not the record's
//!   dates).
//! - For `race_window` after that, a claim of the same name by another key is a **rival**:
//!   it is held aside, not admitted, and the node **polls** a sample of its peers (peers
//!   connected now and peers lost within `peer_memory`) for the claimant they hold. The
//!   claimant held by a strict majority of the sample (this node counting once, lost
//!   peers counting against every claimant) wins; ties go to the smaller
//!   SHA-256(name, key). The node switches to the winner if it must, and the claim is
//!   **settled** once the window has passed and a poll found such a majority. Arrival
//!   order decides races, so a record's own dates win nothing.
//! - A node **cut off** from most of the peers it knows (more peers lost within
//!   `peer_memory` than connected) settles nothing and abstains in polls: it answers with
//!   no names, which counts against every claimant, like an unreachable peer. So the
//!   minority side of a split neither settles its own claims nor vouches for them to a
//!   neighbour that happens to reach more of that side than it lost, and takes the
//!   majority's claims once the split heals. A poll settles nothing either if the node was
//!   cut off when it began, or if a peer connected while it was out: its sample no longer
//!   stands for the node's peers (a split may have just healed).
//! - Nor does a node settle a claim while its peers report another claimant settled: such
//!   a peer never gives its claim up, so settling ours would split the name for sure (a
//!   node that was apart catches up instead). One such report makes the next poll of the
//!   name **wide** (every connected peer, up to [`MAX_WIDE_POLL`]); there the reports stop
//!   settling only when they come from at least two peers and a quarter of those that
//!   answered. A lone liar delays a node's settling by one poll; no liar can make it settle
//!   the liar's claim.
//!
//! # Anti-entropy
//!
//! Every `sync_interval` a full node starts a round with a random connected peer: per-bucket
//! digests, then the ids and fingerprints of the buckets that differ, then the records it
//! lacks, then the name logs. A failed request is retried (up to [`MAX_SYNC_RETRIES`]
//! times per round) before the round gives up on that peer.
//! - A settled claim is never given up: any record of another key is refused, whatever its
//!   dates, and nothing from another key ever drops the owner's versions.
//! - The owner adds and removes maintainers and transfers the name by signed
//!   [`NameStatement`]s, applied in log order; a key that loses its rights keeps only the
//!   records the statement lists.
//! - A version's content never changes; a re-signing is admitted only with a newer
//!   `updated_at`, so replaying an older one changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{OwnershipConfig, RegistryConfig};
use super::error::RegistryError;
use super::index::Catalogue;
use super::protocol::{
    LogHead, MAX_BUCKET_IDS, MAX_LOG_HEADS, MAX_POLL_NAMES, MAX_SYNC_RECORDS, OwnerAnswer,
    SYNC_BUCKETS, SyncRequest, SyncResponse,
};
use super::signed::{MAX_CLOCK_SKEW, MAX_NAME_LOG, NameAction, NameStatement, SignedPackage};
use super::store::{Batch, OwnerEntry};
use super::types::{Package, PackageUpdate, Query, SearchResult, UpdateType};
use crate::identity::{Keypair, PeerId, PublicKey};
use crate::rpc::content::ContentHash;

/// Largest total size of statements in one [`SyncResponse::Logs`] answer.
const MAX_LOGS_ANSWER_BYTES: usize = 12 << 20;
/// How long a poll waits for its answers.
const POLL_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Peers remembered for polls (connected or recently lost).
const MAX_REMEMBERED_PEERS: usize = 1024;
/// Publisher keys kept decoded.
const KEY_CACHE: usize = 10_000;
/// Failed requests an anti-entropy round retries before it gives up on the peer.
const MAX_SYNC_RETRIES: u8 = 3;
/// The most peers a wide poll asks.
const MAX_WIDE_POLL: usize = 64;

/// What the core needs of the registry configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CoreConfig {
    /// A full node: keeps the catalogue, answers searches, syncs with peers.
    pub full: bool,
    /// A seeder: asks for the content of every record it admits.
    pub replicate_content: bool,
    /// Time between anti-entropy rounds with a random peer.
    pub sync_interval: Duration,
    /// Race window and polls.
    pub ownership: OwnershipConfig,
}

impl CoreConfig {
    /// The core's part of a [`RegistryConfig`].
    pub fn from_registry(c: &RegistryConfig) -> Self {
        Self {
            full: c.catalogue,
            replicate_content: c.replicate_content,
            sync_interval: Duration::from_secs(c.sync_interval.max(1)),
            ownership: c.ownership.clone(),
        }
    }
}

/// Identifies a local publish or statement waiting for its store write.
pub type Ticket = u64;

/// Where a record came from (what admission may do with it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This node's own publish.
    Local,
    /// A gossip announcement forwarded by this peer.
    Gossip(PeerId),
    /// An anti-entropy answer or a poll answer from this peer.
    Sync(PeerId),
    /// A DHT lookup.
    Dht,
}

/// What the core asks its driver to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Write this batch to the store. With a ticket, report the outcome through
    /// [`RegistryCore::handle_persisted`].
    Persist {
        /// The writes, one transaction.
        batch: Batch,
        /// Set for a local publish or statement that waits until it is durable.
        ticket: Option<Ticket>,
    },
    /// Announce our record on the packages topic and its category and name topics.
    Announce(Arc<SignedPackage>),
    /// Announce a name statement on the names topic.
    AnnounceStatement(Arc<NameStatement>),
    /// Put our record in the DHT under its version key, and under its name key when it is
    /// the name's latest version.
    PutRecord {
        /// The record.
        record: Arc<SignedPackage>,
        /// Also under the name key.
        name_key: bool,
    },
    /// Send this anti-entropy or poll request; feed the answer to
    /// [`RegistryCore::handle_response`] or the failure to
    /// [`RegistryCore::handle_request_failed`].
    Request {
        /// To whom.
        peer: PeerId,
        /// What.
        request: SyncRequest,
    },
    /// Fetch, keep and serve this record's content (a seeder).
    Replicate(Arc<SignedPackage>),
    /// Tell subscribers.
    Update(PackageUpdate),
    /// A local publish or statement is done (durable and announced, or refused).
    Done {
        /// Its ticket.
        ticket: Ticket,
        /// The record (or the statement's name) on success.
        result: Result<Option<Arc<SignedPackage>>, RegistryError>,
    },
    /// Records were dropped (a race lost, a key retired): their content is no longer
    /// referenced by them.
    Dropped(Vec<Arc<SignedPackage>>),
}

/// A name's state as the store keeps it (inside [`OwnerEntry::claim`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredName {
    /// The claimant's claim record (encoded [`SignedPackage`]).
    pub claim: Vec<u8>,
    /// Whether the claim was settled.
    pub settled: bool,
    /// The name's statements, encoded, in order.
    pub log: Vec<Vec<u8>>,
}

/// One name: who claimed it, since when, and who may publish.
#[derive(Debug)]
struct NameState {
    /// The key whose claim this node holds.
    claimant: PeerId,
    /// A record of the claimant (its first one here): evidence sent in polls.
    claim: Arc<SignedPackage>,
    /// When this node first held the claim.
    first_seen: Instant,
    settled: bool,
    /// Claims by other keys seen while pending (at most `poll_peers` + 1).
    rivals: Vec<Arc<SignedPackage>>,
    /// When to poll next (pending names only).
    poll_at: Option<Instant>,
    /// The last poll saw a peer report another claimant settled: the next poll asks every
    /// connected peer, so a few liars cannot stand for the network.
    poll_wide: bool,
    /// Applied statements, in order.
    log: Vec<Arc<NameStatement>>,
    /// The owner after the log.
    owner: PeerId,
    /// Maintainers after the log.
    maintainers: HashSet<PeerId>,
    /// Keys whose rights ended, with the fingerprints of their records that stay.
    retired: HashMap<PeerId, HashSet<[u8; 32]>>,
    /// Ids of the admitted versions.
    versions: Vec<String>,
}

impl NameState {
    fn new(claim: Arc<SignedPackage>, now: Instant) -> Self {
        let claimant = claim.publisher;
        NameState {
            claimant,
            claim,
            first_seen: now,
            settled: false,
            rivals: Vec::new(),
            poll_at: None,
            poll_wide: false,
            log: Vec::new(),
            owner: claimant,
            maintainers: HashSet::new(),
            retired: HashMap::new(),
            versions: Vec::new(),
        }
    }

    fn may_publish(&self, key: &PeerId) -> bool {
        *key == self.owner || self.maintainers.contains(key)
    }

    /// Whether `record` may stand: its key may publish, or it is a record the log kept
    /// when its key lost its rights.
    fn allows(&self, record: &SignedPackage) -> bool {
        self.may_publish(&record.publisher)
            || self
                .retired
                .get(&record.publisher)
                .is_some_and(|keep| keep.contains(&record.fingerprint()))
    }

    /// Recomputes owner, maintainers and retired keys from the claimant and the log.
    fn replay(&mut self) {
        self.owner = self.claimant;
        self.maintainers.clear();
        self.retired.clear();
        for s in &self.log {
            apply_action(
                &mut self.owner,
                &mut self.maintainers,
                &mut self.retired,
                &s.action,
            );
        }
    }

    fn stored(&self) -> StoredName {
        StoredName {
            claim: self.claim.encode(),
            settled: self.settled,
            log: self.log.iter().map(|s| s.encode()).collect(),
        }
    }
}

fn apply_action(
    owner: &mut PeerId,
    maintainers: &mut HashSet<PeerId>,
    retired: &mut HashMap<PeerId, HashSet<[u8; 32]>>,
    action: &NameAction,
) {
    match action {
        NameAction::AddMaintainer(k) => {
            maintainers.insert(*k);
            retired.remove(k);
        }
        NameAction::RemoveMaintainer { key, keep } => {
            if maintainers.remove(key) {
                retired.insert(*key, keep.iter().copied().collect());
            }
        }
        NameAction::Transfer { to, keep } => {
            let old = *owner;
            *owner = *to;
            maintainers.remove(to);
            retired.remove(to);
            if old != *to && !maintainers.contains(&old) {
                retired.insert(old, keep.iter().copied().collect());
            }
        }
    }
}

/// The ordering of claimants when a poll ties: the smaller SHA-256(name, key) first.
fn tie_rank(name: &str, key: &PeerId) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"ggen-p2p/claim-tie/v1");
    h.update(name.as_bytes());
    h.update(key.to_bytes());
    h.finalize().into()
}

/// How many of a wide poll's `answered` peers must report another claimant settled to
/// stop this node from settling its own: at least two, and at least a quarter.
fn settled_elsewhere_quorum(answered: usize) -> usize {
    answered.div_ceil(4).max(2)
}

/// An anti-entropy round with one peer.
#[derive(Debug, Default)]
struct SyncRound {
    buckets: VecDeque<u16>,
    wanted: VecDeque<String>,
    logs_asked: bool,
    logs_wanted: VecDeque<String>,
    /// Failed requests retried so far in this round.
    retries: u8,
}

/// An ownership poll in flight.
#[derive(Debug)]
struct Poll {
    names: Vec<String>,
    waiting: HashSet<PeerId>,
    /// Sampled peers that were not connected: they count against every claimant.
    unreachable: usize,
    /// The poll settles nothing: this node was cut off from most of its peers when it
    /// began (the sample is skewed towards the peers it still reached), or a peer connected
    /// while it was out (the sample no longer stands for this node's peers: a split may
    /// have healed).
    no_settle: bool,
    /// Every connected peer was asked (up to [`MAX_WIDE_POLL`]), not a sample.
    wide: bool,
    /// Per name: voter → the claimant it holds, and whether it settled it.
    votes: HashMap<String, HashMap<PeerId, (PeerId, bool)>>,
    deadline: Instant,
}

/// Counters of what the core decided (for stats and the simulator).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStats {
    /// Records admitted (new or changed).
    pub admitted: u64,
    /// Records refused (invalid, unauthorised, conflicting).
    pub refused: u64,
    /// Rival claims held during a race.
    pub rivals: u64,
    /// Races this node switched claimant in.
    pub switched: u64,
    /// Names settled.
    pub settled: u64,
    /// Sync rounds completed.
    pub sync_rounds: u64,
    /// Anti-entropy requests sent again after a failure.
    pub sync_retries: u64,
    /// Polls completed.
    pub polls: u64,
    /// Encoded bytes of sync and poll answers received.
    pub sync_bytes_in: u64,
    /// Encoded bytes of sync and poll answers sent.
    pub sync_bytes_out: u64,
}

/// The registry core (see the module docs).
pub struct RegistryCore {
    keypair: Keypair,
    me: PeerId,
    config: CoreConfig,
    records: HashMap<String, Arc<SignedPackage>>,
    names: HashMap<String, NameState>,
    catalogue: Option<Catalogue<Arc<SignedPackage>>>,
    /// Anti-entropy digests of the catalogue, one per bucket (see `toggle_digest`).
    digests: Vec<[u8; 32]>,
    providers: HashMap<ContentHash, HashSet<PeerId>>,
    /// Connected peers, with whether a sync round with them completed.
    connected: HashMap<PeerId, bool>,
    /// Peers lost, with when (for polls).
    lost: BTreeMap<PeerId, Instant>,
    rounds: HashMap<PeerId, SyncRound>,
    poll: Option<Poll>,
    /// Pending names by when to poll them next (mirrors `NameState::poll_at`).
    poll_queue: BTreeSet<(Instant, String)>,
    next_sync: Option<Instant>,
    next_ticket: Ticket,
    /// Local publishes and statements waiting for durability: what to do once durable.
    pending: HashMap<Ticket, Pending>,
    effects: VecDeque<Effect>,
    stats: CoreStats,
    /// Decoded publisher keys (a verification spends a third of its time decoding the key;
    /// cleared when it reaches [`KEY_CACHE`]).
    keys: HashMap<PeerId, PublicKey>,
}

#[derive(Debug)]
enum Pending {
    Record(Arc<SignedPackage>),
    Statement(Arc<NameStatement>),
}

impl std::fmt::Debug for RegistryCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCore")
            .field("me", &self.me)
            .field("records", &self.records.len())
            .field("names", &self.names.len())
            .finish_non_exhaustive()
    }
}

impl RegistryCore {
    /// A core for the node with `keypair` (it signs this node's records and statements).
    pub fn new(keypair: Keypair, config: CoreConfig) -> Self {
        let me = keypair.peer_id();
        RegistryCore {
            catalogue: config.full.then(Catalogue::default),
            digests: vec![EMPTY_BUCKET; usize::from(SYNC_BUCKETS)],
            keypair,
            me,
            config,
            records: HashMap::new(),
            names: HashMap::new(),
            providers: HashMap::new(),
            connected: HashMap::new(),
            lost: BTreeMap::new(),
            rounds: HashMap::new(),
            poll: None,
            poll_queue: BTreeSet::new(),
            next_sync: None,
            next_ticket: 1,
            pending: HashMap::new(),
            effects: VecDeque::new(),
            stats: CoreStats::default(),
            keys: HashMap::new(),
        }
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.me
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// The next effect to carry out.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// The earliest moment the core wants [`RegistryCore::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.next_sync;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.poll.as_ref().map(|p| p.deadline));
        if self.poll.is_none() {
            min(self.poll_queue.first().map(|(t, _)| *t));
        }
        t
    }

    /// Counters.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    // ----- inputs -----

    /// A connection to `peer` is up: a full node syncs with it once now.
    pub fn handle_connected(&mut self, now: Instant, peer: PeerId) {
        if peer == self.me || self.connected.contains_key(&peer) {
            return;
        }
        self.connected.insert(peer, false);
        self.lost.remove(&peer);
        if let Some(poll) = self.poll.as_mut() {
            poll.no_settle = true;
        }
        if self.next_sync.is_none() {
            self.next_sync = Some(now + self.config.sync_interval);
        }
        if self.config.full {
            self.start_round(peer);
        }
    }

    /// The connection to `peer` is gone.
    pub fn handle_disconnected(&mut self, now: Instant, peer: PeerId) {
        if self.connected.remove(&peer).is_none() {
            return;
        }
        self.rounds.remove(&peer);
        self.lost.insert(peer, now);
        if self.lost.len() > MAX_REMEMBERED_PEERS {
            if let Some(oldest) = self.lost.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p) {
                self.lost.remove(&oldest);
            }
        }
        if let Some(poll) = self.poll.as_mut() {
            if poll.waiting.remove(&peer) {
                poll.unreachable += 1;
            }
        }
        self.maybe_finish_poll(now);
    }

    /// A record announced on a gossip topic.
    pub fn handle_gossip(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        from: PeerId,
        record: SignedPackage,
    ) -> Result<Option<UpdateType>, RegistryError> {
        self.admit(now, wall, Arc::new(record), Origin::Gossip(from))
    }

    /// A statement announced on the names topic.
    pub fn handle_statement(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        statement: NameStatement,
    ) -> Result<bool, RegistryError> {
        self.apply_statement(now, wall, Arc::new(statement), None)
    }

    /// A record found through the DHT.
    pub fn handle_dht_record(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        record: SignedPackage,
    ) -> Result<Option<UpdateType>, RegistryError> {
        self.admit(now, wall, Arc::new(record), Origin::Dht)
    }

    /// A provider of content became known (a DHT answer, a fetch, our own serving).
    pub fn handle_provider(&mut self, hash: ContentHash, peer: PeerId) {
        self.providers.entry(hash).or_default().insert(peer);
    }

    /// This node publishes `package`: it stamps the time, signs, admits, and (once the
    /// store write is durable, see [`RegistryCore::handle_persisted`]) announces it.
    /// Returns the ticket that [`Effect::Done`] will carry.
    pub fn handle_publish(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        mut package: Package,
        deprecated: bool,
    ) -> Result<Ticket, RegistryError> {
        package.id = package.canonical_id();
        let existing = self.records.get(&package.id).cloned();
        match &existing {
            // A re-signing keeps the version's creation time; its update time is ours,
            // after the last one.
            Some(old) => {
                package.created_at = old.package.created_at;
                let step = chrono::Duration::milliseconds(1);
                package.updated_at = wall.max(old.package.updated_at + step);
            }
            None => {
                if package.created_at < wall - MAX_CLOCK_SKEW {
                    return Err(RegistryError::BackDated {
                        id: package.id.clone(),
                        created_at: package.created_at.to_rfc3339(),
                        skew_secs: MAX_CLOCK_SKEW.num_seconds(),
                    });
                }
                package.created_at = wall;
                package.updated_at = wall;
            }
        }
        // Never race knowingly: a name someone else claimed (even pending) is refused here.
        if let Some(n) = self.names.get(&package.name) {
            if !n.may_publish(&self.me) {
                return Err(RegistryError::NameOwned {
                    name: package.name.clone(),
                    owner: n.owner.to_string(),
                    publisher: self.me.to_string(),
                });
            }
        }
        let record = Arc::new(SignedPackage::sign(package, deprecated, &self.keypair));
        let ticket = self.ticket();
        match self.admit_inner(now, wall, record.clone(), Origin::Local, Some(ticket))? {
            Some(_) => {
                self.pending.insert(ticket, Pending::Record(record));
            }
            None => self.effects.push_back(Effect::Done {
                ticket,
                result: Ok(Some(record)),
            }),
        }
        Ok(ticket)
    }

    /// This node, as the owner of `name`, signs and applies a statement.
    pub fn handle_name_action(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        name: &str,
        action: NameAction,
    ) -> Result<Ticket, RegistryError> {
        let state = self
            .names
            .get(name)
            .ok_or_else(|| RegistryError::InvalidStatement(format!("{name} is not known here")))?;
        if state.owner != self.me {
            return Err(RegistryError::NameOwned {
                name: name.into(),
                owner: state.owner.to_string(),
                publisher: self.me.to_string(),
            });
        }
        if !state.settled {
            return Err(RegistryError::InvalidStatement(format!(
                "{name} is not settled yet (its race window is open); try again shortly"
            )));
        }
        // Fill in what a retired key keeps: its records held here now.
        let keep_of = |key: &PeerId| -> Vec<[u8; 32]> {
            state
                .versions
                .iter()
                .filter_map(|id| self.records.get(id))
                .filter(|r| r.publisher == *key)
                .map(|r| r.fingerprint())
                .collect()
        };
        let action = match action {
            NameAction::RemoveMaintainer { key, .. } => {
                if !state.maintainers.contains(&key) {
                    return Err(RegistryError::InvalidStatement(format!(
                        "{key} is not a maintainer of {name}"
                    )));
                }
                NameAction::RemoveMaintainer {
                    keep: keep_of(&key),
                    key,
                }
            }
            NameAction::Transfer { to, .. } => NameAction::Transfer {
                keep: keep_of(&self.me),
                to,
            },
            a @ NameAction::AddMaintainer(_) => a,
        };
        let seq = state.log.len() as u64 + 1;
        let statement = Arc::new(NameStatement::sign(
            name.to_string(),
            seq,
            action,
            wall,
            &self.keypair,
        ));
        let ticket = self.ticket();
        self.apply_statement(now, wall, statement.clone(), Some(ticket))?;
        self.pending.insert(ticket, Pending::Statement(statement));
        Ok(ticket)
    }

    /// The store write of a local publish or statement finished.
    pub fn handle_persisted(&mut self, _now: Instant, ticket: Ticket, result: Result<(), String>) {
        let Some(p) = self.pending.remove(&ticket) else {
            return;
        };
        match (p, result) {
            (Pending::Record(record), Ok(())) => {
                // Only the latest version goes under the name key.
                let name_key = self
                    .latest(&record.package.name)
                    .is_none_or(|l| l.package.id == record.package.id);
                self.effects.push_back(Effect::PutRecord {
                    record: record.clone(),
                    name_key,
                });
                self.effects.push_back(Effect::Announce(record.clone()));
                self.effects.push_back(Effect::Done {
                    ticket,
                    result: Ok(Some(record)),
                });
            }
            (Pending::Statement(s), Ok(())) => {
                self.effects.push_back(Effect::AnnounceStatement(s));
                self.effects.push_back(Effect::Done {
                    ticket,
                    result: Ok(None),
                });
            }
            (Pending::Record(record), Err(e)) => {
                self.undo_local(&record);
                self.effects.push_back(Effect::Done {
                    ticket,
                    result: Err(RegistryError::Storage(e)),
                });
            }
            (Pending::Statement(s), Err(e)) => {
                if let Some(state) = self.names.get_mut(&s.name) {
                    if state.log.last().is_some_and(|l| l.digest() == s.digest()) {
                        state.log.pop();
                        state.replay();
                    }
                }
                self.effects.push_back(Effect::Done {
                    ticket,
                    result: Err(RegistryError::Storage(e)),
                });
            }
        }
    }

    /// A peer asks us something: the answer, from our state.
    pub fn handle_request(
        &mut self,
        _now: Instant,
        _from: PeerId,
        req: SyncRequest,
    ) -> SyncResponse {
        let answer = self.answer(req);
        self.stats.sync_bytes_out += encoded_len(&answer);
        answer
    }

    /// The answer to a request we sent (see [`Effect::Request`]).
    pub fn handle_response(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        peer: PeerId,
        response: SyncResponse,
    ) {
        self.stats.sync_bytes_in += encoded_len(&response);
        match response {
            SyncResponse::Digests(theirs) => {
                let ours = self.bucket_digests();
                let empty = EMPTY_BUCKET;
                let differing: VecDeque<u16> = theirs
                    .iter()
                    .enumerate()
                    .take(usize::from(SYNC_BUCKETS))
                    .filter(|(b, d)| ours.get(*b) != Some(*d) && **d != empty)
                    .filter_map(|(b, _)| u16::try_from(b).ok())
                    .collect();
                if let Some(r) = self.rounds.get_mut(&peer) {
                    r.buckets = differing;
                }
                self.next_step(peer);
            }
            SyncResponse::Bucket(entries) => {
                let wanted: VecDeque<String> = entries
                    .into_iter()
                    .take(MAX_BUCKET_IDS)
                    .filter(|(id, f)| {
                        self.records
                            .get(id)
                            .is_none_or(|mine| self.fingerprint_of(id, mine) != *f)
                    })
                    .map(|(id, _)| id)
                    .collect();
                if let Some(r) = self.rounds.get_mut(&peer) {
                    r.wanted.extend(wanted);
                }
                self.next_step(peer);
            }
            SyncResponse::Records(list) => {
                for bytes in list.into_iter().take(MAX_SYNC_RECORDS) {
                    if let Ok(s) = SignedPackage::decode(&bytes) {
                        let _ = self.admit(now, wall, Arc::new(s), Origin::Sync(peer));
                    }
                }
                self.next_step(peer);
            }
            SyncResponse::LogHeads(heads) => {
                let wanted: VecDeque<String> = heads
                    .into_iter()
                    .take(MAX_LOG_HEADS)
                    .filter(|h| {
                        self.names.get(&h.name).is_some_and(|n| {
                            n.log.len() as u64 != h.len
                                || n.log.last().map(|s| s.digest()) != Some(h.head)
                        })
                    })
                    .map(|h| h.name)
                    .collect();
                if let Some(r) = self.rounds.get_mut(&peer) {
                    r.logs_wanted = wanted;
                }
                self.next_step(peer);
            }
            SyncResponse::Logs(logs) => {
                for (_, statements) in logs.into_iter().take(MAX_POLL_NAMES) {
                    for bytes in statements.into_iter().take(MAX_NAME_LOG) {
                        if let Ok(s) = NameStatement::decode(&bytes) {
                            let _ = self.apply_statement(now, wall, Arc::new(s), None);
                        }
                    }
                }
                self.next_step(peer);
            }
            SyncResponse::Owners(answers) => self.take_votes(now, wall, peer, answers),
        }
    }

    /// A request we sent failed (timeout, refused, disconnected).
    pub fn handle_request_failed(&mut self, now: Instant, peer: PeerId, request: &SyncRequest) {
        match request {
            SyncRequest::Owners(_) => {
                if let Some(poll) = self.poll.as_mut() {
                    if poll.waiting.remove(&peer) {
                        poll.unreachable += 1;
                    }
                }
                self.maybe_finish_poll(now);
            }
            _ => {
                // A lost answer costs a retry of the same step, not the round; a peer that
                // keeps failing (or has gone) ends it.
                let retry = self.connected.contains_key(&peer)
                    && self.rounds.get_mut(&peer).is_some_and(|r| {
                        r.retries += 1;
                        r.retries <= MAX_SYNC_RETRIES
                    });
                if retry {
                    self.stats.sync_retries += 1;
                    self.effects.push_back(Effect::Request {
                        peer,
                        request: request.clone(),
                    });
                } else {
                    self.rounds.remove(&peer);
                }
            }
        }
    }

    /// Time passed: periodic sync, polls, poll deadlines.
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut dyn RngCore) {
        if self.next_sync.is_some_and(|t| now >= t) {
            self.next_sync = Some(now + self.config.sync_interval);
            if self.config.full && !self.connected.is_empty() {
                let mut peers: Vec<PeerId> = self.connected.keys().copied().collect();
                peers.sort();
                let i = (rng.next_u64() % peers.len() as u64) as usize;
                if let Some(p) = peers.get(i).copied() {
                    self.start_round(p);
                }
            }
        }
        if let Some(poll) = self.poll.as_mut().filter(|p| now >= p.deadline) {
            // Sampled peers that never answered count as unreachable.
            poll.unreachable += poll.waiting.len();
            poll.waiting.clear();
            self.finish_poll_at(now);
        }
        if self.poll.is_none() {
            self.start_poll(now, rng);
        }
        // A lone node has nobody to ask: its polls end at once.
        self.maybe_finish_poll(now);
        let forget = self.config.ownership.peer_memory;
        self.lost
            .retain(|_, t| now.saturating_duration_since(*t) < forget);
    }

    // ----- queries -----

    /// The record of `name@version`.
    pub fn record(&self, id: &str) -> Option<&Arc<SignedPackage>> {
        self.records.get(id)
    }

    /// The latest (highest semver) admitted version of `name`.
    pub fn latest(&self, name: &str) -> Option<&Arc<SignedPackage>> {
        let n = self.names.get(name)?;
        n.versions
            .iter()
            .filter_map(|id| self.records.get(id))
            .max_by(|a, b| {
                let va = semver::Version::parse(&a.package.version).ok();
                let vb = semver::Version::parse(&b.package.version).ok();
                va.cmp(&vb)
            })
    }

    /// Every admitted record.
    pub fn records(&self) -> impl Iterator<Item = &Arc<SignedPackage>> + '_ {
        self.records.values()
    }

    /// Admitted versions.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no version is admitted.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Names known (claimed, settled or not).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Catalogue entries (0 on a light node).
    pub fn catalogue_len(&self) -> usize {
        self.catalogue.as_ref().map_or(0, |c| c.len())
    }

    /// Searches the catalogue; `peer_count` is the known providers of the content.
    pub fn search(&self, q: &Query) -> Vec<SearchResult> {
        let Some(c) = &self.catalogue else {
            return Vec::new();
        };
        c.search(q, |p| {
            p.content_hash
                .as_deref()
                .and_then(|h| h.parse::<ContentHash>().ok())
                .and_then(|h| self.providers.get(&h).map(HashSet::len))
                .unwrap_or(0)
        })
    }

    /// Known providers of `hash`.
    pub fn providers(&self, hash: &ContentHash) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self
            .providers
            .get(hash)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Provider entries held (hash, peer pairs).
    pub fn provider_count(&self) -> usize {
        self.providers.values().map(HashSet::len).sum()
    }

    /// The name's owner, whether its claim is settled, and its maintainers.
    pub fn owner_of(&self, name: &str) -> Option<(PeerId, bool, Vec<PeerId>)> {
        let n = self.names.get(name)?;
        let mut m: Vec<PeerId> = n.maintainers.iter().copied().collect();
        m.sort();
        Some((n.owner, n.settled, m))
    }

    /// Whether a sync round with every connected peer has completed (and there is one).
    pub fn synced_with_all(&self) -> bool {
        !self.connected.is_empty() && self.connected.values().all(|done| *done)
    }

    /// Connected peers the core knows of.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.connected.keys().copied().collect()
    }

    // ----- restoring from the store -----

    /// Restores a name's state kept by the store (before its records). A settled claim
    /// stays settled; a pending one is open again for a full race window.
    pub fn restore_name(&mut self, now: Instant, wall: DateTime<Utc>, stored: &StoredName) {
        let Ok(claim) = SignedPackage::decode(&stored.claim) else {
            return;
        };
        if claim.verify(wall).is_err() {
            return;
        }
        let before = self.effects.len();
        let name = claim.package.name.clone();
        let mut state = NameState::new(Arc::new(claim), now);
        state.settled = stored.settled;
        self.unschedule(&name);
        self.names.insert(name.clone(), state);
        if !stored.settled {
            self.schedule(&name, now + self.config.ownership.race_window);
        }
        for bytes in &stored.log {
            if let Ok(s) = NameStatement::decode(bytes) {
                let _ = self.apply_statement(now, wall, Arc::new(s), None);
            }
        }
        // What the restore itself wrote is already stored.
        self.effects.truncate(before);
    }

    /// Restores a stored record (verified again); no effects.
    pub fn restore_record(&mut self, now: Instant, wall: DateTime<Utc>, record: SignedPackage) {
        let before = self.effects.len();
        let _ = self.admit_inner(now, wall, Arc::new(record), Origin::Dht, None);
        // Nothing to write or tell: it came from the store, before anyone listened.
        self.effects.truncate(before);
    }

    // ----- admission -----

    /// Verifies and admits `record` (see the module docs). `Ok(None)`: nothing changed.
    pub fn admit(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        record: Arc<SignedPackage>,
        origin: Origin,
    ) -> Result<Option<UpdateType>, RegistryError> {
        let r = self.admit_inner(now, wall, record, origin, None);
        match &r {
            Ok(Some(_)) => self.stats.admitted += 1,
            Ok(None) => {}
            Err(_) => self.stats.refused += 1,
        }
        r
    }

    fn admit_inner(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        record: Arc<SignedPackage>,
        origin: Origin,
        ticket: Option<Ticket>,
    ) -> Result<Option<UpdateType>, RegistryError> {
        // The very record held already (same bytes, so verified when it came): nothing to
        // check or change. A local publish always goes through, to be stored and answered.
        if origin != Origin::Local
            && self
                .records
                .get(&record.package.id)
                .is_some_and(|held| held.signature == record.signature && **held == *record)
        {
            return Ok(None);
        }
        self.verify(wall, &record)?;
        let name = record.package.name.clone();
        let Some(state) = self.names.get_mut(&name) else {
            // A new name: this key is its claimant from now on (pending for the window).
            self.names
                .insert(name.clone(), NameState::new(record.clone(), now));
            self.schedule(&name, now + self.config.ownership.race_window);
            let mut batch = Batch::new();
            self.put_name(&name, &mut batch);
            return Ok(Some(self.accept(
                record,
                UpdateType::NewPackage,
                batch,
                ticket,
            )));
        };
        if !state.allows(&record) {
            if !state.settled && state.log.is_empty() && origin != Origin::Local {
                // A race: hold the rival aside and ask the peers soon.
                let key = record.publisher;
                if !state.rivals.iter().any(|r| r.publisher == key)
                    && state.rivals.len() <= self.config.ownership.poll_peers
                {
                    state.rivals.push(record.clone());
                    self.stats.rivals += 1;
                }
                let owner = state.owner.to_string();
                let soon = now + self.config.ownership.poll_interval;
                if state.poll_at.is_none_or(|t| t > soon) {
                    self.schedule(&name, soon);
                }
                return Err(RegistryError::NameOwned {
                    name,
                    owner,
                    publisher: record.publisher.to_string(),
                });
            }
            return Err(RegistryError::NameOwned {
                name,
                owner: state.owner.to_string(),
                publisher: record.publisher.to_string(),
            });
        }
        let id = &record.package.id;
        let update = match self.records.get(id) {
            None => UpdateType::NewVersion,
            Some(old) => {
                if old.package.content_hash != record.package.content_hash
                    || old.package.size != record.package.size
                {
                    return Err(RegistryError::VersionExists { id: id.clone() });
                }
                // An identical record has the same `updated_at` (it is signed).
                if record.package.updated_at <= old.package.updated_at {
                    return Ok(None);
                }
                // A re-signing by a retired key (even of a kept version) changes nothing.
                if !state.may_publish(&record.publisher) {
                    return Ok(None);
                }
                if record.deprecated && !old.deprecated {
                    UpdateType::Deprecated
                } else {
                    UpdateType::MetadataUpdate
                }
            }
        };
        Ok(Some(self.accept(record, update, Batch::new(), ticket)))
    }

    /// Checks `record` (see [`SignedPackage::verify`]) with its publisher's key decoded
    /// once per key.
    fn verify(&mut self, wall: DateTime<Utc>, record: &SignedPackage) -> Result<(), RegistryError> {
        let key =
            match self.keys.get(&record.publisher) {
                Some(k) => *k,
                None => {
                    let k = record.publisher.public_key().map_err(|e| {
                        RegistryError::InvalidSignature {
                            id: record.package.id.clone(),
                            reason: format!("publisher key: {e}"),
                        }
                    })?;
                    if self.keys.len() >= KEY_CACHE {
                        self.keys.clear();
                    }
                    self.keys.insert(record.publisher, k);
                    k
                }
            };
        record.verify_with(wall, &key)
    }

    /// Applies an admitted record: memory, catalogue, store, subscribers, replication.
    fn accept(
        &mut self,
        record: Arc<SignedPackage>,
        update: UpdateType,
        mut batch: Batch,
        ticket: Option<Ticket>,
    ) -> UpdateType {
        let id = record.package.id.clone();
        if let Some(h) = content_hash(&record) {
            self.providers
                .entry(h)
                .or_default()
                .insert(record.publisher);
        }
        if let Some(c) = self.catalogue.as_mut() {
            let fp = record.fingerprint();
            if let Some(old) = c.fingerprint(&id) {
                toggle_digest(&mut self.digests, &id, &old);
            }
            toggle_digest(&mut self.digests, &id, &fp);
            c.insert_entry(record.clone(), fp);
        }
        batch.put_record(&id, &record.encode());
        if record.publisher == self.me {
            batch.mark_own(&id);
        }
        if let Some(n) = self.names.get_mut(&record.package.name) {
            if !n.versions.contains(&id) {
                n.versions.push(id.clone());
            }
        }
        self.effects.push_back(Effect::Persist { batch, ticket });
        self.effects.push_back(Effect::Update(PackageUpdate {
            package_id: id.clone(),
            version: record.package.version.clone(),
            update_type: update,
            timestamp: record.package.updated_at,
        }));
        if self.config.replicate_content && record.package.content_hash.is_some() {
            self.effects.push_back(Effect::Replicate(record.clone()));
        }
        self.records.insert(id, record);
        update
    }

    /// Removes records from memory and queues their removal from the store.
    fn drop_records(&mut self, ids: &[String], batch: &mut Batch) {
        let mut dropped = Vec::new();
        for id in ids {
            if let Some(r) = self.records.remove(id) {
                if let Some(c) = self.catalogue.as_mut() {
                    if let Some(old) = c.fingerprint(id) {
                        toggle_digest(&mut self.digests, id, &old);
                    }
                    c.remove(id);
                }
                if let Some(h) = content_hash(&r) {
                    let still = self
                        .records
                        .values()
                        .any(|o| o.package.content_hash == r.package.content_hash);
                    if !still {
                        if let Some(set) = self.providers.get_mut(&h) {
                            set.remove(&r.publisher);
                        }
                    }
                }
                if let Some(n) = self.names.get_mut(&r.package.name) {
                    n.versions.retain(|v| v != id);
                }
                batch.remove_record(id).unmark_own(id);
                dropped.push(r);
            }
        }
        if !dropped.is_empty() {
            self.effects.push_back(Effect::Dropped(dropped));
        }
    }

    /// Undoes a local publish whose store write failed.
    fn undo_local(&mut self, record: &Arc<SignedPackage>) {
        let id = record.package.id.clone();
        if self
            .records
            .get(&id)
            .is_some_and(|r| r.fingerprint() == record.fingerprint())
        {
            let mut batch = Batch::new();
            self.drop_records(std::slice::from_ref(&id), &mut batch);
            let name = &record.package.name;
            if self
                .names
                .get(name)
                .is_some_and(|n| n.versions.is_empty() && n.log.is_empty())
            {
                self.unschedule(name);
                self.names.remove(name);
                batch.remove_owner(name);
            }
        }
    }

    /// A held record's fingerprint: the catalogue keeps it (no re-encoding and hashing);
    /// a light node computes it.
    fn fingerprint_of(&self, id: &str, record: &SignedPackage) -> [u8; 32] {
        self.catalogue
            .as_ref()
            .and_then(|c| c.fingerprint(id))
            .unwrap_or_else(|| record.fingerprint())
    }

    fn put_name(&self, name: &str, batch: &mut Batch) {
        if let Some(n) = self.names.get(name) {
            batch.put_owner(
                name,
                OwnerEntry {
                    owner: n.owner.to_string(),
                    claim: postcard::to_stdvec(&n.stored()).unwrap_or_default(),
                },
            );
        }
    }

    /// Polls `name` at `at` (replacing an earlier schedule).
    fn schedule(&mut self, name: &str, at: Instant) {
        self.unschedule(name);
        if let Some(n) = self.names.get_mut(name) {
            n.poll_at = Some(at);
            self.poll_queue.insert((at, name.to_string()));
        }
    }

    fn unschedule(&mut self, name: &str) {
        if let Some(n) = self.names.get_mut(name) {
            if let Some(t) = n.poll_at.take() {
                self.poll_queue.remove(&(t, name.to_string()));
            }
        }
    }

    fn ticket(&mut self) -> Ticket {
        let t = self.next_ticket;
        self.next_ticket += 1;
        t
    }

    // ----- statements -----

    /// Applies a statement in log order. `Ok(false)`: already held, or not the next one
    /// (sync brings the missing entries).
    fn apply_statement(
        &mut self,
        _now: Instant,
        wall: DateTime<Utc>,
        s: Arc<NameStatement>,
        ticket: Option<Ticket>,
    ) -> Result<bool, RegistryError> {
        s.verify(wall)?;
        let Some(state) = self.names.get_mut(&s.name) else {
            return Ok(false);
        };
        if !state.settled {
            return Err(RegistryError::InvalidStatement(format!(
                "{} is not settled here yet",
                s.name
            )));
        }
        let len = state.log.len() as u64;
        if s.seq <= len {
            // Held already, or an equivocation by an owner: the smaller digest wins on
            // every node; what was built on the loser goes.
            let Some(held) = state.log.get((s.seq - 1) as usize) else {
                return Ok(false);
            };
            if held.digest() == s.digest() || held.digest() < s.digest() {
                return Ok(false);
            }
            let mut owner = state.claimant;
            let mut m = HashSet::new();
            let mut r = HashMap::new();
            for x in state.log.iter().take((s.seq - 1) as usize) {
                apply_action(&mut owner, &mut m, &mut r, &x.action);
            }
            if s.signer != owner {
                return Ok(false);
            }
            state.log.truncate((s.seq - 1) as usize);
        } else if s.seq != len + 1 {
            return Ok(false);
        } else if s.signer != state.owner {
            return Err(RegistryError::InvalidStatement(format!(
                "statement {} of {} is signed by {}, not its owner {}",
                s.seq, s.name, s.signer, state.owner
            )));
        }
        state.log.push(s.clone());
        state.replay();
        // Records that no longer stand (a key retired) go, on every node alike.
        let gone: Vec<String> = state
            .versions
            .iter()
            .filter(|id| self.records.get(*id).is_some_and(|r| !state.allows(r)))
            .cloned()
            .collect();
        let name = s.name.clone();
        let mut batch = Batch::new();
        self.drop_records(&gone, &mut batch);
        self.put_name(&name, &mut batch);
        self.effects.push_back(Effect::Persist { batch, ticket });
        Ok(true)
    }

    // ----- anti-entropy -----

    /// The per-bucket digests (kept up to date on every change; all empty on a light
    /// node, which has nothing to offer a sync).
    fn bucket_digests(&self) -> Vec<[u8; 32]> {
        self.digests.clone()
    }

    fn start_round(&mut self, peer: PeerId) {
        if self.rounds.contains_key(&peer) {
            return;
        }
        self.rounds.insert(peer, SyncRound::default());
        self.effects.push_back(Effect::Request {
            peer,
            request: SyncRequest::Digests,
        });
    }

    /// The next request of `peer`'s round, or its end.
    fn next_step(&mut self, peer: PeerId) {
        let Some(r) = self.rounds.get_mut(&peer) else {
            return;
        };
        let request = if !r.wanted.is_empty() {
            let n = r.wanted.len().min(MAX_SYNC_RECORDS);
            SyncRequest::Records(r.wanted.drain(..n).collect())
        } else if let Some(b) = r.buckets.pop_front() {
            SyncRequest::Bucket(b)
        } else if !r.logs_asked {
            r.logs_asked = true;
            SyncRequest::LogHeads
        } else if !r.logs_wanted.is_empty() {
            let n = r.logs_wanted.len().min(MAX_POLL_NAMES);
            SyncRequest::Logs(r.logs_wanted.drain(..n).collect())
        } else {
            self.rounds.remove(&peer);
            if let Some(done) = self.connected.get_mut(&peer) {
                *done = true;
            }
            self.stats.sync_rounds += 1;
            return;
        };
        self.effects.push_back(Effect::Request { peer, request });
    }

    fn answer(&self, req: SyncRequest) -> SyncResponse {
        match req {
            SyncRequest::Digests => SyncResponse::Digests(self.bucket_digests()),
            SyncRequest::Bucket(b) => SyncResponse::Bucket(
                self.catalogue
                    .as_ref()
                    .map(|c| c.ids_in_bucket(b, SYNC_BUCKETS))
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|id| {
                        let f = self.fingerprint_of(&id, self.records.get(&id)?);
                        Some((id, f))
                    })
                    .take(MAX_BUCKET_IDS)
                    .collect(),
            ),
            SyncRequest::Records(ids) => SyncResponse::Records(
                ids.iter()
                    .take(MAX_SYNC_RECORDS)
                    .filter_map(|id| Some(self.records.get(id)?.encode()))
                    .collect(),
            ),
            // Cut off from most of our peers: we abstain (see the module docs).
            SyncRequest::Owners(_) if self.cut_off() => SyncResponse::Owners(Vec::new()),
            SyncRequest::Owners(names) => SyncResponse::Owners(
                names
                    .into_iter()
                    .take(MAX_POLL_NAMES)
                    .map(|(name, theirs)| match self.names.get(&name) {
                        None => OwnerAnswer {
                            name,
                            owner: None,
                            settled: false,
                            claim: None,
                        },
                        Some(n) => OwnerAnswer {
                            owner: Some(n.claimant),
                            settled: n.settled,
                            claim: (theirs != Some(n.claimant)).then(|| n.claim.encode()),
                            name,
                        },
                    })
                    .collect(),
            ),
            SyncRequest::LogHeads => {
                let mut heads: Vec<LogHead> = self
                    .names
                    .iter()
                    .filter_map(|(name, n)| {
                        Some(LogHead {
                            name: name.clone(),
                            len: n.log.len() as u64,
                            head: n.log.last()?.digest(),
                        })
                    })
                    .collect();
                heads.sort_by(|a, b| a.name.cmp(&b.name));
                heads.truncate(MAX_LOG_HEADS);
                SyncResponse::LogHeads(heads)
            }
            SyncRequest::Logs(names) => {
                let mut budget = MAX_LOGS_ANSWER_BYTES;
                let mut out = Vec::new();
                for name in names.into_iter().take(MAX_POLL_NAMES) {
                    let Some(n) = self.names.get(&name) else {
                        continue;
                    };
                    let mut log = Vec::new();
                    for s in &n.log {
                        let bytes = s.encode();
                        if bytes.len() > budget {
                            break;
                        }
                        budget -= bytes.len();
                        log.push(bytes);
                    }
                    out.push((name, log));
                }
                SyncResponse::Logs(out)
            }
        }
    }

    // ----- ownership polls -----

    /// Starts a poll of the pending names that are due, if any.
    fn start_poll(&mut self, now: Instant, rng: &mut dyn RngCore) {
        let names: Vec<String> = self
            .poll_queue
            .iter()
            .take_while(|(t, _)| *t <= now)
            .take(MAX_POLL_NAMES)
            .map(|(_, n)| n.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        // The sample: connected peers and peers lost within `peer_memory`.
        let mut candidates: Vec<PeerId> = self
            .connected
            .keys()
            .chain(self.lost.keys())
            .copied()
            .collect();
        candidates.sort();
        candidates.dedup();
        let wide = names
            .iter()
            .any(|n| self.names.get(n).is_some_and(|s| s.poll_wide));
        if wide {
            // Every connected peer (a lost one cannot answer a wide poll).
            candidates.retain(|p| self.connected.contains_key(p));
        }
        let k = if wide {
            MAX_WIDE_POLL
        } else {
            self.config.ownership.poll_peers
        }
        .min(candidates.len());
        for i in 0..k {
            let j = i + (rng.next_u64() % (candidates.len() - i) as u64) as usize;
            candidates.swap(i, j);
        }
        candidates.truncate(k);
        let mut waiting = HashSet::new();
        let mut unreachable = 0;
        let asked: Vec<(String, Option<PeerId>)> = names
            .iter()
            .map(|n| (n.clone(), self.names.get(n).map(|s| s.claimant)))
            .collect();
        for p in candidates {
            if self.connected.contains_key(&p) {
                waiting.insert(p);
                self.effects.push_back(Effect::Request {
                    peer: p,
                    request: SyncRequest::Owners(asked.clone()),
                });
            } else {
                unreachable += 1;
            }
        }
        for n in &names {
            self.unschedule(n);
        }
        self.poll = Some(Poll {
            names,
            waiting,
            unreachable,
            no_settle: self.cut_off(),
            wide,
            votes: HashMap::new(),
            deadline: now + POLL_ANSWER_TIMEOUT,
        });
    }

    fn take_votes(
        &mut self,
        now: Instant,
        wall: DateTime<Utc>,
        peer: PeerId,
        answers: Vec<OwnerAnswer>,
    ) {
        let Some(poll) = self.poll.as_mut() else {
            return;
        };
        if !poll.waiting.remove(&peer) {
            return;
        }
        if answers.is_empty() {
            // The peer abstains (it is cut off from most of its peers): against everyone.
            poll.unreachable += 1;
        }
        let asked: HashSet<&String> = poll.names.iter().collect();
        let mut evidence = Vec::new();
        for a in answers.into_iter().take(MAX_POLL_NAMES) {
            let Some(owner) = a.owner else { continue };
            if !asked.contains(&a.name) {
                continue;
            }
            poll.votes
                .entry(a.name.clone())
                .or_default()
                .insert(peer, (owner, a.settled));
            if let Some(bytes) = a.claim {
                evidence.push((a.name, owner, bytes));
            }
        }
        // Claims we have not seen: verified and held as rivals, so we can switch to them.
        for (name, owner, bytes) in evidence {
            let Ok(claim) = SignedPackage::decode(&bytes) else {
                continue;
            };
            if claim.publisher != owner || claim.package.name != name || claim.verify(wall).is_err()
            {
                continue;
            }
            if let Some(state) = self.names.get_mut(&name) {
                if state.claimant == owner || state.rivals.iter().any(|r| r.publisher == owner) {
                    continue;
                }
                // A flood of rival keys must not crowd out the claim the peers hold: when
                // the list is full, a rival no peer has voted for in this poll makes room.
                if state.rivals.len() > self.config.ownership.poll_peers {
                    let voted = self.poll.as_ref().and_then(|p| p.votes.get(&name));
                    let unvoted = state.rivals.iter().position(|r| {
                        voted.is_none_or(|v| !v.values().any(|(o, _)| *o == r.publisher))
                    });
                    if let Some(k) = unvoted {
                        state.rivals.remove(k);
                    }
                }
                if state.rivals.len() <= self.config.ownership.poll_peers {
                    state.rivals.push(Arc::new(claim));
                }
            }
        }
        self.maybe_finish_poll(now);
    }

    /// Whether more of the peers we know were lost (within `peer_memory`) than are
    /// connected: then we settle nothing and abstain in polls.
    fn cut_off(&self) -> bool {
        self.lost.len() > self.connected.len()
    }

    fn maybe_finish_poll(&mut self, now: Instant) {
        if self.poll.as_ref().is_some_and(|p| p.waiting.is_empty()) {
            self.finish_poll_at(now);
        }
    }

    /// Tallies the poll: per name, the claimant a strict majority of the sample holds
    /// wins; the claim settles once its window has passed.
    fn finish_poll_at(&mut self, now: Instant) {
        let Some(poll) = self.poll.take() else {
            return;
        };
        self.stats.polls += 1;
        let cut_off = poll.no_settle || self.cut_off();
        let window = self.config.ownership.race_window;
        let interval = self.config.ownership.poll_interval;
        for name in &poll.names {
            let Some(state) = self.names.get(name) else {
                continue;
            };
            if state.settled {
                continue;
            }
            let claimant = state.claimant;
            let mut counts: HashMap<PeerId, usize> = HashMap::new();
            *counts.entry(claimant).or_default() += 1;
            let mut voters = 1 + poll.unreachable;
            if let Some(v) = poll.votes.get(name) {
                for (owner, _) in v.values() {
                    *counts.entry(*owner).or_default() += 1;
                    voters += 1;
                }
            }
            // The winner among claimants we can prove (ours and the rivals we hold).
            let winner = counts
                .iter()
                .filter(|(k, _)| **k == claimant || state.rivals.iter().any(|r| r.publisher == **k))
                .max_by(|a, b| {
                    a.1.cmp(b.1)
                        .then_with(|| tie_rank(name, b.0).cmp(&tie_rank(name, a.0)))
                })
                .map(|(k, c)| (*k, *c));
            let first_seen = state.first_seen;
            let has_rivals = !state.rivals.is_empty();
            let majority_for = winner.filter(|(_, c)| c * 2 > voters).map(|(k, _)| k);
            if let Some(w) = majority_for.filter(|w| *w != claimant) {
                self.switch_claimant(name, w);
            }
            let window_over = now.saturating_duration_since(first_seen) >= window;
            let Some(state) = self.names.get_mut(name) else {
                continue;
            };
            // A peer that settled another claimant never gives it up: settling ours would
            // split the name for sure. But one report may be a lie: it sends the next poll
            // to every connected peer, and there it blocks only when it is no lone voice.
            let (answered, elsewhere) = poll.votes.get(name).map_or((0, 0), |v| {
                let elsewhere = v
                    .values()
                    .filter(|(owner, settled)| *settled && *owner != state.claimant)
                    .count();
                (v.len(), elsewhere)
            });
            let settled_elsewhere =
                elsewhere > 0 && (!poll.wide || elsewhere >= settled_elsewhere_quorum(answered));
            state.poll_wide = elsewhere > 0;
            if window_over && majority_for == Some(state.claimant) && !cut_off && !settled_elsewhere
            {
                state.settled = true;
                state.rivals.clear();
                self.unschedule(name);
                self.stats.settled += 1;
                let mut batch = Batch::new();
                self.put_name(name, &mut batch);
                self.effects.push_back(Effect::Persist {
                    batch,
                    ticket: None,
                });
            } else {
                // Rivals: ask again soon; otherwise at the window's end.
                let at = if window_over || has_rivals {
                    now + interval
                } else {
                    (first_seen + window).max(now + interval)
                };
                self.schedule(name, at);
            }
        }
    }

    /// A race lost: the claimant's records go, the winner's claim comes in.
    fn switch_claimant(&mut self, name: &str, winner: PeerId) {
        let Some(state) = self.names.get_mut(name) else {
            return;
        };
        let Some(claim) = state.rivals.iter().find(|r| r.publisher == winner).cloned() else {
            return;
        };
        let mut rivals = std::mem::take(&mut state.rivals);
        rivals.retain(|r| r.publisher != winner);
        rivals.push(state.claim.clone());
        let old: Vec<String> = state.versions.clone();
        let first_seen = state.first_seen;
        self.stats.switched += 1;
        // The fresh state starts unscheduled: so must the queue.
        self.unschedule(name);
        let mut batch = Batch::new();
        self.drop_records(&old, &mut batch);
        let mut fresh = NameState::new(claim.clone(), first_seen);
        fresh.rivals = rivals;
        self.names.insert(name.to_string(), fresh);
        self.put_name(name, &mut batch);
        self.accept(claim, UpdateType::NewPackage, batch, None);
    }

    /// Checks the core's internal consistency; the first broken invariant, named.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (id, r) in &self.records {
            if *id != r.package.id {
                return Err(format!("record under {id} is {}", r.package.id));
            }
            let n = self
                .names
                .get(&r.package.name)
                .ok_or_else(|| format!("{id} has no name state"))?;
            if !n.allows(r) {
                return Err(format!("{id} by {} stands without the right", r.publisher));
            }
            if !n.versions.contains(id) {
                return Err(format!("{id} missing from its name's versions"));
            }
        }
        for (name, n) in &self.names {
            if n.settled && !n.rivals.is_empty() {
                return Err(format!("{name} is settled with rivals held"));
            }
            if !n.log.is_empty() && !n.settled {
                return Err(format!("{name} has a log but is not settled"));
            }
            if n.claim.publisher != n.claimant {
                return Err(format!("{name}'s claim is not its claimant's"));
            }
            for v in &n.versions {
                if !self.records.contains_key(v) {
                    return Err(format!("{name} lists {v}, which is not held"));
                }
            }
        }
        for (t, name) in &self.poll_queue {
            if self.names.get(name).and_then(|n| n.poll_at) != Some(*t) {
                return Err(format!(
                    "{name} is queued for a poll it is not scheduled for"
                ));
            }
        }
        if let Some(c) = &self.catalogue {
            let mut expect = vec![EMPTY_BUCKET; usize::from(SYNC_BUCKETS)];
            for id in self.records.keys() {
                if let Some(fp) = c.fingerprint(id) {
                    toggle_digest(&mut expect, id, &fp);
                }
            }
            if expect != self.digests {
                return Err("bucket digests do not match the catalogue".into());
            }
            if c.len() != self.records.len() {
                return Err(format!(
                    "catalogue holds {} versions, records {}",
                    c.len(),
                    self.records.len()
                ));
            }
        }
        Ok(())
    }
}

/// The digest of a bucket that holds nothing: a peer reporting it has nothing there for us.
pub const EMPTY_BUCKET: [u8; 32] = [0; 32];

/// Adds or removes one record's share of its bucket's digest. A bucket's digest is the XOR
/// of SHA-256(id length, id, fingerprint) over its records: the same set of records gives
/// the same digest in any order, and one change costs one hash, not a pass over the
/// catalogue.
fn toggle_digest(digests: &mut [[u8; 32]], id: &str, fingerprint: &[u8; 32]) {
    let b = usize::from(Catalogue::bucket_of(id, SYNC_BUCKETS));
    let Some(d) = digests.get_mut(b) else {
        return;
    };
    let mut h = Sha256::new();
    h.update((id.len() as u32).to_be_bytes());
    h.update(id.as_bytes());
    h.update(fingerprint);
    let share: [u8; 32] = h.finalize().into();
    for (x, y) in d.iter_mut().zip(share) {
        *x ^= y;
    }
}

fn content_hash(r: &SignedPackage) -> Option<ContentHash> {
    r.package.content_hash.as_deref()?.parse().ok()
}

fn encoded_len(r: &SyncResponse) -> u64 {
    postcard::experimental::serialized_size(r).map_or(0, |n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    /// Cores wired to each other directly: requests are answered at once, announcements
    /// reach every other core, store writes succeed.
    struct Net {
        cores: Vec<RegistryCore>,
        now: Instant,
        wall: DateTime<Utc>,
        rng: StdRng,
        /// Announcements not yet delivered, per destination (to control arrival order).
        hold: bool,
        held: Vec<(usize, Arc<SignedPackage>)>,
        /// Links up (smaller index first); announcements reach every core linked to the
        /// announcer, directly or not.
        links: HashSet<(usize, usize)>,
        /// Links taken down by [`Net::cut`].
        cut_links: Vec<(usize, usize)>,
    }

    fn config() -> CoreConfig {
        CoreConfig {
            full: true,
            replicate_content: false,
            sync_interval: Duration::from_secs(30),
            ownership: OwnershipConfig::default(),
        }
    }

    impl Net {
        fn new(n: usize) -> Net {
            let mut edges = Vec::new();
            for a in 0..n {
                for b in a + 1..n {
                    edges.push((a, b));
                }
            }
            Net::graph(n, &edges, config())
        }

        /// `n` cores linked by `edges` only.
        fn graph(n: usize, edges: &[(usize, usize)], config: CoreConfig) -> Net {
            let mut rng = StdRng::seed_from_u64(7);
            let cores: Vec<RegistryCore> = (0..n)
                .map(|_| RegistryCore::new(Keypair::generate_with(&mut rng), config.clone()))
                .collect();
            let mut net = Net {
                cores,
                now: Instant::now(),
                wall: Utc::now(),
                rng,
                hold: false,
                held: Vec::new(),
                links: HashSet::new(),
                cut_links: Vec::new(),
            };
            for &(a, b) in edges {
                net.join(a, b);
            }
            net.settle();
            net
        }

        fn join(&mut self, a: usize, b: usize) {
            if self.links.insert((a.min(b), a.max(b))) {
                let (pa, pb) = (self.cores[a].local_peer_id(), self.cores[b].local_peer_id());
                self.cores[a].handle_connected(self.now, pb);
                self.cores[b].handle_connected(self.now, pa);
            }
        }

        /// Takes down every link between `side` and the other cores.
        fn cut(&mut self, side: &[usize]) {
            let gone: Vec<(usize, usize)> = self
                .links
                .iter()
                .copied()
                .filter(|(a, b)| side.contains(a) != side.contains(b))
                .collect();
            for (a, b) in gone {
                self.links.remove(&(a, b));
                let (pa, pb) = (self.cores[a].local_peer_id(), self.cores[b].local_peer_id());
                self.cores[a].handle_disconnected(self.now, pb);
                self.cores[b].handle_disconnected(self.now, pa);
                self.cut_links.push((a, b));
            }
            self.settle();
        }

        /// Brings the links [`Net::cut`] took down back up.
        fn heal(&mut self) {
            for (a, b) in std::mem::take(&mut self.cut_links) {
                self.join(a, b);
            }
            self.settle();
        }

        /// The cores `i` is linked to, directly or not (itself excluded).
        fn reach(&self, i: usize) -> Vec<usize> {
            let mut seen = vec![false; self.cores.len()];
            seen[i] = true;
            let mut todo = vec![i];
            while let Some(x) = todo.pop() {
                for &(a, b) in &self.links {
                    let y = if a == x {
                        b
                    } else if b == x {
                        a
                    } else {
                        continue;
                    };
                    if !seen[y] {
                        seen[y] = true;
                        todo.push(y);
                    }
                }
            }
            (0..self.cores.len())
                .filter(|&j| j != i && seen[j])
                .collect()
        }

        fn index(&self, p: PeerId) -> usize {
            self.cores
                .iter()
                .position(|c| c.local_peer_id() == p)
                .unwrap_or(usize::MAX)
        }

        /// Carries out every effect until none is left.
        fn settle(&mut self) {
            loop {
                let mut any = false;
                for i in 0..self.cores.len() {
                    while let Some(e) = self.cores[i].poll_effect() {
                        any = true;
                        self.carry(i, e);
                    }
                }
                if !any {
                    break;
                }
            }
            for c in &self.cores {
                c.check_invariants().unwrap();
            }
        }

        fn carry(&mut self, i: usize, e: Effect) {
            let (now, wall) = (self.now, self.wall);
            match e {
                Effect::Persist {
                    ticket: Some(t), ..
                } => self.cores[i].handle_persisted(now, t, Ok(())),
                Effect::Announce(r) => {
                    for j in self.reach(i) {
                        if self.hold {
                            self.held.push((j, r.clone()));
                        } else {
                            let from = self.cores[i].local_peer_id();
                            let _ = self.cores[j].handle_gossip(now, wall, from, (*r).clone());
                        }
                    }
                }
                Effect::AnnounceStatement(s) => {
                    for j in self.reach(i) {
                        let _ = self.cores[j].handle_statement(now, wall, (*s).clone());
                    }
                }
                Effect::Request { peer, request } => {
                    let j = self.index(peer);
                    let me = self.cores[i].local_peer_id();
                    let answer = self.cores[j].handle_request(now, me, request);
                    self.cores[i].handle_response(now, wall, peer, answer);
                }
                _ => {}
            }
        }

        fn advance(&mut self, d: Duration) {
            let step = Duration::from_millis(100);
            let end = self.now + d;
            while self.now < end {
                self.now += step;
                self.wall += chrono::Duration::from_std(step).unwrap();
                for i in 0..self.cores.len() {
                    if self.cores[i].poll_timeout().is_some_and(|t| t <= self.now) {
                        let now = self.now;
                        let mut rng = StdRng::seed_from_u64(self.rng.next_u64());
                        self.cores[i].handle_timeout(now, &mut rng);
                    }
                }
                self.settle();
            }
        }

        fn publish(&mut self, i: usize, name: &str, version: &str) -> Result<(), RegistryError> {
            let p = Package::new(name.into(), version.into());
            let (now, wall) = (self.now, self.wall);
            self.cores[i].handle_publish(now, wall, p, false)?;
            self.settle();
            Ok(())
        }

        fn owner(&self, i: usize, name: &str) -> Option<(PeerId, bool)> {
            self.cores[i].owner_of(name).map(|(o, s, _)| (o, s))
        }
    }

    fn signed(k: &Keypair, name: &str, version: &str, created: DateTime<Utc>) -> SignedPackage {
        let mut p = Package::new(name.into(), version.into());
        p.created_at = created;
        p.updated_at = created;
        SignedPackage::sign(p, false, k)
    }

    #[test]
    fn a_settled_name_refuses_every_other_key_however_dated() {
        let mut net = Net::new(4);
        net.publish(0, "kit", "1.0.0").unwrap();
        let alice = net.cores[0].local_peer_id();
        net.advance(Duration::from_secs(12));
        for i in 0..4 {
            assert_eq!(net.owner(i, "kit"), Some((alice, true)), "node {i}");
        }
        // Mallory back-dates a claim a year and announces it everywhere.
        let mallory = Keypair::generate();
        let old = net.wall - chrono::Duration::days(365);
        let forged = signed(&mallory, "kit", "9.9.9", old);
        for i in 0..4 {
            let (now, wall) = (net.now, net.wall);
            let r = net.cores[i].handle_gossip(now, wall, mallory.peer_id(), forged.clone());
            assert!(matches!(r, Err(RegistryError::NameOwned { .. })), "{r:?}");
        }
        net.advance(Duration::from_secs(20));
        for i in 0..4 {
            assert_eq!(net.owner(i, "kit"), Some((alice, true)));
            assert!(net.cores[i].record("kit@1.0.0").is_some());
            assert!(net.cores[i].record("kit@9.9.9").is_none());
        }
    }

    #[test]
    fn a_race_resolves_to_one_owner_whatever_the_arrival_order() {
        for seed in 0..6u64 {
            let mut net = Net::new(5);
            net.rng = StdRng::seed_from_u64(seed);
            net.hold = true;
            // Nodes 0 and 1 claim the same new name at the same moment.
            net.publish(0, "race", "1.0.0").unwrap();
            net.publish(1, "race", "1.0.0").unwrap();
            // Deliver in a seed-dependent order.
            let mut held = std::mem::take(&mut net.held);
            let mut order = StdRng::seed_from_u64(seed);
            for i in (1..held.len()).rev() {
                let j = (order.next_u64() % (i as u64 + 1)) as usize;
                held.swap(i, j);
            }
            net.hold = false;
            for (j, r) in held {
                let (now, wall) = (net.now, net.wall);
                let _ = net.cores[j].handle_gossip(now, wall, r.publisher, (*r).clone());
            }
            net.settle();
            net.advance(Duration::from_secs(15));
            let owners: Vec<_> = (0..5).map(|i| net.owner(i, "race")).collect();
            assert!(
                owners.iter().all(|o| o == &owners[0]),
                "seed {seed}: {owners:?}"
            );
            assert!(owners[0].is_some_and(|(_, settled)| settled));
            let winner = owners[0].map(|(o, _)| o);
            for i in 0..5 {
                let r = net.cores[i].record("race@1.0.0").unwrap();
                assert_eq!(Some(r.publisher), winner);
            }
        }
    }

    #[test]
    fn a_flood_of_sybil_rivals_does_not_crowd_out_the_claim_the_peers_hold() {
        let mut net = Net::new(5);
        net.hold = true;
        net.publish(0, "flood", "1.0.0").unwrap();
        let alice = net.cores[0].local_peer_id();
        let held = std::mem::take(&mut net.held);
        net.hold = false;
        // Node 4 sees a dozen sybil claims of the name first, filling its list of rivals,
        // and only then the honest claim; the others see the honest claim alone.
        let old = net.wall - chrono::Duration::days(365);
        for _ in 0..12 {
            let sybil = Keypair::generate();
            let forged = signed(&sybil, "flood", "1.0.0", old);
            let (now, wall) = (net.now, net.wall);
            let _ = net.cores[4].handle_gossip(now, wall, sybil.peer_id(), forged);
        }
        for (j, r) in held {
            let (now, wall) = (net.now, net.wall);
            let _ = net.cores[j].handle_gossip(now, wall, alice, (*r).clone());
        }
        net.settle();
        net.advance(Duration::from_secs(15));
        for i in 0..5 {
            assert_eq!(net.owner(i, "flood"), Some((alice, true)), "node {i}");
            let r = net.cores[i].record("flood@1.0.0").unwrap();
            assert_eq!(r.publisher, alice, "node {i}");
        }
    }

    /// Splits off `minority`; cores `a` (in it) and `b` (outside) claim the same new name
    /// while the sides are apart; checks that no minority core settles, long after the
    /// race window.
    fn split_race(net: &mut Net, minority: &[usize], a: usize, b: usize) {
        net.cut(minority);
        net.publish(a, "split", "1.0.0").unwrap();
        net.publish(b, "split", "1.0.0").unwrap();
        net.advance(Duration::from_secs(600));
        for &i in minority {
            let (_, settled) = net.owner(i, "split").unwrap();
            assert!(
                !settled,
                "node {i}, on the minority side, settled during the split"
            );
        }
    }

    #[test]
    fn a_node_cut_off_from_most_of_its_peers_does_not_settle_on_a_lucky_sample() {
        // Ten cores, fully linked; three of them split off. Each of the three still reaches
        // two peers and has lost seven: polls of two peers sometimes sample only the two
        // it reaches, which hold its claim.
        let config = CoreConfig {
            ownership: OwnershipConfig {
                poll_peers: 2,
                ..OwnershipConfig::default()
            },
            ..config()
        };
        let mut edges = Vec::new();
        for a in 0..10 {
            for b in a + 1..10 {
                edges.push((a, b));
            }
        }
        let mut net = Net::graph(10, &edges, config);
        split_race(&mut net, &[0, 1, 2], 0, 5);
    }

    #[test]
    fn a_node_whose_reachable_peers_are_cut_off_does_not_settle_on_their_word() {
        // Minority 0..4, majority 4..12 (each side fully linked inside). Node 0 keeps more
        // peers (1, 2, 3) than it loses (4, 5), but each of 1, 2, 3 loses five of its
        // eight: their word is that of nodes cut off from most of their peers.
        let mut edges = Vec::new();
        for (lo, hi) in [(0, 4), (4, 12)] {
            for a in lo..hi {
                for b in a + 1..hi {
                    edges.push((a, b));
                }
            }
        }
        edges.extend([(0, 4), (0, 5)]);
        for a in 1..4 {
            for k in 0..5 {
                edges.push((a, 4 + (2 * a + k) % 8));
            }
        }
        let mut net = Net::graph(12, &edges, config());
        split_race(&mut net, &[0, 1, 2, 3], 1, 8);
        // Healed, the minority takes the claim the majority settled, though node 0's
        // first poll may sample more of its own side: settled peers hold it back.
        net.heal();
        net.advance(Duration::from_secs(30));
        let winner = net.cores[8].local_peer_id();
        for i in 0..12 {
            assert_eq!(net.owner(i, "split"), Some((winner, true)), "node {i}");
            assert_eq!(
                net.cores[i].record("split@1.0.0").unwrap().publisher,
                winner
            );
        }
    }

    /// A core that reaches 3 of its peers and lost `lost` others, polling 3 at a time: a
    /// poll that samples two or three of the peers it reaches finds a majority for its
    /// claim. The split heals while such a poll is out: the poll must settle nothing.
    fn poll_across_a_heal(lost: usize) {
        let config = CoreConfig {
            ownership: OwnershipConfig {
                poll_peers: 3,
                ..OwnershipConfig::default()
            },
            ..config()
        };
        let mut core = RegistryCore::new(Keypair::generate(), config);
        let peers: Vec<PeerId> = (0..3 + lost)
            .map(|_| Keypair::generate().peer_id())
            .collect();
        let (mut now, wall) = (Instant::now(), Utc::now());
        for p in &peers {
            core.handle_connected(now, *p);
        }
        for p in &peers[3..] {
            core.handle_disconnected(now, *p);
        }
        let bob = Keypair::generate();
        let claim = signed(&bob, "late", "1.0.0", wall);
        core.handle_gossip(now, wall, peers[0], claim).unwrap();
        let answer = SyncResponse::Owners(vec![OwnerAnswer {
            name: "late".into(),
            owner: Some(bob.peer_id()),
            settled: false,
            claim: None,
        }]);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            now += Duration::from_secs(1);
            core.handle_timeout(now, &mut rng);
            let mut asked = Vec::new();
            while let Some(e) = core.poll_effect() {
                if let Effect::Request {
                    peer,
                    request: SyncRequest::Owners(_),
                } = e
                {
                    asked.push(peer);
                }
            }
            let lucky = asked.len() >= 2;
            if lucky {
                for p in &peers[3..] {
                    core.handle_connected(now, *p);
                }
            }
            for p in asked {
                core.handle_response(now, wall, p, answer.clone());
            }
            let (_, settled, _) = core.owner_of("late").unwrap();
            assert!(!settled, "lost {lost}: settled on a poll across the heal");
            if lucky {
                return;
            }
        }
        panic!("lost {lost}: no poll sampled two reachable peers");
    }

    /// A core with five peers (all in every sample) that hold Bob's claim of a name,
    /// except the first `elsewhere`, which report Mallory's claim settled. Runs a minute of
    /// polls; whether Bob's claim settled, and how many wide polls asked all five.
    fn polls_with_reports_of_another_owner(elsewhere: usize) -> (bool, usize) {
        let mut core = RegistryCore::new(Keypair::generate(), config());
        let peers: Vec<PeerId> = (0..5).map(|_| Keypair::generate().peer_id()).collect();
        let (mut now, wall) = (Instant::now(), Utc::now());
        for p in &peers {
            core.handle_connected(now, *p);
        }
        let (bob, mallory) = (Keypair::generate(), Keypair::generate());
        core.handle_gossip(now, wall, peers[4], signed(&bob, "kit", "1.0.0", wall))
            .unwrap();
        let mallory_claim = signed(&mallory, "kit", "1.0.0", wall).encode();
        let mut rng = StdRng::seed_from_u64(3);
        let mut wide = 0;
        for _ in 0..60 {
            now += Duration::from_secs(1);
            core.handle_timeout(now, &mut rng);
            let mut asked = Vec::new();
            while let Some(e) = core.poll_effect() {
                if let Effect::Request {
                    peer,
                    request: SyncRequest::Owners(_),
                } = e
                {
                    asked.push(peer);
                }
            }
            if asked.len() == peers.len() && core.poll.as_ref().is_some_and(|p| p.wide) {
                wide += 1;
            }
            for p in asked {
                let i = peers.iter().position(|q| *q == p).unwrap();
                let answer = if i < elsewhere {
                    OwnerAnswer {
                        name: "kit".into(),
                        owner: Some(mallory.peer_id()),
                        settled: true,
                        claim: Some(mallory_claim.clone()),
                    }
                } else {
                    OwnerAnswer {
                        name: "kit".into(),
                        owner: Some(bob.peer_id()),
                        settled: false,
                        claim: None,
                    }
                };
                core.handle_response(now, wall, p, SyncResponse::Owners(vec![answer]));
            }
            core.check_invariants().unwrap();
        }
        let (owner, settled, _) = core.owner_of("kit").unwrap();
        assert_eq!(owner, bob.peer_id(), "the majority's claim is held");
        (settled, wide)
    }

    #[test]
    fn one_peer_lying_that_another_owner_settled_cannot_stop_a_name_from_settling() {
        let (settled, wide) = polls_with_reports_of_another_owner(1);
        assert!(settled, "a lone liar kept the name from settling");
        assert!(wide >= 1, "the report did not widen the poll");
    }

    #[test]
    fn a_quarter_of_the_peers_having_settled_another_owner_stops_settling() {
        let (settled, wide) = polls_with_reports_of_another_owner(2);
        assert!(!settled, "settled against peers that settled another owner");
        assert!(wide >= 1, "the reports did not widen the poll");
        let (settled, _) = polls_with_reports_of_another_owner(0);
        assert!(settled, "with no report the name settles");
    }

    #[test]
    fn a_failed_sync_step_is_retried_and_the_round_goes_on() {
        let mut net = Net::new(2);
        net.publish(0, "kit", "1.0.0").unwrap();
        // Node 1 lost the announcement: its round with node 0 must fetch the record even
        // though the first two requests of the step fail.
        let mut lone = RegistryCore::new(Keypair::generate(), config());
        let peer = net.cores[0].local_peer_id();
        let (mut now, wall) = (net.now, net.wall);
        lone.handle_connected(now, peer);
        let mut rng = StdRng::seed_from_u64(5);
        let mut failures = 0;
        for _ in 0..100 {
            now += Duration::from_secs(1);
            lone.handle_timeout(now, &mut rng);
            while let Some(e) = lone.poll_effect() {
                let Effect::Request { peer: to, request } = e else {
                    continue;
                };
                assert_eq!(to, peer);
                if matches!(request, SyncRequest::Records(_)) && failures < 2 {
                    failures += 1;
                    lone.handle_request_failed(now, to, &request);
                    continue;
                }
                let me = lone.local_peer_id();
                let answer = net.cores[0].handle_request(now, me, request);
                lone.handle_response(now, wall, to, answer);
            }
            if lone.record("kit@1.0.0").is_some() {
                break;
            }
        }
        assert_eq!(failures, 2);
        assert!(lone.record("kit@1.0.0").is_some(), "the round gave up");
        assert_eq!(lone.stats().sync_retries, 2);
        lone.check_invariants().unwrap();
    }

    #[test]
    fn a_poll_begun_while_cut_off_settles_nothing_when_it_ends_after_the_heal() {
        poll_across_a_heal(4);
    }

    #[test]
    fn a_poll_during_which_peers_reconnect_settles_nothing() {
        // Not cut off (as many peers reached as lost), but its sample stood for a network
        // that changed while the poll was out.
        poll_across_a_heal(3);
    }

    #[test]
    fn a_switch_while_a_rival_waits_for_its_poll_leaves_no_poll_behind() {
        let mut core = RegistryCore::new(Keypair::generate(), config());
        let peers: Vec<PeerId> = (0..4).map(|_| Keypair::generate().peer_id()).collect();
        let (mut now, wall) = (Instant::now(), Utc::now());
        for p in &peers {
            core.handle_connected(now, *p);
        }
        let (alice, bob) = (Keypair::generate(), Keypair::generate());
        let first = signed(&alice, "swap", "1.0.0", wall);
        core.handle_gossip(now, wall, peers[0], first).unwrap();
        let owners = |core: &mut RegistryCore| {
            let mut asked = Vec::new();
            while let Some(e) = core.poll_effect() {
                if let Effect::Request {
                    peer,
                    request: SyncRequest::Owners(_),
                } = e
                {
                    asked.push(peer);
                }
            }
            asked
        };
        owners(&mut core);
        // The window ends: a poll goes out. Bob's rival claim arrives while it is out (so
        // the name is scheduled again), and every peer answers for Bob: we switch.
        now += Duration::from_secs(10);
        let mut rng = StdRng::seed_from_u64(1);
        core.handle_timeout(now, &mut rng);
        let asked = owners(&mut core);
        assert_eq!(asked.len(), 4);
        let rival = signed(&bob, "swap", "1.0.0", wall);
        assert!(
            core.handle_gossip(now, wall, peers[1], rival.clone())
                .is_err()
        );
        for p in asked {
            let answer = SyncResponse::Owners(vec![OwnerAnswer {
                name: "swap".into(),
                owner: Some(bob.peer_id()),
                settled: false,
                claim: Some(rival.encode()),
            }]);
            core.handle_response(now, wall, p, answer);
        }
        assert_eq!(core.owner_of("swap").map(|o| o.0), Some(bob.peer_id()));
        core.check_invariants().unwrap();
        // Settled (now or on the next poll), the name is never polled again.
        let mut polls = 0;
        for _ in 0..20 {
            now += Duration::from_secs(1);
            core.handle_timeout(now, &mut rng);
            for p in owners(&mut core) {
                polls += 1;
                let answer = SyncResponse::Owners(vec![OwnerAnswer {
                    name: "swap".into(),
                    owner: Some(bob.peer_id()),
                    settled: true,
                    claim: None,
                }]);
                core.handle_response(now, wall, p, answer);
            }
        }
        assert_eq!(core.owner_of("swap"), Some((bob.peer_id(), true, vec![])));
        assert!(polls <= 4, "{polls} poll requests after the switch");
    }

    #[test]
    fn the_publisher_stamps_the_time_and_refuses_back_dating() {
        let mut net = Net::new(1);
        let mut p = Package::new("old".into(), "1.0.0".into());
        p.created_at = net.wall - chrono::Duration::hours(2);
        let (now, wall) = (net.now, net.wall);
        let e = net.cores[0]
            .handle_publish(now, wall, p, false)
            .unwrap_err();
        assert!(matches!(e, RegistryError::BackDated { .. }), "{e}");
        assert!(e.to_string().contains("stamps the publication time"));
        let mut p = Package::new("new".into(), "1.0.0".into());
        p.created_at = net.wall - chrono::Duration::seconds(30);
        net.cores[0].handle_publish(now, wall, p, false).unwrap();
        net.settle();
        assert_eq!(
            net.cores[0].record("new@1.0.0").unwrap().package.created_at,
            wall
        );
    }

    #[test]
    fn maintainers_are_added_removed_and_a_transfer_moves_the_name() {
        let mut net = Net::new(3);
        let (alice, bob) = (net.cores[0].local_peer_id(), net.cores[1].local_peer_id());
        net.publish(0, "tool", "1.0.0").unwrap();
        // Bob may not publish yet.
        assert!(matches!(
            net.publish(1, "tool", "1.1.0"),
            Err(RegistryError::NameOwned { .. })
        ));
        // Statements wait for the claim to settle.
        let (now, wall) = (net.now, net.wall);
        assert!(
            net.cores[0]
                .handle_name_action(now, wall, "tool", NameAction::AddMaintainer(bob))
                .is_err()
        );
        net.advance(Duration::from_secs(12));
        let (now, wall) = (net.now, net.wall);
        net.cores[0]
            .handle_name_action(now, wall, "tool", NameAction::AddMaintainer(bob))
            .unwrap();
        net.settle();
        net.publish(1, "tool", "1.1.0").unwrap();
        for i in 0..3 {
            assert!(net.cores[i].record("tool@1.1.0").is_some());
        }
        // Bob signs another version but it has not spread when Alice removes him.
        let bob_key = &net.cores[1].keypair.clone();
        let late = signed(bob_key, "tool", "1.2.0", net.wall);
        let (now, wall) = (net.now, net.wall);
        net.cores[0]
            .handle_name_action(
                now,
                wall,
                "tool",
                NameAction::RemoveMaintainer {
                    key: bob,
                    keep: Vec::new(),
                },
            )
            .unwrap();
        net.settle();
        for i in 0..3 {
            let (now, wall) = (net.now, net.wall);
            assert!(
                net.cores[i]
                    .handle_gossip(now, wall, bob, late.clone())
                    .is_err()
            );
            // Back-dated to before the removal: still refused.
            let back = signed(bob_key, "tool", "1.3.0", wall - chrono::Duration::days(30));
            assert!(net.cores[i].handle_gossip(now, wall, bob, back).is_err());
            // What he published before stays.
            assert!(net.cores[i].record("tool@1.1.0").is_some(), "node {i}");
        }
        // Alice hands the name to node 2; her own versions stay, she may publish no more.
        let carol = net.cores[2].local_peer_id();
        let (now, wall) = (net.now, net.wall);
        net.cores[0]
            .handle_name_action(
                now,
                wall,
                "tool",
                NameAction::Transfer {
                    to: carol,
                    keep: Vec::new(),
                },
            )
            .unwrap();
        net.settle();
        assert!(net.publish(0, "tool", "2.0.0").is_err());
        net.publish(2, "tool", "2.0.0").unwrap();
        for i in 0..3 {
            let (owner, settled, _) = net.cores[i].owner_of("tool").unwrap();
            assert_eq!((owner, settled), (carol, true));
            assert!(net.cores[i].record("tool@1.0.0").is_some());
            assert!(net.cores[i].record("tool@2.0.0").is_some());
            assert_eq!(net.cores[i].record("tool@1.0.0").unwrap().publisher, alice);
        }
        // A statement by the old owner after the transfer is refused.
        let alice_key = net.cores[0].keypair.clone();
        let stale = NameStatement::sign(
            "tool".into(),
            4,
            NameAction::AddMaintainer(alice),
            net.wall,
            &alice_key,
        );
        let (now, wall) = (net.now, net.wall);
        assert!(net.cores[1].handle_statement(now, wall, stale).is_err());
    }

    #[test]
    fn replaying_an_older_re_signing_changes_nothing() {
        let mut net = Net::new(2);
        net.publish(0, "doc", "1.0.0").unwrap();
        let first = net.cores[1].record("doc@1.0.0").unwrap().clone();
        net.advance(Duration::from_secs(1));
        let mut p = first.package.clone();
        p.description = "newer".into();
        let (now, wall) = (net.now, net.wall);
        net.cores[0].handle_publish(now, wall, p, true).unwrap();
        net.settle();
        let newer = net.cores[1].record("doc@1.0.0").unwrap().clone();
        assert!(newer.deprecated);
        assert_eq!(newer.package.description, "newer");
        let (now, wall) = (net.now, net.wall);
        let replay = net.cores[1].handle_gossip(now, wall, first.publisher, (*first).clone());
        assert!(matches!(replay, Ok(None)));
        assert_eq!(
            net.cores[1].record("doc@1.0.0").unwrap().fingerprint(),
            newer.fingerprint()
        );
    }

    #[test]
    fn a_failed_store_write_undoes_the_local_publish() {
        let mut core = RegistryCore::new(Keypair::generate(), config());
        let (now, wall) = (Instant::now(), Utc::now());
        let t = core
            .handle_publish(
                now,
                wall,
                Package::new("gone".into(), "1.0.0".into()),
                false,
            )
            .unwrap();
        while core.poll_effect().is_some() {}
        core.handle_persisted(now, t, Err("disk full".into()));
        let mut done = None;
        while let Some(e) = core.poll_effect() {
            if let Effect::Done { result, .. } = e {
                done = Some(result);
            }
        }
        assert!(matches!(done, Some(Err(RegistryError::Storage(_)))));
        assert!(core.record("gone@1.0.0").is_none());
        assert!(core.owner_of("gone").is_none());
        core.check_invariants().unwrap();
    }
}
