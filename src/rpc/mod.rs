//! Request-response RPC and content transfer.
//!
//! Not built yet: this module is the home the RPC issue fills. It will own request tracking,
//! typed protocols and chunked, hash-verified content downloads.
