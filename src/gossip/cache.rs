//! The message cache (recent messages in heartbeat windows, for IHAVE gossip and IWANT
//! answers) and the seen cache (message ids with a time to live, for de-duplication). Both
//! bounded.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::message::{GossipMessage, MessageId, Topic};
use crate::identity::PeerId;

struct Cached {
    message: GossipMessage,
    /// How often each peer asked for it by IWANT.
    asked: HashMap<PeerId, u32>,
}

/// Messages of the last `history_length` heartbeats; ids of the last `history_gossip` are
/// advertised.
pub struct MessageCache {
    windows: VecDeque<Vec<(MessageId, Topic)>>,
    messages: HashMap<MessageId, Cached>,
    gossip: usize,
}

impl MessageCache {
    /// A cache of `history` windows, `gossip` of which are advertised.
    pub fn new(history: usize, gossip: usize) -> Self {
        let mut windows = VecDeque::with_capacity(history.max(1));
        windows.push_back(Vec::new());
        for _ in 1..history.max(1) {
            windows.push_back(Vec::new());
        }
        Self {
            windows,
            messages: HashMap::new(),
            gossip: gossip.min(history.max(1)),
        }
    }

    /// Adds a message (no-op if present).
    pub fn put(&mut self, id: MessageId, message: GossipMessage) {
        if self.messages.contains_key(&id) {
            return;
        }
        if let Some(w) = self.windows.front_mut() {
            w.push((id.clone(), message.topic.clone()));
        }
        self.messages.insert(
            id,
            Cached {
                message,
                asked: HashMap::new(),
            },
        );
    }

    /// The message, if cached.
    pub fn get(&self, id: &MessageId) -> Option<&GossipMessage> {
        self.messages.get(id).map(|c| &c.message)
    }

    /// The message for an IWANT from `peer`, counting the request; with the count so far.
    pub fn get_for_peer(&mut self, id: &MessageId, peer: PeerId) -> Option<(&GossipMessage, u32)> {
        let c = self.messages.get_mut(id)?;
        let n = c.asked.entry(peer).or_insert(0);
        *n += 1;
        Some((&c.message, *n))
    }

    /// Ids of `topic` in the advertised windows, newest first.
    pub fn gossip_ids(&self, topic: &Topic) -> Vec<MessageId> {
        self.windows
            .iter()
            .take(self.gossip)
            .flat_map(|w| w.iter())
            .filter(|(_, t)| t == topic)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Starts a new window, dropping the messages of the oldest.
    pub fn shift(&mut self) {
        if let Some(old) = self.windows.pop_back() {
            for (id, _) in old {
                self.messages.remove(&id);
            }
        }
        self.windows.push_front(Vec::new());
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

/// Message ids seen recently, each kept for a time to live, at most `cap` of them (the oldest
/// go first when full).
pub struct SeenCache {
    ttl: Duration,
    cap: usize,
    order: VecDeque<(Instant, MessageId)>,
    ids: HashMap<MessageId, Instant>,
}

impl SeenCache {
    /// An empty cache.
    pub fn new(ttl: Duration, cap: usize) -> Self {
        Self {
            ttl,
            cap: cap.max(1),
            order: VecDeque::new(),
            ids: HashMap::new(),
        }
    }

    /// Records `id`; false if it was already there (a duplicate).
    pub fn insert(&mut self, now: Instant, id: MessageId) -> bool {
        self.expire(now);
        if self.ids.contains_key(&id) {
            return false;
        }
        while self.ids.len() >= self.cap {
            match self.order.pop_front() {
                Some((_, old)) => {
                    self.ids.remove(&old);
                }
                None => break,
            }
        }
        self.ids.insert(id.clone(), now);
        self.order.push_back((now, id));
        true
    }

    /// True if `id` was seen and has not expired.
    pub fn contains(&self, id: &MessageId) -> bool {
        self.ids.contains_key(id)
    }

    /// Drops expired ids.
    pub fn expire(&mut self, now: Instant) {
        while let Some((t, _)) = self.order.front() {
            if now.saturating_duration_since(*t) < self.ttl {
                break;
            }
            if let Some((t, id)) = self.order.pop_front() {
                if self.ids.get(&id) == Some(&t) {
                    self.ids.remove(&id);
                }
            }
        }
    }

    /// Ids held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(topic: &str, n: u8) -> (MessageId, GossipMessage) {
        (
            MessageId(Bytes::from(vec![n])),
            GossipMessage {
                from: None,
                seqno: Some(n as u64),
                topic: Topic::new(topic),
                data: Bytes::from(vec![n]),
                signature: None,
            },
        )
    }

    #[test]
    fn windows_gossip_and_expiry() {
        let mut c = MessageCache::new(3, 2);
        let (a, ma) = msg("t", 1);
        c.put(a.clone(), ma);
        c.shift();
        let (b, mb) = msg("t", 2);
        c.put(b.clone(), mb);
        let (o, mo) = msg("other", 3);
        c.put(o, mo);
        assert_eq!(c.gossip_ids(&Topic::new("t")), vec![b.clone(), a.clone()]);
        c.shift();
        // `a` is now in the third window: cached, no longer advertised.
        assert_eq!(c.gossip_ids(&Topic::new("t")), vec![b.clone()]);
        assert!(c.get(&a).is_some());
        c.shift();
        assert!(c.get(&a).is_none());
        let peer = PeerId::random();
        assert_eq!(c.get_for_peer(&b, peer).map(|(_, n)| n), Some(1));
        assert_eq!(c.get_for_peer(&b, peer).map(|(_, n)| n), Some(2));
    }

    #[test]
    fn seen_cache_expires_and_is_capped() {
        let t0 = Instant::now();
        let mut s = SeenCache::new(Duration::from_secs(10), 3);
        let id = |n: u8| MessageId(Bytes::from(vec![n]));
        assert!(s.insert(t0, id(1)));
        assert!(!s.insert(t0, id(1)));
        assert!(s.insert(t0, id(2)));
        assert!(s.insert(t0, id(3)));
        assert!(s.insert(t0, id(4)), "full: the oldest goes");
        assert!(!s.contains(&id(1)) && s.contains(&id(4)));
        s.expire(t0 + Duration::from_secs(10));
        assert!(s.is_empty());
    }
}
