//! Records that break the rules, sent into a live network over the real gossip topic by an
//! outside node: a forged signature, someone else's name, a published version with other
//! content. Every registry node refuses them and stores nothing; the publisher's own API
//! refuses the same things with their typed errors.
//!
//! Content that lies: outside nodes that speak the real content protocol, announce
//! themselves in the DHT as providers of a published package's content and serve other
//! bytes. A registry whose every reachable provider lies fails the fetch with
//! [`RegistryError::ContentMismatch`] and keeps nothing; with one honest provider among
//! them it gets the exact bytes.

mod common;

use common::files_under;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use ggen_p2p::gossip::{Gossip, GossipsubConfig};
use ggen_p2p::identity::save_identity;
use ggen_p2p::kademlia::Dht;
use ggen_p2p::node::{Node, NodeConfig, NodeHandle};
use ggen_p2p::registry::protocol::{Announcement, content_key};
use ggen_p2p::registry::{
    BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Query, Registry,
    RegistryError, SignedPackage,
};
use ggen_p2p::rpc::content::{self, ContentRequest, InfoResponse, MIN_CHUNK_SIZE};
use ggen_p2p::rpc::{ContentHash, HandlerError, HandlerFuture, Manifest, RawHandler, Rpc};
use ggen_p2p::{Keypair, Multiaddr, PeerId};

const T: Duration = Duration::from_secs(30);

fn config(bootstrap: Option<&P2PRegistry>) -> P2PConfig {
    let mut c = P2PConfig::default();
    c.network.listen_addresses = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.bootstrap.mdns_enabled = false;
    // Anti-entropy every second: a record whose gossip did not reach a node (seen under
    // heavy CPU load: the marker below missing on one node for the default 30 s) still
    // arrives well within the tests' deadlines. Refused records spread by neither path.
    c.registry.sync_interval = 1;
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

/// Chunk size of every registry in the content tests: small, so that a 100 KB blob has more
/// chunks than a download window and every provider of a download gets some.
const CHUNK: u32 = MIN_CHUNK_SIZE;

fn content_config(bootstrap: Option<&P2PRegistry>, data_dir: Option<&Path>) -> P2PConfig {
    let mut c = config(bootstrap);
    c.registry.content.chunk_size = CHUNK;
    // Small chunks allow fewer bytes per manifest.
    c.registry.content.max_content_size = 16 * 1024 * 1024;
    c.registry.data_dir = data_dir.map(Path::to_path_buf);
    c
}

async fn registry(config: P2PConfig) -> P2PRegistry {
    let r = P2PRegistryBuilder::new()
        .with_config(config)
        .build()
        .unwrap();
    r.start().await.unwrap();
    r
}

/// `len` bytes that are not all alike.
fn blob(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// An outside node that speaks the content protocol by hand: for any hash it announces
/// `manifest` and serves ranges of `data`. It counts the ranges it served.
struct Liar {
    node: NodeHandle,
    dht: Dht,
    _rpc: Rpc,
    ranges: Arc<AtomicUsize>,
}

impl Liar {
    async fn spawn(manifest: Manifest, data: Bytes) -> Liar {
        let node = Node::spawn(
            Keypair::generate(),
            NodeConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse::<Multiaddr>().unwrap()],
                ..NodeConfig::default()
            },
        )
        .await
        .unwrap();
        // The registry's own RPC and DHT protocols, so registries talk to it as to a peer.
        let defaults = P2PConfig::default();
        let rpc = Rpc::spawn(&node, defaults.registry.rpc.clone()).unwrap();
        let dht = Dht::spawn(&node, defaults.dht.clone(), None).unwrap();
        let info = Bytes::from(postcard::to_stdvec(&InfoResponse::Found(manifest)).unwrap());
        let ranges = Arc::new(AtomicUsize::new(0));
        let served = ranges.clone();
        let handler: RawHandler = Arc::new(move |_peer, req: Bytes| -> HandlerFuture {
            let (info, data, served) = (info.clone(), data.clone(), served.clone());
            Box::pin(async move {
                match postcard::from_bytes::<ContentRequest>(&req) {
                    Ok(ContentRequest::Info { .. }) => Ok(info),
                    Ok(ContentRequest::Range { offset, len, .. }) => {
                        let range = usize::try_from(offset)
                            .ok()
                            .and_then(|o| Some(o..o.checked_add(len as usize)?))
                            .filter(|r| r.end <= data.len())
                            .ok_or_else(|| HandlerError::Failed("out of range".into()))?;
                        served.fetch_add(1, Ordering::SeqCst);
                        Ok(data.slice(range))
                    }
                    Err(e) => Err(HandlerError::Malformed(e.to_string())),
                }
            })
        });
        assert!(
            rpc.register_raw(content::protocol(), content::limits(), handler)
                .await
                .unwrap()
        );
        Liar {
            node,
            dht,
            _rpc: rpc,
            ranges,
        }
    }

    fn id(&self) -> PeerId {
        self.node.local_peer_id()
    }

    /// Connects to `peers` (DHT included) and announces itself as a provider of `hash`.
    async fn provide(&self, hash: &ContentHash, peers: &[&P2PRegistry]) {
        for p in peers {
            let addr: Multiaddr = p.listen_addresses()[0].parse().unwrap();
            self.dht.add_peer(p.local_peer_id(), addr.clone());
            self.node
                .dial(addr.with_peer_id(p.local_peer_id()))
                .await
                .unwrap();
        }
        let (stored, _) = tokio::time::timeout(T, self.dht.start_providing(content_key(hash)))
            .await
            .expect("provide in time")
            .expect("provide");
        assert!(stored > 0, "no peer took the provider record");
    }

    /// Waits until a DHT lookup from here finds every one of `peers` providing `hash`.
    async fn wait_providers(&self, hash: &ContentHash, peers: &[PeerId]) {
        eventually("providers in the DHT", || async {
            match self.dht.get_providers(content_key(hash)).await {
                Ok((found, _)) => peers.iter().all(|p| found.iter().any(|f| f.peer == *p)),
                Err(_) => false,
            }
        })
        .await;
    }
}

/// Where a registry's data directory keeps the blob `hash` (see the store's layout).
fn blob_path(data_dir: &Path, hash: &ContentHash) -> std::path::PathBuf {
    let h = hash.to_string();
    data_dir.join("blobs").join(&h[..2]).join(h)
}

async fn connected(nodes: &[&P2PRegistry]) {
    for n in nodes {
        eventually("connected", || async {
            n.stats().await.connected_peers > 0
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_from_lying_providers_is_refused_and_nothing_is_kept() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (alice_dir, bob_dir) = (dirs[0].path(), dirs[1].path());
    let hub = registry(content_config(None, None)).await;
    let alice = registry(content_config(Some(&hub), Some(alice_dir))).await;
    let bob = registry(content_config(Some(&hub), Some(bob_dir))).await;
    connected(&[&hub, &alice, &bob]).await;

    let real = blob(100_000, 7);
    let published = alice
        .publish_with_content(Package::new("kit".into(), "1.0.0".into()), real.clone())
        .await
        .unwrap();
    let hash: ContentHash = published.content_hash.as_deref().unwrap().parse().unwrap();
    assert_eq!(hash, ContentHash::of(&real));
    eventually("bob knows kit", || async {
        bob.get("kit@1.0.0").await.ok().flatten().is_some()
    })
    .await;

    // The honest publisher goes away; two liars announce themselves as providers: one with
    // a manifest of its own (other) bytes, one with the real manifest and other bytes.
    alice.stop().await.unwrap();
    let fake = blob(real.len(), 99);
    let own_manifest = Liar::spawn(Manifest::of(&fake, CHUNK), fake.clone()).await;
    let real_manifest = Liar::spawn(Manifest::of(&real, CHUNK), fake.clone()).await;
    for liar in [&own_manifest, &real_manifest] {
        liar.provide(&hash, &[&hub, &bob]).await;
    }
    own_manifest
        .wait_providers(&hash, &[own_manifest.id(), real_manifest.id()])
        .await;

    let err = tokio::time::timeout(T, bob.fetch_content("kit@1.0.0"))
        .await
        .expect("the fetch ends in time")
        .unwrap_err();
    match &err {
        RegistryError::ContentMismatch {
            id,
            expected,
            reason,
        } => {
            assert_eq!(id, "kit@1.0.0");
            assert_eq!(*expected, hash.to_string());
            // Both liars were asked, and both are named.
            for liar in [&own_manifest, &real_manifest] {
                assert!(reason.contains(&liar.id().to_string()), "{reason}");
            }
        }
        other => panic!("expected ContentMismatch, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert!(
        real_manifest.ranges.load(Ordering::SeqCst) > 0,
        "the liar with the real manifest was asked for bytes"
    );
    // Nothing was kept: no blob, no temporary file.
    assert!(!blob_path(bob_dir, &hash).exists());
    assert_eq!(
        files_under(&bob_dir.join("blobs")),
        Vec::<std::path::PathBuf>::new()
    );

    // The honest publisher comes back (reachable from Bob): the same fetch now succeeds
    // with the exact bytes, and Bob keeps them.
    alice
        .add_bootstrap_node(
            bob.local_peer_id().to_string(),
            bob.listen_addresses()[0].clone(),
        )
        .await
        .unwrap();
    alice.start().await.unwrap();
    // Until Alice has dialed Bob, Bob only knows her old address: the fetch fails as before.
    let deadline = tokio::time::Instant::now() + T;
    let got = loop {
        match bob.fetch_content("kit@1.0.0").await {
            Ok(got) => break got,
            Err(e) => {
                assert!(matches!(e, RegistryError::ContentMismatch { .. }), "{e:?}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no fetch from the honest publisher: {e}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(got == real, "the exact bytes");
    assert_eq!(std::fs::read(blob_path(bob_dir, &hash)).unwrap(), real);

    for n in [&hub, &alice, &bob] {
        n.stop().await.unwrap();
    }
    for liar in [own_manifest, real_manifest] {
        liar.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_honest_provider_among_liars_gives_the_exact_bytes() {
    let hub = registry(content_config(None, None)).await;
    let alice = registry(content_config(Some(&hub), None)).await;
    let carol = registry(content_config(Some(&hub), None)).await;
    let bob_dir = tempfile::tempdir().unwrap();
    let bob = registry(content_config(Some(&hub), Some(bob_dir.path()))).await;
    connected(&[&hub, &alice, &carol, &bob]).await;

    let real = blob(100_000, 3);
    let published = alice
        .publish_with_content(Package::new("kit".into(), "1.0.0".into()), real.clone())
        .await
        .unwrap();
    let hash: ContentHash = published.content_hash.as_deref().unwrap().parse().unwrap();
    // Carol fetches it (and so provides it too).
    eventually("carol knows kit", || async {
        carol.get("kit@1.0.0").await.ok().flatten().is_some()
    })
    .await;
    assert!(carol.fetch_content("kit@1.0.0").await.unwrap() == real);
    eventually("bob knows kit", || async {
        bob.get("kit@1.0.0").await.ok().flatten().is_some()
    })
    .await;

    // Alice goes away; a liar with the real manifest and other bytes provides too.
    alice.stop().await.unwrap();
    let liar = Liar::spawn(Manifest::of(&real, CHUNK), blob(real.len(), 42)).await;
    liar.provide(&hash, &[&hub, &carol, &bob]).await;
    liar.wait_providers(&hash, &[liar.id(), carol.local_peer_id()])
        .await;

    // Bob's download splits the chunks between Carol and the liar: the liar's chunks fail,
    // are fetched again from Carol, and the result is the exact content.
    let got = tokio::time::timeout(T, bob.fetch_content("kit@1.0.0"))
        .await
        .expect("the fetch ends in time")
        .unwrap();
    assert!(got == real, "the exact bytes");
    assert!(
        liar.ranges.load(Ordering::SeqCst) > 0,
        "the liar served (bad) chunks that were caught"
    );
    assert_eq!(
        std::fs::read(blob_path(bob_dir.path(), &hash)).unwrap(),
        real
    );
    for n in [&hub, &carol, &bob] {
        n.stop().await.unwrap();
    }
    liar.node.shutdown().await;
}

/// Not a lie, only an outage: when the only provider is offline, the fetch fails with an
/// error the seed's retry loop retries (`is_transient`), not a content mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_provider_is_a_transient_error_not_a_mismatch() {
    let hub = registry(content_config(None, None)).await;
    let alice = registry(content_config(Some(&hub), None)).await;
    let bob = registry(content_config(Some(&hub), None)).await;
    connected(&[&hub, &alice, &bob]).await;
    alice
        .publish_with_content(Package::new("kit".into(), "1.0.0".into()), blob(10_000, 1))
        .await
        .unwrap();
    eventually("bob knows kit", || async {
        bob.get("kit@1.0.0").await.ok().flatten().is_some()
    })
    .await;
    alice.stop().await.unwrap();
    let err = tokio::time::timeout(T, bob.fetch_content("kit@1.0.0"))
        .await
        .expect("the fetch ends in time")
        .unwrap_err();
    assert!(
        err.is_transient(),
        "an offline provider should be retryable, got {err:?}"
    );
    for n in [&hub, &bob] {
        n.stop().await.unwrap();
    }
}
