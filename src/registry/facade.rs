//! [`P2PRegistry`], [`P2PRegistryBuilder`] and the object-safe [`Registry`] trait: the
//! seed's API over one node running the DHT, the gossip mesh, the RPC layer and the content
//! service.
//!
//! Publish (the seed's "Package → Local Cache → DHT Announce → Gossipsub Broadcast"): sign,
//! admit locally (the same rules every node applies, see [`super::signed`]), store, put the
//! record in the DHT under its version key and its name key, announce on the packages topic
//! and on the package's category and name topics. Receivers verify and admit the record,
//! add it to their catalogue and emit a [`PackageUpdate`]. A node that was away catches up
//! through anti-entropy: it compares per-bucket digests of its catalogue with a peer's and
//! fetches only the records of buckets that differ.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::config::{BootstrapNode, P2PConfig};
use super::error::{RegistryError, Result};
use super::index::Catalogue;
use super::protocol::{
    Announcement, MAX_BUCKET_IDS, MAX_SYNC_RECORDS, PackageRecordValidator, SYNC_BUCKETS,
    SearchProtocol, SyncProtocol, SyncRequest, SyncResponse, content_key, name_key, package_key,
};
use super::signed::{Admission, SignedPackage, admit};
use super::store::{
    Batch, DhtRecordEntry, OwnerEntry, ProviderEntry, Store, instant_to_unix_ms, unix_ms_now,
};
use super::types::{NetworkStats, Package, PackageUpdate, Query, SearchResult, UpdateType};
use super::writer::StoreWriter;
use crate::Multiaddr;
use crate::discovery::{Discovery, DiscoveryConfig, DiscoveryMethod};
use crate::gossip::{Gossip, Topic};
use crate::identity::{Keypair, PeerId};
use crate::kademlia::{Dht, DhtError, DhtPersistence, Persisted, QueryError, Record};
use crate::node::{Node, NodeConfig, NodeHandle};
use crate::rpc::content::{ContentError, ContentHash, ContentService, ContentSource};
use crate::rpc::{Rpc, RpcError};

/// The seed's registry operations; object-safe (`Arc<dyn Registry>` works).
pub trait Registry: Send + Sync {
    /// Searches the network's catalogue.
    fn search<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<SearchResult>>>;
    /// Signs and publishes a package (metadata only).
    fn publish(&self, package: Package) -> BoxFuture<'_, Result<()>>;
    /// `name@version`, or `name` for its latest version.
    fn get<'a>(&'a self, package_id: &'a str) -> BoxFuture<'a, Result<Option<Package>>>;
    /// Joins the update topic of a category or a package name.
    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// A boxed future, as the object-safe trait returns.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Builds a [`P2PRegistry`].
#[derive(Clone, Debug, Default)]
pub struct P2PRegistryBuilder {
    config: P2PConfig,
}

impl P2PRegistryBuilder {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the whole configuration.
    pub fn with_config(mut self, config: P2PConfig) -> Self {
        self.config = config;
        self
    }

    /// Listen addresses (multiaddrs).
    pub fn with_listen_addresses(mut self, addresses: Vec<String>) -> Self {
        self.config.network.listen_addresses = addresses;
        self
    }

    /// Bootstrap nodes.
    pub fn with_bootstrap_nodes(mut self, nodes: Vec<BootstrapNode>) -> Self {
        self.config.bootstrap.nodes = nodes;
        self
    }

    /// Where the identity key is kept.
    pub fn with_identity_path(mut self, path: PathBuf) -> Self {
        self.config.security.identity_path = Some(path);
        self
    }

    /// Where the store and content are kept.
    pub fn with_data_dir(mut self, dir: PathBuf) -> Self {
        self.config.registry.data_dir = Some(dir);
        self
    }

    /// Validates the configuration and loads (or creates) the identity.
    pub fn build(self) -> Result<P2PRegistry> {
        self.config.validate().map_err(RegistryError::Config)?;
        let identity_path = self.config.security.identity_path.clone().or_else(|| {
            self.config
                .registry
                .data_dir
                .as_ref()
                .map(|d| d.join("identity.key"))
        });
        let keypair = match &identity_path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        RegistryError::Storage(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                crate::identity::load_or_create_identity(p)
                    .map_err(|e| RegistryError::Config(format!("identity: {e}")))?
            }
            None => Keypair::generate(),
        };
        let (events, _) = broadcast::channel(1024);
        Ok(P2PRegistry {
            config: RwLock::new(self.config),
            peer_id: keypair.peer_id(),
            keypair,
            running: tokio::sync::Mutex::new(None),
            listen: Mutex::new(Vec::new()),
            events,
            state: Arc::new(State::default()),
        })
    }
}

/// Records, catalogue and counters shared by the registry's tasks.
#[derive(Default)]
struct State {
    /// Every admitted record by `name@version`.
    records: RwLock<HashMap<String, SignedPackage>>,
    /// The first claim of each name.
    claims: RwLock<HashMap<String, SignedPackage>>,
    /// The searchable catalogue.
    catalogue: RwLock<Catalogue>,
    /// Known providers of content, by hash.
    providers: RwLock<HashMap<ContentHash, HashSet<PeerId>>>,
    /// Peers we have completed at least one anti-entropy round with since start.
    synced: RwLock<HashSet<PeerId>>,
    /// The on-disk store while running with a data directory (blobs are written directly;
    /// records go through `writer`).
    store: RwLock<Option<Arc<Store>>>,
    /// The store's writer thread: every admitted record is queued there (one transaction
    /// with its owner claim); own publishes wait until theirs is durable.
    writer: RwLock<Option<Arc<StoreWriter>>>,
    /// Content held in memory (no data directory), by hash.
    blobs: RwLock<HashMap<ContentHash, Bytes>>,
    /// Whether this node keeps the catalogue (a full node); a light node does not.
    light: std::sync::atomic::AtomicBool,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    dht_queries: std::sync::atomic::AtomicU64,
    dht_failures: std::sync::atomic::AtomicU64,
    gets: std::sync::atomic::AtomicU64,
    get_hits: std::sync::atomic::AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn add(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

fn read(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(std::sync::atomic::Ordering::Relaxed)
}

/// What runs between `start` and `stop`.
struct Running {
    node: NodeHandle,
    dht: Dht,
    gossip: Gossip,
    rpc: Rpc,
    content: ContentService,
    discovery: Discovery,
    topics: HashSet<Topic>,
    tasks: Vec<JoinHandle<()>>,
}

/// A registry node (see the module docs).
pub struct P2PRegistry {
    config: RwLock<P2PConfig>,
    keypair: Keypair,
    peer_id: PeerId,
    running: tokio::sync::Mutex<Option<Running>>,
    listen: Mutex<Vec<String>>,
    events: broadcast::Sender<PackageUpdate>,
    state: Arc<State>,
}

impl std::fmt::Debug for P2PRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("P2PRegistry")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

fn dht_error(e: DhtError) -> RegistryError {
    match e {
        DhtError::Query(QueryError::Timeout) => RegistryError::DhtTimeout,
        other => RegistryError::Network(other.to_string()),
    }
}

impl P2PRegistry {
    /// This node's PeerId (`12D3KooW…`).
    pub fn local_peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The bound listen addresses (real ports), while running.
    pub fn listen_addresses(&self) -> Vec<String> {
        self.listen.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether the registry is running.
    pub async fn is_running(&self) -> bool {
        self.running.lock().await.is_some()
    }

    /// A stream of package updates (publishes seen by this node, own and others').
    pub fn events(&self) -> broadcast::Receiver<PackageUpdate> {
        self.events.subscribe()
    }

    /// Starts the node: listens, dials the bootstrap nodes, joins the DHT and the packages
    /// topic, serves sync, search and content.
    pub async fn start(&self) -> Result<()> {
        let mut slot = self.running.lock().await;
        if slot.is_some() {
            return Err(RegistryError::AlreadyRunning);
        }
        let config = self.config.read().map(|c| c.clone()).unwrap_or_default();
        let listen: Vec<Multiaddr> = config
            .network
            .listen_addresses
            .iter()
            .map(|a| a.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| RegistryError::Config(format!("listen address: {e}")))?;
        // Bootstrap nodes are dialed by discovery (backoff capped at `retry_interval`,
        // redial after a lost connection), which also feeds them to the DHT.
        for n in &config.bootstrap.nodes {
            bootstrap_addr(n)?;
        }
        let node_config = NodeConfig {
            listen,
            max_connections: config.network.max_connections,
            connection_timeout: Duration::from_secs(config.network.connection_timeout),
            idle_timeout: Duration::from_secs(config.network.idle_timeout),
            reconnect_max_backoff: Duration::from_secs(config.bootstrap.retry_interval),
            ..NodeConfig::default()
        };
        // The store first: a data directory still in use by another registry refuses us
        // before any port is bound.
        let store = match config.registry.data_dir.clone() {
            Some(dir) => Some(Arc::new(
                tokio::task::spawn_blocking(move || Store::open(&dir))
                    .await
                    .map_err(|e| RegistryError::Storage(e.to_string()))??,
            )),
            None => None,
        };
        self.state.light.store(
            !config.registry.catalogue,
            std::sync::atomic::Ordering::Relaxed,
        );
        if let Some(store) = &store {
            // Reading and verifying every stored record is blocking work.
            let (st, events, s, me) = (
                self.state.clone(),
                self.events.clone(),
                store.clone(),
                self.peer_id,
            );
            tokio::task::spawn_blocking(move || load_records(&st, &events, &s, me))
                .await
                .map_err(|e| RegistryError::Storage(e.to_string()))??;
        }
        // Attached before any service runs, so the first record from the network is
        // written too.
        let writer = match &store {
            Some(s) => Some(Arc::new(StoreWriter::spawn(s.clone()).map_err(|e| {
                RegistryError::Storage(format!("cannot start the store writer: {e}"))
            })?)),
            None => None,
        };
        self.attach_store(store.clone(), writer).await;
        let node = match Node::spawn(self.keypair.clone(), node_config).await {
            Ok(n) => n,
            Err(e) => {
                self.detach_store().await;
                return Err(RegistryError::Network(format!(
                    "cannot start the node: {e}"
                )));
            }
        };
        let persistence = match &store {
            Some(s) => match self.dht_persistence(s.clone()).await {
                Ok(p) => Some(p),
                Err(e) => {
                    node.shutdown().await;
                    self.detach_store().await;
                    return Err(e);
                }
            },
            None => None,
        };
        let started = self.start_services(&node, &config, persistence).await;
        let running = match started {
            Ok(r) => r,
            Err(e) => {
                node.shutdown().await;
                self.detach_store().await;
                return Err(e);
            }
        };
        // Serve the content we hold, and announce it again (our addresses may have changed
        // since the provider records others keep were made). A blob no record refers to is
        // what a crash between storing it and committing its record leaves: removed.
        if let Some(store) = &store {
            let referenced: HashSet<ContentHash> = self
                .state
                .records
                .read()
                .map(|r| {
                    r.values()
                        .filter_map(|s| s.package.content_hash.as_deref()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            let s2 = store.clone();
            let blobs = tokio::task::spawn_blocking(move || s2.blobs())
                .await
                .map_err(|e| RegistryError::Storage(e.to_string()))??;
            let mut held = Vec::new();
            for h in blobs {
                if !referenced.contains(&h) {
                    let s2 = store.clone();
                    let _ = tokio::task::spawn_blocking(move || s2.remove_blob(&h)).await;
                    continue;
                }
                let path = store.blob_path(&h);
                if running
                    .content
                    .serve_content(h, ContentSource::File(path))
                    .await
                    .is_ok()
                {
                    if let Ok(mut p) = self.state.providers.write() {
                        p.entry(h).or_default().insert(self.peer_id);
                    }
                    held.push(h);
                }
            }
            let (dht, st) = (running.dht.clone(), self.state.clone());
            tokio::spawn(async move {
                for h in held {
                    add(&st.counters.dht_queries);
                    if dht.start_providing(content_key(&h)).await.is_err() {
                        add(&st.counters.dht_failures);
                    }
                }
            });
        }
        if let Ok(mut l) = self.listen.lock() {
            *l = node.listen_addrs().iter().map(|a| a.to_string()).collect();
        }
        *slot = Some(running);
        Ok(())
    }

    /// The DHT's durable storage: what the store kept (expired entries dropped first), and
    /// the receiving end of the sink through which the DHT reports what it stores next.
    async fn dht_persistence(
        &self,
        store: Arc<Store>,
    ) -> Result<(
        DhtPersistence,
        tokio::sync::mpsc::UnboundedReceiver<Persisted>,
    )> {
        let (records, providers) = tokio::task::spawn_blocking(move || {
            let now_ms = unix_ms_now();
            store.expire(now_ms)?;
            let records: Vec<(Record, Duration, bool)> = store
                .dht_records()?
                .into_iter()
                .filter_map(|(k, e)| {
                    let left = e.remaining(now_ms)?;
                    Some((e.to_record(&k, now_ms)?, left, e.local))
                })
                .collect();
            let providers: Vec<(Bytes, crate::kademlia::PeerRecord, Duration)> = store
                .all_providers()?
                .into_iter()
                .flat_map(|(k, list)| {
                    let key = Bytes::from(k);
                    list.into_iter().filter_map(move |p| {
                        let left = (p.expires_at_ms > now_ms)
                            .then(|| Duration::from_millis(p.expires_at_ms - now_ms))?;
                        Some((key.clone(), p.to_peer_record(), left))
                    })
                })
                .collect();
            Ok::<_, RegistryError>((records, providers))
        })
        .await
        .map_err(|e| RegistryError::Storage(e.to_string()))??;
        let (sink, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok((
            DhtPersistence {
                records,
                providers,
                sink,
            },
            rx,
        ))
    }

    async fn start_services(
        &self,
        node: &NodeHandle,
        config: &P2PConfig,
        persistence: Option<(
            DhtPersistence,
            tokio::sync::mpsc::UnboundedReceiver<Persisted>,
        )>,
    ) -> Result<Running> {
        let net = |what: &str, e: String| RegistryError::Network(format!("{what}: {e}"));
        let (persistence, persisted) = match persistence {
            Some((p, rx)) => (Some(p), Some(rx)),
            None => (None, None),
        };
        let dht = Dht::spawn_with(
            node,
            config.dht.clone(),
            Some(Arc::new(PackageRecordValidator)),
            persistence,
        )
        .map_err(|e| net("dht", e.to_string()))?;
        let gossip = Gossip::spawn(node, config.gossipsub.clone())
            .map_err(|e| net("gossip", e.to_string()))?;
        let rpc =
            Rpc::spawn(node, config.registry.rpc.clone()).map_err(|e| net("rpc", e.to_string()))?;
        let content = ContentService::spawn(&rpc, config.registry.content.clone())
            .await
            .map_err(|e| net("content", e.to_string()))?;
        let mut tasks = Vec::new();
        // What the DHT stores goes to the store writer, in batches of whatever queued up.
        if let Some(mut rx) = persisted {
            let st = self.state.clone();
            tasks.push(tokio::spawn(async move {
                let mut buf = Vec::new();
                while rx.recv_many(&mut buf, 1024).await > 0 {
                    let (now, now_ms) = (Instant::now(), unix_ms_now());
                    let mut batch = Batch::new();
                    for p in buf.drain(..) {
                        match p {
                            Persisted::Record {
                                record,
                                expires,
                                local,
                            } => {
                                let at = instant_to_unix_ms(expires, now, now_ms);
                                let entry = DhtRecordEntry::from_record(&record, at, local);
                                batch.put_dht_record(&record.key, entry);
                            }
                            Persisted::Provider {
                                key,
                                provider,
                                expires,
                            } => {
                                let at = instant_to_unix_ms(expires, now, now_ms);
                                let entry = ProviderEntry::from_peer_record(&provider, at);
                                batch.add_provider(&key, entry);
                            }
                        }
                    }
                    if let Some(w) = writer(&st) {
                        w.submit(batch);
                    }
                }
            }));
        }
        // Serve sync and (full nodes) search.
        let st = self.state.clone();
        rpc.register::<SyncProtocol, _, _>(move |_, req| {
            let st = st.clone();
            async move { Ok(answer_sync(&st, req)) }
        })
        .await
        .map_err(|e| net("rpc", e.to_string()))?;
        if config.registry.catalogue {
            let st = self.state.clone();
            rpc.register::<SearchProtocol, _, _>(move |_, q: Query| {
                let st = st.clone();
                async move { Ok(local_search(&st, &q)) }
            })
            .await
            .map_err(|e| net("rpc", e.to_string()))?;
        }
        // A seeder fetches the content of what it admits.
        let (tx, mut admitted) = tokio::sync::mpsc::unbounded_channel::<SignedPackage>();
        let replicate = config.registry.replicate_content.then_some(tx);
        if replicate.is_some() {
            let (st, svc, dht2, node2, me) = (
                self.state.clone(),
                content.clone(),
                dht.clone(),
                node.clone(),
                self.peer_id,
            );
            let every = Duration::from_secs(config.registry.sync_interval.max(1));
            tasks.push(tokio::spawn(async move {
                // Newly admitted records at once; every interval (and first soon after
                // start), whatever content is still missing: held before a restart but
                // not kept, or whose providers were unreachable before.
                let mut sweep = tokio::time::interval_at(
                    tokio::time::Instant::now() + Duration::from_secs(1),
                    every,
                );
                sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        r = admitted.recv() => match r {
                            Some(r) => replicate_one(&st, &svc, &dht2, &node2, &r, me).await,
                            None => return,
                        },
                        _ = sweep.tick() => {
                            let missing: Vec<SignedPackage> = st
                                .records
                                .read()
                                .map(|r| {
                                    r.values()
                                        .filter(|s| {
                                            s.package
                                                .content_hash
                                                .as_deref()
                                                .and_then(|h| h.parse::<ContentHash>().ok())
                                                .is_some_and(|h| !svc.is_serving(&h))
                                        })
                                        .cloned()
                                        .collect()
                                })
                                .unwrap_or_default();
                            for r in missing {
                                replicate_one(&st, &svc, &dht2, &node2, &r, me).await;
                            }
                        }
                    }
                }
            }));
        }
        // Announcements on the packages topic (full nodes keep the whole catalogue; a light
        // node hears only the topics it subscribes to).
        let topic = config.gossipsub.topic(&config.registry.packages_topic);
        let mut topics = HashSet::new();
        if config.registry.catalogue {
            let mut sub = gossip
                .subscribe(topic.clone())
                .await
                .map_err(|e| net("gossip", e.to_string()))?;
            topics.insert(topic.clone());
            let (st, events, me) = (self.state.clone(), self.events.clone(), self.peer_id);
            let rep = replicate.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(r) = sub.recv().await {
                    if let Ok(a) = Announcement::decode(&r.message.data) {
                        let record = a.record.clone();
                        let ok = ingest(&st, &events, a.record, me);
                        if let (Ok(Some(_)), Some(tx)) = (ok, &rep) {
                            let _ = tx.send(record);
                        }
                    }
                }
            }));
        }
        // Anti-entropy (full nodes): with a random connected peer every `sync_interval`, and
        // soon after the first connections.
        let (st, events, rpc2, node2, me) = (
            self.state.clone(),
            self.events.clone(),
            rpc.clone(),
            node.clone(),
            self.peer_id,
        );
        if config.registry.catalogue {
            let every = Duration::from_secs(config.registry.sync_interval);
            tasks.push(tokio::spawn(async move {
                let mut synced: HashSet<PeerId> = HashSet::new();
                let mut next_full = tokio::time::Instant::now() + every;
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let peers = node2.connected_peers();
                    // Every newly connected peer once, then one random peer per interval.
                    let fresh: Vec<PeerId> = peers
                        .iter()
                        .filter(|p| !synced.contains(p))
                        .copied()
                        .collect();
                    for p in fresh {
                        synced.insert(p);
                        if sync_with(&st, &events, &rpc2, p, me, replicate.as_ref())
                            .await
                            .is_ok()
                        {
                            if let Ok(mut s) = st.synced.write() {
                                s.insert(p);
                            }
                        }
                    }
                    synced.retain(|p| peers.contains(p));
                    if tokio::time::Instant::now() >= next_full {
                        next_full = tokio::time::Instant::now() + every;
                        if let Some(p) = peers.get(rand::random_range(0..peers.len().max(1))) {
                            let _ =
                                sync_with(&st, &events, &rpc2, *p, me, replicate.as_ref()).await;
                        }
                    }
                }
            }));
        }
        let discovery = Discovery::spawn(
            node.clone(),
            Some(dht.clone()),
            DiscoveryConfig::from_bootstrap(&config.bootstrap),
        )
        .map_err(|e| net("discovery", e.to_string()))?;
        Ok(Running {
            node: node.clone(),
            dht,
            gossip,
            rpc,
            content,
            discovery,
            topics,
            tasks,
        })
    }

    /// Stops the node: closes every connection, releases the listen ports.
    pub async fn stop(&self) -> Result<()> {
        let Some(r) = self.running.lock().await.take() else {
            return Err(RegistryError::NotRunning);
        };
        for t in &r.tasks {
            t.abort();
        }
        r.discovery.stop();
        r.node.shutdown().await;
        // Writes what is queued, then releases the data directory (the store's lock) for
        // the next registry.
        self.detach_store().await;
        if let Ok(mut s) = self.state.synced.write() {
            s.clear();
        }
        if let Ok(mut l) = self.listen.lock() {
            l.clear();
        }
        Ok(())
    }

    async fn attach_store(&self, store: Option<Arc<Store>>, writer: Option<Arc<StoreWriter>>) {
        if let Ok(mut s) = self.state.store.write() {
            *s = store;
        }
        if let Ok(mut w) = self.state.writer.write() {
            *w = writer;
        }
    }

    /// Detaches the store: the writer finishes its queue and exits, and the store (with
    /// its lock on the data directory) is dropped once the last task holding it is done.
    async fn detach_store(&self) {
        let writer = self.state.writer.write().ok().and_then(|mut w| w.take());
        if let Some(thread) = writer.and_then(|w| w.close()) {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Ok(mut s) = self.state.store.write() {
            *s = None;
        }
    }

    /// Waits until the catalogue has been synced once with every connected peer (or
    /// `timeout` passes); returns whether it was.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        if self.state.light.load(std::sync::atomic::Ordering::Relaxed) {
            // A light node keeps no catalogue to sync.
            return true;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let Ok((node, ..)) = self.services().await else {
                return false;
            };
            let peers = node.connected_peers();
            let done = !peers.is_empty()
                && self
                    .state
                    .synced
                    .read()
                    .is_ok_and(|s| peers.iter().all(|p| s.contains(p)));
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until another peer holds `package_id`'s record and, if it has content, provides
    /// the content too (or `timeout` passes); returns whether it does.
    pub async fn wait_replicated(&self, package_id: &str, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let content = self
            .state
            .records
            .read()
            .ok()
            .and_then(|r| {
                r.get(package_id)
                    .and_then(|s| s.package.content_hash.clone())
            })
            .and_then(|h| h.parse::<ContentHash>().ok());
        loop {
            let Ok((node, dht, _, rpc, _)) = self.services().await else {
                return false;
            };
            let mut has_record = false;
            for p in node.connected_peers() {
                let req = SyncRequest::Records(vec![package_id.to_string()]);
                if let Ok(SyncResponse::Records(list)) = rpc.request::<SyncProtocol>(p, req).await {
                    if !list.is_empty() {
                        has_record = true;
                        break;
                    }
                }
            }
            let has_content = match content {
                None => true,
                Some(h) => dht
                    .get_providers(content_key(&h))
                    .await
                    .is_ok_and(|(ps, _)| ps.iter().any(|p| p.peer != self.peer_id)),
            };
            if has_record && has_content {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Adds a bootstrap node: dialed now (if running, with backoff until it answers) and
    /// at every later start.
    pub async fn add_bootstrap_node(&self, peer_id: String, address: String) -> Result<()> {
        let node = BootstrapNode { peer_id, address };
        bootstrap_addr(&node)?;
        if let Some(r) = self.running.lock().await.as_ref() {
            r.discovery
                .add_bootstrap_node(&node)
                .map_err(|e| RegistryError::Config(e.to_string()))?;
        }
        if let Ok(mut c) = self.config.write() {
            c.bootstrap.nodes.push(node);
        }
        Ok(())
    }

    /// How each known peer was found (bootstrap, mDNS, DHT walk, manual).
    pub async fn discovered_peers(&self) -> Vec<(PeerId, DiscoveryMethod)> {
        let g = self.running.lock().await;
        let Some(r) = g.as_ref() else {
            return Vec::new();
        };
        r.discovery
            .peers()
            .into_iter()
            .map(|p| (p.peer, p.method))
            .collect()
    }

    async fn services(&self) -> Result<(NodeHandle, Dht, Gossip, Rpc, ContentService)> {
        let g = self.running.lock().await;
        let r = g.as_ref().ok_or(RegistryError::NotRunning)?;
        Ok((
            r.node.clone(),
            r.dht.clone(),
            r.gossip.clone(),
            r.rpc.clone(),
            r.content.clone(),
        ))
    }

    /// Network and registry statistics.
    pub async fn stats(&self) -> NetworkStats {
        let Ok((node, dht, gossip, _, _)) = self.services().await else {
            return NetworkStats::default();
        };
        let st = &self.state;
        let connected = node.connected_count();
        let total = dht
            .routing_table()
            .await
            .map(|t| t.len)
            .unwrap_or(0)
            .max(connected);
        let gm = gossip.metrics().await.unwrap_or_default();
        let received = gm.delivered + gm.duplicates + gm.rejected;
        let mut lat = st
            .counters
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        lat.sort_unstable();
        let pct = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |v| *v as f64 / 1000.0)
        };
        let (q, f) = (
            read(&st.counters.dht_queries),
            read(&st.counters.dht_failures),
        );
        let (g, h) = (read(&st.counters.gets), read(&st.counters.get_hits));
        let (dht_records, dht_provider_records) = dht.store_sizes().await.unwrap_or((0, 0));
        let topics = self
            .running
            .lock()
            .await
            .as_ref()
            .map_or(0, |r| r.topics.len());
        NetworkStats {
            connected_peers: connected,
            total_peers: total,
            cached_packages: st.records.read().map_or(0, |r| r.len()),
            provider_records: st
                .providers
                .read()
                .map_or(0, |p| p.values().map(|s| s.len()).sum()),
            gossip_topics: topics,
            catalogue_size: st.catalogue.read().map_or(0, |c| c.len()),
            dht_records,
            dht_provider_records,
            dht_query_success_rate: if q == 0 {
                1.0
            } else {
                (q - f) as f64 / q as f64
            },
            cache_hit_rate: if g == 0 { 0.0 } else { h as f64 / g as f64 },
            gossip_delivery_rate: if received == 0 {
                1.0
            } else {
                gm.delivered as f64 / received as f64
            },
            request_latency_p50_ms: pct(0.5),
            request_latency_p99_ms: pct(0.99),
        }
    }

    /// Publishes `package` with `content`: fills `content_hash` and `size`, serves the bytes
    /// and announces this node as their provider.
    pub async fn publish_with_content(
        &self,
        mut package: Package,
        content: impl Into<Bytes>,
    ) -> Result<Package> {
        let (_, dht, _, _, svc) = self.services().await?;
        let bytes: Bytes = content.into();
        let hash = ContentHash::of(&bytes);
        package.content_hash = Some(hash.to_string());
        package.size = bytes.len() as u64;
        let already_held = self.local_content(&hash).await.is_some();
        let source = keep_blob(&self.state, hash, bytes).await?;
        svc.serve_content(hash, source)
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        let published = match self.publish_signed(package).await {
            Ok(p) => p,
            Err(e) => {
                // Refused: the content was not published, so it is not kept or served
                // (unless it already was, for another package).
                if !already_held {
                    svc.stop_serving(&hash);
                    if let Ok(mut b) = self.state.blobs.write() {
                        b.remove(&hash);
                    }
                    let store = self.state.store.read().ok().and_then(|s| s.clone());
                    if let Some(store) = store {
                        let _ = tokio::task::spawn_blocking(move || store.remove_blob(&hash)).await;
                    }
                }
                return Err(e);
            }
        };
        if let Ok(mut p) = self.state.providers.write() {
            p.entry(hash).or_default().insert(self.peer_id);
        }
        let st = self.state.clone();
        tokio::spawn(async move {
            add(&st.counters.dht_queries);
            if dht.start_providing(content_key(&hash)).await.is_err() {
                add(&st.counters.dht_failures);
            }
        });
        Ok(published)
    }

    /// Downloads the content of `package_id` from its providers, verified by hash.
    pub async fn fetch_content(&self, package_id: &str) -> Result<Bytes> {
        let (node, dht, _, _, svc) = self.services().await?;
        let package = self
            .get_package(package_id)
            .await?
            .ok_or_else(|| RegistryError::InvalidPackage(format!("{package_id} is not known")))?;
        let hash: ContentHash = package
            .content_hash
            .as_deref()
            .ok_or_else(|| RegistryError::NoContent(package.id.clone()))?
            .parse()
            .map_err(|_| RegistryError::InvalidPackage("bad content hash".into()))?;
        let mut providers = known_providers(&self.state, &hash);
        providers.retain(|p| *p != self.peer_id);
        if let Some(bytes) = self.local_content(&hash).await {
            add(&self.state.counters.get_hits);
            return Ok(bytes);
        }
        let started = Instant::now();
        // The providers we know first (a DHT lookup waits on every slow peer on the way);
        // the DHT when we know none, or when they all failed.
        let mut first_error = None;
        if !providers.is_empty() {
            match svc.fetch_content(hash, &providers, None).await {
                Ok(bytes) => {
                    return self
                        .after_fetch(&svc, &dht, hash, bytes, started.elapsed())
                        .await;
                }
                Err(e) => first_error = Some(e),
            }
        }
        if let Ok((found, _)) = self.timed_dht(dht.get_providers(content_key(&hash))).await {
            let tried = providers.clone();
            providers = found
                .into_iter()
                .filter(|p| p.peer != self.peer_id && !tried.contains(&p.peer))
                .map(|p| {
                    // The announced addresses, so a provider we never met can be dialed.
                    for a in p.addrs {
                        node.add_address(p.peer, a);
                    }
                    p.peer
                })
                .collect();
        } else {
            providers.clear();
        }
        // A provider that sent bad data makes it a mismatch (tampering somewhere); only
        // unreachable or empty-handed providers make it "unavailable", worth a retry.
        let failed = |errors: Vec<ContentError>| {
            let reason = errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            if errors.iter().any(ContentError::is_bad_content) {
                RegistryError::ContentMismatch {
                    id: package.id.clone(),
                    expected: hash.to_string(),
                    reason,
                }
            } else {
                RegistryError::ContentUnavailable {
                    id: package.id.clone(),
                    reason,
                }
            }
        };
        if providers.is_empty() {
            return Err(match first_error {
                Some(e) => failed(vec![e]),
                None => RegistryError::NoProviders,
            });
        }
        let bytes = match svc.fetch_content(hash, &providers, None).await {
            Ok(b) => b,
            Err(e) => return Err(failed(first_error.into_iter().chain([e]).collect())),
        };
        self.after_fetch(&svc, &dht, hash, bytes, started.elapsed())
            .await
    }

    /// After a verified download: keep and serve the content, announce ourselves.
    async fn after_fetch(
        &self,
        svc: &ContentService,
        dht: &Dht,
        hash: ContentHash,
        bytes: Bytes,
        took: Duration,
    ) -> Result<Bytes> {
        self.record_latency(took);
        // Now a provider too (and the blob is kept, with a data directory).
        if let Ok(source) = keep_blob(&self.state, hash, bytes.clone()).await {
            let _ = svc.serve_content(hash, source).await;
        }
        if let Ok(mut p) = self.state.providers.write() {
            p.entry(hash).or_default().insert(self.peer_id);
        }
        let (st, dht) = (self.state.clone(), dht.clone());
        tokio::spawn(async move {
            add(&st.counters.dht_queries);
            if dht.start_providing(content_key(&hash)).await.is_err() {
                add(&st.counters.dht_failures);
            }
        });
        Ok(bytes)
    }

    /// Content this node holds itself, from memory or the data directory (verified).
    async fn local_content(&self, hash: &ContentHash) -> Option<Bytes> {
        if let Some(b) = self
            .state
            .blobs
            .read()
            .ok()
            .and_then(|b| b.get(hash).cloned())
        {
            return Some(b);
        }
        let store = self.state.store.read().ok().and_then(|s| s.clone())?;
        let h = *hash;
        tokio::task::spawn_blocking(move || store.read_blob(&h).ok().flatten())
            .await
            .ok()
            .flatten()
            .map(Bytes::from)
    }

    fn record_latency(&self, d: Duration) {
        if let Ok(mut l) = self.state.counters.latencies_us.lock() {
            if l.len() >= 10_000 {
                l.remove(0);
            }
            l.push(d.as_micros() as u64);
        }
    }

    async fn timed_dht<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, DhtError>>,
    ) -> Result<T> {
        add(&self.state.counters.dht_queries);
        match f.await {
            Ok(v) => Ok(v),
            Err(e) => {
                add(&self.state.counters.dht_failures);
                Err(dht_error(e))
            }
        }
    }

    async fn publish_signed(&self, mut package: Package) -> Result<Package> {
        let (_, dht, gossip, _, _) = self.services().await?;
        package.id = package.canonical_id();
        package.updated_at = package.updated_at.max(package.created_at);
        let record = SignedPackage::sign(package, false, &self.keypair);
        // Verified like any record from the network; durable before we go on.
        let update =
            ingest_durable(&self.state, &self.events, record.clone(), self.peer_id).await?;
        if update.is_none() {
            return Ok(record.package);
        }
        // The DHT puts run in the background: a put waits for the closest peers, and one
        // that went away costs a request timeout; the caller has its answer once the record
        // is stored here and broadcast. Offline or alone, the record spreads by sync later.
        let value = Bytes::from(record.encode());
        let mut keys = vec![package_key(&record.package.id)];
        // Only the latest version goes under the name key.
        if latest_of(&self.state, &record.package.name)
            .is_none_or(|l| l.package.id == record.package.id)
        {
            keys.push(name_key(&record.package.name));
        }
        let (dht2, st, me) = (dht.clone(), self.state.clone(), self.peer_id);
        tokio::spawn(async move {
            for key in keys {
                let r = Record {
                    key,
                    value: value.clone(),
                    publisher: Some(me),
                    ttl_secs: 0,
                };
                add(&st.counters.dht_queries);
                if dht2.put_record(r, Some(1)).await.is_err() {
                    add(&st.counters.dht_failures);
                }
            }
        });
        let announcement = Announcement {
            record: record.clone(),
        }
        .encode();
        let config = self.config.read().map(|c| c.clone()).unwrap_or_default();
        let topics = [
            config.gossipsub.topic(&config.registry.packages_topic),
            config.gossipsub.topic(&record.package.category),
            config.gossipsub.topic(&record.package.name),
        ];
        for t in topics {
            // No peers yet is not an error for a publish: sync delivers it later.
            let _ = gossip.publish(t, announcement.clone()).await;
        }
        Ok(record.package)
    }

    async fn get_package(&self, package_id: &str) -> Result<Option<Package>> {
        let (_, dht, _, _, _) = self.services().await?;
        add(&self.state.counters.gets);
        let (name, version) = match package_id.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (package_id, None),
        };
        let local = match version {
            Some(_) => self
                .state
                .records
                .read()
                .ok()
                .and_then(|r| r.get(package_id).cloned()),
            None => latest_of(&self.state, name),
        };
        if let Some(r) = local {
            add(&self.state.counters.get_hits);
            return Ok(Some(r.package));
        }
        let key = match version {
            Some(_) => package_key(package_id),
            None => name_key(name),
        };
        let started = Instant::now();
        add(&self.state.counters.dht_queries);
        let found = dht.get_record(key).await;
        if found.is_err() {
            add(&self.state.counters.dht_failures);
        }
        match found {
            Ok((record, _)) => {
                self.record_latency(started.elapsed());
                let s = SignedPackage::decode(&record.value)?;
                s.verify(Utc::now())?;
                if s.package.name != name || version.is_some_and(|v| v != s.package.version) {
                    return Ok(None);
                }
                let package = s.package.clone();
                let _ = ingest(&self.state, &self.events, s, self.peer_id);
                Ok(Some(package))
            }
            // The lookup ended without the record: the network does not have it. A timeout,
            // or nobody to ask, is an error (transient), not an answer.
            Err(DhtError::Query(QueryError::NotFound)) => Ok(None),
            Err(e) => Err(dht_error(e)),
        }
    }
}

/// The bootstrap node's multiaddr with its `/p2p/<id>`.
fn bootstrap_addr(n: &BootstrapNode) -> Result<Multiaddr> {
    let peer: PeerId = n
        .peer_id
        .parse()
        .map_err(|e| RegistryError::Config(format!("bootstrap peer id {:?}: {e}", n.peer_id)))?;
    let addr: Multiaddr = n
        .address
        .parse()
        .map_err(|e| RegistryError::Config(format!("bootstrap address {:?}: {e}", n.address)))?;
    if let Some(id) = addr.peer_id() {
        if id != peer {
            return Err(RegistryError::Config(format!(
                "bootstrap address {} names another peer than {peer}",
                n.address
            )));
        }
        return Ok(addr);
    }
    Ok(addr.with_peer_id(peer))
}

/// The providers of `hash` this node knows of (publishers, fetchers, DHT answers).
fn known_providers(st: &State, hash: &ContentHash) -> Vec<PeerId> {
    st.providers
        .read()
        .ok()
        .and_then(|p| p.get(hash).map(|s| s.iter().copied().collect()))
        .unwrap_or_default()
}

/// The latest (highest semver) admitted version of `name`.
fn latest_of(st: &State, name: &str) -> Option<SignedPackage> {
    let records = st.records.read().ok()?;
    records
        .values()
        .filter(|r| r.package.name == name)
        .max_by(|a, b| {
            let va = semver::Version::parse(&a.package.version).ok();
            let vb = semver::Version::parse(&b.package.version).ok();
            va.cmp(&vb)
        })
        .cloned()
}

/// Verifies and admits a record from anywhere; queues its store write and emits its
/// update. Returns the update type, `None` if nothing changed.
fn ingest(
    st: &State,
    events: &broadcast::Sender<PackageUpdate>,
    record: SignedPackage,
    me: PeerId,
) -> Result<Option<UpdateType>> {
    let Some(mut prepared) = prepare(st, record, me)? else {
        return Ok(None);
    };
    if let Some(w) = writer(st) {
        w.submit(std::mem::take(&mut prepared.batch));
    }
    Ok(Some(commit(st, events, prepared)))
}

/// Like [`ingest`], for our own publish: the record is admitted in memory only once its
/// store write is durable, so an acknowledged publish survives a crash.
async fn ingest_durable(
    st: &State,
    events: &broadcast::Sender<PackageUpdate>,
    record: SignedPackage,
    me: PeerId,
) -> Result<Option<UpdateType>> {
    let Some(mut prepared) = prepare(st, record, me)? else {
        return Ok(None);
    };
    if let Some(w) = writer(st) {
        let durable = w
            .submit_durable(std::mem::take(&mut prepared.batch))
            .ok_or(RegistryError::NotRunning)?;
        durable
            .await
            .map_err(|_| RegistryError::NotRunning)?
            .map_err(RegistryError::Storage)?;
    }
    Ok(Some(commit(st, events, prepared)))
}

fn writer(st: &State) -> Option<Arc<StoreWriter>> {
    st.writer.read().ok().and_then(|w| w.clone())
}

/// A verified, admitted record and what admitting it changes.
struct Prepared {
    record: SignedPackage,
    update: UpdateType,
    /// Records of a displaced (later) claimant of the name, removed on commit.
    displaced: Vec<String>,
    /// The store write: the record, the name's first claim and any removals, in one
    /// transaction.
    batch: Batch,
}

/// Verifies `record` and decides its admission by the ownership rules; `None` when it
/// changes nothing. Reads the state, writes nothing.
fn prepare(st: &State, record: SignedPackage, me: PeerId) -> Result<Option<Prepared>> {
    record.verify(Utc::now())?;
    let name = &record.package.name;
    let id = &record.package.id;
    let (claim, existing) = (
        st.claims.read().ok().and_then(|c| c.get(name).cloned()),
        st.records.read().ok().and_then(|r| r.get(id).cloned()),
    );
    let (update, displaced_by) = match admit(claim.as_ref(), existing.as_ref(), &record)? {
        Admission::Unchanged => return Ok(None),
        Admission::Accept { update, displaced } => (update, displaced),
    };
    let displaced: Vec<String> = match displaced_by {
        Some(old) => st
            .records
            .read()
            .map(|r| {
                r.values()
                    .filter(|x| x.package.name == *name && x.publisher == old)
                    .map(|x| x.package.id.clone())
                    .collect()
            })
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let first = match &claim {
        Some(cur) if cur.claim_key() <= record.claim_key() => cur,
        _ => &record,
    };
    let mut batch = Batch::new();
    for g in &displaced {
        batch.remove_record(g).unmark_own(g);
    }
    batch.put_record(id, &record.encode()).put_owner(
        name,
        OwnerEntry {
            owner: first.publisher.to_string(),
            claim: first.encode(),
        },
    );
    if record.publisher == me {
        batch.mark_own(id);
    }
    Ok(Some(Prepared {
        record,
        update,
        displaced,
        batch,
    }))
}

/// Applies a prepared admission to memory (records, claims, providers, catalogue) and
/// emits its update.
fn commit(st: &State, events: &broadcast::Sender<PackageUpdate>, p: Prepared) -> UpdateType {
    let Prepared {
        record,
        update,
        displaced,
        ..
    } = p;
    let name = record.package.name.clone();
    let id = record.package.id.clone();
    if !displaced.is_empty() {
        if let (Ok(mut r), Ok(mut c)) = (st.records.write(), st.catalogue.write()) {
            for g in &displaced {
                r.remove(g);
                c.remove(g);
            }
        }
    }
    if let Ok(mut c) = st.claims.write() {
        let keep = c
            .get(&name)
            .is_some_and(|cur| cur.claim_key() <= record.claim_key());
        if !keep {
            c.insert(name, record.clone());
        }
    }
    if let Some(h) = record
        .package
        .content_hash
        .as_deref()
        .and_then(|h| h.parse::<ContentHash>().ok())
    {
        if let Ok(mut p) = st.providers.write() {
            p.entry(h).or_default().insert(record.publisher);
        }
    }
    if !st.light.load(std::sync::atomic::Ordering::Relaxed) {
        if let Ok(mut c) = st.catalogue.write() {
            c.insert_with_fingerprint(record.package.clone(), record.fingerprint());
        }
    }
    let timestamp = record.package.updated_at;
    let version = record.package.version.clone();
    if let Ok(mut r) = st.records.write() {
        r.insert(id.clone(), record);
    }
    let _ = events.send(PackageUpdate {
        package_id: id,
        version,
        update_type: update,
        timestamp,
    });
    update
}

/// Stores a blob content-addressed in the data directory (atomically) and returns the
/// source to serve it from; without a data directory, keeps the bytes in memory and serves
/// them from there.
async fn keep_blob(st: &State, hash: ContentHash, bytes: Bytes) -> Result<ContentSource> {
    let store = st.store.read().ok().and_then(|s| s.clone());
    let Some(store) = store else {
        if let Ok(mut b) = st.blobs.write() {
            b.insert(hash, bytes.clone());
        }
        return Ok(ContentSource::Bytes(bytes));
    };
    let path = tokio::task::spawn_blocking(move || store.put_blob(&hash, &bytes))
        .await
        .map_err(|e| RegistryError::Storage(e.to_string()))??;
    Ok(ContentSource::File(path))
}

/// A seeder's copy of `record`'s content: fetched from its providers (verified), served,
/// and announced in the DHT. Failures are left for the next sync to retry.
async fn replicate_one(
    st: &State,
    svc: &ContentService,
    dht: &Dht,
    node: &NodeHandle,
    record: &SignedPackage,
    me: PeerId,
) {
    let Some(hash) = record
        .package
        .content_hash
        .as_deref()
        .and_then(|h| h.parse::<ContentHash>().ok())
    else {
        return;
    };
    if svc.is_serving(&hash) {
        return;
    }
    let mut providers = known_providers(st, &hash);
    if let Ok((found, _)) = dht.get_providers(content_key(&hash)).await {
        providers.extend(found.into_iter().map(|p| {
            for a in p.addrs {
                node.add_address(p.peer, a);
            }
            p.peer
        }));
    }
    providers.sort();
    providers.dedup();
    providers.retain(|p| *p != me);
    if providers.is_empty() {
        return;
    }
    let Ok(bytes) = svc.fetch_content(hash, &providers, None).await else {
        return;
    };
    // Kept like our own content, so a restarted seeder still serves it.
    let Ok(source) = keep_blob(st, hash, bytes).await else {
        return;
    };
    if svc.serve_content(hash, source).await.is_ok() {
        if let Ok(mut p) = st.providers.write() {
            p.entry(hash).or_default().insert(me);
        }
        let _ = dht.start_providing(content_key(&hash)).await;
    }
}

/// Loads the stored records into memory (verifying each again) before the store is
/// attached, so nothing is written back. Records that no longer verify are skipped.
fn load_records(
    st: &State,
    events: &broadcast::Sender<PackageUpdate>,
    store: &Store,
    me: PeerId,
) -> Result<()> {
    let mut records: Vec<SignedPackage> = store
        .records()?
        .into_iter()
        .filter_map(|(_, bytes)| SignedPackage::decode(&bytes).ok())
        .collect();
    // Earliest claims first, so ownership settles as it did before.
    records.sort_by_key(|r| r.claim_key());
    for r in records {
        if let Err(e) = ingest(st, events, r, me) {
            tracing::warn!("stored record skipped: {e}");
        }
    }
    Ok(())
}

/// Searches the local catalogue; `peer_count` is the known providers of the content.
fn local_search(st: &State, q: &Query) -> Vec<SearchResult> {
    let providers = st.providers.read().ok();
    let count = |p: &Package| {
        p.content_hash
            .as_deref()
            .and_then(|h| h.parse::<ContentHash>().ok())
            .and_then(|h| {
                providers
                    .as_ref()
                    .and_then(|pr| pr.get(&h).map(|s| s.len()))
            })
            .unwrap_or(0)
    };
    st.catalogue
        .read()
        .map(|c| c.search(q, count))
        .unwrap_or_default()
}

/// Answers a peer's anti-entropy request from our catalogue and records.
fn answer_sync(st: &State, req: SyncRequest) -> SyncResponse {
    match req {
        SyncRequest::Digests => SyncResponse::Digests(
            st.catalogue
                .read()
                .map(|c| c.bucket_digests(SYNC_BUCKETS))
                .unwrap_or_default(),
        ),
        SyncRequest::Bucket(b) => {
            let ids = st
                .catalogue
                .read()
                .map(|c| c.ids_in_bucket(b, SYNC_BUCKETS))
                .unwrap_or_default();
            let records = st.records.read().ok();
            SyncResponse::Bucket(
                ids.into_iter()
                    .filter_map(|id| {
                        let f = records.as_ref()?.get(&id)?.fingerprint();
                        Some((id, f))
                    })
                    .take(MAX_BUCKET_IDS)
                    .collect(),
            )
        }
        SyncRequest::Records(ids) => {
            let records = st.records.read().ok();
            SyncResponse::Records(
                ids.iter()
                    .take(MAX_SYNC_RECORDS)
                    .filter_map(|id| Some(records.as_ref()?.get(id)?.encode()))
                    .collect(),
            )
        }
    }
}

/// One anti-entropy round with `peer`: digests, then the differing buckets' ids, then the
/// records we lack or hold in another form. Returns how many records were admitted.
async fn sync_with(
    st: &State,
    events: &broadcast::Sender<PackageUpdate>,
    rpc: &Rpc,
    peer: PeerId,
    me: PeerId,
    replicate: Option<&tokio::sync::mpsc::UnboundedSender<SignedPackage>>,
) -> std::result::Result<usize, RpcError> {
    let SyncResponse::Digests(theirs) = rpc
        .request::<SyncProtocol>(peer, SyncRequest::Digests)
        .await?
    else {
        return Ok(0);
    };
    let ours = st
        .catalogue
        .read()
        .map(|c| c.bucket_digests(SYNC_BUCKETS))
        .unwrap_or_default();
    let mut admitted = 0;
    // A bucket the peer holds nothing in has nothing for us, whatever ours holds (a light
    // node or a new joiner reports every bucket empty: no round trip for any of them).
    let empty = Catalogue::empty_bucket_digest();
    for (b, d) in theirs.iter().enumerate().take(SYNC_BUCKETS as usize) {
        if ours.get(b) == Some(d) || *d == empty {
            continue;
        }
        let Ok(b16) = u16::try_from(b) else { break };
        let SyncResponse::Bucket(entries) = rpc
            .request::<SyncProtocol>(peer, SyncRequest::Bucket(b16))
            .await?
        else {
            continue;
        };
        let wanted: Vec<String> = {
            let records = st.records.read().ok();
            entries
                .into_iter()
                .filter(|(id, f)| {
                    records
                        .as_ref()
                        .and_then(|r| r.get(id))
                        .is_none_or(|mine| mine.fingerprint() != *f)
                })
                .map(|(id, _)| id)
                .collect()
        };
        for chunk in wanted.chunks(MAX_SYNC_RECORDS) {
            let SyncResponse::Records(list) = rpc
                .request::<SyncProtocol>(peer, SyncRequest::Records(chunk.to_vec()))
                .await?
            else {
                continue;
            };
            for bytes in list {
                if let Ok(s) = SignedPackage::decode(&bytes) {
                    let record = s.clone();
                    if let Ok(Some(_)) = ingest(st, events, s, me) {
                        admitted += 1;
                        if let Some(tx) = replicate {
                            let _ = tx.send(record);
                        }
                    }
                }
            }
        }
    }
    Ok(admitted)
}

impl Registry for P2PRegistry {
    fn search<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<SearchResult>>> {
        Box::pin(async move {
            let (node, _, _, rpc, _) = self.services().await?;
            let catalogue = self
                .config
                .read()
                .map(|c| c.registry.catalogue)
                .unwrap_or(true);
            if catalogue {
                return Ok(local_search(&self.state, query));
            }
            // A light node asks up to three full peers and merges their answers.
            let mut merged: HashMap<String, SearchResult> = HashMap::new();
            let mut asked = 0;
            for peer in node.connected_peers().into_iter().take(3) {
                let started = Instant::now();
                if let Ok(results) = rpc.request::<SearchProtocol>(peer, query.clone()).await {
                    self.record_latency(started.elapsed());
                    asked += 1;
                    for r in results {
                        let slot = merged.entry(r.package.id.clone()).or_insert(r.clone());
                        if r.score > slot.score {
                            *slot = r.clone();
                        }
                        slot.peer_count = slot.peer_count.max(r.peer_count);
                    }
                }
            }
            if asked == 0 && !node.connected_peers().is_empty() {
                return Err(RegistryError::ConnectionTimeout);
            }
            let mut out: Vec<SearchResult> = merged.into_values().collect();
            out.sort_by(|a, b| {
                b.score
                    .total_cmp(&a.score)
                    .then_with(|| a.package.name.cmp(&b.package.name))
            });
            out.truncate(query.limit);
            Ok(out)
        })
    }

    fn publish(&self, package: Package) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.publish_signed(package).await.map(|_| ()) })
    }

    fn get<'a>(&'a self, package_id: &'a str) -> BoxFuture<'a, Result<Option<Package>>> {
        Box::pin(self.get_package(package_id))
    }

    fn subscribe<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let mut g = self.running.lock().await;
            let r = g.as_mut().ok_or(RegistryError::NotRunning)?;
            let prefix = self
                .config
                .read()
                .map(|c| c.gossipsub.clone())
                .unwrap_or_default();
            let t = prefix.topic(topic);
            if r.topics.contains(&t) {
                return Ok(());
            }
            let mut sub = r
                .gossip
                .subscribe(t.clone())
                .await
                .map_err(|e| RegistryError::Network(e.to_string()))?;
            let (st, events, me) = (self.state.clone(), self.events.clone(), self.peer_id);
            r.tasks.push(tokio::spawn(async move {
                while let Some(m) = sub.recv().await {
                    if let Ok(a) = Announcement::decode(&m.message.data) {
                        let _ = ingest(&st, &events, a.record, me);
                    }
                }
            }));
            r.topics.insert(t);
            Ok(())
        })
    }
}

// The registry is used through `&self` from many tasks.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<P2PRegistry>();
    let _ = |r: Arc<P2PRegistry>| -> Arc<dyn Registry> { r };
};
