//! Helpers shared by the multi-node tests.
#![allow(dead_code)]

use std::future::Future;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ggen_p2p::node::{InboundMessage, Node, NodeConfig, NodeHandle};
use ggen_p2p::{Keypair, Multiaddr, ProtocolId};
use tokio::sync::mpsc;

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts panics anywhere in the process (spawned tasks included), so a test can assert that
/// hostile input never made any task panic.
pub fn count_panics() {
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            prev(info);
        }));
    });
}

pub fn panics() -> usize {
    PANICS.load(Ordering::SeqCst)
}

pub fn addr(s: &str) -> Multiaddr {
    s.parse().expect("valid multiaddr")
}

pub fn proto(name: &'static str) -> ProtocolId {
    ProtocolId::new(name, 1).expect("valid protocol id")
}

/// A node listening on `listen` with test-friendly settings.
pub async fn node(listen: &str) -> NodeHandle {
    node_with(listen, |_| {}).await
}

pub async fn node_with(listen: &str, f: impl FnOnce(&mut NodeConfig)) -> NodeHandle {
    log_from_env();
    let mut cfg = NodeConfig {
        listen: vec![addr(listen)],
        max_connections: 1000,
        ..NodeConfig::default()
    };
    f(&mut cfg);
    Node::spawn(Keypair::generate(), cfg)
        .await
        .expect("node starts")
}

/// The node's first listen address with its `/p2p/` suffix.
pub fn dial_addr(n: &NodeHandle) -> Multiaddr {
    n.listen_addrs()[0].with_peer_id(n.local_peer_id())
}

/// Polls `cond` until it holds or `limit` passes; panics with `what` on timeout.
pub async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `fut` with a deadline.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// Receives the next message from a handler queue, with a deadline.
pub async fn recv(rx: &mut mpsc::Receiver<InboundMessage>, limit: Duration) -> InboundMessage {
    within(limit, "message", rx.recv())
        .await
        .expect("handler queue open")
}

/// With `RUST_LOG` set (say `RUST_LOG=ggen_p2p=debug cargo test --test x -- --nocapture`),
/// logs go to the test output; otherwise nothing is installed.
pub fn log_from_env() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// `len` deterministic, incompressible-looking bytes from `seed` (xorshift64).
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Every file under `dir`, recursively; none if `dir` does not exist.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    let mut out = Vec::new();
    for e in entries {
        let p = e
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}
