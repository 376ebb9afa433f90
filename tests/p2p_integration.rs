//! The registry across 22 real nodes on 127.0.0.1, mixing TCP and QUIC: publish on one,
//! search on every other (positive score, the real provider count), get by id and by bare
//! name, fetch the exact content bytes, a node started after the publish, and a node that
//! was stopped during ten publishes and catches up when it comes back.

use std::time::Duration;

use ggen_p2p::registry::protocol::{content_key, name_key, package_key};
use ggen_p2p::registry::{
    BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Query, Registry, Store,
    UpdateType,
};

const T: Duration = Duration::from_secs(60);

fn config(listen: &str, bootstrap: Option<(&P2PRegistry, &str)>) -> P2PConfig {
    let mut c = P2PConfig::default();
    c.network.listen_addresses = vec![listen.to_string()];
    c.bootstrap.mdns_enabled = false;
    c.registry.sync_interval = 2;
    if let Some((b, kind)) = bootstrap {
        let addr = b
            .listen_addresses()
            .into_iter()
            .find(|a| a.contains(kind))
            .expect("bootstrap address of that kind");
        c.bootstrap.nodes = vec![BootstrapNode {
            peer_id: b.local_peer_id().to_string(),
            address: addr,
        }];
    }
    c
}

async fn started(c: P2PConfig) -> P2PRegistry {
    let r = P2PRegistryBuilder::new()
        .with_config(c)
        .build()
        .expect("build");
    r.start().await.expect("start");
    r
}

/// Polls `f` until it returns `Some`, failing after `T`.
async fn eventually<F, Fut, V>(what: &str, mut f: F) -> V
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<V>>,
{
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn finds(r: &P2PRegistry, name: &str) -> Option<ggen_p2p::registry::SearchResult> {
    r.search(&Query::new(vec![name.to_string()]))
        .await
        .ok()?
        .into_iter()
        .find(|x| x.package.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_two_nodes_publish_search_get_fetch_and_catch_up() {
    let t0 = std::time::Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.2} s] {what}", t0.elapsed().as_secs_f64());
    let hub = started(config("/ip4/127.0.0.1/tcp/0", None)).await;
    // The hub also listens on QUIC.
    let hub_quic = {
        let mut c = config("/ip4/127.0.0.1/udp/0/quic-v1", Some((&hub, "/tcp/")));
        c.network
            .listen_addresses
            .push("/ip4/127.0.0.1/tcp/0".into());
        started(c).await
    };
    let mut nodes = vec![hub, hub_quic];
    for i in 0..18 {
        let c = if i % 2 == 0 {
            config("/ip4/127.0.0.1/tcp/0", Some((&nodes[0], "/tcp/")))
        } else {
            config("/ip4/127.0.0.1/udp/0/quic-v1", Some((&nodes[1], "/quic")))
        };
        nodes.push(started(c).await);
    }
    for r in &nodes {
        eventually("connected", || async {
            (r.stats().await.connected_peers > 0).then_some(())
        })
        .await;
    }

    phase("all connected");
    // Publish with content on one node.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut p = Package::new("web-kit".into(), "1.0.0".into());
    p.category = "web".into();
    p.tags = vec!["rust".into(), "web".into()];
    p.description = "A toolkit for web services".into();
    let published = nodes[3]
        .publish_with_content(p, bytes.clone())
        .await
        .expect("publish");
    assert_eq!(published.size, bytes.len() as u64);
    assert!(published.content_hash.is_some());

    phase("published");
    // Every other node finds it, scored, with one known provider.
    for (i, r) in nodes.iter().enumerate() {
        let hit = eventually(&format!("node {i} finds web-kit"), || finds(r, "web-kit")).await;
        assert!(hit.score > 0.0);
        assert_eq!(hit.peer_count, 1, "node {i}");
        assert_eq!(hit.package.id, "web-kit@1.0.0");
    }
    phase("found everywhere");
    // Get by id and by bare name; fetch the exact bytes.
    let got = nodes[7].get("web-kit@1.0.0").await.unwrap().expect("by id");
    assert_eq!(got.content_hash, published.content_hash);
    let latest = nodes[8].get("web-kit").await.unwrap().expect("by name");
    assert_eq!(latest.version, "1.0.0");
    assert_eq!(
        nodes[9].fetch_content("web-kit@1.0.0").await.unwrap(),
        bytes
    );
    phase("got and fetched");
    // The fetcher is now a provider too.
    eventually("two providers known to the fetcher", || async {
        finds(&nodes[9], "web-kit")
            .await
            .filter(|h| h.peer_count == 2)
    })
    .await;

    phase("second provider known");
    // A node started after the publish finds it.
    let late = started(config("/ip4/127.0.0.1/tcp/0", Some((&nodes[0], "/tcp/")))).await;
    eventually("late node finds web-kit", || finds(&late, "web-kit")).await;
    nodes.push(late);

    phase("late node found it");
    // Node 5 is away during ten publishes, then catches up.
    nodes[5].stop().await.unwrap();
    assert!(nodes[5].search(&Query::new(vec![])).await.is_err());
    for k in 0..10 {
        let mut p = Package::new(format!("tool-{k}"), "0.1.0".into());
        p.category = "cli".into();
        nodes[2].publish(p).await.unwrap();
    }
    phase("ten published while node 5 was away");
    nodes[5].start().await.unwrap();
    for k in 0..10 {
        let name = format!("tool-{k}");
        eventually(&format!("node 5 has {name}"), || finds(&nodes[5], &name)).await;
    }
    phase("node 5 caught up");
    for r in &nodes {
        r.stop().await.unwrap();
    }
    phase("stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_its_peer_id_packages_catalogue_and_content() {
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        let mut c = config("/ip4/127.0.0.1/tcp/0", None);
        c.registry.data_dir = Some(dir.path().to_path_buf());
        P2PRegistryBuilder::new().with_config(c).build().unwrap()
    };
    let first = build();
    first.start().await.unwrap();
    let id = first.local_peer_id();
    let mut p = Package::new("kept".into(), "2.1.0".into());
    p.tags = vec!["persistent".into()];
    first
        .publish_with_content(p, vec![42u8; 100_000])
        .await
        .unwrap();
    first
        .publish(Package::new("kept".into(), "2.2.0".into()))
        .await
        .unwrap();
    // The data directory is in use while it runs.
    let second = build();
    assert!(second.start().await.is_err(), "the store is locked");
    first.stop().await.unwrap();
    // Released at stop: a new registry on the same directory starts at once.
    second.start().await.unwrap();
    assert_eq!(second.local_peer_id(), id);
    assert_eq!(second.get("kept").await.unwrap().unwrap().version, "2.2.0");
    assert!(second.get("kept@2.1.0").await.unwrap().is_some());
    let hits = second
        .search(&Query::new(vec!["kept".into()]))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].package.version, "2.2.0");
    assert_eq!(
        second.fetch_content("kept@2.1.0").await.unwrap(),
        vec![42u8; 100_000]
    );
    second.stop().await.unwrap();
}

/// The DHT records and provider announcements a node holds for the network survive its
/// restart: after the publisher is gone, a light node still gets the record from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_still_holds_the_dht_records_it_kept_for_others() {
    let dir = tempfile::tempdir().unwrap();
    let keeper_config = || {
        let mut c = config("/ip4/127.0.0.1/tcp/0", None);
        c.registry.data_dir = Some(dir.path().to_path_buf());
        c
    };
    let keeper = started(keeper_config()).await;
    let publisher = started(config("/ip4/127.0.0.1/tcp/0", Some((&keeper, "/tcp/")))).await;
    eventually("connected", || async {
        (publisher.stats().await.connected_peers > 0).then_some(())
    })
    .await;
    let published = publisher
        .publish_with_content(Package::new("held".into(), "1.0.0".into()), vec![7u8; 5000])
        .await
        .unwrap();
    let hash: ggen_p2p::rpc::content::ContentHash =
        published.content_hash.as_deref().unwrap().parse().unwrap();
    // The version key, the name key, and the publisher's provider announcement.
    eventually("the keeper holds the DHT records", || async {
        let s = keeper.stats().await;
        (s.dht_records >= 2 && s.dht_provider_records >= 1).then_some(())
    })
    .await;
    let publisher_id = publisher.local_peer_id();
    publisher.stop().await.unwrap();
    keeper.stop().await.unwrap();

    // On disk, as the store keeps them.
    {
        let store = Store::open(dir.path()).unwrap();
        let keys: Vec<Vec<u8>> = store
            .dht_records()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(keys.contains(&package_key("held@1.0.0").to_vec()));
        assert!(keys.contains(&name_key("held").to_vec()));
        let providers = store.providers(&content_key(&hash)).unwrap();
        assert!(providers.iter().any(|p| p.peer == publisher_id));
    }

    // Restored into the restarted node's DHT, and served to others from there.
    let keeper = started(keeper_config()).await;
    let s = keeper.stats().await;
    assert!(s.dht_records >= 2, "restored records: {}", s.dht_records);
    assert!(s.dht_provider_records >= 1);
    let mut light_config = config("/ip4/127.0.0.1/tcp/0", Some((&keeper, "/tcp/")));
    light_config.registry.catalogue = false;
    let light = started(light_config).await;
    let got = eventually("the light node gets the record from the keeper", || async {
        light.get("held@1.0.0").await.ok().flatten()
    })
    .await;
    assert_eq!(got.content_hash, published.content_hash);
    assert_eq!(got.version, "1.0.0");
    light.stop().await.unwrap();
    keeper.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_start_and_after_stop_fail_not_running() {
    let r = P2PRegistryBuilder::new()
        .with_config(config("/ip4/127.0.0.1/tcp/0", None))
        .build()
        .unwrap();
    let e = r.search(&Query::new(vec![])).await.unwrap_err();
    assert_eq!(e.to_string(), "Registry not running");
    r.start().await.unwrap();
    assert!(r.is_running().await);
    assert!(!r.listen_addresses().is_empty());
    r.stop().await.unwrap();
    assert_eq!(
        r.publish(Package::new("x".into(), "1.0.0".into()))
            .await
            .unwrap_err()
            .to_string(),
        "Registry not running"
    );
    assert!(r.get("x").await.is_err());
    assert!(r.subscribe("web").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_update_events_and_a_light_node_searches_through_full_peers() {
    let hub = started(config("/ip4/127.0.0.1/tcp/0", None)).await;
    let publisher = started(config("/ip4/127.0.0.1/tcp/0", Some((&hub, "/tcp/")))).await;
    let mut light_config = config("/ip4/127.0.0.1/tcp/0", Some((&hub, "/tcp/")));
    light_config.registry.catalogue = false;
    let light = started(light_config).await;
    for r in [&hub, &publisher, &light] {
        eventually("connected", || async {
            (r.stats().await.connected_peers > 0).then_some(())
        })
        .await;
    }
    hub.subscribe("web").await.unwrap();
    let mut events = hub.events();
    let mut p = Package::new("router".into(), "0.1.0".into());
    p.category = "web".into();
    publisher.publish(p.clone()).await.unwrap();
    let mut p2 = p.clone();
    p2.version = "0.2.0".into();
    p2.id = p2.canonical_id();
    publisher.publish(p2).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let u = tokio::time::timeout(T, events.recv())
            .await
            .expect("an update in time")
            .expect("event stream open");
        if u.package_id.starts_with("router@") {
            seen.push((u.package_id, u.update_type));
        }
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        vec![
            ("router@0.1.0".to_string(), UpdateType::NewPackage),
            ("router@0.2.0".to_string(), UpdateType::NewVersion),
        ]
    );
    // The light node keeps no catalogue but finds it through its full peers.
    let hit = eventually("the light node finds router", || finds(&light, "router")).await;
    assert_eq!(hit.package.version, "0.2.0");
    assert_eq!(light.stats().await.catalogue_size, 0);
    for r in [&hub, &publisher, &light] {
        r.stop().await.unwrap();
    }
}

/// `stop()` ends everything `start()` started: the tasks alive on the runtime come back to
/// what they were before, after publishes, syncs, polls and content were all in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_every_task_that_start_started() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let hub = started(config("/ip4/127.0.0.1/tcp/0", None)).await;
    let mut c = config("/ip4/127.0.0.1/tcp/0", Some((&hub, "/tcp/")));
    c.registry.replicate_content = true;
    let seeder = started(c).await;
    eventually("connected", || async {
        (seeder.stats().await.connected_peers > 0).then_some(())
    })
    .await;
    hub.subscribe("web").await.unwrap();
    hub.publish_with_content(
        Package::new("tasks".into(), "1.0.0".into()),
        vec![3u8; 5000],
    )
    .await
    .unwrap();
    eventually("replicated", || async {
        seeder.fetch_content("tasks@1.0.0").await.ok().map(|_| ())
    })
    .await;
    assert!(metrics.num_alive_tasks() > before);
    seeder.stop().await.unwrap();
    hub.stop().await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while metrics.num_alive_tasks() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks still alive after stop (before start: {before})",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
