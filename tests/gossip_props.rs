//! Arbitrary event sequences into the gossip router: peers connecting and leaving, local
//! subscriptions and publishes, RPCs from peers (valid, forged, replayed, arbitrary wire
//! bytes), time jumps with staggered forwards and heartbeats, validation verdicts and partial
//! queue draining. The router must never panic and must keep its invariants after every event
//! (meshes only of connected subscribers of topics we joined, never ourselves, bounded after
//! a heartbeat; queues within their bounds; everything it emits decodes under its own
//! limits). The same driver is the `gossip_router` fuzz target; the decoder is
//! `gossip_rpc_decode`.

use std::path::Path;

use ggen_p2p::fuzzing;
use proptest::prelude::*;

/// The seed scripts of the `gossip_router` corpus (written by `tests/fuzz_corpus.rs`): they
/// reach states random bytes rarely do (full meshes, forwarding, gossip, validation).
fn seed_scripts() -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/gossip_router");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .expect("fuzz/corpus/gossip_router exists")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seed scripts in {}", dir.display());
    seeds
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_event_sequences_keep_the_router_consistent(events in prop::collection::vec(any::<u8>(), 0..4000)) {
        fuzzing::gossip_router(&events);
    }

    #[test]
    fn seed_scripts_continued_arbitrarily_keep_the_router_consistent(
        pick in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        tail in prop::collection::vec(any::<u8>(), 0..1500),
    ) {
        let seeds = seed_scripts();
        let seed = &seeds[pick.index(seeds.len())];
        // A prefix of the script (at least its configuration byte), then arbitrary events.
        let mut events = seed[..1 + cut.index(seed.len())].to_vec();
        events.extend_from_slice(&tail);
        fuzzing::gossip_router(&events);
    }

    #[test]
    fn arbitrary_bytes_never_break_the_rpc_decoder(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::gossip_rpc_decode(&data);
    }
}
