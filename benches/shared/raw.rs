//! The raw limits that two benches measure against: a plain loopback TCP connection, a Noise
//! transport session with our exact parameters (no socket), and a raw quinn connection with
//! our TLS and transport configuration. Included by `benches/transport.rs` and
//! `benches/netbench.rs` with `#[path = "shared/raw.rs"] mod raw;`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ggen_p2p::Keypair;
use ggen_p2p::bench_support;
use ggen_p2p::transport::TransportConfig;
use ggen_p2p::transport::noise;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1 << 20;

/// A plain loopback TCP connection (Nagle off, like ours).
pub struct RawTcp {
    pub w: Option<OwnedWriteHalf>,
    pub r: Option<OwnedReadHalf>,
}

pub async fn raw_tcp() -> RawTcp {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    let (c, s) = tokio::join!(TcpStream::connect(a), l.accept());
    let (c, (s, _)) = (c.expect("connect"), s.expect("accept"));
    c.set_nodelay(true).expect("nodelay");
    s.set_nodelay(true).expect("nodelay");
    // Only client → server is used; dropping the other halves leaves that direction open.
    let (_cr, w) = c.into_split();
    let (r, _sw) = s.into_split();
    RawTcp {
        w: Some(w),
        r: Some(r),
    }
}

/// Both ends (initiator, responder) of a Noise session with our exact parameters, after an
/// in-memory XX handshake with fresh static keys.
pub fn snow_transport_pair() -> (snow::StatelessTransportState, snow::StatelessTransportState) {
    let params: snow::params::NoiseParams = noise::NOISE_PARAMS.parse().expect("params");
    let ka = snow::Builder::new(params.clone())
        .generate_keypair()
        .expect("kp");
    let kb = snow::Builder::new(params.clone())
        .generate_keypair()
        .expect("kp");
    let mut i = snow::Builder::new(params.clone())
        .prologue(noise::PROLOGUE)
        .expect("prologue")
        .local_private_key(&ka.private)
        .expect("key")
        .build_initiator()
        .expect("initiator");
    let mut r = snow::Builder::new(params)
        .prologue(noise::PROLOGUE)
        .expect("prologue")
        .local_private_key(&kb.private)
        .expect("key")
        .build_responder()
        .expect("responder");
    let (mut m, mut p) = ([0u8; 1024], [0u8; 1024]);
    let n = i.write_message(&[], &mut m).expect("m1");
    r.read_message(&m[..n], &mut p).expect("m1");
    let n = r.write_message(&[], &mut m).expect("m2");
    i.read_message(&m[..n], &mut p).expect("m2");
    let n = i.write_message(&[], &mut m).expect("m3");
    r.read_message(&m[..n], &mut p).expect("m3");
    (
        i.into_stateless_transport_mode().expect("transport mode"),
        r.into_stateless_transport_mode().expect("transport mode"),
    )
}

/// A raw quinn connection built with our TLS configuration.
pub struct RawQuinn {
    pub client: quinn::Connection,
    pub server: quinn::Connection,
    _eps: (quinn::Endpoint, quinn::Endpoint),
}

pub async fn raw_quinn() -> RawQuinn {
    let cfg = TransportConfig::default();
    let (ka, kb) = (Keypair::generate(), Keypair::generate());
    let local: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let ea = bench_support::quic_endpoint(local, &ka, &cfg).expect("endpoint");
    let eb = bench_support::quic_endpoint(local, &kb, &cfg).expect("endpoint");
    let target = eb.local_addr().expect("addr");
    let eb2 = eb.clone();
    let pb = kb.peer_id();
    let server = tokio::spawn(async move {
        let inc = eb2.accept().await.expect("incoming");
        bench_support::quic_accept(inc, pb).await.expect("accept")
    });
    let client = bench_support::quic_dial(&ea, target, &ka, Some(pb), &cfg)
        .await
        .expect("dial");
    let server = server.await.expect("server task");
    RawQuinn {
        client,
        server,
        _eps: (ea, eb),
    }
}

/// One uni stream: `write_chunk` of `volume` bytes in `payload`-sized chunks; the reader reads
/// into a buffer until it has them all.
pub async fn raw_quinn_transfer(q: &RawQuinn, payload: &Bytes, volume: usize) -> Duration {
    let n = (volume / payload.len()).max(1);
    let total = n * payload.len();
    let server = q.server.clone();
    let start = Instant::now();
    let reader = tokio::spawn(async move {
        let mut recv = server.accept_uni().await.expect("accept_uni");
        let mut buf = vec![0u8; MIB];
        let mut got = 0;
        while got < total {
            match recv.read(&mut buf).await.expect("read") {
                Some(k) => got += k,
                None => break,
            }
        }
        assert_eq!(got, total);
    });
    let mut send = q.client.open_uni().await.expect("open_uni");
    for _ in 0..n {
        send.write_chunk(payload.clone()).await.expect("write");
    }
    let _ = send.finish();
    reader.await.expect("reader");
    start.elapsed()
}
