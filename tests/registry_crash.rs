//! Crash safety of a whole registry node: a child process runs a [`P2PRegistry`] on a data
//! directory and publishes packages in a loop (every third with content), printing an
//! acknowledgement after each publish returns; the parent SIGKILLs it mid-stream, starts a
//! new registry on the same directory in-process and checks that it has the same PeerId and
//! that every acknowledged package is there: `get`, `search` and (from the local blob)
//! `fetch_content` with the exact bytes. The publish in flight at the kill is either wholly
//! there (record, and content when it has some) or absent.
//!
//! The child is this test binary re-run with `GGEN_REGISTRY_CRASH_CHILD=<dir>`, which makes
//! the `crash_child` test act as the child (it does nothing otherwise).

mod common;

use common::{files_under, pseudo_random_bytes};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ggen_p2p::registry::{
    P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Query, Registry, RegistryError,
};

const CHILD_ENV: &str = "GGEN_REGISTRY_CRASH_CHILD";
/// How long the parent waits for the child's next line.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

fn name(n: u64) -> String {
    format!("crashpkg{n:05}")
}

fn id(n: u64) -> String {
    format!("{}@1.0.0", name(n))
}

fn has_content(n: u64) -> bool {
    n % 3 == 0
}

/// Package `n`'s content: a few KB to a few hundred KB, distinct per package.
fn content(n: u64) -> Vec<u8> {
    pseudo_random_bytes(n, 1_000 + (n as usize * 7_919) % 200_000)
}

fn package(n: u64) -> Package {
    let mut p = Package::new(name(n), "1.0.0".into());
    p.description = format!("crash test package number {n}");
    p
}

fn config(dir: &Path) -> P2PConfig {
    let mut c = P2PConfig::default();
    c.network.listen_addresses = vec!["/ip4/127.0.0.1/tcp/0".into()];
    c.bootstrap.mdns_enabled = false;
    c.bootstrap.nodes = Vec::new();
    c.registry.data_dir = Some(dir.to_path_buf());
    c
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The child role: publishes until killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    runtime().block_on(async move {
        let registry = P2PRegistryBuilder::new()
            .with_config(config(Path::new(&dir)))
            .build()
            .unwrap();
        registry.start().await.unwrap();
        // libtest may have printed "test crash_child ... " without a newline: markers are
        // matched anywhere in a line.
        println!("@@id {}", registry.local_peer_id());
        // Publishes are sequential, so the stored ones are 0..count; go on from there.
        let start = registry.stats().await.cached_packages as u64;
        println!("@@start {start}");
        for n in start.. {
            println!("@@begin {n}");
            if has_content(n) {
                registry
                    .publish_with_content(package(n), content(n))
                    .await
                    .unwrap();
            } else {
                registry.publish(package(n)).await.unwrap();
            }
            println!("@@ack {n}");
        }
    });
}

/// What the child printed before it was killed.
#[derive(Debug, Default)]
struct ChildRun {
    peer: String,
    start: u64,
    acks: Vec<u64>,
    /// The publish begun last (acknowledged or not).
    last_begun: Option<u64>,
}

/// Runs a child on `dir` until it has acknowledged `wanted` publishes and then begun one
/// with content (`content`) or without, waits `delay` (so that the kill lands at varied
/// points of that publish: blob write, signing, store commit, announcement), then SIGKILLs
/// it.
fn run_and_kill(dir: &Path, wanted: usize, content: bool, delay: Duration) -> ChildRun {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = ChildRun::default();
    let field = |line: &str, marker: &str| -> Option<String> {
        line.split_once(marker).map(|(_, v)| v.trim().to_string())
    };
    let handle = |line: String, run: &mut ChildRun| {
        if let Some(p) = field(&line, "@@id ") {
            run.peer = p;
        } else if let Some(s) = field(&line, "@@start ") {
            run.start = s.parse().unwrap();
        } else if let Some(b) = field(&line, "@@begin ") {
            run.last_begun = Some(b.parse().unwrap());
        } else if let Some(a) = field(&line, "@@ack ") {
            run.acks.push(a.parse().unwrap());
        }
    };
    let target_begun = |run: &ChildRun| {
        run.acks.len() >= wanted
            && run
                .last_begun
                .is_some_and(|b| has_content(b) == content && !run.acks.contains(&b))
    };
    while !target_begun(&run) {
        match rx.recv_timeout(LINE_TIMEOUT) {
            Ok(line) => handle(line, &mut run),
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "child stopped after {} acks ({e}): {:?}",
                    run.acks.len(),
                    child.wait()
                );
            }
        }
    }
    // The reader thread keeps draining stdout meanwhile: the child never blocks on it.
    std::thread::sleep(delay);
    // `Child::kill` sends SIGKILL on Unix: no destructor, no clean shutdown.
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, not finished");
    // The pipe is closed now: take what the child printed before the kill.
    reader.join().unwrap();
    while let Ok(line) = rx.try_recv() {
        handle(line, &mut run);
    }
    run
}

/// Checks package `n` on `registry`: its record, search, and content (exact bytes).
async fn check_present(registry: &P2PRegistry, n: u64) {
    let got = registry
        .get(&id(n))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{} lost", id(n)));
    assert_eq!(got.name, name(n));
    assert_eq!(got.version, "1.0.0");
    assert_eq!(got.description, package(n).description);
    let found = registry.search(&Query::new(vec![name(n)])).await.unwrap();
    assert_eq!(
        found.first().map(|r| r.package.id.as_str()),
        Some(id(n).as_str()),
        "{} not found by search",
        id(n)
    );
    if has_content(n) {
        let expected = content(n);
        assert_eq!(got.size, expected.len() as u64);
        let bytes = registry
            .fetch_content(&id(n))
            .await
            .unwrap_or_else(|e| panic!("{}: content lost: {e}", id(n)));
        assert!(bytes == expected, "{}: content differs", id(n));
    } else {
        assert_eq!(got.content_hash, None);
        assert!(matches!(
            registry.fetch_content(&id(n)).await,
            Err(RegistryError::NoContent(_))
        ));
    }
}

#[test]
fn killed_registry_keeps_every_acknowledged_publish() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime();
    let mut peer: Option<String> = None;
    // Every publish stored so far: acknowledged, or in flight at a kill and found whole.
    let mut stored: Vec<u64> = Vec::new();
    let mut acks = 0;
    // Kill after a varying number of publishes, in a publish with content or without, at
    // varied points of it.
    let rounds = [5usize, 8, 3, 6, 4, 7];
    for (round, &wanted) in rounds.iter().enumerate() {
        // A publish with content takes longer (the blob is written first).
        let content = round % 2 == 0;
        let window = if content { 20_000 } else { 4_000 };
        let delay = Duration::from_micros(jitter(round as u64) % window);
        let run = run_and_kill(dir.path(), wanted, content, delay);
        assert_eq!(
            peer.get_or_insert_with(|| run.peer.clone()),
            &run.peer,
            "the PeerId survives"
        );
        // Each run continues where the stored publishes end (0..start are stored).
        assert_eq!(run.start, stored.len() as u64, "round {round}");
        assert_eq!(run.acks.first(), Some(&run.start));
        acks += run.acks.len();
        stored.extend(&run.acks);
        let in_flight = run.last_begun.filter(|b| !run.acks.contains(b));

        rt.block_on(async {
            let registry = P2PRegistryBuilder::new()
                .with_config(config(dir.path()))
                .build()
                .unwrap();
            registry
                .start()
                .await
                .expect("the store opens after a kill");
            assert_eq!(registry.local_peer_id().to_string(), run.peer);
            for &n in &stored {
                check_present(&registry, n).await;
            }
            // The publish in flight: all there, or not at all.
            if let Some(n) = in_flight {
                let whole = registry.get(&id(n)).await.unwrap().is_some();
                if whole {
                    check_present(&registry, n).await;
                    stored.push(n);
                } else {
                    assert!(
                        registry
                            .search(&Query::new(vec![name(n)]))
                            .await
                            .unwrap()
                            .iter()
                            .all(|r| r.package.name != name(n))
                    );
                }
                // A blob without its record (killed between the two) is removed at start:
                // the blobs are exactly the stored packages' content.
                let blobs = files_under(&dir.path().join("blobs"));
                let with_content = stored.iter().filter(|&&n| has_content(n)).count();
                assert_eq!(blobs.len(), with_content, "round {round}: {blobs:?}");
                eprintln!(
                    "round {round}: {} acks, publish {n} ({}) in flight: {}; {} blob files for \
                     {with_content} packages with content",
                    run.acks.len(),
                    if has_content(n) { "content" } else { "record" },
                    if whole { "stored" } else { "absent" },
                    blobs.len(),
                );
            }
            // Nothing else: the stored packages are exactly those.
            assert_eq!(registry.stats().await.cached_packages, stored.len());
            let all = registry
                .search(&Query::default().with_limit(10_000))
                .await
                .unwrap();
            assert_eq!(all.len(), stored.len());
            registry.stop().await.unwrap();
        });
    }
    eprintln!(
        "{acks} acknowledged publishes ({} stored) over {} kills in {:?}",
        stored.len(),
        rounds.len(),
        started.elapsed()
    );
}

/// A varied number: the clock's nanoseconds mixed with the round.
fn jitter(round: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos / 1_000).wrapping_add(round.wrapping_mul(7_919))
}
