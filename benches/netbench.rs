//! The project's network benchmark: real nodes in one process over loopback TCP, QUIC or the
//! in-process memory transport. Prints one JSON object as its last line.
//!
//! ```text
//! cargo bench --bench netbench -- kad --nodes 200 --transport tcp|quic|memory [--lookups 200] [--out FILE]
//! ```
//!
//! `kad`: starts N nodes, bootstraps each through a random earlier node (settle_s), then runs
//! lookups one after another from random nodes for random live PeerIds (success: the target
//! itself is among the k closest returned), then put/get pairs from two different random
//! nodes (success: the get returns the value put).
//!
//! Open files are capped at 20 000 per process here, and over TCP both ends of every
//! connection live in this process, so each node's `max_connections` is derived from that
//! budget; nodes recycle their longest-idle connection when full.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ggen_p2p::kademlia::{Dht, KademliaConfig, Key, Record};
use ggen_p2p::node::{Node, NodeConfig, NodeHandle};
use ggen_p2p::{Keypair, Multiaddr};
use rand::Rng;

struct Args {
    mode: String,
    nodes: usize,
    transport: String,
    lookups: usize,
    out: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        mode: String::new(),
        nodes: 200,
        transport: "tcp".into(),
        lookups: 200,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--nodes" => a.nodes = it.next().and_then(|v| v.parse().ok()).expect("--nodes N"),
            "--transport" => a.transport = it.next().expect("--transport tcp|quic|memory"),
            "--lookups" => a.lookups = it.next().and_then(|v| v.parse().ok()).expect("--lookups N"),
            "--out" => a.out = it.next(),
            "--bench" => {}
            s if !s.starts_with('-') && a.mode.is_empty() => a.mode = s.to_string(),
            other => eprintln!("netbench: ignoring argument {other}"),
        }
    }
    a
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn listen_addr(transport: &str) -> Multiaddr {
    match transport {
        "tcp" => "/ip4/127.0.0.1/tcp/0",
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
        "memory" => "/memory/0",
        other => panic!("unknown transport {other} (tcp, quic or memory)"),
    }
    .parse()
    .expect("valid address")
}

fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(20_000)
}

async fn kad(args: &Args) -> String {
    let n = args.nodes;
    let per_node = if args.transport == "tcp" {
        // Each TCP connection costs one fd at each end (both here), each node one listener.
        ((fd_limit().saturating_sub(n + 500)) / n).clamp(8, 96)
    } else {
        64
    };
    let mut nodes: Vec<(NodeHandle, Dht)> = Vec::with_capacity(n);
    for _ in 0..n {
        let config = NodeConfig {
            listen: vec![listen_addr(&args.transport)],
            max_connections: per_node,
            eviction_min_idle: Some(Duration::ZERO),
            ..NodeConfig::default()
        };
        let node = Node::spawn(Keypair::generate(), config)
            .await
            .expect("node starts");
        let dht = Dht::spawn(&node, KademliaConfig::default(), None).expect("dht starts");
        nodes.push((node, dht));
    }
    let mut rng = rand::rng();
    let settle = Instant::now();
    for i in 1..n {
        let via = rng.random_range(0..i);
        let (peer, addr) = (
            nodes[via].0.local_peer_id(),
            nodes[via].0.listen_addrs()[0].clone(),
        );
        nodes[i].1.add_peer(peer, addr);
        let t = Instant::now();
        match nodes[i].1.bootstrap().await {
            Err(e) => eprintln!("node {i}: bootstrap failed: {e}"),
            Ok((_, s)) if i % 50 == 0 => eprintln!(
                "node {i}: bootstrap {:.1} ms, {} messages, {} peers contacted",
                t.elapsed().as_secs_f64() * 1e3,
                s.messages,
                s.peers_contacted
            ),
            Ok(_) => {}
        }
    }
    let settle_s = settle.elapsed().as_secs_f64();
    eprintln!(
        "netbench kad: {n} nodes over {} settled in {settle_s:.2} s (max {per_node} connections per node)",
        args.transport
    );

    let established = |nodes: &[(NodeHandle, Dht)]| -> u64 {
        nodes
            .iter()
            .map(|(n, _)| n.metrics().connections_established)
            .sum()
    };
    let conns_before = established(&nodes);
    let (mut lat, mut hops, mut msgs, mut ok) = (Vec::new(), 0u64, 0u64, 0usize);
    for _ in 0..args.lookups {
        let from = rng.random_range(0..n);
        let mut to = rng.random_range(0..n);
        while to == from {
            to = rng.random_range(0..n);
        }
        let target = nodes[to].0.local_peer_id();
        let t = Instant::now();
        let r = nodes[from]
            .1
            .find_closest_peers(Key::from_peer(&target))
            .await;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if let Ok((peers, stats)) = r {
            hops += stats.hops as u64;
            msgs += stats.messages as u64;
            if peers.iter().any(|p| p.peer == target) {
                ok += 1;
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    // Each connection is counted at both ends.
    let new_conns = (established(&nodes) - conns_before) as f64 / 2.0;
    let pairs = (args.lookups / 2).max(1);
    let (mut get_lat, mut put_lat, mut get_ok, mut put_ok) =
        (Vec::new(), Vec::new(), 0usize, 0usize);
    for i in 0..pairs {
        let a = rng.random_range(0..n);
        let mut b = rng.random_range(0..n);
        while b == a {
            b = rng.random_range(0..n);
        }
        let key = Bytes::from(format!("netbench/{i}/{}", rng.random::<u64>()));
        let value = Bytes::from(format!("value {i}"));
        let record = Record {
            key: key.clone(),
            value: value.clone(),
            publisher: None,
            ttl_secs: 0,
        };
        let t = Instant::now();
        if nodes[a].1.put_record(record, None).await.is_ok() {
            put_ok += 1;
        }
        put_lat.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let r = nodes[b].1.get_record(key).await;
        get_lat.push(t.elapsed().as_secs_f64() * 1e3);
        if r.is_ok_and(|(rec, _)| rec.value == value) {
            get_ok += 1;
        }
    }
    get_lat.sort_by(f64::total_cmp);
    put_lat.sort_by(f64::total_cmp);
    let l = args.lookups.max(1) as f64;
    let json = format!(
        concat!(
            "{{\"bench\":\"kad\",\"nodes\":{},\"transport\":\"{}\",\"max_connections_per_node\":{},\"settle_s\":{:.3},",
            "\"lookup\":{{\"count\":{},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"success_ratio\":{:.4},\"mean_hops\":{:.2},\"mean_messages\":{:.1},\"new_connections_per_lookup\":{:.2}}},",
            "\"record_get\":{{\"count\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"success_ratio\":{:.4}}},",
            "\"record_put\":{{\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"success_ratio\":{:.4}}},",
            "\"peak_rss_mb\":{:.1}}}"
        ),
        n,
        args.transport,
        per_node,
        settle_s,
        args.lookups,
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        ok as f64 / l,
        hops as f64 / l,
        msgs as f64 / l,
        new_conns / l,
        pairs,
        percentile(&get_lat, 0.5),
        percentile(&get_lat, 0.99),
        get_ok as f64 / pairs as f64,
        percentile(&put_lat, 0.5),
        percentile(&put_lat, 0.99),
        put_ok as f64 / pairs as f64,
        peak_rss_mb(),
    );
    futures_util::future::join_all(nodes.iter().map(|(n, _)| n.shutdown())).await;
    json
}

fn main() {
    let args = parse_args();
    if args.mode.is_empty() {
        // `cargo bench` without arguments (or `cargo test --benches`): nothing selected.
        eprintln!(
            "netbench: choose a benchmark, e.g. `cargo bench --bench netbench -- kad --nodes 200 --transport tcp`"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let json = match args.mode.as_str() {
        "kad" => rt.block_on(kad(&args)),
        other => {
            eprintln!("netbench: unknown benchmark {other} (available: kad)");
            std::process::exit(2);
        }
    };
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n")).expect("writing --out file");
    }
    println!("{json}");
}
