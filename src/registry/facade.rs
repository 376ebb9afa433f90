//! [`P2PRegistry`], [`P2PRegistryBuilder`] and the object-safe [`Registry`] trait: the
//! seed's API over one node running the DHT, the gossip mesh, the RPC layer and the content
//! service.
//!
//! The handle is thin. Every registry decision (admission, ownership, the catalogue,
//! anti-entropy, polls) is made by the sans-IO [`super::core::RegistryCore`], owned by one
//! driver task ([`super::driver`]); the handle sends it commands and waits for answers.
//! What stays here is the wiring (starting and stopping the services in order), content
//! (blobs kept in the data directory or in memory, served and fetched through the content
//! service) and the light node's search through full peers.
//!
//! Publish (the seed's "Package → Local Cache → DHT Announce → Gossipsub Broadcast"): the
//! core stamps, signs and admits the record; once its store write is durable the driver
//! puts it in the DHT and announces it on the packages, category and name topics.
//! Receivers admit it by the same rules and emit a [`PackageUpdate`]. A node that was away
//! catches up through anti-entropy.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::config::{BootstrapNode, P2PConfig};
use super::core::{CoreConfig, RegistryCore, StoredName};
use super::driver::{self, Command, CoreHandle, Counters, Services, add, read};
use super::error::{RegistryError, Result};
use super::protocol::{
    PackageRecordValidator, SearchProtocol, SyncProtocol, SyncRequest, SyncResponse, content_key,
    name_key, package_key,
};
use super::signed::{NameAction, SignedPackage};
use super::store::{Batch, DhtRecordEntry, ProviderEntry, Store, instant_to_unix_ms, unix_ms_now};
use super::types::{NetworkStats, Package, PackageUpdate, Query, SearchResult};
use super::writer::StoreWriter;
use crate::Multiaddr;
use crate::discovery::{Discovery, DiscoveryConfig, DiscoveryMethod};
use crate::gossip::{Gossip, Topic};
use crate::identity::{Keypair, PeerId};
use crate::kademlia::{Dht, DhtError, DhtPersistence, Persisted, QueryError, Record};
use crate::metrics::Metrics;
use crate::node::{Node, NodeConfig, NodeHandle};
use crate::rpc::Rpc;
use crate::rpc::content::{ContentError, ContentHash, ContentService, ContentSource};

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
    metrics: Option<Metrics>,
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

    /// Records into `metrics` (default: a fresh [`Metrics`] of the registry's own). Every
    /// layer of the node records into it, across stops and starts.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
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
            shared: Arc::new(Shared::default()),
            metrics: self.metrics.unwrap_or_default(),
        })
    }
}

/// Content and counters shared by the handle and its background tasks.
#[derive(Default)]
struct Shared {
    /// The on-disk store while running with a data directory (blobs are written directly;
    /// records go through the driver's store writer).
    store: RwLock<Option<Arc<Store>>>,
    /// Content held in memory (no data directory), by hash.
    blobs: RwLock<HashMap<ContentHash, Bytes>>,
    counters: Arc<Counters>,
    latencies_us: Mutex<Vec<u64>>,
}

/// What runs between `start` and `stop`.
struct Running {
    node: NodeHandle,
    dht: Dht,
    gossip: Gossip,
    rpc: Rpc,
    content: ContentService,
    discovery: Discovery,
    core: CoreHandle,
    driver: JoinHandle<()>,
    writer: Option<Arc<StoreWriter>>,
    topics: HashSet<Topic>,
    tasks: Vec<JoinHandle<()>>,
    light: bool,
}

/// Who owns a package name, as this node holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameOwnership {
    /// The owner's PeerId.
    pub owner: PeerId,
    /// Whether the claim is settled here (its race window passed and peers confirmed it).
    pub settled: bool,
    /// Keys the owner allowed to publish versions.
    pub maintainers: Vec<PeerId>,
}

/// One connected peer, as [`P2PRegistry::peers`] reports it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PeerSummary {
    /// The peer's identity.
    pub peer: PeerId,
    /// The address of the connection's far end.
    pub address: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The transport carrying the connection (`tcp`, `quic`, `memory`).
    pub transport: String,
    /// How the peer was found (bootstrap, mDNS, DHT…), if discovery knows it.
    pub discovered_by: Option<String>,
    /// Its standing with our request-response layer.
    pub reputation: Option<crate::rpc::Reputation>,
    /// A round trip measured just now, in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// A registry node (see the module docs).
pub struct P2PRegistry {
    config: RwLock<P2PConfig>,
    keypair: Keypair,
    peer_id: PeerId,
    running: tokio::sync::Mutex<Option<Running>>,
    listen: Mutex<Vec<String>>,
    events: broadcast::Sender<PackageUpdate>,
    shared: Arc<Shared>,
    metrics: Metrics,
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

/// What the store held at start: name states and records, decoded.
struct Loaded {
    names: Vec<StoredName>,
    records: Vec<SignedPackage>,
}

fn load_store(store: &Store) -> Result<Loaded> {
    let names = store
        .owners()?
        .into_iter()
        .filter_map(|(_, e)| postcard::from_bytes::<StoredName>(&e.claim).ok())
        .collect();
    let mut records: Vec<SignedPackage> = store
        .records()?
        .into_iter()
        .filter_map(|(_, bytes)| SignedPackage::decode(&bytes).ok())
        .collect();
    // Older stores kept no name states: earliest records first, so each name's first
    // record is its claim again.
    records.sort_by_key(|r| r.claim_key());
    Ok(Loaded { names, records })
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

    /// The Prometheus instruments this registry and its node record into.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric in the Prometheus text format (0.0.4), for a daemon to serve on
    /// `/metrics` with the content type [`Metrics::TEXT_CONTENT_TYPE`]
    /// (`text/plain; version=0.0.4; charset=utf-8`); [`P2PRegistry::metrics`] gives the
    /// handle, whose [`Metrics::encode_openmetrics`] serves a scraper asking for
    /// OpenMetrics. The list and meaning of each metric is in [`crate::metrics`]. Works
    /// running or stopped (a stopped node reports its counters and no open connection).
    pub fn metrics_text(&self) -> String {
        self.refresh_scraped_gauges();
        self.metrics.encode_text()
    }

    /// [`P2PRegistry::metrics_text`] in the OpenMetrics text format (content type
    /// [`Metrics::OPENMETRICS_CONTENT_TYPE`]).
    pub fn metrics_openmetrics(&self) -> String {
        self.refresh_scraped_gauges();
        self.metrics.encode_openmetrics()
    }

    /// The gauges read at scrape time: the store's size on disk.
    fn refresh_scraped_gauges(&self) {
        let size = self
            .shared
            .store
            .read()
            .ok()
            .and_then(|s| s.as_ref().and_then(|s| s.db_file_size()))
            .unwrap_or(0);
        self.metrics.registry().store_size.set(size as i64);
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
        // The core, with what the store kept (read and verified on a blocking thread).
        let mut core = RegistryCore::new(
            self.keypair.clone(),
            CoreConfig::from_registry(&config.registry),
        );
        if let Some(store) = &store {
            let s = store.clone();
            core = tokio::task::spawn_blocking(move || {
                let loaded = load_store(&s)?;
                let (now, wall) = (tokio::time::Instant::now().into_std(), Utc::now());
                for n in &loaded.names {
                    core.restore_name(now, wall, n);
                }
                for r in loaded.records {
                    core.restore_record(now, wall, r);
                }
                Ok::<_, RegistryError>(core)
            })
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))??;
        }
        let writer = match &store {
            Some(s) => Some(Arc::new(
                StoreWriter::spawn(s.clone(), self.metrics.clone()).map_err(|e| {
                    RegistryError::Storage(format!("cannot start the store writer: {e}"))
                })?,
            )),
            None => None,
        };
        if let Ok(mut s) = self.shared.store.write() {
            *s = store.clone();
        }
        let node =
            match Node::spawn_with_metrics(self.keypair.clone(), node_config, self.metrics.clone())
                .await
            {
                Ok(n) => n,
                Err(e) => {
                    self.detach_store(writer).await;
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
                    self.detach_store(writer).await;
                    return Err(e);
                }
            },
            None => None,
        };
        let running = match self
            .start_services(&node, &config, core, writer.clone(), persistence)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                node.shutdown().await;
                self.detach_store(writer).await;
                return Err(e);
            }
        };
        if let Some(store) = &store {
            self.serve_held_content(&running, store).await?;
        }
        if let Ok(mut l) = self.listen.lock() {
            *l = node.listen_addrs().iter().map(|a| a.to_string()).collect();
        }
        *slot = Some(running);
        Ok(())
    }

    /// Serves the content we hold and announces it again (our addresses may have changed
    /// since the provider records others keep were made). A blob no record refers to is
    /// what a crash between storing it and committing its record leaves: removed.
    async fn serve_held_content(&self, running: &Running, store: &Arc<Store>) -> Result<()> {
        let referenced: HashSet<ContentHash> = running
            .core
            .ask(Command::WithContent)
            .await?
            .iter()
            .filter_map(|r| r.package.content_hash.as_deref()?.parse().ok())
            .collect();
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
                running.core.send(Command::Provider(h, self.peer_id));
                held.push(h);
            }
        }
        let (dht, counters) = (running.dht.clone(), self.shared.counters.clone());
        tokio::spawn(async move {
            for h in held {
                add(&counters.dht_queries);
                if dht.start_providing(content_key(&h)).await.is_err() {
                    add(&counters.dht_failures);
                }
            }
        });
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
        core: RegistryCore,
        writer: Option<Arc<StoreWriter>>,
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
        if let (Some(rx), Some(w)) = (persisted, writer.clone()) {
            tasks.push(tokio::spawn(persist_dht(rx, w)));
        }
        let light = !config.registry.catalogue;
        let packages_topic = config.gossipsub.topic(&config.registry.packages_topic);
        let names_topic = config
            .gossipsub
            .topic(&format!("{}-names", config.registry.packages_topic));
        // A seeder fetches the content of what it admits.
        let (replicate_tx, replicate_rx) = tokio::sync::mpsc::unbounded_channel();
        let (core, driver) = driver::spawn(
            core,
            Services {
                node: node.clone(),
                dht: dht.clone(),
                gossip: gossip.clone(),
                rpc: rpc.clone(),
                writer: writer.clone(),
                events: self.events.clone(),
                gossipsub: config.gossipsub.clone(),
                packages_topic: packages_topic.clone(),
                names_topic: names_topic.clone(),
                counters: self.shared.counters.clone(),
                replicate: config.registry.replicate_content.then_some(replicate_tx),
            },
        );
        let fail = |e: RegistryError, core: &CoreHandle, driver: &JoinHandle<()>| {
            let _ = core;
            driver.abort();
            e
        };
        // Serve sync (and, full nodes, search) from the core.
        let c = core.clone();
        if let Err(e) = rpc
            .register::<SyncProtocol, _, _>(move |from, req| {
                let c = c.clone();
                async move {
                    c.ask(|r| Command::Answer(from, req, r))
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await
        {
            return Err(fail(net("rpc", e.to_string()), &core, &driver));
        }
        if !light {
            let c = core.clone();
            if let Err(e) = rpc
                .register::<SearchProtocol, _, _>(move |_, q: Query| {
                    let c = c.clone();
                    async move {
                        c.ask(|r| Command::Search(q, r))
                            .await
                            .map_err(|e| e.to_string())
                    }
                })
                .await
            {
                return Err(fail(net("rpc", e.to_string()), &core, &driver));
            }
        }
        if config.registry.replicate_content {
            let every = Duration::from_secs(config.registry.sync_interval.max(1));
            tasks.push(tokio::spawn(replicate(
                replicate_rx,
                every,
                Seeder {
                    shared: self.shared.clone(),
                    content: content.clone(),
                    dht: dht.clone(),
                    node: node.clone(),
                    core: core.clone(),
                    me: self.peer_id,
                },
            )));
        }
        // Announcements: full nodes hear the whole packages topic; every node hears the
        // names topic (statements are few). A light node hears only what it subscribes to.
        let mut topics = HashSet::new();
        if !light {
            match gossip.subscribe(packages_topic.clone()).await {
                Ok(sub) => tasks.push(driver::forward_announcements(sub, core.clone())),
                Err(e) => return Err(fail(net("gossip", e.to_string()), &core, &driver)),
            }
            topics.insert(packages_topic);
        }
        match gossip.subscribe(names_topic.clone()).await {
            Ok(sub) => tasks.push(driver::forward_statements(sub, core.clone())),
            Err(e) => return Err(fail(net("gossip", e.to_string()), &core, &driver)),
        }
        topics.insert(names_topic);
        let discovery = match Discovery::spawn(
            node.clone(),
            Some(dht.clone()),
            DiscoveryConfig::from_bootstrap(&config.bootstrap),
        ) {
            Ok(d) => d,
            Err(e) => return Err(fail(net("discovery", e.to_string()), &core, &driver)),
        };
        Ok(Running {
            node: node.clone(),
            dht,
            gossip,
            rpc,
            content,
            discovery,
            core,
            driver,
            writer,
            topics,
            tasks,
            light,
        })
    }

    /// Stops the node: closes every connection, releases the listen ports, writes what is
    /// queued and releases the data directory. Everything `start` started ends here.
    pub async fn stop(&self) -> Result<()> {
        let Some(r) = self.running.lock().await.take() else {
            return Err(RegistryError::NotRunning);
        };
        for t in &r.tasks {
            t.abort();
        }
        r.discovery.stop();
        // The driver carries out what it queued, then ends.
        let _ = r.core.ask(Command::Shutdown).await;
        let _ = r.driver.await;
        r.node.shutdown().await;
        self.detach_store(r.writer).await;
        if let Ok(mut l) = self.listen.lock() {
            l.clear();
        }
        self.metrics.clear_snapshots();
        Ok(())
    }

    /// Closes the writer (it finishes its queue) and drops the store, with its lock on the
    /// data directory, once the last task holding it is done.
    async fn detach_store(&self, writer: Option<Arc<StoreWriter>>) {
        if let Some(thread) = writer.and_then(|w| w.close()) {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        if let Ok(mut s) = self.shared.store.write() {
            *s = None;
        }
    }

    async fn core(&self) -> Result<CoreHandle> {
        let g = self.running.lock().await;
        Ok(g.as_ref().ok_or(RegistryError::NotRunning)?.core.clone())
    }

    /// Waits until the catalogue has been synced once with every connected peer (or
    /// `timeout` passes); returns whether it was.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (core, light) = {
                let g = self.running.lock().await;
                match g.as_ref() {
                    Some(r) => (r.core.clone(), r.light),
                    None => return false,
                }
            };
            if light {
                // A light node keeps no catalogue to sync.
                return true;
            }
            if core
                .ask(Command::Snapshot)
                .await
                .is_ok_and(|s| s.synced_with_all)
            {
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
        let content = match self.core().await {
            Ok(c) => c
                .ask(|r| Command::Record(package_id.to_string(), r))
                .await
                .ok()
                .flatten()
                .and_then(|s| s.package.content_hash.clone())
                .and_then(|h| h.parse::<ContentHash>().ok()),
            Err(_) => return false,
        };
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
        let (node, dht, gossip, core, topics) = {
            let g = self.running.lock().await;
            let Some(r) = g.as_ref() else {
                return NetworkStats::default();
            };
            (
                r.node.clone(),
                r.dht.clone(),
                r.gossip.clone(),
                r.core.clone(),
                r.topics.len(),
            )
        };
        let snap = core.ask(Command::Snapshot).await.unwrap_or_default();
        let connected = node.connected_count();
        let total = dht
            .routing_table()
            .await
            .map(|t| t.len)
            .unwrap_or(0)
            .max(connected);
        let gm = gossip.metrics().await.unwrap_or_default();
        let received = gm.delivered + gm.duplicates + gm.rejected;
        let mut lat = self
            .shared
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        lat.sort_unstable();
        let pct = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
                .map_or(0.0, |v| *v as f64 / 1000.0)
        };
        let c = &self.shared.counters;
        let (q, f) = (read(&c.dht_queries), read(&c.dht_failures));
        let (g, h) = (read(&c.gets), read(&c.get_hits));
        let (dht_records, dht_provider_records) = dht.store_sizes().await.unwrap_or((0, 0));
        NetworkStats {
            connected_peers: connected,
            total_peers: total,
            cached_packages: snap.records,
            provider_records: snap.providers,
            gossip_topics: topics,
            catalogue_size: snap.catalogue,
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

    /// Every version of `name` this node holds, as signed records, lowest version first.
    pub async fn versions(&self, name: &str) -> Result<Vec<SignedPackage>> {
        let core = self.core().await?;
        Ok(core
            .ask(|r| Command::Versions(name.to_string(), r))
            .await?
            .into_iter()
            .map(|r| (*r).clone())
            .collect())
    }

    /// The signed record of `package_id` (`name@version`) if this node holds it: what a
    /// client checks the signature of.
    pub async fn signed_record(&self, package_id: &str) -> Result<Option<SignedPackage>> {
        let core = self.core().await?;
        Ok(core
            .ask(|r| Command::Record(package_id.to_string(), r))
            .await?
            .map(|r| (*r).clone()))
    }

    /// The peers known to provide the content with this hash (this node included when it
    /// holds it).
    pub async fn content_providers(&self, hash: &ContentHash) -> Result<Vec<PeerId>> {
        let core = self.core().await?;
        let mut peers = core.ask(|r| Command::Providers(*hash, r)).await?;
        if self.local_content(hash).await.is_some() && !peers.contains(&self.local_peer_id()) {
            peers.push(self.local_peer_id());
        }
        Ok(peers)
    }

    /// The connected peers: address, direction, transport, how each was discovered, its
    /// request reputation, and a fresh round-trip time (`None` if the ping failed within
    /// `ping_timeout`). The pings run concurrently.
    pub async fn peers(&self, ping_timeout: Duration) -> Result<Vec<PeerSummary>> {
        let (node, _, _, rpc, _) = self.services().await?;
        let methods: HashMap<PeerId, DiscoveryMethod> =
            self.discovered_peers().await.into_iter().collect();
        let conns = node.connections();
        let pings = conns.iter().map(|c| {
            let node = node.clone();
            let peer = c.remote_peer;
            async move {
                tokio::time::timeout(ping_timeout, node.ping(peer))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            }
        });
        let rtts = futures_util::future::join_all(pings).await;
        let mut out = Vec::with_capacity(conns.len());
        for (c, rtt) in conns.into_iter().zip(rtts) {
            let reputation = rpc.reputation(c.remote_peer).await.ok();
            out.push(PeerSummary {
                peer: c.remote_peer,
                address: c.remote_addr.to_string(),
                direction: format!("{:?}", c.direction).to_lowercase(),
                transport: format!("{:?}", c.kind).to_lowercase(),
                discovered_by: methods.get(&c.remote_peer).map(|m| format!("{m:?}")),
                reputation,
                rtt_ms: rtt.map(|d| d.as_secs_f64() * 1000.0),
            });
        }
        out.sort_by_key(|p| p.peer);
        Ok(out)
    }

    /// Who owns `name` in this node's view: the owner, whether the claim is settled, and
    /// the maintainers. `None` when no record of the name is known here.
    pub async fn owner_of(&self, name: &str) -> Result<Option<NameOwnership>> {
        let core = self.core().await?;
        Ok(core
            .ask(|r| Command::Owner(name.to_string(), r))
            .await?
            .map(|(owner, settled, maintainers)| NameOwnership {
                owner,
                settled,
                maintainers,
            }))
    }

    /// As the owner of `name`, allows `key` to publish versions of it. The name's claim
    /// must be settled.
    pub async fn add_maintainer(&self, name: &str, key: PeerId) -> Result<()> {
        self.name_action(name, NameAction::AddMaintainer(key)).await
    }

    /// As the owner of `name`, takes `key`'s right to publish. The versions `key` published
    /// that this node holds now stay valid everywhere; any other version of `key`, however
    /// it is dated, is refused from then on.
    pub async fn remove_maintainer(&self, name: &str, key: PeerId) -> Result<()> {
        self.name_action(
            name,
            NameAction::RemoveMaintainer {
                key,
                keep: Vec::new(),
            },
        )
        .await
    }

    /// As the owner of `name`, hands the name to `to`. This node's versions that it holds
    /// now stay valid; it may publish no more.
    pub async fn transfer_name(&self, name: &str, to: PeerId) -> Result<()> {
        self.name_action(
            name,
            NameAction::Transfer {
                to,
                keep: Vec::new(),
            },
        )
        .await
    }

    async fn name_action(&self, name: &str, action: NameAction) -> Result<()> {
        let core = self.core().await?;
        core.ask(|reply| Command::NameAction {
            name: name.to_string(),
            action,
            reply,
        })
        .await?
    }

    /// Deprecates `name@version`: re-signs it (as its owner or a maintainer) with the
    /// deprecated flag and announces it.
    pub async fn deprecate(&self, package_id: &str) -> Result<Package> {
        let core = self.core().await?;
        let record = core
            .ask(|r| Command::Record(package_id.to_string(), r))
            .await?
            .ok_or_else(|| RegistryError::InvalidPackage(format!("{package_id} is not known")))?;
        self.publish_record(record.package.clone(), true).await
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
        let source = keep_blob(&self.shared, hash, bytes).await?;
        svc.serve_content(hash, source)
            .await
            .map_err(|e| RegistryError::Storage(e.to_string()))?;
        let published = match self.publish_record(package, false).await {
            Ok(p) => p,
            Err(e) => {
                // Refused: the content was not published, so it is not kept or served
                // (unless it already was, for another package).
                if !already_held {
                    svc.stop_serving(&hash);
                    if let Ok(mut b) = self.shared.blobs.write() {
                        b.remove(&hash);
                    }
                    let store = self.shared.store.read().ok().and_then(|s| s.clone());
                    if let Some(store) = store {
                        let _ = tokio::task::spawn_blocking(move || store.remove_blob(&hash)).await;
                    }
                }
                return Err(e);
            }
        };
        if let Ok(core) = self.core().await {
            core.send(Command::Provider(hash, self.peer_id));
        }
        let counters = self.shared.counters.clone();
        tokio::spawn(async move {
            add(&counters.dht_queries);
            if dht.start_providing(content_key(&hash)).await.is_err() {
                add(&counters.dht_failures);
            }
        });
        Ok(published)
    }

    /// Downloads the content of `package_id` from its providers, verified by hash.
    pub async fn fetch_content(&self, package_id: &str) -> Result<Bytes> {
        let (node, dht, _, _, svc) = self.services().await?;
        let core = self.core().await?;
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
        let mut providers = core.ask(|r| Command::Providers(hash, r)).await?;
        providers.retain(|p| *p != self.peer_id);
        if let Some(bytes) = self.local_content(&hash).await {
            add(&self.shared.counters.get_hits);
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
                        .after_fetch(&svc, &dht, &core, hash, bytes, started.elapsed())
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
        self.after_fetch(&svc, &dht, &core, hash, bytes, started.elapsed())
            .await
    }

    /// After a verified download: keep and serve the content, announce ourselves.
    async fn after_fetch(
        &self,
        svc: &ContentService,
        dht: &Dht,
        core: &CoreHandle,
        hash: ContentHash,
        bytes: Bytes,
        took: Duration,
    ) -> Result<Bytes> {
        self.record_latency(took);
        // Now a provider too (and the blob is kept, with a data directory).
        if let Ok(source) = keep_blob(&self.shared, hash, bytes.clone()).await {
            let _ = svc.serve_content(hash, source).await;
        }
        core.send(Command::Provider(hash, self.peer_id));
        let (counters, dht) = (self.shared.counters.clone(), dht.clone());
        tokio::spawn(async move {
            add(&counters.dht_queries);
            if dht.start_providing(content_key(&hash)).await.is_err() {
                add(&counters.dht_failures);
            }
        });
        Ok(bytes)
    }

    /// What this node keeps locally: content blobs it holds (and serves) and the size of
    /// its database file in bytes (0 without a data directory).
    pub async fn storage(&self) -> (usize, u64) {
        let in_memory: HashSet<ContentHash> = self
            .shared
            .blobs
            .read()
            .map(|b| b.keys().copied().collect())
            .unwrap_or_default();
        let Some(store) = self.shared.store.read().ok().and_then(|s| s.clone()) else {
            return (in_memory.len(), 0);
        };
        tokio::task::spawn_blocking(move || {
            let mut held = in_memory;
            held.extend(store.blobs().unwrap_or_default());
            let db = std::fs::metadata(store.dir().join(super::store::DB_FILE))
                .map(|m| m.len())
                .unwrap_or(0);
            (held.len(), db)
        })
        .await
        .unwrap_or((0, 0))
    }

    /// Content this node holds itself, from memory or the data directory (verified).
    async fn local_content(&self, hash: &ContentHash) -> Option<Bytes> {
        if let Some(b) = self
            .shared
            .blobs
            .read()
            .ok()
            .and_then(|b| b.get(hash).cloned())
        {
            return Some(b);
        }
        let store = self.shared.store.read().ok().and_then(|s| s.clone())?;
        let h = *hash;
        tokio::task::spawn_blocking(move || store.read_blob(&h).ok().flatten())
            .await
            .ok()
            .flatten()
            .map(Bytes::from)
    }

    fn record_latency(&self, d: Duration) {
        if let Ok(mut l) = self.shared.latencies_us.lock() {
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
        add(&self.shared.counters.dht_queries);
        match f.await {
            Ok(v) => Ok(v),
            Err(e) => {
                add(&self.shared.counters.dht_failures);
                Err(dht_error(e))
            }
        }
    }

    /// Hands a publish to the core and waits until it is durable and announced.
    async fn publish_record(&self, package: Package, deprecated: bool) -> Result<Package> {
        let core = self.core().await?;
        let started = Instant::now();
        let record = core
            .ask(|reply| Command::Publish {
                package,
                deprecated,
                reply,
            })
            .await??;
        // The core answers once the record's store write is durable.
        self.metrics
            .registry()
            .publish_durable
            .observe(started.elapsed().as_secs_f64());
        Ok(record.package.clone())
    }

    async fn get_package(&self, package_id: &str) -> Result<Option<Package>> {
        let (_, dht, _, _, _) = self.services().await?;
        let core = self.core().await?;
        add(&self.shared.counters.gets);
        let (name, version) = match package_id.split_once('@') {
            Some((n, v)) => (n, Some(v)),
            None => (package_id, None),
        };
        let local = match version {
            Some(_) => {
                core.ask(|r| Command::Record(package_id.to_string(), r))
                    .await?
            }
            None => core.ask(|r| Command::Latest(name.to_string(), r)).await?,
        };
        if let Some(r) = local {
            add(&self.shared.counters.get_hits);
            return Ok(Some(r.package.clone()));
        }
        let key = match version {
            Some(_) => package_key(package_id),
            None => name_key(name),
        };
        let started = Instant::now();
        add(&self.shared.counters.dht_queries);
        let found = dht.get_record(key).await;
        if found.is_err() {
            add(&self.shared.counters.dht_failures);
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
                // Admitted by the same rules as any record: a record of a name this node
                // holds for another key is not an answer.
                match core.ask(|r| Command::DhtRecord(s, r)).await? {
                    Err(RegistryError::NameOwned { .. }) => Ok(None),
                    _ => Ok(Some(package)),
                }
            }
            // The lookup ended without the record: the network does not have it. A timeout,
            // or nobody to ask, is an error (transient), not an answer.
            Err(DhtError::Query(QueryError::NotFound)) => Ok(None),
            Err(e) => Err(dht_error(e)),
        }
    }
}

/// Writes what the DHT stores through the store writer, in batches of whatever queued up.
async fn persist_dht(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Persisted>,
    writer: Arc<StoreWriter>,
) {
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
        writer.submit(batch);
    }
}

/// What a seeder's replication task works with.
struct Seeder {
    shared: Arc<Shared>,
    content: ContentService,
    dht: Dht,
    node: NodeHandle,
    core: CoreHandle,
    me: PeerId,
}

/// A seeder's replication: newly admitted records at once; every interval (and first
/// soon after start), whatever content is still missing (held before a restart but not
/// kept, or whose providers were unreachable before).
async fn replicate(
    mut admitted: tokio::sync::mpsc::UnboundedReceiver<Arc<SignedPackage>>,
    every: Duration,
    s: Seeder,
) {
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = admitted.recv() => match r {
                Some(r) => replicate_one(&s, &r).await,
                None => return,
            },
            _ = sweep.tick() => {
                let Ok(all) = s.core.ask(Command::WithContent).await else { return };
                for r in all {
                    replicate_one(&s, &r).await;
                }
            }
        }
    }
}

/// A seeder's copy of `record`'s content: fetched from its providers (verified), kept,
/// served, and announced in the DHT. Failures are left for the next sweep to retry.
async fn replicate_one(s: &Seeder, record: &SignedPackage) {
    let Some(hash) = record
        .package
        .content_hash
        .as_deref()
        .and_then(|h| h.parse::<ContentHash>().ok())
    else {
        return;
    };
    if s.content.is_serving(&hash) {
        return;
    }
    let mut providers = s
        .core
        .ask(|r| Command::Providers(hash, r))
        .await
        .unwrap_or_default();
    if let Ok((found, _)) = s.dht.get_providers(content_key(&hash)).await {
        providers.extend(found.into_iter().map(|p| {
            for a in p.addrs {
                s.node.add_address(p.peer, a);
            }
            p.peer
        }));
    }
    providers.sort();
    providers.dedup();
    providers.retain(|p| *p != s.me);
    if providers.is_empty() {
        return;
    }
    let Ok(bytes) = s.content.fetch_content(hash, &providers, None).await else {
        return;
    };
    // Kept like our own content, so a restarted seeder still serves it.
    let Ok(source) = keep_blob(&s.shared, hash, bytes).await else {
        return;
    };
    if s.content.serve_content(hash, source).await.is_ok() {
        s.core.send(Command::Provider(hash, s.me));
        let _ = s.dht.start_providing(content_key(&hash)).await;
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

/// Stores a blob content-addressed in the data directory (atomically) and returns the
/// source to serve it from; without a data directory, keeps the bytes in memory and serves
/// them from there.
async fn keep_blob(st: &Shared, hash: ContentHash, bytes: Bytes) -> Result<ContentSource> {
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

impl Registry for P2PRegistry {
    fn search<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Vec<SearchResult>>> {
        Box::pin(async move {
            let (node, _, _, rpc, _) = self.services().await?;
            let (core, light) = {
                let g = self.running.lock().await;
                let r = g.as_ref().ok_or(RegistryError::NotRunning)?;
                (r.core.clone(), r.light)
            };
            if !light {
                return core.ask(|r| Command::Search(query.clone(), r)).await;
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
        Box::pin(async move { self.publish_record(package, false).await.map(|_| ()) })
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
            let sub = r
                .gossip
                .subscribe(t.clone())
                .await
                .map_err(|e| RegistryError::Network(e.to_string()))?;
            // The same path as the packages topic: one admission, one set of effects.
            r.tasks
                .push(driver::forward_announcements(sub, r.core.clone()));
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
