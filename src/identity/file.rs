//! Persisting the node's identity: one file holding the protobuf-encoded private key,
//! written atomically with mode 0600.

use std::io::Write;
use std::path::Path;

use super::{IdentityError, Keypair};

/// Loads the keypair stored at `path`.
pub fn load_identity(path: &Path) -> Result<Keypair, IdentityError> {
    let bytes = std::fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.len() > 4096 {
        return Err(IdentityError::MalformedKeyFile {
            path: path.to_path_buf(),
            reason: "file is far larger than a key",
        });
    }
    warn_if_readable_by_others(path);
    Keypair::from_protobuf_encoding(&bytes).map_err(|reason| IdentityError::MalformedKeyFile {
        path: path.to_path_buf(),
        reason,
    })
}

/// Writes `keypair` to `path` atomically (temporary file in the same directory, fsync,
/// rename, fsync of the directory) with permissions 0600. Replaces an existing file.
pub fn save_identity(path: &Path, keypair: &Keypair) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = write_temp(path, keypair).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    sync_parent(path).map_err(io)
}

/// Loads the keypair at `path`, or creates, stores and returns a new one if the file does not
/// exist. If two processes race to create it, both end up with the one that landed first.
pub fn load_or_create_identity(path: &Path) -> Result<Keypair, IdentityError> {
    match std::fs::metadata(path) {
        Ok(_) => return load_identity(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(IdentityError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let keypair = Keypair::generate();
    let tmp = write_temp(path, &keypair).map_err(io)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {
            sync_parent(path).map_err(io)?;
            Ok(keypair)
        }
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => load_identity(path),
        Err(e) => Err(io(e.error)),
    }
}

fn write_temp(path: &Path, keypair: &Keypair) -> std::io::Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".identity-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(&keypair.to_protobuf_encoding())?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let _ = path;
    Ok(())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "identity file is readable by other users; chmod 600 it"
                );
            }
        }
    }
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_returns_the_same_identity_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("identity.key");
        let a = load_or_create_identity(&path).unwrap();
        let b = load_or_create_identity(&path).unwrap();
        assert_eq!(a.peer_id(), b.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[test]
    fn malformed_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"hello").unwrap();
        let e = load_or_create_identity(&path).unwrap_err().to_string();
        assert!(e.contains("malformed") && e.contains("identity.key"), "{e}");
        // Right header, mismatched public key.
        let mut bytes = Keypair::generate().to_protobuf_encoding();
        bytes[40] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = load_identity(&path).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
    }
}
