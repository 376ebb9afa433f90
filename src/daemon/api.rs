//! The JSON shapes of the control API: what the server sends and the CLI prints with
//! `--format json`. Field names are stable; new fields may be added, none renamed.

use serde::{Deserialize, Serialize};

use crate::registry::{Package, PeerSummary, SignedPackage};

/// `GET /api/v0/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The node's identity.
    pub peer_id: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Addresses the node listens on, with its `/p2p/` suffix.
    pub listen_addresses: Vec<String>,
    /// Open connections.
    pub peers: usize,
    /// Package versions in the searchable catalogue.
    pub catalogue_size: usize,
    /// Package versions held.
    pub packages: usize,
    /// Bytes of the store on disk (0 without a data directory).
    pub store_bytes: u64,
    /// Content blobs this node serves.
    pub content_held: usize,
    /// The data directory.
    pub data_dir: Option<String>,
}

/// `GET /api/v0/peers` (a list) and `GET /api/v0/peers/{peer}`.
pub type Peer = PeerSummary;

/// `GET /api/v0/info/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Info {
    /// The package name.
    pub name: String,
    /// The owner's key.
    pub owner: String,
    /// Whether the owner's claim is settled on this node.
    pub settled: bool,
    /// Keys allowed to publish besides the owner.
    pub maintainers: Vec<String>,
    /// Every version held, lowest first.
    pub versions: Vec<VersionInfo>,
}

/// One version in [`Info`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// `name@version`.
    pub id: String,
    /// The version.
    pub version: String,
    /// The key that signed this version.
    pub publisher: String,
    /// SHA-256 of the content (hex), if it has content.
    pub content_hash: Option<String>,
    /// Content size in bytes.
    pub size: u64,
    /// Whether the publisher deprecated it.
    pub deprecated: bool,
    /// When it was published (RFC 3339).
    pub created_at: String,
    /// Peers known to serve its content.
    pub providers: Vec<String>,
    /// The package metadata.
    pub package: Package,
}

/// `POST /api/v0/publish` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// `name@version`.
    pub id: String,
    /// SHA-256 of the content (hex).
    pub content_hash: Option<String>,
    /// Content size in bytes.
    pub size: u64,
    /// The key that signed it (this daemon's).
    pub publisher: String,
}

/// `POST /api/v0/bootstrap` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapRequest {
    /// Addresses ending in `/p2p/<PeerId>`.
    pub addrs: Vec<String>,
}

/// `POST /api/v0/bootstrap` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapReply {
    /// Addresses added (and dialled).
    pub added: Vec<String>,
}

/// `POST /api/v0/deprecate` body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeprecateRequest {
    /// `name@version`.
    pub id: String,
}

/// `GET /api/v0/record/{id}`: the signed record, for a client to check the signature.
pub type Record = SignedPackage;

/// An error answer: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// One line saying what went wrong.
    pub error: String,
}
