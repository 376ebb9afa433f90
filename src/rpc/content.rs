//! Content transfer: blobs addressed by SHA-256, served in chunks over [`Rpc`] and fetched
//! from several providers at once.
//!
//! This module owns the content protocol (`/ggen/content`, version 1), the set of blobs this
//! node serves, and downloads: choosing a manifest, splitting chunks across providers,
//! bounding the requests in flight, verifying the blob, attributing bad bytes to the provider
//! that sent them (reported through [`Rpc::report_bad_content`], which
//! content routing reads back through [`Rpc::reputation`]), and resuming after a provider
//! disappears.
//!
//! # Protocol
//!
//! Two requests (postcard-encoded [`ContentRequest`]):
//!
//! * `Info { hash }` is answered with an [`InfoResponse`]: `NotFound`, or the blob's size,
//!   the provider's chunk size and the SHA-256 of every chunk (the *manifest*).
//! * `Range { hash, offset, len }` is answered with exactly `len` raw bytes (no framing: the
//!   requester knows what it asked for). `len` is at most the provider's chunk size.
//!
//! # Verification and attribution
//!
//! The address is the SHA-256 of the whole blob. The downloader computes it incrementally, in
//! chunk order, while chunks arrive (see `WholeHash`), so on success the cost is one SHA-256
//! pass over the blob, overlapped with the transfer, and nothing else.
//!
//! The whole-blob hash says nothing about a single chunk; the manifest (a SHA-256 per chunk)
//! closes that gap, but only when something went wrong. The downloader records which provider
//! sent each chunk. If the whole-blob hash does not match the address, every stored chunk is
//! checked against the manifest (a second pass, on the failure path only):
//!
//! * Chunks that do not match name the providers that sent them: those are reported, dropped,
//!   and only those chunks are fetched again from the others. Refetched chunks are checked
//!   against the manifest on arrival, and the whole-blob hash is resumed from the first
//!   refetched chunk (the hasher's state at each chunk boundary is kept), not from the start.
//! * If every chunk matches, the manifest itself is wrong: every provider that announced it is
//!   reported and named, and the next distinct manifest (from other providers) is tried.
//!
//! A provider that has sent bad content before (a non-zero `bad_content` in its
//! [`Rpc::reputation`]) is on probation: each of its chunks is checked on arrival, so it is
//! caught, reported and dropped at its first bad chunk, as are chunks of the wrong length from
//! anyone. Nothing is returned, and no file is renamed into place, before the whole-blob hash
//! matched.
//!
//! # Memory and flow control
//!
//! The downloader keeps at most [`ContentConfig::window`] range requests in flight per
//! provider, so at most `providers × window × chunk size` bytes are in transit. Chunks are
//! written into their final place as they arrive: one preallocated buffer of the blob's size
//! ([`ContentService::fetch_content`]) or a temporary file next to the destination
//! ([`ContentService::fetch_content_to_file`]); the blob is never held twice. Besides that,
//! the whole-blob hash keeps chunks that arrived ahead of its cursor (references to the
//! responses, not copies) until it reaches them: at most `providers × window` chunks, the
//! same bound as the bytes in transit; past that bound a chunk is read back from the buffer or
//! file instead.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};

use super::config::ProtocolLimits;
use super::driver::{HandlerError, HandlerFuture, RawHandler, Rpc};
use super::error::RpcError;
use super::message::ProtocolName;
use crate::identity::PeerId;
use crate::metrics::Metrics;

/// The content protocol's name.
pub const PROTOCOL_NAME: &str = "/ggen/content";
/// The content protocol's version.
pub const PROTOCOL_VERSION: u16 = 1;

/// Default chunk size: 256 KiB.
///
/// A chunk is one RPC response and so one node message. 256 KiB is four noise frames
/// (`MAX_FRAME_PLAINTEXT` ≈ 64 KiB) — small enough that a chunk never waits long behind other
/// traffic and that a window of requests stays a few MiB, far below the node's 16 MiB
/// message limit and [`MAX_RESPONSE`]; large enough that the per-request cost (a request
/// frame, a task, a write) is amortised over many bytes. (Measured over loopback: 512 KiB
/// and 1 MiB chunks fetch no faster.)
pub const DEFAULT_CHUNK_SIZE: u32 = 256 * 1024;
/// Smallest chunk size a provider may announce (keeps manifests and request counts sane).
pub const MIN_CHUNK_SIZE: u32 = 4 * 1024;
/// Largest chunk size a provider may announce: a range response must fit [`MAX_RESPONSE`].
pub const MAX_CHUNK_SIZE: u32 = 512 * 1024;
/// The protocol's response limit: 1 MiB, the RPC default, so that it also holds on nodes
/// that call the protocol without serving it. Chunks are at most half of it; a manifest
/// (32 bytes per chunk) of up to [`MAX_MANIFEST_CHUNKS`] entries fits.
pub const MAX_RESPONSE: usize = 1024 * 1024;
/// The protocol's request limit (requests are a hash and two integers).
pub const MAX_REQUEST: usize = 1024;
/// The most chunks a manifest may list (what fits in [`MAX_RESPONSE`] with headroom).
pub const MAX_MANIFEST_CHUNKS: u64 = ((MAX_RESPONSE - 1024) / 32) as u64;

/// The protocol's wire name.
pub fn protocol() -> ProtocolName {
    ProtocolName::new(PROTOCOL_NAME, PROTOCOL_VERSION)
}

/// The protocol's size limits.
pub fn limits() -> ProtocolLimits {
    ProtocolLimits {
        max_request: MAX_REQUEST,
        max_response: MAX_RESPONSE,
    }
}

/// The SHA-256 of a blob: its address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// The address of `data`.
    pub fn of(data: &[u8]) -> Self {
        ContentHash(Sha256::digest(data).into())
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({self})")
    }
}

/// A string that is not 64 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a content hash is 64 hex digits")]
pub struct ParseContentHashError;

impl FromStr for ContentHash {
    type Err = ParseContentHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.as_bytes();
        if s.len() != 64 {
            return Err(ParseContentHashError);
        }
        let digit = |c: u8| -> Result<u8, ParseContentHashError> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(ParseContentHashError),
            }
        };
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
            if let [hi, lo] = pair {
                *o = (digit(*hi)? << 4) | digit(*lo)?;
            }
        }
        Ok(ContentHash(out))
    }
}

impl Serialize for ContentHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ContentHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(ContentHash)
        }
    }
}

/// A request of the content protocol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContentRequest {
    /// The size and manifest of a blob.
    Info {
        /// The blob.
        hash: ContentHash,
    },
    /// `len` bytes of the blob from `offset`; answered with exactly those raw bytes.
    Range {
        /// The blob.
        hash: ContentHash,
        /// First byte.
        offset: u64,
        /// How many bytes (at most the provider's chunk size).
        len: u32,
    },
}

/// The answer to [`ContentRequest::Info`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InfoResponse {
    /// The provider does not serve the blob.
    NotFound,
    /// The provider serves it.
    Found(Manifest),
}

/// A blob's size and the SHA-256 of each of its chunks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Manifest {
    /// The blob's size in bytes.
    pub size: u64,
    /// Chunk size: every chunk but the last has exactly this many bytes.
    pub chunk_size: u32,
    /// SHA-256 of each chunk, in order.
    pub chunk_hashes: Vec<[u8; 32]>,
}

impl Manifest {
    /// Computes the manifest of `data` for chunks of `chunk_size` bytes.
    pub fn of(data: &[u8], chunk_size: u32) -> Manifest {
        let step = (chunk_size as usize).max(1);
        Manifest {
            size: data.len() as u64,
            chunk_size,
            chunk_hashes: data
                .chunks(step)
                .map(|c| Sha256::digest(c).into())
                .collect(),
        }
    }

    /// The number of chunks a blob of `size` bytes has with chunks of `chunk_size`.
    pub fn chunk_count(size: u64, chunk_size: u32) -> u64 {
        size.div_ceil(u64::from(chunk_size.max(1)))
    }

    /// Checks a peer's manifest against the protocol's and our limits.
    fn validate(&self, max_size: u64) -> Result<(), ManifestProblem> {
        if self.size > max_size {
            return Err(ManifestProblem::TooLarge(self.size));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(ManifestProblem::Invalid(format!(
                "chunk size {} outside {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}",
                self.chunk_size
            )));
        }
        let n = Self::chunk_count(self.size, self.chunk_size);
        if n > MAX_MANIFEST_CHUNKS || n != self.chunk_hashes.len() as u64 {
            return Err(ManifestProblem::Invalid(format!(
                "{} chunk hashes for {} bytes in chunks of {}",
                self.chunk_hashes.len(),
                self.size,
                self.chunk_size
            )));
        }
        Ok(())
    }

    /// Offset and length of chunk `i` (None past the end).
    fn chunk(&self, i: usize) -> Option<(u64, u32)> {
        let offset = (i as u64).checked_mul(u64::from(self.chunk_size))?;
        if offset >= self.size {
            return None;
        }
        let len = (self.size - offset).min(u64::from(self.chunk_size));
        Some((offset, u32::try_from(len).ok()?))
    }
}

enum ManifestProblem {
    TooLarge(u64),
    Invalid(String),
}

/// Where served content comes from.
#[derive(Clone, Debug)]
pub enum ContentSource {
    /// Bytes in memory (ranges are zero-copy slices of them).
    Bytes(Bytes),
    /// A file, hashed once when serving starts and read range by range on demand. The file
    /// must not change while it is served: a changed file serves chunks that fail the
    /// downloader's check (and costs this node its reputation there).
    File(PathBuf),
}

/// Progress of a download: bytes stored so far, of the blob's size. `total` is 0 until a
/// provider's manifest is known. The bytes are verified as a whole at the end (see the module
/// docs). `done` only grows, except when the end check finds bad chunks (they are taken off
/// and fetched again) or a whole manifest turns out wrong and the download restarts from the
/// next one (then it goes back to 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes stored.
    pub done: u64,
    /// The blob's size.
    pub total: u64,
}

/// Configuration of the content service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContentConfig {
    /// Range requests in flight per provider (default 8; at least 1). With 256 KiB chunks and
    /// 3 providers that is at most 6 MiB in transit.
    pub window: usize,
    /// Chunk size we serve with (default [`DEFAULT_CHUNK_SIZE`]; within
    /// [`MIN_CHUNK_SIZE`]..=[`MAX_CHUNK_SIZE`]).
    pub chunk_size: u32,
    /// Largest blob we download (default 4 GiB); larger announced sizes fail with
    /// [`ContentError::TooLarge`].
    pub max_content_size: u64,
    /// Timeout of one range request (default 30 s); a provider that misses it is dropped.
    #[serde(with = "crate::node::duration_secs")]
    pub request_timeout: Duration,
    /// Timeout of an info request (default 10 s).
    #[serde(with = "crate::node::duration_secs")]
    pub info_timeout: Duration,
    /// How many `Busy` / rate-limited answers in a row a provider may give before it is
    /// dropped (default 8).
    pub max_busy: u32,
}

impl Default for ContentConfig {
    fn default() -> Self {
        Self {
            window: 8,
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_content_size: 4 * 1024 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            info_timeout: Duration::from_secs(10),
            max_busy: 8,
        }
    }
}

impl ContentConfig {
    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 {
            return Err("window must be at least 1".into());
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(format!(
                "chunk_size must be within {MIN_CHUNK_SIZE}..={MAX_CHUNK_SIZE}"
            ));
        }
        if Manifest::chunk_count(self.max_content_size, self.chunk_size) > MAX_MANIFEST_CHUNKS {
            return Err(format!(
                "max_content_size needs more than {MAX_MANIFEST_CHUNKS} chunks of chunk_size"
            ));
        }
        if self.request_timeout.is_zero() || self.info_timeout.is_zero() {
            return Err("timeouts must be above zero".into());
        }
        Ok(())
    }
}

/// Why content could not be served or fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContentError {
    /// No provider has the content (or none was given).
    #[error("no provider has {0}")]
    NotFound(ContentHash),
    /// The assembled blob did not hash to its address; `provider` announced the manifest it
    /// was assembled by (and has been reported).
    #[error("content from {provider} does not match its hash")]
    HashMismatch {
        /// The provider whose manifest (and bytes) were wrong.
        provider: PeerId,
    },
    /// Every provider was dropped; why, for each.
    #[error("every provider failed: {}", format_reasons(.reasons))]
    AllProvidersFailed {
        /// Each provider and why it was dropped.
        reasons: Vec<ProviderFailure>,
    },
    /// The content is larger than the configured maximum.
    #[error("content of {size} bytes is above the limit of {max}")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// Bytes offered for serving do not hash to the address they are served under.
    #[error("source hashes to {actual}, not {expected}")]
    SourceMismatch {
        /// The address it was to be served under.
        expected: ContentHash,
        /// What it hashes to.
        actual: ContentHash,
    },
    /// A local file error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The RPC service failed locally (e.g. it has stopped).
    #[error("rpc: {0}")]
    Rpc(#[from] RpcError),
    /// A bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
}

fn format_reasons(r: &[ProviderFailure]) -> String {
    r.iter()
        .map(|f| format!("{}: {}", f.peer, f.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one provider was dropped from a download.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderFailure {
    /// The provider.
    pub peer: PeerId,
    /// What went wrong, for people.
    pub reason: String,
    /// It sent data that contradicts the content address (bad chunks, a wrong or invalid
    /// manifest), as opposed to being unreachable, busy or without the content.
    pub bad_content: bool,
}

impl ProviderFailure {
    fn failed(peer: PeerId, reason: impl Into<String>) -> Self {
        Self {
            peer,
            reason: reason.into(),
            bad_content: false,
        }
    }

    fn lied(peer: PeerId, reason: impl Into<String>) -> Self {
        Self {
            peer,
            reason: reason.into(),
            bad_content: true,
        }
    }
}

impl ContentError {
    /// Whether some provider sent data that contradicts the content address (the content
    /// was tampered with somewhere), rather than every provider being unreachable or
    /// without it.
    pub fn is_bad_content(&self) -> bool {
        match self {
            ContentError::HashMismatch { .. } => true,
            ContentError::AllProvidersFailed { reasons } => reasons.iter().any(|f| f.bad_content),
            _ => false,
        }
    }
}

/// Counters of one content service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContentMetrics {
    /// Range requests we answered.
    pub chunks_served: u64,
    /// Bytes we served in range responses.
    pub bytes_served: u64,
    /// Range requests we sent while downloading.
    pub ranges_requested: u64,
    /// Bytes those range requests asked for.
    pub bytes_requested: u64,
    /// Chunk bytes stored (chunks later found not to match the manifest are taken off again).
    pub bytes_accepted: u64,
    /// Chunks that failed verification against the manifest (or had the wrong length).
    pub bad_chunks: u64,
    /// Providers dropped during downloads (errors, timeouts, bad content).
    pub providers_dropped: u64,
    /// Downloads that completed.
    pub fetches_ok: u64,
    /// Downloads that failed.
    pub fetches_failed: u64,
}

#[derive(Default)]
struct Counters {
    chunks_served: AtomicU64,
    bytes_served: AtomicU64,
    ranges_requested: AtomicU64,
    bytes_requested: AtomicU64,
    bytes_accepted: AtomicU64,
    bad_chunks: AtomicU64,
    providers_dropped: AtomicU64,
    fetches_ok: AtomicU64,
    fetches_failed: AtomicU64,
    /// The node's Prometheus instruments for the same events.
    prometheus: Option<Metrics>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One served blob.
struct Served {
    source: ContentSource,
    size: u64,
    chunk_size: u32,
    /// The encoded `InfoResponse::Found`, computed once.
    info: Bytes,
}

struct Inner {
    rpc: Rpc,
    config: ContentConfig,
    served: DashMap<ContentHash, Arc<Served>>,
    counters: Counters,
}

/// A cheap, cloneable handle to a node's content service: it serves blobs and downloads them.
#[derive(Clone)]
pub struct ContentService {
    inner: Arc<Inner>,
}

impl fmt::Debug for ContentService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentService")
            .field("serving", &self.inner.served.len())
            .finish_non_exhaustive()
    }
}

impl ContentService {
    /// Starts the content service on `rpc` (registers the content protocol).
    pub async fn spawn(rpc: &Rpc, config: ContentConfig) -> Result<ContentService, ContentError> {
        config.validate().map_err(ContentError::Config)?;
        let inner = Arc::new(Inner {
            rpc: rpc.clone(),
            config,
            served: DashMap::new(),
            counters: Counters {
                prometheus: Some(rpc.node().prometheus().clone()),
                ..Counters::default()
            },
        });
        // The handler holds a weak reference: the RPC driver keeps handlers alive, and the
        // service must not keep its own RPC service alive through them.
        let weak = Arc::downgrade(&inner);
        let handler: RawHandler = Arc::new(move |peer, bytes| -> HandlerFuture {
            let weak = weak.clone();
            Box::pin(async move { handle(weak, peer, bytes).await })
        });
        if !rpc.register_raw(protocol(), limits(), handler).await? {
            return Err(ContentError::Config(format!(
                "{} is already served on this node",
                protocol()
            )));
        }
        Ok(ContentService { inner })
    }

    /// The RPC service underneath.
    pub fn rpc(&self) -> &Rpc {
        &self.inner.rpc
    }

    /// Counters.
    pub fn metrics(&self) -> ContentMetrics {
        let c = &self.inner.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ContentMetrics {
            chunks_served: g(&c.chunks_served),
            bytes_served: g(&c.bytes_served),
            ranges_requested: g(&c.ranges_requested),
            bytes_requested: g(&c.bytes_requested),
            bytes_accepted: g(&c.bytes_accepted),
            bad_chunks: g(&c.bad_chunks),
            providers_dropped: g(&c.providers_dropped),
            fetches_ok: g(&c.fetches_ok),
            fetches_failed: g(&c.fetches_failed),
        }
    }

    /// Whether `hash` is served here.
    pub fn is_serving(&self, hash: &ContentHash) -> bool {
        self.inner.served.contains_key(hash)
    }

    /// Serves `source` under `hash` from now on. The source is hashed once (on a blocking
    /// thread) and must hash to `hash`; its manifest is computed at the same time.
    pub async fn serve_content(
        &self,
        hash: ContentHash,
        source: ContentSource,
    ) -> Result<(), ContentError> {
        let chunk_size = self.inner.config.chunk_size;
        let src = source.clone();
        let (actual, manifest) = tokio::task::spawn_blocking(move || match &src {
            ContentSource::Bytes(b) => Ok((ContentHash::of(b), Manifest::of(b, chunk_size))),
            ContentSource::File(p) => hash_file(p, chunk_size),
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        if actual != hash {
            return Err(ContentError::SourceMismatch {
                expected: hash,
                actual,
            });
        }
        let info = postcard::to_stdvec(&InfoResponse::Found(manifest.clone()))
            .map(Bytes::from)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        if info.len() > MAX_RESPONSE {
            return Err(ContentError::TooLarge {
                size: manifest.size,
                max: MAX_MANIFEST_CHUNKS * u64::from(chunk_size),
            });
        }
        self.inner.served.insert(
            hash,
            Arc::new(Served {
                source,
                size: manifest.size,
                chunk_size,
                info,
            }),
        );
        Ok(())
    }

    /// Stops serving `hash`. Returns whether it was served.
    pub fn stop_serving(&self, hash: &ContentHash) -> bool {
        self.inner.served.remove(hash).is_some()
    }

    /// Downloads `hash` from `providers` (several at once when more than one has it) into one
    /// buffer of the blob's size, verifies it (one SHA-256 pass, as the chunks arrive), and
    /// returns it. `progress`, if given, is
    /// updated (with `send_replace`, so it works with or without receivers) after every
    /// stored chunk.
    pub async fn fetch_content(
        &self,
        hash: ContentHash,
        providers: &[PeerId],
        progress: Option<&watch::Sender<Progress>>,
    ) -> Result<Bytes, ContentError> {
        let mut sink = Sink::Memory(Vec::new());
        let r = self.fetch_into(hash, providers, progress, &mut sink).await;
        self.count(&r);
        r?;
        match sink {
            Sink::Memory(v) => Ok(Bytes::from(v)),
            Sink::File(_) => Err(std::io::Error::other("unreachable sink").into()),
        }
    }

    /// Downloads `hash` into a temporary file next to `path`, verifies it, then renames it
    /// to `path` (atomically replacing what was there). Returns `path`. On failure the
    /// temporary file is removed and `path` is untouched.
    pub async fn fetch_content_to_file(
        &self,
        hash: ContentHash,
        providers: &[PeerId],
        path: impl AsRef<Path>,
        progress: Option<&watch::Sender<Progress>>,
    ) -> Result<PathBuf, ContentError> {
        let path = path.as_ref().to_path_buf();
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".ggen-content-")
            .suffix(".part")
            .tempfile_in(&dir)?;
        let mut sink = Sink::File(Arc::new(tmp.as_file().try_clone()?));
        let r = self.fetch_into(hash, providers, progress, &mut sink).await;
        self.count(&r);
        r?;
        drop(sink);
        let dest = path.clone();
        tokio::task::spawn_blocking(move || {
            tmp.as_file().sync_all()?;
            tmp.persist(&dest).map_err(|e| e.error)
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        Ok(path)
    }

    fn count<T>(&self, r: &Result<T, ContentError>) {
        let c = &self.inner.counters;
        add(
            if r.is_ok() {
                &c.fetches_ok
            } else {
                &c.fetches_failed
            },
            1,
        );
        if let Some(m) = &c.prometheus {
            let m = m.content();
            if r.is_ok() {
                &m.fetches_ok
            } else {
                &m.fetches_failed
            }
            .inc();
        }
    }

    async fn fetch_into(
        &self,
        hash: ContentHash,
        providers: &[PeerId],
        progress: Option<&watch::Sender<Progress>>,
        sink: &mut Sink,
    ) -> Result<(), ContentError> {
        let rpc = &self.inner.rpc;
        let config = &self.inner.config;
        let me = rpc.node().local_peer_id();
        let mut ranked: Vec<PeerId> = Vec::new();
        for p in providers {
            if *p != me && !ranked.contains(p) {
                ranked.push(*p);
            }
        }
        if ranked.is_empty() {
            return Err(ContentError::NotFound(hash));
        }
        // Best reputation first (a stable sort keeps the caller's order among equals).
        // Providers that have sent bad content before are on probation: their chunks are
        // checked against the manifest on arrival.
        let mut scored = Vec::with_capacity(ranked.len());
        let mut suspects = Vec::new();
        for p in ranked {
            let rep = rpc.reputation(p).await?;
            if rep.bad_content > 0 {
                suspects.push(p);
            }
            scored.push((rep.score(), p));
        }
        scored.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
        let ranked: Vec<PeerId> = scored.into_iter().map(|(_, p)| p).collect();

        // Ask everyone for the manifest at once.
        let mut infos = JoinSet::new();
        for (rank, p) in ranked.iter().enumerate() {
            let (rpc, p, timeout) = (rpc.clone(), *p, config.info_timeout);
            let req = encode(&ContentRequest::Info { hash });
            infos.spawn(async move {
                let r = rpc.request_raw(p, protocol(), req, Some(timeout)).await;
                (rank, p, r)
            });
        }
        let mut reasons: Vec<ProviderFailure> = Vec::new();
        let mut not_found = 0usize;
        let mut too_large = None;
        // Distinct manifests with the providers that announced each, by rank.
        let mut groups: Vec<(Manifest, Vec<(usize, PeerId)>)> = Vec::new();
        while let Some(j) = infos.join_next().await {
            let Ok((rank, p, r)) = j else { continue };
            let bytes = match r {
                Ok(b) => b,
                Err(e) => {
                    reasons.push(ProviderFailure::failed(
                        p,
                        format!("info request failed: {e}"),
                    ));
                    continue;
                }
            };
            let info: InfoResponse =
                match crate::wire::decode_bounded(&bytes, MAX_RESPONSE, "content info") {
                    Ok(i) => i,
                    Err(e) => {
                        reasons.push(ProviderFailure::lied(p, format!("undecodable info: {e}")));
                        continue;
                    }
                };
            let manifest = match info {
                InfoResponse::NotFound => {
                    not_found += 1;
                    reasons.push(ProviderFailure::failed(p, "does not have the content"));
                    continue;
                }
                InfoResponse::Found(m) => m,
            };
            match manifest.validate(config.max_content_size) {
                Ok(()) => {}
                Err(ManifestProblem::TooLarge(size)) => {
                    too_large = Some(size);
                    reasons.push(ProviderFailure::failed(
                        p,
                        format!("announced {size} bytes, above our limit"),
                    ));
                    continue;
                }
                Err(ManifestProblem::Invalid(why)) => {
                    rpc.report_bad_content(p);
                    reasons.push(ProviderFailure::lied(p, format!("invalid manifest: {why}")));
                    continue;
                }
            }
            match groups.iter_mut().find(|(m, _)| *m == manifest) {
                Some((_, members)) => members.push((rank, p)),
                None => groups.push((manifest, vec![(rank, p)])),
            }
        }
        if groups.is_empty() {
            if not_found == ranked.len() {
                return Err(ContentError::NotFound(hash));
            }
            if let Some(size) = too_large {
                return Err(ContentError::TooLarge {
                    size,
                    max: config.max_content_size,
                });
            }
            return Err(ContentError::AllProvidersFailed { reasons });
        }
        // The manifest most providers agree on first, then the best-ranked one.
        for (_, members) in &mut groups {
            members.sort();
        }
        groups.sort_by_key(|(_, m)| {
            (
                std::cmp::Reverse(m.len()),
                m.first().map_or(usize::MAX, |x| x.0),
            )
        });
        let attempts = groups.len();
        let mut mismatch = None;
        'manifests: for (manifest, members) in groups {
            let members: Vec<PeerId> = members.into_iter().map(|(_, p)| p).collect();
            if let Some(tx) = progress {
                tx.send_replace(Progress {
                    done: 0,
                    total: manifest.size,
                });
            }
            sink.prepare(manifest.size).await?;
            let mut dl = Download::new(self, hash, &manifest, &members, &suspects, progress);
            let mut pending: VecDeque<usize> = (0..manifest.chunk_hashes.len()).collect();
            loop {
                if !dl.run(sink, pending, &mut reasons).await? {
                    continue 'manifests;
                }
                if dl.whole.finish(sink, &dl.done, &manifest).await? == Some(hash) {
                    return Ok(());
                }
                // The whole-blob hash failed: only now is each chunk checked against the
                // manifest, to find out whether bytes or the manifest were wrong.
                let bad = sink.bad_chunks(&manifest).await?;
                if bad.is_empty() {
                    break;
                }
                pending = dl.reject(&bad, &mut reasons);
            }
            // Every chunk matched the manifest, so the manifest is what was wrong: whoever
            // announced it is at fault.
            for p in &members {
                rpc.report_bad_content(*p);
                reasons.push(ProviderFailure::lied(
                    *p,
                    "its manifest does not hash to the content address",
                ));
            }
            mismatch = members.first().copied();
        }
        match mismatch {
            Some(provider) if attempts == 1 => Err(ContentError::HashMismatch { provider }),
            _ => Err(ContentError::AllProvidersFailed { reasons }),
        }
    }
}

/// A provider of one download.
struct Provider {
    peer: PeerId,
    inflight: usize,
    busy: u32,
    alive: bool,
    /// Check each of its chunks against the manifest on arrival: it has sent bad content
    /// before, or the download is repairing chunks that failed.
    check: bool,
}

/// One manifest's download: which chunks are stored and who sent each, the providers'
/// state, and the whole-blob hash so far. It survives repair rounds (see [`Download::reject`]).
struct Download<'a> {
    rpc: &'a Rpc,
    config: &'a ContentConfig,
    counters: &'a Counters,
    hash: ContentHash,
    manifest: &'a Manifest,
    progress: Option<&'a watch::Sender<Progress>>,
    provs: Vec<Provider>,
    /// Chunks stored in the sink.
    done: Vec<bool>,
    /// Index (in `provs`) of the provider that sent each stored chunk.
    served_by: Vec<usize>,
    done_count: usize,
    done_bytes: u64,
    whole: WholeHash,
}

impl<'a> Download<'a> {
    fn new(
        svc: &'a ContentService,
        hash: ContentHash,
        manifest: &'a Manifest,
        members: &[PeerId],
        suspects: &[PeerId],
        progress: Option<&'a watch::Sender<Progress>>,
    ) -> Self {
        let n = manifest.chunk_hashes.len();
        let config = &svc.inner.config;
        Download {
            rpc: &svc.inner.rpc,
            config,
            counters: &svc.inner.counters,
            hash,
            manifest,
            progress,
            provs: members
                .iter()
                .map(|p| Provider {
                    peer: *p,
                    inflight: 0,
                    busy: 0,
                    alive: true,
                    check: suspects.contains(p),
                })
                .collect(),
            done: vec![false; n],
            served_by: vec![usize::MAX; n],
            done_count: 0,
            done_bytes: 0,
            whole: WholeHash::new(members.len().saturating_mul(config.window)),
        }
    }

    fn report_progress(&self) {
        if let Some(tx) = self.progress {
            tx.send_replace(Progress {
                done: self.done_bytes,
                total: self.manifest.size,
            });
        }
    }

    /// Drops provider `i`: its chunks in flight go back to the front of the queue.
    fn drop_provider(
        &mut self,
        i: usize,
        why: ProviderFailure,
        assigned: &mut HashMap<usize, (usize, AbortHandle)>,
        pending: &mut VecDeque<usize>,
        reasons: &mut Vec<ProviderFailure>,
    ) {
        let Some(p) = self.provs.get_mut(i) else {
            return;
        };
        if !p.alive {
            return;
        }
        p.alive = false;
        add(&self.counters.providers_dropped, 1);
        reasons.push(why);
        let mine: Vec<usize> = assigned
            .iter()
            .filter(|(_, (owner, _))| *owner == i)
            .map(|(c, _)| *c)
            .collect();
        for c in mine {
            if let Some((_, h)) = assigned.remove(&c) {
                h.abort();
            }
            pending.push_front(c);
        }
    }

    /// Fetches the chunks in `pending` from the live providers into `sink`, feeding the
    /// whole-blob hash as they arrive. Returns false (with a reason per provider in
    /// `reasons`) when every provider was dropped first.
    async fn run(
        &mut self,
        sink: &mut Sink,
        mut pending: VecDeque<usize>,
        reasons: &mut Vec<ProviderFailure>,
    ) -> Result<bool, ContentError> {
        let (rpc, config, counters, manifest, hash) = (
            self.rpc,
            self.config,
            self.counters,
            self.manifest,
            self.hash,
        );
        let n = manifest.chunk_hashes.len();
        // Who is fetching each chunk right now.
        let mut assigned: HashMap<usize, (usize, AbortHandle)> = HashMap::new();
        let mut set: JoinSet<(usize, usize, Result<Bytes, RpcError>)> = JoinSet::new();
        loop {
            // Fill every live provider's window, best-ranked first.
            for (i, p) in self.provs.iter_mut().enumerate() {
                while p.alive && p.inflight < config.window {
                    let Some(c) = pending.pop_front() else { break };
                    if self.done.get(c).copied().unwrap_or(true) || assigned.contains_key(&c) {
                        continue;
                    }
                    let Some((offset, len)) = manifest.chunk(c) else {
                        continue;
                    };
                    let req = encode(&ContentRequest::Range { hash, offset, len });
                    let (rpc, peer, timeout) = (rpc.clone(), p.peer, config.request_timeout);
                    let h = set.spawn(async move {
                        let r = rpc
                            .request_raw_with_limits(peer, protocol(), req, Some(timeout), limits())
                            .await;
                        (i, c, r)
                    });
                    assigned.insert(c, (i, h));
                    p.inflight += 1;
                    add(&counters.ranges_requested, 1);
                    add(&counters.bytes_requested, u64::from(len));
                }
            }
            if self.done_count == n {
                return Ok(true);
            }
            if !self.provs.iter().any(|p| p.alive) {
                return Ok(false);
            }
            let Some(joined) = set.join_next().await else {
                // Nothing in flight, chunks left and a live provider: cannot happen, since
                // the loop above hands out work; stop rather than spin.
                return Ok(false);
            };
            let Ok((i, c, result)) = joined else {
                continue; // aborted: its provider was dropped and the chunk requeued
            };
            let Some(p) = self.provs.get_mut(i) else {
                continue;
            };
            p.inflight = p.inflight.saturating_sub(1);
            if !p.alive || assigned.get(&c).map(|(o, _)| *o) != Some(i) {
                continue;
            }
            assigned.remove(&c);
            match result {
                Ok(bytes) => {
                    let (Some((offset, len)), Some(expected)) =
                        (manifest.chunk(c), manifest.chunk_hashes.get(c))
                    else {
                        continue;
                    };
                    // The length is always checked; the bytes only for providers on
                    // probation (the whole-blob hash covers everyone else).
                    let good = bytes.len() == len as usize
                        && (!p.check || <[u8; 32]>::from(Sha256::digest(&bytes)) == *expected);
                    if !good {
                        add(&counters.bad_chunks, 1);
                        rpc.report_bad_content(p.peer);
                        pending.push_front(c);
                        let peer = p.peer;
                        self.drop_provider(
                            i,
                            ProviderFailure::lied(
                                peer,
                                format!("bad content: chunk {c} does not match the manifest"),
                            ),
                            &mut assigned,
                            &mut pending,
                            reasons,
                        );
                        continue;
                    }
                    p.busy = 0;
                    sink.write(offset, bytes.clone()).await?;
                    if let (Some(d), Some(s)) = (self.done.get_mut(c), self.served_by.get_mut(c)) {
                        *d = true;
                        *s = i;
                    }
                    self.done_count += 1;
                    self.done_bytes += u64::from(len);
                    add(&counters.bytes_accepted, u64::from(len));
                    if let Some(m) = &counters.prometheus {
                        m.content().fetched_bytes.inc_by(u64::from(len));
                    }
                    self.report_progress();
                    self.whole
                        .arrived(c, bytes, sink, &self.done, manifest)
                        .await?;
                }
                Err(e) => {
                    pending.push_front(c);
                    let busy = matches!(
                        e,
                        RpcError::Busy(_) | RpcError::RateLimited(_) | RpcError::LocalLimit { .. }
                    );
                    if busy && p.busy < config.max_busy {
                        p.busy += 1;
                        continue;
                    }
                    let peer = p.peer;
                    self.drop_provider(
                        i,
                        ProviderFailure::failed(peer, format!("range request failed: {e}")),
                        &mut assigned,
                        &mut pending,
                        reasons,
                    );
                }
            }
        }
    }

    /// After the whole-blob hash failed: `bad` chunks (ascending) did not match the
    /// manifest. Reports and drops the providers that sent them, forgets the chunks, rewinds
    /// the whole-blob hash to the first of them, puts every remaining provider on probation,
    /// and returns the chunks to fetch again.
    fn reject(&mut self, bad: &[usize], reasons: &mut Vec<ProviderFailure>) -> VecDeque<usize> {
        let mut culprits: Vec<(usize, usize)> = Vec::new();
        for &c in bad {
            let Some(owner) = self.served_by.get(c).copied() else {
                continue;
            };
            match culprits.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, k)) => *k += 1,
                None => culprits.push((owner, 1)),
            }
            if let Some(d) = self.done.get_mut(c)
                && std::mem::replace(d, false)
            {
                let len = self.manifest.chunk(c).map_or(0, |(_, l)| u64::from(l));
                self.done_count -= 1;
                self.done_bytes -= len;
                self.counters
                    .bytes_accepted
                    .fetch_sub(len, Ordering::Relaxed);
            }
        }
        add(&self.counters.bad_chunks, bad.len() as u64);
        for (owner, k) in culprits {
            let Some(p) = self.provs.get_mut(owner) else {
                continue;
            };
            self.rpc.report_bad_content(p.peer);
            if p.alive {
                p.alive = false;
                add(&self.counters.providers_dropped, 1);
                reasons.push(ProviderFailure::lied(
                    p.peer,
                    format!("bad content: {k} chunks do not match the manifest"),
                ));
            }
        }
        for p in &mut self.provs {
            p.check = true;
        }
        if let Some(&first) = bad.first() {
            self.whole.rewind(first);
        }
        self.report_progress();
        bad.iter().copied().collect()
    }
}

/// The whole-blob SHA-256, computed in chunk order while chunks arrive in any order.
///
/// A cursor names the first chunk not yet hashed. A chunk that arrives at the cursor is
/// hashed at once (it is still in cache), and the cursor then moves over every chunk already
/// stored behind it. A chunk that arrives ahead of the cursor keeps its `Bytes` (a reference
/// to the response, no copy) in `held` until the cursor reaches it. Chunks are handed out in
/// order and at most `providers × window` are in flight, so normally everything ahead of the
/// cursor is within one round of windows; `held` is capped at that many chunks (`cap`), so a
/// provider stalling on the cursor's chunk cannot make it grow further: chunks beyond the cap
/// are read back from the sink when the cursor reaches them.
///
/// The hasher's state before each chunk is kept (about a hundred bytes per chunk), so that
/// after a repair the hash resumes from the first refetched chunk instead of the start.
struct WholeHash {
    hasher: Sha256,
    next: usize,
    held: HashMap<usize, Bytes>,
    cap: usize,
    /// `checkpoints[i]`: the hasher's state before chunk `i`.
    checkpoints: Vec<Sha256>,
}

impl WholeHash {
    fn new(cap: usize) -> Self {
        WholeHash {
            hasher: Sha256::new(),
            next: 0,
            held: HashMap::new(),
            cap: cap.max(1),
            checkpoints: Vec::new(),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.checkpoints.push(self.hasher.clone());
        self.hasher.update(data);
        self.next += 1;
    }

    /// Chunk `c` (now stored in `sink`, `done[c]` set) arrived with `data`.
    async fn arrived(
        &mut self,
        c: usize,
        data: Bytes,
        sink: &mut Sink,
        done: &[bool],
        manifest: &Manifest,
    ) -> Result<(), ContentError> {
        if c == self.next {
            self.update(&data);
            self.advance(sink, done, manifest).await?;
        } else if c > self.next && self.held.len() < self.cap {
            self.held.insert(c, data);
        }
        Ok(())
    }

    /// Moves the cursor over every stored chunk at it.
    async fn advance(
        &mut self,
        sink: &mut Sink,
        done: &[bool],
        manifest: &Manifest,
    ) -> Result<(), ContentError> {
        while done.get(self.next).copied().unwrap_or(false) {
            match self.held.remove(&self.next) {
                Some(data) => self.update(&data),
                None => {
                    let Some((offset, len)) = manifest.chunk(self.next) else {
                        break;
                    };
                    self.checkpoints.push(self.hasher.clone());
                    sink.hash_range(&mut self.hasher, offset, len).await?;
                    self.next += 1;
                }
            }
        }
        Ok(())
    }

    /// The whole-blob hash, once every chunk is stored (None before).
    async fn finish(
        &mut self,
        sink: &mut Sink,
        done: &[bool],
        manifest: &Manifest,
    ) -> Result<Option<ContentHash>, ContentError> {
        self.advance(sink, done, manifest).await?;
        Ok((self.next == done.len()).then(|| ContentHash(self.hasher.clone().finalize().into())))
    }

    /// Forgets everything from chunk `c` on: the hash resumes there.
    fn rewind(&mut self, c: usize) {
        if c < self.next
            && let Some(state) = self.checkpoints.get(c)
        {
            self.hasher = state.clone();
            self.next = c;
            self.checkpoints.truncate(c);
        }
        self.held.clear();
    }
}

fn encode<T: Serialize>(v: &T) -> Bytes {
    // Our own small enums always encode; an empty payload would be answered Malformed.
    postcard::to_stdvec(v).map(Bytes::from).unwrap_or_default()
}

/// Answers one request of the content protocol.
async fn handle(inner: Weak<Inner>, _peer: PeerId, bytes: Bytes) -> Result<Bytes, HandlerError> {
    let Some(inner) = inner.upgrade() else {
        return Err(HandlerError::Failed("content service stopped".into()));
    };
    let req: ContentRequest = crate::wire::decode_bounded(&bytes, MAX_REQUEST, "content request")
        .map_err(|e| HandlerError::Malformed(e.to_string()))?;
    match req {
        ContentRequest::Info { hash } => Ok(match inner.served.get(&hash) {
            Some(s) => s.info.clone(),
            None => encode(&InfoResponse::NotFound),
        }),
        ContentRequest::Range { hash, offset, len } => {
            let served = inner
                .served
                .get(&hash)
                .map(|s| s.clone())
                .ok_or_else(|| HandlerError::Failed(format!("not serving {hash}")))?;
            let end = offset.checked_add(u64::from(len));
            if len == 0 || len > served.chunk_size || end.is_none_or(|e| e > served.size) {
                return Err(HandlerError::Failed(format!(
                    "range {offset}+{len} outside {} bytes (chunks of {})",
                    served.size, served.chunk_size
                )));
            }
            let data = read_range(&served.source, offset, len)
                .await
                .map_err(|e| HandlerError::Failed(format!("cannot read {hash}: {e}")))?;
            add(&inner.counters.chunks_served, 1);
            add(&inner.counters.bytes_served, u64::from(len));
            if let Some(m) = &inner.counters.prometheus {
                m.content().served_bytes.inc_by(u64::from(len));
            }
            Ok(data)
        }
    }
}

async fn read_range(source: &ContentSource, offset: u64, len: u32) -> std::io::Result<Bytes> {
    let bad = || std::io::Error::other("range outside the source");
    match source {
        ContentSource::Bytes(b) => {
            let start = usize::try_from(offset).map_err(|_| bad())?;
            let end = start.checked_add(len as usize).ok_or_else(bad)?;
            if end > b.len() {
                return Err(bad());
            }
            Ok(b.slice(start..end))
        }
        ContentSource::File(path) => {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                let mut f = std::fs::File::open(path)?;
                f.seek(SeekFrom::Start(offset))?;
                let mut buf = vec![0u8; len as usize];
                f.read_exact(&mut buf)?;
                Ok(Bytes::from(buf))
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
        }
    }
}

/// Hashes a file and computes its manifest in one pass.
fn hash_file(path: &Path, chunk_size: u32) -> std::io::Result<(ContentHash, Manifest)> {
    let mut f = std::fs::File::open(path)?;
    let mut whole = Sha256::new();
    let mut chunk_hashes = Vec::new();
    let mut buf = vec![0u8; chunk_size as usize];
    let mut size = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(buf.get_mut(filled..).unwrap_or_default())? {
                0 => break,
                k => filled += k,
            }
        }
        if filled == 0 {
            break;
        }
        let chunk = buf.get(..filled).unwrap_or_default();
        whole.update(chunk);
        chunk_hashes.push(Sha256::digest(chunk).into());
        size += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    Ok((
        ContentHash(whole.finalize().into()),
        Manifest {
            size,
            chunk_size,
            chunk_hashes,
        },
    ))
}

/// Where a download's chunks go.
enum Sink {
    /// One buffer of the blob's size.
    Memory(Vec<u8>),
    /// A temporary file of the blob's size.
    File(Arc<std::fs::File>),
}

impl Sink {
    /// Makes room for `size` bytes (zeroed).
    async fn prepare(&mut self, size: u64) -> Result<(), ContentError> {
        match self {
            Sink::Memory(v) => {
                let size = usize::try_from(size).map_err(|_| ContentError::TooLarge {
                    size,
                    max: usize::MAX as u64,
                })?;
                *v = Vec::new();
                *v = vec![0u8; size];
            }
            Sink::File(f) => {
                let f = f.clone();
                blocking(move || f.set_len(0).and_then(|()| f.set_len(size))).await?;
            }
        }
        Ok(())
    }

    /// Stores a verified chunk at `offset`.
    async fn write(&mut self, offset: u64, data: Bytes) -> Result<(), ContentError> {
        match self {
            Sink::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let dst = start
                    .checked_add(data.len())
                    .and_then(|end| v.get_mut(start..end))
                    .ok_or_else(|| std::io::Error::other("chunk outside the buffer"))?;
                dst.copy_from_slice(&data);
            }
            Sink::File(f) => {
                let f = f.clone();
                blocking(move || {
                    let mut w: &std::fs::File = &f;
                    w.seek(SeekFrom::Start(offset))?;
                    w.write_all(&data)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Feeds the stored bytes `offset..offset + len` to `hasher` (read back from the file on
    /// a blocking thread). Used for chunks the whole-blob hash did not keep in memory.
    async fn hash_range(
        &mut self,
        hasher: &mut Sha256,
        offset: u64,
        len: u32,
    ) -> Result<(), ContentError> {
        match self {
            Sink::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let src = start
                    .checked_add(len as usize)
                    .and_then(|end| v.get(start..end))
                    .ok_or_else(|| std::io::Error::other("chunk outside the buffer"))?;
                hasher.update(src);
            }
            Sink::File(f) => {
                let f = f.clone();
                let mut h = std::mem::take(hasher);
                *hasher = blocking(move || {
                    let mut buf = vec![0u8; len as usize];
                    read_at(&f, offset, &mut buf)?;
                    h.update(&buf);
                    Ok(h)
                })
                .await?;
            }
        }
        Ok(())
    }

    /// The chunks whose stored bytes do not match `manifest`, ascending (on a blocking
    /// thread). A second full pass: only run when the whole-blob hash failed.
    async fn bad_chunks(&mut self, manifest: &Manifest) -> Result<Vec<usize>, ContentError> {
        let m = manifest.clone();
        let check = move |i: usize, data: &[u8]| {
            m.chunk_hashes
                .get(i)
                .is_none_or(|h| <[u8; 32]>::from(Sha256::digest(data)) != *h)
        };
        let step = (manifest.chunk_size as usize).max(1);
        match self {
            Sink::Memory(v) => {
                let buf = std::mem::take(v);
                let (buf, bad) = blocking(move || {
                    let bad = buf
                        .chunks(step)
                        .enumerate()
                        .filter(|(i, c)| check(*i, c))
                        .map(|(i, _)| i)
                        .collect();
                    Ok((buf, bad))
                })
                .await?;
                *v = buf;
                Ok(bad)
            }
            Sink::File(f) => {
                let f = f.clone();
                let size = manifest.size;
                Ok(blocking(move || {
                    let mut bad = Vec::new();
                    let mut buf = vec![0u8; step];
                    let (mut i, mut offset) = (0usize, 0u64);
                    while offset < size {
                        let len = (size - offset).min(step as u64) as usize;
                        let chunk = buf.get_mut(..len).unwrap_or_default();
                        read_at(&f, offset, chunk)?;
                        if check(i, chunk) {
                            bad.push(i);
                        }
                        i += 1;
                        offset += len as u64;
                    }
                    Ok(bad)
                })
                .await?)
            }
        }
    }
}

/// Reads exactly `buf.len()` bytes of `f` from `offset`.
fn read_at(f: &std::fs::File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    let mut r: &std::fs::File = f;
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(buf)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_text_round_trips() {
        let h = ContentHash::of(b"hello");
        let s = h.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<ContentHash>(), Ok(h));
        assert!("xyz".parse::<ContentHash>().is_err());
        assert!(format!("{s}0").parse::<ContentHash>().is_err());
        let j = serde_json::to_string(&h).unwrap();
        assert_eq!(j, format!("\"{s}\""));
        assert_eq!(serde_json::from_str::<ContentHash>(&j).unwrap(), h);
        let p = postcard::to_stdvec(&h).unwrap();
        assert_eq!(p.len(), 32);
        assert_eq!(postcard::from_bytes::<ContentHash>(&p).unwrap(), h);
    }

    #[test]
    fn manifests_are_checked() {
        let data = vec![7u8; 10_000];
        let m = Manifest::of(&data, MIN_CHUNK_SIZE);
        assert_eq!(m.chunk_hashes.len(), 3);
        assert!(m.validate(1 << 20).is_ok());
        assert_eq!(m.chunk(2), Some((8192, 10_000 - 8192)));
        assert_eq!(m.chunk(3), None);
        assert!(matches!(m.validate(100), Err(ManifestProblem::TooLarge(_))));
        let mut short = m.clone();
        short.chunk_hashes.pop();
        assert!(matches!(
            short.validate(1 << 20),
            Err(ManifestProblem::Invalid(_))
        ));
        let mut tiny = m.clone();
        tiny.chunk_size = 1;
        assert!(matches!(
            tiny.validate(1 << 20),
            Err(ManifestProblem::Invalid(_))
        ));
        let mut huge = m;
        huge.size = u64::MAX;
        huge.chunk_size = MAX_CHUNK_SIZE;
        assert!(huge.validate(u64::MAX).is_err());
    }

    #[test]
    fn default_config_is_valid() {
        ContentConfig::default().validate().unwrap();
        let c = ContentConfig {
            window: 0,
            ..ContentConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
