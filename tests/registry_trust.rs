//! The trust model of package names, attacked across real registry nodes over loopback TCP.
//!
//! - A back-dated claim of a settled name (the attack that used to take any name) is
//!   refused on every node, the owner's own included, and on a node that joins later;
//!   the owner's versions all stay.
//! - Two keys racing for a new name end with one owner on every node.
//! - The publishing node stamps the publication time and refuses a back-dated package.
//! - Maintainers are added and removed, and a name is transferred, with signed statements;
//!   a removed key's later versions are refused everywhere, however they are dated.
//! - Replaying an older re-signing never rolls a version's metadata back.
//!
//! The attacker is an outside node on the real gossip topic that signs records with keys
//! of its own (and, for the removed maintainer, with that maintainer's key).

use std::time::Duration;

use bytes::Bytes;
use ggen_p2p::gossip::{Gossip, GossipsubConfig, Topic};
use ggen_p2p::identity::save_identity;
use ggen_p2p::node::{Node, NodeConfig, NodeHandle};
use ggen_p2p::registry::protocol::Announcement;
use ggen_p2p::registry::{
    BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Registry, RegistryError,
    SignedPackage,
};
use ggen_p2p::{Keypair, Multiaddr};

const T: Duration = Duration::from_secs(40);

fn config(bootstrap: &[&P2PRegistry]) -> P2PConfig {
    let mut c = P2PConfig::default();
    c.network.listen_addresses = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.bootstrap.mdns_enabled = false;
    c.registry.sync_interval = 1;
    // A short race window, so the tests do not wait the default 10 s for names to settle.
    c.registry.ownership.race_window = Duration::from_secs(2);
    c.registry.ownership.poll_interval = Duration::from_millis(300);
    c.bootstrap.nodes = bootstrap
        .iter()
        .map(|b| BootstrapNode {
            peer_id: b.local_peer_id().to_string(),
            address: b.listen_addresses()[0].clone(),
        })
        .collect();
    c
}

async fn node(bootstrap: &[&P2PRegistry]) -> P2PRegistry {
    node_with_key(bootstrap, None).await
}

async fn node_with_key(bootstrap: &[&P2PRegistry], key: Option<&Keypair>) -> P2PRegistry {
    let mut b = P2PRegistryBuilder::new().with_config(config(bootstrap));
    let dir = tempfile::tempdir().unwrap();
    if let Some(k) = key {
        let path = dir.path().join("id.key");
        save_identity(&path, k).unwrap();
        b = b.with_identity_path(path);
    }
    let r = b.build().unwrap();
    r.start().await.unwrap();
    // The key file was read at build time; the directory may go.
    drop(dir);
    r
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

/// A network of `n` registries in a star around the first, each connected.
async fn network(n: usize) -> Vec<P2PRegistry> {
    let hub = node(&[]).await;
    let mut nodes = vec![hub];
    for _ in 1..n {
        let r = node(&[&nodes[0]]).await;
        nodes.push(r);
    }
    for r in &nodes {
        eventually("connected", || async {
            r.stats().await.connected_peers > 0
        })
        .await;
    }
    nodes
}

/// An outside node on the packages topic: the attacker's mouth.
struct Outsider {
    node: NodeHandle,
    gossip: Gossip,
    topic: Topic,
    _sub: ggen_p2p::gossip::Subscription,
}

impl Outsider {
    async fn join(hub: &P2PRegistry) -> Outsider {
        let node = Node::spawn(
            Keypair::generate(),
            NodeConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().unwrap()],
                ..NodeConfig::default()
            },
        )
        .await
        .unwrap();
        let gossip = Gossip::spawn(&node, GossipsubConfig::default()).unwrap();
        let topic = GossipsubConfig::default().topic("packages");
        let sub = gossip.subscribe(topic.clone()).await.unwrap();
        let hub_addr: Multiaddr = hub.listen_addresses()[0].parse().unwrap();
        node.dial(hub_addr.with_peer_id(hub.local_peer_id()))
            .await
            .unwrap();
        let o = Outsider {
            node,
            gossip,
            topic,
            _sub: sub,
        };
        eventually("the outsider's mesh has a peer", || async {
            o.gossip
                .mesh(o.topic.clone())
                .await
                .is_ok_and(|m| !m.mesh.is_empty())
        })
        .await;
        o
    }

    async fn announce(&self, record: SignedPackage) {
        let data: Bytes = Announcement { record }.encode();
        self.gossip.publish(self.topic.clone(), data).await.unwrap();
    }
}

fn dated(name: &str, version: &str, at: chrono::DateTime<chrono::Utc>) -> Package {
    let mut p = Package::new(name.into(), version.into());
    p.created_at = at;
    p.updated_at = at;
    p
}

async fn settled_owner(r: &P2PRegistry, name: &str) -> Option<ggen_p2p::PeerId> {
    r.owner_of(name)
        .await
        .ok()
        .flatten()
        .filter(|o| o.settled)
        .map(|o| o.owner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_back_dated_claim_takes_nothing_on_any_node_nor_on_a_later_joiner() {
    let nodes = network(4).await;
    let alice = &nodes[1];
    let mut v1 = Package::new("popular-template".into(), "1.0.0".into());
    v1.description = "Alice's template".into();
    alice.publish(v1).await.unwrap();
    alice
        .publish(Package::new("popular-template".into(), "1.1.0".into()))
        .await
        .unwrap();
    for n in &nodes {
        eventually("Alice's claim settles everywhere", || async {
            settled_owner(n, "popular-template").await == Some(alice.local_peer_id())
                && n.get("popular-template@1.1.0")
                    .await
                    .ok()
                    .flatten()
                    .is_some()
        })
        .await;
    }
    // Mallory, a registry node, cannot back-date through the API: the node stamps time.
    let mallory = &nodes[3];
    let year_ago = chrono::Utc::now() - chrono::Duration::days(365);
    let err = mallory
        .publish(dated("popular-template", "9.9.9", year_ago))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::BackDated { .. }), "{err}");
    // From outside, a swarm of keys announces back-dated claims on the real topic.
    let outsider = Outsider::join(&nodes[0]).await;
    for i in 0..20 {
        let key = Keypair::generate();
        let forged = SignedPackage::sign(
            dated("popular-template", &format!("9.9.{i}"), year_ago),
            false,
            &key,
        );
        outsider.announce(forged).await;
    }
    // A valid marker from the outsider's own new name tells us the announcements arrived.
    let marker_key = Keypair::generate();
    outsider
        .announce(SignedPackage::sign(
            Package::new("marker".into(), "1.0.0".into()),
            false,
            &marker_key,
        ))
        .await;
    for n in &nodes {
        eventually("marker arrives", || async {
            n.get("marker@1.0.0").await.ok().flatten().is_some()
        })
        .await;
    }
    // Give the polls a full window to act on anything they might act on.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for n in &nodes {
        assert_eq!(
            settled_owner(n, "popular-template").await,
            Some(alice.local_peer_id())
        );
        let latest = n.get("popular-template").await.unwrap().unwrap();
        assert_eq!(latest.version, "1.1.0");
        assert!(n.get("popular-template@1.0.0").await.unwrap().is_some());
        for i in 0..20 {
            let id = format!("popular-template@9.9.{i}");
            assert_eq!(n.get(&id).await.unwrap(), None, "{id}");
        }
    }
    // A node that joins later, through honest peers, learns Alice as the owner.
    let late = node(&[&nodes[0], &nodes[2]]).await;
    eventually("the late joiner holds Alice's versions", || async {
        late.get("popular-template@1.1.0")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    eventually("the late joiner settles Alice", || async {
        settled_owner(&late, "popular-template").await == Some(alice.local_peer_id())
    })
    .await;
    outsider
        .announce(SignedPackage::sign(
            dated("popular-template", "9.9.99", year_ago),
            false,
            &Keypair::generate(),
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(late.get("popular-template@9.9.99").await.unwrap(), None);
    assert_eq!(
        late.get("popular-template").await.unwrap().unwrap().version,
        "1.1.0"
    );
    late.stop().await.unwrap();
    for n in &nodes {
        n.stop().await.unwrap();
    }
    outsider.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_racing_for_a_new_name_end_with_one_owner_everywhere() {
    let nodes = network(5).await;
    for round in 0..3 {
        let name = format!("contested-{round}");
        let (a, b) = (&nodes[1 + round % 2], &nodes[3]);
        let (ra, rb) = tokio::join!(
            a.publish(Package::new(name.clone(), "1.0.0".into())),
            b.publish(Package::new(name.clone(), "2.0.0".into())),
        );
        assert!(ra.is_ok() || rb.is_ok(), "{ra:?} {rb:?}");
        let mut owners = Vec::new();
        for n in &nodes {
            eventually("the name settles", || async {
                settled_owner(n, &name).await.is_some()
            })
            .await;
            owners.push(settled_owner(n, &name).await);
        }
        assert!(
            owners.iter().all(|o| *o == owners[0]),
            "round {round}: {owners:?}"
        );
        let winner = owners[0].unwrap();
        assert!(winner == a.local_peer_id() || winner == b.local_peer_id());
        // Only the winner's version stands, on every node.
        let (won, lost) = if winner == a.local_peer_id() {
            ("1.0.0", "2.0.0")
        } else {
            ("2.0.0", "1.0.0")
        };
        for n in &nodes {
            eventually("the winner's version everywhere", || async {
                n.get(&format!("{name}@{won}"))
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            })
            .await;
            assert_eq!(n.get(&format!("{name}@{lost}")).await.unwrap(), None);
        }
    }
    for n in &nodes {
        n.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintainers_and_transfers_by_signed_statements_hold_on_every_node() {
    let hub = node(&[]).await;
    let alice = node(&[&hub]).await;
    let bob_key = Keypair::generate();
    let bob = node_with_key(&[&hub], Some(&bob_key)).await;
    let carol = node(&[&hub]).await;
    let nodes = [&hub, &alice, &bob, &carol];
    for n in nodes {
        eventually("connected", || async {
            n.stats().await.connected_peers > 0
        })
        .await;
    }
    alice
        .publish(Package::new("shared-kit".into(), "1.0.0".into()))
        .await
        .unwrap();
    for n in nodes {
        eventually("settled", || async {
            settled_owner(n, "shared-kit").await == Some(alice.local_peer_id())
        })
        .await;
    }
    // Bob may not publish until Alice adds him.
    let err = bob
        .publish(Package::new("shared-kit".into(), "1.1.0".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NameOwned { .. }), "{err}");
    alice
        .add_maintainer("shared-kit", bob.local_peer_id())
        .await
        .unwrap();
    eventually("Bob sees himself a maintainer", || async {
        bob.owner_of("shared-kit")
            .await
            .ok()
            .flatten()
            .is_some_and(|o| o.maintainers.contains(&bob.local_peer_id()))
    })
    .await;
    bob.publish(Package::new("shared-kit".into(), "1.1.0".into()))
        .await
        .unwrap();
    for n in nodes {
        eventually("Bob's version everywhere", || async {
            n.get("shared-kit@1.1.0").await.ok().flatten().is_some()
        })
        .await;
    }
    // Alice removes Bob. His 1.1.0 stays; anything he signs later is refused, even dated
    // before the removal.
    alice
        .remove_maintainer("shared-kit", bob.local_peer_id())
        .await
        .unwrap();
    for n in nodes {
        eventually("the removal everywhere", || async {
            n.owner_of("shared-kit")
                .await
                .ok()
                .flatten()
                .is_some_and(|o| o.maintainers.is_empty())
        })
        .await;
    }
    let err = bob
        .publish(Package::new("shared-kit".into(), "1.2.0".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NameOwned { .. }), "{err}");
    let outsider = Outsider::join(&hub).await;
    let month_ago = chrono::Utc::now() - chrono::Duration::days(30);
    outsider
        .announce(SignedPackage::sign(
            dated("shared-kit", "1.3.0", month_ago),
            false,
            &bob_key,
        ))
        .await;
    let marker = Keypair::generate();
    outsider
        .announce(SignedPackage::sign(
            Package::new("marker-two".into(), "1.0.0".into()),
            false,
            &marker,
        ))
        .await;
    for n in nodes {
        eventually("marker arrives", || async {
            n.get("marker-two@1.0.0").await.ok().flatten().is_some()
        })
        .await;
        assert_eq!(n.get("shared-kit@1.3.0").await.unwrap(), None);
        assert!(n.get("shared-kit@1.1.0").await.unwrap().is_some());
    }
    // Alice transfers the name to Carol: Carol publishes, Alice no longer may.
    alice
        .transfer_name("shared-kit", carol.local_peer_id())
        .await
        .unwrap();
    eventually("Carol owns it", || async {
        carol
            .owner_of("shared-kit")
            .await
            .ok()
            .flatten()
            .is_some_and(|o| o.owner == carol.local_peer_id())
    })
    .await;
    carol
        .publish(Package::new("shared-kit".into(), "2.0.0".into()))
        .await
        .unwrap();
    let err = alice
        .publish(Package::new("shared-kit".into(), "3.0.0".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::NameOwned { .. }), "{err}");
    for n in nodes {
        eventually("Carol's version everywhere", || async {
            n.get("shared-kit@2.0.0").await.ok().flatten().is_some()
        })
        .await;
        let o = n.owner_of("shared-kit").await.unwrap().unwrap();
        assert_eq!(o.owner, carol.local_peer_id());
        for v in ["1.0.0", "1.1.0", "2.0.0"] {
            assert!(
                n.get(&format!("shared-kit@{v}")).await.unwrap().is_some(),
                "{v}"
            );
        }
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
    outsider.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_an_older_re_signing_never_rolls_metadata_back() {
    let alice_key = Keypair::generate();
    let hub = node(&[]).await;
    let alice = node_with_key(&[&hub], Some(&alice_key)).await;
    let other = node(&[&hub]).await;
    let nodes = [&hub, &alice, &other];
    for n in nodes {
        eventually("connected", || async {
            n.stats().await.connected_peers > 0
        })
        .await;
    }
    let mut p = Package::new("docs-kit".into(), "1.0.0".into());
    p.description = "first words".into();
    let first = alice.publish_with_content(p, vec![7u8; 100]).await.unwrap();
    for n in nodes {
        eventually("first everywhere", || async {
            n.get("docs-kit@1.0.0").await.ok().flatten().is_some()
        })
        .await;
    }
    let deprecated = alice.deprecate("docs-kit@1.0.0").await.unwrap();
    assert!(deprecated.updated_at > first.updated_at);
    for n in nodes {
        eventually("the deprecation everywhere", || async {
            n.get("docs-kit@1.0.0")
                .await
                .ok()
                .flatten()
                .is_some_and(|p| p.updated_at == deprecated.updated_at)
        })
        .await;
    }
    // The attacker replays Alice's first signing (a valid signature, an older update).
    let old = SignedPackage::sign(first.clone(), false, &alice_key);
    let outsider = Outsider::join(&hub).await;
    outsider.announce(old).await;
    let marker = Keypair::generate();
    outsider
        .announce(SignedPackage::sign(
            Package::new("marker-three".into(), "1.0.0".into()),
            false,
            &marker,
        ))
        .await;
    for n in nodes {
        eventually("marker arrives", || async {
            n.get("marker-three@1.0.0").await.ok().flatten().is_some()
        })
        .await;
        let now = n.get("docs-kit@1.0.0").await.unwrap().unwrap();
        assert_eq!(now.updated_at, deprecated.updated_at);
    }
    for n in nodes {
        n.stop().await.unwrap();
    }
    outsider.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_settled_names_and_statements() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&[]);
    c.registry.data_dir = Some(dir.path().to_path_buf());
    let owner = P2PRegistryBuilder::new()
        .with_config(c.clone())
        .build()
        .unwrap();
    owner.start().await.unwrap();
    owner
        .publish(Package::new("kept-name".into(), "1.0.0".into()))
        .await
        .unwrap();
    eventually("settled alone", || async {
        settled_owner(&owner, "kept-name").await == Some(owner.local_peer_id())
    })
    .await;
    let helper = Keypair::generate();
    owner
        .add_maintainer("kept-name", helper.peer_id())
        .await
        .unwrap();
    owner.stop().await.unwrap();
    // Started again: settled at once (no new race window), the maintainer still there.
    owner.start().await.unwrap();
    let o = owner.owner_of("kept-name").await.unwrap().unwrap();
    assert!(o.settled);
    assert_eq!(o.owner, owner.local_peer_id());
    assert_eq!(o.maintainers, vec![helper.peer_id()]);
    // A rival that reaches it right after the restart is refused outright.
    let peer = node(&[&owner]).await;
    eventually("the peer holds the name", || async {
        peer.get("kept-name@1.0.0").await.ok().flatten().is_some()
    })
    .await;
    let outsider = Outsider::join(&owner).await;
    let old = chrono::Utc::now() - chrono::Duration::days(400);
    outsider
        .announce(SignedPackage::sign(
            dated("kept-name", "0.0.1", old),
            false,
            &Keypair::generate(),
        ))
        .await;
    // The maintainer's version is admitted on both nodes.
    outsider
        .announce(SignedPackage::sign(
            Package::new("kept-name".into(), "1.1.0".into()),
            false,
            &helper,
        ))
        .await;
    for n in [&owner, &peer] {
        eventually("the maintainer's version arrives", || async {
            n.get("kept-name@1.1.0").await.ok().flatten().is_some()
        })
        .await;
        assert_eq!(n.get("kept-name@0.0.1").await.unwrap(), None);
    }
    peer.stop().await.unwrap();
    owner.stop().await.unwrap();
    outsider.node.shutdown().await;
}
