//! The registry's typed error. Its messages match the seed's where the seed names one
//! ("Registry not running", "No providers found for package", "Connection timeout", "DHT
//! lookup timeout"); [`RegistryError::is_transient`] drives the seed's retry loop.

/// Results of registry calls.
pub type Result<T> = std::result::Result<T, RegistryError>;

/// Why a registry call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// Called before `start()` or after `stop()`.
    #[error("Registry not running")]
    NotRunning,
    /// `start()` on a running registry.
    #[error("Registry already running")]
    AlreadyRunning,
    /// Nobody is known to provide the package's content.
    #[error("No providers found for package")]
    NoProviders,
    /// A peer could not be reached in time.
    #[error("Connection timeout")]
    ConnectionTimeout,
    /// A DHT query ran out of time.
    #[error("DHT lookup timeout")]
    DhtTimeout,
    /// The configuration was refused (the reason says which field and why).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A package failed its checks (name, version, fields).
    #[error("invalid package: {0}")]
    InvalidPackage(String),
    /// A package record's signature does not verify.
    #[error("invalid signature on {id}: {reason}")]
    InvalidSignature {
        /// `name@version`.
        id: String,
        /// What failed.
        reason: String,
    },
    /// The name belongs to another key.
    #[error("package name {name} belongs to {owner}; {publisher} may not publish it")]
    NameOwned {
        /// The name.
        name: String,
        /// The owner's PeerId.
        owner: String,
        /// Who tried.
        publisher: String,
    },
    /// A name statement (maintainers, transfer) failed its checks or is not the owner's.
    #[error("invalid name statement: {0}")]
    InvalidStatement(String),
    /// A caller-supplied `created_at` is older than the allowed clock skew: the publishing
    /// node stamps the publication time itself and refuses back-dated packages.
    #[error(
        "{id} is dated {created_at}, more than {skew_secs} s before this node's clock; publish without setting created_at (the node stamps the publication time)"
    )]
    BackDated {
        /// `name@version`.
        id: String,
        /// The supplied `created_at` (RFC 3339).
        created_at: String,
        /// The allowed skew in seconds.
        skew_secs: i64,
    },
    /// The version exists already with other content or metadata.
    #[error("{id} is already published with different content; publish a new version")]
    VersionExists {
        /// `name@version`.
        id: String,
    },
    /// Downloaded content does not match the package's hash.
    #[error("content of {id} does not match its hash {expected}: {reason}")]
    ContentMismatch {
        /// `name@version`.
        id: String,
        /// The announced SHA-256.
        expected: String,
        /// Which provider, or what else.
        reason: String,
    },
    /// Providers of the content are known, but none delivered it (unreachable, busy, or
    /// without it); nobody sent bad data.
    #[error("no provider delivered the content of {id}: {reason}")]
    ContentUnavailable {
        /// `name@version`.
        id: String,
        /// What each provider did.
        reason: String,
    },
    /// The package has no content to fetch.
    #[error("{0} has no content")]
    NoContent(String),
    /// A network failure (the message says which).
    #[error("network error: {0}")]
    Network(String),
    /// The store failed (disk full, corruption detected).
    #[error("storage error: {0}")]
    Storage(String),
}

impl RegistryError {
    /// Whether retrying (after a pause) may succeed: timeouts, missing providers and
    /// network errors, not refusals.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            RegistryError::NoProviders
                | RegistryError::ContentUnavailable { .. }
                | RegistryError::ConnectionTimeout
                | RegistryError::DhtTimeout
                | RegistryError::Network(_)
        )
    }
}

/// The seed's free function for its retry loop: whether `e` is worth retrying.
pub fn is_transient(e: &RegistryError) -> bool {
    e.is_transient()
}
