//! Real nodes over real loopback TCP and QUIC (and the memory transport): messages both ways,
//! identity pinning, many nodes, multiplexing, duplicate resolution, limits, shutdown.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ggen_p2p::PeerId;
use ggen_p2p::node::{NodeError, NodeEvent, NodeHandle};
use ggen_p2p::transport::TransportError;

const T: Duration = Duration::from_secs(20);

async fn exchange_both_ways(listen: &str) {
    let a = node(listen).await;
    let b = node(listen).await;
    let p = proto("/test/echo");
    let mut rx_a = a.register(p.clone()).unwrap();
    let mut rx_b = b.register(p.clone()).unwrap();

    let peer = within(T, "dial", b.dial(dial_addr(&a))).await.unwrap();
    assert_eq!(peer, a.local_peer_id());
    b.send(a.local_peer_id(), &p, Bytes::from_static(b"hello a"))
        .await
        .unwrap();
    let m = recv(&mut rx_a, T).await;
    assert_eq!(m.peer, b.local_peer_id());
    assert_eq!(&m.payload[..], b"hello a");
    // The reply goes over the connection b opened.
    a.send(b.local_peer_id(), &p, Bytes::from_static(b"hello b"))
        .await
        .unwrap();
    let m = recv(&mut rx_b, T).await;
    assert_eq!(m.peer, a.local_peer_id());
    assert_eq!(&m.payload[..], b"hello b");
    assert_eq!(a.connected_peers(), vec![b.local_peer_id()]);
    assert!(within(T, "ping", a.ping(b.local_peer_id())).await.is_ok());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn tcp_nodes_exchange_messages_both_ways() {
    exchange_both_ways("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn quic_nodes_exchange_messages_both_ways() {
    exchange_both_ways("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

#[tokio::test]
async fn memory_nodes_exchange_messages_both_ways() {
    exchange_both_ways("/memory/0").await;
}

#[tokio::test]
async fn ipv6_loopback_works_for_tcp_and_quic() {
    exchange_both_ways("/ip6/::1/tcp/0").await;
    exchange_both_ways("/ip6/::1/udp/0/quic-v1").await;
}

async fn wrong_peer_id_fails(listen: &str) {
    let a = node(listen).await;
    let b = node(listen).await;
    let imposter = PeerId::random();
    let wrong = a.listen_addrs()[0].with_peer_id(imposter);
    // Two callers dialing the same peer share one dial, and both get the typed error.
    let (e1, e2) = within(T, "dial", async {
        tokio::join!(b.dial(wrong.clone()), b.dial(wrong.clone()))
    })
    .await;
    for err in [e1.unwrap_err(), e2.unwrap_err()] {
        match &err {
            NodeError::Transport(TransportError::PeerIdMismatch { expected, actual }) => {
                assert_eq!(*expected, imposter);
                assert_eq!(*actual, a.local_peer_id());
            }
            other => panic!("expected a peer id mismatch, got {other}"),
        }
    }
    let err = within(T, "dial", b.dial(wrong)).await.unwrap_err();
    assert!(err.to_string().contains("peer id mismatch"), "{err}");
    assert!(!err.is_transient());
    assert!(b.connected_peers().is_empty());
    // The right id still works afterwards.
    within(T, "dial", b.dial(dial_addr(&a))).await.unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn tcp_dial_with_wrong_peer_id_is_an_identity_error() {
    wrong_peer_id_fails("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn quic_dial_with_wrong_peer_id_is_an_identity_error() {
    wrong_peer_id_fails("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

/// 40 nodes bootstrap from one node, then connect to each other into a full mesh, and
/// every node can reach every other.
async fn many_nodes_mesh(listen: &str, n: usize) {
    let boot = node(listen).await;
    let boot_addr = dial_addr(&boot);
    let mut nodes = Vec::new();
    for _ in 0..n {
        let b = boot_addr.clone();
        nodes.push(node_with(listen, move |c| c.bootstrap = vec![b]).await);
    }
    wait_for(T * 3, "all nodes to reach the bootstrap node", || {
        boot.connected_count() == n
    })
    .await;

    // Everyone dials everyone with a higher index: a full mesh of n+1 nodes.
    let mut dials = Vec::new();
    for (i, x) in nodes.iter().enumerate() {
        for y in &nodes[i + 1..] {
            let (x, target) = (x.clone(), dial_addr(y));
            dials.push(tokio::spawn(async move { x.dial(target).await }));
        }
    }
    for d in dials {
        within(T * 3, "mesh dial", d).await.unwrap().unwrap();
    }
    for x in &nodes {
        wait_for(T, "full mesh", || x.connected_count() == n).await;
        assert_eq!(x.metrics().handshake_failures, 0);
    }

    // Every node sends one message to its successor; each arrives from the right sender.
    let p = proto("/test/mesh");
    let mut rxs: Vec<_> = nodes
        .iter()
        .map(|x| x.register(p.clone()).unwrap())
        .collect();
    for (i, x) in nodes.iter().enumerate() {
        let to = nodes[(i + 1) % n].local_peer_id();
        x.send(to, &p, Bytes::from(format!("from {i}")))
            .await
            .unwrap();
    }
    for (i, rx) in rxs.iter_mut().enumerate() {
        let m = recv(rx, T).await;
        let from = (i + n - 1) % n;
        assert_eq!(m.peer, nodes[from].local_peer_id());
        assert_eq!(m.payload, Bytes::from(format!("from {from}")));
    }
    futures_util::future::join_all(nodes.iter().chain([&boot]).map(|x| x.shutdown())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_tcp_nodes_connect_to_a_bootstrap_node_and_each_other() {
    many_nodes_mesh("/ip4/127.0.0.1/tcp/0", 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_quic_nodes_connect_to_a_bootstrap_node_and_each_other() {
    many_nodes_mesh("/ip4/127.0.0.1/udp/0/quic-v1", 40).await;
}

/// A small message sent after an 8 MiB one to the same peer arrives first: the large one
/// does not hold it back.
async fn small_overtakes_large(listen: &str) {
    // A modest per-stream QUIC window keeps the 8 MiB message in flight for many round trips,
    // as it would be on a real network; TCP interleaves by construction.
    let cfg = |c: &mut ggen_p2p::NodeConfig| c.transport.quic_stream_window = 256 * 1024;
    let a = node_with(listen, cfg).await;
    let b = node_with(listen, cfg).await;
    let (big, small) = (proto("/test/big"), proto("/test/small"));
    let mut rx_big = b.register(big.clone()).unwrap();
    let mut rx_small = b.register(small.clone()).unwrap();
    within(T, "dial", a.dial(dial_addr(&b))).await.unwrap();
    let to = b.local_peer_id();

    let payload: Bytes = (0..8 * 1024 * 1024u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    // Queue both without yielding in between (this runtime has one thread), so the small
    // message is provably waiting behind the large one before any byte is written.
    a.try_send(to, &big, payload.clone()).unwrap();
    a.try_send(to, &small, Bytes::from_static(b"urgent"))
        .unwrap();

    let first = within(T, "either message", async {
        tokio::select! {
            biased;
            m = rx_big.recv() => ("big", m),
            m = rx_small.recv() => ("small", m),
        }
    })
    .await;
    assert_eq!(
        first.0, "small",
        "the small message waited for the 8 MiB one"
    );
    assert_eq!(&first.1.unwrap().payload[..], b"urgent");
    let m = recv(&mut rx_big, T).await;
    assert_eq!(m.payload, payload, "the 8 MiB message arrives intact");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn tcp_small_message_is_not_held_back_by_an_8mib_message() {
    small_overtakes_large("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn quic_small_message_is_not_held_back_by_an_8mib_message() {
    small_overtakes_large("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

/// Both nodes dial each other at once; both keep the same single connection.
async fn simultaneous_dial(listen: &str) {
    for _ in 0..5 {
        let a = node(listen).await;
        let b = node(listen).await;
        let (ra, rb) = tokio::join!(a.dial(dial_addr(&b)), b.dial(dial_addr(&a)));
        assert_eq!(ra.unwrap(), b.local_peer_id());
        assert_eq!(rb.unwrap(), a.local_peer_id());
        wait_for(T, "one connection each side agreeing", || {
            let (ca, cb) = (a.connections(), b.connections());
            ca.len() == 1 && cb.len() == 1 && ca[0].tiebreak == cb[0].tiebreak
        })
        .await;
        let p = proto("/test/after-race");
        let mut rx = b.register(p.clone()).unwrap();
        a.send(b.local_peer_id(), &p, Bytes::from_static(b"ok"))
            .await
            .unwrap();
        assert_eq!(&recv(&mut rx, T).await.payload[..], b"ok");
        a.shutdown().await;
        b.shutdown().await;
    }
}

/// Both nodes start sending to each other at once, each through its own dial: some messages
/// go out on the connection that later loses the duplicate resolution. None may be lost.
async fn messages_survive_the_dial_race(listen: &str) {
    const N: usize = 30;
    for round in 0..8 {
        let a = node(listen).await;
        let b = node(listen).await;
        a.add_address(b.local_peer_id(), addr(&b.listen_addrs()[0].to_string()));
        b.add_address(a.local_peer_id(), addr(&a.listen_addrs()[0].to_string()));
        let p = proto("/test/race");
        let mut rx_a = a.register(p.clone()).unwrap();
        let mut rx_b = b.register(p.clone()).unwrap();
        let burst = |from: &NodeHandle, to: PeerId| {
            let (from, p) = (from.clone(), p.clone());
            async move {
                let sends = (0..N).map(|i| {
                    let (from, p) = (from.clone(), p.clone());
                    async move { from.send(to, &p, Bytes::from(i.to_string())).await }
                });
                futures_util::future::join_all(sends).await
            }
        };
        let (ra, rb) = tokio::join!(burst(&a, b.local_peer_id()), burst(&b, a.local_peer_id()));
        for r in ra.iter().chain(&rb) {
            assert!(r.is_ok(), "round {round}: send failed: {r:?}");
        }
        for (rx, who) in [(&mut rx_a, "a"), (&mut rx_b, "b")] {
            let mut got = std::collections::BTreeSet::new();
            while got.len() < N {
                let m = recv(rx, T).await;
                got.insert(String::from_utf8(m.payload.to_vec()).unwrap());
            }
            assert_eq!(got.len(), N, "round {round}: {who} got every message once");
        }
        wait_for(T, "one connection each side agreeing", || {
            let (ca, cb) = (a.connections(), b.connections());
            ca.len() == 1 && cb.len() == 1 && ca[0].tiebreak == cb[0].tiebreak
        })
        .await;
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn tcp_messages_sent_during_a_dial_race_are_delivered() {
    messages_survive_the_dial_race("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn quic_messages_sent_during_a_dial_race_are_delivered() {
    messages_survive_the_dial_race("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

#[tokio::test]
async fn memory_messages_sent_during_a_dial_race_are_delivered() {
    messages_survive_the_dial_race("/memory/0").await;
}

#[tokio::test]
async fn tcp_simultaneous_dials_resolve_to_one_connection() {
    simultaneous_dial("/ip4/127.0.0.1/tcp/0").await;
}

#[tokio::test]
async fn quic_simultaneous_dials_resolve_to_one_connection() {
    simultaneous_dial("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

#[tokio::test]
async fn connection_limit_refuses_extra_peers_and_the_node_goes_on() {
    let hub = node_with("/ip4/127.0.0.1/tcp/0", |c| c.max_connections = 2).await;
    let mut events = hub.events();
    let mut peers = Vec::new();
    for _ in 0..3 {
        peers.push(node("/ip4/127.0.0.1/tcp/0").await);
    }
    within(T, "dial 1", peers[0].dial(dial_addr(&hub)))
        .await
        .unwrap();
    within(T, "dial 2", peers[1].dial(dial_addr(&hub)))
        .await
        .unwrap();
    // The third is dropped before its handshake: the dial fails.
    assert!(
        within(T, "dial 3", peers[2].dial(dial_addr(&hub)))
            .await
            .is_err()
    );
    let refused = within(T, "refusal event", async {
        loop {
            if let Ok(NodeEvent::InboundFailed { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await;
    assert!(refused.contains("connection limit"), "{refused}");
    assert_eq!(hub.connected_count(), 2);
    assert_eq!(hub.metrics().inbound_refused, 1);
    // The two admitted peers are still served.
    assert!(
        within(T, "ping", peers[0].ping(hub.local_peer_id()))
            .await
            .is_ok()
    );
    hub.shutdown().await;
    for p in peers {
        p.shutdown().await;
    }
}

#[tokio::test]
async fn per_ip_limit_applies_unless_loopback_is_exempt() {
    let hub = node_with("/ip4/127.0.0.1/tcp/0", |c| {
        c.max_connections_per_ip = 1;
        c.per_ip_limit_exempt_loopback = false;
    })
    .await;
    let (x, y) = (
        node("/ip4/127.0.0.1/tcp/0").await,
        node("/ip4/127.0.0.1/tcp/0").await,
    );
    within(T, "first", x.dial(dial_addr(&hub))).await.unwrap();
    assert!(within(T, "second", y.dial(dial_addr(&hub))).await.is_err());
    // Once the first leaves, there is room again.
    x.shutdown().await;
    wait_for(T, "hub to notice", || hub.connected_count() == 0).await;
    within(T, "second again", y.dial(dial_addr(&hub)))
        .await
        .unwrap();
    for n in [hub, y] {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn shutdown_releases_listen_ports_at_once() {
    for listen in ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"] {
        let a = node(listen).await;
        let b = node(listen).await;
        within(T, "dial", b.dial(dial_addr(&a))).await.unwrap();
        let bound = a.listen_addrs()[0].to_string();
        a.shutdown().await;
        assert!(!a.is_running());
        wait_for(T, "peer to see the close", || b.connected_count() == 0).await;
        // The same port can be bound again immediately.
        let again = node(&bound).await;
        assert_eq!(again.listen_addrs()[0].to_string(), bound);
        within(T, "dial restarted", b.dial(dial_addr(&again)))
            .await
            .unwrap();
        again.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn unknown_protocols_are_counted_not_fatal() {
    let a = node("/ip4/127.0.0.1/tcp/0").await;
    let b = node("/ip4/127.0.0.1/tcp/0").await;
    within(T, "dial", a.dial(dial_addr(&b))).await.unwrap();
    a.send(
        b.local_peer_id(),
        &proto("/nobody/home"),
        Bytes::from_static(b"?"),
    )
    .await
    .unwrap();
    wait_for(T, "unknown protocol counted", || {
        b.metrics().unknown_protocol == 1
    })
    .await;
    assert!(within(T, "ping", a.ping(b.local_peer_id())).await.is_ok());
    let p = proto("/dup");
    let _rx = a.register(p.clone()).unwrap();
    assert!(matches!(
        a.register(p),
        Err(NodeError::AlreadyRegistered(_))
    ));
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn send_dials_a_known_address_and_oversized_messages_are_refused() {
    let a = node("/ip4/127.0.0.1/tcp/0").await;
    let b = node("/ip4/127.0.0.1/udp/0/quic-v1").await;
    let p = proto("/test/auto");
    let mut rx = b.register(p.clone()).unwrap();
    let unknown = b.local_peer_id();
    assert!(matches!(
        a.send(unknown, &p, Bytes::new()).await,
        Err(NodeError::NotConnected(_))
    ));
    a.add_address(b.local_peer_id(), b.listen_addrs()[0].clone());
    a.send(b.local_peer_id(), &p, Bytes::from_static(b"auto"))
        .await
        .unwrap();
    assert_eq!(&recv(&mut rx, T).await.payload[..], b"auto");
    let too_big = Bytes::from(vec![0u8; 17 * 1024 * 1024]);
    let err = a.send(b.local_peer_id(), &p, too_big).await.unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn events_report_connections_and_disconnections() {
    let a = node("/ip4/127.0.0.1/tcp/0").await;
    let b = node("/ip4/127.0.0.1/tcp/0").await;
    let mut ev = a.events();
    within(T, "dial", b.dial(dial_addr(&a))).await.unwrap();
    let mut seen = HashSet::new();
    within(T, "established", async {
        loop {
            if let Ok(NodeEvent::ConnectionEstablished { peer, .. }) = ev.recv().await {
                seen.insert(peer);
                return;
            }
        }
    })
    .await;
    assert!(seen.contains(&b.local_peer_id()));
    b.shutdown().await;
    within(T, "closed", async {
        loop {
            if let Ok(NodeEvent::ConnectionClosed { peer, .. }) = ev.recv().await {
                assert_eq!(peer, b.local_peer_id());
                return;
            }
        }
    })
    .await;
    a.shutdown().await;
}
