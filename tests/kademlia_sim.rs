//! The Kademlia core under the deterministic simulator: 1 000 nodes.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use ggen_p2p::kademlia::{Key, QueryOutcome};
use ggen_p2p::sim::{SimConfig, Simulator};
use rand::Rng;

/// A network of `n` nodes, each joining through a random earlier node, then left to run its
/// maintenance for a while.
fn joined(n: usize, config: SimConfig) -> Simulator {
    let mut sim = Simulator::new(n, config);
    for i in 1..n {
        let via = sim.rng().random_range(0..i);
        sim.join(i, via);
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(120));
    sim
}

#[test]
fn thousand_node_lookups_find_the_true_k_closest() {
    let n = 1000;
    let mut sim = joined(n, SimConfig::default());
    let k = 20;
    let lookups = 200;
    let (mut exact, mut hops) = (0, 0u64);
    for _ in 0..lookups {
        let from = sim.rng().random_range(0..n);
        let mut raw = [0u8; 32];
        sim.rng().fill(&mut raw);
        let key = Key::from_raw(raw);
        let (outcome, stats) = sim
            .query(from, |kad, now, _| kad.find_closest_peers(now, key))
            .expect("lookup finishes");
        let QueryOutcome::ClosestPeers(found) = outcome else {
            panic!("wrong outcome")
        };
        let found: HashSet<_> = found.iter().map(|p| p.peer).collect();
        // The querying node itself never appears in its own results.
        let me = sim.peer_id(from);
        let truth: HashSet<_> = sim
            .true_closest(&key, k + 1)
            .into_iter()
            .filter(|p| *p != me)
            .take(k)
            .collect();
        if found == truth {
            exact += 1;
        }
        hops += stats.hops as u64;
    }
    let ratio = exact as f64 / lookups as f64;
    let mean_hops = hops as f64 / lookups as f64;
    let log2n = (n as f64).log2().ceil();
    println!(
        "exact {ratio:.3}, mean hops {mean_hops:.2} (log2 N = {log2n}), {:?}",
        sim.stats()
    );
    assert!(
        ratio >= 0.99,
        "only {ratio:.3} of lookups returned the true k closest"
    );
    assert!(mean_hops <= log2n, "mean hops {mean_hops:.2} > {log2n}");
    assert_eq!(sim.stats().undecodable, 0);
}

fn record(key: Bytes, value: &str) -> ggen_p2p::kademlia::Record {
    ggen_p2p::kademlia::Record {
        key,
        value: Bytes::copy_from_slice(value.as_bytes()),
        publisher: None,
        ttl_secs: 0,
    }
}

#[test]
fn records_survive_crashes_and_loss_after_one_republish_interval() {
    let n = 1000;
    let mut config = SimConfig::default();
    config.kademlia.republish_interval = Duration::from_secs(600);
    config.kademlia.replication_interval = Duration::from_secs(600);
    config.kademlia.record_ttl = Duration::from_secs(3600);
    config.kademlia.request_timeout = Duration::from_secs(5);
    let mut sim = joined(n, config);

    // 100 records put from random nodes before anything goes wrong.
    let mut records = Vec::new();
    for i in 0..100 {
        let from = sim.rng().random_range(0..n);
        let key = sim.random_key();
        let value = format!("value {i}");
        let (outcome, _) = sim
            .query(from, |kad, now, _| {
                kad.put_record(now, record(key.clone(), &value), None)
            })
            .expect("put finishes");
        assert!(
            matches!(outcome, QueryOutcome::PutRecord(Ok(stored)) if stored >= 10),
            "{outcome:?}"
        );
        records.push((key, value));
    }

    // 10 % of the nodes crash (publishers included), 5 % of messages are lost from now on.
    let mut crashed = HashSet::new();
    while crashed.len() < n / 10 {
        let i = sim.rng().random_range(0..n);
        if crashed.insert(i) {
            sim.crash(i);
        }
    }
    sim.set_loss(0.05);
    sim.run_for(Duration::from_secs(600) + Duration::from_secs(60));

    let live: Vec<usize> = (0..n).filter(|i| sim.is_alive(*i)).collect();
    let (mut found, mut total) = (0, 0);
    for (key, value) in records.iter().cycle().take(200) {
        let from = live[sim.rng().random_range(0..live.len())];
        let (outcome, _) = sim
            .query(from, |kad, now, _| kad.get_record(now, key.clone(), None))
            .expect("get finishes");
        total += 1;
        if let QueryOutcome::GetRecord(Ok(rs)) = outcome {
            if rs.iter().any(|r| r.value == value.as_bytes()) {
                found += 1;
            }
        }
    }
    let ratio = found as f64 / total as f64;
    println!(
        "found {found}/{total} after crashes and loss; {:?}",
        sim.stats()
    );
    assert!(ratio >= 0.99, "only {ratio:.3} of gets found their record");
}

#[test]
fn same_seed_same_run() {
    fn digest(seed: u64) -> Vec<String> {
        let config = SimConfig {
            seed,
            loss: 0.02,
            ..SimConfig::default()
        };
        let mut sim = joined(100, config);
        let mut out = Vec::new();
        for _ in 0..20 {
            let from = sim.rng().random_range(0..100);
            let key = Key::from_record_key(&sim.random_key());
            let (outcome, stats) = sim
                .query(from, |kad, now, _| kad.find_closest_peers(now, key))
                .unwrap();
            out.push(format!("{outcome:?} {stats:?}"));
        }
        out.push(format!("{:?} {:?}", sim.stats(), sim.now()));
        out
    }
    assert_eq!(digest(7), digest(7));
    assert_ne!(digest(7), digest(8));
}

/// A record is "forged" unless its value starts with "signed:". A node without the validator
/// (the attacker) stores and serves a forged record; validating nodes refuse to store it and
/// never return it from `get`.
#[test]
fn forged_records_are_refused_and_never_returned() {
    struct Signed;
    impl ggen_p2p::kademlia::RecordValidator for Signed {
        fn validate(
            &self,
            r: &ggen_p2p::kademlia::Record,
            _now: std::time::SystemTime,
        ) -> Result<(), String> {
            if r.value.starts_with(b"signed:") {
                Ok(())
            } else {
                Err("bad signature".into())
            }
        }
    }
    let n = 200;
    let mut sim = joined(n, SimConfig::default());
    let v = std::sync::Arc::new(Signed);
    for i in 1..n {
        let v = v.clone();
        sim.with_node(i, move |kad, _, _| kad.set_validator(v));
    }
    let key = sim.random_key();
    let (outcome, _) = sim
        .query(0, |kad, now, _| {
            kad.put_record(now, record(key.clone(), "forged"), None)
        })
        .unwrap();
    assert!(
        matches!(outcome, QueryOutcome::PutRecord(Err(_))),
        "validating peers must refuse the forged record: {outcome:?}"
    );
    for from in [1, 50, 150] {
        let (outcome, _) = sim
            .query(from, |kad, now, _| kad.get_record(now, key.clone(), None))
            .unwrap();
        match outcome {
            QueryOutcome::GetRecord(Ok(rs)) => panic!("forged record returned: {rs:?}"),
            QueryOutcome::GetRecord(Err(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    // A properly signed record under another key goes through.
    let good = sim.random_key();
    let (outcome, _) = sim
        .query(3, |kad, now, _| {
            kad.put_record(now, record(good.clone(), "signed:ok"), None)
        })
        .unwrap();
    assert!(
        matches!(outcome, QueryOutcome::PutRecord(Ok(_))),
        "{outcome:?}"
    );
    let (outcome, _) = sim
        .query(99, |kad, now, _| kad.get_record(now, good.clone(), None))
        .unwrap();
    assert!(
        matches!(outcome, QueryOutcome::GetRecord(Ok(ref rs)) if rs[0].value == "signed:ok"),
        "{outcome:?}"
    );
}

#[test]
fn providers_are_found_from_another_node() {
    let n = 300;
    let mut sim = joined(n, SimConfig::default());
    let key = sim.random_key();
    for provider in [5, 17] {
        let (outcome, _) = sim
            .query(provider, |kad, now, _| {
                kad.start_providing(now, key.clone())
            })
            .unwrap();
        assert!(
            matches!(outcome, QueryOutcome::StartProviding(Ok(_))),
            "{outcome:?}"
        );
    }
    let (outcome, _) = sim
        .query(250, |kad, now, _| kad.get_providers(now, key.clone()))
        .unwrap();
    let QueryOutcome::GetProviders(Ok(found)) = outcome else {
        panic!("{outcome:?}")
    };
    let found: HashSet<_> = found.iter().map(|p| p.peer).collect();
    assert!(
        found.contains(&sim.peer_id(5)) && found.contains(&sim.peer_id(17)),
        "{found:?}"
    );
}

/// Paper §2.3: after a successful get, the record is stored at the closest peer that answered
/// the lookup without it, so hot keys spread outward. With caching off, nothing is stored.
#[test]
fn a_get_caches_the_record_at_one_peer_that_lacked_it() {
    for cache in [true, false] {
        let n = 300;
        let mut config = SimConfig::default();
        // Few replicas, so a lookup from afar meets peers without the record first.
        config.kademlia.replication_factor = 3;
        config.kademlia.cache_on_get = cache;
        let mut sim = joined(n, config);
        let holders = |sim: &Simulator, key: &Bytes| -> HashSet<usize> {
            (0..sim.len())
                .filter(|&i| {
                    sim.node(i)
                        .record_store()
                        .iter()
                        .any(|s| s.record.key == *key)
                })
                .collect()
        };
        let (mut cached, mut gets) = (0, 0);
        for round in 0..20 {
            let key = sim.random_key();
            let from = sim.rng().random_range(0..n);
            let (outcome, _) = sim
                .query(from, |kad, now, _| {
                    kad.put_record(now, record(key.clone(), "v"), None)
                })
                .expect("put finishes");
            assert!(
                matches!(outcome, QueryOutcome::PutRecord(Ok(_))),
                "{outcome:?}"
            );
            let before = holders(&sim, &key);
            let reader = loop {
                let r = sim.rng().random_range(0..n);
                if !before.contains(&r) {
                    break r;
                }
            };
            let (outcome, stats) = sim
                .query(reader, |kad, now, _| kad.get_record(now, key.clone(), None))
                .expect("get finishes");
            assert!(
                matches!(&outcome, QueryOutcome::GetRecord(Ok(rs)) if rs[0].value == "v"),
                "round {round}: {outcome:?}"
            );
            gets += 1;
            // Let the caching store arrive.
            sim.run_for(Duration::from_secs(1));
            let after = holders(&sim, &key);
            assert!(before.is_subset(&after));
            let new: Vec<usize> = after.difference(&before).copied().collect();
            assert!(new.len() <= 1, "round {round}: cached at {new:?}");
            assert!(
                !new.contains(&reader),
                "the reader itself does not store it"
            );
            if let [c] = new[..] {
                cached += 1;
                // The cache holder is nearer the key than the reader's starting point would
                // be on average: it is one of the peers the lookup asked.
                assert!(stats.peers_contacted > 0);
                let target = Key::from_record_key(&key);
                let d_cache = target.distance(&Key::from_peer(&sim.peer_id(c)));
                let farther = (0..n)
                    .filter(|&i| target.distance(&Key::from_peer(&sim.peer_id(i))) > d_cache)
                    .count();
                assert!(farther > n / 2, "round {round}: cached far from the key");
            }
        }
        println!("cache_on_get {cache}: cached after {cached} of {gets} gets");
        if cache {
            assert!(
                cached >= gets / 2,
                "cached after only {cached} of {gets} gets"
            );
        } else {
            assert_eq!(cached, 0, "caching is off");
        }
    }
}
