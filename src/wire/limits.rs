use serde::{Deserialize, Serialize};

/// Size limits applied to everything a peer sends.
///
/// Defaults: a 16 MiB message (room for an 8 MiB package archive chunk with headroom), 32 MiB
/// of partially received messages per connection, 16 messages in flight per direction on one
/// multiplexed stream connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Largest message (envelope included) accepted or sent, in bytes.
    pub max_message_size: usize,
    /// Bytes of partially received messages one connection may hold at once.
    pub max_reassembly_bytes: usize,
    /// Messages one connection may have partially received at once.
    pub max_partial_messages: usize,
    /// Largest Noise handshake message accepted (bytes).
    pub max_handshake_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 16 * 1024 * 1024,
            max_reassembly_bytes: 32 * 1024 * 1024,
            max_partial_messages: 64,
            max_handshake_message: 1024,
        }
    }
}
