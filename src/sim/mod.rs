//! Deterministic discrete-event simulators over the sans-IO protocol cores: [`Simulator`]
//! for the DHT, [`GossipSim`] for the gossip mesh and [`RegistrySim`] for the registry (its
//! cores over the gossip mesh and simulated request/response links).
//!
//! The DHT simulator drives many [`Kademlia`] cores, the same code the tokio driver runs, through a simulated
//! network: per-link latency drawn from a seeded distribution, independent packet loss, node
//! crash and join, and virtual time. Every message is encoded and decoded with the real
//! codec. One seed gives one run: the same seed always produces the same events in the same
//! order. Researchers change [`SimConfig`] (and the `KademliaConfig` inside it) and compare.

mod gossip;
mod registry;

pub use gossip::{GossipSim, GossipSimConfig, GossipSimStats};
pub use registry::{
    AttackerConfig, RegistryMetrics, RegistrySim, RegistrySimConfig, RegistrySimStats, Role,
};

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::address::Multiaddr;
use crate::identity::{Keypair, PeerId};
use crate::kademlia::{
    Action, KadEvent, Kademlia, KademliaConfig, Key, Message, QueryId, QueryOutcome, QueryStats,
};

/// Seconds from the Unix epoch to the wall-clock time at the start of every simulation
/// (2026-01-01T00:00:00Z): runs are reproducible, and record validators see dates that
/// move with virtual time.
pub const SIM_EPOCH_SECS: u64 = 1_767_225_600;

/// [`SIM_EPOCH_SECS`] as a `SystemTime`.
pub fn sim_epoch() -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_secs(SIM_EPOCH_SECS)
}

/// Simulation parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Seed of every random choice (keys, latencies, loss, workload).
    pub seed: u64,
    /// Smallest one-way link latency.
    #[serde(with = "crate::node::duration_secs")]
    pub min_latency: Duration,
    /// Largest one-way link latency. Each link gets a fixed latency drawn uniformly between
    /// the two; each message adds up to 10 % jitter.
    #[serde(with = "crate::node::duration_secs")]
    pub max_latency: Duration,
    /// Probability that a message is lost.
    pub loss: f64,
    /// The protocol configuration every node runs.
    pub kademlia: KademliaConfig,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            min_latency: Duration::from_millis(5),
            max_latency: Duration::from_millis(80),
            loss: 0.0,
            kademlia: KademliaConfig {
                // Simulated nodes live at /memory/N addresses: no IPs to limit.
                bucket_ip_limit: None,
                table_ip_limit: None,
                ..KademliaConfig::default()
            },
        }
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    /// Messages handed to the network.
    pub sent: u64,
    /// Messages delivered to a live node.
    pub delivered: u64,
    /// Messages lost to simulated loss.
    pub lost: u64,
    /// Messages sent to crashed nodes.
    pub to_dead: u64,
    /// Messages that failed to decode (always 0 unless the codec is broken).
    pub undecodable: u64,
}

struct SimNode {
    kad: Kademlia,
    peer: PeerId,
    alive: bool,
    timer: Option<Duration>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Deliver {
        to: usize,
        from: usize,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
    },
}

/// The simulated network.
pub struct Simulator {
    config: SimConfig,
    rng: StdRng,
    base: Instant,
    now: Duration,
    seq: u64,
    nodes: Vec<SimNode>,
    index: HashMap<PeerId, usize>,
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    finished: HashMap<(usize, QueryId), (QueryOutcome, QueryStats)>,
    stats: SimStats,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

/// One message's latency on the link between nodes `a` and `b`: a per-link value fixed by
/// the seed, uniform in `range`, plus up to 10 % jitter from `rng`.
pub(crate) fn link_latency(
    seed: u64,
    range: (Duration, Duration),
    a: usize,
    b: usize,
    rng: &mut StdRng,
) -> Duration {
    let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
    let r = mix(seed ^ mix(lo << 32 | hi));
    let span = range.1.saturating_sub(range.0);
    let base = range.0 + span.mul_f64((r % 1_000_000) as f64 / 1_000_000.0);
    base + base.mul_f64(rng.random::<f64>() * 0.1)
}

/// A stable 64-bit mix (splitmix64) for per-link values derived from the seed.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Simulator {
    /// A network of `n` nodes that know nobody yet.
    pub fn new(n: usize, config: SimConfig) -> Self {
        let mut sim = Self {
            rng: StdRng::seed_from_u64(config.seed),
            base: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            nodes: Vec::new(),
            index: HashMap::new(),
            queue: BinaryHeap::new(),
            finished: HashMap::new(),
            stats: SimStats::default(),
            config,
        };
        for _ in 0..n {
            sim.add_node();
        }
        sim
    }

    /// Adds a node (not yet joined); returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let kp = Keypair::generate_with(&mut self.rng);
        let peer = kp.peer_id();
        let now = self.instant();
        let mut kad = Kademlia::new(peer, self.config.kademlia.clone(), now);
        // Simulated wall-clock time: a fixed date plus virtual time, the same every run.
        kad.set_wall_clock(self.base, sim_epoch());
        kad.set_listen_addrs(vec![Self::addr(i)]);
        self.nodes.push(SimNode {
            kad,
            peer,
            alive: true,
            timer: None,
        });
        self.index.insert(peer, i);
        self.schedule_timer(i);
        i
    }

    fn addr(i: usize) -> Multiaddr {
        Multiaddr::memory(i as u64 + 1)
    }

    fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Virtual time elapsed.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Number of nodes (live or crashed).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True with no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s identity.
    pub fn peer_id(&self, i: usize) -> PeerId {
        self.nodes[i].peer
    }

    /// Node `i`'s protocol core (read-only).
    pub fn node(&self, i: usize) -> &Kademlia {
        &self.nodes[i].kad
    }

    /// Whether node `i` is running.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// Network counters.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Changes the loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss.clamp(0.0, 1.0);
    }

    /// The simulation's RNG, for drawing workloads reproducibly.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Crashes node `i`: it stops processing anything, silently.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
    }

    /// Node `i` learns `j` as a bootstrap peer and runs a bootstrap.
    pub fn join(&mut self, i: usize, via: usize) -> QueryId {
        let now = self.instant();
        let (peer, addr) = (self.nodes[via].peer, Self::addr(via));
        self.nodes[i].kad.add_bootstrap_peer(now, peer, addr);
        self.with_node(i, |kad, now, rng| kad.bootstrap(now, rng))
    }

    /// Runs `f` on node `i`'s core at the current time, then routes what it produced.
    pub fn with_node<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Kademlia, Instant, &mut dyn RngCore) -> T,
    ) -> T {
        let now = self.instant();
        let out = f(&mut self.nodes[i].kad, now, &mut self.rng);
        self.drain(i);
        out
    }

    fn push(&mut self, at: Duration, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, e)));
    }

    fn schedule_timer(&mut self, i: usize) {
        let next = self.nodes[i].kad.next_timeout();
        let at = next.saturating_duration_since(self.base).max(self.now);
        if self.nodes[i].timer.is_none_or(|t| at < t) {
            self.nodes[i].timer = Some(at);
            self.push(at, Event::Timer { node: i });
        }
    }

    fn link_latency(&mut self, a: usize, b: usize) -> Duration {
        link_latency(
            self.config.seed,
            (self.config.min_latency, self.config.max_latency),
            a,
            b,
            &mut self.rng,
        )
    }

    fn drain(&mut self, i: usize) {
        while let Some(action) = self.nodes[i].kad.poll_action() {
            match action {
                Action::Send { peer, message, .. } => {
                    self.stats.sent += 1;
                    let Some(&to) = self.index.get(&peer) else {
                        continue;
                    };
                    if self.config.loss > 0.0 && self.rng.random::<f64>() < self.config.loss {
                        self.stats.lost += 1;
                        continue;
                    }
                    let at = self.now + self.link_latency(i, to);
                    let bytes = message.encode().to_vec();
                    self.push(at, Event::Deliver { to, from: i, bytes });
                }
                Action::Event(KadEvent::Finished {
                    query,
                    outcome,
                    stats,
                }) => {
                    self.finished.insert((i, query), (outcome, stats));
                }
                // Simulated nodes never restart; persistence is off for them.
                Action::Event(_) | Action::Persist(_) => {}
            }
        }
        self.schedule_timer(i);
    }

    /// Processes the next event; false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, _, event))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.instant();
        match event {
            Event::Timer { node } => {
                if self.nodes[node].timer == Some(at) {
                    self.nodes[node].timer = None;
                }
                if !self.nodes[node].alive {
                    // A crashed node does nothing, timers included.
                } else if now >= self.nodes[node].kad.next_timeout() {
                    let n = &mut self.nodes[node];
                    n.kad.handle_timeout(now, &mut self.rng);
                    self.drain(node);
                } else {
                    self.schedule_timer(node);
                }
            }
            Event::Deliver { to, from, bytes } => {
                if !self.nodes[to].alive {
                    self.stats.to_dead += 1;
                    return true;
                }
                let limits = *self.nodes[to].kad.message_limits();
                match Message::decode(&bytes, &limits) {
                    Ok(msg) => {
                        self.stats.delivered += 1;
                        let from = self.nodes[from].peer;
                        self.nodes[to].kad.handle_message(now, from, msg);
                        self.drain(to);
                    }
                    Err(_) => self.stats.undecodable += 1,
                }
            }
        }
        true
    }

    /// Runs until virtual time `until` (or until nothing is left to do).
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

    /// Runs until query `q` of node `i` finishes (or `limit` of virtual time passes) and
    /// returns its outcome.
    pub fn wait_query(
        &mut self,
        i: usize,
        q: QueryId,
        limit: Duration,
    ) -> Option<(QueryOutcome, QueryStats)> {
        let until = self.now + limit;
        loop {
            if let Some(r) = self.finished.remove(&(i, q)) {
                return Some(r);
            }
            match self.queue.peek() {
                Some(Reverse((at, _, _))) if *at <= until => {
                    self.step();
                }
                _ => return None,
            }
        }
    }

    /// Starts a query on node `i` with `start` and runs it to completion.
    pub fn query(
        &mut self,
        i: usize,
        start: impl FnOnce(&mut Kademlia, Instant, &mut dyn RngCore) -> QueryId,
    ) -> Option<(QueryOutcome, QueryStats)> {
        let q = self.with_node(i, start);
        let limit = self.config.kademlia.query_timeout * 2;
        self.wait_query(i, q, limit)
    }

    /// The `k` live nodes closest to `key`, by brute force over every live node.
    pub fn true_closest(&self, key: &Key, k: usize) -> Vec<PeerId> {
        let mut all: BTreeMap<_, PeerId> = self
            .nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| (key.distance(&Key::from_peer(&n.peer)), n.peer))
            .collect();
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            match all.pop_first() {
                Some((_, p)) => out.push(p),
                None => break,
            }
        }
        out
    }

    /// A random application key drawn from the simulation RNG.
    pub fn random_key(&mut self) -> Bytes {
        let mut b = [0u8; 16];
        self.rng.fill_bytes(&mut b);
        Bytes::copy_from_slice(&b)
    }
}
