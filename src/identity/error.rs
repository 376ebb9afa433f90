use std::path::PathBuf;

/// Errors from parsing peer ids and keys, and from reading or writing identity files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The text is not a valid `PeerId`; the reason says which part is wrong.
    #[error("invalid peer id `{input}`: {reason}")]
    InvalidPeerId {
        /// The text that failed to parse (truncated to 100 characters).
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bytes that should hold an Ed25519 public key do not.
    #[error("invalid Ed25519 public key: {0}")]
    InvalidPublicKey(&'static str),
    /// The identity file exists but does not hold a valid key.
    #[error("identity file {path} is malformed: {reason}")]
    MalformedKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or writing the identity file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}
