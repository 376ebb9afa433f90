/// Errors from decoding wire data. Every variant means "this peer sent something we will not
/// accept"; the connection that carried it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A length prefix announced more bytes than the configured limit allows.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Announced length.
        len: u64,
        /// Configured limit.
        max: u64,
    },
    /// The input ended before a complete item.
    #[error("truncated input: {0}")]
    Truncated(&'static str),
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What we were decoding.
        what: &'static str,
        /// What was wrong.
        reason: &'static str,
    },
}

impl WireError {
    pub(crate) fn malformed(what: &'static str, reason: &'static str) -> Self {
        WireError::Malformed { what, reason }
    }
}

impl From<WireError> for std::io::Error {
    fn from(e: WireError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}
