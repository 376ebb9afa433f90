//! `registry`: N real [`P2PRegistry`] nodes in this process, each with its own redb store in
//! a temporary data directory, all listening on 127.0.0.1 port 0 (or `/memory/0`), mDNS off.
//!
//! ```text
//! cargo bench --bench netbench -- registry --nodes 100 --packages 10000 --transport tcp|quic|memory
//!     [--timed 200] [--gets 200] [--rate 500] [--seed 1] [--data-root DIR]
//!     [--dht-max-records N] [--out FILE]
//! ```
//!
//! Setup: node 0 starts alone; every later node `i` is bootstrapped (`BootstrapNode`) through
//! node 0 and up to two random earlier nodes. Each node's `network.max_connections` comes from
//! the process's open-file budget (see [`max_connections`]). Setup ends when every node has a
//! connection and a few warm-up publishes (the first packages of the preload) have reached
//! every node's catalogue, one after another (`setup_s`).
//!
//! Packages: `--packages` publishes of metadata only (`Registry::publish`), generated from
//! `--seed` (names of syllables and common words, 6–15-word descriptions, 1–3 tags, 0–3
//! keywords, 10 categories; one name in five gets 3 versions, published after every first
//! version). Every version of a name is published by the same node (a name belongs to the
//! key that first published it), chosen at random.
//!
//! Measurements, in this order:
//!
//! 1. Preload: all but `--timed` packages, published one after another from their nodes at
//!    `--rate` per second at most, and never more than [`BACKLOG`] publishes ahead of the
//!    slowest node's catalogue. Then the bench waits until every node holds every preloaded
//!    package.
//! 2. Publish to searchable: the `--timed` remaining packages (spread evenly over the list),
//!    one at a time; each is timed from just before the `publish` call until the package's
//!    `PackageUpdate` arrives on every other full node's `events()` receiver (emitted once
//!    the record is in that node's catalogue, so searchable). The next timed publish starts
//!    only when the previous one is on every node (or after [`VISIBLE_DEADLINE`]). Per
//!    (publish, node) pair and per publish (the slowest node: "on all nodes").
//! 3. Cold get: a light node (`registry.catalogue = false`, no catalogue, no packages topic)
//!    joins; once its routing table holds peers it calls `get("name@version")` for `--gets`
//!    different random packages, so every get goes to the DHT. Each package puts 2 keys on 20
//!    peers; a node whose store is full (`dht.max_records`, default 32 768, or
//!    `--dht-max-records`) refuses records, and gets that find nothing are `miss_latency`.
//! 4. Local search on full node 1 through `Registry::search`: exact names, single keywords,
//!    misspelt names and category filters, [`SEARCH_WARMUP`] untimed then [`SEARCH_ITERS`]
//!    timed calls of each query.
//! 5. Late joiner: a new full node bootstrapped like the others; the time from its `start`
//!    until `stats().catalogue_size` reaches node 1's, and until `wait_synced` returns.
//!
//! Memory and CPU: the binary's counting allocator (`heap.rs`) gives the live heap once every
//! node is connected and once every node holds the preload; the difference over (nodes ×
//! preloaded versions) is `heap_bytes_per_version`. The process's CPU time over the preload
//! and over the timed publishes, per publish, is `cpu_per_publish_ms`.
//!
//! Every wait is on a condition with a deadline; nothing relies on a fixed sleep.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ggen_p2p::{
    BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Protocol, Query, Registry,
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::heap;
use super::packages::{self, CATEGORIES, Rng, TAGS, WORDS, transpose};
use super::percentile;

/// Publishes the preload may run ahead of the slowest node's catalogue.
const BACKLOG: usize = 500;
/// How long a timed publish may take to reach every node before it counts as missed there.
const VISIBLE_DEADLINE: Duration = Duration::from_secs(10);
/// Warm-up publishes that must reach every node before setup counts as done.
const WARMUP: usize = 3;
/// Untimed calls of each search query before the timed ones.
const SEARCH_WARMUP: usize = 5;
/// Timed calls of each search query.
const SEARCH_ITERS: usize = 50;
/// Peers the cold node's routing table must hold before its gets (or all other nodes).
const COLD_MIN_PEERS: usize = 10;

/// What the registry benchmark takes from the command line.
pub struct RegistryArgs {
    /// Full nodes in the network (the light node and the late joiner come on top).
    pub nodes: usize,
    /// Package versions published in all.
    pub packages: usize,
    /// `tcp`, `quic` or `memory`.
    pub transport: String,
    /// Timed publishes (taken from `packages`).
    pub timed: usize,
    /// Gets from the cold node.
    pub gets: usize,
    /// Most preload publishes per second.
    pub rate: f64,
    /// Seed of the package generator and of every random choice.
    pub seed: u64,
    /// Where the nodes' data directories go (default: the system's temp directory).
    pub data_root: Option<PathBuf>,
    /// The process's open-file limit.
    pub fd_limit: usize,
    /// `dht.max_records` of every node (None: the default).
    pub dht_max_records: Option<usize>,
}

/// `max_connections` for each of `hosted` registry nodes in this process.
///
/// Over TCP both ends of a connection between two nodes of this process are fds here, one
/// charged to each node's cap, so `hosted` nodes at cap `c` hold at most `hosted * c`
/// connection fds; each node also holds a listener, its redb file and a few descriptors of
/// its own (8 reserved), and 500 stay spare. There is no point in a cap above `hosted`
/// (everyone else plus one handshake in flight). QUIC uses one UDP socket per node and
/// memory none, so there the cap is just `hosted`.
pub fn max_connections(transport: &str, hosted: usize, fd_limit: usize) -> usize {
    let hosted = hosted.max(1);
    if transport == "tcp" {
        (fd_limit.saturating_sub(500 + 8 * hosted) / hosted).clamp(8, hosted)
    } else {
        hosted
    }
}

/// The listen address string of a transport.
fn listen_for(transport: &str) -> &'static str {
    match transport {
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
        "memory" => "/memory/0",
        _ => "/ip4/127.0.0.1/tcp/0",
    }
}

// ---------------------------------------------------------------------------------------
// Packages
// ---------------------------------------------------------------------------------------

const AUTHORS: &[&str] = &[
    "Ada Lovelace",
    "Grace Hopper",
    "Alan Turing",
    "Barbara Liskov",
    "Ken Thompson",
    "Frances Allen",
    "Dennis Ritchie",
    "Radia Perlman",
];

/// One package version to publish, and the node that publishes it.
#[derive(Clone)]
pub(crate) struct Entry {
    name: String,
    version: String,
    description: String,
    category: &'static str,
    tags: Vec<String>,
    keywords: Vec<String>,
    author: &'static str,
    downloads: u64,
    /// Index of the node that publishes it.
    pub(crate) publisher: usize,
}

impl Entry {
    fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The package, timestamped now.
    pub(crate) fn package(&self) -> Package {
        let mut p = Package::new(self.name.clone(), self.version.clone());
        p.description = self.description.clone();
        p.category = self.category.to_string();
        p.tags = self.tags.clone();
        p.metadata.keywords = self.keywords.clone();
        p.author = self.author.to_string();
        p.repository = Some(format!("https://git.example.org/{}", self.name));
        p.downloads = self.downloads;
        p
    }
}

/// `count` package versions from `seed`, publishers among `nodes`: every first version,
/// then the second and third versions of one name in five.
pub(crate) fn generate(seed: u64, count: usize, nodes: usize) -> Vec<Entry> {
    let mut rng = Rng::new(seed);
    let mut seen = HashSet::new();
    let mut firsts = Vec::new();
    let mut later: Vec<Vec<Entry>> = vec![Vec::new(), Vec::new()];
    while firsts.len() + later.iter().map(Vec::len).sum::<usize>() < count {
        let name = packages::name(&mut rng);
        if !seen.insert(name.clone()) {
            continue;
        }
        let description = packages::description(&mut rng);
        let first = Entry {
            name,
            version: "0.1.0".into(),
            description,
            category: rng.pick(CATEGORIES),
            tags: (0..1 + rng.below(3))
                .map(|_| rng.pick(TAGS).to_string())
                .collect(),
            keywords: (0..rng.below(4))
                .map(|_| rng.pick(WORDS).to_string())
                .collect(),
            author: rng.pick(AUTHORS),
            downloads: rng.next() % 10_000_000,
            publisher: rng.below(nodes),
        };
        if rng.below(5) == 0 {
            for (v, list) in later.iter_mut().enumerate() {
                list.push(Entry {
                    version: format!("0.{}.0", v + 2),
                    ..first.clone()
                });
            }
        }
        firsts.push(first);
    }
    firsts.extend(later.into_iter().flatten());
    firsts.truncate(count);
    firsts
}

// ---------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------

/// Arrival instants of the `PackageUpdate`s of the watched (timed) package ids, by node.
#[derive(Default)]
struct Tracker {
    watched: RwLock<HashSet<String>>,
    seen: Mutex<HashMap<String, Vec<(usize, Instant)>>>,
    lagged: AtomicU64,
}

impl Tracker {
    fn watch(&self, id: &str) {
        if let Ok(mut w) = self.watched.write() {
            w.insert(id.to_string());
        }
    }

    /// Nodes (other than `except`) that have admitted `id`, with when.
    fn arrivals(&self, id: &str, except: usize) -> Vec<(usize, Instant)> {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.get(id).cloned())
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, _)| *n != except)
            .collect()
    }
}

struct BenchNode {
    reg: Arc<P2PRegistry>,
    /// `PackageUpdate`s received (each is one admission into its catalogue).
    admitted: Arc<AtomicUsize>,
    events: JoinHandle<()>,
}

impl BenchNode {
    fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Relaxed)
    }

    /// This node as a bootstrap entry.
    fn bootstrap_entry(&self) -> BootstrapNode {
        BootstrapNode {
            peer_id: self.reg.local_peer_id().to_string(),
            address: self
                .reg
                .listen_addresses()
                .into_iter()
                .next()
                .expect("a running node has a listen address"),
        }
    }
}

/// Shared settings of every node started.
struct Spawner {
    transport: String,
    max_connections: usize,
    root: PathBuf,
    tracker: Arc<Tracker>,
    started: usize,
    dht_max_records: Option<usize>,
}

impl Spawner {
    /// Builds and starts a node with its own data directory, bootstrapped through `bootstrap`,
    /// with an event counter; `index` names it in the tracker.
    async fn start(
        &mut self,
        index: usize,
        bootstrap: Vec<BootstrapNode>,
        catalogue: bool,
    ) -> BenchNode {
        let mut c = P2PConfig::default();
        c.network.listen_addresses = vec![listen_for(&self.transport).to_string()];
        c.network.protocols = match self.transport.as_str() {
            "quic" => vec![Protocol::QUIC],
            "tcp" => vec![Protocol::TCP],
            _ => vec![Protocol::TCP, Protocol::QUIC],
        };
        c.network.max_connections = self.max_connections;
        c.bootstrap.mdns_enabled = false;
        c.bootstrap.nodes = bootstrap;
        c.registry.catalogue = catalogue;
        if let Some(m) = self.dht_max_records {
            c.dht.max_records = m;
        }
        c.registry.data_dir = Some(self.root.join(format!("node-{}", self.started)));
        self.started += 1;
        let reg = Arc::new(
            P2PRegistryBuilder::new()
                .with_config(c)
                .build()
                .expect("registry config is valid"),
        );
        let admitted = Arc::new(AtomicUsize::new(0));
        // Subscribed before start, so no admission is missed.
        let mut rx = reg.events();
        let (count, tracker) = (admitted.clone(), self.tracker.clone());
        let events = tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(u) => {
                        let at = Instant::now();
                        count.fetch_add(1, Ordering::Relaxed);
                        let watched = tracker
                            .watched
                            .read()
                            .is_ok_and(|w| w.contains(&u.package_id));
                        if watched {
                            if let Ok(mut s) = tracker.seen.lock() {
                                s.entry(u.package_id).or_default().push((index, at));
                            }
                        }
                    }
                    Err(RecvError::Lagged(k)) => {
                        // Missed events were admissions all the same.
                        count.fetch_add(k as usize, Ordering::Relaxed);
                        tracker.lagged.fetch_add(k, Ordering::Relaxed);
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        });
        reg.start().await.expect("registry node starts");
        BenchNode {
            reg,
            admitted,
            events,
        }
    }
}

/// Polls `f` every `step` until it holds or `deadline` passes; returns whether it held.
async fn wait_for(deadline: Instant, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(step).await;
    }
}

/// count, p50, p99, max (ms) of `samples`.
fn dist(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "count": samples.len(),
        "p50_ms": round3(percentile(&samples, 0.5)),
        "p99_ms": round3(percentile(&samples, 0.99)),
        "max_ms": round3(samples.last().copied().unwrap_or(f64::NAN)),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bootstrap entries for a new node: node 0 and up to two other random nodes of `nodes`.
fn bootstraps(nodes: &[BenchNode], rng: &mut Rng) -> Vec<BootstrapNode> {
    let mut picked = vec![0];
    if nodes.len() > 1 {
        for _ in 0..2 {
            let j = 1 + rng.below(nodes.len() - 1);
            if !picked.contains(&j) {
                picked.push(j);
            }
        }
    }
    picked.iter().map(|&j| nodes[j].bootstrap_entry()).collect()
}

/// CPU seconds between two readings of `cpu_seconds`, per `count` operations, in ms.
fn cpu_per_op_ms(before: Option<f64>, after: Option<f64>, count: usize) -> Option<f64> {
    let (b, a) = before.zip(after)?;
    (count > 0).then(|| round3((a - b) * 1e3 / count as f64))
}

/// Runs the benchmark; `peak_rss_mb` reads the process's peak memory at the end,
/// `cpu_seconds` the CPU time (user + system) the process has used so far.
pub async fn run(
    args: &RegistryArgs,
    peak_rss_mb: fn() -> Option<f64>,
    cpu_seconds: fn() -> Option<f64>,
) -> String {
    let n = args.nodes;
    let entries = generate(args.seed, args.packages, n);
    let total = entries.len();
    let timed_count = args.timed.min(total.saturating_sub(WARMUP + 1) / 2);
    // The timed packages are spread evenly over the list; the rest is the preload.
    let step = total / timed_count.max(1);
    let timed_idx: HashSet<usize> = (0..timed_count).map(|j| j * step + step / 2).collect();
    let (mut preload, mut timed) = (Vec::new(), Vec::new());
    for (i, e) in entries.iter().enumerate() {
        if timed_idx.contains(&i) {
            timed.push(e.clone());
        } else {
            preload.push(e.clone());
        }
    }
    let mut rng = Rng::new(args.seed.wrapping_add(1));

    let root = tempfile::Builder::new()
        .prefix("netbench-registry-")
        .tempdir_in(
            args.data_root
                .clone()
                .unwrap_or_else(std::env::temp_dir)
                .as_path(),
        )
        .expect("temporary data directory");
    // The full nodes, the light node and the late joiner.
    let hosted = n + 2;
    let max_conn = max_connections(&args.transport, hosted, args.fd_limit);
    let tracker = Arc::new(Tracker::default());
    let mut spawner = Spawner {
        transport: args.transport.clone(),
        max_connections: max_conn,
        root: root.path().to_path_buf(),
        tracker: tracker.clone(),
        started: 0,
        dht_max_records: args.dht_max_records,
    };
    eprintln!(
        "netbench registry: {n} nodes over {}, {total} packages ({} timed), max {max_conn} connections per node (fd limit {}), data in {}",
        args.transport,
        timed.len(),
        args.fd_limit,
        root.path().display()
    );

    // ---- setup ----
    let setup = Instant::now();
    let mut nodes: Vec<BenchNode> = Vec::with_capacity(n);
    for i in 0..n {
        let boot = if i == 0 {
            Vec::new()
        } else {
            bootstraps(&nodes, &mut rng)
        };
        nodes.push(spawner.start(i, boot, true).await);
        if (i + 1) % 25 == 0 {
            eprintln!(
                "netbench registry: {} nodes started ({:.1} s)",
                i + 1,
                setup.elapsed().as_secs_f64()
            );
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut alone = 0;
        for node in &nodes {
            if node.reg.stats().await.connected_peers == 0 {
                alone += 1;
            }
        }
        if alone == 0 {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("netbench registry: {alone} nodes still without a connection after 60 s");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "netbench registry: every node connected after {:.2} s",
        setup.elapsed().as_secs_f64()
    );
    // The heap of the running, connected nodes before any of them holds a package.
    let heap_empty = heap::live();
    let min_admitted = |nodes: &[BenchNode]| nodes.iter().map(BenchNode::admitted).min();
    let mut publish_errors = 0usize;
    let warmup = WARMUP.min(preload.len());
    for (k, e) in preload.iter().take(warmup).enumerate() {
        if let Err(err) = nodes[e.publisher].reg.publish(e.package()).await {
            eprintln!(
                "netbench registry: warm-up publish {} failed: {err}",
                e.id()
            );
            publish_errors += 1;
        }
        let t = Instant::now();
        let deadline = t + Duration::from_secs(60);
        let done = wait_for(deadline, Duration::from_millis(5), || {
            min_admitted(&nodes).unwrap_or(0) > k
        })
        .await;
        eprintln!(
            "netbench registry: warm-up package {k} on every node: {done} after {:.3} s",
            t.elapsed().as_secs_f64()
        );
    }
    let setup_s = setup.elapsed().as_secs_f64();
    let conns: Vec<usize> = {
        let mut v = Vec::new();
        for node in &nodes {
            v.push(node.reg.stats().await.connected_peers);
        }
        v
    };
    eprintln!(
        "netbench registry: set up in {setup_s:.2} s; connections per node mean {:.1}, max {}",
        conns.iter().sum::<usize>() as f64 / n as f64,
        conns.iter().max().copied().unwrap_or(0)
    );

    // ---- 1a. preload ----
    let preload_cpu_before = cpu_seconds();
    let preload_start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(0.001)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backlog_waits = 0usize;
    for (k, e) in preload.iter().enumerate().skip(warmup) {
        ticker.tick().await;
        let behind = k.saturating_sub(BACKLOG);
        if min_admitted(&nodes).unwrap_or(0) < behind {
            backlog_waits += 1;
            let deadline = Instant::now() + Duration::from_secs(120);
            if !wait_for(deadline, Duration::from_millis(2), || {
                min_admitted(&nodes).unwrap_or(0) >= behind
            })
            .await
            {
                eprintln!(
                    "netbench registry: the slowest node is still {} packages behind after 120 s; going on",
                    k - min_admitted(&nodes).unwrap_or(0)
                );
            }
        }
        if let Err(err) = nodes[e.publisher].reg.publish(e.package()).await {
            if publish_errors < 10 {
                eprintln!("netbench registry: publish {} failed: {err}", e.id());
            }
            publish_errors += 1;
        }
        if (k + 1) % 1000 == 0 {
            eprintln!(
                "netbench registry: {} published ({:.0}/s), slowest node has {}",
                k + 1,
                (k + 1 - warmup) as f64 / preload_start.elapsed().as_secs_f64(),
                min_admitted(&nodes).unwrap_or(0)
            );
        }
    }
    let published_s = preload_start.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(300);
    let preload_complete = wait_for(deadline, Duration::from_millis(10), || {
        min_admitted(&nodes).unwrap_or(0) >= preload.len()
    })
    .await;
    let preload_s = preload_start.elapsed().as_secs_f64();
    let preload_cpu = cpu_per_op_ms(
        preload_cpu_before,
        cpu_seconds(),
        preload.len().saturating_sub(warmup),
    );
    // What holding the preload (warm-up included) costs, per version on each full node.
    let heap_loaded = heap::live();
    let heap_per_version =
        (heap_loaded as f64 - heap_empty as f64) / (n as f64 * preload.len().max(1) as f64);
    eprintln!(
        "netbench registry: heap {:.1} MiB with no package, {:.1} MiB after the preload: {heap_per_version:.0} bytes per version per node; CPU per publish {} ms",
        heap::mb(heap_empty),
        heap::mb(heap_loaded),
        preload_cpu.map_or("?".to_string(), |c| c.to_string())
    );
    eprintln!(
        "netbench registry: preload of {} published in {published_s:.1} s, on every node after {preload_s:.1} s (complete: {preload_complete}, slowest node {}, {backlog_waits} backlog waits)",
        preload.len(),
        min_admitted(&nodes).unwrap_or(0)
    );

    // ---- 1b. timed publishes ----
    let timed_cpu_before = cpu_seconds();
    let (mut pairs, mut all_nodes, mut calls) = (Vec::new(), Vec::new(), Vec::new());
    let (mut missed_pairs, mut confirmed, mut confirm_checks) = (0usize, 0usize, 0usize);
    for (t, e) in timed.iter().enumerate() {
        let id = e.id();
        tracker.watch(&id);
        let start = Instant::now();
        if let Err(err) = nodes[e.publisher].reg.publish(e.package()).await {
            eprintln!("netbench registry: timed publish {id} failed: {err}");
            publish_errors += 1;
            continue;
        }
        calls.push(ms(start.elapsed()));
        let deadline = Instant::now() + VISIBLE_DEADLINE;
        let everywhere = wait_for(deadline, Duration::from_millis(1), || {
            tracker.arrivals(&id, e.publisher).len() >= n - 1
        })
        .await;
        let arrivals = tracker.arrivals(&id, e.publisher);
        for (_, at) in &arrivals {
            pairs.push(ms(at.saturating_duration_since(start)));
        }
        missed_pairs += (n - 1).saturating_sub(arrivals.len());
        if everywhere {
            if let Some(slowest) = arrivals.iter().map(|(_, at)| *at).max() {
                all_nodes.push(ms(slowest.saturating_duration_since(start)));
            }
        }
        // Searchable there: an exact-name search on a random other node finds it.
        let mut other = rng.below(n);
        if other == e.publisher {
            other = (other + 1) % n;
        }
        confirm_checks += 1;
        let q = Query::new(vec![e.name.clone()]);
        if let Ok(results) = nodes[other].reg.search(&q).await {
            if results.iter().any(|r| r.package.name == e.name) {
                confirmed += 1;
            }
        }
        if (t + 1) % 50 == 0 {
            eprintln!("netbench registry: {} timed publishes done", t + 1);
        }
    }
    let timed_cpu = cpu_per_op_ms(timed_cpu_before, cpu_seconds(), calls.len());
    let pairs_d = dist(pairs);
    let all_d = dist(all_nodes);
    eprintln!(
        "netbench registry: publish to searchable, pairs {pairs_d}, on all nodes {all_d}, {missed_pairs} missed pairs"
    );

    // ---- 2. cold get from a light node ----
    let light = spawner.start(n, bootstraps(&nodes, &mut rng), false).await;
    let want_peers = COLD_MIN_PEERS.min(n);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = light.reg.stats().await;
        if s.total_peers >= want_peers {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "netbench registry: the light node knows {} peers after 60 s",
                s.total_peers
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut order: Vec<usize> = (0..total).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let (mut get_lat, mut got, mut get_errors) = (Vec::new(), 0usize, 0usize);
    let (mut found_lat, mut miss_lat) = (Vec::new(), Vec::new());
    for &i in order.iter().take(args.gets) {
        let id = entries[i].id();
        let t = Instant::now();
        let r = light.reg.get(&id).await;
        let took = ms(t.elapsed());
        get_lat.push(took);
        match r {
            Ok(Some(p)) if p.id == id => {
                got += 1;
                found_lat.push(took);
            }
            Ok(_) => miss_lat.push(took),
            Err(err) => {
                if get_errors < 5 {
                    eprintln!("netbench registry: get {id} failed: {err}");
                }
                get_errors += 1;
            }
        }
    }
    let gets = get_lat.len();
    let get_d = dist(get_lat);
    let miss_d = dist(miss_lat);
    eprintln!("netbench registry: cold get {get_d}, {got}/{gets} found; misses {miss_d}");
    // How the DHT puts of every publish went (each full node counts its own queries).
    let mut dht_rates = Vec::new();
    for node in &nodes {
        dht_rates.push(node.reg.stats().await.dht_query_success_rate);
    }
    let dht_success = dht_rates.iter().sum::<f64>() / dht_rates.len().max(1) as f64;

    // ---- 3. local search on a full node ----
    let searcher = &nodes[1 % n].reg;
    let long: Vec<&Entry> = entries.iter().filter(|e| e.name.len() >= 6).collect();
    let mut queries: Vec<(&str, Query, Option<String>)> = Vec::new();
    for _ in 0..10 {
        let e = long[rng.below(long.len())];
        queries.push((
            "exact",
            Query::new(vec![e.name.clone()]),
            Some(e.name.clone()),
        ));
    }
    for _ in 0..10 {
        queries.push(("keyword", Query::new(vec![rng.pick(WORDS).into()]), None));
    }
    for _ in 0..10 {
        let e = long[rng.below(long.len())];
        queries.push((
            "typo",
            Query::new(vec![transpose(&e.name)]),
            Some(e.name.clone()),
        ));
    }
    for i in 0..10 {
        let category = rng.pick(CATEGORIES).to_string();
        let q = if i % 2 == 0 {
            Query::new(vec![rng.pick(WORDS).into()]).with_category(category)
        } else {
            Query::default().with_category(category)
        };
        queries.push(("category", q, None));
    }
    let catalogue_size = searcher.stats().await.catalogue_size;
    let (mut search_lat, mut exact_top1, mut typo_hits, mut empty) =
        (Vec::new(), 0usize, 0usize, 0usize);
    for (kind, q, expect) in &queries {
        for _ in 0..SEARCH_WARMUP {
            let _ = searcher.search(q).await;
        }
        let mut last = Vec::new();
        for _ in 0..SEARCH_ITERS {
            let t = Instant::now();
            let r = searcher.search(q).await;
            search_lat.push(ms(t.elapsed()));
            last = r.unwrap_or_default();
        }
        if last.is_empty() {
            empty += 1;
        }
        match (*kind, expect) {
            ("exact", Some(name)) if last.first().is_some_and(|r| &r.package.name == name) => {
                exact_top1 += 1
            }
            ("typo", Some(name)) if last.iter().any(|r| &r.package.name == name) => typo_hits += 1,
            _ => {}
        }
    }
    let search_d = dist(search_lat);
    eprintln!(
        "netbench registry: search over {catalogue_size} versions {search_d}; exact top-1 {exact_top1}/10, typo found {typo_hits}/10, {empty} queries without results"
    );

    // ---- 4. late joiner ----
    let expected = catalogue_size.max(total);
    let joined = Instant::now();
    let late = spawner
        .start(n + 1, bootstraps(&nodes, &mut rng), true)
        .await;
    let started_ms = ms(joined.elapsed());
    let synced = {
        let reg = late.reg.clone();
        tokio::spawn(async move {
            let ok = reg.wait_synced(Duration::from_secs(600)).await;
            (ok, joined.elapsed().as_secs_f64())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    let (complete, late_size) = loop {
        let size = late.reg.stats().await.catalogue_size;
        if size >= expected {
            break (true, size);
        }
        if Instant::now() >= deadline {
            break (false, size);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let complete_s = joined.elapsed().as_secs_f64();
    let (synced_ok, synced_s) = synced.await.unwrap_or((false, f64::NAN));
    eprintln!(
        "netbench registry: late joiner has {late_size}/{expected} after {complete_s:.2} s (complete: {complete}); wait_synced {synced_ok} after {synced_s:.2} s"
    );

    let json = json!({
        "bench": "registry",
        "nodes": n,
        "packages": total,
        "transport": args.transport,
        "seed": args.seed,
        "max_connections_per_node": max_conn,
        "setup_s": round3(setup_s),
        "connections_per_node": {
            "mean": round3(conns.iter().sum::<usize>() as f64 / n as f64),
            "max": conns.iter().max(),
        },
        "preload": {
            "count": preload.len(),
            "rate_limit_per_s": args.rate,
            "published_s": round3(published_s),
            "everywhere_s": round3(preload_s),
            "per_s": round3((preload.len() - warmup) as f64 / preload_s),
            "complete": preload_complete,
            "backlog_waits": backlog_waits,
        },
        "cpu_per_publish_ms": preload_cpu,
        "publish_errors": publish_errors,
        "dht_max_records": args.dht_max_records,
        "dht_query_success_rate_mean": round3(dht_success),
        "publish_to_searchable": {
            "publishes": calls.len(),
            "pairs": pairs_d,
            "all_nodes": all_d,
            "missed_pairs": missed_pairs,
            "publish_call": dist(calls),
            "search_confirmed_ratio": round3(confirmed as f64 / confirm_checks.max(1) as f64),
            "cpu_per_publish_ms": timed_cpu,
        },
        "cold_get": {
            "node": "light",
            "latency": get_d,
            "found_latency": dist(found_lat),
            "miss_latency": miss_d,
            "success_ratio": round3(got as f64 / gets.max(1) as f64),
            "errors": get_errors,
        },
        "search": {
            "catalogue_size": catalogue_size,
            "queries": queries.len(),
            "latency": search_d,
            "exact_top1_ratio": round3(exact_top1 as f64 / 10.0),
            "typo_found_ratio": round3(typo_hits as f64 / 10.0),
        },
        "late_joiner": {
            "expected": expected,
            "catalogue_size": late_size,
            "complete": complete,
            "start_ms": round3(started_ms),
            "catalogue_complete_s": round3(complete_s),
            "wait_synced": synced_ok,
            "wait_synced_s": round3(synced_s),
        },
        "events_lagged": tracker.lagged.load(Ordering::Relaxed),
        "peak_rss_mb": round3(peak_rss_mb().unwrap_or(f64::NAN)),
        "heap_live_mb": round3(heap::mb(heap::live())),
        "heap_peak_mb": round3(heap::mb(heap::peak())),
        "heap_empty_mb": round3(heap::mb(heap_empty)),
        "heap_preloaded_mb": round3(heap::mb(heap_loaded)),
        "heap_bytes_per_version": heap_per_version.round(),
    })
    .to_string();

    let all: Vec<BenchNode> = nodes.into_iter().chain([light, late]).collect();
    futures_util::future::join_all(all.iter().map(|node| node.reg.stop())).await;
    for node in &all {
        node.events.abort();
    }
    drop(all);
    let path = root.path().display().to_string();
    if let Err(e) = root.close() {
        eprintln!("netbench registry: could not remove {path}: {e}");
    }
    json
}
