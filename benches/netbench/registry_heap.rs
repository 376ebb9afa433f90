//! `registry-heap`: what one full registry node's in-memory structures cost per version,
//! each built alone from the `registry` bench's packages and measured with the binary's
//! counting allocator (live heap bytes with the structure built, minus before).
//!
//! ```text
//! cargo bench --bench netbench -- registry-heap --packages 10000 --nodes 100 [--seed 1]
//! ```
//!
//! The structures are built the way a full node builds them when it admits every version
//! (no network, no runtime): the registry core fed every record by gossip (its records,
//! its names with their claims, and the catalogue over the same records), the node's share
//! of the DHT
//! records (every version is put under its version key and its name key on 20 of the
//! `--nodes` nodes), a `PackageUpdate` broadcast channel of 1 024, the gossip seen cache
//! and message cache for the messages of 120 s, and the redb store with every record,
//! owner claim and the DHT share written. Prints one JSON object (bytes per version of
//! each, and totals) as its last line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ggen_p2p::gossip::{GossipMessage, MessageCache, MessageId, SeenCache, Topic};
use ggen_p2p::kademlia::{KademliaConfig, Record, RecordStore};
use ggen_p2p::registry::core::{CoreConfig, RegistryCore};
use ggen_p2p::registry::protocol::{Announcement, name_key, package_key};
use ggen_p2p::registry::store::{DhtRecordEntry, OwnerEntry};
use ggen_p2p::registry::{Batch, OwnershipConfig, SignedPackage, Store};
use ggen_p2p::{Keypair, PackageUpdate, UpdateType};
use serde_json::{Value, json};

use super::heap;
use super::registry_bench::generate;

/// Copies of each DHT key in the network (`replication_factor`).
const REPLICAS: usize = 20;
/// The registry's events channel capacity.
const EVENTS: usize = 1024;
/// How long the gossip seen cache keeps an id (`seen_ttl`).
const SEEN_SECS: f64 = 120.0;

/// Live heap bytes that `build`'s result holds, and the result (dropped by the caller
/// after the reading).
fn held<T>(build: impl FnOnce() -> T) -> (usize, T) {
    let before = heap::live();
    let t = build();
    (heap::live().saturating_sub(before), t)
}

/// Runs the breakdown for `count` versions published by `nodes` keys.
pub fn run(count: usize, nodes: usize, seed: u64, rate: f64) -> String {
    let nodes = nodes.max(REPLICAS);
    let keys: Vec<Keypair> = (0..nodes).map(|_| Keypair::generate()).collect();
    let records: Vec<SignedPackage> = generate(seed, count, nodes)
        .iter()
        .map(|e| SignedPackage::sign(e.package(), false, &keys[e.publisher]))
        .collect();
    let v = records.len();
    let per = |bytes: usize| (bytes as f64 / v.max(1) as f64).round();
    let mut out = serde_json::Map::new();
    let mut total = 0.0;
    let mut put = |what: &str, bytes: usize, per_version: f64, note: &str| {
        eprintln!(
            "registry-heap: {what:<22} {:>10.1} MiB {per_version:>8.0} bytes/version  {note}",
            heap::mb(bytes)
        );
        total += per_version;
        out.insert(
            what.to_string(),
            json!({"bytes": bytes, "bytes_per_version": per_version}),
        );
    };

    // The registry core, as a full node's driver feeds it: every record arrives by
    // gossip and is admitted (records, names and their claims, the catalogue over the
    // same shared records); its effects are carried out (here: dropped).
    let now = Instant::now();
    let wall = chrono::Utc::now();
    let (b, core) = held(|| {
        let config = CoreConfig {
            full: true,
            replicate_content: false,
            sync_interval: Duration::from_secs(30),
            ownership: OwnershipConfig::default(),
        };
        let mut core = RegistryCore::new(Keypair::generate(), config);
        let from = keys[0].peer_id();
        for r in &records {
            let _ = core.handle_gossip(now, wall, from, r.clone());
            while core.poll_effect().is_some() {}
        }
        core
    });
    let names = core.name_count();
    eprintln!(
        "registry-heap: core holds {} versions of {names} names",
        core.catalogue_len()
    );
    put(
        "registry_core",
        b,
        per(b),
        "registry::core::RegistryCore: records, names, catalogue",
    );
    drop(core);

    // The DHT records: a version key per version, a name key per name (its latest), each
    // on REPLICAS of `nodes` nodes. Built whole, charged at the node's share.
    let dht_records: Vec<Record> = {
        let mut latest: HashMap<&str, &SignedPackage> = HashMap::new();
        for r in &records {
            latest.insert(r.package.name.as_str(), r);
        }
        records
            .iter()
            .map(|r| (package_key(&r.package.id), r))
            .chain(latest.values().map(|r| (name_key(&r.package.name), *r)))
            .map(|(key, r)| Record {
                key,
                value: Bytes::from(r.encode()),
                publisher: Some(r.publisher),
                ttl_secs: 0,
            })
            .collect()
    };
    let share = REPLICAS as f64 / nodes as f64;
    let (b, store) = held(|| {
        let c = KademliaConfig::default();
        let mut s = RecordStore::with_budget(usize::MAX, c.max_record_size, usize::MAX);
        let now = Instant::now();
        for r in &dht_records {
            // Received from the network: decoded, so a copy of its own.
            let copy = Record {
                key: Bytes::copy_from_slice(&r.key),
                value: Bytes::copy_from_slice(&r.value),
                ..r.clone()
            };
            let _ = s.put(now, copy, c.record_ttl, false);
        }
        s
    });
    put(
        "dht_records",
        (b as f64 * share) as usize,
        per(b) * share,
        &format!(
            "kademlia RecordStore, {} records whole, {share:.2} of them per node",
            dht_records.len()
        ),
    );
    drop(store);

    // The events channel once it has wrapped: EVENTS updates held.
    let (b, chan) = held(|| {
        let (tx, rx) = tokio::sync::broadcast::channel::<PackageUpdate>(EVENTS);
        for r in records.iter().cycle().take(EVENTS) {
            let _ = tx.send(PackageUpdate {
                package_id: r.package.id.clone(),
                version: r.package.version.clone(),
                update_type: UpdateType::NewPackage,
                timestamp: r.package.updated_at,
            });
        }
        (tx, rx)
    });
    put(
        "events_channel",
        b,
        per(b),
        "fixed: 1 024 PackageUpdates once full (facade broadcast::channel(1024))",
    );
    drop(chan);

    // Gossip: the seen cache holds the ids of SEEN_SECS of messages; the message cache
    // the messages of 5 heartbeats (5 s). At `rate` publishes per second.
    let seen_n = ((rate * SEEN_SECS) as usize).min(v);
    let cache_n = ((rate * 5.0) as usize).min(v);
    let messages: Vec<(MessageId, GossipMessage)> = records
        .iter()
        .enumerate()
        .take(seen_n)
        .map(|(i, r)| {
            let mut id = r.publisher.to_bytes().to_vec();
            id.extend_from_slice(&(i as u64).to_be_bytes());
            let data = Announcement { record: r.clone() }.encode();
            (
                MessageId(Bytes::from(id)),
                GossipMessage {
                    from: Some(r.publisher),
                    seqno: Some(i as u64),
                    topic: Topic::new("ggen-marketplace/packages"),
                    data,
                    signature: Some(Bytes::from(vec![0u8; 64])),
                },
            )
        })
        .collect();
    let (b_seen, seen) = held(|| {
        let mut s = SeenCache::new(Duration::from_secs(120), 250_000);
        let now = Instant::now();
        for (id, _) in &messages {
            s.insert(now, id.clone());
        }
        s
    });
    drop(seen);
    let (b_cache, cache) = held(|| {
        let mut c = MessageCache::new(5, 3);
        for (id, m) in messages.iter().take(cache_n) {
            c.put(id.clone(), m.clone());
        }
        c
    });
    drop(cache);
    let gossip = b_seen + b_cache;
    put(
        "gossip_caches",
        gossip,
        per(gossip),
        &format!(
            "time-bounded: seen ids of {seen_n} messages ({SEEN_SECS} s at {rate}/s), {cache_n} cached messages (5 s)"
        ),
    );
    drop(messages);

    // The redb store with everything a node writes: record and owner claim per version,
    // the DHT share. Its page cache is bounded (`CACHE_BYTES` in src/registry/store.rs).
    let dir = tempfile::tempdir().expect("temporary directory");
    let (b, store) = held(|| {
        let store = Store::open(dir.path()).expect("store opens");
        let mut firsts: HashMap<&str, &SignedPackage> = HashMap::new();
        let mut batch = Batch::new();
        for r in &records {
            let first = *firsts.entry(r.package.name.as_str()).or_insert(r);
            batch.put_record(&r.package.id, &r.encode()).put_owner(
                &r.package.name,
                OwnerEntry {
                    owner: first.publisher.to_string(),
                    claim: first.encode(),
                },
            );
            if batch.len() >= 256 {
                store.apply(&batch).expect("store write");
                batch = Batch::new();
            }
        }
        // The node's share of the DHT records: REPLICAS of every `nodes`.
        for (j, d) in dht_records.iter().enumerate() {
            if j % nodes < REPLICAS {
                batch.put_dht_record(&d.key, DhtRecordEntry::from_record(d, u64::MAX / 2, false));
            }
            if batch.len() >= 256 {
                store.apply(&batch).expect("store write");
                batch = Batch::new();
            }
        }
        store.apply(&batch).expect("store write");
        store
    });
    put(
        "redb_store",
        b,
        per(b),
        "bounded: redb page cache (CACHE_BYTES, 90 % read, 10 % write) and handles",
    );
    drop(store);

    eprintln!("registry-heap: {v} versions, {names} names: {total:.0} bytes per version in all");
    let mut json = json!({
        "bench": "registry-heap",
        "versions": v,
        "names": names,
        "nodes": nodes,
        "rate_per_s": rate,
        "total_bytes_per_version": total.round(),
    });
    if let Value::Object(m) = &mut json {
        m.insert("components".into(), Value::Object(out));
    }
    json.to_string()
}
