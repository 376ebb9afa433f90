//! Bounded, expiring stores for DHT records and provider records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{PeerRecord, Record};
use crate::identity::PeerId;

/// A stored record and its bookkeeping.
#[derive(Clone, Debug)]
pub struct StoredRecord {
    /// The record as received.
    pub record: Record,
    /// When it expires here.
    pub expires: Instant,
    /// We published it (we republish it; others only re-replicate).
    pub local: bool,
    /// When we last pushed it to the k closest peers.
    pub last_replicated: Instant,
}

/// Why a record was not stored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds `max_records` already.
    #[error("record store full")]
    Full,
    /// The value exceeds `max_record_size`.
    #[error("record value of {0} bytes is too large")]
    TooLarge(usize),
}

/// Records by application key; at most `max_records`, each value at most `max_value` bytes,
/// and keys plus values at most `max_bytes` in all.
#[derive(Debug)]
pub struct RecordStore {
    records: HashMap<Bytes, StoredRecord>,
    max_records: usize,
    max_value: usize,
    max_bytes: usize,
    bytes: usize,
}

fn size_of(r: &Record) -> usize {
    r.key.len() + r.value.len()
}

impl RecordStore {
    /// An empty store without a total byte budget.
    pub fn new(max_records: usize, max_value: usize) -> Self {
        Self::with_budget(max_records, max_value, usize::MAX)
    }

    /// An empty store holding at most `max_bytes` of keys and values.
    pub fn with_budget(max_records: usize, max_value: usize, max_bytes: usize) -> Self {
        Self {
            records: HashMap::new(),
            max_records,
            max_value,
            max_bytes,
            bytes: 0,
        }
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(old) = self.records.remove(key) {
            self.bytes -= size_of(&old.record);
        }
    }

    /// Keys and values stored, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Stores or replaces `record`, expiring after `ttl`. A full store still accepts
    /// replacements and records we publish ourselves (evicting the remote record nearest to
    /// expiry); it refuses new remote records.
    pub fn put(
        &mut self,
        now: Instant,
        record: Record,
        ttl: Duration,
        local: bool,
    ) -> Result<(), StoreError> {
        if record.value.len() > self.max_value {
            return Err(StoreError::TooLarge(record.value.len()));
        }
        let replaced = self.records.get(&record.key).map(|r| size_of(&r.record));
        let adding = size_of(&record).saturating_sub(replaced.unwrap_or(0));
        if self.is_full_for(replaced.is_none(), adding) {
            self.expire(now);
            while self.is_full_for(replaced.is_none(), adding) {
                if !local {
                    return Err(StoreError::Full);
                }
                let victim = self
                    .records
                    .iter()
                    .filter(|(k, r)| !r.local && **k != record.key)
                    .min_by_key(|(_, r)| r.expires)
                    .map(|(k, _)| k.clone())
                    .ok_or(StoreError::Full)?;
                self.remove(&victim);
            }
        }
        let local = local || self.records.get(&record.key).is_some_and(|r| r.local);
        self.remove(&record.key);
        self.bytes += size_of(&record);
        self.records.insert(
            record.key.clone(),
            StoredRecord {
                record,
                expires: now + ttl,
                local,
                last_replicated: now,
            },
        );
        Ok(())
    }

    /// The live record under `key`, with its remaining lifetime written into `ttl_secs`.
    pub fn get(&self, now: Instant, key: &[u8]) -> Option<Record> {
        let r = self.records.get(key)?;
        let left = r.expires.checked_duration_since(now)?;
        let mut rec = r.record.clone();
        rec.ttl_secs = left.as_secs().min(u32::MAX as u64) as u32;
        Some(rec)
    }

    /// The stored entry under `key`, expired or not.
    pub fn stored(&self, key: &[u8]) -> Option<&StoredRecord> {
        self.records.get(key)
    }

    /// Removes records past their expiry.
    pub fn expire(&mut self, now: Instant) {
        let mut freed = 0;
        self.records.retain(|_, r| {
            let keep = r.expires > now;
            if !keep {
                freed += size_of(&r.record);
            }
            keep
        });
        self.bytes -= freed;
    }

    /// Whether storing `adding` more bytes (and, if `new_key`, one more record) goes past a
    /// limit.
    fn is_full_for(&self, new_key: bool, adding: usize) -> bool {
        (new_key && self.records.len() >= self.max_records)
            || self.bytes.saturating_add(adding) > self.max_bytes
    }

    /// Every stored record.
    pub fn iter(&self) -> impl Iterator<Item = &StoredRecord> {
        self.records.values()
    }

    /// Marks the record under `key` as just replicated.
    pub fn mark_replicated(&mut self, key: &[u8], now: Instant) {
        if let Some(r) = self.records.get_mut(key) {
            r.last_replicated = now;
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[derive(Clone, Debug)]
struct Provider {
    record: PeerRecord,
    expires: Instant,
}

/// Provider records: who can serve content for a key. Bounded in keys and providers per key.
#[derive(Debug)]
pub struct ProviderStore {
    providers: HashMap<Bytes, Vec<Provider>>,
    max_keys: usize,
    max_per_key: usize,
}

impl ProviderStore {
    /// An empty store.
    pub fn new(max_keys: usize, max_per_key: usize) -> Self {
        Self {
            providers: HashMap::new(),
            max_keys,
            max_per_key: max_per_key.max(1),
        }
    }

    /// Adds or refreshes `provider` for `key`. Returns false if the store is full.
    pub fn add(&mut self, now: Instant, key: Bytes, provider: PeerRecord, ttl: Duration) -> bool {
        if !self.providers.contains_key(&key) && self.providers.len() >= self.max_keys {
            self.expire(now);
            if self.providers.len() >= self.max_keys {
                return false;
            }
        }
        let list = self.providers.entry(key).or_default();
        list.retain(|p| p.record.peer != provider.peer && p.expires > now);
        if list.len() >= self.max_per_key {
            // Drop the one closest to expiry to make room for the fresh announcement.
            if let Some(pos) = list
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| p.expires)
                .map(|(i, _)| i)
            {
                list.remove(pos);
            }
        }
        list.push(Provider {
            record: provider,
            expires: now + ttl,
        });
        true
    }

    /// Live providers of `key`.
    pub fn get(&self, now: Instant, key: &[u8]) -> Vec<PeerRecord> {
        self.providers
            .get(key)
            .map(|l| {
                l.iter()
                    .filter(|p| p.expires > now)
                    .map(|p| p.record.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `peer` is a live provider of `key`.
    pub fn has(&self, now: Instant, key: &[u8], peer: &PeerId) -> bool {
        self.providers
            .get(key)
            .is_some_and(|l| l.iter().any(|p| p.record.peer == *peer && p.expires > now))
    }

    /// Removes expired entries.
    pub fn expire(&mut self, now: Instant) {
        self.providers.retain(|_, l| {
            l.retain(|p| p.expires > now);
            !l.is_empty()
        });
    }

    /// Number of (key, provider) pairs.
    pub fn len(&self) -> usize {
        self.providers.values().map(Vec::len).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: &str, v: usize) -> Record {
        Record {
            key: Bytes::copy_from_slice(k.as_bytes()),
            value: Bytes::from(vec![1; v]),
            publisher: None,
            ttl_secs: 0,
        }
    }

    #[test]
    fn records_are_bounded_and_expire() {
        let now = Instant::now();
        let mut s = RecordStore::new(2, 10);
        assert_eq!(
            s.put(now, rec("a", 11), Duration::from_secs(5), false),
            Err(StoreError::TooLarge(11))
        );
        s.put(now, rec("a", 1), Duration::from_secs(5), false)
            .unwrap();
        s.put(now, rec("b", 1), Duration::from_secs(50), false)
            .unwrap();
        assert_eq!(
            s.put(now, rec("c", 1), Duration::from_secs(5), false),
            Err(StoreError::Full)
        );
        // Our own record evicts the remote one nearest expiry.
        s.put(now, rec("c", 1), Duration::from_secs(5), true)
            .unwrap();
        assert!(s.get(now, b"a").is_none() && s.get(now, b"c").is_some());
        assert_eq!(s.get(now, b"b").unwrap().ttl_secs, 50);
        s.expire(now + Duration::from_secs(6));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn records_are_bounded_in_bytes() {
        let now = Instant::now();
        let t = Duration::from_secs(60);
        // Keys of 1 byte: each record below takes 1 + its value.
        let mut s = RecordStore::with_budget(100, 50, 30);
        s.put(now, rec("a", 9), t, false).unwrap();
        s.put(now, rec("b", 9), t, false).unwrap();
        assert_eq!(s.bytes(), 20);
        assert_eq!(s.put(now, rec("c", 10), t, false), Err(StoreError::Full));
        // Replacing a record counts only the difference.
        s.put(now, rec("b", 19), t, false).unwrap();
        assert_eq!(s.bytes(), 30);
        // Our own record makes room by evicting remote ones.
        s.put(now, rec("c", 14), t, true).unwrap();
        assert!(s.bytes() <= 30, "{}", s.bytes());
        assert!(s.get(now, b"c").is_some());
        s.expire(now + t);
        assert_eq!((s.len(), s.bytes()), (0, 0));
    }

    #[test]
    fn providers_are_bounded_per_key() {
        let now = Instant::now();
        let mut s = ProviderStore::new(1, 2);
        let p = || PeerRecord {
            peer: PeerId::random(),
            addrs: vec![],
        };
        let k = Bytes::from_static(b"k");
        for _ in 0..5 {
            assert!(s.add(now, k.clone(), p(), Duration::from_secs(10)));
        }
        assert_eq!(s.get(now, b"k").len(), 2);
        assert!(!s.add(
            now,
            Bytes::from_static(b"other"),
            p(),
            Duration::from_secs(10)
        ));
        assert!(s.get(now + Duration::from_secs(11), b"k").is_empty());
    }
}
