//! The registry under the deterministic simulator: 1 000 nodes, each running the real gossip
//! router and the real registry core, against back-dating claimers, a sybil swarm that
//! lies in polls, withholding nodes, a long partition and message loss.
//!
//! Every scenario prints its figures (`cargo test --test registry_sim -- --nocapture`).

use std::time::{Duration, Instant};

use ggen_p2p::PeerId;
use ggen_p2p::sim::{AttackerConfig, RegistryMetrics, RegistrySim, RegistrySimConfig, Role};
use rand::seq::SliceRandom;

const N: usize = 1000;

fn config(seed: u64, loss: f64) -> RegistrySimConfig {
    RegistrySimConfig {
        seed,
        loss,
        ..RegistrySimConfig::default()
    }
}

/// [`config`] with anti-entropy every `secs` seconds.
fn syncing_every(secs: u64, seed: u64, loss: f64) -> RegistrySimConfig {
    let mut c = config(seed, loss);
    c.core.sync_interval = Duration::from_secs(secs);
    c
}

fn report(scenario: &str, sim: &RegistrySim, m: &RegistryMetrics, wall: Duration) {
    eprintln!(
        "[{scenario}] nodes {} (live honest {}), simulated {:?}, wall {:?}\n  \
         hijacks {}, multi-owner names {}, split names {}, unsettled {}, settled replaced {}\n  \
         publish-to-visible p50 {:?} p99 {:?} max {:?} over {} pairs ({} missing)\n  \
         sync bytes per node: mean {} max {}; polls {}, switches {}, rivals {}, sync rounds {}\n  \
         {:?}",
        m.nodes,
        m.live_honest,
        sim.now(),
        wall,
        m.hijacks,
        m.multi_owner_names,
        m.split_names,
        m.unsettled,
        m.settled_replaced,
        m.latency_p50,
        m.latency_p99,
        m.latency_max,
        m.visible_pairs,
        m.missing_pairs,
        m.sync_bytes_mean,
        m.sync_bytes_max,
        m.polls,
        m.switched,
        m.rivals,
        m.sync_rounds,
        sim.stats(),
    );
}

/// Live honest nodes that do not hold `id` as published by `publisher`, or do not hold
/// `name` settled with `publisher` as its owner.
fn not_holding(sim: &RegistrySim, name: &str, id: &str, publisher: PeerId) -> Vec<usize> {
    (0..sim.len())
        .filter(|&i| sim.is_alive(i) && sim.role(i) == Role::Honest)
        .filter(|&i| {
            let c = sim.core(i);
            c.record(id).is_none_or(|r| r.publisher != publisher)
                || c.owner_of(name)
                    .is_none_or(|(o, s, _)| o != publisher || !s)
        })
        .collect()
}

/// Honest nodes that hold any record signed by one of `keys`.
fn holding_any(sim: &RegistrySim, keys: &[PeerId]) -> usize {
    (0..sim.len())
        .filter(|&i| sim.is_alive(i) && sim.role(i) == Role::Honest)
        .filter(|&i| sim.core(i).records().any(|r| keys.contains(&r.publisher)))
        .count()
}

/// 1. Honest nodes publish 25 names, which settle; then 50 attacker keys (10 attacker
///    nodes, which also lie in polls) claim those names, dated a year earlier. The whole
///    run has 5 % message loss.
#[test]
fn back_dated_claims_of_settled_names_change_nothing() {
    let t = Instant::now();
    let mut sim = RegistrySim::new(N, config(11, 0.05)).expect("valid config");
    let attackers: Vec<usize> = (N - 10..N).collect();
    let mut keys = Vec::new();
    for &a in &attackers {
        keys.extend(sim.make_attacker(a, AttackerConfig::default()));
    }
    assert_eq!(keys.len(), 50);
    sim.run_for(Duration::from_secs(5));
    let names = 25;
    let mut published = Vec::new();
    for k in 0..names {
        let node = k * 37;
        let name = format!("lib{k}");
        sim.publish(node, &name, "1.0.0").expect("publish");
        published.push((name, format!("lib{k}@1.0.0"), sim.peer_id(node)));
        sim.run_for(Duration::from_millis(100));
    }
    sim.run_for(Duration::from_secs(30));
    let before = sim.metrics();
    assert_eq!(before.unsettled, 0, "{before:?}");
    for (j, &a) in attackers.iter().enumerate() {
        for (k, key) in sim.attacker_keys(a).iter().enumerate() {
            let (name, _, _) = &published[(j * 5 + k) % names];
            // Half claim the honest version itself, half a version of their own.
            let version = if k % 2 == 0 { "1.0.0" } else { "0.9.0" };
            let forged = sim.forge(key, name, version, chrono::Duration::days(365));
            sim.announce(a, forged);
        }
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(40));
    let m = sim.metrics();
    report("back-dating, 5 % loss", &sim, &m, t.elapsed());
    assert_eq!(m.hijacks, 0);
    assert_eq!(m.multi_owner_names, 0);
    assert_eq!(m.settled_replaced, 0);
    for (name, id, publisher) in &published {
        let missing = not_holding(&sim, name, id, *publisher);
        assert!(missing.is_empty(), "{id}: nodes {missing:?}");
    }
    assert_eq!(
        holding_any(&sim, &keys),
        0,
        "a back-dated claim was admitted"
    );
    assert!(sim.stats().attacker_claims >= 50);
    sim.check_invariants().expect("invariants");
}

/// 2. A swarm of 100 sybil keys on 20 attacker nodes races honest publishers for new
///    names: each attacker answers an honest announcement at once with a claim of the same
///    name by one of its keys (in turn), dated a year earlier, and lies in every poll.
#[test]
fn a_sybil_swarm_racing_new_names_wins_none() {
    let t = Instant::now();
    let mut sim = RegistrySim::new(N, config(12, 0.0)).expect("valid config");
    let mut keys = Vec::new();
    for a in N - 20..N {
        keys.extend(sim.make_attacker(
            a,
            AttackerConfig {
                react_keys: 1,
                ..AttackerConfig::default()
            },
        ));
    }
    assert_eq!(keys.len(), 100);
    sim.run_for(Duration::from_secs(5));
    let mut published = Vec::new();
    for k in 0..5 {
        let node = 3 + k * 101;
        let name = format!("fresh{k}");
        sim.publish(node, &name, "1.0.0").expect("publish");
        published.push((name, format!("fresh{k}@1.0.0"), sim.peer_id(node)));
        sim.run_for(Duration::from_secs(1));
    }
    sim.run_for(Duration::from_secs(40));
    let m = sim.metrics();
    report("sybil swarm", &sim, &m, t.elapsed());
    assert_eq!(m.hijacks, 0);
    assert_eq!(m.multi_owner_names, 0);
    assert_eq!(m.split_names, 0);
    assert_eq!(m.unsettled, 0);
    assert_eq!(m.settled_replaced, 0);
    for (name, id, publisher) in &published {
        let missing = not_holding(&sim, name, id, *publisher);
        assert!(missing.is_empty(), "{id}: nodes {missing:?}");
    }
    assert_eq!(holding_any(&sim, &keys), 0, "a sybil claim stayed admitted");
    // Every key raced, and the liars were asked.
    assert_eq!(sim.stats().attacker_claims, 100);
    assert!(sim.stats().lies > 0);
    sim.check_invariants().expect("invariants");
}

/// 3. Withholding nodes (announcements dropped, no message forwarded, every request
///    answered empty) and honest nodes that were down while names were published and
///    come back after: everything reaches every honest node, by gossip around the
///    withholders and by anti-entropy with the peers that do answer. 5 % message loss.
#[test]
fn withheld_updates_still_reach_every_honest_node() {
    let t = Instant::now();
    // Under 5 % loss an anti-entropy round ends at its first lost request or answer (a
    // catch-up round of a few dozen exchanges rarely completes), so rounds every 10 s.
    let mut sim = RegistrySim::new(N, syncing_every(10, 13, 0.05)).expect("valid config");
    let withholders: Vec<usize> = (0..N).filter(|i| i % 20 == 7).collect();
    for &w in &withholders {
        sim.make_withholding(w);
    }
    sim.run_for(Duration::from_secs(5));
    let sleepers: Vec<usize> = (0..N).filter(|i| i % 50 == 11).collect();
    for &s in &sleepers {
        sim.crash(s);
    }
    let publishers: Vec<usize> = (0..N)
        .filter(|&i| sim.role(i) == Role::Honest && sim.is_alive(i))
        .step_by(47)
        .take(20)
        .collect();
    let mut published = Vec::new();
    for (k, &node) in publishers.iter().enumerate() {
        let name = format!("pkg{k}");
        sim.publish(node, &name, "1.0.0").expect("publish");
        published.push((name, format!("pkg{k}@1.0.0"), sim.peer_id(node)));
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(20));
    for &s in &sleepers {
        sim.restart(s).expect("restart");
    }
    sim.run_for(Duration::from_secs(60));
    let m = sim.metrics();
    report("withholding + restarts, 5 % loss", &sim, &m, t.elapsed());
    for (name, id, publisher) in &published {
        let missing = not_holding(&sim, name, id, *publisher);
        assert!(missing.is_empty(), "{id}: nodes {missing:?}");
    }
    assert_eq!(m.missing_pairs, 0);
    assert_eq!(m.multi_owner_names, 0);
    assert!(sim.stats().withheld > 0, "the withholders withheld nothing");
    sim.check_invariants().expect("invariants");
}

/// 4. A random 30 % of the nodes is cut off for 10 simulated minutes, and the same new
///    names are claimed on both sides meanwhile; after the heal every name has one owner.
#[test]
fn a_thirty_percent_partition_heals_to_one_owner_per_name() {
    let t = Instant::now();
    let mut sim = RegistrySim::new(N, config(14, 0.0)).expect("valid config");
    sim.run_for(Duration::from_secs(5));
    let mut order: Vec<usize> = (0..N).collect();
    order.shuffle(sim.rng());
    let minority: Vec<usize> = order[..N * 3 / 10].to_vec();
    let majority: Vec<usize> = order[N * 3 / 10..].to_vec();
    sim.partition(std::slice::from_ref(&minority));
    sim.run_for(Duration::from_secs(1));
    // Both sides claim the five names at the same moment.
    let mut races = Vec::new();
    for k in 0..5 {
        let name = format!("race{k}");
        let (a, b) = (minority[k], majority[k]);
        sim.publish(a, &name, "1.0.0").expect("publish");
        sim.publish(b, &name, "1.0.0").expect("publish");
        races.push((name, sim.peer_id(a), sim.peer_id(b)));
    }
    sim.run_for(Duration::from_secs(600));
    let during = sim.metrics();
    report("partition, before the heal", &sim, &during, t.elapsed());
    // The minority, cut off from most of its peers, settled nothing.
    for (name, mine, _) in &races {
        let owners = sim.settled_owners(name);
        assert!(!owners.contains_key(mine), "{name}: {owners:?}");
    }
    sim.heal();
    sim.run_for(Duration::from_secs(120));
    let m = sim.metrics();
    report("partition, 2 minutes after the heal", &sim, &m, t.elapsed());
    assert_eq!(m.multi_owner_names, 0);
    assert_eq!(m.split_names, 0);
    assert_eq!(m.unsettled, 0);
    assert_eq!(m.settled_replaced, 0);
    for (name, _, theirs) in &races {
        let missing = not_holding(&sim, name, &format!("{name}@1.0.0"), *theirs);
        assert!(missing.is_empty(), "{name}: nodes {missing:?}");
    }
    sim.check_invariants().expect("invariants");
}

/// The same seed gives the same run; another seed another.
#[test]
fn same_seed_same_run() {
    let run = |seed: u64| {
        let mut sim = RegistrySim::new(200, config(seed, 0.05)).expect("valid config");
        sim.make_attacker(
            199,
            AttackerConfig {
                react_keys: 2,
                ..AttackerConfig::default()
            },
        );
        sim.make_withholding(198);
        sim.run_for(Duration::from_secs(3));
        for k in 0..5 {
            sim.publish(k * 13, &format!("d{k}"), "1.0.0")
                .expect("publish");
            sim.run_for(Duration::from_millis(300));
        }
        sim.crash(50);
        sim.run_for(Duration::from_secs(15));
        sim.restart(50).expect("restart");
        sim.run_for(Duration::from_secs(10));
        (sim.metrics(), sim.stats().clone())
    };
    let a = run(5);
    assert_eq!(a, run(5));
    assert_ne!(a, run(6));
}
