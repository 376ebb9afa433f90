//! A package directory to a deterministic `.tar.gz`.
//!
//! [`pack_dir`] gives the same bytes, hence the same SHA-256 (the content hash the
//! registry publishes), for the same tree whatever the files' times, owners, umask,
//! creation order or the host:
//!
//! - entries sorted by relative path, compared as bytes, with `/` separators; directories
//!   are entries too (`dir/`), and come before their content;
//! - GNU tar headers with mtime 0, uid and gid 0, empty user and group names, and mode
//!   0o755 for directories and for files with any execute bit, else 0o644; names too long
//!   for the header use the GNU long-name record;
//! - gzip with no mtime, no file name, OS byte "unknown" and a fixed compression level
//!   ([`COMPRESSION_LEVEL`]).
//!
//! Refused, naming the file: symbolic links (all of them, wherever they point: a link
//! inside the tree would still have to be recreated on install, and [`unpack()`] refuses
//! every link, so the rule is simply "no links"), fifos, sockets and devices, names that
//! are not UTF-8 or hold a backslash, and trees beyond [`UnpackLimits::default`] (paths,
//! entry count, total size) so nothing is published that a default install would refuse.
//!
//! Skipped: entries named in [`SKIPPED_NAMES`] (version-control metadata), at any depth.
//! Nothing else is skipped.
//!
//! [`unpack()`]: super::unpack()

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::GpackError;
use super::unpack::{UnpackLimits, relative_components};

/// Names never packed, at any depth: version-control metadata (`.git` is a directory,
/// or a file in worktrees and submodules).
pub const SKIPPED_NAMES: [&str; 1] = [".git"];

/// The gzip level archives are compressed at (part of the byte-for-byte format).
pub const COMPRESSION_LEVEL: u32 = 6;

/// A packed directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packed {
    /// The `.tar.gz` archive.
    pub bytes: Vec<u8>,
    /// SHA-256 of `bytes`.
    pub sha256: [u8; 32],
    /// Regular files in the archive.
    pub files: usize,
    /// Total bytes of file content.
    pub unpacked_size: u64,
}

impl Packed {
    /// [`Packed::sha256`] in lower-case hex: the registry's `content_hash` of this archive.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// One thing to pack.
struct Item {
    /// Relative path with `/` separators (no trailing `/`).
    rel: String,
    /// Where it is on disk.
    path: PathBuf,
    /// `None` for a directory, else the file's size and whether it is executable.
    file: Option<(u64, bool)>,
}

/// Packs the directory `dir` (its content, not the directory itself) into a deterministic
/// `.tar.gz` (see the [module documentation](self) for the rules).
pub fn pack_dir(dir: &Path) -> Result<Packed, GpackError> {
    let meta = fs::metadata(dir).map_err(|e| GpackError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(GpackError::io(
            dir,
            io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
        ));
    }
    let limits = UnpackLimits::default();
    let mut items = Vec::new();
    walk(dir, "", &limits, &mut items)?;
    items.sort_by(|a, b| a.rel.as_bytes().cmp(b.rel.as_bytes()));

    let gz = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::new(COMPRESSION_LEVEL));
    let mut builder = tar::Builder::new(gz);
    let mut files = 0usize;
    let mut unpacked_size = 0u64;
    for item in &items {
        let mut header = Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let io_err = |e| GpackError::io(&item.path, e);
        header.set_username("").map_err(io_err)?;
        header.set_groupname("").map_err(io_err)?;
        match item.file {
            None => {
                header.set_entry_type(EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, format!("{}/", item.rel), io::empty())
                    .map_err(io_err)?;
            }
            Some((size, exec)) => {
                unpacked_size = unpacked_size.saturating_add(size);
                if unpacked_size > limits.max_unpacked_bytes {
                    return Err(GpackError::Limit {
                        entry: item.rel.clone(),
                        what: "total unpacked bytes",
                        limit: limits.max_unpacked_bytes,
                    });
                }
                header.set_entry_type(EntryType::Regular);
                header.set_mode(if exec { 0o755 } else { 0o644 });
                header.set_size(size);
                let file = fs::File::open(&item.path).map_err(io_err)?;
                let data = Exact {
                    inner: file.take(size),
                    left: size,
                };
                builder
                    .append_data(&mut header, &item.rel, data)
                    .map_err(io_err)?;
                files += 1;
            }
        }
    }
    let gz = builder.into_inner().map_err(|e| GpackError::io(dir, e))?;
    let bytes = gz.finish().map_err(|e| GpackError::io(dir, e))?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    Ok(Packed {
        bytes,
        sha256,
        files,
        unpacked_size,
    })
}

/// Collects the entries under `dir/rel`.
fn walk(
    root: &Path,
    rel: &str,
    limits: &UnpackLimits,
    out: &mut Vec<Item>,
) -> Result<(), GpackError> {
    let here = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let listing = fs::read_dir(&here).map_err(|e| GpackError::io(&here, e))?;
    for entry in listing {
        let entry = entry.map_err(|e| GpackError::io(&here, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(GpackError::BadName {
                path,
                reason: "file name is not UTF-8".into(),
            });
        };
        if SKIPPED_NAMES.contains(&name.as_str()) {
            continue;
        }
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        if let Err(reason) = relative_components(child.as_bytes()) {
            return Err(GpackError::BadName {
                path,
                reason: reason.into(),
            });
        }
        if child.len() > limits.max_path_len {
            return Err(GpackError::Limit {
                entry: child,
                what: "path length",
                limit: limits.max_path_len as u64,
            });
        }
        if out.len() >= limits.max_entries {
            return Err(GpackError::Limit {
                entry: child,
                what: "entry count",
                limit: limits.max_entries as u64,
            });
        }
        let meta = fs::symlink_metadata(&path).map_err(|e| GpackError::io(&path, e))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&path).map_err(|e| GpackError::io(&path, e))?;
            return Err(GpackError::Symlink { path, target });
        } else if ft.is_dir() {
            out.push(Item {
                rel: child.clone(),
                path,
                file: None,
            });
            walk(root, &child, limits, out)?;
        } else if ft.is_file() {
            out.push(Item {
                rel: child,
                path,
                file: Some((meta.len(), is_executable(&meta))),
            });
        } else {
            return Err(GpackError::SpecialFile {
                path,
                kind: special_kind(&ft),
            });
        }
    }
    Ok(())
}

/// Whether any execute bit is set.
fn is_executable(meta: &fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        false
    }
}

/// What kind of special file this is.
fn special_kind(ft: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "fifo";
        } else if ft.is_socket() {
            return "socket";
        } else if ft.is_char_device() {
            return "character device";
        } else if ft.is_block_device() {
            return "block device";
        }
    }
    let _ = ft;
    "special file"
}

/// A file's content, which must be exactly its size when listed: a file that shrinks
/// while being packed is an error rather than a short (corrupt) entry.
struct Exact<R> {
    inner: io::Take<R>,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being packed",
            ));
        }
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpack::unpack::unpack;
    use std::collections::BTreeMap;

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[cfg(unix)]
    fn set_mtime(path: &Path, secs: u64) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
    }

    /// path → (content, executable); directories have `None`.
    type Tree = BTreeMap<String, Option<(Vec<u8>, bool)>>;

    /// A sample entry: path, and for a file its content and execute bit.
    type Sample = (&'static str, Option<(&'static [u8], bool)>);

    fn sample() -> Vec<Sample> {
        vec![
            (
                "gpack.toml",
                Some((b"id = \"x\"\nversion = \"1.0.0\"\n", false)),
            ),
            ("templates", None),
            ("templates/main.tmpl", Some((b"{{ name }}", false))),
            (
                "templates/a-b.tmpl",
                Some((b"dash sorts before slash", false)),
            ),
            ("templates/sub", None),
            ("templates/sub/deep.tmpl", Some((b"deep", false))),
            ("scripts", None),
            ("scripts/run.sh", Some((b"#!/bin/sh\necho hi\n", true))),
            ("empty-dir", None),
            ("empty.txt", Some((b"", false))),
        ]
    }

    /// Writes the sample tree in the given order.
    fn build(root: &Path, order: &[usize], exec_mode: u32, plain_mode: u32, mtime: u64) {
        let items = sample();
        // Directories first (a file needs its parent), in the given relative order.
        for &i in order {
            if let (p, None) = items[i] {
                fs::create_dir_all(root.join(p)).expect("mkdir");
            }
        }
        for &i in order {
            if let (p, Some((content, exec))) = items[i] {
                let path = root.join(p);
                fs::write(&path, content).expect("write");
                #[cfg(unix)]
                {
                    set_mode(&path, if exec { exec_mode } else { plain_mode });
                    set_mtime(&path, mtime);
                }
                let _ = (exec, exec_mode, plain_mode, mtime);
            }
        }
    }

    fn read_tree(root: &Path) -> Tree {
        fn go(root: &Path, rel: &str, out: &mut Tree) {
            let here = if rel.is_empty() {
                root.to_path_buf()
            } else {
                root.join(rel)
            };
            for e in fs::read_dir(here).expect("read_dir") {
                let e = e.expect("entry");
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let meta = fs::symlink_metadata(e.path()).expect("stat");
                if meta.is_dir() {
                    out.insert(child.clone(), None);
                    go(root, &child, out);
                } else {
                    let data = fs::read(e.path()).expect("read");
                    out.insert(child, Some((data, is_executable(&meta))));
                }
            }
        }
        let mut t = Tree::new();
        go(root, "", &mut t);
        t
    }

    #[test]
    fn same_tree_gives_same_bytes_whatever_order_times_and_modes() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let n = sample().len();
        let forward: Vec<usize> = (0..n).collect();
        let backward: Vec<usize> = (0..n).rev().collect();
        build(a.path(), &forward, 0o755, 0o644, 1_000_000);
        build(b.path(), &backward, 0o700, 0o600, 1_700_000_000);
        #[cfg(unix)]
        set_mode(&b.path().join("templates"), 0o700);
        // Version-control metadata is skipped, so its presence changes nothing.
        fs::create_dir(b.path().join(".git")).expect("mkdir");
        fs::write(b.path().join(".git/HEAD"), "ref: refs/heads/main\n").expect("write");

        let pa = pack_dir(a.path()).expect("pack a");
        let pb = pack_dir(b.path()).expect("pack b");
        assert_eq!(pa.sha256, pb.sha256);
        assert!(pa.bytes == pb.bytes, "identical bytes");
        assert_eq!(pa.sha256_hex().len(), 64);
        assert_eq!(
            pa.sha256_hex(),
            Sha256::digest(&pa.bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(pa.files, 6);
        let content: u64 = sample()
            .iter()
            .filter_map(|(_, f)| f.map(|(c, _)| c.len() as u64))
            .sum();
        assert_eq!(pa.unpacked_size, content);
        // Packing again gives the same bytes too.
        assert_eq!(pack_dir(a.path()).expect("again").bytes, pa.bytes);

        // A change of content or of the execute bit changes the archive.
        fs::write(b.path().join("empty.txt"), "now full").expect("write");
        assert_ne!(pack_dir(b.path()).expect("pack").sha256, pa.sha256);
        #[cfg(unix)]
        {
            fs::write(b.path().join("empty.txt"), "").expect("write");
            assert_eq!(pack_dir(b.path()).expect("pack").sha256, pa.sha256);
            set_mode(&b.path().join("empty.txt"), 0o744);
            assert_ne!(pack_dir(b.path()).expect("pack").sha256, pa.sha256);
        }
    }

    #[test]
    fn archive_entries_are_sorted_and_normalised() {
        let a = tempfile::tempdir().expect("tempdir");
        let n = sample().len();
        build(a.path(), &(0..n).collect::<Vec<_>>(), 0o775, 0o664, 42);
        let packed = pack_dir(a.path()).expect("pack");
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&packed.bytes[..]));
        let mut names = Vec::new();
        for e in archive.entries().expect("entries") {
            let e = e.expect("entry");
            let h = e.header();
            assert_eq!(h.mtime().expect("mtime"), 0);
            assert_eq!(h.uid().expect("uid"), 0);
            assert_eq!(h.gid().expect("gid"), 0);
            assert_eq!(h.username_bytes(), Some(&b""[..]));
            assert_eq!(h.groupname_bytes(), Some(&b""[..]));
            let mode = h.mode().expect("mode");
            assert!(mode == 0o644 || mode == 0o755, "{mode:o}");
            names.push(String::from_utf8(e.path_bytes().into_owned()).expect("utf8"));
        }
        let mut sorted = names.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(names, sorted);
        assert_eq!(names.first().map(String::as_str), Some("empty-dir/"));
        assert!(names.contains(&"templates/sub/".to_string()));
        // gzip header: no mtime (bytes 4..8), no file name flag (byte 3).
        assert_eq!(&packed.bytes[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&packed.bytes[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn pack_then_unpack_gives_the_same_tree() {
        let src = tempfile::tempdir().expect("tempdir");
        let n = sample().len();
        build(src.path(), &(0..n).collect::<Vec<_>>(), 0o755, 0o644, 7);
        // A path too long for a plain tar header (GNU long name).
        let long_dir = "d".repeat(80);
        fs::create_dir(src.path().join(&long_dir)).expect("mkdir");
        fs::write(src.path().join(&long_dir).join("f".repeat(60)), "long").expect("write");

        let packed = pack_dir(src.path()).expect("pack");
        let out = tempfile::tempdir().expect("tempdir");
        let target = out.path().join("installed");
        let report = unpack(&packed.bytes, &target, &UnpackLimits::default()).expect("unpack");
        assert_eq!(report.files, packed.files);
        assert_eq!(report.unpacked_size, packed.unpacked_size);

        let before = read_tree(src.path());
        let after = read_tree(&target);
        assert_eq!(before, after);
        assert_eq!(
            after.get("scripts/run.sh"),
            Some(&Some((b"#!/bin/sh\necho hi\n".to_vec(), cfg!(unix))))
        );
        assert_eq!(after.get("empty-dir"), Some(&None));
    }

    #[cfg(unix)]
    #[test]
    fn links_and_special_files_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("real.txt"), "x").expect("write");
        std::os::unix::fs::symlink("real.txt", d.path().join("inside")).expect("symlink");
        let e = pack_dir(d.path()).expect_err("symlink inside the tree");
        assert!(
            e.to_string()
                .contains("inside: symbolic links cannot be packed"),
            "{e}"
        );
        fs::remove_file(d.path().join("inside")).expect("rm");

        std::os::unix::fs::symlink("/etc", d.path().join("outside")).expect("symlink");
        let e = pack_dir(d.path()).expect_err("symlink outside");
        assert!(
            e.to_string().contains("outside: symbolic links") && e.to_string().contains("/etc"),
            "{e}"
        );
        fs::remove_file(d.path().join("outside")).expect("rm");

        let sock_path = d.path().join("sock");
        let _sock = std::os::unix::net::UnixListener::bind(&sock_path).expect("bind");
        let e = pack_dir(d.path()).expect_err("socket");
        assert!(
            e.to_string().contains("sock: a socket cannot be packed"),
            "{e}"
        );
        fs::remove_file(&sock_path).expect("rm");

        let fifo = std::process::Command::new("mkfifo")
            .arg(d.path().join("pipe"))
            .status();
        if matches!(fifo, Ok(s) if s.success()) {
            let e = pack_dir(d.path()).expect_err("fifo");
            assert!(
                e.to_string().contains("pipe: a fifo cannot be packed"),
                "{e}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn names_an_install_would_refuse_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let d = tempfile::tempdir().expect("tempdir");
        fs::write(d.path().join("back\\slash"), "x").expect("write");
        let e = pack_dir(d.path()).expect_err("backslash");
        assert!(e.to_string().contains("backslash"), "{e}");
        fs::remove_file(d.path().join("back\\slash")).expect("rm");

        let bad = std::ffi::OsStr::from_bytes(b"bad\xff");
        if fs::write(d.path().join(bad), "x").is_ok() {
            let e = pack_dir(d.path()).expect_err("non-UTF-8");
            assert!(e.to_string().contains("not UTF-8"), "{e}");
        }
    }
}
