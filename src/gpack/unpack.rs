//! Safe extraction of a gpack archive received from the network.
//!
//! [`unpack()`] reads a gzip-compressed tar stream and accepts only what [`pack_dir`]
//! produces: regular files and directories at relative paths. It refuses, naming the
//! entry:
//!
//! - absolute paths, any `..` component, empty components (`a//b`), backslashes, NUL
//!   bytes, paths that are empty or not UTF-8, paths longer than the limit;
//! - every symbolic link and hard link, wherever it points (a gpack never needs one, and
//!   refusing them all leaves no link to follow later);
//! - character and block devices, fifos, sparse files, pax global headers and every other
//!   entry type;
//! - the same path twice, and a file where a directory is needed or the reverse.
//!
//! `.` components are ignored, so `./a` is `a`, and a `./` directory entry (the root, as
//! `tar -C dir .` writes it) is accepted and does nothing.
//!
//! Limits ([`UnpackLimits`]) are counted while streaming: an entry's declared size is
//! checked against the remaining budget before a byte of it is decompressed, and the
//! decompressed stream itself is capped (headers, long names and pax records included),
//! so a gzip bomb stops at the limit rather than filling the disk or memory.
//!
//! Nothing is ever half-written: the archive is extracted into a fresh temporary directory
//! next to the target (same filesystem), which is renamed onto the target only when every
//! entry succeeded. The target must not exist yet, or be an empty directory (replaced by
//! the rename); its parent must exist. On any error the temporary directory is removed and
//! the target is left as it was.
//!
//! Files are written with mode 0o755 when any execute bit is set in the archive, else
//! 0o644, and directories with the default mode, all subject to the umask; owners, times
//! and other mode bits in the archive are ignored.
//!
//! [`pack_dir`]: super::pack_dir

use std::cell::Cell;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use flate2::read::GzDecoder;
use tar::EntryType;

use super::GpackError;

/// How much an archive may unpack to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Total bytes of file content (default 256 MiB).
    pub max_unpacked_bytes: u64,
    /// Entries, files and directories together (default 10 000).
    pub max_entries: usize,
    /// Bytes in one entry's path (default 1024).
    pub max_path_len: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 256 * 1024 * 1024,
            max_entries: 10_000,
            max_path_len: 1024,
        }
    }
}

impl UnpackLimits {
    /// The most decompressed bytes read from an archive within these limits: the content,
    /// plus per entry a header, padding, and a long-name or pax record, plus slack.
    pub fn max_stream_bytes(&self) -> u64 {
        let per_entry = 4 * 512 + 2 * self.max_path_len as u64;
        self.max_unpacked_bytes
            .saturating_add((self.max_entries as u64).saturating_mul(per_entry))
            .saturating_add(1024 * 1024)
    }
}

/// What [`unpack()`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackReport {
    /// Regular files.
    pub files: usize,
    /// Directories (those listed in the archive).
    pub dirs: usize,
    /// Bytes of file content.
    pub unpacked_size: u64,
}

/// Extracts the gzip-compressed tar `archive` to the directory `into`, safely and
/// atomically (see the [module documentation](self) for the rules).
pub fn unpack(
    archive: &[u8],
    into: &Path,
    limits: &UnpackLimits,
) -> Result<UnpackReport, GpackError> {
    let into_empty_dir = match fs::symlink_metadata(into) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(GpackError::io(into, e)),
        Ok(m) if m.is_dir() => {
            let mut listing = fs::read_dir(into).map_err(|e| GpackError::io(into, e))?;
            if listing.next().is_some() {
                return Err(GpackError::TargetExists { path: into.into() });
            }
            true
        }
        Ok(_) => return Err(GpackError::TargetExists { path: into.into() }),
    };
    let parent = match into.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Removed (with whatever it holds) when dropped, on every error path.
    let tmp = tempfile::Builder::new()
        .prefix(".gpack-unpack-")
        .tempdir_in(&parent)
        .map_err(|e| GpackError::io(&parent, e))?;
    // Extract into a subdirectory created with the default mode (the temporary directory
    // itself is private, 0o700), so the installed root gets the usual permissions.
    let root = tmp.path().join("pkg");
    fs::create_dir(&root).map_err(|e| GpackError::io(&root, e))?;

    let report = extract(archive, &root, limits)?;

    if let Err(e) = fs::rename(&root, into) {
        // Where rename cannot replace an empty directory, remove it first.
        if into_empty_dir && fs::remove_dir(into).is_ok() {
            fs::rename(&root, into).map_err(|e| GpackError::io(into, e))?;
        } else {
            return Err(GpackError::io(into, e));
        }
    }
    drop(tmp);
    Ok(report)
}

/// A reader that fails once more than `cap` bytes were read through it, and says so in
/// `tripped` (the tar reader may replace the error with its own).
struct CappedReader<R> {
    inner: R,
    left: u64,
    tripped: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // At the cap: the stream is only allowed to end here.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.tripped.set(true);
                    Err(io::Error::other("decompressed archive over its size limit"))
                }
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(buf.get_mut(..want).unwrap_or_default())?;
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

/// Streams the archive's entries into `root` (an empty directory).
fn extract(archive: &[u8], root: &Path, limits: &UnpackLimits) -> Result<UnpackReport, GpackError> {
    let tripped = Rc::new(Cell::new(false));
    let reader = CappedReader {
        inner: GzDecoder::new(archive),
        left: limits.max_stream_bytes(),
        tripped: Rc::clone(&tripped),
    };
    let mut tar = tar::Archive::new(reader);
    let mut report = UnpackReport::default();
    let mut entries_seen = 0usize;
    let mut last = String::new();

    let stream_error = |e: io::Error, last: &str| {
        if tripped.get() {
            GpackError::Limit {
                entry: last.to_string(),
                what: "decompressed archive size",
                limit: limits.max_stream_bytes(),
            }
        } else {
            GpackError::Corrupt {
                after: last.to_string(),
                reason: e.to_string(),
            }
        }
    };

    let entries = tar.entries().map_err(|e| stream_error(e, ""))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| stream_error(e, &last))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let unsafe_entry = |reason: &str| GpackError::UnsafeEntry {
            entry: name.clone(),
            reason: reason.to_string(),
        };

        entries_seen += 1;
        if entries_seen > limits.max_entries {
            return Err(GpackError::Limit {
                entry: name,
                what: "entry count",
                limit: limits.max_entries as u64,
            });
        }
        if raw.len() > limits.max_path_len {
            return Err(GpackError::Limit {
                entry: name,
                what: "path length",
                limit: limits.max_path_len as u64,
            });
        }
        let components = relative_components(&raw).map_err(unsafe_entry)?;

        let kind = entry.header().entry_type();
        match kind {
            EntryType::Directory => {
                if components.is_empty() {
                    // `./`: the root itself.
                    last = name;
                    continue;
                }
                let path = join(root, &components);
                match fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(unsafe_entry("a directory where a file was already")),
                    Err(_) => fs::create_dir_all(&path).map_err(|source| GpackError::Extract {
                        entry: name.clone(),
                        source,
                    })?,
                }
                report.dirs += 1;
            }
            EntryType::Regular => {
                if components.is_empty() {
                    return Err(unsafe_entry("empty path"));
                }
                let size = entry.size();
                let total = report.unpacked_size.saturating_add(size);
                if total > limits.max_unpacked_bytes {
                    return Err(GpackError::Limit {
                        entry: name,
                        what: "total unpacked bytes",
                        limit: limits.max_unpacked_bytes,
                    });
                }
                let exec = entry
                    .header()
                    .mode()
                    .map(|m| m & 0o111 != 0)
                    .unwrap_or(false);
                let path = join(root, &components);
                write_file(&mut entry, &path, exec, size).map_err(|e| {
                    if tripped.get() {
                        stream_error(e, &name)
                    } else if e.kind() == io::ErrorKind::AlreadyExists {
                        unsafe_entry("duplicate path")
                    } else {
                        GpackError::Extract {
                            entry: name.clone(),
                            source: e,
                        }
                    }
                })?;
                report.files += 1;
                report.unpacked_size = total;
            }
            EntryType::Symlink => return Err(unsafe_entry("symbolic links are not allowed")),
            EntryType::Link => return Err(unsafe_entry("hard links are not allowed")),
            EntryType::Char => return Err(unsafe_entry("character devices are not allowed")),
            EntryType::Block => return Err(unsafe_entry("block devices are not allowed")),
            EntryType::Fifo => return Err(unsafe_entry("fifos are not allowed")),
            other => {
                return Err(unsafe_entry(&format!(
                    "unsupported entry type {:?}",
                    char::from(other.as_byte())
                )));
            }
        }
        last = name;
    }
    Ok(report)
}

/// Creates `path` (which must not exist) with `size` bytes from `data`.
fn write_file(data: &mut impl Read, path: &Path, exec: bool, size: u64) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if exec { 0o755 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = exec;
    let mut file = options.open(path)?;
    let copied = io::copy(&mut data.take(size), &mut file)?;
    if copied != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("archive ends inside the entry ({copied} of {size} bytes)"),
        ));
    }
    file.flush()
}

/// `root` joined with the components.
fn join(root: &Path, components: &[&str]) -> PathBuf {
    let mut path = root.to_path_buf();
    path.extend(components);
    path
}

/// The normal components of a relative archive path, or why it is refused. `.`
/// components are dropped; one trailing `/` (a directory) is allowed.
pub(crate) fn relative_components(raw: &[u8]) -> Result<Vec<&str>, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw.contains(&0) {
        return Err("NUL byte in path");
    }
    let text = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8")?;
    if text.starts_with('/') {
        return Err("absolute path");
    }
    if text.contains('\\') {
        return Err("backslash in path");
    }
    let text = text.strip_suffix('/').unwrap_or(text);
    let mut out = Vec::new();
    for c in text.split('/') {
        match c {
            "" => return Err("empty path component"),
            "." => {}
            ".." => return Err("`..` in path"),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    /// One raw entry of a hostile archive.
    struct Raw<'a> {
        name: &'a [u8],
        kind: EntryType,
        link: Option<&'a [u8]>,
        data: &'a [u8],
    }

    fn file(name: &[u8]) -> Raw<'_> {
        Raw {
            name,
            kind: EntryType::Regular,
            link: None,
            data: b"x",
        }
    }

    /// Builds an archive with the raw header API: names go into the header bytes as
    /// given, unchecked.
    fn hostile(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        for e in entries {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().expect("gnu header");
                gnu.name.fill(0);
                gnu.name[..e.name.len()].copy_from_slice(e.name);
                if let Some(link) = e.link {
                    gnu.linkname[..link.len()].copy_from_slice(link);
                }
            }
            h.set_entry_type(e.kind);
            h.set_size(e.data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, e.data).expect("append");
        }
        b.into_inner().expect("tar").finish().expect("gzip")
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Unpacks into `<tmp>/work/target` and checks nothing was created anywhere under
    /// `<tmp>`; returns the error message.
    fn refused(archive: &[u8], limits: &UnpackLimits) -> String {
        let top = tempfile::tempdir().expect("tempdir");
        let work = top.path().join("work");
        fs::create_dir(&work).expect("mkdir");
        fs::write(work.join("keep.txt"), "keep").expect("write");
        let before_top = listing(top.path());
        let before = listing(&work);
        let target = work.join("target");
        let err = unpack(archive, &target, limits).expect_err("must be refused");
        assert_eq!(listing(&work), before, "nothing left next to the target");
        assert_eq!(listing(top.path()), before_top, "nothing written above");
        assert!(!target.exists(), "target not created");
        // Nothing escaped to the usual victims either.
        assert!(!top.path().join("escape").exists());
        assert!(!top.path().join("x").exists());
        err.to_string()
    }

    #[test]
    fn hostile_paths_are_refused_by_name() {
        let cases: [(&[u8], &str); 7] = [
            (b"../escape", "`..` in path"),
            (b"/abs/path", "absolute path"),
            (b"a/../../x", "`..` in path"),
            (b"ok/..", "`..` in path"),
            (b"a//b", "empty path component"),
            (b"a\\..\\b", "backslash"),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (name, why) in cases {
            let archive = hostile(&[file(b"fine.txt"), file(name)]);
            let e = refused(&archive, &UnpackLimits::default());
            let shown = String::from_utf8_lossy(name).into_owned();
            assert!(e.contains(&format!("{shown:?}")), "{e} names {shown}");
            assert!(e.contains(why), "{e}: {why}");
        }
    }

    #[test]
    fn links_and_special_files_are_refused_by_name() {
        let cases: [(Raw<'_>, &str); 6] = [
            (
                Raw {
                    name: b"etc",
                    kind: EntryType::Symlink,
                    link: Some(b"/etc"),
                    data: b"",
                },
                "symbolic links",
            ),
            (
                Raw {
                    name: b"up",
                    kind: EntryType::Symlink,
                    link: Some(b"../.."),
                    data: b"",
                },
                "symbolic links",
            ),
            (
                Raw {
                    name: b"hard",
                    kind: EntryType::Link,
                    link: Some(b"fine.txt"),
                    data: b"",
                },
                "hard links",
            ),
            (
                Raw {
                    name: b"tty",
                    kind: EntryType::Char,
                    link: None,
                    data: b"",
                },
                "character devices",
            ),
            (
                Raw {
                    name: b"disk",
                    kind: EntryType::Block,
                    link: None,
                    data: b"",
                },
                "block devices",
            ),
            (
                Raw {
                    name: b"pipe",
                    kind: EntryType::Fifo,
                    link: None,
                    data: b"",
                },
                "fifos",
            ),
        ];
        for (raw, why) in cases {
            let name = String::from_utf8_lossy(raw.name).into_owned();
            let archive = hostile(&[file(b"fine.txt"), raw]);
            let e = refused(&archive, &UnpackLimits::default());
            assert!(e.contains(&format!("{name:?}")) && e.contains(why), "{e}");
        }
    }

    #[test]
    fn a_link_then_a_write_through_it_never_escapes() {
        let archive = hostile(&[
            Raw {
                name: b"l",
                kind: EntryType::Symlink,
                link: Some(b".."),
                data: b"",
            },
            file(b"l/escape"),
        ]);
        let e = refused(&archive, &UnpackLimits::default());
        assert!(e.contains("\"l\""), "{e}");
    }

    #[test]
    fn duplicates_and_type_clashes_are_refused() {
        let e = refused(
            &hostile(&[file(b"a"), file(b"a")]),
            &UnpackLimits::default(),
        );
        assert!(e.contains("\"a\": duplicate path"), "{e}");
        let dir = Raw {
            name: b"a/",
            kind: EntryType::Directory,
            link: None,
            data: b"",
        };
        let e = refused(&hostile(&[file(b"a"), dir]), &UnpackLimits::default());
        assert!(e.contains("a directory where a file was"), "{e}");
        let e = refused(
            &hostile(&[file(b"a"), file(b"a/b")]),
            &UnpackLimits::default(),
        );
        assert!(e.contains("\"a/b\""), "{e}");
    }

    #[test]
    fn gzip_bomb_stops_at_the_limit() {
        // 300 MiB of zeros in one file, compressed while streaming (never held in memory).
        const SIZE: u64 = 300 * 1024 * 1024;
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(SIZE);
        h.set_mode(0o644);
        b.append_data(&mut h, "zeros.bin", io::repeat(0).take(SIZE))
            .expect("append");
        let archive = b.into_inner().expect("tar").finish().expect("gzip");
        assert!(archive.len() < 2 * 1024 * 1024, "{}", archive.len());

        let start = std::time::Instant::now();
        let e = refused(&archive, &UnpackLimits::default());
        assert!(
            e.contains("\"zeros.bin\"") && e.contains("total unpacked bytes over the limit"),
            "{e}"
        );
        // Refused from the header, before the content is decompressed.
        assert!(start.elapsed() < std::time::Duration::from_secs(5));

        // Small files that add up: stopped at the file that crosses the limit.
        let limits = UnpackLimits {
            max_unpacked_bytes: 10_000,
            ..UnpackLimits::default()
        };
        let chunk = vec![0u8; 4000];
        let names: Vec<String> = (0..5).map(|i| format!("f{i}")).collect();
        let raws: Vec<Raw<'_>> = names
            .iter()
            .map(|n| Raw {
                name: n.as_bytes(),
                kind: EntryType::Regular,
                link: None,
                data: &chunk,
            })
            .collect();
        let e = refused(&hostile(&raws), &limits);
        assert!(
            e.contains("\"f2\"") && e.contains("total unpacked bytes"),
            "{e}"
        );
    }

    #[test]
    fn metadata_bombs_and_counts_stop_at_the_limit() {
        // A GNU long name of 8 MiB: metadata the tar reader would buffer whole.
        let limits = UnpackLimits {
            max_unpacked_bytes: 1024,
            max_entries: 4,
            max_path_len: 100,
        };
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut h = tar::Header::new_gnu();
        h.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(EntryType::GNULongName);
        h.set_size(8 * 1024 * 1024);
        h.set_cksum();
        b.append(&h, io::repeat(b'a').take(8 * 1024 * 1024))
            .expect("append");
        let archive = b.into_inner().expect("tar").finish().expect("gzip");
        let e = refused(&archive, &limits);
        assert!(
            e.contains("decompressed archive size over the limit"),
            "{e}"
        );

        let many: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
        let raws: Vec<Raw<'_>> = many.iter().map(|n| file(n.as_bytes())).collect();
        let e = refused(&hostile(&raws), &limits);
        assert!(e.contains("\"f4\"") && e.contains("entry count"), "{e}");

        // A legitimate but long path (GNU long-name record).
        let long = "d/".repeat(60) + "f";
        let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"x"[..]).expect("append");
        let archive = b.into_inner().expect("tar").finish().expect("gzip");
        let e = refused(&archive, &limits);
        assert!(e.contains("path length over the limit of 100"), "{e}");
    }

    #[test]
    fn corrupt_archives_are_refused_and_leave_nothing() {
        let good = hostile(&[file(b"a"), file(b"b")]);
        let e = refused(&good[..good.len() / 2], &UnpackLimits::default());
        assert!(e.contains("corrupt archive"), "{e}");
        let e = refused(b"not gzip at all", &UnpackLimits::default());
        assert!(e.contains("corrupt archive"), "{e}");
    }

    #[test]
    fn target_rule_not_existing_or_empty_dir() {
        let archive = hostile(&[file(b"a.txt")]);
        let top = tempfile::tempdir().expect("tempdir");

        let fresh = top.path().join("fresh");
        let r = unpack(&archive, &fresh, &UnpackLimits::default()).expect("fresh target");
        assert_eq!(
            r,
            UnpackReport {
                files: 1,
                dirs: 0,
                unpacked_size: 1
            }
        );
        assert_eq!(fs::read(fresh.join("a.txt")).expect("read"), b"x");

        let empty = top.path().join("empty");
        fs::create_dir(&empty).expect("mkdir");
        unpack(&archive, &empty, &UnpackLimits::default()).expect("empty dir target");
        assert_eq!(listing(&empty), vec!["a.txt"]);

        // Not empty: refused, untouched.
        let e = unpack(&archive, &empty, &UnpackLimits::default()).expect_err("non-empty");
        assert!(matches!(e, GpackError::TargetExists { .. }), "{e}");
        assert_eq!(listing(&empty), vec!["a.txt"]);
        let e =
            unpack(&archive, &empty.join("a.txt"), &UnpackLimits::default()).expect_err("a file");
        assert!(matches!(e, GpackError::TargetExists { .. }), "{e}");
        // Only the two targets, no leftover temporary directory.
        assert_eq!(listing(top.path()), vec!["empty", "fresh"]);
    }
}
