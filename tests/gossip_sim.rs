//! The gossip mesh under the deterministic simulator: 1 000 routers, one topic.

use std::time::Duration;

use bytes::Bytes;
use ggen_p2p::Keypair;
use ggen_p2p::gossip::{GossipMessage, GossipsubConfig, MessageId, Rpc, Topic};
use ggen_p2p::sim::{GossipSim, GossipSimConfig};
use rand::Rng;

fn topic() -> Topic {
    GossipsubConfig::default().topic("updates")
}

/// `n` nodes, all subscribed, left to build their meshes.
fn stabilised(n: usize, config: GossipSimConfig) -> GossipSim {
    let mut sim = GossipSim::new(n, config).expect("valid config");
    let t = topic();
    for i in 0..n {
        assert!(sim.subscribe(i, &t));
    }
    sim.run_for(Duration::from_secs(10));
    sim
}

/// Publishes `count` messages from random nodes, 100 ms apart, then runs `settle`.
fn publish_many(sim: &mut GossipSim, count: usize, settle: Duration) -> Vec<MessageId> {
    let t = topic();
    let mut ids = Vec::new();
    for k in 0..count {
        let n = sim.len();
        let from = loop {
            let i = sim.rng().random_range(0..n);
            if sim.is_alive(i) {
                break i;
            }
        };
        let data = Bytes::from(format!("update {k}: {}", "x".repeat(200)));
        ids.push(sim.publish(from, &t, data).expect("publish"));
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(settle);
    ids
}

#[test]
fn every_subscriber_gets_every_message_with_few_duplicates_and_bounded_degrees() {
    let n = 1000;
    let config = GossipSimConfig::default();
    let (d_lo, d_hi, d) = (
        config.gossipsub.mesh_n_low,
        config.gossipsub.mesh_n_high,
        config.gossipsub.mesh_n,
    );
    let mut sim = stabilised(n, config);
    let t = topic();
    for i in 0..n {
        let degree = sim.router(i).mesh_peers(&t).len();
        assert!(
            (d_lo..=d_hi).contains(&degree),
            "node {i}: mesh degree {degree} outside [{d_lo}, {d_hi}]"
        );
    }
    let before: u64 = (0..n).map(|i| sim.router(i).metrics().duplicates).sum();
    let ids = publish_many(&mut sim, 50, Duration::from_secs(3));
    for id in &ids {
        assert_eq!(
            sim.delivery_count(id),
            n - 1,
            "{id:?} missed some subscribers"
        );
    }
    let dups: u64 = (0..n)
        .map(|i| sim.router(i).metrics().duplicates)
        .sum::<u64>()
        - before;
    let per_node = dups as f64 / (ids.len() * n) as f64;
    let mut lat: Vec<Duration> = ids
        .iter()
        .flat_map(|id| sim.delivery_latencies(id))
        .collect();
    lat.sort();
    println!(
        "duplicates per message per node {per_node:.2}; latency p50 {:?} p99 {:?}; {:?}",
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        sim.stats()
    );
    assert!(
        per_node <= d as f64,
        "{per_node:.2} duplicates per message per node > D"
    );
    assert_eq!(sim.stats().undecodable, 0);
    // Degrees stay bounded while traffic flows.
    for i in 0..n {
        let degree = sim.router(i).mesh_peers(&t).len();
        assert!((d_lo..=d_hi).contains(&degree), "node {i}: degree {degree}");
    }
}

#[test]
fn lazy_gossip_repairs_five_percent_loss() {
    let n = 1000;
    let mut sim = stabilised(n, GossipSimConfig::default());
    sim.set_loss(0.05);
    // Several heartbeats after the last publish: IHAVE/IWANT has time to repair.
    let ids = publish_many(&mut sim, 50, Duration::from_secs(5));
    let delivered: usize = ids.iter().map(|id| sim.delivery_count(id)).sum();
    let ratio = delivered as f64 / (ids.len() * (n - 1)) as f64;
    let repaired: u64 = (0..n).map(|i| sim.router(i).metrics().iwant_answered).sum();
    println!(
        "delivery ratio {ratio:.5} with 5 % loss; {repaired} IWANT answers; {:?}",
        sim.stats()
    );
    assert!(ratio >= 0.999, "only {ratio:.5} of deliveries happened");
    assert!(repaired > 0, "lazy gossip did the repairing");
}

#[test]
fn same_seed_same_run() {
    let run = |seed: u64| {
        let config = GossipSimConfig {
            seed,
            ..GossipSimConfig::default()
        };
        let mut sim = stabilised(200, config);
        let ids = publish_many(&mut sim, 10, Duration::from_secs(2));
        let lat: Vec<Vec<Duration>> = ids.iter().map(|id| sim.delivery_latencies(id)).collect();
        (lat, sim.stats().clone())
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5).1, run(6).1);
}

/// A node that sends forged messages is graylisted by its neighbours (they ignore its RPCs)
/// and a valid message it sends while it keeps forging reaches nobody.
#[test]
fn a_forging_peer_is_graylisted_and_its_messages_stop_propagating() {
    let n = 200;
    let mut sim = stabilised(n, GossipSimConfig::default());
    let t = topic();
    let evil = 0;
    let evil_id = sim.peer_id(evil);
    let neighbours: Vec<usize> = (1..n)
        .filter(|&j| sim.router(j).peers().any(|p| p == evil_id))
        .collect();
    assert!(!neighbours.is_empty());
    let forge = |k: u64| {
        let mut m = GossipMessage {
            from: None,
            seqno: Some(k),
            topic: t.clone(),
            data: Bytes::from_static(b"genuine"),
            signature: None,
        };
        m.sign(&Keypair::generate());
        m.data = Bytes::from_static(b"forged");
        Rpc {
            publish: vec![m],
            ..Rpc::default()
        }
    };
    for k in 0..10 {
        for &j in &neighbours {
            assert!(sim.inject(evil, j, &forge(k)));
        }
        sim.run_for(Duration::from_millis(300));
    }
    for &j in &neighbours {
        let r = sim.router(j);
        assert!(
            r.metrics().graylisted_rpcs > 0,
            "neighbour {j} never ignored the forger"
        );
        assert!(r.peer_score(sim.instant(), &evil_id) < 0.0);
        assert!(
            !r.mesh_peers(&t).contains(&evil_id),
            "neighbour {j} keeps it in its mesh"
        );
    }
    // Still forging: a forged RPC, then (FIFO on each link) a valid message.
    for &j in &neighbours {
        sim.inject(evil, j, &forge(99));
    }
    let id = sim
        .publish(evil, &t, Bytes::from_static(b"valid but unwelcome"))
        .expect("publish");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(
        sim.delivery_count(&id),
        0,
        "the forger's message propagated"
    );
    for &j in &neighbours {
        assert!(sim.router(j).peer_score(sim.instant(), &evil_id) < 0.0);
    }
    // Everyone else is still served.
    let id = sim
        .publish(1, &t, Bytes::from_static(b"normal"))
        .expect("publish");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(sim.delivery_count(&id), n - 2);
}

/// Staggered forwarding: with later mesh peers served a few milliseconds apart, those that
/// meanwhile got the message elsewhere (and said so with IDONTWANT, or by sending it) are
/// skipped. Every message still reaches everyone, with fewer duplicates (at 5–80 ms links
/// and a 10 ms stagger, about a fifth fewer; the price is tail latency).
#[test]
fn staggered_forwarding_cuts_duplicates_and_loses_nothing() {
    let n = 300;
    let run = |stagger_ms: u64| {
        let mut config = GossipSimConfig::default();
        // Against plain gossipsub: choking (on by default) would hide the effect.
        config.gossipsub.choke = false;
        config.gossipsub.forward_stagger = Duration::from_millis(stagger_ms);
        let mut sim = stabilised(n, config);
        let t = topic();
        let mut ids = Vec::new();
        for k in 0..20 {
            let from = sim.rng().random_range(0..n);
            // Above the IDONTWANT threshold.
            let mut data = vec![0u8; 1200];
            data[0] = k as u8;
            ids.push(sim.publish(from, &t, Bytes::from(data)).expect("publish"));
            sim.run_for(Duration::from_millis(200));
        }
        sim.run_for(Duration::from_secs(3));
        let delivered: usize = ids.iter().map(|id| sim.delivery_count(id)).sum();
        let dups: u64 = (0..n).map(|i| sim.router(i).metrics().duplicates).sum();
        let mut lat: Vec<Duration> = ids
            .iter()
            .flat_map(|id| sim.delivery_latencies(id))
            .collect();
        lat.sort();
        (
            delivered,
            dups as f64 / delivered.max(1) as f64,
            lat[lat.len() * 99 / 100],
        )
    };
    let (d0, dup0, p99_0) = run(0);
    let (d1, dup1, p99_1) = run(10);
    println!(
        "plain: {dup0:.2} duplicates per delivery, p99 {p99_0:?}; staggered 10 ms: {dup1:.2}, p99 {p99_1:?}"
    );
    assert_eq!(d0, 20 * (n - 1));
    assert_eq!(d1, 20 * (n - 1));
    assert!(
        dup1 < dup0 * 0.85,
        "staggering saved too little: {dup0:.2} -> {dup1:.2}"
    );
}

/// Choking: a mesh peer whose copies keep arriving as duplicates is told to stop pushing and
/// only advertises (IHAVE). Duplicates fall sharply; every message still reaches everyone.
#[test]
fn choking_redundant_mesh_peers_cuts_duplicates_and_loses_nothing() {
    let n = 300;
    let run = |choke: bool| {
        let mut config = GossipSimConfig::default();
        config.gossipsub.choke = choke;
        let mut sim = stabilised(n, config);
        let t = topic();
        // A first burst teaches who is redundant.
        publish_many(&mut sim, 30, Duration::from_secs(3));
        let before: u64 = (0..n).map(|i| sim.router(i).metrics().duplicates).sum();
        let mut ids = Vec::new();
        for k in 0..30 {
            let from = sim.rng().random_range(0..n);
            let data = Bytes::from(format!("measured {k}"));
            ids.push(sim.publish(from, &t, data).expect("publish"));
            sim.run_for(Duration::from_millis(100));
        }
        sim.run_for(Duration::from_secs(5));
        let delivered: usize = ids.iter().map(|id| sim.delivery_count(id)).sum();
        let dups: u64 = (0..n)
            .map(|i| sim.router(i).metrics().duplicates)
            .sum::<u64>()
            - before;
        let mut lat: Vec<Duration> = ids
            .iter()
            .flat_map(|id| sim.delivery_latencies(id))
            .collect();
        lat.sort();
        let chokes: u64 = (0..n).map(|i| sim.router(i).metrics().chokes_sent).sum();
        (
            delivered,
            dups as f64 / delivered.max(1) as f64,
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            chokes,
        )
    };
    let plain = run(false);
    let choked = run(true);
    println!("plain: {plain:?}\nchoke: {choked:?}");
    assert_eq!(plain.0, 30 * (n - 1));
    assert_eq!(
        choked.0,
        30 * (n - 1),
        "every message still reaches everyone"
    );
    assert!(choked.4 > 0);
    assert!(
        choked.1 < plain.1 * 0.6,
        "duplicates {:.2} -> {:.2}",
        plain.1,
        choked.1
    );
}
