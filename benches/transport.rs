//! Transport benchmarks: handshakes and bulk throughput of our TCP+Noise and QUIC stacks, each
//! measured in the same run as its limit (raw TCP, snow's in-memory cipher rate, raw quinn).
//!
//! `cargo bench --bench transport [-- FILTER]` runs the criterion groups, then a JSON pass of
//! simple timing loops (median of a few repetitions) and prints a one-line JSON summary last.
//! Environment: `GGEN_BENCH_JSON_ONLY=1` skips the criterion groups; `GGEN_BENCH_MSG_BYTES`
//! changes the message size of the throughput runs (default 1 MiB). See `benches/README.md`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput};
use ggen_p2p::transport::noise::{self, NoiseIdentity, Role};
use ggen_p2p::transport::{
    ConnectionHandle, ConnectionInfo, InboundSink, Listener, Transport, TransportConfig,
};
use ggen_p2p::wire::Limits;
use ggen_p2p::{Keypair, Multiaddr, PeerId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;
use tokio::sync::{Notify, mpsc};

const MIB: usize = 1 << 20;
/// Plaintext bytes of one full Noise transport frame (65 535 − 16-byte tag).
const NOISE_FRAME: usize = noise::MAX_FRAME_PLAINTEXT;
/// Bytes per iteration in the criterion groups (lighter) and in the JSON pass.
const CRIT_TCP_VOLUME: usize = 64 * MIB;
const CRIT_QUIC_VOLUME: usize = 32 * MIB;
const JSON_TCP_VOLUME: usize = 256 * MIB;
const JSON_QUIC_VOLUME: usize = 128 * MIB;
/// Repetitions of each JSON-pass measurement (the median is reported).
const REPS: usize = 5;

const TCP_LISTEN: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC_LISTEN: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

#[path = "shared/raw.rs"]
mod raw;
use raw::{RawTcp, raw_quinn, raw_quinn_transfer, raw_tcp};

// ---------------------------------------------------------------------------------------------
// Command line

struct Args {
    /// First positional argument (criterion's filter); matched as a substring of bench ids.
    filter: Option<String>,
    /// `cargo bench` passes `--bench`; without it (e.g. `cargo test --benches`) the JSON pass
    /// is skipped and criterion runs each benchmark once.
    bench_mode: bool,
    list: bool,
    json_only: bool,
    msg_bytes: usize,
}

impl Args {
    fn parse() -> Self {
        // Criterion options that take a value: skip the value when looking for the filter.
        const WITH_VALUE: &[&str] = &[
            "--save-baseline",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--measurement-time",
            "--warm-up-time",
            "--sample-size",
            "--profile-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
            "--color",
            "--format",
            "-c",
        ];
        let mut filter = None;
        let mut bench_mode = false;
        let mut list = false;
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            if a == "--bench" {
                bench_mode = true;
            } else if a == "--list" {
                list = true;
            } else if WITH_VALUE.contains(&a.as_str()) {
                it.next();
            } else if a.starts_with('-') {
                // other flags (`--exact`, `--quick`, `--noplot`, `--key=value`, …)
            } else if filter.is_none() {
                filter = Some(a);
            }
        }
        let msg_bytes = std::env::var("GGEN_BENCH_MSG_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(MIB);
        Self {
            filter,
            bench_mode,
            list,
            json_only: std::env::var_os("GGEN_BENCH_JSON_ONLY").is_some(),
            msg_bytes,
        }
    }

    fn wants(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }

    fn wants_any(&self, ids: &[&str]) -> bool {
        ids.iter().any(|id| self.wants(id))
    }
}

// ---------------------------------------------------------------------------------------------
// Setup helpers

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn addr(s: &str) -> Multiaddr {
    s.parse().expect("valid multiaddr")
}

fn transport() -> (Keypair, Transport) {
    let k = Keypair::generate();
    let t = Transport::new(&k, TransportConfig::default()).expect("transport");
    (k, t)
}

/// Counts delivered bytes; wakes the waiter once `target` bytes arrived.
struct CountSink {
    bytes: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

impl CountSink {
    fn new() -> Self {
        Self {
            bytes: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            done: Notify::new(),
        }
    }
}

impl InboundSink for CountSink {
    async fn deliver(&self, _conn: &ConnectionInfo, message: Bytes) {
        let len = message.len() as u64;
        let n = self.bytes.fetch_add(len, Ordering::AcqRel) + len;
        if n >= self.target.load(Ordering::Acquire) {
            self.done.notify_one();
        }
    }
}

/// Two transports and one running connection between them: `tx` sends, `sink` receives.
struct StackPair {
    tx: ConnectionHandle,
    sink: Arc<CountSink>,
    _rx: ConnectionHandle,
    _keep: (Transport, Transport, Listener, Option<Listener>),
}

async fn stack_pair(quic: bool) -> StackPair {
    let (_ka, ta) = transport();
    let (kb, tb) = transport();
    let listen = addr(if quic { QUIC_LISTEN } else { TCP_LISTEN });
    let mut l = tb.listen(&listen).await.expect("listen");
    // The dialer listens too, so QUIC dials reuse its 127.0.0.1 endpoint.
    let dial_side = if quic {
        Some(ta.listen(&listen).await.expect("listen"))
    } else {
        None
    };
    let target = l.local_addr().with_peer_id(kb.peer_id());
    let server = tokio::spawn(async move {
        let c = l
            .accept()
            .await
            .expect("accept")
            .upgrade()
            .await
            .expect("upgrade");
        (c, l)
    });
    let out = ta.dial(&target).await.expect("dial");
    let (inb, l) = server.await.expect("server task");
    let sink = Arc::new(CountSink::new());
    let rx = inb.spawn(sink.clone(), |_| {});
    let tx = out.spawn(Arc::new(CountSink::new()), |_| {});
    StackPair {
        tx,
        sink,
        _rx: rx,
        _keep: (ta, tb, l, dial_side),
    }
}

/// Sends `volume` bytes as messages of `payload.len()` bytes; time from the first send to the
/// last byte delivered to the receiving sink.
async fn stack_transfer(p: &StackPair, payload: &Bytes, volume: usize) -> Duration {
    let n = (volume / payload.len()).max(1);
    p.sink.bytes.store(0, Ordering::Release);
    p.sink
        .target
        .store((n * payload.len()) as u64, Ordering::Release);
    let start = Instant::now();
    for _ in 0..n {
        p.tx.send(Bytes::new(), payload.clone())
            .await
            .expect("send");
    }
    p.sink.done.notified().await;
    start.elapsed()
}

/// Writer task `write_all`s, reader task `read_exact`s `volume` bytes in `msg`-byte pieces.
async fn raw_tcp_transfer(raw: &mut RawTcp, msg: usize, volume: usize) -> Duration {
    let n = (volume / msg).max(1);
    let (mut w, mut r) = (raw.w.take().expect("w"), raw.r.take().expect("r"));
    let start = Instant::now();
    let wt = tokio::spawn(async move {
        let buf = vec![0xa5u8; msg];
        for _ in 0..n {
            w.write_all(&buf).await.expect("write");
        }
        w
    });
    let rt = tokio::spawn(async move {
        let mut buf = vec![0u8; msg];
        for _ in 0..n {
            r.read_exact(&mut buf).await.expect("read");
        }
        r
    });
    let (w, r) = (wt.await.expect("writer"), rt.await.expect("reader"));
    let el = start.elapsed();
    raw.w = Some(w);
    raw.r = Some(r);
    el
}

/// Both ends of an in-memory Noise session with our exact parameters.
struct SnowPair {
    a: snow::StatelessTransportState,
    b: snow::StatelessTransportState,
    nonce: u64,
    plain: Vec<u8>,
    cipher: Vec<u8>,
    out: Vec<u8>,
}

fn snow_pair() -> SnowPair {
    let (a, b) = raw::snow_transport_pair();
    SnowPair {
        a,
        b,
        nonce: 0,
        plain: vec![0xa5; NOISE_FRAME],
        cipher: vec![0; noise::MAX_NOISE_MESSAGE],
        out: vec![0; noise::MAX_NOISE_MESSAGE],
    }
}

impl SnowPair {
    /// Encrypts (and, with `decrypt`, decrypts) `volume` bytes in full Noise frames on this
    /// thread.
    fn run(&mut self, volume: usize, decrypt: bool) -> Duration {
        let start = Instant::now();
        let mut left = volume;
        while left > 0 {
            let take = left.min(NOISE_FRAME);
            let n = self
                .a
                .write_message(self.nonce, &self.plain[..take], &mut self.cipher)
                .expect("encrypt");
            if decrypt {
                let k = self
                    .b
                    .read_message(self.nonce, &self.cipher[..n], &mut self.out)
                    .expect("decrypt");
                debug_assert_eq!(k, take);
            }
            std::hint::black_box(&self.cipher);
            self.nonce += 1;
            left -= take;
        }
        start.elapsed()
    }
}

/// A dialing transport and a listener whose accept loop completes every handshake and reports
/// it on `done`.
struct HandshakeRig {
    dialer: Transport,
    target: Multiaddr,
    done: mpsc::Receiver<()>,
    _keep: (Transport, Option<Listener>),
}

async fn handshake_rig(quic: bool) -> HandshakeRig {
    let (_ka, ta) = transport();
    let (kb, tb) = transport();
    let listen = addr(if quic { QUIC_LISTEN } else { TCP_LISTEN });
    let mut l = tb.listen(&listen).await.expect("listen");
    // QUIC dials then go out from the dialer's 127.0.0.1 listening endpoint.
    let dial_side = if quic {
        Some(ta.listen(&listen).await.expect("listen"))
    } else {
        None
    };
    let target = l.local_addr().with_peer_id(kb.peer_id());
    let (done_tx, done) = mpsc::channel(1024);
    tokio::spawn(async move {
        while let Ok(inc) = l.accept().await {
            let done = done_tx.clone();
            tokio::spawn(async move {
                let c = inc.upgrade().await.expect("upgrade");
                drop(c);
                let _ = done.send(()).await;
            });
        }
    });
    HandshakeRig {
        dialer: ta,
        target,
        done,
        _keep: (tb, dial_side),
    }
}

impl HandshakeRig {
    /// One complete handshake (both ends done); the connection is closed afterwards.
    async fn dial_once(&mut self) {
        let c = self.dialer.dial(&self.target).await.expect("dial");
        self.done.recv().await.expect("server side");
        drop(c);
    }
}

struct NoiseIds {
    a: NoiseIdentity,
    b: NoiseIdentity,
    pb: PeerId,
    limits: Limits,
}

fn noise_ids() -> NoiseIds {
    let (ka, kb) = (Keypair::generate(), Keypair::generate());
    NoiseIds {
        a: NoiseIdentity::new(&ka).expect("identity"),
        b: NoiseIdentity::new(&kb).expect("identity"),
        pb: kb.peer_id(),
        limits: Limits::default(),
    }
}

/// Full XX handshake with identity signatures over an in-memory pipe, both ends on one task.
async fn noise_mem_handshake(ids: &NoiseIds) {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let (x, y) = tokio::join!(
        noise::handshake(
            Box::new(ar),
            Box::new(aw),
            &ids.a,
            Role::Initiator,
            Some(ids.pb),
            &ids.limits
        ),
        noise::handshake(
            Box::new(br),
            Box::new(bw),
            &ids.b,
            Role::Responder,
            None,
            &ids.limits
        ),
    );
    x.expect("initiator");
    y.expect("responder");
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------------------------
// Criterion groups

fn crit_handshakes(c: &mut Criterion, args: &Args, rt: &Runtime) {
    if args.wants_any(&[
        "noise_xx_handshake/in_memory",
        "noise_xx_handshake/tcp_loopback",
    ]) {
        let mut g = c.benchmark_group("noise_xx_handshake");
        g.throughput(Throughput::Elements(1));
        let ids = noise_ids();
        let ct = current_thread();
        g.bench_function("in_memory", |b| {
            b.iter(|| ct.block_on(noise_mem_handshake(&ids)))
        });
        if args.wants("noise_xx_handshake/tcp_loopback") {
            let mut rig = rt.block_on(handshake_rig(false));
            g.bench_function("tcp_loopback", |b| b.iter(|| rt.block_on(rig.dial_once())));
        }
        g.finish();
    }
    if args.wants("quic_handshake/loopback") {
        let mut g = c.benchmark_group("quic_handshake");
        g.throughput(Throughput::Elements(1));
        let mut rig = rt.block_on(handshake_rig(true));
        g.bench_function("loopback", |b| b.iter(|| rt.block_on(rig.dial_once())));
        g.finish();
    }
}

fn crit_tcp_throughput(c: &mut Criterion, args: &Args, rt: &Runtime, payload: &Bytes) {
    let ids = [
        "tcp_noise_throughput/stack",
        "tcp_noise_throughput/raw_tcp",
        "tcp_noise_throughput/snow_encrypt_decrypt",
        "tcp_noise_throughput/snow_encrypt",
    ];
    if !args.wants_any(&ids) {
        return;
    }
    let v = CRIT_TCP_VOLUME;
    let mut g = c.benchmark_group("tcp_noise_throughput");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(v as u64));
    if args.wants(ids[0]) {
        let pair = rt.block_on(stack_pair(false));
        g.bench_function("stack", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        t += stack_transfer(&pair, payload, v).await;
                    }
                    t
                })
            })
        });
    }
    if args.wants(ids[1]) {
        let mut raw = rt.block_on(raw_tcp());
        g.bench_function("raw_tcp", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        t += raw_tcp_transfer(&mut raw, payload.len(), v).await;
                    }
                    t
                })
            })
        });
    }
    let mut sp = snow_pair();
    for (id, decrypt) in [("snow_encrypt_decrypt", true), ("snow_encrypt", false)] {
        if args.wants(&format!("tcp_noise_throughput/{id}")) {
            g.bench_function(id, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| sp.run(v, decrypt)).sum())
            });
        }
    }
    g.finish();
}

fn crit_quic_throughput(c: &mut Criterion, args: &Args, rt: &Runtime, payload: &Bytes) {
    let ids = ["quic_throughput/stack", "quic_throughput/raw_quinn"];
    if !args.wants_any(&ids) {
        return;
    }
    let v = CRIT_QUIC_VOLUME;
    let mut g = c.benchmark_group("quic_throughput");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Bytes(v as u64));
    if args.wants(ids[0]) {
        let pair = rt.block_on(stack_pair(true));
        g.bench_function("stack", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        t += stack_transfer(&pair, payload, v).await;
                    }
                    t
                })
            })
        });
    }
    if args.wants(ids[1]) {
        let q = rt.block_on(raw_quinn());
        g.bench_function("raw_quinn", |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut t = Duration::ZERO;
                    for _ in 0..iters {
                        t += raw_quinn_transfer(&q, payload, v).await;
                    }
                    t
                })
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// JSON pass

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time consumed so far by all threads of this process (ns), from
/// `/proc/self/task/*/schedstat`; `None` where unavailable.
fn process_cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir("/proc/self/task").ok()? {
        let path = t.ok()?.path().join("schedstat");
        let s = std::fs::read_to_string(path).ok()?;
        total += s.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// One throughput repetition: MB/s and CPU ns per byte (all threads).
struct Rep {
    mb_s: f64,
    cpu_ns_per_byte: Option<f64>,
}

fn rep(bytes: usize, run: impl FnOnce() -> Duration) -> Rep {
    let c0 = process_cpu_ns();
    let d = run();
    let c1 = process_cpu_ns();
    Rep {
        mb_s: mb_s(bytes, d),
        cpu_ns_per_byte: c0
            .zip(c1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / bytes as f64),
    }
}

async fn rep_async(bytes: usize, run: impl Future<Output = Duration>) -> Rep {
    let c0 = process_cpu_ns();
    let d = run.await;
    let c1 = process_cpu_ns();
    Rep {
        mb_s: mb_s(bytes, d),
        cpu_ns_per_byte: c0
            .zip(c1)
            .map(|(a, b)| b.saturating_sub(a) as f64 / bytes as f64),
    }
}

/// Medians of the repetitions' rate and CPU cost.
fn medians(reps: Vec<Rep>) -> (f64, Option<f64>) {
    let cpu: Option<Vec<f64>> = reps.iter().map(|r| r.cpu_ns_per_byte).collect();
    (
        median(reps.iter().map(|r| r.mb_s).collect()),
        cpu.map(median),
    )
}

fn mb_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn per_s(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// Results of the JSON pass; `None` for what the filter skipped.
#[derive(Default)]
struct Summary {
    noise_handshakes_per_s: Option<f64>,
    tcp_noise_handshakes_per_s: Option<f64>,
    quic_handshakes_per_s: Option<f64>,
    tcp_noise: Option<(f64, Option<f64>)>,
    raw_tcp: Option<(f64, Option<f64>)>,
    snow_encrypt_decrypt: Option<(f64, Option<f64>)>,
    snow_encrypt: Option<(f64, Option<f64>)>,
    quic: Option<(f64, Option<f64>)>,
    raw_quinn: Option<(f64, Option<f64>)>,
}

fn json_num(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

impl Summary {
    fn to_json(&self) -> String {
        let rate = |m: Option<(f64, Option<f64>)>| m.map(|(r, _)| r);
        let cpu = |m: Option<(f64, Option<f64>)>| m.and_then(|(_, c)| c);
        let f = [
            ("noise_handshakes_per_s", self.noise_handshakes_per_s),
            (
                "tcp_noise_handshakes_per_s",
                self.tcp_noise_handshakes_per_s,
            ),
            ("quic_handshakes_per_s", self.quic_handshakes_per_s),
            ("tcp_noise_mb_s", rate(self.tcp_noise)),
            ("raw_tcp_mb_s", rate(self.raw_tcp)),
            ("snow_encrypt_decrypt_mb_s", rate(self.snow_encrypt_decrypt)),
            ("snow_encrypt_mb_s", rate(self.snow_encrypt)),
            (
                "tcp_noise_ratio_to_inmemory",
                ratio(rate(self.tcp_noise), rate(self.snow_encrypt_decrypt)),
            ),
            ("quic_mb_s", rate(self.quic)),
            ("raw_quinn_mb_s", rate(self.raw_quinn)),
            (
                "quic_ratio_to_raw",
                ratio(rate(self.quic), rate(self.raw_quinn)),
            ),
            // CPU time of the whole process per byte moved (both ends, kernel included):
            // a figure that other load on the machine disturbs much less than MB/s.
            ("tcp_noise_cpu_ns_per_byte", cpu(self.tcp_noise)),
            ("raw_tcp_cpu_ns_per_byte", cpu(self.raw_tcp)),
            (
                "snow_encrypt_decrypt_cpu_ns_per_byte",
                cpu(self.snow_encrypt_decrypt),
            ),
            ("quic_cpu_ns_per_byte", cpu(self.quic)),
            ("raw_quinn_cpu_ns_per_byte", cpu(self.raw_quinn)),
        ];
        let body: Vec<String> = f
            .iter()
            .map(|(k, v)| format!("\"{k}\":{}", json_num(*v)))
            .collect();
        format!("{{{}}}", body.join(","))
    }
}

fn note_rate(name: &str, m: (f64, Option<f64>)) {
    let cpu = m.1.map_or("-".to_string(), |c| format!("{c:.3}"));
    eprintln!(
        "json pass: {name:<40} {:>10.1} MB/s   {cpu:>7} CPU ns/byte",
        m.0
    );
}

fn note_hs(name: &str, v: f64) {
    eprintln!("json pass: {name:<40} {v:>10.1} handshakes/s");
}

fn json_pass(args: &Args, rt: &Runtime, payload: &Bytes) -> Summary {
    let mut s = Summary::default();

    if args.wants("noise_xx_handshake/in_memory") {
        let ids = noise_ids();
        let ct = current_thread();
        let k = 300;
        let rates = (0..REPS)
            .map(|_| {
                let t = Instant::now();
                ct.block_on(async {
                    for _ in 0..k {
                        noise_mem_handshake(&ids).await;
                    }
                });
                per_s(k, t.elapsed())
            })
            .collect();
        let v = median(rates);
        note_hs("noise_xx_handshake/in_memory", v);
        s.noise_handshakes_per_s = Some(v);
    }
    for (id, quic, k) in [
        ("noise_xx_handshake/tcp_loopback", false, 300),
        ("quic_handshake/loopback", true, 100),
    ] {
        if !args.wants(id) {
            continue;
        }
        let v = rt.block_on(async {
            let mut rig = handshake_rig(quic).await;
            rig.dial_once().await;
            let mut rates = Vec::new();
            for _ in 0..REPS {
                let start = Instant::now();
                for _ in 0..k {
                    rig.dial_once().await;
                }
                rates.push(per_s(k, start.elapsed()));
            }
            median(rates)
        });
        note_hs(id, v);
        if quic {
            s.quic_handshakes_per_s = Some(v);
        } else {
            s.tcp_noise_handshakes_per_s = Some(v);
        }
    }

    let msg = payload.len();
    let tv = (JSON_TCP_VOLUME / msg).max(1) * msg;
    if args.wants("tcp_noise_throughput/stack") {
        let m = rt.block_on(async {
            let pair = stack_pair(false).await;
            stack_transfer(&pair, payload, 16 * MIB).await; // warm up
            let mut r = Vec::new();
            for _ in 0..REPS {
                r.push(rep_async(tv, stack_transfer(&pair, payload, tv)).await);
            }
            medians(r)
        });
        note_rate("tcp_noise_throughput/stack", m);
        s.tcp_noise = Some(m);
    }
    if args.wants("tcp_noise_throughput/raw_tcp") {
        let m = rt.block_on(async {
            let mut raw = raw_tcp().await;
            raw_tcp_transfer(&mut raw, msg, 16 * MIB).await;
            let mut r = Vec::new();
            for _ in 0..REPS {
                r.push(rep_async(tv, raw_tcp_transfer(&mut raw, msg, tv)).await);
            }
            medians(r)
        });
        note_rate("tcp_noise_throughput/raw_tcp", m);
        s.raw_tcp = Some(m);
    }
    let mut sp = snow_pair();
    for (id, decrypt) in [("snow_encrypt_decrypt", true), ("snow_encrypt", false)] {
        if !args.wants(&format!("tcp_noise_throughput/{id}")) {
            continue;
        }
        sp.run(16 * MIB, decrypt);
        let m = medians(
            (0..REPS)
                .map(|_| rep(JSON_TCP_VOLUME, || sp.run(JSON_TCP_VOLUME, decrypt)))
                .collect(),
        );
        note_rate(&format!("tcp_noise_throughput/{id}"), m);
        if decrypt {
            s.snow_encrypt_decrypt = Some(m);
        } else {
            s.snow_encrypt = Some(m);
        }
    }

    let qv = (JSON_QUIC_VOLUME / msg).max(1) * msg;
    if args.wants("quic_throughput/stack") {
        let m = rt.block_on(async {
            let pair = stack_pair(true).await;
            stack_transfer(&pair, payload, 16 * MIB).await;
            let mut r = Vec::new();
            for _ in 0..REPS {
                r.push(rep_async(qv, stack_transfer(&pair, payload, qv)).await);
            }
            medians(r)
        });
        note_rate("quic_throughput/stack", m);
        s.quic = Some(m);
    }
    if args.wants("quic_throughput/raw_quinn") {
        let m = rt.block_on(async {
            let q = raw_quinn().await;
            raw_quinn_transfer(&q, payload, 16 * MIB).await;
            let mut r = Vec::new();
            for _ in 0..REPS {
                r.push(rep_async(qv, raw_quinn_transfer(&q, payload, qv)).await);
            }
            medians(r)
        });
        note_rate("quic_throughput/raw_quinn", m);
        s.raw_quinn = Some(m);
    }
    s
}

fn main() {
    let args = Args::parse();
    let rt = runtime();
    let payload = Bytes::from(vec![0xa5u8; args.msg_bytes]);
    if !args.json_only {
        let mut c = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        crit_handshakes(&mut c, &args, &rt);
        crit_tcp_throughput(&mut c, &args, &rt, &payload);
        crit_quic_throughput(&mut c, &args, &rt, &payload);
        c.final_summary();
    }
    if (args.bench_mode || args.json_only) && !args.list {
        let s = json_pass(&args, &rt, &payload);
        println!("{}", s.to_json());
    }
}
