//! The registry across real processes, as a user runs it: a `ggen p2p start` node (a seeder),
//! a `p2p-marketplace publish` process that publishes a package with content and exits, then
//! `search` and `get` processes that find and download it through the seeder. And the seeder
//! stops cleanly on SIGTERM, releasing its data directory, and comes back with what it held.
//!
//! The example binary is built by `cargo test` (which builds every example) at
//! `target/<profile>/examples/p2p-marketplace`; after `cargo test --test cli_processes` alone,
//! build it first with `cargo build --example p2p-marketplace`. A missing or stale example
//! binary fails the test with that advice.
//!
//! Everything listens on 127.0.0.1 with mDNS off; every wait has a deadline.

mod common;

use common::pseudo_random_bytes;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const GGEN: &str = env!("CARGO_BIN_EXE_ggen");
/// The most any one step may take (each takes well under a second when things work).
const STEP: Duration = Duration::from_secs(20);

/// The `p2p-marketplace` example next to this test's binary
/// (`target/<profile>/deps/cli_processes-HASH` → `target/<profile>/examples/`).
fn example() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("p2p-marketplace{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&path).and_then(|m| m.modified());
    let Ok(built) = built else {
        panic!(
            "the p2p-marketplace example is not built at {}: run `cargo test` (which builds \
             the examples) or `cargo build --example p2p-marketplace` first",
            path.display()
        );
    };
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/p2p-marketplace.rs");
    if let Ok(edited) = std::fs::metadata(&source).and_then(|m| m.modified()) {
        assert!(
            built >= edited,
            "{} is older than {}: rebuild it with `cargo build --example p2p-marketplace`",
            path.display(),
            source.display()
        );
    }
    path
}

/// A child process whose output is read line by line; killed if the test fails.
struct Proc {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    stdout_seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    exited: Option<ExitStatus>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proc {
    fn spawn(name: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Proc {
        Self::spawn_with(name, program, args, &[])
    }

    fn spawn_with(
        name: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env_remove("GGEN_P2P_BOOTSTRAP")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot spawn: {e}"));
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("piped stderr");
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut l) = lines.lock() {
                    l.push(line);
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            stdout,
            stdout_seen: Vec::new(),
            stderr,
            exited: None,
        }
    }

    /// What the process printed so far, for failure messages.
    fn output(&self) -> String {
        let err = self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
        format!(
            "--- {} stdout:\n{}\n--- {} stderr:\n{err}",
            self.name,
            self.stdout_seen.join("\n"),
            self.name
        )
    }

    /// The next stdout line satisfying `wanted`, within [`STEP`].
    fn wait_line(&mut self, what: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "{}: no {what} within {STEP:?}\n{}",
                        self.name,
                        self.output()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: exited before printing {what}\n{}",
                        self.name,
                        self.output()
                    )
                }
            }
        }
    }

    /// Waits for the process to exit (within [`STEP`]) and collects all of its stdout.
    fn finish(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: still running after {STEP:?}\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.exited = Some(status);
        // The reader ends at end of file, which follows the exit.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left.max(Duration::from_secs(1))) {
                Ok(line) => self.stdout_seen.push(line),
                Err(_) => break,
            }
        }
        status
    }

    /// Runs to completion and requires success; returns the stdout lines.
    fn succeed(mut self) -> Vec<String> {
        let status = self.finish();
        assert!(
            status.success(),
            "{} failed ({status})\n{}",
            self.name,
            self.output()
        );
        std::mem::take(&mut self.stdout_seen)
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "{}: kill -TERM failed", self.name);
    }
}

/// A running `ggen p2p start` node.
struct Seeder {
    proc: Proc,
    peer_id: String,
    /// `/ip4/127.0.0.1/tcp/PORT/p2p/<PeerId>`.
    address: String,
}

fn start_ggen(name: &str, data_dir: &Path) -> Seeder {
    let dir = data_dir.to_str().expect("utf-8 temp path");
    let mut proc = Proc::spawn(
        name,
        GGEN,
        &[
            "p2p",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
            "--replicate-content",
            "--data-dir",
            dir,
        ],
    );
    let line = proc.wait_line("peer id line", |l| l.starts_with("peer id: "));
    let peer_id = line["peer id: ".len()..].trim().to_string();
    let line = proc.wait_line("listen address", |l| l.starts_with("listening on "));
    let address = line["listening on ".len()..].trim().to_string();
    assert!(
        address.starts_with("/ip4/127.0.0.1/tcp/") && address.ends_with(&format!("/p2p/{peer_id}")),
        "{address}"
    );
    let port: u16 = address
        .split('/')
        .nth(4)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address}"));
    assert_ne!(port, 0, "the real port is printed");
    let line = proc.wait_line("data dir line", |l| l.starts_with("data dir: "));
    assert_eq!(line, format!("data dir: {dir}"));
    Seeder {
        proc,
        peer_id,
        address,
    }
}

/// Deterministic, incompressible-looking content of `n` bytes (several transfer chunks).
fn content(n: usize) -> Vec<u8> {
    pseudo_random_bytes(1, n)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `content sha256 <hex> (<n> bytes)` → (hex, n).
fn content_line(lines: &[String]) -> (String, u64) {
    let line = lines
        .iter()
        .find_map(|l| l.strip_prefix("content sha256 "))
        .unwrap_or_else(|| panic!("no content line in {lines:?}"));
    let (hash, rest) = line.split_once(" (").expect("hash (size bytes)");
    let size = rest
        .strip_suffix(" bytes)")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("size in {line}"));
    (hash.to_string(), size)
}

/// Publishes `name@version` with `bytes` from a short-lived example process, which exits.
fn publish(bootstrap: &str, data_dir: &Path, name: &str, version: &str, bytes: &[u8]) {
    let file = data_dir.join("upload.bin");
    std::fs::create_dir_all(data_dir).expect("data dir");
    std::fs::write(&file, bytes).expect("write upload");
    let store = data_dir.join("node");
    let lines = Proc::spawn(
        "publish",
        example(),
        &[
            "publish",
            "--bootstrap",
            bootstrap,
            "--data-dir",
            store.to_str().expect("utf-8"),
            "--name",
            name,
            "--version",
            version,
            "--category",
            "web",
            "--tags",
            "rust,p2p",
            "--description",
            "published from another process",
            "--file",
            file.to_str().expect("utf-8"),
        ],
    )
    .succeed();
    assert!(
        lines.contains(&format!("published {name}@{version}")),
        "{lines:?}"
    );
    assert_eq!(
        content_line(&lines),
        (sha256_hex(bytes), bytes.len() as u64)
    );
}

/// `get` in a fresh process: checks the printed version, returns the printed content hash
/// and size.
fn get_record(bootstrap: &str, name: &str, version: &str) -> (String, u64) {
    let lines = Proc::spawn("get", example(), &["get", name, "--bootstrap", bootstrap]).succeed();
    assert_eq!(
        lines.first(),
        Some(&format!("{name} v{version}")),
        "{lines:?}"
    );
    content_line(&lines)
}

/// `get --output` in a fresh process: checks the printed version and size, returns the
/// printed hash and the downloaded content.
fn get(bootstrap: &str, name: &str, version: &str, out_dir: &Path) -> (String, Vec<u8>) {
    let out = out_dir.join(format!("{name}-{version}.bin"));
    let lines = Proc::spawn(
        "get",
        example(),
        &[
            "get",
            name,
            "--bootstrap",
            bootstrap,
            "--output",
            out.to_str().expect("utf-8"),
        ],
    )
    .succeed();
    assert_eq!(
        lines.first(),
        Some(&format!("{name} v{version}")),
        "{lines:?}"
    );
    let (hash, size) = content_line(&lines);
    let bytes = std::fs::read(&out).expect("get wrote the content");
    assert_eq!(bytes.len() as u64, size);
    (hash, bytes)
}

/// A package published by a process that then exits is found and downloaded by two other
/// processes, through a `ggen p2p start` seeder.
#[test]
fn publish_search_get_across_processes_through_a_ggen_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let seeder = start_ggen("ggen start", &tmp.path().join("seeder"));
    let bytes = content(300 * 1024 + 17);
    publish(
        &seeder.address,
        &tmp.path().join("publisher"),
        "cli-proc-pkg",
        "1.2.3",
        &bytes,
    );

    // Search, joining through the environment variable.
    let lines = Proc::spawn_with(
        "search",
        example(),
        &["search", "rust", "--category", "web"],
        &[("GGEN_P2P_BOOTSTRAP", &seeder.address)],
    )
    .succeed();
    let hit = lines
        .iter()
        .find_map(|l| l.strip_prefix("cli-proc-pkg v1.2.3 (score: "))
        .unwrap_or_else(|| panic!("search did not find the package: {lines:?}"));
    let (score, providers) = hit
        .strip_suffix(')')
        .and_then(|s| s.split_once(", providers: "))
        .unwrap_or_else(|| panic!("result line: {hit}"));
    let score: f64 = score.parse().expect("a numeric score");
    let providers: usize = providers.parse().expect("a provider count");
    assert!(score > 0.0, "score {score}");
    assert!(providers >= 1, "the seeder provides the content: {hit}");

    // Get, from yet another process: same version, same hash, same bytes.
    let (hash, fetched) = get(&seeder.address, "cli-proc-pkg", "1.2.3", tmp.path());
    assert_eq!(hash, sha256_hex(&bytes));
    assert!(
        fetched == bytes,
        "fetched content differs from what was published"
    );

    // An unknown package: a non-zero exit that says so.
    let mut missing = Proc::spawn(
        "get missing",
        example(),
        &["get", "no-such-package", "--bootstrap", &seeder.address],
    );
    let status = missing.finish();
    assert!(!status.success(), "{}", missing.output());
    assert!(missing.output().contains("no-such-package: not found"));

    // The seeder heard of the package.
    let log = seeder.proc.output();
    assert!(log.contains("cli-proc-pkg@1.2.3"), "{log}");
}

/// SIGTERM stops `ggen p2p start` with status 0 and releases its data directory (locked
/// while it runs); restarted there, it has the same identity and the package records it kept.
#[test]
fn sigterm_stops_cleanly_and_releases_the_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("seeder");
    let mut first = start_ggen("ggen start", &dir);
    let bytes = content(64 * 1024);
    publish(
        &first.address,
        &tmp.path().join("publisher"),
        "kept-pkg",
        "0.1.0",
        &bytes,
    );

    // While it runs, a second node cannot use its data directory.
    let mut second = Proc::spawn(
        "second start",
        GGEN,
        &[
            "p2p",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().expect("utf-8"),
        ],
    );
    let status = second.finish();
    assert!(!status.success(), "{}", second.output());
    assert!(second.output().contains("in use"), "{}", second.output());

    first.proc.sigterm();
    let status = first.proc.finish();
    assert_eq!(status.code(), Some(0), "{}", first.proc.output());
    assert!(first.proc.output().contains("shutting down"));

    // Restarted on the same directory: it starts, with the same identity and the record.
    let mut again = start_ggen("ggen restart", &dir);
    assert_eq!(again.peer_id, first.peer_id);
    let (hash, size) = get_record(&again.address, "kept-pkg", "0.1.0");
    assert_eq!((hash, size), (sha256_hex(&bytes), bytes.len() as u64));

    again.proc.sigterm();
    assert_eq!(
        again.proc.finish().code(),
        Some(0),
        "{}",
        again.proc.output()
    );
}

/// A seeder with a data directory keeps the content it replicated across a restart, after
/// the publisher has gone (DESIGN: "Nothing is lost").
#[test]
fn a_restarted_seeder_still_serves_replicated_content() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("seeder");
    let mut first = start_ggen("ggen start", &dir);
    let bytes = content(64 * 1024);
    publish(
        &first.address,
        &tmp.path().join("publisher"),
        "kept-pkg",
        "0.1.0",
        &bytes,
    );
    first.proc.sigterm();
    assert_eq!(
        first.proc.finish().code(),
        Some(0),
        "{}",
        first.proc.output()
    );

    let again = start_ggen("ggen restart", &dir);
    let (hash, fetched) = get(&again.address, "kept-pkg", "0.1.0", tmp.path());
    assert_eq!(hash, sha256_hex(&bytes));
    assert!(fetched == bytes, "content kept across the restart differs");
}
