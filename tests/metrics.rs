//! Prometheus metrics of real registry nodes over loopback TCP: three nodes (a hub and two
//! leaves) with data directories; one publishes a package with content, another fetches
//! it and searches; then each node's `metrics_text()` must show what happened (connections,
//! bytes, DHT queries, gossip deliveries, content served and fetched, catalogue size,
//! publish-to-durable latency) and pass `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ggen_p2p::registry::{BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package};
use ggen_p2p::{Query, Registry};

const T: Duration = Duration::from_secs(40);

fn config(bootstrap: Option<&P2PRegistry>, dir: &std::path::Path) -> P2PConfig {
    let mut c = P2PConfig::default();
    c.network.listen_addresses = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.bootstrap.mdns_enabled = false;
    c.registry.sync_interval = 1;
    c.registry.data_dir = Some(dir.to_path_buf());
    c.bootstrap.nodes = bootstrap
        .iter()
        .map(|b| BootstrapNode {
            peer_id: b.local_peer_id().to_string(),
            address: b.listen_addresses()[0].clone(),
        })
        .collect();
    c
}

async fn node(bootstrap: Option<&P2PRegistry>, dir: &std::path::Path) -> P2PRegistry {
    let r = P2PRegistryBuilder::new()
        .with_config(config(bootstrap, dir))
        .build()
        .unwrap();
    r.start().await.unwrap();
    r
}

/// Waits until `f` holds, polling, for at most `T`.
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

/// The samples of a text exposition: series (name and labels) to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every series named `name` whose labels include each of `labels`.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series.as_str(), ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v)
        .sum()
}

fn metric(r: &P2PRegistry, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(&r.metrics_text(), name, labels)
}

/// Runs `promtool check metrics` on `text`; panics with its output unless it passes clean.
fn promtool_check(who: &str, text: &str) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.flush().unwrap();
    let input = std::fs::File::open(file.path()).unwrap();
    let out = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::from(input))
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run promtool ({e}): install it (apt-get install prometheus), as .ci/run does"
        ),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics on {who}'s metrics: {} {said}\n{text}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_report_what_happened_and_promtool_accepts_it() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hub = node(None, dirs[0].path()).await;
    let publisher = node(Some(&hub), dirs[1].path()).await;
    let fetcher = node(Some(&hub), dirs[2].path()).await;
    let nodes = [&hub, &publisher, &fetcher];
    for r in nodes {
        eventually("connected", || async {
            r.stats().await.connected_peers > 0
        })
        .await;
    }
    eventually("the hub sees both leaves", || async {
        hub.stats().await.connected_peers == 2
    })
    .await;

    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut p = Package::new("metered".into(), "1.0.0".into());
    p.description = "A package that is measured".into();
    p.category = "tools".into();
    publisher
        .publish_with_content(p, content.clone())
        .await
        .expect("publish");

    eventually("the fetcher has the record", || async {
        fetcher
            .search(&Query::new(vec!["metered".into()]))
            .await
            .is_ok_and(|hits| hits.iter().any(|h| h.package.id == "metered@1.0.0"))
    })
    .await;
    let got = fetcher.fetch_content("metered@1.0.0").await.expect("fetch");
    assert_eq!(got.len(), content.len());

    // Every node: connections, traffic, DHT queries, a catalogue with the package.
    for (who, r) in ["hub", "publisher", "fetcher"].iter().zip(nodes) {
        eventually(&format!("{who}: catalogue and DHT queries"), || async {
            metric(r, "ggen_p2p_registry_catalogue_packages", &[]) >= 1.0
                && metric(r, "ggen_p2p_dht_queries_total", &[]) >= 1.0
        })
        .await;
        let text = r.metrics_text();
        let v = |name: &str, labels: &[(&str, &str)]| value(&text, name, labels);
        assert!(
            v("ggen_p2p_connections_open", &[("transport", "tcp")]) >= 1.0,
            "{who}\n{text}"
        );
        assert!(
            v("ggen_p2p_network_received_bytes_total", &[]) > 0.0,
            "{who}"
        );
        assert!(v("ggen_p2p_network_sent_bytes_total", &[]) > 0.0, "{who}");
        assert!(v("ggen_p2p_registry_records", &[]) >= 1.0, "{who}");
        assert!(v("ggen_p2p_store_size_bytes", &[]) > 0.0, "{who}");
        assert!(
            v("ggen_p2p_rpc_requests_total", &[("outcome", "ok")]) >= 1.0,
            "{who}: sync requests\n{text}"
        );
    }
    // The leaves dialed the hub: a dial and an outbound handshake each; the hub accepted.
    for (who, r) in [("publisher", &publisher), ("fetcher", &fetcher)] {
        let text = r.metrics_text();
        assert!(value(&text, "ggen_p2p_dials_total", &[("transport", "tcp")]) >= 1.0);
        assert!(
            value(
                &text,
                "ggen_p2p_handshake_duration_seconds_count",
                &[("direction", "out"), ("transport", "tcp")]
            ) >= 1.0,
            "{who}\n{text}"
        );
    }
    assert!(
        metric(
            &hub,
            "ggen_p2p_handshake_duration_seconds_count",
            &[("direction", "in")]
        ) >= 2.0
    );
    // One connection per leaf, whoever dialed it (a duplicate counts until it has drained).
    eventually("the hub counts one connection per leaf", || async {
        metric(&hub, "ggen_p2p_connections_open", &[("transport", "tcp")]) == 2.0
    })
    .await;

    // The announcement reached the others through gossip.
    for (who, r) in [("hub", &hub), ("fetcher", &fetcher)] {
        eventually(&format!("{who}: a gossip delivery"), || async {
            metric(r, "ggen_p2p_gossip_delivered_total", &[]) >= 1.0
        })
        .await;
    }
    assert!(metric(&publisher, "ggen_p2p_gossip_published_total", &[]) >= 1.0);
    // Meshes and score bands are refreshed at heartbeats.
    eventually("the hub's mesh and score bands", || async {
        let text = hub.metrics_text();
        value(&text, "ggen_p2p_gossip_mesh_peers", &[]) >= 1.0
            && value(&text, "ggen_p2p_gossip_peers", &[]) >= 2.0
    })
    .await;

    // Content: the publisher served it, the fetcher fetched it.
    let served = metric(&publisher, "ggen_p2p_content_served_bytes_total", &[]);
    assert!(served >= content.len() as f64, "served {served}");
    let fetched = metric(&fetcher, "ggen_p2p_content_fetched_bytes_total", &[]);
    assert!(fetched >= content.len() as f64, "fetched {fetched}");
    assert_eq!(
        metric(
            &fetcher,
            "ggen_p2p_content_fetches_total",
            &[("outcome", "ok")]
        ),
        1.0
    );
    assert!(
        metric(
            &fetcher,
            "ggen_p2p_rpc_requests_total",
            &[("protocol", "/ggen/content/1"), ("outcome", "ok")]
        ) >= 1.0,
        "{}",
        fetcher.metrics_text()
    );

    // The publish: durable once, written by the store writer.
    let text = publisher.metrics_text();
    assert_eq!(
        value(
            &text,
            "ggen_p2p_registry_publish_durable_seconds_count",
            &[]
        ),
        1.0,
        "{text}"
    );
    assert!(value(&text, "ggen_p2p_registry_publish_durable_seconds_sum", &[]) > 0.0);
    assert!(value(&text, "ggen_p2p_store_write_duration_seconds_count", &[]) >= 1.0);

    for (who, r) in ["hub", "publisher", "fetcher"].iter().zip(nodes) {
        promtool_check(who, &r.metrics_text());
    }

    // A stopped node keeps its counters and reports no open connection.
    fetcher.stop().await.unwrap();
    eventually("the fetcher's connections closed", || async {
        metric(&fetcher, "ggen_p2p_connections_open", &[]) == 0.0
    })
    .await;
    assert!(metric(&fetcher, "ggen_p2p_content_fetched_bytes_total", &[]) >= fetched);
    assert_eq!(
        metric(&fetcher, "ggen_p2p_dht_routing_table_peers", &[]),
        0.0
    );
    for r in [&hub, &publisher] {
        r.stop().await.unwrap();
    }
}
