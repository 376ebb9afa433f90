//! The node loop's timing behaviour on the in-process transport under tokio's paused clock:
//! hundreds of nodes, keepalive against a silent peer, idle closing, bootstrap reconnection
//! with backoff. Virtual time makes minutes of protocol time take milliseconds.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ggen_p2p::node::{Node, NodeConfig, NodeEvent};
use ggen_p2p::transport::{Transport, TransportConfig};
use ggen_p2p::{Keypair, Multiaddr};

const T: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn two_hundred_memory_nodes_join_through_one_bootstrap_node() {
    let hub = node("/memory/0").await;
    let hub_addr = dial_addr(&hub);
    let mut nodes = Vec::new();
    for _ in 0..200 {
        let b = hub_addr.clone();
        nodes.push(node_with("/memory/0", move |c| c.bootstrap = vec![b]).await);
    }
    wait_for(T, "200 nodes connected to the hub", || {
        hub.connected_count() == 200
    })
    .await;
    let p = proto("/test/hello");
    let mut rx = hub.register(p.clone()).unwrap();
    for n in &nodes {
        n.send(
            hub.local_peer_id(),
            &p,
            Bytes::from(n.local_peer_id().to_string()),
        )
        .await
        .unwrap();
    }
    let mut senders = std::collections::HashSet::new();
    for _ in 0..200 {
        let m = recv(&mut rx, T).await;
        assert_eq!(m.payload, Bytes::from(m.peer.to_string()));
        senders.insert(m.peer);
    }
    assert_eq!(senders.len(), 200);
    futures_util::future::join_all(nodes.iter().chain([&hub]).map(|n| n.shutdown())).await;
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_keep_an_idle_connection_up() {
    let a = node_with("/memory/0", |c| c.idle_timeout = Duration::from_secs(3600)).await;
    let b = node_with("/memory/0", |c| c.idle_timeout = Duration::from_secs(3600)).await;
    within(T, "dial", b.dial(dial_addr(&a))).await.unwrap();
    // Ten minutes of silence at the protocol level: only pings flow, and they suffice.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(a.is_connected(&b.local_peer_id()));
    assert!(b.is_connected(&a.local_peer_id()));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_answering_is_dropped_after_the_keepalive_timeout() {
    let a = node("/memory/0").await;
    let mut events = a.events();
    // A raw transport connection that completes its handshake and then never reads or writes.
    let mute = Transport::new(&Keypair::generate(), TransportConfig::default()).unwrap();
    let conn = mute.dial(&dial_addr(&a)).await.unwrap();
    let mute_peer = conn.info().remote_peer;
    assert_eq!(mute_peer, a.local_peer_id());
    wait_for(T, "registration", || a.connected_count() == 1).await;
    let start = tokio::time::Instant::now();
    let reason = within(Duration::from_secs(120), "keepalive close", async {
        loop {
            if let Ok(NodeEvent::ConnectionClosed { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await;
    let waited = start.elapsed();
    let cfg = NodeConfig::default();
    // The silence is counted from the last byte received (the handshake), a few virtual
    // milliseconds before `start`.
    assert!(
        waited + Duration::from_secs(1) >= cfg.keepalive_timeout,
        "closed too early: {waited:?} ({reason})"
    );
    assert!(
        waited <= cfg.keepalive_timeout + Duration::from_secs(10),
        "closed late: {waited:?}"
    );
    drop(conn);
    a.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_but_bootstrap_peers_stay() {
    let hub = node_with("/memory/0", |c| c.idle_timeout = Duration::from_secs(30)).await;
    let hub_addr = dial_addr(&hub);
    let casual = node_with("/memory/0", |c| c.idle_timeout = Duration::from_secs(30)).await;
    let keeper = {
        let b = hub_addr.clone();
        node_with("/memory/0", move |c| {
            c.idle_timeout = Duration::from_secs(30);
            c.bootstrap = vec![b];
        })
        .await
    };
    within(T, "dial", casual.dial(hub_addr.clone()))
        .await
        .unwrap();
    wait_for(T, "both connected", || hub.connected_count() == 2).await;
    // Traffic resets the idle clock.
    let p = proto("/test/traffic");
    let mut rx = hub.register(p.clone()).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    casual
        .send(hub.local_peer_id(), &p, Bytes::from_static(b"x"))
        .await
        .unwrap();
    recv(&mut rx, T).await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        casual.is_connected(&hub.local_peer_id()),
        "closed despite recent traffic"
    );
    // Then 30 s of nothing: the casual connection goes, the bootstrap link stays.
    wait_for(T, "idle close", || {
        !casual.is_connected(&hub.local_peer_id())
    })
    .await;
    assert!(keeper.is_connected(&hub.local_peer_id()));
    for n in [hub, casual, keeper] {
        n.shutdown().await;
    }
}

#[tokio::test(start_paused = true)]
async fn lost_bootstrap_peer_is_redialed_with_backoff() {
    let hub_key = Keypair::generate();
    let port = rand::random::<u64>() >> 1;
    let hub_listen: Multiaddr = format!("/memory/{port}").parse().unwrap();
    let hub_cfg = NodeConfig {
        listen: vec![hub_listen.clone()],
        ..NodeConfig::default()
    };
    let hub = Node::spawn(hub_key.clone(), hub_cfg.clone()).await.unwrap();
    let b = node_with("/memory/0", {
        let addr = hub_listen.with_peer_id(hub_key.peer_id());
        move |c| {
            c.bootstrap = vec![addr];
            c.reconnect_initial_backoff = Duration::from_secs(1);
            c.reconnect_max_backoff = Duration::from_secs(8);
        }
    })
    .await;
    let mut events = b.events();
    wait_for(T, "bootstrap connection", || {
        b.is_connected(&hub_key.peer_id())
    })
    .await;

    hub.shutdown().await;
    let down_at = tokio::time::Instant::now();
    // While the hub is down, b retries with growing gaps: 1, 2, 4, 8, 8 … seconds.
    let mut failures = Vec::new();
    within(T, "retries", async {
        while failures.len() < 5 {
            if let Ok(NodeEvent::DialFailed { .. }) = events.recv().await {
                failures.push(down_at.elapsed());
            }
        }
    })
    .await;
    let gaps: Vec<u64> = failures
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect();
    assert_eq!(
        gaps,
        vec![2, 4, 8, 8],
        "backoff gaps {gaps:?} (failures at {failures:?})"
    );

    // The hub comes back on the same address with the same identity: b reconnects by itself.
    let hub = Node::spawn(hub_key.clone(), hub_cfg).await.unwrap();
    wait_for(T, "reconnection", || b.is_connected(&hub_key.peer_id())).await;
    hub.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn at_the_limit_the_longest_idle_connection_is_evicted() {
    let hub = node_with("/memory/0", |c| {
        c.max_connections = 2;
        c.eviction_min_idle = Some(Duration::from_secs(1));
    })
    .await;
    let peers = [
        node("/memory/0").await,
        node("/memory/0").await,
        node("/memory/0").await,
    ];
    let p = proto("/test/use");
    let _rx = hub.register(p.clone()).unwrap();
    within(T, "dial 0", peers[0].dial(dial_addr(&hub)))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    within(T, "dial 1", peers[1].dial(dial_addr(&hub)))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    // Peer 0 is used now; peer 1 has been idle longest.
    peers[0]
        .send(hub.local_peer_id(), &p, Bytes::from_static(b"busy"))
        .await
        .unwrap();
    wait_for(T, "hub saw traffic", || {
        hub.metrics().messages_received == 1
    })
    .await;
    within(T, "dial 2", peers[2].dial(dial_addr(&hub)))
        .await
        .unwrap();
    wait_for(T, "eviction", || {
        hub.is_connected(&peers[0].local_peer_id())
            && hub.is_connected(&peers[2].local_peer_id())
            && !hub.is_connected(&peers[1].local_peer_id())
    })
    .await;
    // Connections younger than eviction_min_idle are not evicted: the next newcomer is refused.
    let extra = node("/memory/0").await;
    assert!(
        within(T, "dial 3", extra.dial(dial_addr(&hub)))
            .await
            .is_err()
    );
    for n in peers.iter().chain([&hub, &extra]) {
        n.shutdown().await;
    }
}
