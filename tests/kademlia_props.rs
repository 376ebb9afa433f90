//! Arbitrary event sequences into the Kademlia core: requests and responses from arbitrary
//! peers with arbitrary ids and contents, time jumps, delivery failures, local queries. The
//! core must never panic, and its routing table must keep its invariants (bucket sizes ≤ k,
//! no self entry, every entry in its bucket, `closest` ordered by distance) after every event.
//! The same driver is the `kademlia_core` fuzz target.

use ggen_p2p::fuzzing;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_event_sequences_keep_the_core_consistent(events in prop::collection::vec(any::<u8>(), 0..3000)) {
        fuzzing::kademlia_core(&events);
    }

    #[test]
    fn arbitrary_bytes_never_break_the_message_decoder(data in prop::collection::vec(any::<u8>(), 0..2000)) {
        fuzzing::kademlia_message_decode(&data);
    }
}
