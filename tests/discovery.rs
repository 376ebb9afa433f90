//! Discovery over real loopback connections: bootstrap nodes (one down at first, reached
//! through backoff), manual addition, DHT random walks, a bootstrap entry with the wrong
//! PeerId, and mDNS confined to a private network namespace that has only `lo`.
//!
//! Nothing here sends beyond loopback: every address is 127.0.0.1, and mDNS runs only in a
//! child process inside a fresh network namespace (or the test says why it skipped).

mod common;

use std::time::Duration;

use common::*;
use ggen_p2p::discovery::{
    Discovery, DiscoveryConfig, DiscoveryError, DiscoveryMethod, MdnsConfig, MdnsInterfaces,
};
use ggen_p2p::kademlia::{Dht, KademliaConfig};
use ggen_p2p::node::{Node, NodeConfig, NodeEvent, NodeHandle};
use ggen_p2p::registry::BootstrapNode;
use ggen_p2p::{Keypair, PeerId};

const T: Duration = Duration::from_secs(30);

fn entry(n: &NodeHandle) -> BootstrapNode {
    BootstrapNode {
        peer_id: n.local_peer_id().to_string(),
        address: n.listen_addrs()[0].to_string(),
    }
}

/// Fast retries, no walks, no mDNS.
fn quick(bootstrap: Vec<BootstrapNode>) -> DiscoveryConfig {
    DiscoveryConfig {
        bootstrap,
        retry_initial: Duration::from_millis(50),
        retry_interval: Duration::from_millis(400),
        walk_enabled: false,
        ..DiscoveryConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_connects_records_and_reaches_a_late_node_through_backoff() {
    let a = node("/ip4/127.0.0.1/tcp/0").await;
    // B's port and identity are known before B runs: C starts dialing a node that is down.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b_key = Keypair::generate();
    let b_id = b_key.peer_id();
    let b_addr = format!("/ip4/127.0.0.1/tcp/{port}");
    let late = BootstrapNode {
        peer_id: b_id.to_string(),
        address: format!("{b_addr}/p2p/{b_id}"),
    };
    let c = node("/ip4/127.0.0.1/tcp/0").await;
    let mut events = c.events();
    let disc = Discovery::spawn(c.clone(), None, quick(vec![entry(&a), late])).unwrap();

    wait_for(T, "C connected to A", || c.is_connected(&a.local_peer_id())).await;
    assert_eq!(
        disc.method_of(&a.local_peer_id()),
        Some(DiscoveryMethod::Bootstrap)
    );
    // At least two failed dials to B: the task is retrying, not giving up.
    let mut failures = 0;
    within(T, "dials to the down node fail", async {
        while failures < 2 {
            if let Ok(NodeEvent::DialFailed { addr, .. }) = events.recv().await {
                if addr.to_string().starts_with(&b_addr) {
                    failures += 1;
                }
            }
        }
    })
    .await;
    let b = Node::spawn(
        b_key,
        NodeConfig {
            listen: vec![addr(&b_addr)],
            ..NodeConfig::default()
        },
    )
    .await
    .unwrap();
    wait_for(T, "C reaches B once it is up", || c.is_connected(&b_id)).await;
    assert_eq!(disc.method_of(&b_id), Some(DiscoveryMethod::Bootstrap));
    let stats = disc.stats();
    assert_eq!(stats.by_method.bootstrap, 2);
    assert_eq!(stats.bootstrap_nodes, 2);

    // A lost bootstrap connection is redialed.
    c.disconnect(a.local_peer_id());
    wait_for(T, "A redialed", || c.is_connected(&a.local_peer_id())).await;

    disc.stop();
    assert!(!disc.is_running());
    for n in [&a, &b, &c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_add_records_manual_and_connects() {
    let d = node("/ip4/127.0.0.1/tcp/0").await;
    let e = node("/ip4/127.0.0.1/tcp/0").await;
    let disc = Discovery::spawn(d.clone(), None, quick(Vec::new())).unwrap();
    let other = PeerId::random();
    let err = disc
        .add_manual(other, dial_addr(&e))
        .await
        .expect_err("an address naming another peer is refused");
    assert!(matches!(err, DiscoveryError::PeerMismatch { .. }), "{err}");
    assert!(disc.method_of(&other).is_none());

    within(
        T,
        "manual dial",
        disc.add_manual(e.local_peer_id(), dial_addr(&e)),
    )
    .await
    .expect("manual peer connects");
    assert!(d.is_connected(&e.local_peer_id()));
    assert_eq!(
        disc.method_of(&e.local_peer_id()),
        Some(DiscoveryMethod::Manual)
    );
    assert_eq!(disc.stats().by_method.manual, 1);
    d.shutdown().await;
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peer_id_bootstrap_entry_never_connects() {
    let a = node("/ip4/127.0.0.1/tcp/0").await;
    let c = node("/ip4/127.0.0.1/tcp/0").await;
    // The address names A but the entry claims someone else: refused before any dial.
    let impostor = PeerId::random();
    let refused = Discovery::spawn(
        c.clone(),
        None,
        quick(vec![BootstrapNode {
            peer_id: impostor.to_string(),
            address: dial_addr(&a).to_string(),
        }]),
    )
    .expect_err("mismatched ids are refused");
    assert!(matches!(refused, DiscoveryError::BadBootstrapNode { .. }));

    // A's address with another id: the dial pins that id, A cannot prove it, no connection.
    let mut events = c.events();
    let disc = Discovery::spawn(
        c.clone(),
        None,
        quick(vec![BootstrapNode {
            peer_id: impostor.to_string(),
            address: a.listen_addrs()[0].to_string(),
        }]),
    )
    .unwrap();
    let mut failures = 0;
    within(T, "handshakes with the wrong id fail", async {
        while failures < 2 {
            if let Ok(NodeEvent::DialFailed { addr, .. }) = events.recv().await {
                if addr.peer_id() == Some(impostor) {
                    failures += 1;
                }
            }
        }
    })
    .await;
    assert_eq!(c.connected_count(), 0);
    assert!(!c.is_connected(&a.local_peer_id()));
    assert!(!c.is_connected(&impostor));
    assert!(disc.method_of(&a.local_peer_id()).is_none());
    disc.stop();
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_random_walk_learns_peers_never_dialed() {
    const N: usize = 10;
    let spawn = || async {
        let n = node("/ip4/127.0.0.1/tcp/0").await;
        let dht = Dht::spawn(&n, KademliaConfig::default(), None).unwrap();
        (n, dht)
    };
    let (hub, hub_dht) = spawn().await;
    let no_walks = |b: Vec<BootstrapNode>| DiscoveryConfig {
        walk_enabled: true,
        walk_first: Duration::from_secs(3600),
        ..quick(b)
    };
    let hub_disc = Discovery::spawn(hub.clone(), Some(hub_dht), no_walks(Vec::new())).unwrap();
    let mut nodes = Vec::new();
    for _ in 1..N {
        let (n, dht) = spawn().await;
        let disc =
            Discovery::spawn(n.clone(), Some(dht.clone()), no_walks(vec![entry(&hub)])).unwrap();
        nodes.push((n, dht, disc));
    }
    wait_for(T, "everyone connected to the hub", || {
        nodes
            .iter()
            .all(|(n, _, _)| n.is_connected(&hub.local_peer_id()))
    })
    .await;
    // The first joiner met only the hub; walks teach it the rest.
    let (first, first_dht, first_disc) = &nodes[0];
    let hub_id = hub.local_peer_id();
    let learned = within(T, "walks find the other joiners", async {
        loop {
            first_disc.walk_now().await.expect("walk runs");
            let table = first_dht.routing_table().await.unwrap();
            let dht_peers: Vec<PeerId> = table
                .buckets
                .iter()
                .flat_map(|b| b.peers.iter().map(|(p, _)| *p))
                .filter(|p| *p != hub_id)
                .filter(|p| first_disc.method_of(p) == Some(DiscoveryMethod::DHT))
                .collect();
            if dht_peers.len() >= 3 {
                break dht_peers;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    for p in &learned {
        assert_ne!(first_disc.method_of(p), Some(DiscoveryMethod::Bootstrap));
        assert!(nodes.iter().any(|(n, _, _)| n.local_peer_id() == *p));
    }
    assert_eq!(
        first_disc.method_of(&hub_id),
        Some(DiscoveryMethod::Bootstrap)
    );
    assert!(first_disc.stats().by_method.dht >= 3);
    assert!(first.is_running());
    hub_disc.stop();
    for (n, _, d) in &nodes {
        d.stop();
        n.shutdown().await;
    }
    hub.shutdown().await;
}

const NETNS_ENV: &str = "GGEN_DISCOVERY_IN_PRIVATE_NETNS";
const INNER: &str = "mdns_inner_two_nodes_on_loopback";

/// Interfaces this process sees (its network namespace's `/proc/net/dev`).
fn interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|s| s.trim().to_owned())
        .collect()
}

/// mdns-sd joins the mDNS group on every interface when its daemon starts, before any
/// interface restriction applies. So the mDNS test runs in a child process inside a new
/// network namespace whose only interface is `lo` (up, multicast on): nothing can leave the
/// host. Skips, saying why, where namespaces are not available.
#[test]
fn mdns_on_loopback_discovers_and_connects() {
    let exe = std::env::current_exe().unwrap();
    let script = "ip link set lo up && ip link set lo multicast on && exec \"$0\" \"$@\"";
    let mut last = String::new();
    for flags in [&["-n"][..], &["-r", "-n"][..]] {
        let out = std::process::Command::new("unshare")
            .args(flags)
            .args(["--", "sh", "-c", script])
            .arg(&exe)
            .args([
                INNER,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(NETNS_ENV, "1")
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let stdout = String::from_utf8_lossy(&o.stdout);
                assert!(
                    stdout.contains("mdns: discovered and connected"),
                    "the inner test did not run:\n{stdout}"
                );
                println!("{stdout}");
                return;
            }
            Ok(o) => {
                let stdout = String::from_utf8_lossy(&o.stdout);
                let stderr = String::from_utf8_lossy(&o.stderr);
                // The inner test ran and failed: that is a real failure.
                if stdout.contains(&format!("test {INNER} ... FAILED")) {
                    panic!("mDNS test failed in the private namespace:\n{stdout}\n{stderr}");
                }
                last = format!("unshare {flags:?}: {} {}", o.status, stderr.trim());
            }
            Err(e) => last = format!("cannot run unshare: {e}"),
        }
    }
    println!(
        "SKIPPED mdns_on_loopback_discovers_and_connects: no private network namespace \
         ({last}); mDNS is not run on the host's interfaces"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside a private network namespace, started by mdns_on_loopback_discovers_and_connects"]
async fn mdns_inner_two_nodes_on_loopback() {
    let ifs = interfaces();
    if std::env::var_os(NETNS_ENV).is_none() || ifs.iter().any(|i| i != "lo") {
        println!("not in a loopback-only network namespace (interfaces {ifs:?}): not running mDNS");
        return;
    }
    let mdns = DiscoveryConfig {
        mdns: MdnsConfig {
            enabled: true,
            interfaces: MdnsInterfaces::Loopback,
            ..MdnsConfig::default()
        },
        ..quick(Vec::new())
    };
    let a = node("/ip4/127.0.0.1/tcp/0").await;
    let b = node("/ip4/127.0.0.1/tcp/0").await;
    let da = Discovery::spawn(a.clone(), None, mdns.clone()).unwrap();
    let db = Discovery::spawn(b.clone(), None, mdns).unwrap();
    assert!(da.stats().mdns_running);
    let (ia, ib) = (a.local_peer_id(), b.local_peer_id());
    wait_for(T, "mDNS discovery both ways", || {
        a.is_connected(&ib)
            && da.method_of(&ib) == Some(DiscoveryMethod::MDNS)
            && db.method_of(&ia) == Some(DiscoveryMethod::MDNS)
    })
    .await;
    assert!(da.method_of(&ia).is_none(), "a node ignores its own record");
    println!("mdns: discovered and connected over lo ({ifs:?})");
    da.stop();
    db.stop();
    assert!(!da.stats().mdns_running);
    a.shutdown().await;
    b.shutdown().await;
}
