//! The routing table: 256 k-buckets by XOR distance from our key.
//!
//! Eviction follows the paper: a full bucket keeps its least-recently-seen entry unless that
//! entry fails a liveness check. A newcomer to a full bucket waits in the bucket's single
//! pending slot (the paper's replacement cache, §4.1) and takes the place of the first entry
//! that fails. The oldest entry is pinged only if it has not been seen for
//! `liveness_check_after`: pinging on every newcomer would turn each inbound request into a
//! dial, a handshake and, on a node at its connection limit, an eviction. Entries that fail `max_failures` requests in a row are dropped. Diversity limits cap how
//! many peers of one IPv4 /24 or IPv6 /48 a bucket (and the table) may hold, which makes
//! eclipsing a node from one network block expensive.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{KademliaConfig, Key, PeerRecord};
use crate::address::{Multiaddr, Protocol};
use crate::identity::PeerId;

/// One peer in the table.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Identity.
    pub peer: PeerId,
    /// Its key (SHA-256 of the PeerId bytes).
    pub key: Key,
    /// Known addresses.
    pub addrs: Vec<Multiaddr>,
    /// When it last answered or contacted us.
    pub last_seen: Instant,
    /// Consecutive failed requests.
    pub failures: u32,
}

impl Entry {
    /// As sent in DHT messages.
    pub fn record(&self) -> PeerRecord {
        PeerRecord {
            peer: self.peer,
            addrs: self.addrs.clone(),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    pending: Option<Entry>,
    /// The entry whose liveness check is under way, if any.
    checking: Option<PeerId>,
    last_touched: Option<Instant>,
}

/// What [`RoutingTable::update`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The peer was new and now is in the table.
    Inserted,
    /// The peer was already present; its entry is refreshed.
    Refreshed,
    /// The bucket is full: the peer waits as pending, and `ping` (the bucket's oldest entry,
    /// not seen for `liveness_check_after`) must be checked for liveness; report with
    /// [`RoutingTable::liveness`].
    Pending {
        /// The least-recently-seen entry to ping.
        ping: PeerId,
    },
    /// The bucket is full and needs no check now (one is under way, or every entry was seen
    /// recently): the peer waits as the pending candidate, replacing any earlier one, until
    /// an entry fails.
    Queued,
    /// Refused by a diversity limit.
    RejectedDiversity,
    /// Our own identity, or a peer with no address.
    Ignored,
}

type IpPrefix = [u8; 6];

fn ip_prefix(addrs: &[Multiaddr], exempt_loopback: bool) -> Option<IpPrefix> {
    for a in addrs {
        for c in a.iter() {
            let ip = match c {
                Protocol::Ip4(ip) => IpAddr::V4(*ip),
                Protocol::Ip6(ip) => IpAddr::V6(*ip),
                _ => continue,
            };
            if exempt_loopback && ip.is_loopback() {
                return None;
            }
            return Some(match ip {
                IpAddr::V4(v4) => {
                    let o = v4.octets();
                    [4, o[0], o[1], o[2], 0, 0]
                }
                IpAddr::V6(v6) => {
                    let o = v6.octets();
                    [o[0], o[1], o[2], o[3], o[4], o[5]]
                }
            });
        }
    }
    None
}

/// Per-bucket figures for researchers and debugging.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSnapshot {
    /// Bucket index (highest differing bit).
    pub index: usize,
    /// Peers in it, least recently seen first, with seconds since last seen.
    pub peers: Vec<(PeerId, u64)>,
    /// A replacement candidate waiting for a slot.
    pub pending: Option<PeerId>,
}

/// The whole table at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTableSnapshot {
    /// Our identity.
    pub local: PeerId,
    /// Number of peers.
    pub len: usize,
    /// Non-empty buckets.
    pub buckets: Vec<BucketSnapshot>,
}

/// The k-bucket routing table.
#[derive(Debug)]
pub struct RoutingTable {
    local: PeerId,
    local_key: Key,
    k: usize,
    max_failures: u32,
    max_addrs: usize,
    bucket_ip_limit: Option<usize>,
    table_ip_limit: Option<usize>,
    exempt_loopback: bool,
    liveness_check_after: Duration,
    buckets: Vec<Bucket>,
    prefixes: HashMap<IpPrefix, usize>,
    len: usize,
}

impl RoutingTable {
    /// An empty table for `local`.
    pub fn new(local: PeerId, cfg: &KademliaConfig) -> Self {
        Self {
            local,
            local_key: Key::from_peer(&local),
            k: cfg.k,
            max_failures: cfg.max_failures.max(1),
            max_addrs: cfg.max_addrs_per_peer,
            bucket_ip_limit: cfg.bucket_ip_limit,
            table_ip_limit: cfg.table_ip_limit,
            exempt_loopback: cfg.ip_limits_exempt_loopback,
            liveness_check_after: cfg.liveness_check_after,
            buckets: (0..256)
                .map(|_| Bucket {
                    entries: Vec::new(),
                    pending: None,
                    checking: None,
                    last_touched: None,
                })
                .collect(),
            prefixes: HashMap::new(),
            len: 0,
        }
    }

    /// Our key.
    pub fn local_key(&self) -> &Key {
        &self.local_key
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket_of(&self, key: &Key) -> Option<usize> {
        self.local_key.distance(key).bucket()
    }

    /// The entry for `peer`, if present.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        let b = self.bucket_of(&Key::from_peer(peer))?;
        self.buckets[b].entries.iter().find(|e| e.peer == *peer)
    }

    /// Records that `peer` is alive and reachable at `addrs` (merged with known ones).
    pub fn update(&mut self, now: Instant, peer: PeerId, addrs: &[Multiaddr]) -> Update {
        if peer == self.local {
            return Update::Ignored;
        }
        let key = Key::from_peer(&peer);
        let Some(b) = self.bucket_of(&key) else {
            return Update::Ignored;
        };
        let max_addrs = self.max_addrs;
        let bucket = &mut self.buckets[b];
        bucket.last_touched = Some(now);
        if let Some(pos) = bucket.entries.iter().position(|e| e.peer == peer) {
            let mut e = bucket.entries.remove(pos);
            merge_addrs(&mut e.addrs, addrs, max_addrs);
            e.last_seen = now;
            e.failures = 0;
            bucket.entries.push(e);
            return Update::Refreshed;
        }
        if addrs.is_empty() {
            return Update::Ignored;
        }
        let mut new_addrs = Vec::new();
        merge_addrs(&mut new_addrs, addrs, max_addrs);
        let entry = Entry {
            peer,
            key,
            addrs: new_addrs,
            last_seen: now,
            failures: 0,
        };
        if !self.diversity_allows(b, &entry) {
            return Update::RejectedDiversity;
        }
        let bucket = &mut self.buckets[b];
        if bucket.entries.len() < self.k {
            self.insert_entry(b, entry);
            return Update::Inserted;
        }
        bucket.pending = Some(entry);
        let Some(oldest) = bucket.entries.first() else {
            return Update::Queued;
        };
        let stale = now.saturating_duration_since(oldest.last_seen) >= self.liveness_check_after;
        if bucket.checking.is_none() && stale {
            let ping = oldest.peer;
            bucket.checking = Some(ping);
            Update::Pending { ping }
        } else {
            Update::Queued
        }
    }

    fn diversity_allows(&self, b: usize, entry: &Entry) -> bool {
        let Some(prefix) = ip_prefix(&entry.addrs, self.exempt_loopback) else {
            return true;
        };
        if let Some(limit) = self.table_ip_limit {
            if self.prefixes.get(&prefix).copied().unwrap_or(0) >= limit {
                return false;
            }
        }
        if let Some(limit) = self.bucket_ip_limit {
            let same = self.buckets[b]
                .entries
                .iter()
                .filter(|e| ip_prefix(&e.addrs, self.exempt_loopback) == Some(prefix))
                .count();
            if same >= limit {
                return false;
            }
        }
        true
    }

    fn insert_entry(&mut self, b: usize, entry: Entry) {
        if let Some(p) = ip_prefix(&entry.addrs, self.exempt_loopback) {
            *self.prefixes.entry(p).or_default() += 1;
        }
        self.buckets[b].entries.push(entry);
        self.len += 1;
    }

    fn remove_at(&mut self, b: usize, pos: usize) -> Entry {
        let e = self.buckets[b].entries.remove(pos);
        if self.buckets[b].checking == Some(e.peer) {
            self.buckets[b].checking = None;
        }
        if let Some(p) = ip_prefix(&e.addrs, self.exempt_loopback) {
            if let Some(n) = self.prefixes.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.prefixes.remove(&p);
                }
            }
        }
        self.len -= 1;
        e
    }

    /// Moves the bucket's pending candidate in, if there is one and room (or diversity) allows.
    fn promote_pending(&mut self, b: usize) -> Option<PeerId> {
        if self.buckets[b].entries.len() >= self.k {
            return None;
        }
        let pending = self.buckets[b].pending.take()?;
        if !self.diversity_allows(b, &pending) {
            return None;
        }
        let peer = pending.peer;
        self.insert_entry(b, pending);
        Some(peer)
    }

    /// The outcome of the liveness check of `oldest`. Alive: it stays (as most recently seen)
    /// and the pending candidate keeps waiting. Dead: it is evicted and the candidate takes
    /// its place. Returns the peer that was inserted, if any.
    pub fn liveness(&mut self, now: Instant, oldest: &PeerId, alive: bool) -> Option<PeerId> {
        let b = self.bucket_of(&Key::from_peer(oldest))?;
        if self.buckets[b].checking == Some(*oldest) {
            self.buckets[b].checking = None;
        }
        if alive {
            self.update(now, *oldest, &[]);
            return None;
        }
        if let Some(pos) = self.buckets[b]
            .entries
            .iter()
            .position(|e| e.peer == *oldest)
        {
            self.remove_at(b, pos);
        }
        self.promote_pending(b)
    }

    /// Counts a failed request to `peer`; after `max_failures` in a row it is removed and a
    /// pending candidate promoted. `None` if it stays (or was not in the table); if it was
    /// removed, `Some` of the candidate that took its place, if any.
    pub fn failure(&mut self, peer: &PeerId) -> Option<Option<PeerId>> {
        let b = self.bucket_of(&Key::from_peer(peer))?;
        let pos = self.buckets[b]
            .entries
            .iter()
            .position(|e| e.peer == *peer)?;
        let entry = self.buckets[b].entries.get_mut(pos)?;
        entry.failures += 1;
        if entry.failures < self.max_failures {
            return None;
        }
        self.remove_at(b, pos);
        Some(self.promote_pending(b))
    }

    /// Removes `peer`.
    pub fn remove(&mut self, peer: &PeerId) -> Option<Entry> {
        let b = self.bucket_of(&Key::from_peer(peer))?;
        let pos = self.buckets[b]
            .entries
            .iter()
            .position(|e| e.peer == *peer)?;
        let e = self.remove_at(b, pos);
        self.promote_pending(b);
        Some(e)
    }

    /// The `n` known peers closest to `target`, nearest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<&Entry> {
        let mut all: Vec<(super::Distance, &Entry)> = self
            .buckets
            .iter()
            .flat_map(|b| b.entries.iter())
            .map(|e| (target.distance(&e.key), e))
            .collect();
        if n == 0 {
            return Vec::new();
        }
        if all.len() > n {
            all.select_nth_unstable_by_key(n - 1, |(d, _)| *d);
            all.truncate(n);
        }
        all.sort_unstable_by_key(|(d, _)| *d);
        all.into_iter().map(|(_, e)| e).collect()
    }

    /// Every peer.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Index of the non-empty bucket closest to us (our nearest neighbour's bucket).
    pub fn nearest_bucket(&self) -> Option<usize> {
        self.buckets.iter().position(|b| !b.entries.is_empty())
    }

    /// Buckets not touched within `interval`, among those that can hold peers at all: every
    /// bucket from our nearest neighbour's outwards.
    pub fn stale_buckets(&self, now: Instant, interval: std::time::Duration) -> Vec<usize> {
        let Some(first) = self.nearest_bucket() else {
            return Vec::new();
        };
        (first..256)
            .filter(|&b| {
                self.buckets[b]
                    .last_touched
                    .is_none_or(|t| now.saturating_duration_since(t) >= interval)
            })
            .collect()
    }

    /// Marks bucket `b` as refreshed now.
    pub fn touch_bucket(&mut self, b: usize, now: Instant) {
        if let Some(bucket) = self.buckets.get_mut(b) {
            bucket.last_touched = Some(now);
        }
    }

    /// Bucket occupancy, peers and last-seen ages.
    pub fn snapshot(&self, now: Instant) -> RoutingTableSnapshot {
        RoutingTableSnapshot {
            local: self.local,
            len: self.len,
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, b)| !b.entries.is_empty() || b.pending.is_some())
                .map(|(index, b)| BucketSnapshot {
                    index,
                    peers: b
                        .entries
                        .iter()
                        .map(|e| (e.peer, now.saturating_duration_since(e.last_seen).as_secs()))
                        .collect(),
                    pending: b.pending.as_ref().map(|e| e.peer),
                })
                .collect(),
        }
    }

    /// Checks the structural invariants (bucket sizes ≤ k, no self entry, every entry in the
    /// bucket its distance names, no duplicates, counters consistent). For tests and fuzzers.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            if b.entries.len() > self.k {
                return Err(format!("bucket {i} holds {} > k", b.entries.len()));
            }
            for e in &b.entries {
                if e.peer == self.local {
                    return Err("self entry".into());
                }
                if self.bucket_of(&e.key) != Some(i) {
                    return Err(format!("{} in wrong bucket {i}", e.peer));
                }
                if !seen.insert(e.peer) {
                    return Err(format!("{} twice", e.peer));
                }
                count += 1;
            }
        }
        if count != self.len {
            return Err(format!("len {} but {count} entries", self.len));
        }
        Ok(())
    }
}

fn merge_addrs(into: &mut Vec<Multiaddr>, new: &[Multiaddr], max: usize) {
    for a in new.iter().rev() {
        let a = a.without_peer_id();
        into.retain(|x| x != &a);
        into.insert(0, a);
    }
    into.truncate(max.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Vec<Multiaddr> {
        vec![s.parse().unwrap()]
    }

    #[test]
    fn full_bucket_pings_oldest_and_replaces_it_only_if_dead() {
        let cfg = KademliaConfig {
            k: 2,
            bucket_ip_limit: None,
            table_ip_limit: None,
            ..Default::default()
        };
        let local = PeerId::random();
        let mut t = RoutingTable::new(local, &cfg);
        let t0 = Instant::now();
        let now = t0 + cfg.liveness_check_after;
        // Fill one bucket: find peers that land in the same bucket as the first.
        let lk = Key::from_peer(&local);
        let first = PeerId::random();
        let b = lk.distance(&Key::from_peer(&first)).bucket().unwrap();
        let mut same = vec![first];
        while same.len() < 4 {
            let p = PeerId::random();
            if lk.distance(&Key::from_peer(&p)).bucket() == Some(b) {
                same.push(p);
            }
        }
        let a = addr("/ip4/10.0.0.1/tcp/1");
        assert_eq!(t.update(t0, same[0], &a), Update::Inserted);
        assert_eq!(t.update(t0, same[1], &a), Update::Inserted);
        // Entries seen recently: a newcomer waits without a ping.
        assert_eq!(t.update(t0, same[2], &a), Update::Queued);
        // Once the oldest is stale, the next newcomer triggers one check of it.
        assert_eq!(
            t.update(now, same[2], &a),
            Update::Pending { ping: same[0] }
        );
        assert_eq!(
            t.update(now, same[3], &a),
            Update::Queued,
            "check under way"
        );
        // Oldest alive: stays (now most recent); the latest candidate keeps waiting.
        assert_eq!(t.liveness(now, &same[0], true), None);
        assert!(t.get(&same[0]).is_some() && t.get(&same[3]).is_none());
        // same[1] is the oldest and stale; it dies: the candidate takes its place.
        assert_eq!(
            t.update(now, same[2], &a),
            Update::Pending { ping: same[1] }
        );
        assert_eq!(t.liveness(now, &same[1], false), Some(same[2]));
        assert!(t.get(&same[1]).is_none() && t.get(&same[2]).is_some());
        // A failing entry also hands its slot to a waiting candidate.
        assert_eq!(t.update(now, same[3], &a), Update::Queued);
        for _ in 0..cfg.max_failures {
            t.failure(&same[0]);
        }
        assert!(t.get(&same[0]).is_none() && t.get(&same[3]).is_some());
        t.check_invariants().unwrap();
    }

    #[test]
    fn diversity_limits_and_failures() {
        let cfg = KademliaConfig {
            bucket_ip_limit: Some(2),
            table_ip_limit: Some(3),
            max_failures: 2,
            ..Default::default()
        };
        let mut t = RoutingTable::new(PeerId::random(), &cfg);
        let now = Instant::now();
        let mut accepted = 0;
        for i in 0..50 {
            if t.update(
                now,
                PeerId::random(),
                &addr(&format!("/ip4/192.0.2.{i}/tcp/1")),
            ) == Update::Inserted
            {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 3, "one /24 is capped table-wide");
        // Loopback is exempt by default: no loopback peer is refused by a diversity limit,
        // though one /24 holds far more than the limits allow.
        let mut refused = 0;
        for _ in 0..50 {
            if t.update(now, PeerId::random(), &addr("/ip4/127.0.0.1/tcp/1"))
                == Update::RejectedDiversity
            {
                refused += 1;
            }
        }
        assert_eq!(refused, 0);
        assert!(t.len() > 3 + 2, "{}", t.len());
        let victim = t.iter().next().unwrap().peer;
        assert_eq!(t.failure(&victim), None);
        assert!(t.failure(&victim).is_some());
        assert!(t.get(&victim).is_none());
        t.check_invariants().unwrap();
        assert!(
            t.update(now, t.local_key_peer(), &addr("/ip4/127.0.0.1/tcp/1")) == Update::Ignored
        );
    }

    impl RoutingTable {
        fn local_key_peer(&self) -> PeerId {
            self.local
        }
    }
}
