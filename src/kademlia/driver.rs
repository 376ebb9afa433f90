//! The thin tokio driver: one task owns a [`Kademlia`] core, feeds it the node's inbound DHT
//! messages, the clock and timeouts, and carries out its actions through the node. Callers
//! hold a cheap [`Dht`] handle.
//!
//! Time comes from tokio's clock (so tests can pause it); sends to connected peers use the
//! non-blocking path, and anything that may need a dial runs in its own task, so a slow peer
//! never stalls the DHT.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    Action, KadEvent, Kademlia, KademliaConfig, Key, Message, PeerRecord, Persisted, Progress,
    QueryError, QueryId, QueryOutcome, QueryStats, Record, RecordValidator, RoutingTableSnapshot,
};
use crate::identity::PeerId;
use crate::metrics::{DhtKind, DhtOutcome, Metrics};
use crate::node::{NodeError, NodeHandle};
use crate::wire::ProtocolId;

/// Errors from [`Dht`] calls.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DhtError {
    /// The query failed.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The DHT task has stopped (its node shut down).
    #[error("DHT is not running")]
    Stopped,
    /// Registering the protocol on the node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The configuration is invalid.
    #[error("invalid Kademlia configuration: {0}")]
    Config(String),
}

impl DhtError {
    /// True when a retry might succeed (timeouts, not-found while the network converges).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DhtError::Query(QueryError::Timeout | QueryError::NotFound | QueryError::NoPeers)
        )
    }
}

type Reply = oneshot::Sender<(QueryOutcome, QueryStats)>;

enum Command {
    Start {
        op: Op,
        reply: Reply,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    },
    Snapshot(oneshot::Sender<RoutingTableSnapshot>),
    StoreSizes(oneshot::Sender<(usize, usize)>),
    AddPeer(PeerId, crate::address::Multiaddr),
}

enum Op {
    FindNode(Key),
    Get(Bytes, Option<usize>),
    Put(Record, Option<usize>),
    Provide(Bytes),
    Providers(Bytes),
    Bootstrap,
}

/// Durable storage for a DHT (see [`Dht::spawn_with`]).
#[derive(Debug)]
pub struct DhtPersistence {
    /// Records kept from an earlier run: the record, its time left, and whether we
    /// published it.
    pub records: Vec<(Record, Duration, bool)>,
    /// Provider records kept from an earlier run: the key, the provider, its time left.
    pub providers: Vec<(Bytes, PeerRecord, Duration)>,
    /// Receives every record and provider record stored from now on.
    pub sink: mpsc::UnboundedSender<Persisted>,
}

/// DHT events kept for a lagging [`Dht::events`] receiver.
const EVENTS_CAPACITY: usize = 1024;

/// The DHT's events channel, made by the first [`Dht::events`] call: a broadcast channel
/// allocates all its slots at once (~150 KB for 1 024 events), and until someone listens
/// every event sent on it is dropped anyway.
type LazyEvents = Arc<OnceLock<broadcast::Sender<KadEvent>>>;

/// Handle to a node's DHT. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Dht {
    cmd: mpsc::UnboundedSender<Command>,
    events: LazyEvents,
    local: PeerId,
}

impl Dht {
    /// Starts the DHT on `node`: registers the protocol, seeds the routing table with the
    /// node's configured bootstrap peers and, if there are any, bootstraps in the background.
    pub fn spawn(
        node: &NodeHandle,
        config: KademliaConfig,
        validator: Option<Arc<dyn RecordValidator>>,
    ) -> Result<Dht, DhtError> {
        Self::spawn_with(node, config, validator, None)
    }

    /// Like [`Dht::spawn`], with durable storage: the records and provider records in
    /// `persistence` are put back first (validated, skipping expired ones), and every one
    /// stored from then on is sent to its sink.
    pub fn spawn_with(
        node: &NodeHandle,
        config: KademliaConfig,
        validator: Option<Arc<dyn RecordValidator>>,
        persistence: Option<DhtPersistence>,
    ) -> Result<Dht, DhtError> {
        config.validate().map_err(DhtError::Config)?;
        let protocol = ProtocolId::new(config.protocol_name.clone(), 1)
            .map_err(|e| DhtError::Config(e.to_string()))?;
        let inbound = node.register(protocol.clone())?;
        let now = now();
        let local = node.local_peer_id();
        let mut core = Kademlia::new(local, config, now);
        core.set_wall_clock(now, std::time::SystemTime::now());
        if let Some(v) = validator {
            core.set_validator(v);
        }
        core.set_listen_addrs(
            node.listen_addrs()
                .into_iter()
                .filter(|a| a.socket_addr().is_none_or(|s| !s.ip().is_unspecified()))
                .collect(),
        );
        let mut sink = None;
        if let Some(p) = persistence {
            for (record, left, local) in p.records {
                core.restore_record(now, record, now + left, local);
            }
            for (key, provider, left) in p.providers {
                core.restore_provider(now, key, provider, now + left);
            }
            core.set_persistence(true);
            sink = Some(p.sink);
        }
        let mut has_bootstrap = false;
        for addr in &node.config().bootstrap {
            if let Some(peer) = addr.peer_id() {
                core.add_bootstrap_peer(now, peer, addr.without_peer_id());
                has_bootstrap = true;
            }
        }
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let events = LazyEvents::default();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let node_events = node.events();
        let mut driver = Driver {
            core,
            node: node.clone(),
            protocol,
            waiters: HashMap::new(),
            events: events.clone(),
            failed_tx,
            sink,
            rng: rand::rngs::StdRng::from_rng(&mut rand::rng()),
            metrics: node.prometheus().clone(),
        };
        if has_bootstrap {
            let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            driver.core.bootstrap(now, &mut rng);
        }
        tokio::spawn(driver.run(cmd_rx, inbound, failed_rx, node_events));
        Ok(Dht { cmd, events, local })
    }

    /// Our identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Every DHT event (query progress and results, routing table changes, stored records).
    pub fn events(&self) -> broadcast::Receiver<KadEvent> {
        self.events
            .get_or_init(|| broadcast::channel(EVENTS_CAPACITY).0)
            .subscribe()
    }

    async fn run_op(
        &self,
        op: Op,
        progress: Option<mpsc::UnboundedSender<Progress>>,
    ) -> Result<(QueryOutcome, QueryStats), DhtError> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Start {
                op,
                reply,
                progress,
            })
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// Adds a known DHT server to the routing table.
    pub fn add_peer(&self, peer: PeerId, addr: crate::address::Multiaddr) {
        let _ = self.cmd.send(Command::AddPeer(peer, addr));
    }

    /// Joins the network through the routing table / bootstrap peers. Returns the routing
    /// table size afterwards.
    pub async fn bootstrap(&self) -> Result<(usize, QueryStats), DhtError> {
        match self.run_op(Op::Bootstrap, None).await? {
            (QueryOutcome::Bootstrap(r), s) => Ok((r?, s)),
            _ => Err(DhtError::Stopped),
        }
    }

    /// The k peers closest to `key` that answered.
    pub async fn find_closest_peers(
        &self,
        key: Key,
    ) -> Result<(Vec<PeerRecord>, QueryStats), DhtError> {
        match self.run_op(Op::FindNode(key), None).await? {
            (QueryOutcome::ClosestPeers(p), s) => Ok((p, s)),
            _ => Err(DhtError::Stopped),
        }
    }

    /// The record under `key`: returns as soon as one valid record is found.
    pub async fn get_record(&self, key: Bytes) -> Result<(Record, QueryStats), DhtError> {
        match self.run_op(Op::Get(key, Some(1)), None).await? {
            (QueryOutcome::GetRecord(r), s) => {
                let mut rs = r?;
                Ok((rs.swap_remove(0), s))
            }
            _ => Err(DhtError::Stopped),
        }
    }

    /// The records under `key` until `quorum` valid ones are found (or the lookup ends).
    pub async fn get_record_quorum(
        &self,
        key: Bytes,
        quorum: usize,
    ) -> Result<(Vec<Record>, QueryStats), DhtError> {
        match self.run_op(Op::Get(key, Some(quorum)), None).await? {
            (QueryOutcome::GetRecord(r), s) => Ok((r?, s)),
            _ => Err(DhtError::Stopped),
        }
    }

    /// Stores `record` on the closest peers; `quorum` remote stores are required
    /// (`None`: the configured `put_quorum`). Returns how many stored it.
    pub async fn put_record(
        &self,
        record: Record,
        quorum: Option<usize>,
    ) -> Result<(usize, QueryStats), DhtError> {
        match self.run_op(Op::Put(record, quorum), None).await? {
            (QueryOutcome::PutRecord(r), s) => Ok((r?, s)),
            _ => Err(DhtError::Stopped),
        }
    }

    /// Announces this node as a provider of `key` (re-announced periodically).
    pub async fn start_providing(&self, key: Bytes) -> Result<(usize, QueryStats), DhtError> {
        match self.run_op(Op::Provide(key), None).await? {
            (QueryOutcome::StartProviding(r), s) => Ok((r?, s)),
            _ => Err(DhtError::Stopped),
        }
    }

    /// Every provider of `key` the lookup finds.
    pub async fn get_providers(
        &self,
        key: Bytes,
    ) -> Result<(Vec<PeerRecord>, QueryStats), DhtError> {
        match self.run_op(Op::Providers(key), None).await? {
            (QueryOutcome::GetProviders(r), s) => Ok((r?, s)),
            _ => Err(DhtError::Stopped),
        }
    }

    /// Starts a provider lookup and streams providers as they are found; the receiver ends
    /// when the lookup does. Drop it to stop caring (the lookup runs to its end).
    pub fn get_providers_stream(&self, key: Bytes) -> mpsc::UnboundedReceiver<PeerRecord> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (reply, _done) = oneshot::channel();
        if self
            .cmd
            .send(Command::Start {
                op: Op::Providers(key),
                reply,
                progress: Some(tx),
            })
            .is_ok()
        {
            tokio::spawn(async move {
                while let Some(p) = rx.recv().await {
                    if let Progress::Providers { providers } = p {
                        for p in providers {
                            if out_tx.send(p).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
        out_rx
    }

    /// Bucket occupancy, peers and last-seen ages.
    pub async fn routing_table(&self) -> Result<RoutingTableSnapshot, DhtError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Snapshot(tx))
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }

    /// How many records and provider records (key, provider pairs) this node holds.
    pub async fn store_sizes(&self) -> Result<(usize, usize), DhtError> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::StoreSizes(tx))
            .map_err(|_| DhtError::Stopped)?;
        rx.await.map_err(|_| DhtError::Stopped)
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

struct Waiter {
    reply: Reply,
    progress: Option<mpsc::UnboundedSender<Progress>>,
}

struct Driver {
    core: Kademlia,
    node: NodeHandle,
    protocol: ProtocolId,
    waiters: HashMap<QueryId, Waiter>,
    events: LazyEvents,
    failed_tx: mpsc::UnboundedSender<(PeerId, Message)>,
    rng: rand::rngs::StdRng,
    sink: Option<mpsc::UnboundedSender<Persisted>>,
    metrics: Metrics,
}

/// The metric labels of a finished query.
fn query_labels(outcome: &QueryOutcome) -> (DhtKind, DhtOutcome) {
    let of = |e: &QueryError| match e {
        QueryError::Timeout => DhtOutcome::Timeout,
        QueryError::NotFound => DhtOutcome::NotFound,
        QueryError::QuorumFailed { .. } => DhtOutcome::QuorumFailed,
        QueryError::NoPeers => DhtOutcome::NoPeers,
    };
    let res = |r: Result<(), &QueryError>| r.map_or_else(of, |()| DhtOutcome::Ok);
    match outcome {
        QueryOutcome::ClosestPeers(p) => (
            DhtKind::FindNode,
            if p.is_empty() {
                DhtOutcome::NotFound
            } else {
                DhtOutcome::Ok
            },
        ),
        QueryOutcome::GetRecord(r) => (DhtKind::GetRecord, res(r.as_ref().map(|_| ()))),
        QueryOutcome::PutRecord(r) => (DhtKind::PutRecord, res(r.as_ref().map(|_| ()))),
        QueryOutcome::StartProviding(r) => (DhtKind::Provide, res(r.as_ref().map(|_| ()))),
        QueryOutcome::GetProviders(r) => (DhtKind::GetProviders, res(r.as_ref().map(|_| ()))),
        QueryOutcome::Bootstrap(r) => (DhtKind::Bootstrap, res(r.as_ref().map(|_| ()))),
    }
}

impl Driver {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::UnboundedReceiver<Command>,
        mut inbound: mpsc::Receiver<crate::node::InboundMessage>,
        mut failed_rx: mpsc::UnboundedReceiver<(PeerId, Message)>,
        mut node_events: broadcast::Receiver<crate::node::NodeEvent>,
    ) {
        self.metrics
            .dht()
            .routing_table
            .set(self.core.table_len() as i64);
        self.drain();
        loop {
            let deadline = tokio::time::Instant::from_std(self.core.next_timeout());
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                msg = inbound.recv() => match msg {
                    Some(m) => match Message::decode(&m.payload, self.core.message_limits()) {
                        Ok(msg) => {
                            tracing::trace!(local = %self.node.local_peer_id(), peer = %m.peer, conn = m.connection_id, id = msg.id(), "DHT message in");
                            self.core.handle_message(now(), m.peer, msg)
                        }
                        Err(e) => {
                            tracing::debug!(peer = %m.peer, "undecodable DHT message: {e}");
                            self.node.disconnect(m.peer);
                        }
                    },
                    None => return,
                },
                Some((peer, msg)) = failed_rx.recv() => self.core.on_send_failed(now(), peer, &msg),
                ev = node_events.recv() => match ev {
                    Ok(crate::node::NodeEvent::ConnectionClosed { peer, .. }) => {
                        self.core.on_disconnected(now(), peer);
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    // The wall clock may have been stepped since: follow it.
                    self.core.set_wall_clock(now(), std::time::SystemTime::now());
                    self.core.handle_timeout(now(), &mut self.rng);
                }
            }
            self.drain();
        }
    }

    fn command(&mut self, c: Command) {
        let now = now();
        match c {
            Command::Start {
                op,
                reply,
                progress,
            } => {
                let id = match op {
                    Op::FindNode(k) => self.core.find_closest_peers(now, k),
                    Op::Get(k, q) => self.core.get_record(now, k, q),
                    Op::Put(r, q) => self.core.put_record(now, r, q),
                    Op::Provide(k) => self.core.start_providing(now, k),
                    Op::Providers(k) => self.core.get_providers(now, k),
                    Op::Bootstrap => self.core.bootstrap(now, &mut self.rng),
                };
                self.waiters.insert(id, Waiter { reply, progress });
            }
            Command::StoreSizes(tx) => {
                let _ = tx.send((
                    self.core.record_store().len(),
                    self.core.provider_store().len(),
                ));
            }
            Command::Snapshot(tx) => {
                let _ = tx.send(self.core.routing_table_snapshot(now));
            }
            Command::AddPeer(peer, addr) => self.core.add_address(now, peer, addr),
        }
    }

    fn drain(&mut self) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send {
                    peer,
                    addrs,
                    message,
                } => self.send(peer, addrs, message),
                Action::Event(e) => {
                    match &e {
                        KadEvent::Progress { query, progress } => {
                            if let Some(tx) =
                                self.waiters.get(query).and_then(|w| w.progress.as_ref())
                            {
                                let _ = tx.send(progress.clone());
                            }
                        }
                        KadEvent::Finished {
                            query,
                            outcome,
                            stats,
                        } => {
                            let (kind, result) = query_labels(outcome);
                            self.metrics.dht().query(kind, result, stats.duration);
                            if let Some(w) = self.waiters.remove(query) {
                                let _ = w.reply.send((outcome.clone(), stats.clone()));
                            }
                        }
                        KadEvent::PeerAdded(_) | KadEvent::PeerRemoved(_) => {
                            self.metrics
                                .dht()
                                .routing_table
                                .set(self.core.table_len() as i64);
                        }
                        _ => {}
                    }
                    if let Some(tx) = self.events.get() {
                        let _ = tx.send(e);
                    }
                }
                Action::Persist(p) => {
                    if let Some(tx) = &self.sink {
                        let _ = tx.send(p);
                    }
                }
            }
        }
    }

    fn send(&mut self, peer: PeerId, addrs: Vec<crate::address::Multiaddr>, message: Message) {
        let payload = message.encode();
        tracing::trace!(local = %self.node.local_peer_id(), %peer, id = message.id(), "DHT message out");
        // Fast path: a connected peer with room in its queue.
        if self.node.is_connected(&peer)
            && self
                .node
                .try_send(peer, &self.protocol, payload.clone())
                .is_ok()
        {
            return;
        }
        for a in addrs {
            self.node.add_address(peer, a);
        }
        let (node, protocol, failed) = (
            self.node.clone(),
            self.protocol.clone(),
            self.failed_tx.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = node.send(peer, &protocol, payload).await {
                tracing::debug!(%peer, "DHT send failed: {e}");
                let _ = failed.send((peer, message));
            }
        });
    }
}
