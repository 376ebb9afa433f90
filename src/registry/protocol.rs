//! What registry nodes say to each other, and where: DHT keys and the record validator,
//! the gossip announcement, and the RPC protocols for anti-entropy sync and for light nodes'
//! searches. Every message is postcard-encoded with bounded sizes; every record that
//! arrives is verified ([`SignedPackage::verify`]) before anything else looks at it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::signed::{MAX_RECORD_SIZE, SignedPackage};
use super::types::{Query, SearchResult};
use crate::identity::PeerId;
use crate::kademlia::{Record, RecordValidator};
use crate::rpc::{Protocol, ProtocolLimits};

/// Buckets of the anti-entropy digest (ids hash into one of them).
pub const SYNC_BUCKETS: u16 = 256;
/// Records per sync answer.
pub const MAX_SYNC_RECORDS: usize = 256;
/// Ids per bucket answer.
pub const MAX_BUCKET_IDS: usize = 4096;
/// Names per ownership poll or log request.
pub const MAX_POLL_NAMES: usize = 64;
/// Log heads per answer.
pub const MAX_LOG_HEADS: usize = 4096;

/// The DHT key of one version's record: SHA-256 of `ggen-p2p/package/<name@version>`.
pub fn package_key(id: &str) -> Bytes {
    key(b"ggen-p2p/package/", id)
}

/// The DHT key of a name's latest record: SHA-256 of `ggen-p2p/name/<name>`.
pub fn name_key(name: &str) -> Bytes {
    key(b"ggen-p2p/name/", name)
}

/// The DHT provider key of content: its SHA-256 (the content hash itself).
pub fn content_key(hash: &crate::rpc::content::ContentHash) -> Bytes {
    Bytes::copy_from_slice(hash.as_bytes())
}

fn key(domain: &[u8], s: &str) -> Bytes {
    let mut h = Sha256::new();
    h.update(domain);
    h.update(s.as_bytes());
    Bytes::copy_from_slice(&h.finalize())
}

/// The DHT's validator for package records: the value must be a verified [`SignedPackage`]
/// stored under its own version key or its name key.
#[derive(Debug, Default)]
pub struct PackageRecordValidator;

impl RecordValidator for PackageRecordValidator {
    fn validate(&self, record: &Record, now: std::time::SystemTime) -> Result<(), String> {
        let s = SignedPackage::decode(&record.value).map_err(|e| e.to_string())?;
        s.verify(chrono::DateTime::<chrono::Utc>::from(now))
            .map_err(|e| e.to_string())?;
        let k = &record.key[..];
        if k == &package_key(&s.package.id)[..] || k == &name_key(&s.package.name)[..] {
            Ok(())
        } else {
            Err(format!("record of {} under a foreign key", s.package.id))
        }
    }
}

/// A package announcement on a gossip topic: one signed record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The record.
    pub record: SignedPackage,
}

impl Announcement {
    /// The encoding.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).unwrap_or_default())
    }

    /// Decodes (unverified).
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::wire::WireError> {
        crate::wire::decode_bounded(bytes, MAX_RECORD_SIZE + 64, "announcement")
    }
}

/// Anti-entropy requests: compare digests, list a bucket, fetch records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncRequest {
    /// The catalogue's per-bucket digests.
    Digests,
    /// The (id, fingerprint) pairs in one bucket.
    Bucket(u16),
    /// These records.
    Records(Vec<String>),
    /// Ownership poll: who owns each of these names in the asker's view (at most
    /// [`MAX_POLL_NAMES`]): `(name, the owner the asker holds)`.
    Owners(Vec<(String, Option<PeerId>)>),
    /// The heads of every name log the peer holds (at most [`MAX_LOG_HEADS`]).
    LogHeads,
    /// The whole logs of these names (at most [`MAX_POLL_NAMES`]).
    Logs(Vec<String>),
}

/// One name in an answer to [`SyncRequest::Owners`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerAnswer {
    /// The name.
    pub name: String,
    /// Whom the answering node holds as its claimant (`None`: it knows no claim).
    pub owner: Option<PeerId>,
    /// Whether that claim is settled there.
    pub settled: bool,
    /// The claim record (encoded [`SignedPackage`]), sent when `owner` differs from the
    /// owner the asker named, so the asker can verify it and switch to it.
    pub claim: Option<Vec<u8>>,
}

/// The head of one name log: its length and the digest of its last statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    /// The name.
    pub name: String,
    /// Statements in the log.
    pub len: u64,
    /// [`super::signed::NameStatement::digest`] of the last one.
    pub head: [u8; 32],
}

/// Anti-entropy answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncResponse {
    /// [`SYNC_BUCKETS`] digests: per bucket, the XOR of SHA-256(id length, id,
    /// fingerprint) over its records (all zero: nothing there).
    Digests(Vec<[u8; 32]>),
    /// A bucket's ids and record fingerprints (at most [`MAX_BUCKET_IDS`]).
    Bucket(Vec<(String, [u8; 32])>),
    /// Encoded [`SignedPackage`]s (at most [`MAX_SYNC_RECORDS`]; unknown ids are skipped).
    Records(Vec<Vec<u8>>),
    /// The answer to [`SyncRequest::Owners`], one entry per name asked; no entry at all
    /// when the peer abstains (it is cut off from most of its peers), which counts against
    /// every claimant.
    Owners(Vec<OwnerAnswer>),
    /// The answer to [`SyncRequest::LogHeads`].
    LogHeads(Vec<LogHead>),
    /// The answer to [`SyncRequest::Logs`]: per name, its encoded statements in order.
    Logs(Vec<(String, Vec<Vec<u8>>)>),
}

/// The anti-entropy protocol.
#[derive(Debug)]
pub struct SyncProtocol;

impl Protocol for SyncProtocol {
    const NAME: &'static str = "/ggen/registry/sync";
    const VERSION: u16 = 1;
    type Request = SyncRequest;
    type Response = SyncResponse;

    fn limits() -> ProtocolLimits {
        ProtocolLimits {
            max_request: 256 * 1024,
            max_response: 16 * 1024 * 1024,
        }
    }
}

/// A light node's search, answered from a full node's catalogue.
#[derive(Debug)]
pub struct SearchProtocol;

impl Protocol for SearchProtocol {
    const NAME: &'static str = "/ggen/registry/search";
    const VERSION: u16 = 1;
    type Request = Query;
    type Response = Vec<SearchResult>;

    fn limits() -> ProtocolLimits {
        ProtocolLimits {
            max_request: 16 * 1024,
            max_response: 8 * 1024 * 1024,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;
    use crate::registry::Package;

    #[test]
    fn the_validator_accepts_records_under_their_keys_only() {
        let k = Keypair::generate();
        let s = SignedPackage::sign(Package::new("kit".into(), "1.0.0".into()), false, &k);
        let value = Bytes::from(s.encode());
        let v = PackageRecordValidator;
        let record = |key: Bytes, value: Bytes| Record {
            key,
            value,
            publisher: None,
            ttl_secs: 3600,
        };
        let now = std::time::SystemTime::now();
        for key in [package_key("kit@1.0.0"), name_key("kit")] {
            v.validate(&record(key, value.clone()), now).unwrap();
        }
        assert!(
            v.validate(&record(name_key("other"), value.clone()), now)
                .is_err()
        );
        // The validator judges dates by the time it is given, not by reading a clock.
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
        assert!(
            v.validate(&record(package_key("kit@1.0.0"), value.clone()), long_ago)
                .unwrap_err()
                .contains("future")
        );
        let mut forged = s.clone();
        forged.package.description = "changed".into();
        let r = record(package_key("kit@1.0.0"), Bytes::from(forged.encode()));
        assert!(v.validate(&r, now).unwrap_err().contains("signature"));
        let a = Announcement { record: s };
        assert_eq!(Announcement::decode(&a.encode()).unwrap(), a);
    }
}
