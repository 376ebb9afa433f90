//! The Kademlia core under the deterministic simulator: 1 000 nodes.

use std::collections::HashSet;
use std::time::Duration;

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
