//! Prometheus metrics: one [`Metrics`] handle per node owns a
//! [`prometheus_client::registry::Registry`] and every instrument registered in it, and
//! encodes them in the Prometheus text format ([`Metrics::encode_text`],
//! [`crate::P2PRegistry::metrics_text`]) or as OpenMetrics ([`Metrics::encode_openmetrics`])
//! for a daemon to serve on `/metrics`.
//!
//! The handle is cheap to clone (an `Arc` inside) and is threaded through construction: a
//! [`crate::node::Node`] is spawned with one ([`crate::node::Node::spawn_with_metrics`], or a
//! fresh default one by [`crate::node::Node::spawn`]) and every layer started on that node
//! (DHT, gossip, RPC, content) takes it from the node's handle
//! ([`crate::node::NodeHandle::prometheus`]). The registry facade adds its own
//! ([`crate::P2PRegistryBuilder::with_metrics`]). Nothing here is global: two nodes in one
//! process have two registries.
//!
//! Events are observed where they happen, in the drivers (never in the sans-IO cores): a
//! counter increment is one relaxed atomic add on a handle created when the `Metrics` was
//! made, so no label set is hashed or allocated per message. Histograms (one per request,
//! query, handshake or store write, not per message) take a short uncontended lock each.
//! Gauges that are snapshots (routing table, meshes, score bands, catalogue) are refreshed
//! by the driver that owns the state when it changes or at its heartbeat; the store size
//! is read when the text is encoded.
//!
//! # Metrics
//!
//! Every name starts with `ggen_p2p_`; counters end in `_total`, units are in the names.
//! Labels: `direction` is `in` or `out`; `transport` is `tcp`, `quic` or `memory`.
//!
//! **Connections** (node event loop and dispatcher, `src/node`)
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `connections_open` | gauge | direction, transport | established connections the node keeps (a retired duplicate counts until it has drained) |
//! | `dials_total` | counter | transport | outbound dials attempted (connect plus handshake) |
//! | `dial_errors_total` | counter | transport | those that failed or timed out |
//! | `inbound_refused_total` | counter | | inbound connections refused by the connection or per-IP limits |
//! | `handshake_failures_total` | counter | | inbound connections whose handshake failed |
//! | `handshake_duration_seconds` | histogram | direction, transport | outbound: connect plus handshake of a successful dial; inbound: the handshake |
//! | `network_received_bytes_total` | counter | transport | protocol payload bytes received and routed to a handler |
//! | `network_sent_bytes_total` | counter | transport | protocol payload bytes queued for sending |
//!
//! **DHT** (Kademlia driver)
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `dht_queries_total` | counter | kind, outcome | finished queries, own and periodic (republish, refresh); kind `find_node`, `get_record`, `put_record`, `provide`, `get_providers`, `bootstrap`; outcome `ok`, `timeout`, `not_found`, `quorum_failed`, `no_peers` |
//! | `dht_query_duration_seconds` | histogram | kind | start to finish of each query |
//! | `dht_routing_table_peers` | gauge | | peers in the routing table |
//!
//! **Gossip** (gossip driver)
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `gossip_mesh_peers` | gauge | topic | mesh peers per subscribed topic (refreshed each heartbeat) |
//! | `gossip_peers` | gauge | band | connected gossip peers per score band (each heartbeat): `graylisted` (below `graylist_threshold`), `below_publish` (below `publish_threshold`), `below_gossip` (below `gossip_threshold`), `neutral` (from `gossip_threshold` to 0), `positive` (above 0); with scoring at its defaults a well-behaved peer is `neutral` or `positive` |
//! | `gossip_published_total` | counter | | messages this node published |
//! | `gossip_delivered_total` | counter | | messages received for the first time and accepted |
//! | `gossip_duplicates_total` | counter | | messages received again |
//! | `gossip_rejected_total` | counter | | messages refused (bad signature, invalid, application reject, ...) |
//! | `gossip_forwarded_total` | counter | | copies forwarded to mesh peers |
//! | `gossip_dropped_total` | counter | | forwards, publishes and control messages dropped because a peer's queue was full |
//! | `gossip_app_dropped_total` | counter | | messages not handed to the application because its subscription was not read |
//!
//! **RPC** (RPC driver; requests this node sent)
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `rpc_requests_total` | counter | protocol, outcome | finished requests; outcome `ok`, `timeout`, `refused` (busy, rate limited, unsupported protocol, our own in-flight limit), `unreachable` (dial failed, connection closed), `error` (remote handler error, too large, malformed), `cancelled` (the caller gave up) |
//! | `rpc_request_duration_seconds` | histogram | protocol | from sending the request to its outcome (cancelled ones excluded) |
//!
//! **Content** (content service)
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `content_served_bytes_total` | counter | | chunk bytes served to peers |
//! | `content_fetched_bytes_total` | counter | | chunk bytes received from providers that matched the manifest |
//! | `content_fetches_total` | counter | outcome | downloads finished, `ok` or `failed` |
//!
//! **Registry** (registry driver, store writer thread, facade)
//!
//! | metric | type | labels | meaning |
//! | --- | --- | --- | --- |
//! | `registry_catalogue_packages` | gauge | | packages in the searchable catalogue |
//! | `registry_records` | gauge | | package versions (records) held |
//! | `store_size_bytes` | gauge | | size of the store's database file (read at each scrape; 0 without a data directory) |
//! | `store_write_duration_seconds` | histogram | | one durable store transaction (a merged batch) |
//! | `registry_publish_durable_seconds` | histogram | | from a `publish` call until its record is durable (and the call returns) |

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::address::TransportKind;
use crate::transport::Direction;

type Labels<const N: usize> = [(&'static str, &'static str); N];
type DynLabels<const N: usize> = [(&'static str, Cow<'static, str>); N];
type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

const DIRECTIONS: [&str; 2] = ["out", "in"];
const TRANSPORTS: [&str; 3] = ["tcp", "quic", "memory"];

/// Index of a direction in the per-direction arrays.
pub(crate) fn direction_index(d: Direction) -> usize {
    match d {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
    }
}

/// Index of a transport in the per-transport arrays.
pub(crate) fn transport_index(k: TransportKind) -> usize {
    match k {
        TransportKind::Tcp => 0,
        TransportKind::Quic => 1,
        TransportKind::Memory => 2,
    }
}

/// Connection-level instruments (the node).
#[derive(Debug)]
pub(crate) struct NetMetrics {
    /// `[direction][transport]`.
    pub(crate) connections_open: [[Gauge; 3]; 2],
    pub(crate) dials: [Counter; 3],
    pub(crate) dial_errors: [Counter; 3],
    pub(crate) inbound_refused: Counter,
    pub(crate) handshake_failures: Counter,
    /// `[direction][transport]`.
    pub(crate) handshake: [[Histogram; 3]; 2],
    pub(crate) received_bytes: [Counter; 3],
    pub(crate) sent_bytes: [Counter; 3],
}

/// What kind of DHT query finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DhtKind {
    FindNode,
    GetRecord,
    PutRecord,
    Provide,
    GetProviders,
    Bootstrap,
}

const DHT_KINDS: [&str; 6] = [
    "find_node",
    "get_record",
    "put_record",
    "provide",
    "get_providers",
    "bootstrap",
];

/// How a DHT query ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DhtOutcome {
    Ok,
    Timeout,
    NotFound,
    QuorumFailed,
    NoPeers,
}

const DHT_OUTCOMES: [&str; 5] = ["ok", "timeout", "not_found", "quorum_failed", "no_peers"];

/// DHT instruments (the Kademlia driver).
#[derive(Debug)]
pub(crate) struct DhtMetrics {
    /// `[kind][outcome]`.
    queries: [[Counter; 5]; 6],
    /// `[kind]`.
    duration: [Histogram; 6],
    pub(crate) routing_table: Gauge,
}

impl DhtMetrics {
    /// One finished query.
    pub(crate) fn query(&self, kind: DhtKind, outcome: DhtOutcome, took: Duration) {
        self.queries[kind as usize][outcome as usize].inc();
        self.duration[kind as usize].observe(took.as_secs_f64());
    }
}

/// A gossip peer's score band (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScoreBand {
    Graylisted,
    BelowPublish,
    BelowGossip,
    Neutral,
    Positive,
}

const SCORE_BANDS: [&str; 5] = [
    "graylisted",
    "below_publish",
    "below_gossip",
    "neutral",
    "positive",
];

impl ScoreBand {
    /// The band of `score` under `t`.
    pub(crate) fn of(score: f64, t: &crate::gossip::PeerScoreThresholds) -> Self {
        if score < t.graylist_threshold {
            ScoreBand::Graylisted
        } else if score < t.publish_threshold {
            ScoreBand::BelowPublish
        } else if score < t.gossip_threshold {
            ScoreBand::BelowGossip
        } else if score <= 0.0 {
            ScoreBand::Neutral
        } else {
            ScoreBand::Positive
        }
    }
}

/// Gossip instruments (the gossip driver).
#[derive(Debug)]
pub(crate) struct GossipInstruments {
    mesh_peers: Family<DynLabels<1>, Gauge>,
    /// Indexed by [`ScoreBand`].
    pub(crate) score_bands: [Gauge; 5],
    pub(crate) published: Counter,
    pub(crate) delivered: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) rejected: Counter,
    pub(crate) forwarded: Counter,
    pub(crate) dropped: Counter,
    pub(crate) app_dropped: Counter,
}

impl GossipInstruments {
    /// Sets the mesh size of `topic` (at heartbeats: the label set is built here).
    pub(crate) fn set_mesh(&self, topic: &str, peers: usize) {
        self.mesh_peers
            .get_or_create(&[("topic", Cow::Owned(topic.to_owned()))])
            .set(peers as i64);
    }

    /// Forgets the mesh gauge of a topic left.
    pub(crate) fn remove_mesh(&self, topic: &str) {
        self.mesh_peers
            .remove(&[("topic", Cow::Owned(topic.to_owned()))]);
    }
}

/// How an outbound RPC request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RpcOutcome {
    Ok,
    Timeout,
    Refused,
    Unreachable,
    Error,
    Cancelled,
}

const RPC_OUTCOMES: [&str; 6] = [
    "ok",
    "timeout",
    "refused",
    "unreachable",
    "error",
    "cancelled",
];

/// The instruments of one RPC protocol, made once per protocol by the driver.
#[derive(Debug)]
pub(crate) struct RpcProtocolMetrics {
    outcomes: [Counter; 6],
    duration: Histogram,
}

impl RpcProtocolMetrics {
    /// One finished request (`took` is ignored for cancelled ones).
    pub(crate) fn finished(&self, outcome: RpcOutcome, took: Duration) {
        self.outcomes[outcome as usize].inc();
        if outcome != RpcOutcome::Cancelled {
            self.duration.observe(took.as_secs_f64());
        }
    }
}

/// RPC instruments (the RPC driver).
#[derive(Debug)]
pub(crate) struct RpcInstruments {
    requests: Family<DynLabels<2>, Counter>,
    duration: HistogramFamily<DynLabels<1>>,
}

impl RpcInstruments {
    /// The handles of `protocol` (creates its series; call once per protocol and keep).
    pub(crate) fn protocol(&self, protocol: &str) -> RpcProtocolMetrics {
        let p: Cow<'static, str> = Cow::Owned(protocol.to_owned());
        RpcProtocolMetrics {
            outcomes: RPC_OUTCOMES.map(|o| {
                self.requests
                    .get_or_create_owned(&[("protocol", p.clone()), ("outcome", Cow::Borrowed(o))])
            }),
            duration: self.duration.get_or_create_owned(&[("protocol", p)]),
        }
    }
}

/// Content instruments (the content service).
#[derive(Debug)]
pub(crate) struct ContentInstruments {
    pub(crate) served_bytes: Counter,
    pub(crate) fetched_bytes: Counter,
    pub(crate) fetches_ok: Counter,
    pub(crate) fetches_failed: Counter,
}

/// Registry instruments (driver, store writer, facade).
#[derive(Debug)]
pub(crate) struct RegistryInstruments {
    pub(crate) catalogue: Gauge,
    pub(crate) records: Gauge,
    pub(crate) store_size: Gauge,
    pub(crate) store_write: Histogram,
    pub(crate) publish_durable: Histogram,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    net: NetMetrics,
    dht: DhtMetrics,
    gossip: GossipInstruments,
    rpc: RpcInstruments,
    content: ContentInstruments,
    reg: RegistryInstruments,
}

/// One node's metrics: a Prometheus registry and every instrument in it (see the module
/// docs for the list). Cheap to clone; clones share the same instruments.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Latency buckets from `start` seconds, doubling, `n` of them.
fn seconds(start: f64, n: u16) -> Histogram {
    Histogram::new(exponential_buckets(start, 2.0, n))
}

fn handshake_histogram() -> Histogram {
    // 1 ms .. 16 s.
    seconds(0.001, 15)
}

fn dht_histogram() -> Histogram {
    // 5 ms .. 82 s (the default query timeout is 60 s).
    seconds(0.005, 15)
}

fn rpc_histogram() -> Histogram {
    // 1 ms .. 33 s (the default request timeout is 30 s).
    seconds(0.001, 16)
}

impl Metrics {
    /// A fresh registry with every instrument at zero.
    pub fn new() -> Self {
        let mut root = Registry::with_prefix("ggen_p2p");
        let r = &mut root;

        // Connections.
        let open = Family::<Labels<2>, Gauge>::default();
        r.register(
            "connections_open",
            "Established connections the node keeps",
            open.clone(),
        );
        let dials = Family::<Labels<1>, Counter>::default();
        r.register("dials", "Outbound dials attempted", dials.clone());
        let dial_errors = Family::<Labels<1>, Counter>::default();
        r.register(
            "dial_errors",
            "Outbound dials that failed or timed out",
            dial_errors.clone(),
        );
        let inbound_refused = Counter::default();
        r.register(
            "inbound_refused",
            "Inbound connections refused by connection limits",
            inbound_refused.clone(),
        );
        let handshake_failures = Counter::default();
        r.register(
            "handshake_failures",
            "Inbound connections whose handshake failed",
            handshake_failures.clone(),
        );
        let handshake: HistogramFamily<Labels<2>> =
            Family::new_with_constructor(handshake_histogram);
        r.register_with_unit(
            "handshake_duration",
            "Connection set-up time: connect plus handshake (outbound), handshake (inbound)",
            Unit::Seconds,
            handshake.clone(),
        );
        let received = Family::<Labels<1>, Counter>::default();
        r.register_with_unit(
            "network_received",
            "Protocol payload bytes received and routed to a handler",
            Unit::Bytes,
            received.clone(),
        );
        let sent = Family::<Labels<1>, Counter>::default();
        r.register_with_unit(
            "network_sent",
            "Protocol payload bytes queued for sending",
            Unit::Bytes,
            sent.clone(),
        );
        let dt = |d: usize, t: usize| [("direction", DIRECTIONS[d]), ("transport", TRANSPORTS[t])];
        let t1 = |t: usize| [("transport", TRANSPORTS[t])];
        let net = NetMetrics {
            connections_open: [0, 1]
                .map(|d| [0, 1, 2].map(|t| open.get_or_create_owned(&dt(d, t)))),
            dials: [0, 1, 2].map(|t| dials.get_or_create_owned(&t1(t))),
            dial_errors: [0, 1, 2].map(|t| dial_errors.get_or_create_owned(&t1(t))),
            inbound_refused,
            handshake_failures,
            handshake: [0, 1].map(|d| [0, 1, 2].map(|t| handshake.get_or_create_owned(&dt(d, t)))),
            received_bytes: [0, 1, 2].map(|t| received.get_or_create_owned(&t1(t))),
            sent_bytes: [0, 1, 2].map(|t| sent.get_or_create_owned(&t1(t))),
        };

        // DHT.
        let queries = Family::<Labels<2>, Counter>::default();
        r.register(
            "dht_queries",
            "Finished DHT queries by kind and outcome",
            queries.clone(),
        );
        let qdur: HistogramFamily<Labels<1>> = Family::new_with_constructor(dht_histogram);
        r.register_with_unit(
            "dht_query_duration",
            "Duration of DHT queries by kind",
            Unit::Seconds,
            qdur.clone(),
        );
        let routing_table = Gauge::default();
        r.register(
            "dht_routing_table_peers",
            "Peers in the DHT routing table",
            routing_table.clone(),
        );
        let dht = DhtMetrics {
            queries: DHT_KINDS.map(|k| {
                DHT_OUTCOMES.map(|o| queries.get_or_create_owned(&[("kind", k), ("outcome", o)]))
            }),
            duration: DHT_KINDS.map(|k| qdur.get_or_create_owned(&[("kind", k)])),
            routing_table,
        };

        // Gossip.
        let mesh_peers = Family::<DynLabels<1>, Gauge>::default();
        r.register(
            "gossip_mesh_peers",
            "Mesh peers per subscribed gossip topic",
            mesh_peers.clone(),
        );
        let bands = Family::<Labels<1>, Gauge>::default();
        r.register(
            "gossip_peers",
            "Connected gossip peers per score band",
            bands.clone(),
        );
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let gossip = GossipInstruments {
            mesh_peers,
            score_bands: SCORE_BANDS.map(|b| bands.get_or_create_owned(&[("band", b)])),
            published: counter("gossip_published", "Gossip messages this node published"),
            delivered: counter(
                "gossip_delivered",
                "Gossip messages received for the first time and accepted",
            ),
            duplicates: counter("gossip_duplicates", "Gossip messages received again"),
            rejected: counter("gossip_rejected", "Gossip messages refused"),
            forwarded: counter(
                "gossip_forwarded",
                "Gossip message copies forwarded to mesh peers",
            ),
            dropped: counter(
                "gossip_dropped",
                "Gossip forwards, publishes and control messages dropped on full peer queues",
            ),
            app_dropped: counter(
                "gossip_app_dropped",
                "Gossip messages not handed to an unread subscription",
            ),
        };

        // RPC.
        let requests = Family::<DynLabels<2>, Counter>::default();
        r.register(
            "rpc_requests",
            "Finished outbound RPC requests by protocol and outcome",
            requests.clone(),
        );
        let rdur: HistogramFamily<DynLabels<1>> = Family::new_with_constructor(rpc_histogram);
        r.register_with_unit(
            "rpc_request_duration",
            "Outbound RPC request latency by protocol",
            Unit::Seconds,
            rdur.clone(),
        );
        let rpc = RpcInstruments {
            requests,
            duration: rdur,
        };

        // Content.
        let served_bytes = Counter::default();
        r.register_with_unit(
            "content_served",
            "Content chunk bytes served to peers",
            Unit::Bytes,
            served_bytes.clone(),
        );
        let fetched_bytes = Counter::default();
        r.register_with_unit(
            "content_fetched",
            "Content chunk bytes received from providers that matched the manifest",
            Unit::Bytes,
            fetched_bytes.clone(),
        );
        let fetches = Family::<Labels<1>, Counter>::default();
        r.register(
            "content_fetches",
            "Content downloads finished by outcome",
            fetches.clone(),
        );
        let content = ContentInstruments {
            served_bytes,
            fetched_bytes,
            fetches_ok: fetches.get_or_create_owned(&[("outcome", "ok")]),
            fetches_failed: fetches.get_or_create_owned(&[("outcome", "failed")]),
        };

        // Registry.
        let catalogue = Gauge::default();
        r.register(
            "registry_catalogue_packages",
            "Packages in the searchable catalogue",
            catalogue.clone(),
        );
        let records = Gauge::default();
        r.register(
            "registry_records",
            "Package versions (records) held",
            records.clone(),
        );
        let store_size = Gauge::default();
        r.register_with_unit(
            "store_size",
            "Size of the store's database file",
            Unit::Bytes,
            store_size.clone(),
        );
        // 0.5 ms .. 8 s.
        let store_write = seconds(0.0005, 15);
        r.register_with_unit(
            "store_write_duration",
            "Duration of one durable store transaction",
            Unit::Seconds,
            store_write.clone(),
        );
        // 1 ms .. 16 s.
        let publish_durable = seconds(0.001, 15);
        r.register_with_unit(
            "registry_publish_durable",
            "Time from a publish call until its record is durable",
            Unit::Seconds,
            publish_durable.clone(),
        );
        let reg = RegistryInstruments {
            catalogue,
            records,
            store_size,
            store_write,
            publish_durable,
        };

        Metrics {
            inner: Arc::new(Inner {
                registry: root,
                net,
                dht,
                gossip,
                rpc,
                content,
                reg,
            }),
        }
    }

    /// The content type of [`Metrics::encode_text`]: the Prometheus text format, 0.0.4.
    pub const TEXT_CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// The content type of [`Metrics::encode_openmetrics`].
    pub const OPENMETRICS_CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// Every metric in the Prometheus text format (version 0.0.4: what Prometheus scrapes
    /// by default and `promtool check metrics` checks). Serve it as
    /// [`Metrics::TEXT_CONTENT_TYPE`].
    pub fn encode_text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an error could only come from a metric's own
        // encoding, which ours do not produce.
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
        {
            tracing::warn!("encoding metrics failed: {e}");
        }
        out
    }

    /// Every metric in the OpenMetrics text format (with `# UNIT` lines and `# EOF`), for a
    /// scraper that asks for it; serve it as [`Metrics::OPENMETRICS_CONTENT_TYPE`]. Served
    /// as `text/plain` instead, Prometheus would read its counters as untyped.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::warn!("encoding metrics failed: {e}");
        }
        out
    }

    /// Zeroes the gauges that describe a running node's state (meshes, score bands, routing
    /// table, connections are closed by then), so a stopped node does not report stale ones.
    pub(crate) fn clear_snapshots(&self) {
        let i = &self.inner;
        i.gossip.mesh_peers.clear();
        for g in &i.gossip.score_bands {
            g.set(0);
        }
        i.dht.routing_table.set(0);
    }

    pub(crate) fn net(&self) -> &NetMetrics {
        &self.inner.net
    }

    pub(crate) fn dht(&self) -> &DhtMetrics {
        &self.inner.dht
    }

    pub(crate) fn gossip(&self) -> &GossipInstruments {
        &self.inner.gossip
    }

    pub(crate) fn rpc(&self) -> &RpcInstruments {
        &self.inner.rpc
    }

    pub(crate) fn content(&self) -> &ContentInstruments {
        &self.inner.content
    }

    pub(crate) fn registry(&self) -> &RegistryInstruments {
        &self.inner.reg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_labels_are_encoded() {
        let m = Metrics::new();
        m.net().dials[transport_index(TransportKind::Tcp)].inc();
        m.net().handshake[direction_index(Direction::Inbound)][0].observe(0.01);
        m.dht().query(
            DhtKind::GetRecord,
            DhtOutcome::NotFound,
            Duration::from_millis(20),
        );
        m.gossip().set_mesh("/ggen/packages", 3);
        m.rpc()
            .protocol("/ggen/sync/1")
            .finished(RpcOutcome::Ok, Duration::from_millis(2));
        m.registry().store_size.set(4096);
        let text = m.encode_text();
        for line in [
            "ggen_p2p_dials_total{transport=\"tcp\"} 1",
            "ggen_p2p_handshake_duration_seconds_count{direction=\"in\",transport=\"tcp\"} 1",
            "ggen_p2p_dht_queries_total{kind=\"get_record\",outcome=\"not_found\"} 1",
            "ggen_p2p_gossip_mesh_peers{topic=\"/ggen/packages\"} 3",
            "ggen_p2p_rpc_requests_total{protocol=\"/ggen/sync/1\",outcome=\"ok\"} 1",
            "ggen_p2p_store_size_bytes 4096",
            "# TYPE ggen_p2p_dials_total counter",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let open = m.encode_openmetrics();
        assert!(
            open.contains("# UNIT ggen_p2p_store_size_bytes bytes"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
        m.clear_snapshots();
        assert!(!m.encode_text().contains("gossip_mesh_peers{"));
    }

    #[test]
    fn score_bands_follow_the_thresholds() {
        let t = crate::gossip::PeerScoreThresholds::default();
        assert_eq!(ScoreBand::of(-100.0, &t), ScoreBand::Graylisted);
        assert_eq!(ScoreBand::of(-60.0, &t), ScoreBand::BelowPublish);
        assert_eq!(ScoreBand::of(-20.0, &t), ScoreBand::BelowGossip);
        assert_eq!(ScoreBand::of(-1.0, &t), ScoreBand::Neutral);
        assert_eq!(ScoreBand::of(0.0, &t), ScoreBand::Neutral);
        assert_eq!(ScoreBand::of(3.0, &t), ScoreBand::Positive);
    }
}
