//! The gossip mesh over real connections: 50 nodes over loopback TCP and 50 over QUIC, and a
//! peer that does not read.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ggen_p2p::gossip::{Gossip, GossipsubConfig, MessageId, Rpc, SubOpts, Subscription, Topic};
use ggen_p2p::node::NodeHandle;
use ggen_p2p::wire::ProtocolId;
use rand::Rng;

const T: Duration = Duration::from_secs(60);

fn topic() -> Topic {
    GossipsubConfig::default().topic("updates")
}

/// `n` nodes, each dialing up to 5 random earlier ones, all subscribed to the topic.
async fn network(listen: &str, n: usize) -> Vec<(NodeHandle, Gossip, Subscription)> {
    let mut nodes: Vec<(NodeHandle, Gossip, Subscription)> = Vec::new();
    let mut rng = rand::rng();
    for i in 0..n {
        let node = node(listen).await;
        let gossip = Gossip::spawn(&node, GossipsubConfig::default()).expect("gossip starts");
        let sub = gossip.subscribe(topic()).await.expect("subscribe");
        let mut targets = HashSet::new();
        while i > 0 && targets.len() < i.min(5) {
            targets.insert(rng.random_range(0..i));
        }
        for j in targets {
            within(T, "dial", node.dial(dial_addr(&nodes[j].0)))
                .await
                .expect("dial");
        }
        nodes.push((node, gossip, sub));
    }
    // Meshes form in the first heartbeats. A late node with few connections may stay
    // below D_lo for a while (well-connected peers prune it, with a backoff, when their own
    // meshes are over D_hi), so only ask that everyone has a mesh.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let mut short = Vec::new();
        for (i, (node, g, _)) in nodes.iter().enumerate() {
            let m = g.mesh(topic()).await.expect("mesh");
            if m.mesh.is_empty() {
                short.push((i, m.mesh.len(), m.subscribers.len(), node.connected_count()));
            }
        }
        if short.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "meshes not formed: (node, mesh, subscribers, connections) {short:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nodes
}

async fn every_subscriber_gets_every_message_once(listen: &str) {
    let n = 50;
    let mut nodes = network(listen, n).await;
    let mut published: HashMap<MessageId, usize> = HashMap::new();
    let mut rng = rand::rng();
    for k in 0..15 {
        let from = rng.random_range(0..n);
        let data = Bytes::from(format!("package update {k}"));
        let id = within(T, "publish", nodes[from].1.publish(topic(), data))
            .await
            .expect("publish");
        published.insert(id, from);
    }
    for (i, (_, _, sub)) in nodes.iter_mut().enumerate() {
        let expected: HashSet<&MessageId> = published
            .iter()
            .filter(|(_, from)| **from != i)
            .map(|(id, _)| id)
            .collect();
        let mut got = HashSet::new();
        while got.len() < expected.len() {
            let r = within(T, "receive", sub.recv()).await.expect("stream open");
            assert!(expected.contains(&r.id), "node {i}: unexpected {:?}", r.id);
            assert!(
                got.insert(r.id.clone()),
                "node {i}: {:?} delivered twice",
                r.id
            );
            assert!(
                r.message.verify(),
                "delivered messages carry valid signatures"
            );
        }
        // Nothing more is waiting: no duplicate reached the application.
        assert!(sub.try_recv().is_none(), "node {i}: an extra delivery");
    }
    let m = nodes[0].1.metrics().await.unwrap();
    assert!(m.delivered > 0 && m.rejected == 0, "{m:?}");
    futures_util::future::join_all(nodes.iter().map(|(n, _, _)| n.shutdown())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_tcp_nodes_deliver_every_message_exactly_once() {
    every_subscriber_gets_every_message_once("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_quic_nodes_deliver_every_message_exactly_once() {
    every_subscriber_gets_every_message_once("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

/// A peer that subscribes and then never reads: the publisher's connection queue fills,
/// then its gossip queue for that peer, and from then on messages to it are dropped and
/// counted; the bytes held for it never pass the configured bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_cannot_grow_the_senders_memory() {
    let config = GossipsubConfig {
        max_queue_bytes: 64 * 1024,
        max_control_queue_bytes: 16 * 1024,
        ..GossipsubConfig::default()
    };
    let bound = config.max_queue_bytes + config.max_control_queue_bytes;
    // Small transport queues: 1 MiB messages at most, so 1 MiB of send budget.
    let publisher = node_with("/ip4/127.0.0.1/tcp/0", |c| {
        c.transport.limits.max_message_size = 1024 * 1024;
        c.transport.send_queue_bytes = 128 * 1024;
    })
    .await;
    let gossip = Gossip::spawn(&publisher, config.clone()).expect("gossip");
    // The slow peer speaks the protocol just enough to subscribe, then never reads: its
    // node's handler queue fills, its connection stops reading, TCP pushes back.
    let slow = node_with("/ip4/127.0.0.1/tcp/0", |c| c.handler_queue = 1).await;
    let protocol = ProtocolId::new(config.protocol_name.clone(), 1).unwrap();
    let _never_read = slow.register(protocol.clone()).unwrap();
    within(T, "dial", slow.dial(dial_addr(&publisher)))
        .await
        .unwrap();
    let hello = Rpc {
        subscriptions: vec![SubOpts {
            subscribe: true,
            topic: topic(),
        }],
        ..Rpc::default()
    };
    slow.send(publisher.local_peer_id(), &protocol, hello.encode())
        .await
        .unwrap();
    within(T, "publisher sees the subscriber", async {
        loop {
            let m = gossip.mesh(topic()).await.unwrap();
            if m.subscribers.contains(&slow.local_peer_id()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // 16 MiB of publishes, far beyond every queue on the way.
    let payload = Bytes::from(vec![0x5a; 16 * 1024]);
    let mut max_seen = 0;
    let mut failed = 0;
    for _ in 0..1024 {
        match gossip.publish(topic(), payload.clone()).await {
            Ok(_) => {}
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                failed += 1;
            }
        }
        max_seen = max_seen.max(gossip.queued_bytes(slow.local_peer_id()).await.unwrap());
    }
    let m = gossip.metrics().await.unwrap();
    println!("max queued {max_seen} B (bound {bound}), {failed} publishes refused, {m:?}");
    assert!(max_seen <= bound, "queued {max_seen} > bound {bound}");
    assert!(m.dropped_publishes > 0, "the full queue dropped messages");
    assert!(failed > 0, "publish reports that nothing could be sent");
    publisher.shutdown().await;
    slow.shutdown().await;
}
