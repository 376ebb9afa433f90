//! The registry under the deterministic simulator: many nodes, each running the real gossip
//! router ([`Gossipsub`]) and an unchanged [`RegistryCore`], over simulated links.
//!
//! This module owns [`RegistrySim`]: the event queue, the links (seeded per-link latency with
//! up to 10 % jitter, independent loss, FIFO per direction), virtual time, crashes and
//! restarts, partitions, attacker and withholding nodes, and the [`RegistryMetrics`] a run is
//! judged by. Every gossip RPC goes through the real codec, every anti-entropy and poll
//! exchange through postcard with the real [`SyncRequest`]/[`SyncResponse`] types, so byte
//! counts are real. The same seed always gives the same run.
//!
//! # Wiring of one node
//!
//! - [`Effect::Announce`] publishes an [`Announcement`] on the packages topic and
//!   [`Effect::AnnounceStatement`] a statement on the names topic (the driver also announces
//!   on category and name topics; nobody here subscribes to those, so they are left out).
//!   Messages the router delivers on those topics go to [`RegistryCore::handle_gossip`] and
//!   [`RegistryCore::handle_statement`] with the delivering peer.
//! - [`Effect::Request`] is a request/response exchange over the same link model (latency
//!   each way, loss). A lost request or answer, or one to a dead peer, fails after
//!   [`RegistrySimConfig::rpc_timeout`]; a link that goes down fails its requests at once.
//! - [`Effect::Persist`] is applied to an in-memory disk (what a restart restores from) and a
//!   ticket is reported durable at once. There is no DHT and no content transfer here:
//!   [`Effect::PutRecord`], [`Effect::Replicate`] and [`Effect::Dropped`] are only counted.
//! - [`Effect::Update`] is recorded per node with its time: the time from a publish to a
//!   node's first holding of that record is its publish-to-visible latency.
//! - Link up and down are [`RegistryCore::handle_connected`] and
//!   [`RegistryCore::handle_disconnected`]; timers come from [`RegistryCore::poll_timeout`];
//!   the wall clock is [`RegistrySimConfig::wall_base`] plus virtual time; randomness comes
//!   from the simulation's seeded RNG.
//!
//! # Adversaries
//!
//! - An **attacker** node ([`RegistrySim::make_attacker`]) runs the router (so it meshes
//!   and forwards like anyone) but not its core: it holds its own keys, announces whatever
//!   [`SignedPackage`]s it is told to ([`RegistrySim::announce`]), may react to every honest
//!   announcement by claiming the same name with its keys, back-dated, and may lie in
//!   ownership polls. Attackers collude: for each name they all vote for one attacker claim
//!   (the first any of them made, or a new back-dated one). Its other answers are empty.
//! - A **withholding** node ([`RegistrySim::make_withholding`]) runs a normal core, but its
//!   announcements are dropped, its router forwards no message (IHAVE and control still go
//!   out, so it stays in the mesh) and it answers every request empty (an empty poll
//!   answer is an abstention, which the asker counts against every claimant).
//!
//! # Metrics
//!
//! [`RegistrySim::metrics`] judges the live honest nodes (role [`Role::Honest`]). A
//! **hijack** is a name first claimed by an honest key (an honest publish through the
//! simulator) strictly before any attacker claimed it, that some live honest node has
//! settled with an owner that is not an honest key. Names an attacker claimed first are not
//! counted: the attacker may have won that race fairly. Separately,
//! [`RegistryMetrics::settled_replaced`] counts every time a node wrote a settled claim of
//! a name with another claimant than the one it had settled before (a settled claim must
//! never be given up).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::link_latency;
use crate::address::Multiaddr;
use crate::gossip::{Action, GossipEvent, GossipMessage, Gossipsub, GossipsubConfig, Rpc, Topic};
use crate::identity::{Keypair, PeerId};
use crate::registry::OwnershipConfig;
use crate::registry::core::{CoreConfig, Effect, RegistryCore, StoredName, Ticket};
use crate::registry::protocol::{
    Announcement, MAX_POLL_NAMES, OwnerAnswer, SyncProtocol, SyncRequest, SyncResponse,
};
use crate::registry::signed::{NameStatement, SignedPackage};
use crate::registry::store::{OwnerEntry, RegistryWrite};
use crate::registry::types::{Package, PackageUpdate};
use crate::registry::{Batch, RegistryError};
use crate::rpc::Protocol;

/// Registry simulation parameters.
#[derive(Clone, Debug)]
pub struct RegistrySimConfig {
    /// Seed of every random choice (keys, graph, latencies, loss, the cores' choices).
    pub seed: u64,
    /// Smallest one-way link latency.
    pub min_latency: Duration,
    /// Largest one-way link latency (fixed per link, drawn uniformly; up to 10 % jitter per
    /// message, never reordering a direction of a link).
    pub max_latency: Duration,
    /// Probability that a message (gossip RPC, request or answer) is lost.
    pub loss: f64,
    /// Connections each node dials to random others (so about twice this many per node).
    pub dials_per_node: usize,
    /// A request whose answer has not come back after this long fails.
    pub rpc_timeout: Duration,
    /// The wall clock at virtual time zero.
    pub wall_base: DateTime<Utc>,
    /// The router configuration every node runs.
    pub gossipsub: GossipsubConfig,
    /// The registry core configuration every node runs.
    pub core: CoreConfig,
}

impl Default for RegistrySimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            min_latency: Duration::from_millis(5),
            max_latency: Duration::from_millis(80),
            loss: 0.0,
            dials_per_node: 10,
            rpc_timeout: Duration::from_secs(2),
            // 2025-01-01T00:00:00Z: fixed, so a run does not depend on the host clock.
            wall_base: DateTime::from_timestamp(1_735_689_600, 0).unwrap_or_default(),
            gossipsub: GossipsubConfig::default(),
            core: CoreConfig {
                full: true,
                replicate_content: false,
                sync_interval: Duration::from_secs(30),
                ownership: OwnershipConfig::default(),
            },
        }
    }
}

/// What a node does with what it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs its core and router as they are.
    Honest,
    /// Runs its core, but drops its announcements, forwards no gossip message and answers
    /// every request empty.
    Withholding,
    /// Runs only its router; see [`AttackerConfig`].
    Attacker,
}

/// How an attacker node behaves.
#[derive(Clone, Debug)]
pub struct AttackerConfig {
    /// Signing keys it makes (its sybils).
    pub keys: usize,
    /// Answer ownership polls with the coalition's claim of each name asked about.
    pub lie_in_polls: bool,
    /// On each honest announcement of a name it has not reacted to yet, announce claims of
    /// the same `name@version` signed by this many of its keys, taken in turn from one name
    /// to the next (0: do not react).
    pub react_keys: usize,
    /// How far back the claims it makes are dated.
    pub back_date: chrono::Duration,
}

impl Default for AttackerConfig {
    fn default() -> Self {
        Self {
            keys: 5,
            lie_in_polls: true,
            react_keys: 0,
            back_date: chrono::Duration::days(365),
        }
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistrySimStats {
    /// Gossip RPCs handed to the network.
    pub gossip_sent: u64,
    /// Gossip RPCs delivered to a live node.
    pub gossip_delivered: u64,
    /// Encoded gossip bytes handed to the network.
    pub gossip_bytes: u64,
    /// Requests sent (anti-entropy and polls).
    pub requests: u64,
    /// Requests answered (an answer reached the asker in time).
    pub answered: u64,
    /// Requests failed (timeout, loss, link down, undecodable answer).
    pub request_failures: u64,
    /// Encoded request and answer bytes handed to the network.
    pub rpc_bytes: u64,
    /// Messages (of any kind) lost to simulated loss.
    pub lost: u64,
    /// Messages that arrived at a dead node or over a link that had gone down.
    pub to_dead: u64,
    /// Messages that failed to decode (0 unless a codec is broken).
    pub undecodable: u64,
    /// Router publishes refused (no peer to send to, and the like).
    pub publish_failed: u64,
    /// [`Effect::PutRecord`]s (no DHT here).
    pub put_records: u64,
    /// [`Effect::Replicate`]s (no content transfer here).
    pub replicates: u64,
    /// Records reported by [`Effect::Dropped`].
    pub dropped_records: u64,
    /// Announcements and forwards a withholding node kept back.
    pub withheld: u64,
    /// Claims attackers signed (announced or sent as poll evidence).
    pub attacker_claims: u64,
    /// Poll answers attackers gave.
    pub lies: u64,
}

/// How a run went, judged over the live honest nodes (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryMetrics {
    /// Nodes in the simulation.
    pub nodes: usize,
    /// Live nodes with [`Role::Honest`].
    pub live_honest: usize,
    /// Names claimed through the simulator (honest publishes and attacker claims).
    pub names: usize,
    /// Names with more than one settled owner across the live honest nodes.
    pub multi_owner_names: usize,
    /// Names whose live honest nodes hold more than one claimant (settled or not).
    pub split_names: usize,
    /// (live honest node, name) pairs where the node knows the name but has not settled it.
    pub unsettled: usize,
    /// Names hijacked (see the module docs).
    pub hijacks: usize,
    /// Settled claims a node later wrote with another claimant.
    pub settled_replaced: u64,
    /// (publish, live honest node) pairs where the node holds the published record (the
    /// publisher's node, and nodes restarted after the publish, are left out).
    pub visible_pairs: usize,
    /// (publish, live honest node) pairs where the node does not hold the published record
    /// now: it has not arrived yet, or its claim lost a race.
    pub missing_pairs: usize,
    /// Median publish-to-visible latency.
    pub latency_p50: Option<Duration>,
    /// 99th percentile publish-to-visible latency.
    pub latency_p99: Option<Duration>,
    /// Largest publish-to-visible latency.
    pub latency_max: Option<Duration>,
    /// Mean sync bytes (in + out, [`crate::registry::core::CoreStats`]) per live honest
    /// node.
    pub sync_bytes_mean: u64,
    /// Most sync bytes of one live honest node.
    pub sync_bytes_max: u64,
    /// Ownership polls completed (sum over live honest nodes).
    pub polls: u64,
    /// Races in which a node switched claimant (sum).
    pub switched: u64,
    /// Names settled (sum).
    pub settled: u64,
    /// Rival claims held (sum).
    pub rivals: u64,
    /// Anti-entropy rounds completed (sum).
    pub sync_rounds: u64,
}

#[derive(Default)]
struct Disk {
    records: BTreeMap<String, Vec<u8>>,
    owners: BTreeMap<String, OwnerEntry>,
}

struct Attacker {
    keys: Vec<Keypair>,
    config: AttackerConfig,
    reacted: HashSet<String>,
}

struct Node {
    key: Keypair,
    peer: PeerId,
    router: Gossipsub,
    core: RegistryCore,
    role: Role,
    attacker: Option<Attacker>,
    alive: bool,
    group: usize,
    router_timer: Option<Duration>,
    core_timer: Option<Duration>,
    disk: Disk,
    /// The claimant of each name as this node settled it, and when.
    settled: HashMap<String, (PeerId, Duration)>,
    restarted_at: Option<Duration>,
    updates: Vec<(Duration, PackageUpdate)>,
    /// When each (record id, publisher) was first held here.
    visible: HashMap<(String, PeerId), Duration>,
}

impl Node {
    fn runs_core(&self) -> bool {
        self.alive && self.role != Role::Attacker
    }
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Gossip {
        to: usize,
        from: usize,
        epoch: u64,
        bytes: Bytes,
    },
    Request {
        to: usize,
        from: usize,
        epoch: u64,
        id: u64,
        bytes: Vec<u8>,
    },
    Response {
        to: usize,
        from: usize,
        epoch: u64,
        id: u64,
        bytes: Vec<u8>,
    },
    RequestTimeout {
        id: u64,
    },
    RouterTimer {
        node: usize,
    },
    CoreTimer {
        node: usize,
    },
}

struct PendingRequest {
    from: usize,
    to: usize,
    request: SyncRequest,
}

struct Publish {
    id: String,
    publisher: PeerId,
    node: usize,
    at: Duration,
}

/// The simulated registry network (see the module docs).
pub struct RegistrySim {
    config: RegistrySimConfig,
    rng: StdRng,
    base: Instant,
    now: Duration,
    seq: u64,
    nodes: Vec<Node>,
    index: HashMap<PeerId, usize>,
    packages: Topic,
    names: Topic,
    /// Every link ever made (restarts and heals restore them).
    topology: BTreeSet<(usize, usize)>,
    /// Links up now, with the epoch of the connection.
    up: BTreeMap<(usize, usize), u64>,
    next_epoch: u64,
    last_arrival: HashMap<(usize, usize), Duration>,
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    pending: BTreeMap<u64, PendingRequest>,
    next_request: u64,
    publishes: Vec<Publish>,
    /// Keys of non-attacker nodes.
    honest_keys: HashSet<PeerId>,
    attacker_keys: HashSet<PeerId>,
    /// When each name was first claimed by an honest publish, and by an attacker.
    honest_claimed: BTreeMap<String, Duration>,
    attacker_claimed: BTreeMap<String, Duration>,
    /// The attacker coalition's claim of each name (what attackers vote for).
    coalition: BTreeMap<String, SignedPackage>,
    settled_replaced: u64,
    stats: RegistrySimStats,
}

impl std::fmt::Debug for RegistrySim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySim")
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

fn link(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// The answer a node that answers nothing gives: the right kind, empty.
fn empty_answer(req: &SyncRequest) -> SyncResponse {
    match req {
        SyncRequest::Digests => SyncResponse::Digests(Vec::new()),
        SyncRequest::Bucket(_) => SyncResponse::Bucket(Vec::new()),
        SyncRequest::Records(_) => SyncResponse::Records(Vec::new()),
        SyncRequest::Owners(_) => SyncResponse::Owners(Vec::new()),
        SyncRequest::LogHeads => SyncResponse::LogHeads(Vec::new()),
        SyncRequest::Logs(_) => SyncResponse::Logs(Vec::new()),
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted.get(i).copied()
}

impl RegistrySim {
    /// `n` honest nodes, each dialing `dials_per_node` random others, subscribed to the
    /// packages and names topics.
    pub fn new(n: usize, config: RegistrySimConfig) -> Result<Self, String> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let base = Instant::now();
        let packages = config.gossipsub.topic("packages");
        let names = config.gossipsub.topic("packages-names");
        let mut nodes = Vec::with_capacity(n);
        let mut index = HashMap::new();
        let mut honest_keys = HashSet::new();
        for i in 0..n {
            let key = Keypair::generate_with(&mut rng);
            let peer = key.peer_id();
            let mut router = Gossipsub::new(
                key.clone(),
                vec![Multiaddr::memory(i as u64 + 1)],
                config.gossipsub.clone(),
                base,
            )?;
            // Nodes start at different times: their heartbeats are out of phase.
            router.randomize_heartbeat_phase(base, &mut rng);
            router.subscribe(base, packages.clone(), &mut rng);
            router.subscribe(base, names.clone(), &mut rng);
            let core = RegistryCore::new(key.clone(), config.core.clone());
            index.insert(peer, i);
            honest_keys.insert(peer);
            nodes.push(Node {
                key,
                peer,
                router,
                core,
                role: Role::Honest,
                attacker: None,
                alive: true,
                group: 0,
                router_timer: None,
                core_timer: None,
                disk: Disk::default(),
                settled: HashMap::new(),
                restarted_at: None,
                updates: Vec::new(),
                visible: HashMap::new(),
            });
        }
        let mut sim = Self {
            config,
            rng,
            base,
            now: Duration::ZERO,
            seq: 0,
            nodes,
            index,
            packages,
            names,
            topology: BTreeSet::new(),
            up: BTreeMap::new(),
            next_epoch: 1,
            last_arrival: HashMap::new(),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            next_request: 1,
            publishes: Vec::new(),
            honest_keys,
            attacker_keys: HashSet::new(),
            honest_claimed: BTreeMap::new(),
            attacker_claimed: BTreeMap::new(),
            coalition: BTreeMap::new(),
            settled_replaced: 0,
            stats: RegistrySimStats::default(),
        };
        let dials = sim.config.dials_per_node.min(n.saturating_sub(1));
        for i in 0..n {
            let mut made = 0;
            let mut tries = 0;
            while made < dials && tries < dials * 20 {
                tries += 1;
                let j = sim.rng.random_range(0..n);
                if j != i && !sim.topology.contains(&link(i, j)) && sim.connect(i, j) {
                    made += 1;
                }
            }
        }
        for i in 0..n {
            sim.pump(i);
        }
        Ok(sim)
    }

    // ----- accessors -----

    /// The `Instant` the nodes see as now.
    pub fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Virtual time elapsed.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The simulated wall clock now.
    pub fn wall(&self) -> DateTime<Utc> {
        self.config.wall_base
            + chrono::Duration::from_std(self.now).unwrap_or(chrono::Duration::MAX)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s identity.
    pub fn peer_id(&self, i: usize) -> PeerId {
        self.nodes[i].peer
    }

    /// The node with identity `peer`.
    pub fn node_of(&self, peer: &PeerId) -> Option<usize> {
        self.index.get(peer).copied()
    }

    /// Node `i`'s registry core (of an attacker: unused).
    pub fn core(&self, i: usize) -> &RegistryCore {
        &self.nodes[i].core
    }

    /// Node `i`'s router.
    pub fn router(&self, i: usize) -> &Gossipsub {
        &self.nodes[i].router
    }

    /// Node `i`'s role.
    pub fn role(&self, i: usize) -> Role {
        self.nodes[i].role
    }

    /// Whether node `i` is up.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// The [`PackageUpdate`]s node `i`'s core reported, with when.
    pub fn updates(&self, i: usize) -> &[(Duration, PackageUpdate)] {
        &self.nodes[i].updates
    }

    /// The claimant node `i` settled `name` with, and when (from what it wrote to disk).
    pub fn settled_at(&self, i: usize, name: &str) -> Option<(PeerId, Duration)> {
        self.nodes[i].settled.get(name).copied()
    }

    /// Node `i`'s neighbours over links that are up now.
    pub fn neighbours(&self, i: usize) -> Vec<usize> {
        self.up
            .keys()
            .filter_map(|&(a, b)| {
                if a == i {
                    Some(b)
                } else if b == i {
                    Some(a)
                } else {
                    None
                }
            })
            .collect()
    }

    /// Counters.
    pub fn stats(&self) -> &RegistrySimStats {
        &self.stats
    }

    /// The simulation RNG (for workloads that must be reproducible too).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Sets the message loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// The keys of attacker node `i` (empty for other nodes).
    pub fn attacker_keys(&self, i: usize) -> Vec<Keypair> {
        self.nodes[i]
            .attacker
            .as_ref()
            .map(|a| a.keys.clone())
            .unwrap_or_default()
    }

    /// Whether `key` belongs to a node that is not an attacker.
    pub fn is_honest_key(&self, key: &PeerId) -> bool {
        self.honest_keys.contains(key)
    }

    // ----- roles -----

    /// Makes node `i` an attacker (see [`AttackerConfig`]); returns its keys.
    pub fn make_attacker(&mut self, i: usize, config: AttackerConfig) -> Vec<PeerId> {
        let keys: Vec<Keypair> = (0..config.keys.max(1))
            .map(|_| Keypair::generate_with(&mut self.rng))
            .collect();
        let peers: Vec<PeerId> = keys.iter().map(Keypair::peer_id).collect();
        self.honest_keys.remove(&self.nodes[i].peer);
        self.attacker_keys.insert(self.nodes[i].peer);
        self.attacker_keys.extend(peers.iter().copied());
        self.nodes[i].role = Role::Attacker;
        self.nodes[i].attacker = Some(Attacker {
            keys,
            config,
            reacted: HashSet::new(),
        });
        peers
    }

    /// Makes node `i` withhold (see [`Role::Withholding`]).
    pub fn make_withholding(&mut self, i: usize) {
        self.nodes[i].role = Role::Withholding;
    }

    // ----- workload -----

    /// Node `i` publishes `name@version` (stamped with the simulated wall clock) through its
    /// core; the publish is tracked for the latency figures.
    pub fn publish(
        &mut self,
        i: usize,
        name: &str,
        version: &str,
    ) -> Result<Ticket, RegistryError> {
        if !self.nodes[i].runs_core() {
            return Err(RegistryError::NotRunning);
        }
        let wall = self.wall();
        let mut p = Package::new(name.to_string(), version.to_string());
        p.created_at = wall;
        p.updated_at = wall;
        let id = p.canonical_id();
        let now = self.instant();
        let ticket = self.nodes[i].core.handle_publish(now, wall, p, false)?;
        let publisher = self.nodes[i].peer;
        self.publishes.push(Publish {
            id,
            publisher,
            node: i,
            at: self.now,
        });
        self.honest_claimed
            .entry(name.to_string())
            .or_insert(self.now);
        self.pump(i);
        Ok(ticket)
    }

    /// Runs `f` on node `i`'s core at the current time (with the wall clock), then carries
    /// out what it asked for.
    pub fn with_core<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut RegistryCore, Instant, DateTime<Utc>) -> T,
    ) -> T {
        let (now, wall) = (self.instant(), self.wall());
        let out = f(&mut self.nodes[i].core, now, wall);
        self.pump(i);
        out
    }

    /// Node `i`'s router publishes `record` on the packages topic, whoever signed it (for
    /// attackers). A claim by an attacker key counts as an attacker claim of its name.
    pub fn announce(&mut self, i: usize, record: SignedPackage) -> bool {
        if !self.nodes[i].alive {
            return false;
        }
        self.note_claim(&record);
        let ok = self.publish_on(i, self.packages.clone(), Announcement { record }.encode());
        self.pump(i);
        ok
    }

    /// Signs a claim of `name@version` with `key`, dated `back_date` before now.
    pub fn forge(
        &self,
        key: &Keypair,
        name: &str,
        version: &str,
        back_date: chrono::Duration,
    ) -> SignedPackage {
        let mut p = Package::new(name.to_string(), version.to_string());
        p.created_at = self.wall() - back_date;
        p.updated_at = p.created_at;
        SignedPackage::sign(p, false, key)
    }

    fn note_claim(&mut self, record: &SignedPackage) {
        if self.attacker_keys.contains(&record.publisher) {
            let name = &record.package.name;
            self.stats.attacker_claims += 1;
            self.attacker_claimed
                .entry(name.clone())
                .or_insert(self.now);
            self.coalition
                .entry(name.clone())
                .or_insert_with(|| record.clone());
        }
    }

    // ----- faults -----

    /// Node `i` stops: its links go down (its peers notice at once) and it does nothing
    /// until [`RegistrySim::restart`]. What its core persisted stays on its disk.
    pub fn crash(&mut self, i: usize) {
        if !self.nodes[i].alive {
            return;
        }
        let n = &mut self.nodes[i];
        n.alive = false;
        n.router_timer = None;
        n.core_timer = None;
        let gone: Vec<(usize, usize)> = self
            .up
            .keys()
            .copied()
            .filter(|(a, b)| *a == i || *b == i)
            .collect();
        self.links_down(&gone);
    }

    /// Node `i` starts again: a fresh router, a core restored from its disk (as the facade
    /// restores one from the store), and its links to live peers it may reach.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].alive {
            return Ok(());
        }
        let now = self.instant();
        let wall = self.wall();
        let key = self.nodes[i].key.clone();
        let mut router = Gossipsub::new(
            key.clone(),
            vec![Multiaddr::memory(i as u64 + 1)],
            self.config.gossipsub.clone(),
            now,
        )?;
        // As the driver does: sequence numbers from the clock, so ids are not reused.
        router.set_initial_seqno(self.now.as_micros() as u64);
        router.randomize_heartbeat_phase(now, &mut self.rng);
        router.subscribe(now, self.packages.clone(), &mut self.rng);
        router.subscribe(now, self.names.clone(), &mut self.rng);
        let mut core = RegistryCore::new(key, self.config.core.clone());
        let disk = &self.nodes[i].disk;
        for entry in disk.owners.values() {
            if let Ok(stored) = postcard::from_bytes::<StoredName>(&entry.claim) {
                core.restore_name(now, wall, &stored);
            }
        }
        for bytes in disk.records.values() {
            if let Ok(r) = SignedPackage::decode(bytes) {
                core.restore_record(now, wall, r);
            }
        }
        let n = &mut self.nodes[i];
        n.router = router;
        n.core = core;
        n.alive = true;
        n.restarted_at = Some(self.now);
        let peers: Vec<usize> = self
            .topology
            .iter()
            .filter_map(|&(a, b)| {
                if a == i {
                    Some(b)
                } else if b == i {
                    Some(a)
                } else {
                    None
                }
            })
            .collect();
        for j in peers {
            self.connect(i, j);
        }
        self.pump(i);
        Ok(())
    }

    /// Splits the network: each listed group is one side, the unlisted nodes another.
    /// Links between sides go down (both ends told) and no new one is made until
    /// [`RegistrySim::heal`].
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        for (g, members) in groups.iter().enumerate() {
            for &i in members {
                if let Some(n) = self.nodes.get_mut(i) {
                    n.group = g + 1;
                }
            }
        }
        let cut: Vec<(usize, usize)> = self
            .up
            .keys()
            .copied()
            .filter(|&(a, b)| self.nodes[a].group != self.nodes[b].group)
            .collect();
        self.links_down(&cut);
    }

    /// Ends a partition: every link between live nodes comes back up.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        let all: Vec<(usize, usize)> = self.topology.iter().copied().collect();
        for (a, b) in all {
            self.connect(a, b);
        }
    }

    /// Connects `a` (dialer) and `b`; false if they already are, either is down, or a
    /// partition separates them.
    pub fn connect(&mut self, a: usize, b: usize) -> bool {
        let key = link(a, b);
        if a == b
            || !self.nodes[a].alive
            || !self.nodes[b].alive
            || self.nodes[a].group != self.nodes[b].group
            || self.up.contains_key(&key)
        {
            return false;
        }
        self.topology.insert(key);
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.up.insert(key, epoch);
        let now = self.instant();
        let (pa, pb) = (self.nodes[a].peer, self.nodes[b].peer);
        self.nodes[a].router.on_connected(now, pb, true, None);
        self.nodes[b].router.on_connected(now, pa, false, None);
        if self.nodes[a].runs_core() {
            self.nodes[a].core.handle_connected(now, pb);
        }
        if self.nodes[b].runs_core() {
            self.nodes[b].core.handle_connected(now, pa);
        }
        self.pump(a);
        self.pump(b);
        true
    }

    /// Takes links down: both routers and cores are told, then their requests fail.
    fn links_down(&mut self, links: &[(usize, usize)]) {
        let now = self.instant();
        let mut touched = BTreeSet::new();
        let mut gone = HashSet::new();
        for &(a, b) in links {
            if self.up.remove(&(a, b)).is_none() {
                continue;
            }
            gone.insert((a, b));
            for (x, y) in [(a, b), (b, a)] {
                let py = self.nodes[y].peer;
                if self.nodes[x].alive {
                    self.nodes[x].router.on_disconnected(now, &py);
                    touched.insert(x);
                }
                if self.nodes[x].runs_core() {
                    self.nodes[x].core.handle_disconnected(now, py);
                }
            }
        }
        let failed: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| gone.contains(&link(p.from, p.to)))
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.fail_request(id);
        }
        for i in touched {
            self.pump(i);
        }
    }

    // ----- running -----

    /// Processes the next event; false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, _, event))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        match event {
            Event::RouterTimer { node } => {
                if self.nodes[node].router_timer == Some(at) {
                    self.nodes[node].router_timer = None;
                }
                if !self.nodes[node].alive {
                    return true;
                }
                let now = self.instant();
                if now >= self.nodes[node].router.next_timeout() {
                    self.nodes[node].router.on_timeout(now, &mut self.rng);
                }
                self.pump(node);
            }
            Event::CoreTimer { node } => {
                if self.nodes[node].core_timer == Some(at) {
                    self.nodes[node].core_timer = None;
                }
                if !self.nodes[node].runs_core() {
                    return true;
                }
                let now = self.instant();
                if self.nodes[node]
                    .core
                    .poll_timeout()
                    .is_some_and(|t| now >= t)
                {
                    self.nodes[node].core.handle_timeout(now, &mut self.rng);
                }
                self.pump(node);
            }
            Event::Gossip {
                to,
                from,
                epoch,
                bytes,
            } => {
                if !self.arrives(to, from, epoch) {
                    return true;
                }
                match Rpc::decode(&bytes, self.nodes[to].router.limits()) {
                    Ok(rpc) => {
                        self.stats.gossip_delivered += 1;
                        let now = self.instant();
                        let from = self.nodes[from].peer;
                        self.nodes[to].router.handle_rpc(now, from, rpc);
                        self.pump(to);
                    }
                    Err(_) => self.stats.undecodable += 1,
                }
            }
            Event::Request {
                to,
                from,
                epoch,
                id,
                bytes,
            } => {
                if self.arrives(to, from, epoch) {
                    self.answer(to, from, epoch, id, &bytes);
                }
            }
            Event::Response {
                to,
                from,
                epoch,
                id,
                bytes,
            } => {
                if self.arrives(to, from, epoch) {
                    self.take_answer(to, from, id, &bytes);
                }
            }
            Event::RequestTimeout { id } => {
                if self.pending.contains_key(&id) {
                    self.fail_request(id);
                }
            }
        }
        true
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((at, _, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            self.step();
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Whether a message from `from` over the connection `epoch` reaches `to`.
    fn arrives(&mut self, to: usize, from: usize, epoch: u64) -> bool {
        if !self.nodes[to].alive || self.up.get(&link(to, from)) != Some(&epoch) {
            self.stats.to_dead += 1;
            return false;
        }
        true
    }

    fn push(&mut self, at: Duration, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, e)));
    }

    /// When a message sent now from `from` arrives at `to`; `None` if it is lost.
    fn transit(&mut self, from: usize, to: usize) -> Option<Duration> {
        if self.config.loss > 0.0 && self.rng.random::<f64>() < self.config.loss {
            self.stats.lost += 1;
            return None;
        }
        let latency = link_latency(
            self.config.seed,
            (self.config.min_latency, self.config.max_latency),
            from,
            to,
            &mut self.rng,
        );
        let mut at = self.now + latency;
        // FIFO per direction, like a stream.
        let last = self
            .last_arrival
            .entry((from, to))
            .or_insert(Duration::ZERO);
        if at < *last {
            at = *last;
        }
        *last = at;
        Some(at)
    }

    // ----- one node -----

    /// Carries out everything node `i`'s router and core asked for, until both are quiet;
    /// then sends what the router queued and sets the node's timers.
    fn pump(&mut self, i: usize) {
        if !self.nodes[i].alive {
            return;
        }
        let mut dials = Vec::new();
        loop {
            let mut busy = false;
            while let Some(a) = self.nodes[i].router.poll_action() {
                busy = true;
                match a {
                    Action::Event(GossipEvent::Message {
                        propagation_source,
                        message,
                        ..
                    }) => self.on_message(i, propagation_source, message),
                    Action::Event(_) => {}
                    Action::Dial { peer, .. } => dials.push(peer),
                }
            }
            while let Some(e) = self.nodes[i].core.poll_effect() {
                busy = true;
                self.carry(i, e);
            }
            if !busy {
                break;
            }
        }
        self.flush(i);
        for peer in dials {
            if let Some(&j) = self.index.get(&peer) {
                self.connect(i, j);
            }
        }
        self.schedule(i);
    }

    /// Sends what node `i`'s router queued (a withholding node's without messages).
    fn flush(&mut self, i: usize) {
        for peer in self.nodes[i].router.take_ready() {
            let Some(&to) = self.index.get(&peer) else {
                continue;
            };
            let Some(&epoch) = self.up.get(&link(i, to)) else {
                continue;
            };
            while let Some(out) = self.nodes[i].router.next_outbound(&peer) {
                let bytes = if self.nodes[i].role == Role::Withholding {
                    match self.strip_messages(i, out.bytes) {
                        Some(b) => b,
                        None => continue,
                    }
                } else {
                    out.bytes
                };
                self.stats.gossip_sent += 1;
                self.stats.gossip_bytes += bytes.len() as u64;
                if let Some(at) = self.transit(i, to) {
                    self.push(
                        at,
                        Event::Gossip {
                            to,
                            from: i,
                            epoch,
                            bytes,
                        },
                    );
                }
            }
        }
    }

    /// A withholding node's RPC without its messages; `None` if nothing is left.
    fn strip_messages(&mut self, i: usize, bytes: Bytes) -> Option<Bytes> {
        let Ok(mut rpc) = Rpc::decode(&bytes, self.nodes[i].router.limits()) else {
            return Some(bytes);
        };
        if rpc.publish.is_empty() {
            return Some(bytes);
        }
        self.stats.withheld += rpc.publish.len() as u64;
        rpc.publish.clear();
        if rpc.subscriptions.is_empty() && rpc.control.is_empty() && rpc.record.is_none() {
            return None;
        }
        Some(rpc.encode())
    }

    fn schedule(&mut self, i: usize) {
        let now = self.now;
        let r = self.nodes[i]
            .router
            .next_timeout()
            .saturating_duration_since(self.base)
            .max(now);
        if self.nodes[i].router_timer.is_none_or(|t| r < t) {
            self.nodes[i].router_timer = Some(r);
            self.push(r, Event::RouterTimer { node: i });
        }
        if !self.nodes[i].runs_core() {
            return;
        }
        if let Some(t) = self.nodes[i].core.poll_timeout() {
            let c = t.saturating_duration_since(self.base).max(now);
            if self.nodes[i].core_timer.is_none_or(|t| c < t) {
                self.nodes[i].core_timer = Some(c);
                self.push(c, Event::CoreTimer { node: i });
            }
        }
    }

    fn publish_on(&mut self, i: usize, topic: Topic, data: Bytes) -> bool {
        let now = self.instant();
        match self.nodes[i]
            .router
            .publish(now, topic, data, &mut self.rng)
        {
            Ok(_) => true,
            Err(_) => {
                self.stats.publish_failed += 1;
                false
            }
        }
    }

    /// A gossip message node `i`'s router delivered.
    fn on_message(&mut self, i: usize, source: PeerId, message: GossipMessage) {
        let now = self.instant();
        let wall = self.wall();
        if message.topic == self.packages {
            let Ok(a) = Announcement::decode(&message.data) else {
                self.stats.undecodable += 1;
                return;
            };
            match self.nodes[i].role {
                Role::Attacker => self.react(i, &a.record),
                _ => {
                    let _ = self.nodes[i]
                        .core
                        .handle_gossip(now, wall, source, a.record);
                }
            }
        } else if message.topic == self.names {
            let Ok(s) = NameStatement::decode(&message.data) else {
                self.stats.undecodable += 1;
                return;
            };
            if self.nodes[i].runs_core() {
                let _ = self.nodes[i].core.handle_statement(now, wall, s);
            }
        }
    }

    /// An attacker saw `record`: if it is an honest claim of a name it has not raced yet,
    /// it claims the name with its keys, back-dated.
    fn react(&mut self, i: usize, record: &SignedPackage) {
        if self.attacker_keys.contains(&record.publisher) {
            return;
        }
        let name = record.package.name.clone();
        let claims: Vec<SignedPackage> = {
            let Some(att) = self.nodes[i].attacker.as_mut() else {
                return;
            };
            if att.config.react_keys == 0 || !att.reacted.insert(name.clone()) {
                return;
            }
            // Keys in turn, name after name, so that every key gets used.
            let k = att.config.react_keys.min(att.keys.len());
            let start = (att.reacted.len() - 1) * k;
            let back = att.config.back_date;
            let keys: Vec<Keypair> = (start..start + k)
                .filter_map(|j| att.keys.get(j % att.keys.len()).cloned())
                .collect();
            keys.iter()
                .map(|key| self.forge(key, &name, &record.package.version, back))
                .collect()
        };
        for c in claims {
            self.note_claim(&c);
            self.publish_on(
                i,
                self.packages.clone(),
                Announcement { record: c }.encode(),
            );
        }
    }

    /// What attacker `i` answers: its coalition's claim of every name polled, empty
    /// otherwise.
    fn lie(&mut self, i: usize, req: &SyncRequest) -> SyncResponse {
        let SyncRequest::Owners(names) = req else {
            return empty_answer(req);
        };
        let Some((key, back)) = self.nodes[i].attacker.as_ref().and_then(|a| {
            let key = a.keys.first()?.clone();
            a.config.lie_in_polls.then_some((key, a.config.back_date))
        }) else {
            return empty_answer(req);
        };
        let mut answers = Vec::new();
        for (name, theirs) in names.iter().take(MAX_POLL_NAMES) {
            let claim = match self.coalition.get(name) {
                Some(c) => c.clone(),
                None => {
                    let c = self.forge(&key, name, "1.0.0", back);
                    self.note_claim(&c);
                    c
                }
            };
            self.stats.lies += 1;
            answers.push(OwnerAnswer {
                name: name.clone(),
                owner: Some(claim.publisher),
                settled: true,
                claim: (*theirs != Some(claim.publisher)).then(|| claim.encode()),
            });
        }
        SyncResponse::Owners(answers)
    }

    /// Carries out one effect of node `i`'s core.
    fn carry(&mut self, i: usize, e: Effect) {
        let now = self.instant();
        match e {
            Effect::Persist { batch, ticket } => {
                self.write(i, &batch);
                if let Some(t) = ticket {
                    self.nodes[i].core.handle_persisted(now, t, Ok(()));
                }
            }
            Effect::Announce(record) => {
                if self.nodes[i].role == Role::Withholding {
                    self.stats.withheld += 1;
                } else {
                    let data = Announcement {
                        record: (*record).clone(),
                    }
                    .encode();
                    self.publish_on(i, self.packages.clone(), data);
                }
            }
            Effect::AnnounceStatement(s) => {
                if self.nodes[i].role == Role::Withholding {
                    self.stats.withheld += 1;
                } else {
                    self.publish_on(i, self.names.clone(), Bytes::from(s.encode()));
                }
            }
            Effect::PutRecord { .. } => self.stats.put_records += 1,
            Effect::Replicate(_) => self.stats.replicates += 1,
            Effect::Dropped(list) => self.stats.dropped_records += list.len() as u64,
            Effect::Update(u) => {
                let publisher = self.nodes[i]
                    .core
                    .record(&u.package_id)
                    .map(|r| r.publisher);
                let n = &mut self.nodes[i];
                if let Some(p) = publisher {
                    n.visible
                        .entry((u.package_id.clone(), p))
                        .or_insert(self.now);
                }
                n.updates.push((self.now, u));
            }
            Effect::Request { peer, request } => self.send_request(i, peer, request),
            Effect::Done { .. } => {}
        }
    }

    /// Applies a store batch to node `i`'s disk, and checks that no settled claim is
    /// replaced.
    fn write(&mut self, i: usize, batch: &Batch) {
        let n = &mut self.nodes[i];
        for w in batch.registry_writes() {
            match w {
                RegistryWrite::PutRecord(id, bytes) => {
                    n.disk.records.insert(id.to_string(), bytes.to_vec());
                }
                RegistryWrite::RemoveRecord(id) => {
                    n.disk.records.remove(id);
                }
                RegistryWrite::PutOwner(name, entry) | RegistryWrite::ClaimOwner(name, entry) => {
                    if let Ok(stored) = postcard::from_bytes::<StoredName>(&entry.claim) {
                        if stored.settled {
                            if let Ok(claim) = SignedPackage::decode(&stored.claim) {
                                let (before, _) = *n
                                    .settled
                                    .entry(name.to_string())
                                    .or_insert((claim.publisher, self.now));
                                if before != claim.publisher {
                                    self.settled_replaced += 1;
                                }
                            }
                        }
                    }
                    n.disk.owners.insert(name.to_string(), entry.clone());
                }
                RegistryWrite::RemoveOwner(name) => {
                    n.disk.owners.remove(name);
                }
            }
        }
    }

    // ----- requests -----

    fn send_request(&mut self, from: usize, peer: PeerId, request: SyncRequest) {
        let id = self.next_request;
        self.next_request += 1;
        self.stats.requests += 1;
        let to = self.index.get(&peer).copied().unwrap_or(usize::MAX);
        let bytes = postcard::to_stdvec(&request).unwrap_or_default();
        self.pending
            .insert(id, PendingRequest { from, to, request });
        let timeout = self.now + self.config.rpc_timeout;
        self.push(timeout, Event::RequestTimeout { id });
        if to == usize::MAX {
            return;
        }
        let Some(&epoch) = self.up.get(&link(from, to)) else {
            return;
        };
        self.stats.rpc_bytes += bytes.len() as u64;
        if let Some(at) = self.transit(from, to) {
            self.push(
                at,
                Event::Request {
                    to,
                    from,
                    epoch,
                    id,
                    bytes,
                },
            );
        }
    }

    /// Node `to` answers request `id` from `from`.
    fn answer(&mut self, to: usize, from: usize, epoch: u64, id: u64, bytes: &[u8]) {
        let max = SyncProtocol::limits().max_request;
        let Ok(req) = crate::wire::decode_bounded::<SyncRequest>(bytes, max, "sync request") else {
            self.stats.undecodable += 1;
            return;
        };
        let answer = match self.nodes[to].role {
            Role::Honest => {
                let (now, asker) = (self.instant(), self.nodes[from].peer);
                let a = self.nodes[to].core.handle_request(now, asker, req);
                self.pump(to);
                a
            }
            Role::Withholding => empty_answer(&req),
            Role::Attacker => self.lie(to, &req),
        };
        let bytes = postcard::to_stdvec(&answer).unwrap_or_default();
        self.stats.rpc_bytes += bytes.len() as u64;
        if let Some(at) = self.transit(to, from) {
            self.push(
                at,
                Event::Response {
                    to: from,
                    from: to,
                    epoch,
                    id,
                    bytes,
                },
            );
        }
    }

    /// The answer to request `id` reached its asker `to`.
    fn take_answer(&mut self, to: usize, from: usize, id: u64, bytes: &[u8]) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let max = SyncProtocol::limits().max_response;
        let peer = self.nodes[from].peer;
        let (now, wall) = (self.instant(), self.wall());
        match crate::wire::decode_bounded::<SyncResponse>(bytes, max, "sync response") {
            Ok(answer) => {
                self.stats.answered += 1;
                if self.nodes[to].runs_core() {
                    self.nodes[to].core.handle_response(now, wall, peer, answer);
                }
            }
            Err(_) => {
                self.stats.undecodable += 1;
                self.stats.request_failures += 1;
                if self.nodes[to].runs_core() {
                    self.nodes[to]
                        .core
                        .handle_request_failed(now, peer, &p.request);
                }
            }
        }
        self.pump(to);
    }

    fn fail_request(&mut self, id: u64) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        self.stats.request_failures += 1;
        if !self.nodes[p.from].runs_core() {
            return;
        }
        let peer = match self.nodes.get(p.to) {
            Some(n) => n.peer,
            None => return,
        };
        let now = self.instant();
        self.nodes[p.from]
            .core
            .handle_request_failed(now, peer, &p.request);
        self.pump(p.from);
    }

    // ----- judging -----

    /// Checks every live core's invariants; the first broken one, with its node.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.runs_core() {
                n.core
                    .check_invariants()
                    .map_err(|e| format!("node {i}: {e}"))?;
            }
        }
        Ok(())
    }

    /// Per name claimed through the simulator: how many live honest nodes settled each
    /// owner.
    pub fn settled_owners(&self, name: &str) -> BTreeMap<PeerId, usize> {
        let mut out = BTreeMap::new();
        for n in self.honest_live() {
            if let Some((owner, true, _)) = n.core.owner_of(name) {
                *out.entry(owner).or_insert(0) += 1;
            }
        }
        out
    }

    fn honest_live(&self) -> impl Iterator<Item = &Node> + '_ {
        self.nodes
            .iter()
            .filter(|n| n.alive && n.role == Role::Honest)
    }

    /// The figures of the run so far (see [`RegistryMetrics`]).
    pub fn metrics(&self) -> RegistryMetrics {
        let honest: Vec<(usize, &Node)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.alive && n.role == Role::Honest)
            .collect();
        let mut m = RegistryMetrics {
            nodes: self.nodes.len(),
            live_honest: honest.len(),
            settled_replaced: self.settled_replaced,
            ..RegistryMetrics::default()
        };
        let names: BTreeSet<&String> = self
            .honest_claimed
            .keys()
            .chain(self.attacker_claimed.keys())
            .collect();
        m.names = names.len();
        for name in names {
            let mut settled = BTreeSet::new();
            let mut claimants = BTreeSet::new();
            for (_, n) in &honest {
                if let Some((owner, is_settled, _)) = n.core.owner_of(name) {
                    claimants.insert(owner);
                    if is_settled {
                        settled.insert(owner);
                    } else {
                        m.unsettled += 1;
                    }
                }
            }
            m.multi_owner_names += usize::from(settled.len() > 1);
            m.split_names += usize::from(claimants.len() > 1);
            let honest_first = self
                .honest_claimed
                .get(name)
                .is_some_and(|h| self.attacker_claimed.get(name).is_none_or(|a| h < a));
            if honest_first && settled.iter().any(|o| !self.honest_keys.contains(o)) {
                m.hijacks += 1;
            }
        }
        let mut lat = Vec::new();
        for p in &self.publishes {
            for (j, n) in &honest {
                if *j == p.node || n.restarted_at.is_some_and(|r| r > p.at) {
                    continue;
                }
                match n.visible.get(&(p.id.clone(), p.publisher)) {
                    Some(t)
                        if n.core
                            .record(&p.id)
                            .is_some_and(|r| r.publisher == p.publisher) =>
                    {
                        m.visible_pairs += 1;
                        lat.push(t.saturating_sub(p.at));
                    }
                    _ => m.missing_pairs += 1,
                }
            }
        }
        lat.sort();
        m.latency_p50 = percentile(&lat, 50);
        m.latency_p99 = percentile(&lat, 99);
        m.latency_max = lat.last().copied();
        let mut total = 0u64;
        for (_, n) in &honest {
            let s = n.core.stats();
            let bytes = s.sync_bytes_in + s.sync_bytes_out;
            total += bytes;
            m.sync_bytes_max = m.sync_bytes_max.max(bytes);
            m.polls += s.polls;
            m.switched += s.switched;
            m.settled += s.settled;
            m.rivals += s.rivals;
            m.sync_rounds += s.sync_rounds;
        }
        m.sync_bytes_mean = total / honest.len().max(1) as u64;
        m
    }
}
