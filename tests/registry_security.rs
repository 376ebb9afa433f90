//! Records that break the rules, sent into a live network over the real gossip topic by an
//! outside node: a forged signature, someone else's name, a published version with other
//! content. Every registry node refuses them and stores nothing; the publisher's own API
//! refuses the same things with their typed errors.

use std::time::Duration;

use bytes::Bytes;
use ggen_p2p::gossip::{Gossip, GossipsubConfig};
use ggen_p2p::identity::save_identity;
use ggen_p2p::node::{Node, NodeConfig};
use ggen_p2p::registry::protocol::Announcement;
use ggen_p2p::registry::{
    BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Query, Registry,
    RegistryError, SignedPackage,
};
use ggen_p2p::{Keypair, Multiaddr};

const T: Duration = Duration::from_secs(30);

fn config(bootstrap: Option<&P2PRegistry>) -> P2PConfig {
    let mut c = P2PConfig::default();
    c.network.listen_addresses = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.bootstrap.mdns_enabled = false;
    if let Some(b) = bootstrap {
        c.bootstrap.nodes = vec![BootstrapNode {
            peer_id: b.local_peer_id().to_string(),
            address: b.listen_addresses()[0].clone(),
        }];
    }
    c
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_breaking_records_are_refused_everywhere_and_nothing_is_stored() {
    // Alice's key is known to the test, so it can also sign as her.
    let dir = tempfile::tempdir().unwrap();
    let alice_key = Keypair::generate();
    let key_path = dir.path().join("alice.key");
    save_identity(&key_path, &alice_key).unwrap();

    let hub = P2PRegistryBuilder::new()
        .with_config(config(None))
        .build()
        .unwrap();
    hub.start().await.unwrap();
    let alice = P2PRegistryBuilder::new()
        .with_config(config(Some(&hub)))
        .with_identity_path(key_path)
        .build()
        .unwrap();
    alice.start().await.unwrap();
    assert_eq!(alice.local_peer_id(), alice_key.peer_id());
    let bob = P2PRegistryBuilder::new()
        .with_config(config(Some(&hub)))
        .build()
        .unwrap();
    bob.start().await.unwrap();
    let nodes = [&hub, &alice, &bob];
    for n in nodes {
        eventually("connected", || async {
            n.stats().await.connected_peers > 0
        })
        .await;
    }

    // Alice owns "kit"; her 1.0.0 has content.
    let mut p = Package::new("kit".into(), "1.0.0".into());
    p.description = "Alice's kit".into();
    let original = alice
        .publish_with_content(p, vec![1u8; 10_000])
        .await
        .unwrap();
    for n in nodes {
        eventually("kit known", || async {
            n.get("kit@1.0.0").await.ok().flatten().is_some()
        })
        .await;
    }

    // Through the API: Bob may not publish Alice's name.
    let err = bob
        .publish(Package::new("kit".into(), "2.0.0".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NameOwned { .. }), "{err}");
    // Alice may not replace 1.0.0's content.
    let err = alice
        .publish_with_content(Package::new("kit".into(), "1.0.0".into()), vec![2u8; 10])
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::VersionExists { .. }), "{err}");
    // From outside: a plain node on the gossip topic announces rule-breaking records.
    let outsider = Node::spawn(
        Keypair::generate(),
        NodeConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().unwrap()],
            ..NodeConfig::default()
        },
    )
    .await
    .unwrap();
    let gossip = Gossip::spawn(&outsider, GossipsubConfig::default()).unwrap();
    let topic = GossipsubConfig::default().topic("packages");
    let _sub = gossip.subscribe(topic.clone()).await.unwrap();
    let hub_addr: Multiaddr = hub.listen_addresses()[0].parse().unwrap();
    outsider
        .dial(hub_addr.with_peer_id(hub.local_peer_id()))
        .await
        .unwrap();
    let bob_key = Keypair::generate();
    // 1. A forged signature on a new name.
    let mut forged = SignedPackage::sign(
        Package::new("forged".into(), "1.0.0".into()),
        false,
        &bob_key,
    );
    forged.package.description = "changed after signing".into();
    // 2. Another key's version of Alice's name.
    let stolen = SignedPackage::sign(Package::new("kit".into(), "9.0.0".into()), false, &bob_key);
    // 3. Alice's own key re-publishing 1.0.0 with other content.
    let mut replaced = Package::new("kit".into(), "1.0.0".into());
    replaced.content_hash = Some("ab".repeat(32));
    replaced.size = 10;
    replaced.updated_at = chrono::Utc::now();
    let replaced = SignedPackage::sign(replaced, false, &alice_key);
    // 4. And one valid record, so we know when the announcements have arrived.
    let marker = SignedPackage::sign(
        Package::new("marker".into(), "1.0.0".into()),
        false,
        &bob_key,
    );
    eventually("the outsider's mesh has a peer", || async {
        gossip
            .mesh(topic.clone())
            .await
            .is_ok_and(|m| !m.mesh.is_empty())
    })
    .await;
    for record in [forged, stolen, replaced, marker] {
        let data: Bytes = Announcement { record }.encode();
        gossip.publish(topic.clone(), data).await.unwrap();
    }
    for n in nodes {
        eventually("marker arrives", || async {
            n.get("marker@1.0.0").await.ok().flatten().is_some()
        })
        .await;
        assert_eq!(n.get("forged@1.0.0").await.unwrap(), None);
        assert!(
            n.search(&Query::new(vec!["forged".into()]))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(n.get("kit@9.0.0").await.unwrap(), None);
        let kept = n.get("kit@1.0.0").await.unwrap().unwrap();
        assert_eq!(kept.content_hash, original.content_hash);
        assert_eq!(n.get("kit").await.unwrap().unwrap().version, "1.0.0");
    }
    // The content still fetches and matches its hash.
    assert_eq!(
        bob.fetch_content("kit@1.0.0").await.unwrap(),
        vec![1u8; 10_000]
    );
    for n in nodes {
        n.stop().await.unwrap();
    }
    outsider.shutdown().await;
}
