//! `rpc`: the request-response layer between real nodes in this process.
//!
//! Four nodes (a client/puller and three providers), each with an [`Rpc`]; the client dials
//! the others. Two measurements:
//!
//! - Small requests: a typed echo protocol (64-byte request, 64-byte response) with
//!   [`IN_FLIGHT`] requests kept in flight to one provider for [`REQUEST_PHASE`] or
//!   [`MAX_REQUESTS`] requests, whichever ends first. Each request is timed from the call to
//!   its answer; the process's CPU time is read around the phase.
//! - Bulk transfer ([`transfer`]): a [`BLOB`]-byte blob fetched through the content service
//!   (`ContentService::fetch_content`: verified chunks, whole-blob hash) from one provider and
//!   then from three at once, next to the raw limit of the transport measured in the same run
//!   ([`raw_limit`]); also pulled as plain [`CHUNK`]-byte range requests over a typed
//!   protocol, the RPC layer's own bulk rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ggen_p2p::node::{Node, NodeConfig, NodeHandle};
use ggen_p2p::rpc::{
    ContentConfig, ContentHash, ContentService, ContentSource, Protocol, ProtocolLimits, RateLimit,
    Rpc, RpcConfig, RpcError,
};
use ggen_p2p::transport::noise;
use ggen_p2p::{Keypair, Multiaddr, PeerId};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinSet;

use super::percentile;
use super::raw;

const MIB: usize = 1 << 20;
/// Echo request and response size.
const ECHO_BYTES: usize = 64;
/// Echo requests kept in flight.
const IN_FLIGHT: usize = 64;
/// The small-request phase ends after this many requests...
const MAX_REQUESTS: usize = 100_000;
/// ...or after this long.
const REQUEST_PHASE: Duration = Duration::from_secs(3);
/// Size of the blob the transfer moves.
const BLOB: usize = 256 * MIB;
/// Bytes per range request.
const CHUNK: usize = MIB;
/// Range requests in flight to each provider.
const WINDOW: usize = 8;
/// Providers of the multi-source pull.
const PROVIDERS: usize = 3;
/// Repetitions of each transfer measurement (the median is reported).
const REPS: usize = 3;

/// 64 bytes in, the same 64 bytes out.
struct Echo;

impl Protocol for Echo {
    const NAME: &'static str = "/netbench/echo";
    const VERSION: u16 = 1;
    type Request = Bytes;
    type Response = Bytes;
}

/// `len` bytes of the blob from `offset`.
#[derive(Serialize, Deserialize)]
struct RangeRequest {
    offset: u64,
    len: u32,
}

/// Range requests of the served blob; a response carries up to [`CHUNK`] bytes.
struct BlobRange;

impl Protocol for BlobRange {
    const NAME: &'static str = "/netbench/range";
    const VERSION: u16 = 1;
    type Request = RangeRequest;
    type Response = Bytes;

    fn limits() -> ProtocolLimits {
        ProtocolLimits {
            max_request: 64,
            // The chunk plus its postcard length prefix.
            max_response: CHUNK + 16,
        }
    }
}

/// The RPC configuration of every node: the defaults, without the per-peer inbound rate
/// limit (1 000 requests/s by default), which would otherwise be what the request phase
/// measures.
fn rpc_config() -> RpcConfig {
    RpcConfig {
        rate_limit: RateLimit {
            per_second: 0.0,
            ..RateLimit::default()
        },
        ..RpcConfig::default()
    }
}

/// Runs the benchmark over `transport` (nodes listen on `listen`); `peak_rss_mb` and
/// `cpu_seconds` are netbench's readers of this process's peak memory and CPU time.
pub async fn run(
    transport: &str,
    listen: Multiaddr,
    peak_rss_mb: fn() -> Option<f64>,
    cpu_seconds: fn() -> Option<f64>,
) -> String {
    let mut nodes: Vec<(NodeHandle, Rpc)> = Vec::new();
    for _ in 0..=PROVIDERS {
        let config = NodeConfig {
            listen: vec![listen.clone()],
            ..NodeConfig::default()
        };
        let node = Node::spawn(Keypair::generate(), config)
            .await
            .expect("node starts");
        let rpc = Rpc::spawn(&node, rpc_config()).expect("rpc starts");
        nodes.push((node, rpc));
    }
    let (client, providers) = nodes.split_first().expect("nodes");
    for (node, _) in providers {
        let addr = node.listen_addrs()[0]
            .clone()
            .with_peer_id(node.local_peer_id());
        client.0.dial(addr).await.expect("dial");
    }
    eprintln!(
        "netbench rpc: {} nodes over {transport}, client connected",
        PROVIDERS + 1
    );

    let server = &providers[0];
    let registered = server
        .1
        .register::<Echo, _, _>(|_, request: Bytes| async move { Ok(request) })
        .await
        .expect("register echo");
    assert!(registered, "echo registered once");
    let peer = server.0.local_peer_id();
    // Warm-up: connections, allocations, the handler path.
    small_requests(&client.1, peer, 2_000, Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds();
    let req = small_requests(&client.1, peer, MAX_REQUESTS, REQUEST_PHASE).await;
    let cpu_s = cpu_seconds().zip(cpu_before).map(|(a, b)| a - b);
    let cpu_us_per_request = cpu_s.map(|c| c * 1e6 / req.latencies_ms.len().max(1) as f64);
    eprintln!(
        "netbench rpc: {} echo requests in {:.2} s ({:.0}/s), {} failed, {:.1} µs CPU each",
        req.latencies_ms.len(),
        req.elapsed.as_secs_f64(),
        req.per_s(),
        req.errors,
        cpu_us_per_request.unwrap_or(f64::NAN)
    );

    let provider_rpcs: Vec<Rpc> = providers.iter().map(|(_, r)| r.clone()).collect();
    let t = transfer(&client.1, &provider_rpcs).await;
    let raw_mb_s = raw_limit(transport).await;

    for (i, (_, rpc)) in nodes.iter().enumerate() {
        if let Ok(m) = rpc.metrics().await {
            eprintln!(
                "netbench rpc: node {i}: {} sent, {} ok, {} failed ({} timeouts); inbound {} admitted, {} busy, {} rate limited",
                m.requests_sent,
                m.responses_ok,
                m.requests_failed,
                m.timeouts,
                m.inbound_admitted,
                m.inbound_busy,
                m.inbound_rate_limited
            );
        }
    }
    let mut lat = req.latencies_ms.clone();
    lat.sort_by(f64::total_cmp);
    let json = format!(
        concat!(
            "{{\"bench\":\"rpc\",\"transport\":\"{}\",",
            "\"requests\":{{\"count\":{},\"errors\":{},\"in_flight\":{},\"size\":{},\"per_s\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}},",
            "\"cpu_us_per_request\":{},",
            "\"transfer\":{{\"bytes\":{},\"chunk\":{},\"window\":{},\"providers\":{},",
            "\"single_mb_s\":{},\"multi_mb_s\":{},\"raw_mb_s\":{},\"ratio_to_raw\":{},",
            "\"rpc_single_mb_s\":{},\"rpc_multi_mb_s\":{}}},",
            "\"peak_rss_mb\":{:.1}}}"
        ),
        transport,
        lat.len(),
        req.errors,
        IN_FLIGHT,
        ECHO_BYTES,
        req.per_s(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        json_num(cpu_us_per_request, 2),
        BLOB,
        CHUNK,
        WINDOW,
        PROVIDERS,
        json_num(t.single_mb_s, 1),
        json_num(t.multi_mb_s, 1),
        json_num(raw_mb_s, 1),
        json_num(t.single_mb_s.zip(raw_mb_s).map(|(s, r)| s / r), 3),
        json_num(t.rpc_single_mb_s, 1),
        json_num(t.rpc_multi_mb_s, 1),
        peak_rss_mb().unwrap_or(f64::NAN),
    );
    futures_util::future::join_all(nodes.iter().map(|(n, _)| n.shutdown())).await;
    json
}

fn json_num(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "null".into(),
    }
}

struct RequestPhase {
    latencies_ms: Vec<f64>,
    errors: usize,
    elapsed: Duration,
}

impl RequestPhase {
    fn per_s(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// [`IN_FLIGHT`] tasks each send echo requests one after another until `max` requests have
/// started or `limit` has passed.
async fn small_requests(client: &Rpc, server: PeerId, max: usize, limit: Duration) -> RequestPhase {
    let started = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (client, started) = (client.clone(), started.clone());
        tasks.spawn(async move {
            let mut payload = vec![0u8; ECHO_BYTES];
            rand::rng().fill(&mut payload[..]);
            let payload = Bytes::from(payload);
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            while started.fetch_add(1, Ordering::Relaxed) < max && Instant::now() < deadline {
                let t = Instant::now();
                match client.request::<Echo>(server, payload.clone()).await {
                    Ok(r) if r.len() == ECHO_BYTES => {
                        lat.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    Ok(r) => {
                        errors += 1;
                        eprintln!("netbench rpc: echo answered {} bytes", r.len());
                    }
                    Err(e) => {
                        if errors == 0 {
                            eprintln!("netbench rpc: echo failed: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        });
    }
    let mut phase = RequestPhase {
        latencies_ms: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    while let Some(r) = tasks.join_next().await {
        let (lat, errors) = r.expect("request task");
        phase.latencies_ms.extend(lat);
        phase.errors += errors;
    }
    phase.elapsed = start.elapsed();
    phase
}

/// Transfer rates in MB/s (`None`: the pull failed).
/// Transfer rates in MB/s (`None` when a repetition failed).
#[derive(Default)]
struct TransferRates {
    /// `ContentService::fetch_content` from one provider.
    single_mb_s: Option<f64>,
    /// The same from every provider at once.
    multi_mb_s: Option<f64>,
    /// Plain typed range requests from one provider (the RPC layer's own bulk rate).
    rpc_single_mb_s: Option<f64>,
    /// The same from every provider, chunks assigned round-robin.
    rpc_multi_mb_s: Option<f64>,
}

/// The bulk transfer: `providers` serve one [`BLOB`]-byte blob; `puller` fetches all of it
/// from `providers[0]` alone, then from every provider at once, first as plain range requests
/// over [`BlobRange`] (the RPC layer's bulk rate), then through the content service
/// ([`content_transfer`]), and checks the bytes each time.
async fn transfer(puller: &Rpc, providers: &[Rpc]) -> TransferRates {
    let mut blob = vec![0u8; BLOB];
    rand::rng().fill(&mut blob[..]);
    let blob = Bytes::from(blob);
    for p in providers {
        let served = blob.clone();
        p.register::<BlobRange, _, _>(move |_, r: RangeRequest| {
            let served = served.clone();
            async move {
                let start = usize::try_from(r.offset).map_err(|e| e.to_string())?;
                let end = start.saturating_add(r.len as usize).min(served.len());
                if start >= end {
                    return Err(format!("range {start}+{} outside the blob", r.len));
                }
                Ok(served.slice(start..end))
            }
        })
        .await
        .expect("register range");
    }
    let peers: Vec<PeerId> = providers.iter().map(|p| p.node().local_peer_id()).collect();

    // Warm-up: 16 MiB from each provider.
    for p in &peers {
        if let Err(e) = pull(puller, &[*p], 16 * MIB).await {
            eprintln!("netbench rpc: warm-up pull failed: {e}");
        }
    }
    let mut rates = TransferRates::default();
    for (label, from) in [("single", &peers[..1]), ("multi", &peers[..])] {
        let mut reps = Vec::new();
        for _ in 0..REPS {
            let start = Instant::now();
            let pulled = pull(puller, from, BLOB).await;
            let d = start.elapsed();
            // The benchmark's own check, outside the clock.
            let pulled = pulled.and_then(|out| {
                if out[..] == blob[..] {
                    Ok(())
                } else {
                    Err(RpcError::Local("pulled bytes differ from the blob".into()))
                }
            });
            match pulled {
                Ok(()) => {
                    let r = BLOB as f64 / 1e6 / d.as_secs_f64();
                    eprintln!(
                        "netbench rpc: {label} pull from {} provider(s): {:.2} s, {r:.1} MB/s",
                        from.len(),
                        d.as_secs_f64()
                    );
                    reps.push(r);
                }
                Err(e) => eprintln!("netbench rpc: {label} pull failed: {e}"),
            }
        }
        let m = (reps.len() == REPS).then(|| median(reps));
        match label {
            "single" => rates.rpc_single_mb_s = m,
            _ => rates.rpc_multi_mb_s = m,
        }
    }
    content_transfer(puller, providers, &blob, &mut rates).await;
    rates
}

/// The content service proper: every provider serves the blob by its SHA-256, the puller
/// fetches it with `fetch_content` (manifest, per-chunk and whole-blob verification, chunks
/// shared among providers), from one provider and then from all, [`REPS`] times each.
async fn content_transfer(
    puller: &Rpc,
    providers: &[Rpc],
    blob: &Bytes,
    rates: &mut TransferRates,
) {
    let hash = ContentHash::of(blob);
    let mut services = Vec::new();
    for p in providers {
        let svc = ContentService::spawn(p, ContentConfig::default())
            .await
            .expect("content service");
        svc.serve_content(hash, ContentSource::Bytes(blob.clone()))
            .await
            .expect("serve");
        services.push(svc);
    }
    let fetcher = ContentService::spawn(puller, ContentConfig::default())
        .await
        .expect("content service");
    let peers: Vec<PeerId> = providers.iter().map(|p| p.node().local_peer_id()).collect();
    for (label, from) in [("single", &peers[..1]), ("multi", &peers[..])] {
        let mut reps = Vec::new();
        for _ in 0..REPS {
            let start = Instant::now();
            let fetched = fetcher.fetch_content(hash, from, None).await;
            // Stopped before the comparison below: that is the benchmark's check, not part
            // of the transfer (fetch_content has verified the hash already).
            let d = start.elapsed();
            match fetched {
                Ok(got) if got == *blob => {
                    let r = blob.len() as f64 / 1e6 / d.as_secs_f64();
                    eprintln!(
                        "netbench rpc: content {label} fetch from {} provider(s): {:.2} s, {r:.1} MB/s",
                        from.len(),
                        d.as_secs_f64()
                    );
                    reps.push(r);
                }
                Ok(_) => eprintln!("netbench rpc: content fetch returned other bytes"),
                Err(e) => eprintln!("netbench rpc: content {label} fetch failed: {e}"),
            }
        }
        let m = (reps.len() == REPS).then(|| median(reps));
        match label {
            "single" => rates.single_mb_s = m,
            _ => rates.multi_mb_s = m,
        }
    }
    let m = fetcher.metrics();
    eprintln!(
        "netbench rpc: content: {} ranges requested, {} bad chunks, {} providers dropped",
        m.ranges_requested, m.bad_chunks, m.providers_dropped
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Pulls the first `len` bytes of the blob as [`CHUNK`]-byte ranges, chunk `k` from
/// `from[k % from.len()]`, [`WINDOW`] requests in flight per provider, into one buffer.
async fn pull(puller: &Rpc, from: &[PeerId], len: usize) -> Result<Vec<u8>, RpcError> {
    let chunks = len.div_ceil(CHUNK);
    let mut out = vec![0u8; len];
    let mut tasks = JoinSet::new();
    // Next chunk index of each provider.
    let mut next: Vec<usize> = (0..from.len()).collect();
    type Done = (usize, usize, usize, Result<Bytes, RpcError>);
    let spawn = |tasks: &mut JoinSet<Done>, p: usize, k: usize| {
        let (rpc, peer) = (puller.clone(), from[p]);
        let offset = k * CHUNK;
        let n = CHUNK.min(len - offset);
        tasks.spawn(async move {
            let r = rpc
                .request::<BlobRange>(
                    peer,
                    RangeRequest {
                        offset: offset as u64,
                        len: n as u32,
                    },
                )
                .await;
            (p, offset, n, r)
        });
    };
    for (p, k) in next.iter_mut().enumerate() {
        for _ in 0..WINDOW {
            if *k < chunks {
                spawn(&mut tasks, p, *k);
                *k += from.len();
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (p, offset, n, r) = done.expect("pull task");
        let bytes = r?;
        if bytes.len() != n {
            return Err(RpcError::Local(format!(
                "chunk at {offset}: {} bytes instead of {n}",
                bytes.len()
            )));
        }
        out[offset..offset + n].copy_from_slice(&bytes);
        if next[p] < chunks {
            spawn(&mut tasks, p, next[p]);
            next[p] += from.len();
        }
    }
    Ok(out)
}

/// The raw limit of `transport` in MB/s, the median of [`REPS`] transfers of [`BLOB`] bytes:
/// for TCP a plain loopback socket carrying full Noise frames (65 519 plaintext bytes,
/// length-prefixed) encrypted and decrypted with our cipher (snow, ChaChaPoly) by the writer
/// and reader tasks; for QUIC one raw quinn uni stream with our TLS and transport
/// configuration, written in 1 MiB chunks (the `raw_quinn` figure of `benches/transport.rs`).
/// The memory transport has none.
async fn raw_limit(transport: &str) -> Option<f64> {
    let mut reps = Vec::new();
    match transport {
        "tcp" => {
            raw_tcp_noise_transfer(16 * MIB).await;
            for _ in 0..REPS {
                reps.push(raw_tcp_noise_transfer(BLOB).await);
            }
        }
        "quic" => {
            let q = raw::raw_quinn().await;
            let payload = Bytes::from(vec![0xa5u8; MIB]);
            raw::raw_quinn_transfer(&q, &payload, 16 * MIB).await;
            for _ in 0..REPS {
                reps.push(raw::raw_quinn_transfer(&q, &payload, BLOB).await);
            }
        }
        _ => return None,
    }
    let rates: Vec<f64> = reps
        .iter()
        .map(|d| BLOB as f64 / 1e6 / d.as_secs_f64())
        .collect();
    eprintln!("netbench rpc: raw {transport} limit: {rates:.1?} MB/s");
    Some(median(rates))
}

/// `volume` bytes over a fresh plain TCP connection in encrypted Noise frames: the writer
/// task encrypts each frame and writes it with its 2-byte length, the reader task reads
/// (buffered) and decrypts it.
async fn raw_tcp_noise_transfer(volume: usize) -> Duration {
    let mut conn = raw::raw_tcp().await;
    let (mut w, r) = (conn.w.take().expect("w"), conn.r.take().expect("r"));
    let (enc, dec) = raw::snow_transport_pair();
    let frames = volume.div_ceil(noise::MAX_FRAME_PLAINTEXT);
    let start = Instant::now();
    let writer = tokio::spawn(async move {
        let plain = vec![0xa5u8; noise::MAX_FRAME_PLAINTEXT];
        let mut buf = vec![0u8; 2 + noise::MAX_NOISE_MESSAGE];
        let mut left = volume;
        for nonce in 0..frames as u64 {
            let take = left.min(noise::MAX_FRAME_PLAINTEXT);
            let n = enc
                .write_message(nonce, &plain[..take], &mut buf[2..])
                .expect("encrypt");
            buf[..2].copy_from_slice(&(n as u16).to_be_bytes());
            w.write_all(&buf[..2 + n]).await.expect("write");
            left -= take;
        }
        w
    });
    let reader = tokio::spawn(async move {
        let mut r = BufReader::with_capacity(256 * 1024, r);
        let mut cipher = vec![0u8; noise::MAX_NOISE_MESSAGE];
        let mut plain = vec![0u8; noise::MAX_NOISE_MESSAGE];
        let mut got = 0;
        for nonce in 0..frames as u64 {
            let n = r.read_u16().await.expect("read length") as usize;
            r.read_exact(&mut cipher[..n]).await.expect("read frame");
            got += dec
                .read_message(nonce, &cipher[..n], &mut plain)
                .expect("decrypt");
        }
        assert_eq!(got, volume);
    });
    let _w = writer.await.expect("writer");
    reader.await.expect("reader");
    start.elapsed()
}
