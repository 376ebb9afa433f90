//! The gossip mesh under the deterministic simulator: many [`Gossipsub`] routers (the code
//! the tokio driver runs) over a random connection graph with seeded per-link latency,
//! independent loss, crashes and virtual time. Every RPC goes through the real codec; links
//! are FIFO, like the streams they stand for. Same seed, same run.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::link_latency;
use crate::address::Multiaddr;
use crate::gossip::{
    Action, GossipEvent, Gossipsub, GossipsubConfig, MessageId, PublishError, Rpc, Topic,
};
use crate::identity::{Keypair, PeerId};

/// Gossip simulation parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipSimConfig {
    /// Seed of every random choice (keys, graph, latencies, loss, heartbeat phases).
    pub seed: u64,
    /// Smallest one-way link latency.
    #[serde(with = "crate::node::duration_secs")]
    pub min_latency: Duration,
    /// Largest one-way link latency (fixed per link, drawn uniformly; up to 10 % jitter per
    /// RPC, never reordering a link).
    #[serde(with = "crate::node::duration_secs")]
    pub max_latency: Duration,
    /// Probability that an RPC is lost.
    pub loss: f64,
    /// Connections each node dials to random others (so about twice this many per node).
    pub dials_per_node: usize,
    /// The router configuration every node runs.
    pub gossipsub: GossipsubConfig,
}

impl Default for GossipSimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            min_latency: Duration::from_millis(5),
            max_latency: Duration::from_millis(80),
            loss: 0.0,
            dials_per_node: 10,
            gossipsub: GossipsubConfig::default(),
        }
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipSimStats {
    /// RPCs handed to the network.
    pub sent: u64,
    /// RPCs delivered to a live node.
    pub delivered: u64,
    /// RPCs lost to simulated loss.
    pub lost: u64,
    /// RPCs sent to crashed nodes.
    pub to_dead: u64,
    /// RPCs that failed to decode (0 unless the codec is broken).
    pub undecodable: u64,
    /// Encoded bytes handed to the network.
    pub bytes: u64,
}

struct Node {
    router: Gossipsub,
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
    Heartbeat {
        node: usize,
    },
}

/// The simulated gossip network.
pub struct GossipSim {
    config: GossipSimConfig,
    rng: StdRng,
    base: Instant,
    now: Duration,
    seq: u64,
    nodes: Vec<Node>,
    index: HashMap<PeerId, usize>,
    links: BTreeSet<(usize, usize)>,
    last_arrival: HashMap<(usize, usize), Duration>,
    queue: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    published: HashMap<MessageId, (usize, Duration)>,
    deliveries: HashMap<MessageId, Vec<(usize, Duration)>>,
    stats: GossipSimStats,
}

impl std::fmt::Debug for GossipSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipSim")
            .field("nodes", &self.nodes.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl GossipSim {
    /// `n` routers, each dialing `dials_per_node` random others.
    pub fn new(n: usize, config: GossipSimConfig) -> Result<Self, String> {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let base = Instant::now();
        let interval = config.gossipsub.heartbeat_interval;
        let mut nodes = Vec::with_capacity(n);
        let mut index = HashMap::new();
        for i in 0..n {
            let key = Keypair::generate_with(&mut rng);
            let peer = key.peer_id();
            // A random heartbeat phase per node, as real nodes start at different times.
            let phase = interval.mul_f64(rng.random::<f64>());
            let router = Gossipsub::new(
                key,
                vec![Multiaddr::memory(i as u64 + 1)],
                config.gossipsub.clone(),
                base + phase,
            )?;
            index.insert(peer, i);
            nodes.push(Node {
                router,
                peer,
                alive: true,
                timer: None,
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
            links: BTreeSet::new(),
            last_arrival: HashMap::new(),
            queue: BinaryHeap::new(),
            published: HashMap::new(),
            deliveries: HashMap::new(),
            stats: GossipSimStats::default(),
        };
        let dials = sim.config.dials_per_node.min(n.saturating_sub(1));
        for i in 0..n {
            let mut made = 0;
            let mut tries = 0;
            while made < dials && tries < dials * 20 {
                tries += 1;
                let j = sim.rng.random_range(0..n);
                if j != i && sim.connect(i, j) {
                    made += 1;
                }
            }
        }
        for i in 0..n {
            sim.flush(i);
        }
        Ok(sim)
    }

    /// The `Instant` the routers see as now (for score queries and the like).
    pub fn instant(&self) -> Instant {
        self.base + self.now
    }

    /// Virtual time elapsed.
    pub fn now(&self) -> Duration {
        self.now
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

    /// Node `i`'s router.
    pub fn router(&self, i: usize) -> &Gossipsub {
        &self.nodes[i].router
    }

    /// Whether node `i` is up.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// Counters.
    pub fn stats(&self) -> &GossipSimStats {
        &self.stats
    }

    /// Sets the RPC loss probability from now on.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// The simulation RNG (for workloads that must be reproducible too).
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// Connects `a` (dialer) and `b`; false if they already are, or either is down.
    pub fn connect(&mut self, a: usize, b: usize) -> bool {
        let key = (a.min(b), a.max(b));
        if a == b || !self.nodes[a].alive || !self.nodes[b].alive || !self.links.insert(key) {
            return false;
        }
        let now = self.instant();
        let (pa, pb) = (self.nodes[a].peer, self.nodes[b].peer);
        self.nodes[a].router.on_connected(now, pb, true, None);
        self.nodes[b].router.on_connected(now, pa, false, None);
        self.flush(a);
        self.flush(b);
        true
    }

    /// Node `i` stops: its links go down (its peers notice at once) and it does nothing more.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
        let now = self.instant();
        let peer = self.nodes[i].peer;
        let gone: Vec<(usize, usize)> = self
            .links
            .iter()
            .copied()
            .filter(|(a, b)| *a == i || *b == i)
            .collect();
        for (a, b) in gone {
            self.links.remove(&(a, b));
            let other = if a == i { b } else { a };
            self.nodes[other].router.on_disconnected(now, &peer);
            self.flush(other);
        }
    }

    /// Runs `f` on node `i`'s router at the current time, then sends what it queued.
    pub fn with_router<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Gossipsub, Instant, &mut StdRng) -> T,
    ) -> T {
        let now = self.instant();
        let out = f(&mut self.nodes[i].router, now, &mut self.rng);
        self.flush(i);
        out
    }

    /// Node `i` subscribes to `topic`.
    pub fn subscribe(&mut self, i: usize, topic: &Topic) -> bool {
        let t = topic.clone();
        self.with_router(i, |r, now, rng| r.subscribe(now, t, rng))
    }

    /// Node `i` publishes; the message is tracked for [`GossipSim::delivery_count`].
    pub fn publish(
        &mut self,
        i: usize,
        topic: &Topic,
        data: Bytes,
    ) -> Result<MessageId, PublishError> {
        let t = topic.clone();
        let id = self.with_router(i, |r, now, rng| r.publish(now, t, data, rng))?;
        self.published.insert(id.clone(), (i, self.now));
        Ok(id)
    }

    /// Sends `rpc` from node `from` to node `to` as if `from` had queued it (for
    /// misbehaving-peer scenarios); false if they are not connected.
    pub fn inject(&mut self, from: usize, to: usize, rpc: &Rpc) -> bool {
        if !self.links.contains(&(from.min(to), from.max(to))) {
            return false;
        }
        self.send_bytes(from, to, rpc.encode());
        true
    }

    /// Nodes that delivered message `id` to their application.
    pub fn delivery_count(&self, id: &MessageId) -> usize {
        self.deliveries.get(id).map_or(0, |d| d.len())
    }

    /// Delivery latencies of message `id` (from its publish), one per receiving node.
    pub fn delivery_latencies(&self, id: &MessageId) -> Vec<Duration> {
        let Some((_, at)) = self.published.get(id) else {
            return Vec::new();
        };
        self.deliveries
            .get(id)
            .map(|d| d.iter().map(|(_, t)| t.saturating_sub(*at)).collect())
            .unwrap_or_default()
    }

    fn send_bytes(&mut self, from: usize, to: usize, bytes: Bytes) {
        self.stats.sent += 1;
        self.stats.bytes += bytes.len() as u64;
        if self.config.loss > 0.0 && self.rng.random::<f64>() < self.config.loss {
            self.stats.lost += 1;
            return;
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
        self.push(
            at,
            Event::Deliver {
                to,
                from,
                bytes: bytes.to_vec(),
            },
        );
    }

    fn push(&mut self, at: Duration, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, e)));
    }

    /// Carries out node `i`'s actions and sends everything it queued.
    fn flush(&mut self, i: usize) {
        let mut dials = Vec::new();
        while let Some(a) = self.nodes[i].router.poll_action() {
            match a {
                Action::Event(GossipEvent::Message { id, .. }) => {
                    self.deliveries.entry(id).or_default().push((i, self.now));
                }
                Action::Event(_) => {}
                Action::Dial { peer, .. } => dials.push(peer),
            }
        }
        for peer in self.nodes[i].router.take_ready() {
            let Some(&to) = self.index.get(&peer) else {
                continue;
            };
            while let Some(out) = self.nodes[i].router.next_outbound(&peer) {
                self.send_bytes(i, to, out.bytes);
            }
        }
        for peer in dials {
            if let Some(&j) = self.index.get(&peer) {
                self.connect(i, j);
            }
        }
        self.schedule(i);
    }

    fn schedule(&mut self, i: usize) {
        let next = self.nodes[i].router.next_timeout();
        let at = next.saturating_duration_since(self.base).max(self.now);
        if self.nodes[i].timer.is_none_or(|t| at < t) {
            self.nodes[i].timer = Some(at);
            self.push(at, Event::Heartbeat { node: i });
        }
    }

    /// Processes the next event; false when nothing is left.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, _, event))) = self.queue.pop() else {
            return false;
        };
        self.now = self.now.max(at);
        let now = self.instant();
        match event {
            Event::Heartbeat { node } => {
                if self.nodes[node].timer == Some(at) {
                    self.nodes[node].timer = None;
                }
                if !self.nodes[node].alive {
                    return true;
                }
                if now >= self.nodes[node].router.next_timeout() {
                    let rng = &mut self.rng;
                    self.nodes[node].router.on_timeout(now, rng);
                }
                self.flush(node);
            }
            Event::Deliver { to, from, bytes } => {
                if !self.nodes[to].alive {
                    self.stats.to_dead += 1;
                    return true;
                }
                if !self.links.contains(&(from.min(to), from.max(to))) {
                    // The link went down while this was in flight.
                    return true;
                }
                match Rpc::decode(&bytes, self.nodes[to].router.limits()) {
                    Ok(rpc) => {
                        self.stats.delivered += 1;
                        let from = self.nodes[from].peer;
                        self.nodes[to].router.handle_rpc(now, from, rpc);
                        self.flush(to);
                    }
                    Err(_) => self.stats.undecodable += 1,
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
}
