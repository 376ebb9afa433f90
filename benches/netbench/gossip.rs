//! `gossip`: N real nodes in this process, one topic. Each node dials `--dials` random others,
//! everyone subscribes, meshes settle for a few heartbeats; then `--messages` messages of
//! `--size` bytes are published 50 ms apart from random nodes. Every (message, receiver) pair
//! is timed from the publish call to the receiver's subscription stream.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ggen_p2p::gossip::{Gossip, GossipsubConfig, Topic};
use ggen_p2p::node::{Node, NodeConfig, NodeHandle};
use ggen_p2p::{Keypair, Multiaddr};
use rand::Rng;

use super::percentile;

/// What the gossip benchmark needs from the command line.
pub struct GossipArgs {
    /// The router configuration every node runs.
    pub config: GossipsubConfig,
    pub nodes: usize,
    pub transport: String,
    pub messages: usize,
    pub size: usize,
    pub dials: usize,
}

/// Runs the benchmark; `peak_rss_mb` reads the process's peak memory at the end, `cpu_seconds`
/// the CPU time used so far (read around the publishing phase).
pub async fn run(
    args: &GossipArgs,
    listen: Multiaddr,
    peak_rss_mb: fn() -> Option<f64>,
    cpu_seconds: fn() -> Option<f64>,
) -> String {
    let n = args.nodes;
    let topic: Topic = args.config.topic("netbench");
    let started = Instant::now();
    let mut nodes: Vec<(NodeHandle, Gossip)> = Vec::with_capacity(n);
    // Publish instants by message index, shared with the receivers.
    let published: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; args.messages]));
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
    let received: Arc<Mutex<Vec<HashSet<usize>>>> = Arc::new(Mutex::new(vec![HashSet::new(); n]));
    for i in 0..n {
        let config = NodeConfig {
            listen: vec![listen.clone()],
            max_connections: 1000,
            ..NodeConfig::default()
        };
        let node = Node::spawn(Keypair::generate(), config)
            .await
            .expect("node starts");
        let gossip = Gossip::spawn(&node, args.config.clone()).expect("gossip starts");
        let mut sub = gossip.subscribe(topic.clone()).await.expect("subscribe");
        let (published, latencies, received) =
            (published.clone(), latencies.clone(), received.clone());
        tokio::spawn(async move {
            while let Some(r) = sub.recv().await {
                let at = Instant::now();
                let Some(idx) = r
                    .message
                    .data
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(|b| u64::from_be_bytes(b) as usize)
                else {
                    continue;
                };
                let sent = published
                    .lock()
                    .ok()
                    .and_then(|p| p.get(idx).copied().flatten());
                if let Some(sent) = sent {
                    if let Ok(mut l) = latencies.lock() {
                        l.push(at.saturating_duration_since(sent).as_secs_f64() * 1e3);
                    }
                }
                if let Ok(mut r) = received.lock() {
                    if let Some(set) = r.get_mut(i) {
                        set.insert(idx);
                    }
                }
            }
        });
        nodes.push((node, gossip));
    }
    let mut rng = rand::rng();
    let addrs: Vec<Multiaddr> = nodes
        .iter()
        .map(|(node, _)| {
            node.listen_addrs()[0]
                .clone()
                .with_peer_id(node.local_peer_id())
        })
        .collect();
    let mut dials = Vec::new();
    for (i, (from, _)) in nodes.iter().enumerate() {
        let mut targets = HashSet::new();
        while targets.len() < args.dials.min(n - 1) {
            let j = rng.random_range(0..n);
            if j != i {
                targets.insert(j);
            }
        }
        for j in targets {
            let node = from.clone();
            let addr = addrs[j].clone();
            dials.push(tokio::spawn(async move { node.dial(addr).await.is_ok() }));
        }
    }
    let mut dial_failures = 0;
    for d in dials {
        if !d.await.unwrap_or(false) {
            dial_failures += 1;
        }
    }
    // Settle: every mesh non-empty, then three more heartbeats.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut empty = 0;
        for (_, g) in &nodes {
            if g.mesh(topic.clone())
                .await
                .map(|m| m.mesh.is_empty())
                .unwrap_or(true)
            {
                empty += 1;
            }
        }
        if empty == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle_before = cpu_seconds();
    tokio::time::sleep(args.config.heartbeat_interval * 3).await;
    let idle_cpu = cpu_seconds().zip(idle_before).map(|(a, b)| a - b);
    eprintln!(
        "netbench gossip: idle CPU {:.1} % of one core over three heartbeats",
        idle_cpu.unwrap_or(f64::NAN) * 100.0 / (args.config.heartbeat_interval * 3).as_secs_f64()
    );
    let settle_s = started.elapsed().as_secs_f64();
    eprintln!(
        "netbench gossip: {n} nodes over {} settled in {settle_s:.2} s ({dial_failures} dial failures)",
        args.transport
    );

    let before: Vec<(u64, u64)> = {
        let mut v = Vec::new();
        for (node, g) in &nodes {
            let m = g.metrics().await.expect("metrics");
            v.push((m.duplicates, node.metrics().bytes_sent));
        }
        v
    };
    let cpu_before = cpu_seconds();
    let mut publishers = Vec::new();
    let mut publish_errors = 0;
    for k in 0..args.messages {
        let from = rng.random_range(0..n);
        let mut data = vec![0u8; args.size.max(8)];
        data[..8].copy_from_slice(&(k as u64).to_be_bytes());
        rng.fill(&mut data[8..]);
        if let Ok(mut p) = published.lock() {
            p[k] = Some(Instant::now());
        }
        if nodes[from]
            .1
            .publish(topic.clone(), Bytes::from(data))
            .await
            .is_err()
        {
            publish_errors += 1;
        }
        publishers.push(from);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Wait for every delivery, or 10 s after the last publish.
    let expected = args.messages * (n - 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: usize = received
            .lock()
            .map(|r| r.iter().map(|s| s.len()).sum())
            .unwrap_or(0);
        if got >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_s = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    let delivered: usize = received
        .lock()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, s)| {
                    s.iter()
                        .filter(|idx| publishers.get(**idx) != Some(&i))
                        .count()
                })
                .sum()
        })
        .unwrap_or(0);
    let mut dups = 0u64;
    let mut bytes = 0u64;
    let (mut saved, mut sent_idw, mut fwd, mut dropped) = (0u64, 0u64, 0u64, 0u64);
    let (mut chokes, mut unchokes, mut skips) = (0u64, 0u64, 0u64);
    for (i, (node, g)) in nodes.iter().enumerate() {
        let m = g.metrics().await.expect("metrics");
        saved += m.idontwant_saved;
        sent_idw += m.idontwant_sent;
        fwd += m.forwarded;
        chokes += m.chokes_sent;
        unchokes += m.unchokes_sent;
        skips += m.choked_skips;
        dropped += m.dropped_forwards + m.dropped_publishes + m.app_dropped;
        dups += m.duplicates - before[i].0;
        bytes += node.metrics().bytes_sent - before[i].1;
    }
    eprintln!(
        "netbench gossip: {fwd} forwards, {sent_idw} IDONTWANT ids sent, {saved} forwards saved by them, {dropped} dropped"
    );
    eprintln!(
        "netbench gossip: {chokes} chokes and {unchokes} unchokes sent, {skips} forwards skipped for chokes"
    );
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_by(f64::total_cmp);
    let deliveries = delivered.max(1) as f64;
    let json = format!(
        concat!(
            "{{\"bench\":\"gossip\",\"nodes\":{},\"transport\":\"{}\",\"dials_per_node\":{},\"messages\":{},\"size\":{},",
            "\"settle_s\":{:.3},\"publish_errors\":{},\"delivery_ratio\":{:.5},",
            "\"latency\":{{\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}},",
            "\"duplicates_per_delivery\":{:.3},\"bytes_sent_per_delivery\":{:.1},\"cpu_us_per_delivery\":{:.1},\"peak_rss_mb\":{:.1}}}"
        ),
        n,
        args.transport,
        args.dials,
        args.messages,
        args.size,
        settle_s,
        publish_errors,
        delivered as f64 / expected.max(1) as f64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or(f64::NAN),
        dups as f64 / deliveries,
        bytes as f64 / deliveries,
        cpu_s.map_or(f64::NAN, |c| c * 1e6 / deliveries),
        peak_rss_mb().unwrap_or(f64::NAN),
    );
    futures_util::future::join_all(nodes.iter().map(|(n, _)| n.shutdown())).await;
    json
}
