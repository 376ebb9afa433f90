//! Runs the `ggen` binary as an operator would: start a node, read what it prints, ping it
//! from another process, stop it with SIGINT, restart it with the same identity.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_ggen");
const T: Duration = Duration::from_secs(30);

struct Running {
    child: Child,
    peer_id: String,
    listening: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &std::path::Path, extra: &[&str]) -> Running {
    let mut child = Command::new(BIN)
        .args([
            "p2p",
            "start",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
            "--no-mdns",
            "--api",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ggen starts");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (etx, erx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    let mut peer_id = None;
    let mut listening = Vec::new();
    while listening.len() < 2 {
        let line = rx
            .recv_timeout(T)
            .expect("ggen p2p start prints its addresses");
        if let Some(id) = line.strip_prefix("peer id: ") {
            peer_id = Some(id.to_string());
        } else if let Some(a) = line.strip_prefix("listening on ") {
            listening.push(a.to_string());
        }
    }
    let peer_id = peer_id.expect("peer id line");
    for a in &listening {
        assert!(a.ends_with(&format!("/p2p/{peer_id}")), "{a}");
        assert!(
            !a.contains("/tcp/0/") && !a.contains("/udp/0/"),
            "real port printed: {a}"
        );
    }
    Running {
        child,
        peer_id,
        listening,
        stderr: erx,
    }
}

fn wait_for_stderr(r: &Running, needle: &str) -> String {
    let deadline = std::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match r.stderr.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no log line containing {needle:?}"),
        }
    }
}

fn ggen(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("ggen runs")
}

#[test]
fn start_ping_stop_restart_keeps_identity() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);

    // `ggen p2p id` on the same data dir prints the same identity.
    let id = ggen(&["p2p", "id", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(id.status.success());
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), node.peer_id);

    // Ping over each address (TCP and QUIC).
    for addr in &node.listening {
        let out = ggen(&["p2p", "ping", addr, "--count", "2", "--interval", "0"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "ping {addr} failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout
                .matches(&format!("pong from {}", node.peer_id))
                .count(),
            2,
            "{stdout}"
        );
        assert!(stdout.contains("time="), "{stdout}");
    }
    // The node logs connections with the peer and address.
    let line = wait_for_stderr(&node, "connected");
    assert!(
        line.contains("peer=12D3KooW") && line.contains("addr=/ip4/127.0.0.1/"),
        "{line}"
    );
    wait_for_stderr(&node, "disconnected");

    // SIGINT: clean exit.
    let mut node = node;
    let pid = node.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(s) = node.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ggen did not exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");

    // Restart on the same data dir: same identity.
    let again = start(dir.path(), &[]);
    assert_eq!(again.peer_id, node.peer_id);
}

#[test]
fn ping_failures_exit_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), &[]);
    let other = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq";
    for addr in &node.listening {
        let base = addr.rsplit_once("/p2p/").unwrap().0;
        let out = ggen(&["p2p", "ping", &format!("{base}/p2p/{other}"), "-n", "1"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: peer id mismatch"), "{err}");
    }
    // Nobody listens on port 1.
    let out = ggen(&[
        "p2p",
        "ping",
        &format!("/ip4/127.0.0.1/tcp/1/p2p/{other}"),
        "-n",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    // A malformed address is refused by argument parsing, naming the bad part.
    let out = ggen(&["p2p", "ping", "/ip4/1.2.3/tcp/1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`1.2.3`"));
}

#[test]
fn a_node_started_with_bootstrap_connects_to_it() {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let boot = start(d1.path(), &[]);
    let tcp = boot
        .listening
        .iter()
        .find(|a| a.contains("/tcp/"))
        .unwrap()
        .clone();
    let joiner = start(d2.path(), &["--bootstrap", &tcp]);
    let line = wait_for_stderr(&joiner, "connected");
    assert!(line.contains(&boot.peer_id), "{line}");
    wait_for_stderr(&boot, &joiner.peer_id);
}

#[test]
fn corrupt_identity_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.key"), b"not a key").unwrap();
    let out = ggen(&["p2p", "id", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.key") && err.contains("malformed"),
        "{err}"
    );
}

/// Two `ggen p2p start` processes, the second bootstrapping through the first, serve the DHT:
/// a library node that knows only the first finds the second by lookup. A `--config` file
/// (a `P2PConfig`) with `[network]`, `[dht]` and `[gossipsub]` tables is accepted.
#[test]
fn started_nodes_serve_the_dht() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = da.path().join("node.toml");
    std::fs::write(
        &config,
        "[network]\nmax_connections = 50\n[dht]\nk = 16\n[gossipsub]\nmesh_n = 6\n",
    )
    .unwrap();
    let a = start(da.path(), &["--config", config.to_str().unwrap()]);
    let tcp_a = a
        .listening
        .iter()
        .find(|l| l.contains("/tcp/"))
        .unwrap()
        .clone();
    let b = start(db.path(), &["--bootstrap", &tcp_a]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use ggen_p2p::kademlia::{Dht, KademliaConfig, Key};
        use ggen_p2p::node::{Node, NodeConfig};
        let node = Node::spawn(
            ggen_p2p::Keypair::generate(),
            NodeConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
                bootstrap: vec![tcp_a.parse().unwrap()],
                ..NodeConfig::default()
            },
        )
        .await
        .unwrap();
        let dht = Dht::spawn(&node, KademliaConfig::default(), None).unwrap();
        let target: ggen_p2p::PeerId = b.peer_id.parse().unwrap();
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let _ = dht.bootstrap().await;
            if let Ok((peers, _)) = dht.find_closest_peers(Key::from_peer(&target)).await {
                if peers.iter().any(|p| p.peer == target) {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the second ggen node was never found through the first"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        node.shutdown().await;
    });
}
