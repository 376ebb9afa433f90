//! The DHT over real loopback connections: 32 nodes over TCP and 32 over QUIC.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ggen_p2p::kademlia::{Dht, KademliaConfig, Key, Record};
use ggen_p2p::node::NodeHandle;

const T: Duration = Duration::from_secs(60);

async fn spawn(listen: &str, bootstrap: Option<ggen_p2p::Multiaddr>) -> (NodeHandle, Dht) {
    let node = node_with(listen, move |c| {
        c.bootstrap = bootstrap.into_iter().collect()
    })
    .await;
    let dht = Dht::spawn(&node, KademliaConfig::default(), None).expect("dht starts");
    (node, dht)
}

async fn dht_network(listen: &str, n: usize) {
    let (boot, boot_dht) = spawn(listen, None).await;
    let boot_addr = dial_addr(&boot);
    let mut nodes = vec![(boot, boot_dht)];
    for _ in 1..n {
        nodes.push(spawn(listen, Some(boot_addr.clone())).await);
    }
    // Everyone bootstraps: the joiners first (each reaches the first node, which learns them
    // from the sender record in their requests), then the first node, whose table is then
    // certain to be non-empty. The automatic bootstraps at start may not have finished yet.
    for (_, dht) in nodes[1..].iter().chain(&nodes[..1]) {
        let (size, _) = within(T, "bootstrap", dht.bootstrap())
            .await
            .expect("bootstrap succeeds");
        assert!(size > 0);
    }

    // Put on one node, get on every other.
    let key = Bytes::from_static(b"packages/serde-toolkit");
    let record = Record {
        key: key.clone(),
        value: Bytes::from_static(b"v1.2.3"),
        publisher: None,
        ttl_secs: 0,
    };
    let (stored, _) = within(T, "put", nodes[1].1.put_record(record, None))
        .await
        .expect("put succeeds");
    assert!(stored >= 1);
    for (i, (_, dht)) in nodes.iter().enumerate() {
        let (got, stats) = within(T, "get", dht.get_record(key.clone()))
            .await
            .unwrap_or_else(|e| panic!("node {i}: get failed: {e}"));
        assert_eq!(got.value, Bytes::from_static(b"v1.2.3"), "node {i}");
        assert!(stats.success);
    }

    // Provide on one node, find it from another.
    let content = Bytes::from_static(b"content/sha256:abcd");
    within(T, "provide", nodes[2].1.start_providing(content.clone()))
        .await
        .expect("provide succeeds");
    let (providers, _) = within(
        T,
        "providers",
        nodes[n - 1].1.get_providers(content.clone()),
    )
    .await
    .expect("providers found");
    assert!(
        providers
            .iter()
            .any(|p| p.peer == nodes[2].0.local_peer_id())
    );
    assert!(providers.iter().all(|p| !p.addrs.is_empty()));

    // Lookups for a random key agree on the closest peers.
    let target = Key::from_record_key(b"anything");
    let (a, _) = within(T, "lookup", nodes[3].1.find_closest_peers(target))
        .await
        .unwrap();
    let (b, _) = within(T, "lookup", nodes[4].1.find_closest_peers(target))
        .await
        .unwrap();
    let a: HashSet<_> = a
        .iter()
        .map(|p| p.peer)
        .filter(|p| *p != nodes[4].0.local_peer_id())
        .take(15)
        .collect();
    let b: HashSet<_> = b
        .iter()
        .map(|p| p.peer)
        .filter(|p| *p != nodes[3].0.local_peer_id())
        .take(15)
        .collect();
    assert!(
        a.intersection(&b).count() >= 12,
        "lookups disagree: {a:?} vs {b:?}"
    );

    // A node started later joins through one bootstrap address and finds both.
    let (late, late_dht) = spawn(listen, Some(dial_addr(&nodes[5].0))).await;
    within(T, "late bootstrap", late_dht.bootstrap())
        .await
        .expect("late node bootstraps");
    let (got, _) = within(T, "late get", late_dht.get_record(key.clone()))
        .await
        .expect("late get");
    assert_eq!(got.value, Bytes::from_static(b"v1.2.3"));
    let (providers, _) = within(T, "late providers", late_dht.get_providers(content))
        .await
        .expect("late providers");
    assert!(
        providers
            .iter()
            .any(|p| p.peer == nodes[2].0.local_peer_id())
    );
    let table = late_dht.routing_table().await.unwrap();
    assert!(
        table.len >= n / 2,
        "late node knows only {} peers",
        table.len
    );

    futures_util::future::join_all(
        nodes
            .iter()
            .map(|(n, _)| n.shutdown())
            .chain([late.shutdown()]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_tcp_nodes_put_get_provide_and_a_late_joiner() {
    dht_network("/ip4/127.0.0.1/tcp/0", 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_quic_nodes_put_get_provide_and_a_late_joiner() {
    dht_network("/ip4/127.0.0.1/udp/0/quic-v1", 32).await;
}
