//! Crash safety of the registry store: a child process commits publishes (or writes blobs)
//! in a loop and prints each acknowledgement; the parent SIGKILLs it mid-stream, reopens the
//! store and checks that everything acknowledged is there and that nothing is half-written.
//!
//! The child is this test binary re-run with `GGEN_STORE_CRASH_CHILD=<mode>:<dir>`, which
//! makes the `crash_child` test act as the child (it does nothing otherwise).

mod common;

use common::{files_under, pseudo_random_bytes};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ggen_p2p::registry::store::{BLOB_DIR, Batch, OwnerEntry, ProviderEntry, Store, unix_ms_now};
use ggen_p2p::rpc::content::ContentHash;

const CHILD_ENV: &str = "GGEN_STORE_CRASH_CHILD";
const BLOB_SIZE: usize = 2 << 20;

fn id(n: u64) -> String {
    format!("pkg{n:08}@1.0.0")
}

fn name(n: u64) -> String {
    format!("pkg{n:08}")
}

fn payload(n: u64) -> Vec<u8> {
    format!("signed record {n};").repeat(30).into_bytes()
}

fn blob(i: u64) -> Vec<u8> {
    pseudo_random_bytes(i, BLOB_SIZE)
}

/// The child role: loops until killed. A no-op in a normal test run.
#[test]
fn crash_child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mode, dir) = role.split_once(':').expect("mode:dir");
    let dir = Path::new(dir);
    let store = Store::open(dir).unwrap();
    let me = store.load_or_create_identity().unwrap().peer_id();
    // libtest may have printed "test crash_child ... " without a newline: markers are
    // matched anywhere in a line.
    println!("@@id {me}");
    match mode {
        "publish" => {
            // Publishes are sequential, so the committed ones are 0..count.
            let start = store.record_count().unwrap();
            for n in start.. {
                let mut b = Batch::new();
                b.put_record(&id(n), &payload(n))
                    .claim_owner(
                        &name(n),
                        OwnerEntry {
                            owner: me.to_string(),
                            claim: payload(n),
                        },
                    )
                    .mark_own(&id(n))
                    .add_provider(
                        id(n).as_bytes(),
                        ProviderEntry {
                            peer: me,
                            addrs: vec![],
                            expires_at_ms: unix_ms_now() + 3_600_000,
                        },
                    );
                store.apply(&b).unwrap();
                println!("@@ack {n}");
            }
        }
        "blob" => {
            let scratch = dir.join("import-src");
            // Blobs are distinct, so those stored are the ones to skip.
            for i in store.blobs().unwrap().len() as u64.. {
                let data = blob(i);
                let h = if i % 2 == 0 {
                    let h = ContentHash::of(&data);
                    store.put_blob(&h, &data).unwrap();
                    h
                } else {
                    std::fs::write(&scratch, &data).unwrap();
                    store.import_blob_from_file(&scratch).unwrap()
                };
                println!("@@ack {h}");
            }
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Runs a child in `mode` on `dir` until it has acknowledged `wanted` more items, waits
/// `delay` more (so the kill lands at varied points of a commit or blob write), then
/// SIGKILLs it. Returns the child's PeerId line and the acknowledgements.
fn run_and_kill(mode: &str, dir: &Path, wanted: usize, delay: Duration) -> (String, Vec<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{mode}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut peer = String::new();
    let mut acks = Vec::new();
    while acks.len() < wanted {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                if let Some((_, p)) = line.split_once("@@id ") {
                    peer = p.to_string();
                } else if let Some((_, a)) = line.split_once("@@ack ") {
                    acks.push(a.to_string());
                }
            }
            Err(e) => {
                let _ = child.kill();
                panic!(
                    "child stopped after {} acks ({e}): {:?}",
                    acks.len(),
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
    (peer, acks)
}

#[test]
fn killed_publisher_keeps_every_acknowledged_publish_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut first_peer = None;
    let mut last_acked = None;
    for round in 0..3 {
        let delay = Duration::from_micros(jitter(round) % 3_000);
        let (peer, acks) = run_and_kill("publish", dir.path(), 150, delay);
        assert_eq!(
            *first_peer.get_or_insert(peer.clone()),
            peer,
            "the PeerId survives"
        );
        let acked: Vec<u64> = acks.iter().map(|a| a.parse().unwrap()).collect();
        // Each round continues where the committed ones end.
        if let Some(prev) = last_acked {
            assert!(acked[0] > prev, "round {round} restarted below {prev}");
        }
        let top = *acked.last().unwrap();
        last_acked = Some(top);

        // The lock died with the child: reopening works at once.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store
                .load_or_create_identity()
                .unwrap()
                .peer_id()
                .to_string(),
            peer
        );
        let records = store.records().unwrap();
        let count = records.len() as u64;
        assert!(
            count > top,
            "round {round}: acknowledged {top} but only {count} records"
        );
        eprintln!("publish round {round}: last ack {top}, {count} committed");
        for (n, (got_id, bytes)) in records.iter().enumerate() {
            let n = n as u64;
            assert_eq!(*got_id, id(n), "records are the prefix 0..{count}");
            assert_eq!(*bytes, payload(n), "record {n} intact");
        }
        // All or nothing: every record has its owner, own mark and provider, and nothing
        // of an uncommitted publish is visible.
        let owners = store.owners().unwrap();
        let own = store.own_ids().unwrap();
        let providers = store.all_providers().unwrap();
        assert_eq!(owners.len() as u64, count);
        assert_eq!(own.len() as u64, count);
        assert_eq!(providers.len() as u64, count);
        for n in 0..count {
            let o = &owners[n as usize];
            assert_eq!(o.0, name(n));
            assert_eq!(o.1.owner, peer);
            assert_eq!(o.1.claim, payload(n));
            assert_eq!(own[n as usize], id(n));
            assert_eq!(providers[n as usize].0, id(n).into_bytes());
        }
        store.close();
    }
}

/// A varied number: the clock's nanoseconds mixed with the round.
fn jitter(round: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos / 1_000).wrapping_add(round.wrapping_mul(7_919))
}

fn store_files(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|f| {
            f.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<ContentHash>()
                .is_ok()
        })
        .count()
}

#[test]
fn killed_blob_writer_leaves_no_partial_blob_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = dir.path().join(BLOB_DIR);
    let mut all_acked = Vec::new();
    for round in 0..4 {
        let delay = Duration::from_micros(jitter(round) % 20_000);
        let (_, acks) = run_and_kill("blob", dir.path(), 8, delay);
        all_acked.extend(acks.iter().map(|a| a.parse::<ContentHash>().unwrap()));
        // Before reopening: any file under a final (hash) name holds exactly that content.
        for f in files_under(&blobs) {
            let file_name = f.file_name().unwrap().to_str().unwrap();
            if let Ok(h) = file_name.parse::<ContentHash>() {
                let bytes = std::fs::read(&f).unwrap();
                assert_eq!(ContentHash::of(&bytes), h, "{} is partial", f.display());
            } else {
                assert!(file_name.starts_with(".tmp-"), "unexpected {}", f.display());
            }
        }
        let temps = files_under(&blobs).len() - store_files(&blobs);
        eprintln!(
            "blob round: {} acks, {temps} temp files left by the kill",
            acks.len()
        );
        let store = Store::open(dir.path()).unwrap();
        // Open removed the stale temp files.
        let stale: Vec<_> = files_under(&blobs)
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .collect();
        assert!(stale.is_empty(), "{stale:?}");
        for h in &all_acked {
            assert!(store.has_blob(h), "acknowledged blob {h} lost");
            assert_eq!(store.read_blob(h).unwrap().unwrap().len(), BLOB_SIZE);
        }
        store.close();
    }
}
