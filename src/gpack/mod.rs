//! Gpacks on disk: the `gpack.toml` manifest, the deterministic `.tar.gz` a package
//! directory is published as, and the safe extraction of such an archive on install.
//!
//! This module owns three things, used by `ggen p2p publish` and `ggen p2p install`:
//!
//! - [`manifest`]: [`Manifest`], parsed from `gpack.toml` and checked against the
//!   registry's own limits, so a publish that the network would refuse fails before
//!   anything is sent; [`Manifest::to_package`] turns it into a registry [`Package`].
//! - [`pack`]: [`pack_dir`], a directory to a byte-for-byte reproducible archive
//!   ([`Packed`]) whatever the files' times, owners, umask or creation order.
//! - [`unpack`][unpack-mod]: [`unpack()`], an archive from the network to a directory,
//!   refusing anything that could write outside it, bounded in size while streaming, and
//!   atomic (the target appears complete or not at all).
//!
//! Every failure is a [`GpackError`] whose message is one line naming the file, key or
//! archive entry at fault.
//!
//! [`manifest`]: mod@crate::gpack::manifest
//! [`Manifest`]: crate::gpack::Manifest
//! [`Manifest::to_package`]: crate::gpack::Manifest::to_package
//! [`Package`]: crate::registry::Package
//! [`pack`]: mod@crate::gpack::pack
//! [`pack_dir`]: crate::gpack::pack_dir
//! [`Packed`]: crate::gpack::Packed
//! [unpack-mod]: mod@crate::gpack::unpack
//! [`unpack()`]: fn@crate::gpack::unpack
//! [`GpackError`]: crate::gpack::GpackError

pub mod manifest;
pub mod pack;
pub mod unpack;

use std::io;
use std::path::PathBuf;

pub use manifest::{MANIFEST_FILE, Manifest};
pub use pack::{Packed, SKIPPED_NAMES, pack_dir};
pub use unpack::{UnpackLimits, UnpackReport, unpack};

/// Everything that can go wrong reading a manifest, packing or unpacking.
#[derive(Debug, thiserror::Error)]
pub enum GpackError {
    /// Reading or writing a file of the local filesystem failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// `gpack.toml` is not valid TOML, lacks a required field, or has a field of the wrong
    /// type or beyond the registry's limits.
    #[error("gpack.toml: {0}")]
    Manifest(String),
    /// `gpack.toml` has keys this format does not know (each named, dotted from the root).
    #[error("gpack.toml: unknown key{} {}", if keys.len() == 1 { "" } else { "s" }, keys.join(", "))]
    UnknownKeys {
        /// The unknown keys, e.g. `gpack.autor`.
        keys: Vec<String>,
    },
    /// The directory being packed holds a symbolic link (never packed, see [`pack`]).
    #[error("{}: symbolic links cannot be packed (it points to {})", path.display(), target.display())]
    Symlink {
        /// The link.
        path: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The directory being packed holds a fifo, socket or device.
    #[error("{}: a {kind} cannot be packed", path.display())]
    SpecialFile {
        /// The file.
        path: PathBuf,
        /// `fifo`, `socket`, `character device`, `block device` or `special file`.
        kind: &'static str,
    },
    /// A file in the directory being packed has a name an archive entry may not have
    /// (not UTF-8, a backslash, too long: the rules [`unpack()`] enforces).
    #[error("{}: {reason}", path.display())]
    BadName {
        /// The file.
        path: PathBuf,
        /// Why the name is refused.
        reason: String,
    },
    /// An archive entry is unsafe or unsupported: an absolute path, a `..` component, a
    /// link, a device, a duplicate, ...
    #[error("archive entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's path as found in the archive (lossily decoded).
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A size or count limit was reached (while packing: the limits an installer applies
    /// by default; while unpacking: the caller's [`UnpackLimits`]).
    #[error("archive entry {entry:?}: {what} over the limit of {limit}")]
    Limit {
        /// The entry being processed when the limit was reached.
        entry: String,
        /// What is over (e.g. `total unpacked bytes`).
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The archive is not a well-formed gzip-compressed tar stream.
    #[error("corrupt archive (after entry {after:?}): {reason}")]
    Corrupt {
        /// The last entry read successfully (empty at the start).
        after: String,
        /// What the decoder reported.
        reason: String,
    },
    /// Writing an archive entry into the temporary directory failed.
    #[error("archive entry {entry:?}: {source}")]
    Extract {
        /// The entry.
        entry: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The unpack target exists and is not an empty directory.
    #[error("{}: the install target must not exist or must be an empty directory", path.display())]
    TargetExists {
        /// The target.
        path: PathBuf,
    },
}

impl GpackError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        GpackError::Io {
            path: path.into(),
            source,
        }
    }
}
