//! The DHT over real connections: 32 nodes over loopback TCP and 32 over QUIC, a client-mode
//! node, and re-bootstrap timing on the in-process transport under tokio's paused clock.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ggen_p2p::kademlia::{Dht, KademliaConfig, Key, Mode, Record, RoutingTableSnapshot};
use ggen_p2p::node::{Node, NodeConfig, NodeEvent, NodeHandle};
use ggen_p2p::{Keypair, PeerId};

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

fn table_peers(t: &RoutingTableSnapshot) -> HashSet<PeerId> {
    t.buckets
        .iter()
        .flat_map(|b| b.peers.iter().map(|(p, _)| *p))
        .collect()
}

/// A client-mode node uses the DHT (lookups, put, get) over real TCP connections but never
/// enters anyone's routing table, so servers never route queries to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_mode_node_queries_but_is_never_routed_to() {
    let listen = "/ip4/127.0.0.1/tcp/0";
    let (boot, boot_dht) = spawn(listen, None).await;
    let boot_addr = dial_addr(&boot);
    let mut servers = vec![(boot, boot_dht)];
    for _ in 1..12 {
        servers.push(spawn(listen, Some(boot_addr.clone())).await);
    }
    for (_, dht) in servers[1..].iter().chain(&servers[..1]) {
        within(T, "server bootstrap", dht.bootstrap())
            .await
            .expect("bootstrap");
    }
    let key = Bytes::from_static(b"packages/from-a-server");
    within(
        T,
        "server put",
        servers[3].1.put_record(
            Record {
                key: key.clone(),
                value: Bytes::from_static(b"server value"),
                publisher: None,
                ttl_secs: 0,
            },
            None,
        ),
    )
    .await
    .expect("server put");

    let client = node_with(listen, |c| c.bootstrap = vec![boot_addr.clone()]).await;
    let client_dht = Dht::spawn(
        &client,
        KademliaConfig {
            mode: Mode::Client,
            ..KademliaConfig::default()
        },
        None,
    )
    .expect("client dht");
    let (known, _) = within(T, "client bootstrap", client_dht.bootstrap())
        .await
        .expect("client bootstraps");
    assert!(known >= 6, "client learned only {known} peers");
    let (got, _) = within(T, "client get", client_dht.get_record(key))
        .await
        .expect("client get");
    assert_eq!(got.value, Bytes::from_static(b"server value"));
    let own = Bytes::from_static(b"packages/from-the-client");
    let (stored, _) = within(
        T,
        "client put",
        client_dht.put_record(
            Record {
                key: own.clone(),
                value: Bytes::from_static(b"client value"),
                publisher: None,
                ttl_secs: 0,
            },
            None,
        ),
    )
    .await
    .expect("client put");
    assert!(stored >= 1);
    let (got, _) = within(T, "server get", servers[7].1.get_record(own))
        .await
        .expect("server finds the client's record");
    assert_eq!(got.value, Bytes::from_static(b"client value"));

    // Servers talked to the client, yet none holds it in its table.
    let c = client.local_peer_id();
    for (node, dht) in &servers {
        let table = dht.routing_table().await.unwrap();
        assert!(
            !table_peers(&table).contains(&c),
            "{} routes to the client",
            node.local_peer_id()
        );
    }
    futures_util::future::join_all(
        servers
            .iter()
            .map(|(n, _)| n.shutdown())
            .chain([client.shutdown()]),
    )
    .await;
}

/// On tokio's paused clock: a node whose only bootstrap peer is down keeps an empty table and
/// retries at the re-bootstrap interval (not in a busy loop); once the peer comes up, the
/// node fills its table on its own, without anyone calling `bootstrap`.
#[tokio::test(start_paused = true)]
async fn an_empty_table_re_bootstraps_on_its_own_once_the_bootstrap_peer_is_up() {
    let hub_key = Keypair::generate();
    let hub_peer = hub_key.peer_id();
    let hub_addr: ggen_p2p::Multiaddr = format!(
        "/memory/{}/p2p/{hub_peer}",
        40_000 + std::process::id() % 10_000
    )
    .parse()
    .unwrap();
    let x = node_with("/memory/0", |c| c.bootstrap = vec![hub_addr.clone()]).await;
    let x_dht = Dht::spawn(&x, KademliaConfig::default(), None).expect("dht");
    let mut x_events = x.events();

    // Ten minutes with the hub down: only a bounded number of attempts.
    tokio::time::sleep(Duration::from_secs(600)).await;
    let mut failed_dials = 0;
    while let Ok(ev) = x_events.try_recv() {
        if matches!(ev, NodeEvent::DialFailed { .. }) {
            failed_dials += 1;
        }
    }
    assert!(failed_dials >= 10, "it kept trying ({failed_dials} dials)");
    assert!(
        failed_dials <= 100,
        "{failed_dials} dials in 10 min: a busy loop"
    );
    assert_eq!(x_dht.routing_table().await.unwrap().len, 0);

    // The hub and three peers come up (the hub at the address x knows).
    let hub = Node::spawn(
        hub_key,
        NodeConfig {
            listen: vec![hub_addr.without_peer_id()],
            ..NodeConfig::default()
        },
    )
    .await
    .expect("hub starts");
    let hub_dht = Dht::spawn(&hub, KademliaConfig::default(), None).expect("hub dht");
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(spawn("/memory/0", Some(hub_addr.clone())).await);
    }
    for (_, dht) in &others {
        within(T, "peer bootstrap", dht.bootstrap())
            .await
            .expect("bootstrap");
    }
    let mut want: HashSet<PeerId> = others.iter().map(|(n, _)| n.local_peer_id()).collect();
    want.insert(hub_peer);

    // Nobody calls x_dht.bootstrap(): maintenance does, within one interval or two.
    let started = tokio::time::Instant::now();
    let deadline = KademliaConfig::default().rebootstrap_interval * 3;
    loop {
        let table = x_dht.routing_table().await.unwrap();
        if want.is_subset(&table_peers(&table)) {
            println!(
                "{failed_dials} failed dials in 10 min; table filled {:?} after the hub came up",
                started.elapsed()
            );
            break;
        }
        assert!(
            started.elapsed() < deadline,
            "x's table after {:?}: {table:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(hub_dht);
    futures_util::future::join_all(
        others
            .iter()
            .map(|(n, _)| n.shutdown())
            .chain([x.shutdown(), hub.shutdown()]),
    )
    .await;
}
