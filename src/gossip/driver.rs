//! The thin tokio driver: one task owns a [`Gossipsub`] router, feeds it the node's inbound
//! gossip RPCs, connection events and heartbeats, hands received messages to per-topic
//! subscriptions, and moves each peer's queued RPCs into its connection as fast as the
//! connection takes them. Callers hold a cheap [`Gossip`] handle.
//!
//! The router never waits on the application: a subscription that is not read fills its
//! channel and further messages for it are dropped (and counted), not queued without bound.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::SeedableRng;
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{
    Action, GossipEvent, GossipMessage, GossipMetrics, Gossipsub, GossipsubConfig, MeshSnapshot,
    MessageId, PublishError, Rpc, ScoreSnapshot, Topic, Validation,
};
use crate::identity::PeerId;
use crate::metrics::{GossipInstruments, Metrics, ScoreBand};
use crate::node::{NodeError, NodeEvent, NodeHandle};
use crate::transport::{Direction, SendError};
use crate::wire::ProtocolId;

/// Messages a subscription buffers before further ones are dropped.
const SUBSCRIPTION_BUFFER: usize = 4096;
/// How often peers whose connection was full are tried again.
const RETRY_BLOCKED: Duration = Duration::from_millis(5);
/// Inbound RPCs handled per wake-up before the driver flushes and looks at commands again.
const INBOUND_BATCH: usize = 64;

/// Errors from [`Gossip`] calls.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The gossip task has stopped (its node shut down).
    #[error("gossip is not running")]
    Stopped,
    /// Registering the protocol on the node failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The configuration is invalid.
    #[error("invalid gossipsub configuration: {0}")]
    Config(String),
    /// Already subscribed, or at the topic limit.
    #[error("cannot subscribe to {0}: already subscribed or at max_subscribed_topics")]
    Subscribe(Topic),
}

impl GossipError {
    /// True when a retry might succeed (no peers yet, full queues).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GossipError::Publish(
                PublishError::InsufficientPeers { .. } | PublishError::QueuesFull { .. }
            )
        )
    }
}

/// A message received on a subscribed topic.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// Its id.
    pub id: MessageId,
    /// The peer it came from (not necessarily the publisher).
    pub propagation_source: PeerId,
    /// The message (publisher, topic, data).
    pub message: GossipMessage,
    /// With `validate_messages` on: call [`Gossip::report_validation`] with a verdict.
    pub needs_validation: bool,
}

/// The stream of messages of one topic. Dropping it does not unsubscribe.
#[derive(Debug)]
pub struct Subscription {
    topic: Topic,
    rx: mpsc::Receiver<Received>,
}

impl Subscription {
    /// The topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// The next message; `None` once unsubscribed or the node stopped.
    pub async fn recv(&mut self) -> Option<Received> {
        self.rx.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }
}

enum Command {
    Subscribe(Topic, oneshot::Sender<Result<Subscription, GossipError>>),
    Unsubscribe(Topic, oneshot::Sender<bool>),
    Publish(
        Topic,
        Bytes,
        oneshot::Sender<Result<MessageId, PublishError>>,
    ),
    Validate(MessageId, Validation),
    Mesh(Topic, oneshot::Sender<MeshSnapshot>),
    Score(PeerId, oneshot::Sender<Option<ScoreSnapshot>>),
    AppScore(PeerId, f64),
    Metrics(oneshot::Sender<GossipMetrics>),
    Queued(PeerId, oneshot::Sender<usize>),
}

/// Router events kept for a lagging [`Gossip::events`] receiver.
const EVENTS_CAPACITY: usize = 4096;

/// The router's events channel, made by the first [`Gossip::events`] call: a broadcast
/// channel allocates all its slots at once (~0.9 MB for 4 096 events), and until someone
/// listens there is nothing to send on it.
type LazyEvents = Arc<OnceLock<broadcast::Sender<GossipEvent>>>;

/// Handle to a node's gossip. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Gossip {
    cmd: mpsc::UnboundedSender<Command>,
    events: LazyEvents,
    local: PeerId,
    config: GossipsubConfig,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Gossip {
    /// Starts gossip on `node` with `config`.
    pub fn spawn(node: &NodeHandle, config: GossipsubConfig) -> Result<Gossip, GossipError> {
        config.validate().map_err(GossipError::Config)?;
        let protocol = ProtocolId::new(config.protocol_name.clone(), 1)
            .map_err(|e| GossipError::Config(e.to_string()))?;
        let inbound = node.register(protocol.clone())?;
        let addrs = node
            .listen_addrs()
            .into_iter()
            .filter(|a| a.socket_addr().is_none_or(|s| !s.ip().is_unspecified()))
            .collect();
        let mut router = Gossipsub::new(node.keypair(), addrs, config.clone(), now())
            .map_err(GossipError::Config)?;
        // Sequence numbers from the wall clock: a restarted node does not reuse the ids its
        // previous run published, which peers may still hold in their seen caches.
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        router.set_initial_seqno(start);
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        router.randomize_heartbeat_phase(now(), &mut rng);
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let events = LazyEvents::default();
        let local = node.local_peer_id();
        let node_events = node.events();
        let mut driver = Driver {
            router,
            node: node.clone(),
            protocol,
            subscriptions: HashMap::new(),
            events: events.clone(),
            blocked: BTreeSet::new(),
            rng,
            app_dropped: 0,
            metrics: node.prometheus().clone(),
            observed: Observed::default(),
            mesh_topics: Vec::new(),
        };
        driver.resync();
        tokio::spawn(driver.run(cmd_rx, inbound, node_events));
        Ok(Gossip {
            cmd,
            events,
            local,
            config,
        })
    }

    /// Our identity.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &GossipsubConfig {
        &self.config
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    /// Joins `topic`; returns the stream of its messages.
    pub async fn subscribe(&self, topic: Topic) -> Result<Subscription, GossipError> {
        self.ask(|tx| Command::Subscribe(topic, tx)).await?
    }

    /// Leaves `topic`; false if not subscribed.
    pub async fn unsubscribe(&self, topic: Topic) -> Result<bool, GossipError> {
        self.ask(|tx| Command::Unsubscribe(topic, tx)).await
    }

    /// Publishes `data` on `topic`.
    pub async fn publish(&self, topic: Topic, data: Bytes) -> Result<MessageId, GossipError> {
        Ok(self.ask(|tx| Command::Publish(topic, data, tx)).await??)
    }

    /// The application's verdict on a message received with `needs_validation`.
    pub fn report_validation(&self, id: MessageId, verdict: Validation) {
        let _ = self.cmd.send(Command::Validate(id, verdict));
    }

    /// Mesh, subscribers and fanout of `topic`.
    pub async fn mesh(&self, topic: Topic) -> Result<MeshSnapshot, GossipError> {
        self.ask(|tx| Command::Mesh(topic, tx)).await
    }

    /// `peer`'s score, broken down (None with scoring off or an unknown peer).
    pub async fn score(&self, peer: PeerId) -> Result<Option<ScoreSnapshot>, GossipError> {
        self.ask(|tx| Command::Score(peer, tx)).await
    }

    /// Sets the application-specific part (P5) of `peer`'s score.
    pub fn set_application_score(&self, peer: PeerId, score: f64) {
        let _ = self.cmd.send(Command::AppScore(peer, score));
    }

    /// Counters since start.
    pub async fn metrics(&self) -> Result<GossipMetrics, GossipError> {
        self.ask(Command::Metrics).await
    }

    /// Bytes waiting in the send queue for `peer` (bounded by `max_queue_bytes` plus
    /// `max_control_queue_bytes`).
    pub async fn queued_bytes(&self, peer: PeerId) -> Result<usize, GossipError> {
        self.ask(|tx| Command::Queued(peer, tx)).await
    }

    /// Every router event (deliveries, duplicates, rejections, grafts, prunes, drops,
    /// score band changes) from now on.
    pub fn events(&self) -> broadcast::Receiver<GossipEvent> {
        self.events
            .get_or_init(|| broadcast::channel(EVENTS_CAPACITY).0)
            .subscribe()
    }
}

struct Driver {
    router: Gossipsub,
    node: NodeHandle,
    protocol: ProtocolId,
    subscriptions: HashMap<Topic, mpsc::Sender<Received>>,
    events: LazyEvents,
    blocked: BTreeSet<PeerId>,
    rng: rand::rngs::StdRng,
    app_dropped: u64,
    metrics: Metrics,
    /// The router's counters as last added to the Prometheus counters.
    observed: Observed,
    /// Topics whose mesh gauge is set.
    mesh_topics: Vec<Topic>,
}

/// The router counters already counted in Prometheus (they only grow).
#[derive(Default)]
struct Observed {
    published: u64,
    delivered: u64,
    duplicates: u64,
    rejected: u64,
    forwarded: u64,
    dropped: u64,
}

impl Observed {
    /// Adds what the router counted since the last call: a few subtractions, no lock.
    fn catch_up(&mut self, m: &GossipMetrics, g: &GossipInstruments) {
        let step = |now: u64, last: &mut u64, c: &prometheus_client::metrics::counter::Counter| {
            if now > *last {
                c.inc_by(now - *last);
            }
            *last = now;
        };
        step(m.published, &mut self.published, &g.published);
        step(m.delivered, &mut self.delivered, &g.delivered);
        step(m.duplicates, &mut self.duplicates, &g.duplicates);
        step(m.rejected, &mut self.rejected, &g.rejected);
        step(m.forwarded, &mut self.forwarded, &g.forwarded);
        let dropped = m.dropped_forwards + m.dropped_publishes + m.dropped_control;
        step(dropped, &mut self.dropped, &g.dropped);
    }
}

impl Driver {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::UnboundedReceiver<Command>,
        mut inbound: mpsc::Receiver<crate::node::InboundMessage>,
        mut node_events: broadcast::Receiver<NodeEvent>,
    ) {
        // One timer for the router's next deadline, moved rather than rebuilt each turn.
        let timer =
            tokio::time::sleep_until(tokio::time::Instant::from_std(self.router.next_timeout()));
        let mut timer = std::pin::pin!(timer);
        loop {
            let timeout = tokio::time::Instant::from_std(self.router.next_timeout());
            if timer.deadline() != timeout {
                timer.as_mut().reset(timeout);
            }
            let retry = !self.blocked.is_empty();
            tokio::select! {
                cmd = cmd_rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                msg = inbound.recv() => match msg {
                    Some(m) => {
                        self.inbound(m.peer, &m.payload);
                        // Take what else has arrived before flushing: one pass over the
                        // queues serves the whole batch.
                        for _ in 0..INBOUND_BATCH {
                            let Ok(m) = inbound.try_recv() else { break };
                            self.inbound(m.peer, &m.payload);
                        }
                    }
                    None => return,
                },
                ev = node_events.recv() => match ev {
                    Ok(NodeEvent::ConnectionEstablished { peer, addr, direction, .. }) => {
                        let ip = addr.socket_addr().map(|s| s.ip());
                        self.router.on_connected(now(), peer, direction == Direction::Outbound, ip);
                    }
                    Ok(NodeEvent::ConnectionClosed { peer, .. }) => {
                        if !self.node.is_connected(&peer) {
                            self.router.on_disconnected(now(), &peer);
                            self.blocked.remove(&peer);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = timer.as_mut() => {
                    let beat = self.router.next_heartbeat();
                    self.router.on_timeout(now(), &mut self.rng);
                    if self.router.next_heartbeat() != beat {
                        self.refresh_gauges();
                    }
                }
                _ = tokio::time::sleep(RETRY_BLOCKED), if retry => {
                    let blocked = std::mem::take(&mut self.blocked);
                    self.flush(blocked.into_iter());
                }
            }
            self.drain();
        }
    }

    /// Brings the router's peer set in line with the node's connections (at start, and when
    /// connection events were missed).
    fn resync(&mut self) {
        let t = now();
        let connected: HashMap<PeerId, (bool, Option<std::net::IpAddr>)> = self
            .node
            .connections()
            .into_iter()
            .map(|c| {
                (
                    c.remote_peer,
                    (
                        c.direction == Direction::Outbound,
                        c.remote_addr.socket_addr().map(|s| s.ip()),
                    ),
                )
            })
            .collect();
        for (peer, (outbound, ip)) in &connected {
            self.router.on_connected(t, *peer, *outbound, *ip);
        }
        let known: Vec<PeerId> = self.router.peers().collect();
        for p in known {
            if !connected.contains_key(&p) {
                self.router.on_disconnected(t, &p);
            }
        }
    }

    fn inbound(&mut self, peer: PeerId, payload: &[u8]) {
        match Rpc::decode(payload, self.router.limits()) {
            Ok(rpc) => {
                if !self.router.knows(&peer) {
                    // The message overtook the connection event.
                    self.resync();
                }
                self.router.handle_rpc(now(), peer, rpc);
            }
            Err(e) => {
                tracing::debug!(%peer, "undecodable gossip RPC, disconnecting: {e}");
                self.node.disconnect(peer);
            }
        }
    }

    fn command(&mut self, c: Command) {
        let t = now();
        match c {
            Command::Subscribe(topic, reply) => {
                let result = if self.router.subscribe(t, topic.clone(), &mut self.rng) {
                    let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER);
                    self.subscriptions.insert(topic.clone(), tx);
                    Ok(Subscription { topic, rx })
                } else {
                    Err(GossipError::Subscribe(topic))
                };
                let _ = reply.send(result);
            }
            Command::Unsubscribe(topic, reply) => {
                self.subscriptions.remove(&topic);
                let _ = reply.send(self.router.unsubscribe(t, &topic));
            }
            Command::Publish(topic, data, reply) => {
                let _ = reply.send(self.router.publish(t, topic, data, &mut self.rng));
            }
            Command::Validate(id, verdict) => self.router.report_validation(t, &id, verdict),
            Command::Mesh(topic, reply) => {
                let _ = reply.send(self.router.mesh_snapshot(&topic));
            }
            Command::Score(peer, reply) => {
                let _ = reply.send(self.router.score_snapshot(t, &peer));
            }
            Command::AppScore(peer, score) => {
                self.router.set_application_score(&peer, score);
            }
            Command::Queued(peer, reply) => {
                let _ = reply.send(self.router.queued_bytes(&peer));
            }
            Command::Metrics(reply) => {
                let mut m = self.router.metrics().clone();
                m.app_dropped = self.app_dropped;
                let _ = reply.send(m);
            }
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.router.poll_action() {
            match a {
                Action::Event(e) => {
                    if let GossipEvent::Message {
                        propagation_source,
                        id,
                        message,
                        needs_validation,
                    } = &e
                    {
                        if let Some(tx) = self.subscriptions.get(&message.topic) {
                            let r = Received {
                                id: id.clone(),
                                propagation_source: *propagation_source,
                                message: message.clone(),
                                needs_validation: *needs_validation,
                            };
                            if tx.try_send(r).is_err() {
                                self.app_dropped += 1;
                                self.metrics.gossip().app_dropped.inc();
                            }
                        }
                    }
                    if let Some(tx) = self.events.get().filter(|tx| tx.receiver_count() > 0) {
                        let _ = tx.send(e);
                    }
                }
                Action::Dial { peer, addrs } => {
                    for a in &addrs {
                        self.node.add_address(peer, a.clone());
                    }
                    if let Some(addr) = addrs.into_iter().next() {
                        let node = self.node.clone();
                        tokio::spawn(async move {
                            if let Err(e) = node.dial(addr.with_peer_id(peer)).await {
                                tracing::debug!(%peer, "peer-exchange dial failed: {e}");
                            }
                        });
                    }
                }
            }
        }
        let ready = self.router.take_ready();
        self.flush(ready.into_iter());
        self.observed
            .catch_up(self.router.metrics(), self.metrics.gossip());
    }

    /// The snapshot gauges, at each heartbeat: mesh size per subscribed topic and peers
    /// per score band.
    fn refresh_gauges(&mut self) {
        let g = self.metrics.gossip();
        let topics: Vec<Topic> = self.router.subscriptions().cloned().collect();
        for t in &topics {
            g.set_mesh(t.as_str(), self.router.mesh_peers(t).len());
        }
        for old in &self.mesh_topics {
            if !topics.contains(old) {
                g.remove_mesh(old.as_str());
            }
        }
        self.mesh_topics = topics;
        let (t, thresholds) = (now(), &self.router.config().score_thresholds);
        let mut bands = [0i64; 5];
        for p in self.router.peers() {
            bands[ScoreBand::of(self.router.peer_score(t, &p), thresholds) as usize] += 1;
        }
        for (gauge, n) in g.score_bands.iter().zip(bands) {
            gauge.set(n);
        }
    }

    /// Moves queued RPCs into connections until each is empty or its connection is full.
    fn flush(&mut self, peers: impl Iterator<Item = PeerId>) {
        for peer in peers {
            while let Some(out) = self.router.next_outbound(&peer) {
                match self.node.try_send(peer, &self.protocol, out.bytes.clone()) {
                    Ok(()) => {}
                    Err(NodeError::Send {
                        source: SendError::QueueFull,
                        ..
                    }) => {
                        self.router.unsend(&peer, out);
                        self.blocked.insert(peer);
                        break;
                    }
                    Err(e) => {
                        // Not connected (any more): the close event cleans up.
                        tracing::trace!(%peer, "gossip send failed: {e}");
                        break;
                    }
                }
            }
        }
    }
}
