//! The iterative lookup: α requests in flight, closer peers learned from each answer, done
//! when the closest peers seen have all answered.
//!
//! With `paths > 1` this is the S/Kademlia disjoint-path lookup: the starting peers are
//! dealt out among the paths, a peer learned on one path belongs to that path only, and each
//! path runs its own α-parallel iteration. An adversary then has to control a peer on every
//! path to hide the target.

use std::collections::{BTreeMap, HashMap};

use super::{Distance, Key, PeerRecord};
use crate::identity::PeerId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate {
    record: PeerRecord,
    state: State,
    depth: u32,
    path: usize,
    retried: bool,
}

/// One lookup towards `target`.
#[derive(Debug)]
pub struct Lookup {
    target: Key,
    local: PeerId,
    k: usize,
    alpha: usize,
    beta: usize,
    paths: usize,
    candidates: BTreeMap<Distance, Candidate>,
    by_peer: HashMap<PeerId, Distance>,
    contacted: usize,
    /// Per path: answers in a row that brought no peer closer than the closest known.
    no_progress: Vec<usize>,
}

impl Lookup {
    /// Starts from `seeds` (usually the k closest peers in our table).
    pub fn new(
        target: Key,
        local: PeerId,
        seeds: Vec<PeerRecord>,
        k: usize,
        alpha: usize,
        beta: usize,
        paths: usize,
    ) -> Self {
        let mut l = Self {
            target,
            local,
            k: k.max(1),
            alpha: alpha.max(1),
            beta: beta.clamp(1, k.max(1)),
            paths: paths.max(1),
            candidates: BTreeMap::new(),
            by_peer: HashMap::new(),
            contacted: 0,
            no_progress: vec![0; paths.max(1)],
        };
        for (i, s) in seeds.into_iter().enumerate() {
            let path = i % l.paths;
            l.add(s, 1, path);
        }
        l
    }

    /// The lookup's target.
    pub fn target(&self) -> &Key {
        &self.target
    }

    fn add(&mut self, record: PeerRecord, depth: u32, path: usize) {
        if record.peer == self.local || self.by_peer.contains_key(&record.peer) {
            return;
        }
        let d = self.target.distance(&Key::from_peer(&record.peer));
        self.by_peer.insert(record.peer, d);
        self.candidates.insert(
            d,
            Candidate {
                record,
                state: State::NotContacted,
                depth,
                path,
                retried: false,
            },
        );
    }

    fn get_mut(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        let d = self.by_peer.get(peer)?;
        self.candidates.get_mut(d)
    }

    /// `peer` answered, naming `closer` peers. Only counts if we were waiting on it.
    pub fn on_success(&mut self, peer: &PeerId, closer: Vec<PeerRecord>) {
        let Some(c) = self.get_mut(peer) else { return };
        if c.state != State::Waiting {
            return;
        }
        c.state = State::Succeeded;
        let (depth, path) = (c.depth + 1, c.path);
        let best_before = self.best(path);
        for rec in closer.into_iter().take(self.k * 2) {
            self.add(rec, depth, path);
        }
        let progressed = self.best(path) < best_before;
        if let Some(n) = self.no_progress.get_mut(path) {
            *n = if progressed { 0 } else { *n + 1 };
        }
    }

    /// Distance of the closest non-failed candidate on `path`.
    fn best(&self, path: usize) -> Option<Distance> {
        self.candidates
            .iter()
            .find(|(_, c)| c.path == path && c.state != State::Failed)
            .map(|(d, _)| *d)
    }

    /// A path has stalled when α answers in a row brought nothing closer: from then on it
    /// asks all of its k closest not yet asked at once (paper §2.3), instead of α at a time.
    fn parallelism(&self, path: usize) -> usize {
        if self.no_progress.get(path).copied().unwrap_or(0) >= self.alpha {
            self.k
        } else {
            self.alpha
        }
    }

    /// `peer` failed or timed out.
    pub fn on_failure(&mut self, peer: &PeerId) {
        if let Some(c) = self.get_mut(peer) {
            if c.state == State::Waiting || c.state == State::NotContacted {
                c.state = State::Failed;
            }
        }
    }

    /// The connection carrying our request to `peer` closed before it answered (for example,
    /// evicted at a connection limit). That says nothing about the peer, so it is asked once
    /// more; a second loss counts as a failure.
    pub fn on_lost_link(&mut self, peer: &PeerId) {
        if let Some(c) = self.get_mut(peer) {
            if c.state == State::Waiting {
                if c.retried {
                    c.state = State::Failed;
                } else {
                    c.retried = true;
                    c.state = State::NotContacted;
                }
            }
        }
    }

    /// Peers to contact now (each path keeps at most α requests in flight, only towards its
    /// k closest non-failed candidates). They are marked as waiting.
    pub fn next_requests(&mut self) -> Vec<PeerRecord> {
        let mut out = Vec::new();
        for path in 0..self.paths {
            let limit = self.parallelism(path);
            let mut in_flight = self
                .candidates
                .values()
                .filter(|c| c.path == path && c.state == State::Waiting)
                .count();
            let mut considered = 0;
            for c in self.candidates.values_mut().filter(|c| c.path == path) {
                if considered >= self.k || in_flight >= limit {
                    break;
                }
                match c.state {
                    State::Failed => continue,
                    State::Succeeded | State::Waiting => considered += 1,
                    State::NotContacted => {
                        considered += 1;
                        c.state = State::Waiting;
                        in_flight += 1;
                        self.contacted += 1;
                        out.push(c.record.clone());
                    }
                }
            }
        }
        out
    }

    /// True once, on every path, the β closest non-failed candidates have all answered.
    pub fn is_finished(&self) -> bool {
        (0..self.paths).all(|path| {
            self.candidates
                .values()
                .filter(|c| c.path == path && c.state != State::Failed)
                .take(self.beta)
                .all(|c| c.state == State::Succeeded)
        })
    }

    /// Requests in flight.
    pub fn waiting(&self) -> usize {
        self.candidates
            .values()
            .filter(|c| c.state == State::Waiting)
            .count()
    }

    /// Peers contacted so far.
    pub fn contacted(&self) -> usize {
        self.contacted
    }

    /// The `n` closest peers that answered, nearest first, with the hop at which each was
    /// learned (peers from our own table are hop 1).
    pub fn result(&self, n: usize) -> Vec<(PeerRecord, u32)> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Succeeded)
            .take(n)
            .map(|c| (c.record.clone(), c.depth))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(p: PeerId) -> PeerRecord {
        PeerRecord {
            peer: p,
            addrs: vec![],
        }
    }

    #[test]
    fn respects_alpha_and_finishes_when_the_closest_answered() {
        let target = Key::from_record_key(b"t");
        let seeds: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        let mut l = Lookup::new(
            target,
            PeerId::random(),
            seeds.iter().map(|p| rec(*p)).collect(),
            4,
            3,
            4,
            1,
        );
        let first = l.next_requests();
        assert_eq!(first.len(), 3);
        assert!(l.next_requests().is_empty(), "α = 3 in flight");
        for p in &first {
            l.on_success(&p.peer, vec![]);
        }
        let mut rounds = 0;
        while !l.is_finished() {
            let batch = l.next_requests();
            assert!(!batch.is_empty() || l.waiting() > 0);
            for p in batch {
                l.on_failure(&p.peer);
            }
            rounds += 1;
            assert!(rounds < 20);
        }
        assert!(l.result(4).len() <= 4);
    }

    #[test]
    fn disjoint_paths_do_not_share_peers() {
        let target = Key::from_record_key(b"t");
        let seeds: Vec<PeerRecord> = (0..6).map(|_| rec(PeerId::random())).collect();
        let mut l = Lookup::new(target, PeerId::random(), seeds, 20, 1, 20, 3);
        let batch = l.next_requests();
        assert_eq!(batch.len(), 3, "one per path");
        // A peer reported by two paths is owned by the first that named it.
        let shared = rec(PeerId::random());
        l.on_success(&batch[0].peer, vec![shared.clone()]);
        l.on_success(&batch[1].peer, vec![shared.clone()]);
        let d = l.by_peer[&shared.peer];
        assert_eq!(
            l.candidates[&d].path,
            l.candidates[&l.by_peer[&batch[0].peer]].path
        );
    }
}
