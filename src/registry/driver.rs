//! The registry driver: one tokio task owns the [`RegistryCore`], feeds it the node's
//! connection events, gossip announcements, sync answers, the clocks and commands from
//! the [`super::P2PRegistry`] handle, and carries out the effects it asks for (store
//! writes, gossip publishes, DHT puts, sync requests, content replication, update events).
//!
//! Slow work never runs on the task: every request, DHT put, gossip publish and durable
//! store write is spawned, and its outcome comes back as a command. The monotonic time
//! comes from tokio's clock (tests can pause it), the wall-clock time from the system
//! clock, and the core's randomness from a seeded `StdRng`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::core::{Effect, RegistryCore, Ticket};
use super::error::{RegistryError, Result};
use super::protocol::{
    Announcement, SyncProtocol, SyncRequest, SyncResponse, name_key, package_key,
};
use super::signed::{NameAction, NameStatement, SignedPackage};
use super::types::{PackageUpdate, Query, SearchResult, UpdateType};
use super::writer::StoreWriter;
use crate::gossip::{Gossip, GossipsubConfig, Topic};
use crate::identity::PeerId;
use crate::kademlia::{Dht, Record};
use crate::node::{NodeEvent, NodeHandle};
use crate::rpc::Rpc;
use crate::rpc::content::ContentHash;

/// Counters the facade reports in `stats()`, shared with the spawned work.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) dht_queries: AtomicU64,
    pub(crate) dht_failures: AtomicU64,
    pub(crate) gets: AtomicU64,
    pub(crate) get_hits: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn add(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub(crate) fn read(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// What the core holds, in numbers.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) records: usize,
    pub(crate) catalogue: usize,
    pub(crate) providers: usize,
    pub(crate) synced_with_all: bool,
}

type Reply<T> = oneshot::Sender<T>;

pub(crate) enum Command {
    Publish {
        package: super::types::Package,
        deprecated: bool,
        reply: Reply<Result<Arc<SignedPackage>>>,
    },
    NameAction {
        name: String,
        action: NameAction,
        reply: Reply<Result<()>>,
    },
    Search(Query, Reply<Vec<SearchResult>>),
    Record(String, Reply<Option<Arc<SignedPackage>>>),
    Latest(String, Reply<Option<Arc<SignedPackage>>>),
    Versions(String, Reply<Vec<Arc<SignedPackage>>>),
    Owner(String, Reply<Option<(PeerId, bool, Vec<PeerId>)>>),
    DhtRecord(SignedPackage, Reply<Result<Option<UpdateType>>>),
    Provider(ContentHash, PeerId),
    Providers(ContentHash, Reply<Vec<PeerId>>),
    WithContent(Reply<Vec<Arc<SignedPackage>>>),
    Snapshot(Reply<Snapshot>),
    /// A peer's sync or poll request, answered from the core.
    Answer(PeerId, SyncRequest, Reply<SyncResponse>),
    Gossip(PeerId, SignedPackage),
    Statement(NameStatement),
    Response(
        PeerId,
        SyncRequest,
        std::result::Result<SyncResponse, String>,
    ),
    Persisted(Ticket, std::result::Result<(), String>),
    /// Finish queued writes and stop.
    Shutdown(Reply<()>),
}

/// A cheap handle to the driver task.
#[derive(Clone, Debug)]
pub(crate) struct CoreHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl CoreHandle {
    /// Sends a command; false once the driver is gone.
    pub(crate) fn send(&self, c: Command) -> bool {
        self.tx.send(c).is_ok()
    }

    /// Sends a command built around a reply channel and waits for the reply.
    pub(crate) async fn ask<T>(&self, f: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        if !self.send(f(tx)) {
            return Err(RegistryError::NotRunning);
        }
        rx.await.map_err(|_| RegistryError::NotRunning)
    }
}

/// Everything the driver carries effects out through.
pub(crate) struct Services {
    pub(crate) node: NodeHandle,
    pub(crate) dht: Dht,
    pub(crate) gossip: Gossip,
    pub(crate) rpc: Rpc,
    pub(crate) writer: Option<Arc<StoreWriter>>,
    pub(crate) events: broadcast::Sender<PackageUpdate>,
    pub(crate) gossipsub: GossipsubConfig,
    pub(crate) packages_topic: Topic,
    pub(crate) names_topic: Topic,
    pub(crate) counters: Arc<Counters>,
    /// Where records whose content a seeder fetches go.
    pub(crate) replicate: Option<mpsc::UnboundedSender<Arc<SignedPackage>>>,
}

/// Spawns the driver task owning `core`.
pub(crate) fn spawn(core: RegistryCore, services: Services) -> (CoreHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = CoreHandle { tx: tx.clone() };
    let task = tokio::spawn(run(core, services, rx, handle.clone()));
    (handle, task)
}

/// Forwards the announcements of a gossip subscription to the driver (one path for
/// every topic: the packages topic and whatever `subscribe` joined).
pub(crate) fn forward_announcements(
    mut sub: crate::gossip::Subscription,
    core: CoreHandle,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = sub.recv().await {
            if let Ok(a) = Announcement::decode(&m.message.data) {
                if !core.send(Command::Gossip(m.propagation_source, a.record)) {
                    return;
                }
            }
        }
    })
}

/// Forwards name statements from the names topic to the driver.
pub(crate) fn forward_statements(
    mut sub: crate::gossip::Subscription,
    core: CoreHandle,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(m) = sub.recv().await {
            if let Ok(s) = NameStatement::decode(&m.message.data) {
                if !core.send(Command::Statement(s)) {
                    return;
                }
            }
        }
    })
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn run(
    mut core: RegistryCore,
    s: Services,
    mut rx: mpsc::UnboundedReceiver<Command>,
    me: CoreHandle,
) {
    let mut rng = StdRng::from_os_rng();
    let mut node_events = s.node.events();
    let mut waiting: HashMap<Ticket, Waiter> = HashMap::new();
    // The announcer finishes its queue and ends once the driver (holding `announcer`) has.
    let announcer = spawn_announcer(s.gossip.clone());
    for p in s.node.connected_peers() {
        core.handle_connected(now(), p);
    }
    let metrics = s.node.prometheus().clone();
    loop {
        while let Some(e) = core.poll_effect() {
            carry_out(&mut core, &s, &me, &announcer, &mut waiting, e);
        }
        // Two relaxed stores per turn: the sizes are kept in the core's maps.
        metrics
            .registry()
            .catalogue
            .set(core.catalogue_len() as i64);
        metrics.registry().records.set(core.len() as i64);
        let wake = core
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + std::time::Duration::from_secs(3600));
        tokio::select! {
            c = rx.recv() => {
                let Some(c) = c else { return };
                if let Command::Shutdown(reply) = c {
                    // Queued writes finish; the facade joins the writer thread.
                    while let Some(e) = core.poll_effect() {
                        carry_out(&mut core, &s, &me, &announcer, &mut waiting, e);
                    }
                    let _ = reply.send(());
                    return;
                }
                handle(&mut core, &mut waiting, c);
            }
            ev = node_events.recv() => match ev {
                Ok(NodeEvent::ConnectionEstablished { peer, .. }) => {
                    core.handle_connected(now(), peer);
                }
                Ok(NodeEvent::ConnectionClosed { peer, .. }) => {
                    if !s.node.is_connected(&peer) {
                        core.handle_disconnected(now(), peer);
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Events were lost: take the node's word for who is connected.
                    let live = s.node.connected_peers();
                    for p in core.connected_peers() {
                        if !live.contains(&p) {
                            core.handle_disconnected(now(), p);
                        }
                    }
                    for p in live {
                        core.handle_connected(now(), p);
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(wake) => core.handle_timeout(now(), &mut rng),
        }
    }
}

/// Who waits for a ticket.
enum Waiter {
    Publish(Reply<Result<Arc<SignedPackage>>>),
    Statement(Reply<Result<()>>),
}

fn handle(core: &mut RegistryCore, waiting: &mut HashMap<Ticket, Waiter>, c: Command) {
    match c {
        Command::Publish {
            package,
            deprecated,
            reply,
        } => match core.handle_publish(now(), Utc::now(), package, deprecated) {
            Ok(t) => {
                waiting.insert(t, Waiter::Publish(reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Command::NameAction {
            name,
            action,
            reply,
        } => match core.handle_name_action(now(), Utc::now(), &name, action) {
            Ok(t) => {
                waiting.insert(t, Waiter::Statement(reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Command::Search(q, reply) => {
            let _ = reply.send(core.search(&q));
        }
        Command::Record(id, reply) => {
            let _ = reply.send(core.record(&id).cloned());
        }
        Command::Versions(name, reply) => {
            let _ = reply.send(core.versions(&name));
        }
        Command::Latest(name, reply) => {
            let _ = reply.send(core.latest(&name).cloned());
        }
        Command::Owner(name, reply) => {
            let _ = reply.send(core.owner_of(&name));
        }
        Command::DhtRecord(r, reply) => {
            let _ = reply.send(core.handle_dht_record(now(), Utc::now(), r));
        }
        Command::Provider(h, p) => core.handle_provider(h, p),
        Command::Providers(h, reply) => {
            let _ = reply.send(core.providers(&h));
        }
        Command::WithContent(reply) => {
            let _ = reply.send(
                core.records()
                    .filter(|r| r.package.content_hash.is_some())
                    .cloned()
                    .collect(),
            );
        }
        Command::Snapshot(reply) => {
            let _ = reply.send(Snapshot {
                records: core.len(),
                catalogue: core.catalogue_len(),
                providers: core.provider_count(),
                synced_with_all: core.synced_with_all(),
            });
        }
        Command::Answer(from, req, reply) => {
            let _ = reply.send(core.handle_request(now(), from, req));
        }
        Command::Gossip(from, record) => {
            let _ = core.handle_gossip(now(), Utc::now(), from, record);
        }
        Command::Statement(st) => {
            let _ = core.handle_statement(now(), Utc::now(), st);
        }
        Command::Response(peer, req, result) => match result {
            Ok(resp) => core.handle_response(now(), Utc::now(), peer, resp),
            Err(e) => {
                tracing::debug!("sync request to {peer} failed: {e}");
                core.handle_request_failed(now(), peer, &req);
            }
        },
        Command::Persisted(t, result) => core.handle_persisted(now(), t, result),
        Command::Shutdown(_) => {}
    }
}

/// Announcements to publish, in the order the core made them.
type Announcer = mpsc::UnboundedSender<(Vec<Topic>, Bytes)>;

/// Publishes announcements one after another (a later version never overtakes an earlier
/// one), off the driver task.
fn spawn_announcer(gossip: Gossip) -> Announcer {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Vec<Topic>, Bytes)>();
    tokio::spawn(async move {
        while let Some((topics, data)) = rx.recv().await {
            for t in topics {
                // No peers yet is not an error for a publish: sync delivers it later.
                let _ = gossip.publish(t, data.clone()).await;
            }
        }
    });
    tx
}

fn carry_out(
    core: &mut RegistryCore,
    s: &Services,
    me: &CoreHandle,
    announcer: &Announcer,
    waiting: &mut HashMap<Ticket, Waiter>,
    e: Effect,
) {
    match e {
        Effect::Persist { batch, ticket } => match (&s.writer, ticket) {
            (Some(w), Some(t)) => match w.submit_durable(batch) {
                Some(durable) => {
                    let me = me.clone();
                    tokio::spawn(async move {
                        let r = durable
                            .await
                            .unwrap_or_else(|_| Err("the store writer stopped".into()));
                        me.send(Command::Persisted(t, r));
                    });
                }
                None => core.handle_persisted(now(), t, Err("the store is closed".into())),
            },
            (Some(w), None) => {
                w.submit(batch);
            }
            // No data directory: in memory only, durable as it gets.
            (None, Some(t)) => core.handle_persisted(now(), t, Ok(())),
            (None, None) => {}
        },
        Effect::Announce(record) => {
            let data = Announcement {
                record: (*record).clone(),
            }
            .encode();
            let topics = vec![
                s.packages_topic.clone(),
                s.gossipsub.topic(&record.package.category),
                s.gossipsub.topic(&record.package.name),
            ];
            let _ = announcer.send((topics, data));
        }
        Effect::AnnounceStatement(st) => {
            let data = Bytes::from(st.encode());
            let _ = announcer.send((vec![s.names_topic.clone()], data));
        }
        Effect::PutRecord {
            record,
            name_key: with_name,
        } => {
            // In the background: a put waits for the closest peers, and one that went away
            // costs a request timeout. Offline or alone, the record spreads by sync later.
            let value = Bytes::from(record.encode());
            let mut keys = vec![package_key(&record.package.id)];
            if with_name {
                keys.push(name_key(&record.package.name));
            }
            let (dht, counters, publisher) = (s.dht.clone(), s.counters.clone(), record.publisher);
            tokio::spawn(async move {
                for key in keys {
                    let r = Record {
                        key,
                        value: value.clone(),
                        publisher: Some(publisher),
                        ttl_secs: 0,
                    };
                    add(&counters.dht_queries);
                    if dht.put_record(r, Some(1)).await.is_err() {
                        add(&counters.dht_failures);
                    }
                }
            });
        }
        Effect::Request { peer, request } => {
            let (rpc, me) = (s.rpc.clone(), me.clone());
            tokio::spawn(async move {
                let r = rpc
                    .request::<SyncProtocol>(peer, request.clone())
                    .await
                    .map_err(|e| e.to_string());
                me.send(Command::Response(peer, request, r));
            });
        }
        Effect::Replicate(record) => {
            if let Some(tx) = &s.replicate {
                let _ = tx.send(record);
            }
        }
        Effect::Update(u) => {
            let _ = s.events.send(u);
        }
        Effect::Done { ticket, result } => match waiting.remove(&ticket) {
            Some(Waiter::Publish(reply)) => {
                let r = result.and_then(|r| r.ok_or(RegistryError::NotRunning));
                let _ = reply.send(r);
            }
            Some(Waiter::Statement(reply)) => {
                let _ = reply.send(result.map(|_| ()));
            }
            None => {}
        },
        Effect::Dropped(records) => {
            for r in records {
                tracing::info!(
                    "dropped {} by {}: its key no longer holds the name",
                    r.package.id,
                    r.publisher
                );
            }
        }
    }
}
