//! The registry's crash-safe on-disk store: one [`redb`] database plus a content-addressed
//! blob directory and the identity file, all inside the node's data directory.
//!
//! # Layout of the data directory
//!
//! ```text
//! <data dir>/
//!   identity.key          the node's Ed25519 key (same file and format as `ggen --data-dir`)
//!   registry.redb         the database (tables below); locked while a Store has it open
//!   blobs/<h[0..2]>/<h>   content blobs, named by the lower-case hex SHA-256 of their bytes
//!   blobs/**/.tmp-*       blobs being written; stale ones are removed by `Store::open`
//! ```
//!
//! # Tables
//!
//! Every value is postcard-encoded unless said otherwise. Each table is listed with its
//! key → value types.
//!
//! | table         | key                          | value                                        |
//! |---------------|------------------------------|----------------------------------------------|
//! | `meta`        | setting name (`&str`)        | `schema_version` → `u32` ([`SCHEMA_VERSION`]) |
//! | `records`     | package id `name@version`    | the caller's signed package record (opaque bytes, stored as given) |
//! | `owners`      | package name                 | [`OwnerEntry`]: owner PeerId and first-claim bytes |
//! | `own`         | package id                   | `()`: this node published the version       |
//! | `dht_records` | DHT application key (bytes)  | [`DhtRecordEntry`]: value, publisher, expiry |
//! | `providers`   | DHT application key (bytes)  | `Vec<`[`ProviderEntry`]`>`: one per peer, with expiry |
//!
//! `records` holds own and cached packages alike and is the catalogue; `own` marks which of
//! them this node published (it republishes those). The registry layer owns signing and
//! verification: the store never interprets record bytes.
//!
//! Expiry times are wall-clock milliseconds since the Unix epoch ([`unix_ms_now`]), because
//! the DHT's `Instant`s do not survive a restart.
//!
//! # Crash safety
//!
//! Every write is one redb write transaction committed with immediate durability: when a
//! method returns `Ok`, the change survives a crash or SIGKILL; when the process dies
//! before that, none of it is visible. [`Store::apply`] writes a [`Batch`] touching several
//! tables in one transaction (a publish is record + owner + own + provider), so a crash
//! leaves all of it or none. Blobs are written to a temporary file in their final
//! directory, checked against their hash, fsynced, renamed into place and the directory
//! fsynced: a blob under its final name is always complete.
//!
//! The database file is locked (`flock`) while a [`Store`] is open: a second open of the
//! same data directory, from this process or another, fails with [`StoreError::Locked`].
//! Dropping the store (or [`Store::close`]) releases the lock at once, and so does the
//! death of the process holding it.
//!
//! All methods block on disk I/O; async callers should use `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Multiaddr;
use crate::identity::{IdentityError, Keypair, PeerId, load_or_create_identity};
use crate::kademlia::{PeerRecord, Record};
use crate::rpc::content::ContentHash;

/// The schema this build writes. A store with a newer version is refused.
pub const SCHEMA_VERSION: u32 = 1;
/// redb page cache per store (see [`Store::open`]): 0.9 MiB of read cache, where the
/// B-trees' interior pages (read by every write) stay, and 0.1 MiB of write buffer (redb
/// writes pages out early when a transaction dirties more, then syncs at commit as ever).
const CACHE_BYTES: usize = 1 << 20;
/// The database file's name inside the data directory.
pub const DB_FILE: &str = "registry.redb";
/// The identity file's name inside the data directory (the CLI uses the same).
pub const IDENTITY_FILE: &str = "identity.key";
/// The blob directory's name inside the data directory.
pub const BLOB_DIR: &str = "blobs";

const TMP_PREFIX: &str = ".tmp-";
const SCHEMA_KEY: &str = "schema_version";

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const OWNERS: TableDefinition<&str, &[u8]> = TableDefinition::new("owners");
const OWN: TableDefinition<&str, ()> = TableDefinition::new("own");
const DHT_RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("dht_records");
const PROVIDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providers");

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Another `Store` (in this process or another) has the data directory open.
    #[error("data directory {path} is in use: another registry has its store open (stop it first)")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// The store was written by a newer build.
    #[error(
        "store {path} has schema version {found}, newer than this build supports ({supported}); upgrade ggen"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        found: u32,
        /// [`SCHEMA_VERSION`].
        supported: u32,
    },
    /// A file system operation failed.
    #[error("store {path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The database failed (I/O inside redb, corruption it detected).
    #[error("store database: {0}")]
    Db(#[from] redb::Error),
    /// A stored value does not decode.
    #[error("store table {table}: entry {key} is corrupt: {reason}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// Its key (printable form).
        key: String,
        /// What failed.
        reason: String,
    },
    /// Blob bytes do not hash to the address they were stored under.
    #[error("blob content hashes to {actual}, not {expected}")]
    HashMismatch {
        /// The address given.
        expected: ContentHash,
        /// The bytes' actual SHA-256.
        actual: ContentHash,
    },
    /// A [`Batch::claim_owner`] found the name owned by someone else; nothing was written.
    #[error("package name {name} is owned by {owner}")]
    NameOwned {
        /// The name.
        name: String,
        /// Its owner's PeerId.
        owner: String,
    },
    /// Loading or creating the identity failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl From<StoreError> for super::RegistryError {
    fn from(e: StoreError) -> Self {
        super::RegistryError::Storage(e.to_string())
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn db<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The wall-clock expiry (Unix ms) of something that expires at `expires`, an `Instant`
/// measured against `now` (which is `now_ms` on the wall clock).
pub fn instant_to_unix_ms(expires: Instant, now: Instant, now_ms: u64) -> u64 {
    match expires.checked_duration_since(now) {
        Some(left) => now_ms.saturating_add(left.as_millis() as u64),
        None => now_ms.saturating_sub(now.duration_since(expires).as_millis() as u64),
    }
}

/// Who owns a package name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerEntry {
    /// The owner's PeerId (`12D3KooW…`).
    pub owner: String,
    /// The first claim, as the registry layer encodes it (e.g. the signed first record).
    pub claim: Vec<u8>,
}

/// A DHT record held for the network (or published by us).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DhtRecordEntry {
    /// The record's value.
    pub value: Vec<u8>,
    /// Who published it, if known.
    pub publisher: Option<PeerId>,
    /// When it expires (Unix ms).
    pub expires_at_ms: u64,
    /// We published it (we republish it after a restart).
    pub local: bool,
}

impl DhtRecordEntry {
    /// The entry for `record` (its key is the table key), expiring at `expires_at_ms`.
    pub fn from_record(record: &Record, expires_at_ms: u64, local: bool) -> Self {
        Self {
            value: record.value.to_vec(),
            publisher: record.publisher,
            expires_at_ms,
            local,
        }
    }

    /// The record under `key` with its remaining lifetime at `now_ms`; `None` once expired.
    pub fn to_record(&self, key: &[u8], now_ms: u64) -> Option<Record> {
        let left = self.remaining(now_ms)?;
        Some(Record {
            key: bytes::Bytes::copy_from_slice(key),
            value: bytes::Bytes::from(self.value.clone()),
            publisher: self.publisher,
            ttl_secs: left.as_secs().min(u32::MAX as u64) as u32,
        })
    }

    /// Time left at `now_ms`; `None` once expired.
    pub fn remaining(&self, now_ms: u64) -> Option<Duration> {
        (self.expires_at_ms > now_ms).then(|| Duration::from_millis(self.expires_at_ms - now_ms))
    }
}

/// A peer that provides the content under a DHT key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderEntry {
    /// The provider.
    pub peer: PeerId,
    /// Where to reach it.
    pub addrs: Vec<Multiaddr>,
    /// When the announcement expires (Unix ms).
    pub expires_at_ms: u64,
}

impl ProviderEntry {
    /// The entry for `record`, expiring at `expires_at_ms`.
    pub fn from_peer_record(record: &PeerRecord, expires_at_ms: u64) -> Self {
        Self {
            peer: record.peer,
            addrs: record.addrs.clone(),
            expires_at_ms,
        }
    }

    /// The provider as the DHT names it.
    pub fn to_peer_record(&self) -> PeerRecord {
        PeerRecord {
            peer: self.peer,
            addrs: self.addrs.clone(),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    PutRecord(String, Vec<u8>),
    RemoveRecord(String),
    PutOwner(String, OwnerEntry),
    ClaimOwner(String, OwnerEntry),
    RemoveOwner(String),
    MarkOwn(String),
    UnmarkOwn(String),
    PutDhtRecord(Vec<u8>, DhtRecordEntry),
    RemoveDhtRecord(Vec<u8>),
    AddProvider(Vec<u8>, ProviderEntry),
    RemoveProvider(Vec<u8>, PeerId),
}

/// One write of a [`Batch`] to the record or owner table (see [`Batch::registry_writes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistryWrite<'a> {
    /// Store (or replace) the encoded record of this id.
    PutRecord(&'a str, &'a [u8]),
    /// Remove the record of this id.
    RemoveRecord(&'a str),
    /// Store (or replace) this name's owner entry.
    PutOwner(&'a str, &'a OwnerEntry),
    /// Store this name's owner entry unless another owner holds it (which fails the batch).
    ClaimOwner(&'a str, &'a OwnerEntry),
    /// Forget this name's owner entry.
    RemoveOwner(&'a str),
}

/// Writes to several tables, applied by [`Store::apply`] in one transaction: all or none.
/// Operations apply in the order added.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Moves every operation of `other` to the end of this batch (applied after ours).
    pub fn append(&mut self, other: &mut Batch) {
        self.ops.append(&mut other.ops);
    }

    /// The batch's writes to the record and owner tables, in order (what an in-memory
    /// stand-in for the store, such as the simulator's, applies). DHT, provider and
    /// own-mark operations are left out.
    pub fn registry_writes(&self) -> impl Iterator<Item = RegistryWrite<'_>> + '_ {
        self.ops.iter().filter_map(|op| match op {
            Op::PutRecord(id, bytes) => Some(RegistryWrite::PutRecord(id, bytes)),
            Op::RemoveRecord(id) => Some(RegistryWrite::RemoveRecord(id)),
            Op::PutOwner(name, e) => Some(RegistryWrite::PutOwner(name, e)),
            Op::ClaimOwner(name, e) => Some(RegistryWrite::ClaimOwner(name, e)),
            Op::RemoveOwner(name) => Some(RegistryWrite::RemoveOwner(name)),
            _ => None,
        })
    }

    /// Stores (or replaces) the signed record of package `id`.
    pub fn put_record(&mut self, id: &str, bytes: &[u8]) -> &mut Self {
        self.ops.push(Op::PutRecord(id.to_string(), bytes.to_vec()));
        self
    }

    /// Removes the record of package `id`.
    pub fn remove_record(&mut self, id: &str) -> &mut Self {
        self.ops.push(Op::RemoveRecord(id.to_string()));
        self
    }

    /// Sets the owner of `name`, replacing any other.
    pub fn put_owner(&mut self, name: &str, entry: OwnerEntry) -> &mut Self {
        self.ops.push(Op::PutOwner(name.to_string(), entry));
        self
    }

    /// Claims `name` for `entry.owner`: stores it if the name is unowned, keeps the existing
    /// entry (and its first claim) if the owner is the same, and fails the whole batch with
    /// [`StoreError::NameOwned`] if another key owns it.
    pub fn claim_owner(&mut self, name: &str, entry: OwnerEntry) -> &mut Self {
        self.ops.push(Op::ClaimOwner(name.to_string(), entry));
        self
    }

    /// Forgets the owner of `name`.
    pub fn remove_owner(&mut self, name: &str) -> &mut Self {
        self.ops.push(Op::RemoveOwner(name.to_string()));
        self
    }

    /// Marks package `id` as published by this node.
    pub fn mark_own(&mut self, id: &str) -> &mut Self {
        self.ops.push(Op::MarkOwn(id.to_string()));
        self
    }

    /// Unmarks package `id` as ours.
    pub fn unmark_own(&mut self, id: &str) -> &mut Self {
        self.ops.push(Op::UnmarkOwn(id.to_string()));
        self
    }

    /// Stores (or replaces) the DHT record under `key`.
    pub fn put_dht_record(&mut self, key: &[u8], entry: DhtRecordEntry) -> &mut Self {
        self.ops.push(Op::PutDhtRecord(key.to_vec(), entry));
        self
    }

    /// Removes the DHT record under `key`.
    pub fn remove_dht_record(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push(Op::RemoveDhtRecord(key.to_vec()));
        self
    }

    /// Adds or refreshes `entry.peer` as a provider of `key` (one entry per peer).
    pub fn add_provider(&mut self, key: &[u8], entry: ProviderEntry) -> &mut Self {
        self.ops.push(Op::AddProvider(key.to_vec(), entry));
        self
    }

    /// Removes `peer` as a provider of `key`.
    pub fn remove_provider(&mut self, key: &[u8], peer: PeerId) -> &mut Self {
        self.ops.push(Op::RemoveProvider(key.to_vec(), peer));
        self
    }
}

/// The node's on-disk store. See the [module docs](self) for the layout and guarantees.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    blobs: PathBuf,
    db: Database,
}

impl Store {
    /// Opens the store in `dir`, creating the directory, database and blob directory if
    /// needed, and removes blob temp files left by a crash. Fails with
    /// [`StoreError::Locked`] while another `Store` has `dir` open and with
    /// [`StoreError::NewerSchema`] if a newer build wrote it.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let path = dir.join(DB_FILE);
        // redb's default page cache is 1 GiB per database, filled by every page written and
        // never shrunk. The registry keeps its catalogue in memory and reads the store only at
        // start, so a small cache (the B-trees' interior pages) is enough: leaf pages come
        // from the kernel's page cache when a write needs them. Every page written goes
        // into the cache until it is full, so its size is what every node holds.
        let db = match redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked {
                    path: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(db(e)),
        };
        check_schema(&db, &path)?;
        let blobs = dir.join(BLOB_DIR);
        fs::create_dir_all(&blobs).map_err(io_at(&blobs))?;
        // We hold the database lock, so no other Store writes blobs here: every temp file
        // is a leftover.
        remove_stale_temps(&blobs)?;
        Ok(Store {
            dir: dir.to_path_buf(),
            blobs,
            db,
        })
    }

    /// Closes the store, releasing the data directory at once (as dropping it does).
    pub fn close(self) {
        drop(self);
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Size in bytes of the database file (`None` if it cannot be read).
    pub fn db_file_size(&self) -> Option<u64> {
        fs::metadata(self.dir.join(DB_FILE)).ok().map(|m| m.len())
    }

    /// Where the identity key lives: `<dir>/identity.key`.
    pub fn identity_path(&self) -> PathBuf {
        self.dir.join(IDENTITY_FILE)
    }

    /// The node's identity from `<dir>/identity.key`, created (mode 0600, atomically) on
    /// first use: a restarted node keeps its PeerId. Same file and format as the CLI's.
    pub fn load_or_create_identity(&self) -> Result<Keypair> {
        Ok(load_or_create_identity(&self.identity_path())?)
    }

    /// The schema version stored in `meta`.
    pub fn schema_version(&self) -> Result<u32> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(META).map_err(db)?;
        let v = t
            .get(SCHEMA_KEY)
            .map_err(db)?
            .ok_or_else(|| corrupt("meta", SCHEMA_KEY, "missing"))?;
        decode("meta", SCHEMA_KEY, v.value())
    }

    /// Applies every operation of `batch` in one durable transaction: when this returns
    /// `Ok`, all of it survives a crash; on `Err` (or a crash before return), none of it
    /// was written.
    pub fn apply(&self, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut records = txn.open_table(RECORDS).map_err(db)?;
            let mut owners = txn.open_table(OWNERS).map_err(db)?;
            let mut own = txn.open_table(OWN).map_err(db)?;
            let mut dht = txn.open_table(DHT_RECORDS).map_err(db)?;
            let mut providers = txn.open_table(PROVIDERS).map_err(db)?;
            for op in &batch.ops {
                match op {
                    Op::PutRecord(id, bytes) => {
                        records.insert(id.as_str(), bytes.as_slice()).map_err(db)?;
                    }
                    Op::RemoveRecord(id) => {
                        records.remove(id.as_str()).map_err(db)?;
                    }
                    Op::PutOwner(name, entry) => {
                        owners
                            .insert(name.as_str(), encode(entry).as_slice())
                            .map_err(db)?;
                    }
                    Op::ClaimOwner(name, entry) => {
                        let existing = match owners.get(name.as_str()).map_err(db)? {
                            Some(v) => Some(decode::<OwnerEntry>("owners", name, v.value())?),
                            None => None,
                        };
                        match existing {
                            Some(e) if e.owner != entry.owner => {
                                // Dropping `txn` uncommitted aborts the whole batch.
                                return Err(StoreError::NameOwned {
                                    name: name.clone(),
                                    owner: e.owner,
                                });
                            }
                            Some(_) => {}
                            None => {
                                owners
                                    .insert(name.as_str(), encode(entry).as_slice())
                                    .map_err(db)?;
                            }
                        }
                    }
                    Op::RemoveOwner(name) => {
                        owners.remove(name.as_str()).map_err(db)?;
                    }
                    Op::MarkOwn(id) => {
                        own.insert(id.as_str(), ()).map_err(db)?;
                    }
                    Op::UnmarkOwn(id) => {
                        own.remove(id.as_str()).map_err(db)?;
                    }
                    Op::PutDhtRecord(key, entry) => {
                        dht.insert(key.as_slice(), encode(entry).as_slice())
                            .map_err(db)?;
                    }
                    Op::RemoveDhtRecord(key) => {
                        dht.remove(key.as_slice()).map_err(db)?;
                    }
                    Op::AddProvider(key, entry) => {
                        let mut list = match providers.get(key.as_slice()).map_err(db)? {
                            Some(v) => {
                                decode::<Vec<ProviderEntry>>("providers", &hex(key), v.value())?
                            }
                            None => Vec::new(),
                        };
                        list.retain(|p| p.peer != entry.peer);
                        list.push(entry.clone());
                        providers
                            .insert(key.as_slice(), encode(&list).as_slice())
                            .map_err(db)?;
                    }
                    Op::RemoveProvider(key, peer) => {
                        let list = match providers.get(key.as_slice()).map_err(db)? {
                            Some(v) => {
                                decode::<Vec<ProviderEntry>>("providers", &hex(key), v.value())?
                            }
                            None => continue,
                        };
                        let list: Vec<_> = list.into_iter().filter(|p| p.peer != *peer).collect();
                        if list.is_empty() {
                            providers.remove(key.as_slice()).map_err(db)?;
                        } else {
                            providers
                                .insert(key.as_slice(), encode(&list).as_slice())
                                .map_err(db)?;
                        }
                    }
                }
            }
        }
        txn.commit().map_err(db)
    }

    fn apply_one(&self, op: Op) -> Result<()> {
        self.apply(&Batch { ops: vec![op] })
    }

    // ---- records (the catalogue) ----

    /// Stores (or replaces) the signed record of package `id`.
    pub fn put_record(&self, id: &str, bytes: &[u8]) -> Result<()> {
        self.apply_one(Op::PutRecord(id.to_string(), bytes.to_vec()))
    }

    /// The signed record of package `id`.
    pub fn get_record(&self, id: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(RECORDS).map_err(db)?;
        Ok(t.get(id).map_err(db)?.map(|v| v.value().to_vec()))
    }

    /// Removes the record of package `id`; whether there was one.
    pub fn remove_record(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db)?;
        let existed = txn
            .open_table(RECORDS)
            .map_err(db)?
            .remove(id)
            .map_err(db)?
            .is_some();
        txn.commit().map_err(db)?;
        Ok(existed)
    }

    /// Every stored record, `(id, bytes)`, in id order.
    pub fn records(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(RECORDS).map_err(db)?;
        t.iter()
            .map_err(db)?
            .map(|r| {
                let (k, v) = r.map_err(db)?;
                Ok((k.value().to_string(), v.value().to_vec()))
            })
            .collect()
    }

    /// Number of stored records.
    pub fn record_count(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(RECORDS).map_err(db)?;
        t.len().map_err(db)
    }

    // ---- owners ----

    /// Sets the owner of `name`, replacing any other (use [`Batch::claim_owner`] for
    /// first-claim-wins).
    pub fn put_owner(&self, name: &str, entry: &OwnerEntry) -> Result<()> {
        self.apply_one(Op::PutOwner(name.to_string(), entry.clone()))
    }

    /// The owner of `name`.
    pub fn get_owner(&self, name: &str) -> Result<Option<OwnerEntry>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(OWNERS).map_err(db)?;
        match t.get(name).map_err(db)? {
            Some(v) => Ok(Some(decode("owners", name, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every owned name, `(name, entry)`, in name order.
    pub fn owners(&self) -> Result<Vec<(String, OwnerEntry)>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(OWNERS).map_err(db)?;
        t.iter()
            .map_err(db)?
            .map(|r| {
                let (k, v) = r.map_err(db)?;
                let name = k.value().to_string();
                let entry = decode("owners", &name, v.value())?;
                Ok((name, entry))
            })
            .collect()
    }

    // ---- own ----

    /// Marks package `id` as published by this node.
    pub fn mark_own(&self, id: &str) -> Result<()> {
        self.apply_one(Op::MarkOwn(id.to_string()))
    }

    /// Whether this node published package `id`.
    pub fn is_own(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(OWN).map_err(db)?;
        Ok(t.get(id).map_err(db)?.is_some())
    }

    /// The ids this node published, in id order.
    pub fn own_ids(&self) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(OWN).map_err(db)?;
        t.iter()
            .map_err(db)?
            .map(|r| Ok(r.map_err(db)?.0.value().to_string()))
            .collect()
    }

    // ---- DHT records ----

    /// Stores (or replaces) the DHT record under `key`.
    pub fn put_dht_record(&self, key: &[u8], entry: &DhtRecordEntry) -> Result<()> {
        self.apply_one(Op::PutDhtRecord(key.to_vec(), entry.clone()))
    }

    /// The DHT record under `key` (expired or not: see [`DhtRecordEntry::remaining`]).
    pub fn get_dht_record(&self, key: &[u8]) -> Result<Option<DhtRecordEntry>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DHT_RECORDS).map_err(db)?;
        match t.get(key).map_err(db)? {
            Some(v) => Ok(Some(decode("dht_records", &hex(key), v.value())?)),
            None => Ok(None),
        }
    }

    /// Removes the DHT record under `key`.
    pub fn remove_dht_record(&self, key: &[u8]) -> Result<()> {
        self.apply_one(Op::RemoveDhtRecord(key.to_vec()))
    }

    /// Every stored DHT record, `(key, entry)`, in key order.
    pub fn dht_records(&self) -> Result<Vec<(Vec<u8>, DhtRecordEntry)>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DHT_RECORDS).map_err(db)?;
        t.iter()
            .map_err(db)?
            .map(|r| {
                let (k, v) = r.map_err(db)?;
                let key = k.value().to_vec();
                let entry = decode("dht_records", &hex(&key), v.value())?;
                Ok((key, entry))
            })
            .collect()
    }

    // ---- providers ----

    /// Adds or refreshes `entry.peer` as a provider of `key`.
    pub fn add_provider(&self, key: &[u8], entry: &ProviderEntry) -> Result<()> {
        self.apply_one(Op::AddProvider(key.to_vec(), entry.clone()))
    }

    /// Removes `peer` as a provider of `key`.
    pub fn remove_provider(&self, key: &[u8], peer: &PeerId) -> Result<()> {
        self.apply_one(Op::RemoveProvider(key.to_vec(), *peer))
    }

    /// The providers of `key` (expired or not).
    pub fn providers(&self, key: &[u8]) -> Result<Vec<ProviderEntry>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(PROVIDERS).map_err(db)?;
        match t.get(key).map_err(db)? {
            Some(v) => decode("providers", &hex(key), v.value()),
            None => Ok(Vec::new()),
        }
    }

    /// Every provider list, `(key, providers)`, in key order.
    pub fn all_providers(&self) -> Result<Vec<(Vec<u8>, Vec<ProviderEntry>)>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(PROVIDERS).map_err(db)?;
        t.iter()
            .map_err(db)?
            .map(|r| {
                let (k, v) = r.map_err(db)?;
                let key = k.value().to_vec();
                let list = decode("providers", &hex(&key), v.value())?;
                Ok((key, list))
            })
            .collect()
    }

    /// Removes DHT records and provider entries expired at `now_ms`, in one transaction.
    /// Returns how many records and provider entries went.
    pub fn expire(&self, now_ms: u64) -> Result<(usize, usize)> {
        let txn = self.db.begin_write().map_err(db)?;
        let (mut gone_records, mut gone_providers) = (0, 0);
        {
            let mut dht = txn.open_table(DHT_RECORDS).map_err(db)?;
            let mut dead = Vec::new();
            for r in dht.iter().map_err(db)? {
                let (k, v) = r.map_err(db)?;
                let key = k.value().to_vec();
                let e: DhtRecordEntry = decode("dht_records", &hex(&key), v.value())?;
                if e.expires_at_ms <= now_ms {
                    dead.push(key);
                }
            }
            for key in dead {
                dht.remove(key.as_slice()).map_err(db)?;
                gone_records += 1;
            }
            let mut providers = txn.open_table(PROVIDERS).map_err(db)?;
            let mut changed = Vec::new();
            for r in providers.iter().map_err(db)? {
                let (k, v) = r.map_err(db)?;
                let key = k.value().to_vec();
                let list: Vec<ProviderEntry> = decode("providers", &hex(&key), v.value())?;
                let before = list.len();
                let live: Vec<_> = list
                    .into_iter()
                    .filter(|p| p.expires_at_ms > now_ms)
                    .collect();
                if live.len() != before {
                    gone_providers += before - live.len();
                    changed.push((key, live));
                }
            }
            for (key, live) in changed {
                if live.is_empty() {
                    providers.remove(key.as_slice()).map_err(db)?;
                } else {
                    providers
                        .insert(key.as_slice(), encode(&live).as_slice())
                        .map_err(db)?;
                }
            }
        }
        txn.commit().map_err(db)?;
        Ok((gone_records, gone_providers))
    }

    // ---- blobs ----

    /// Where the blob `hash` lives (or would): `<dir>/blobs/<hex[0..2]>/<hex>`.
    pub fn blob_path(&self, hash: &ContentHash) -> PathBuf {
        let h = hash.to_string();
        self.blobs.join(&h[..2]).join(h)
    }

    /// Whether the blob `hash` is stored.
    pub fn has_blob(&self, hash: &ContentHash) -> bool {
        self.blob_path(hash).is_file()
    }

    /// Stores `bytes` under `hash` atomically and durably, refusing bytes that do not hash
    /// to it. Storing a blob that is already there (with the right size) is a no-op; a
    /// damaged copy of another size is replaced. Returns the blob's path.
    pub fn put_blob(&self, hash: &ContentHash, bytes: &[u8]) -> Result<PathBuf> {
        let actual = ContentHash::of(bytes);
        if actual != *hash {
            return Err(StoreError::HashMismatch {
                expected: *hash,
                actual,
            });
        }
        let path = self.blob_path(hash);
        if blob_len(&path) == Some(bytes.len() as u64) {
            return Ok(path);
        }
        let shard = self.shard_dir(hash)?;
        let mut tmp = temp_in(&shard)?;
        tmp.write_all(bytes).map_err(io_at(tmp.path()))?;
        self.finish_blob(tmp, hash, &shard)
    }

    /// Copies the file at `path` into the blob store, streaming (never whole in memory), and
    /// returns its hash.
    pub fn import_blob_from_file(&self, path: &Path) -> Result<ContentHash> {
        let file = File::open(path).map_err(io_at(path))?;
        self.import_blob(file, None)
    }

    /// Streams `reader` into the blob store and returns the bytes' hash. With `expected`,
    /// bytes hashing to anything else are refused ([`StoreError::HashMismatch`]) and leave
    /// nothing behind.
    pub fn import_blob(
        &self,
        mut reader: impl Read,
        expected: Option<ContentHash>,
    ) -> Result<ContentHash> {
        let mut tmp = temp_in(&self.blobs)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_at(tmp.path())(e)),
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(io_at(tmp.path()))?;
        }
        let hash = ContentHash(hasher.finalize().into());
        let len = tmp.as_file().metadata().map_err(io_at(tmp.path()))?.len();
        if let Some(expected) = expected {
            if expected != hash {
                return Err(StoreError::HashMismatch {
                    expected,
                    actual: hash,
                });
            }
        }
        if blob_len(&self.blob_path(&hash)) == Some(len) {
            return Ok(hash);
        }
        let shard = self.shard_dir(&hash)?;
        self.finish_blob(tmp, &hash, &shard)?;
        Ok(hash)
    }

    /// The bytes of blob `hash`, checked against it; `None` if not stored.
    pub fn read_blob(&self, hash: &ContentHash) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(hash);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let actual = ContentHash::of(&bytes);
        if actual != *hash {
            return Err(StoreError::HashMismatch {
                expected: *hash,
                actual,
            });
        }
        Ok(Some(bytes))
    }

    /// Deletes blob `hash`; whether it was there.
    pub fn remove_blob(&self, hash: &ContentHash) -> Result<bool> {
        let path = self.blob_path(hash);
        match fs::remove_file(&path) {
            Ok(()) => {
                if let Some(parent) = path.parent() {
                    sync_dir(parent)?;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// The hashes of every stored blob (names that are not a hash are skipped).
    pub fn blobs(&self) -> Result<Vec<ContentHash>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.blobs).map_err(io_at(&self.blobs))? {
            let shard = shard.map_err(io_at(&self.blobs))?.path();
            if !shard.is_dir() {
                continue;
            }
            for f in fs::read_dir(&shard).map_err(io_at(&shard))? {
                let f = f.map_err(io_at(&shard))?;
                if let Some(h) = f.file_name().to_str().and_then(|n| n.parse().ok()) {
                    out.push(h);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn shard_dir(&self, hash: &ContentHash) -> Result<PathBuf> {
        let shard = self.blobs.join(&hash.to_string()[..2]);
        if !shard.is_dir() {
            fs::create_dir_all(&shard).map_err(io_at(&shard))?;
            sync_dir(&self.blobs)?;
        }
        Ok(shard)
    }

    fn finish_blob(
        &self,
        tmp: tempfile::NamedTempFile,
        hash: &ContentHash,
        shard: &Path,
    ) -> Result<PathBuf> {
        tmp.as_file().sync_all().map_err(io_at(tmp.path()))?;
        let path = self.blob_path(hash);
        tmp.persist(&path).map_err(|e| io_at(&path)(e.error))?;
        sync_dir(shard)?;
        Ok(path)
    }
}

fn check_schema(db: &Database, path: &Path) -> Result<()> {
    let txn = db.begin_write().map_err(self::db)?;
    let found = {
        let mut meta = txn.open_table(META).map_err(self::db)?;
        let found = match meta.get(SCHEMA_KEY).map_err(self::db)? {
            Some(v) => Some(decode::<u32>("meta", SCHEMA_KEY, v.value())?),
            None => None,
        };
        if found.is_none() {
            meta.insert(SCHEMA_KEY, encode(&SCHEMA_VERSION).as_slice())
                .map_err(self::db)?;
        }
        found
    };
    if let Some(found) = found {
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
    }
    // Create every table, so that readers never meet a missing one.
    txn.open_table(RECORDS).map_err(self::db)?;
    txn.open_table(OWNERS).map_err(self::db)?;
    txn.open_table(OWN).map_err(self::db)?;
    txn.open_table(DHT_RECORDS).map_err(self::db)?;
    txn.open_table(PROVIDERS).map_err(self::db)?;
    txn.commit().map_err(self::db)
}

fn remove_stale_temps(blobs: &Path) -> Result<()> {
    let is_tmp = |p: &fs::DirEntry| p.file_name().to_string_lossy().starts_with(TMP_PREFIX);
    let mut dirs = vec![blobs.to_path_buf()];
    for e in fs::read_dir(blobs).map_err(io_at(blobs))? {
        let e = e.map_err(io_at(blobs))?;
        if e.path().is_dir() {
            dirs.push(e.path());
        }
    }
    for d in dirs {
        for e in fs::read_dir(&d).map_err(io_at(&d))? {
            let e = e.map_err(io_at(&d))?;
            if is_tmp(&e) && e.path().is_file() {
                tracing::debug!(path = %e.path().display(), "removing stale blob temp file");
                fs::remove_file(e.path()).map_err(io_at(&e.path()))?;
            }
        }
    }
    Ok(())
}

fn blob_len(path: &Path) -> Option<u64> {
    fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

fn temp_in(dir: &Path) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_at(dir))
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_at(dir))?;
    let _ = dir;
    Ok(())
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("postcard encoding to a Vec cannot fail")
}

fn decode<T: for<'a> Deserialize<'a>>(table: &'static str, key: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(table, key, &e.to_string()))
}

fn corrupt(table: &'static str, key: &str, reason: &str) -> StoreError {
    StoreError::Corrupt {
        table,
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(peer: &str) -> OwnerEntry {
        OwnerEntry {
            owner: peer.to_string(),
            claim: b"first".to_vec(),
        }
    }

    fn provider(peer: PeerId, expires_at_ms: u64) -> ProviderEntry {
        ProviderEntry {
            peer,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            expires_at_ms,
        }
    }

    #[test]
    fn reopen_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let peer = PeerId::random();
        let blob = b"package content".to_vec();
        let hash = ContentHash::of(&blob);
        let id = {
            let s = Store::open(dir.path()).unwrap();
            let id = s.load_or_create_identity().unwrap().peer_id();
            let mut b = Batch::new();
            b.put_record("a@1.0.0", b"signed a")
                .claim_owner("a", owner("alice"))
                .mark_own("a@1.0.0")
                .add_provider(b"a@1.0.0", provider(peer, 5_000));
            s.apply(&b).unwrap();
            s.put_record("b@2.0.0", b"signed b").unwrap();
            s.put_dht_record(
                b"k",
                &DhtRecordEntry {
                    value: b"v".to_vec(),
                    publisher: Some(peer),
                    expires_at_ms: 9_000,
                    local: true,
                },
            )
            .unwrap();
            s.put_blob(&hash, &blob).unwrap();
            s.close();
            id
        };
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.load_or_create_identity().unwrap().peer_id(), id);
        assert_eq!(
            s.records().unwrap(),
            vec![
                ("a@1.0.0".to_string(), b"signed a".to_vec()),
                ("b@2.0.0".to_string(), b"signed b".to_vec()),
            ]
        );
        assert_eq!(s.record_count().unwrap(), 2);
        assert_eq!(s.get_owner("a").unwrap(), Some(owner("alice")));
        assert_eq!(s.own_ids().unwrap(), vec!["a@1.0.0".to_string()]);
        assert!(s.is_own("a@1.0.0").unwrap() && !s.is_own("b@2.0.0").unwrap());
        assert_eq!(
            s.providers(b"a@1.0.0").unwrap(),
            vec![provider(peer, 5_000)]
        );
        let rec = s.get_dht_record(b"k").unwrap().unwrap();
        assert_eq!(rec.publisher, Some(peer));
        assert_eq!(rec.to_record(b"k", 4_000).unwrap().ttl_secs, 5);
        assert!(rec.to_record(b"k", 9_000).is_none());
        assert_eq!(s.read_blob(&hash).unwrap(), Some(blob));
        assert_eq!(s.blobs().unwrap(), vec![hash]);
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn second_open_is_locked_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let e = Store::open(dir.path()).unwrap_err();
        assert!(matches!(e, StoreError::Locked { .. }), "{e:?}");
        assert!(e.to_string().contains("in use"), "{e}");
        drop(first);
        let second = Store::open(dir.path()).unwrap();
        second.close();
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path()).unwrap();
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_KEY, encode(&(SCHEMA_VERSION + 1)).as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open(dir.path()).unwrap_err();
        assert!(
            matches!(e, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{e:?}"
        );
        assert!(e.to_string().contains("upgrade"), "{e}");
    }

    #[test]
    fn blob_hash_mismatch_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let wrong = ContentHash::of(b"other");
        let e = s.put_blob(&wrong, b"data").unwrap_err();
        assert!(matches!(e, StoreError::HashMismatch { .. }), "{e:?}");
        assert!(!s.has_blob(&wrong) && !s.has_blob(&ContentHash::of(b"data")));
        let e = s.import_blob(&b"data"[..], Some(wrong)).unwrap_err();
        assert!(matches!(e, StoreError::HashMismatch { .. }), "{e:?}");
        assert!(s.blobs().unwrap().is_empty());
        // No temp file left behind either.
        let mut left = Vec::new();
        for e in walk(&dir.path().join(BLOB_DIR)) {
            left.push(e);
        }
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn blobs_import_read_remove_and_detect_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let src = dir.path().join("src.bin");
        fs::write(&src, &data).unwrap();
        let h = s.import_blob_from_file(&src).unwrap();
        assert_eq!(h, ContentHash::of(&data));
        let path = s.blob_path(&h);
        let hex = h.to_string();
        assert!(path.ends_with(format!("{}/{hex}", &hex[..2])));
        assert_eq!(s.put_blob(&h, &data).unwrap(), path, "idempotent");
        assert_eq!(s.read_blob(&h).unwrap().unwrap(), data);
        fs::write(&path, b"bit rot").unwrap();
        assert!(matches!(
            s.read_blob(&h).unwrap_err(),
            StoreError::HashMismatch { .. }
        ));
        // Storing it again repairs a damaged copy.
        s.put_blob(&h, &data).unwrap();
        assert_eq!(s.read_blob(&h).unwrap().unwrap(), data);
        assert!(s.remove_blob(&h).unwrap());
        assert!(!s.remove_blob(&h).unwrap());
        assert_eq!(s.read_blob(&h).unwrap(), None);
    }

    #[test]
    fn open_removes_stale_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let blobs = dir.path().join(BLOB_DIR);
        fs::create_dir_all(blobs.join("ab")).unwrap();
        fs::write(blobs.join("ab").join(".tmp-x1"), b"partial").unwrap();
        fs::write(blobs.join(".tmp-x2"), b"partial").unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert!(walk(&blobs).is_empty(), "{:?}", walk(&blobs));
    }

    #[test]
    fn claim_owner_conflict_aborts_the_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let mut b = Batch::new();
        b.put_record("a@1.0.0", b"r")
            .claim_owner("a", owner("alice"));
        s.apply(&b).unwrap();
        // Same owner again: fine, the first claim is kept.
        let mut again = Batch::new();
        again.claim_owner(
            "a",
            OwnerEntry {
                owner: "alice".into(),
                claim: b"later".to_vec(),
            },
        );
        s.apply(&again).unwrap();
        assert_eq!(s.get_owner("a").unwrap().unwrap().claim, b"first");
        let mut b = Batch::new();
        b.put_record("a@2.0.0", b"r2")
            .mark_own("a@2.0.0")
            .claim_owner("a", owner("mallory"));
        let e = s.apply(&b).unwrap_err();
        assert!(
            matches!(&e, StoreError::NameOwned { owner, .. } if owner == "alice"),
            "{e:?}"
        );
        assert_eq!(s.get_record("a@2.0.0").unwrap(), None);
        assert!(!s.is_own("a@2.0.0").unwrap());
        assert!(s.remove_record("a@1.0.0").unwrap());
        assert!(!s.remove_record("a@1.0.0").unwrap());
    }

    #[test]
    fn providers_are_one_per_peer_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (p, q) = (PeerId::random(), PeerId::random());
        s.add_provider(b"k", &provider(p, 100)).unwrap();
        s.add_provider(b"k", &provider(p, 1_000)).unwrap();
        s.add_provider(b"k", &provider(q, 200)).unwrap();
        assert_eq!(s.providers(b"k").unwrap().len(), 2);
        s.put_dht_record(
            b"r",
            &DhtRecordEntry {
                value: vec![1],
                publisher: None,
                expires_at_ms: 150,
                local: false,
            },
        )
        .unwrap();
        assert_eq!(s.expire(500).unwrap(), (1, 1));
        assert_eq!(s.providers(b"k").unwrap(), vec![provider(p, 1_000)]);
        s.remove_provider(b"k", &p).unwrap();
        assert!(s.all_providers().unwrap().is_empty());
        assert!(s.dht_records().unwrap().is_empty());
    }

    #[test]
    fn identity_persists_in_the_cli_format_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let k = s.load_or_create_identity().unwrap();
        assert_eq!(s.load_or_create_identity().unwrap().peer_id(), k.peer_id());
        // The CLI's loader reads the same file.
        let cli = crate::identity::load_identity(&dir.path().join(IDENTITY_FILE)).unwrap();
        assert_eq!(cli.peer_id(), k.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(s.identity_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn store_is_shareable_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Store>();
    }

    #[test]
    fn instants_convert_to_wall_clock() {
        let now = Instant::now();
        let later = now + Duration::from_millis(1_500);
        assert_eq!(instant_to_unix_ms(later, now, 10_000), 11_500);
        assert_eq!(instant_to_unix_ms(now, later, 10_000), 8_500);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
