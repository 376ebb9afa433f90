//! Memory cost of an idle connection.
//!
//! One listening `Transport` and one dialing `Transport` in this process; N dials, each
//! connection spawned (both ends) with a counting sink, one small message exchanged each way
//! through the stack, then left idle. Heap bytes are counted by a `#[global_allocator]` wrapper
//! around the system allocator (live bytes after − before); RSS from `/proc/self/status`.
//!
//! `cargo bench --bench conn_memory -- [--transport tcp|quic|memory] [--n N] [--idle-secs S]`
//! prints a one-line JSON summary last. See `benches/README.md`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ggen_p2p::transport::{
    ConnectionHandle, ConnectionInfo, InboundSink, Transport, TransportConfig,
};
use ggen_p2p::{Keypair, Multiaddr};
use tokio::sync::Notify;

/// Counts live heap bytes and allocations.
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counters have no effect on the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
            LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> (usize, usize) {
    (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCS.load(Ordering::Relaxed),
    )
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<usize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

struct Args {
    transport: String,
    n: usize,
    idle: Duration,
}

fn parse_args() -> Args {
    let mut a = Args {
        transport: "tcp".into(),
        n: 1000,
        idle: Duration::from_secs(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).unwrap_or_default();
        match key.as_str() {
            "--transport" => a.transport = value(),
            "--n" => a.n = value().parse().expect("--n takes a number"),
            "--idle-secs" => {
                a.idle =
                    Duration::from_secs_f64(value().parse().expect("--idle-secs takes a number"))
            }
            // `cargo bench` passes `--bench`; ignore it and anything else.
            _ => {}
        }
    }
    assert!(
        matches!(a.transport.as_str(), "tcp" | "quic" | "memory"),
        "--transport must be tcp, quic or memory"
    );
    assert!(a.n > 0, "--n must be positive");
    a
}

/// Counts delivered messages; wakes the waiter when `target` is reached.
struct CountSink {
    got: AtomicUsize,
    target: AtomicUsize,
    done: Notify,
}

impl CountSink {
    fn new() -> Self {
        Self {
            got: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            done: Notify::new(),
        }
    }

    fn expect(&self, n: usize) {
        self.got.store(0, Ordering::SeqCst);
        self.target.store(n, Ordering::SeqCst);
    }
}

impl InboundSink for CountSink {
    async fn deliver(&self, _conn: &ConnectionInfo, _message: Bytes) {
        let n = self.got.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.target.load(Ordering::SeqCst) {
            self.done.notify_one();
        }
    }
}

struct Rig {
    dialer: Transport,
    target: Multiaddr,
    /// Inbound handles, pushed by the accept loop.
    inbound: Arc<Mutex<Vec<ConnectionHandle>>>,
    /// Outbound handles.
    outbound: Vec<ConnectionHandle>,
    dial_sink: Arc<CountSink>,
    listen_sink: Arc<CountSink>,
    _keep: (Transport, Option<ggen_p2p::transport::Listener>),
}

async fn rig(kind: &str, capacity: usize) -> Rig {
    let listen: Multiaddr = match kind {
        "tcp" => "/ip4/127.0.0.1/tcp/0",
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
        _ => "/memory/0",
    }
    .parse()
    .expect("multiaddr");
    let (ka, kb) = (Keypair::generate(), Keypair::generate());
    let dialer = Transport::new(&ka, TransportConfig::default()).expect("transport");
    let listener_t = Transport::new(&kb, TransportConfig::default()).expect("transport");
    let mut l = listener_t.listen(&listen).await.expect("listen");
    // QUIC: the dialer listens on 127.0.0.1 too, so all its dials share that endpoint.
    let dial_side = if kind == "quic" {
        Some(dialer.listen(&listen).await.expect("listen"))
    } else {
        None
    };
    let target = l.local_addr().with_peer_id(kb.peer_id());
    let inbound = Arc::new(Mutex::new(Vec::with_capacity(capacity)));
    let listen_sink = Arc::new(CountSink::new());
    let dial_sink = Arc::new(CountSink::new());
    {
        let inbound = inbound.clone();
        let sink = listen_sink.clone();
        tokio::spawn(async move {
            while let Ok(inc) = l.accept().await {
                let inbound = inbound.clone();
                let sink = sink.clone();
                tokio::spawn(async move {
                    let c = inc.upgrade().await.expect("upgrade");
                    let h = c.spawn(sink, |_| {});
                    // Greet the dialer: one message from this end.
                    h.send(Bytes::new(), Bytes::from_static(b"pong"))
                        .await
                        .expect("send");
                    inbound.lock().expect("lock").push(h);
                });
            }
        });
    }
    Rig {
        dialer,
        target,
        inbound,
        outbound: Vec::with_capacity(capacity),
        dial_sink,
        listen_sink,
        _keep: (listener_t, dial_side),
    }
}

impl Rig {
    /// Opens `n` connections (a few dials at a time), each exchanging one message per
    /// direction; returns once every message has been delivered on both sides.
    async fn open(&mut self, n: usize) {
        self.dial_sink.expect(n);
        self.listen_sink.expect(n);
        let dial_done = self.dial_sink.done.notified();
        let listen_done = self.listen_sink.done.notified();
        const PARALLEL: usize = 16;
        let mut left = n;
        while left > 0 {
            let batch = left.min(PARALLEL);
            let mut tasks = Vec::with_capacity(batch);
            for _ in 0..batch {
                let t = self.dialer.clone();
                let target = self.target.clone();
                let sink = self.dial_sink.clone();
                tasks.push(tokio::spawn(async move {
                    let c = t.dial(&target).await.expect("dial");
                    let h = c.spawn(sink, |_| {});
                    h.send(Bytes::new(), Bytes::from_static(b"ping"))
                        .await
                        .expect("send");
                    h
                }));
            }
            for task in tasks {
                self.outbound.push(task.await.expect("dial task"));
            }
            left -= batch;
        }
        tokio::time::timeout(Duration::from_secs(120), async {
            dial_done.await;
            listen_done.await;
        })
        .await
        .expect("messages exchanged on every connection");
        // The accept loop pushes the handle right after its send; wait for the last ones.
        while self.inbound.lock().expect("lock").len() < self.outbound.len() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn close_all(&mut self) {
        for h in self.outbound.drain(..) {
            h.close();
        }
        for h in self.inbound.lock().expect("lock").drain(..) {
            h.close();
        }
    }
}

fn main() {
    let args = parse_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let n = args.n;
    let (heap_before, allocs_before, rss_before, heap_after, allocs_after, rss_after, secs) = rt
        .block_on(async {
            let mut r = rig(&args.transport, n).await;
            // Warm-up: open and close a few connections so one-time allocations (runtime,
            // TLS/quinn state, lazy statics) are not charged to the measured ones.
            r.open(16).await;
            r.close_all();
            tokio::time::sleep(Duration::from_millis(500)).await;
            r.outbound.reserve(n);
            r.inbound.lock().expect("lock").reserve(n);

            let (hb, ab) = live();
            let rb = rss_bytes();
            let start = Instant::now();
            r.open(n).await;
            let secs = start.elapsed().as_secs_f64();
            // Idle: let timers, ACKs and buffers settle.
            tokio::time::sleep(args.idle).await;
            let (ha, aa) = live();
            let ra = rss_bytes();
            assert!(
                r.outbound.iter().all(|h| !h.is_closed()),
                "a connection closed while idle"
            );
            // Keep `r` alive until after the measurement.
            let out = (hb, ab, rb, ha, aa, ra, secs);
            drop(r);
            out
        });
    let heap_pair = (heap_after as f64 - heap_before as f64) / n as f64;
    let allocs_pair = (allocs_after as f64 - allocs_before as f64) / n as f64;
    let rss_pair = (rss_after as f64 - rss_before as f64) / n as f64;
    eprintln!(
        "conn_memory: {} connections over {} opened in {:.2} s; heap {} -> {} bytes, RSS {} -> {} bytes",
        n, args.transport, secs, heap_before, heap_after, rss_before, rss_after
    );
    println!(
        "{{\"transport\":\"{}\",\"connections\":{},\"heap_bytes_per_conn_end\":{:.0},\"heap_bytes_per_conn_pair\":{:.0},\"allocations_per_conn_pair\":{:.1},\"rss_bytes_per_conn_pair\":{:.0},\"target_bytes_per_conn_end\":65536}}",
        args.transport,
        n,
        heap_pair / 2.0,
        heap_pair,
        allocs_pair,
        rss_pair
    );
}
