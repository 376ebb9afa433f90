//! The registry's data types, as the seed names them: [`Package`] and its
//! [`PackageMetadata`], [`Query`], [`SearchResult`], [`PackageUpdate`] with [`UpdateType`],
//! and [`NetworkStats`]. Plain data: every type is `Clone`, `Debug`, `Serialize` and
//! `Deserialize`; timestamps are UTC (`chrono`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Optional package details beyond the catalogue fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PackageMetadata {
    /// The package's README, if it ships one.
    pub readme: Option<String>,
    /// Search keywords (weighted like tags).
    pub keywords: Vec<String>,
    /// People who maintain it.
    pub maintainers: Vec<String>,
    /// Optional features it offers.
    pub features: Vec<String>,
    /// Platforms it supports (free text, e.g. `linux-x86_64`).
    pub platforms: Vec<String>,
    /// Minimum Rust version, if any.
    pub rust_version: Option<String>,
}

/// A published package version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// `name@version`, set by [`Package::new`] and kept in step by the registry on publish.
    pub id: String,
    /// The name: lower-case letters, digits, `-`, `_` and `.`; owned by the key that first
    /// published it.
    pub name: String,
    /// A semantic version (`1.2.3`, `2.0.0-rc.1`).
    pub version: String,
    /// One-line description.
    pub description: String,
    /// Category (default `uncategorized`).
    pub category: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Author, free text.
    pub author: String,
    /// License (default `MIT`).
    pub license: String,
    /// Source repository URL.
    pub repository: Option<String>,
    /// Home page URL.
    pub homepage: Option<String>,
    /// Dependencies, as `name` or `name@requirement`.
    pub dependencies: Vec<String>,
    /// SHA-256 (lower-case hex) of the package's content, when it has any; filled by
    /// `publish_with_content`.
    pub content_hash: Option<String>,
    /// Content size in bytes (0 without content).
    pub size: u64,
    /// When this version was first created.
    pub created_at: DateTime<Utc>,
    /// When its metadata last changed.
    pub updated_at: DateTime<Utc>,
    /// Downloads seen by the network (a popularity signal for search).
    pub downloads: u64,
    /// Further details.
    pub metadata: PackageMetadata,
}

impl Package {
    /// A package with this name and version and every other field at its default
    /// (category `uncategorized`, license `MIT`, timestamps now).
    pub fn new(name: String, version: String) -> Self {
        let now = Utc::now();
        Self {
            id: format!("{name}@{version}"),
            name,
            version,
            description: String::new(),
            category: "uncategorized".to_string(),
            tags: Vec::new(),
            author: String::new(),
            license: "MIT".to_string(),
            repository: None,
            homepage: None,
            dependencies: Vec::new(),
            content_hash: None,
            size: 0,
            created_at: now,
            updated_at: now,
            downloads: 0,
            metadata: PackageMetadata::default(),
        }
    }

    /// `name@version` for this package's current name and version.
    pub fn canonical_id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A search: keywords (all optional) and filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Query {
    /// Words to look for in names, keywords, tags and descriptions. Empty: every package
    /// that passes the filters, most popular first.
    pub keywords: Vec<String>,
    /// Only packages of this category (case-insensitive).
    pub category: Option<String>,
    /// Only packages carrying every one of these tags (case-insensitive).
    pub tags: Vec<String>,
    /// At most this many results (default 20).
    pub limit: usize,
    /// Only packages with at least this many downloads.
    pub min_downloads: Option<u64>,
}

impl Default for Query {
    fn default() -> Self {
        Self {
            keywords: Vec::new(),
            category: None,
            tags: Vec::new(),
            limit: 20,
            min_downloads: None,
        }
    }
}

impl Query {
    /// A query for these keywords, with no filters and a limit of 20.
    pub fn new(keywords: Vec<String>) -> Self {
        Self {
            keywords,
            ..Self::default()
        }
    }

    /// Only this category.
    pub fn with_category(mut self, category: String) -> Self {
        self.category = Some(category);
        self
    }

    /// Only packages with all these tags.
    pub fn with_tags(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }

    /// At most `limit` results.
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Only packages downloaded at least `min` times.
    pub fn with_min_downloads(mut self, min: u64) -> Self {
        self.min_downloads = Some(min);
        self
    }
}

/// One search hit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The package (its latest version unless the query named one).
    pub package: Package,
    /// Relevance: higher is better; comparable within one result list.
    pub score: f64,
    /// Peers known to provide the package's content (0 for metadata-only packages).
    pub peer_count: usize,
}

/// What changed about a package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UpdateType {
    /// The first version of a new name.
    NewPackage,
    /// Another version of a known name.
    NewVersion,
    /// Changed metadata of a known version (content unchanged).
    MetadataUpdate,
    /// The publisher deprecated the version.
    Deprecated,
}

/// A change to a package, as delivered to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageUpdate {
    /// `name@version`.
    pub package_id: String,
    /// The version concerned.
    pub version: String,
    /// What changed.
    pub update_type: UpdateType,
    /// When the publisher made the change.
    pub timestamp: DateTime<Utc>,
}

/// A snapshot of the node's network and registry health: the seed's fields and its
/// monitoring list, measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    /// Peers with an open connection.
    pub connected_peers: usize,
    /// Peers known (routing table and connections).
    pub total_peers: usize,
    /// Package versions held locally (own and cached).
    pub cached_packages: usize,
    /// Provider records held (for our content and others').
    pub provider_records: usize,
    /// Gossip topics subscribed.
    pub gossip_topics: usize,
    /// Catalogue entries (package versions searchable locally).
    pub catalogue_size: usize,
    /// Records this node's DHT holds (for the network and its own), kept across restarts
    /// with a data directory.
    pub dht_records: usize,
    /// Provider announcements (key, provider pairs) this node's DHT holds, kept across
    /// restarts with a data directory.
    pub dht_provider_records: usize,
    /// Share of DHT queries that succeeded (1.0 before any).
    pub dht_query_success_rate: f64,
    /// Share of `get` calls answered from the local store.
    pub cache_hit_rate: f64,
    /// Share of gossip messages received that were delivered (not duplicates or rejects).
    pub gossip_delivery_rate: f64,
    /// Median request-response latency in milliseconds (0 before any request).
    pub request_latency_p50_ms: f64,
    /// 99th percentile request-response latency in milliseconds.
    pub request_latency_p99_ms: f64,
}
