//! The peer book: every peer discovery has heard of, how, and when.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::DiscoveryMethod;
use crate::address::Multiaddr;
use crate::identity::PeerId;

/// Addresses kept per peer in the book (the node keeps its own, shorter list for dialing).
const MAX_ADDRS_PER_PEER: usize = 8;

/// One discovered peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredPeer {
    /// The peer.
    pub peer: PeerId,
    /// How it was first discovered.
    pub method: DiscoveryMethod,
    /// Every method that has reported it, first one first.
    pub methods: Vec<DiscoveryMethod>,
    /// When it was first recorded.
    pub first_seen: Instant,
    /// When any method last reported it.
    pub last_seen: Instant,
    /// Addresses reported for it (hints: the handshake proves who answers), newest first.
    pub addrs: Vec<Multiaddr>,
}

/// Counts of discovered peers by the method that found them first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MethodCounts {
    /// Found through a configured bootstrap node.
    pub bootstrap: usize,
    /// Found through mDNS.
    pub mdns: usize,
    /// Found by DHT lookups (random walks, bootstrap lookups).
    pub dht: usize,
    /// Added by hand.
    pub manual: usize,
}

impl MethodCounts {
    /// All peers.
    pub fn total(&self) -> usize {
        self.bootstrap + self.mdns + self.dht + self.manual
    }
}

/// Discovered peers, bounded: at the cap, the peer not seen for longest is forgotten, except
/// bootstrap and manual entries, which are configuration and stay. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct PeerBook {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    cap: usize,
    peers: HashMap<PeerId, DiscoveredPeer>,
}

impl PeerBook {
    /// An empty book holding at most `cap` peers (at least 1).
    pub fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                cap: cap.max(1),
                peers: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `method` reported `peer` (at `addrs`). Returns true if the peer is new to
    /// the book. A peer already known keeps its first method; `method` is added to its list.
    /// False and nothing recorded if the book is full of peers that cannot be forgotten.
    pub fn record(&self, peer: PeerId, method: DiscoveryMethod, addrs: &[Multiaddr]) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some(p) = inner.peers.get_mut(&peer) {
            p.last_seen = now;
            if !p.methods.contains(&method) {
                p.methods.push(method);
            }
            merge_addrs(&mut p.addrs, addrs);
            return false;
        }
        if inner.peers.len() >= inner.cap && !inner.evict_one() {
            return false;
        }
        let mut list = Vec::new();
        merge_addrs(&mut list, addrs);
        inner.peers.insert(
            peer,
            DiscoveredPeer {
                peer,
                method,
                methods: vec![method],
                first_seen: now,
                last_seen: now,
                addrs: list,
            },
        );
        true
    }

    /// The method that first found `peer`.
    pub fn method_of(&self, peer: &PeerId) -> Option<DiscoveryMethod> {
        self.lock().peers.get(peer).map(|p| p.method)
    }

    /// The full entry for `peer`.
    pub fn get(&self, peer: &PeerId) -> Option<DiscoveredPeer> {
        self.lock().peers.get(peer).cloned()
    }

    /// Whether `peer` is in the book.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.lock().peers.contains_key(peer)
    }

    /// Every entry, in no particular order.
    pub fn peers(&self) -> Vec<DiscoveredPeer> {
        self.lock().peers.values().cloned().collect()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.lock().peers.len()
    }

    /// True when no peer is known.
    pub fn is_empty(&self) -> bool {
        self.lock().peers.is_empty()
    }

    /// Peers per first method.
    pub fn counts(&self) -> MethodCounts {
        let mut c = MethodCounts::default();
        for p in self.lock().peers.values() {
            match p.method {
                DiscoveryMethod::Bootstrap => c.bootstrap += 1,
                DiscoveryMethod::MDNS => c.mdns += 1,
                DiscoveryMethod::DHT => c.dht += 1,
                DiscoveryMethod::Manual => c.manual += 1,
            }
        }
        c
    }

    /// Forgets `peer`.
    pub fn remove(&self, peer: &PeerId) -> Option<DiscoveredPeer> {
        self.lock().peers.remove(peer)
    }

    /// Time since `peer` was last reported.
    pub fn since_seen(&self, peer: &PeerId) -> Option<Duration> {
        self.lock().peers.get(peer).map(|p| p.last_seen.elapsed())
    }
}

impl Inner {
    /// Forgets the evictable peer not seen for longest. False if none can go.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .peers
            .values()
            .filter(|p| {
                !p.methods
                    .iter()
                    .any(|m| matches!(m, DiscoveryMethod::Bootstrap | DiscoveryMethod::Manual))
            })
            .min_by_key(|p| p.last_seen)
            .map(|p| p.peer);
        match victim {
            Some(v) => {
                self.peers.remove(&v);
                true
            }
            None => false,
        }
    }
}

fn merge_addrs(list: &mut Vec<Multiaddr>, new: &[Multiaddr]) {
    for a in new.iter().rev() {
        let a = a.without_peer_id();
        list.retain(|x| x != &a);
        list.insert(0, a);
    }
    list.truncate(MAX_ADDRS_PER_PEER);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_method_wins_and_later_ones_are_listed() {
        let book = PeerBook::new(10);
        let p = PeerId::random();
        assert!(book.record(p, DiscoveryMethod::MDNS, &[addr("/ip4/127.0.0.1/tcp/1")]));
        assert!(!book.record(p, DiscoveryMethod::DHT, &[addr("/ip4/127.0.0.1/tcp/2")]));
        assert!(!book.record(p, DiscoveryMethod::MDNS, &[]));
        let e = book.get(&p).unwrap();
        assert_eq!(book.method_of(&p), Some(DiscoveryMethod::MDNS));
        assert_eq!(e.methods, vec![DiscoveryMethod::MDNS, DiscoveryMethod::DHT]);
        assert_eq!(e.addrs[0].to_string(), "/ip4/127.0.0.1/tcp/2");
        assert_eq!(e.addrs.len(), 2);
        assert_eq!(book.counts().mdns, 1);
        assert_eq!(book.counts().total(), 1);
    }

    #[test]
    fn bounded_evicts_the_stalest_but_keeps_configured_peers() {
        let book = PeerBook::new(3);
        let boot = PeerId::random();
        let manual = PeerId::random();
        let old = PeerId::random();
        book.record(boot, DiscoveryMethod::Bootstrap, &[]);
        book.record(old, DiscoveryMethod::DHT, &[]);
        book.record(manual, DiscoveryMethod::Manual, &[]);
        let newer = PeerId::random();
        assert!(book.record(newer, DiscoveryMethod::DHT, &[]));
        assert_eq!(book.len(), 3);
        assert!(!book.contains(&old));
        assert!(book.contains(&boot) && book.contains(&manual));
        // Evicts `newer` next (the only evictable one), never the configured peers.
        assert!(book.record(PeerId::random(), DiscoveryMethod::MDNS, &[]));
        assert!(!book.contains(&newer));
        let full = PeerBook::new(1);
        full.record(boot, DiscoveryMethod::Bootstrap, &[]);
        assert!(!full.record(PeerId::random(), DiscoveryMethod::DHT, &[]));
        assert_eq!(full.len(), 1);
    }
}
