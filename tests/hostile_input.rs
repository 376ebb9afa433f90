//! Hostile bytes against a live node: each attack closes only its own connection, the node
//! keeps serving honest peers, and no task anywhere panics.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use ggen_p2p::Keypair;
use ggen_p2p::node::NodeHandle;
use ggen_p2p::transport::mux::MuxHeader;
use ggen_p2p::transport::noise::{NoiseIdentity, Role, SecureStream, handshake};
use ggen_p2p::wire::Limits;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

async fn victim() -> NodeHandle {
    count_panics();
    node_with("/ip4/127.0.0.1/tcp/0", |c| {
        c.transport.handshake_timeout = Duration::from_millis(500);
    })
    .await
}

fn socket(n: &NodeHandle) -> std::net::SocketAddr {
    n.listen_addrs()[0].socket_addr().expect("tcp address")
}

/// Reads until the node closes the socket; fails the test if it stays open.
async fn expect_closed(mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    within(T, "node to close the connection", async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// An honest peer can still connect and get answers.
async fn still_serves(n: &NodeHandle) {
    let honest = node("/ip4/127.0.0.1/tcp/0").await;
    within(T, "honest dial", honest.dial(dial_addr(n)))
        .await
        .unwrap();
    within(T, "honest ping", honest.ping(n.local_peer_id()))
        .await
        .unwrap();
    honest.shutdown().await;
    assert_eq!(panics(), 0, "a task panicked");
}

/// Waits for the node to close `session`, then checks it still serves honest peers.
async fn session_closed_then_still_serves(mut session: SecureStream, n: NodeHandle) {
    within(T, "node to close the session", async {
        while session.read_frame().await.is_ok() {}
    })
    .await;
    still_serves(&n).await;
    n.shutdown().await;
}

/// Completes a genuine Noise handshake with the node over a raw socket, returning the session
/// so the test can then misbehave inside it.
async fn raw_session(n: &NodeHandle) -> SecureStream {
    let s = TcpStream::connect(socket(n)).await.unwrap();
    let (r, w) = s.into_split();
    let id = NoiseIdentity::new(&Keypair::generate()).unwrap();
    handshake(
        Box::new(r),
        Box::new(w),
        &id,
        Role::Initiator,
        Some(n.local_peer_id()),
        &Limits::default(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn random_bytes_instead_of_a_handshake() {
    let n = victim().await;
    let mut s = TcpStream::connect(socket(&n)).await.unwrap();
    let junk: Vec<u8> = (0..4000).map(|_| rand::random::<u8>()).collect();
    // A first byte pair that announces a small message, so the garbage reaches the Noise parser.
    s.write_all(&[0, 32]).await.unwrap();
    s.write_all(&junk).await.unwrap();
    expect_closed(s).await;
    still_serves(&n).await;
    assert!(n.metrics().handshake_failures >= 1);
    n.shutdown().await;
}

#[tokio::test]
async fn truncated_handshake_times_out() {
    let n = victim().await;
    let mut s = TcpStream::connect(socket(&n)).await.unwrap();
    // Announce a 32-byte first message and send 10 bytes of it, then go silent.
    s.write_all(&[0, 32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        .await
        .unwrap();
    expect_closed(s).await;
    still_serves(&n).await;
    n.shutdown().await;
}

#[tokio::test]
async fn oversized_handshake_length_prefix_is_refused_before_reading() {
    let n = victim().await;
    let mut s = TcpStream::connect(socket(&n)).await.unwrap();
    s.write_all(&[0xff, 0xff]).await.unwrap();
    expect_closed(s).await;
    still_serves(&n).await;
    n.shutdown().await;
}

#[tokio::test]
async fn frame_that_fails_decryption_closes_the_connection() {
    let n = victim().await;
    let mut session = raw_session(&n).await;
    // A well-formed length prefix followed by bytes that are not a valid ciphertext.
    let mut frame = vec![0u8, 48];
    frame.extend((0..48).map(|_| rand::random::<u8>()));
    session.write_raw(&frame).await.unwrap();
    session_closed_then_still_serves(session, n).await;
}

#[tokio::test]
async fn frame_shorter_than_its_tag_closes_the_connection() {
    let n = victim().await;
    let mut session = raw_session(&n).await;
    session.write_raw(&[0, 3, 1, 2, 3]).await.unwrap();
    session_closed_then_still_serves(session, n).await;
}

#[tokio::test]
async fn message_announcing_more_than_the_limit_closes_the_connection() {
    let n = victim().await;
    let mut session = raw_session(&n).await;
    let mut plain = Vec::new();
    MuxHeader {
        id: 1,
        total_len: Some(u32::MAX),
        last: false,
    }
    .encode(&mut plain);
    plain.extend_from_slice(b"tiny");
    session.write_frame(&plain).await.unwrap();
    session_closed_then_still_serves(session, n).await;
}

#[tokio::test]
async fn malformed_envelope_inside_a_valid_session_closes_it() {
    let n = victim().await;
    let mut session = raw_session(&n).await;
    // Give the node a moment to register the connection: wait until it counts one.
    wait_for(T, "registration", || n.connected_count() == 1).await;
    let mut plain = Vec::new();
    MuxHeader {
        id: 1,
        total_len: Some(3),
        last: true,
    }
    .encode(&mut plain);
    plain.extend_from_slice(&[0xff, 0xff, 0xff]);
    session.write_frame(&plain).await.unwrap();
    within(T, "closed", async {
        while session.read_frame().await.is_ok() {}
    })
    .await;
    assert_eq!(n.metrics().malformed, 1);
    still_serves(&n).await;
    n.shutdown().await;
}

/// Records everything written through it.
struct Tap<W> {
    inner: W,
    log: Arc<Mutex<Vec<u8>>>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Tap<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.log.lock().unwrap().extend_from_slice(&buf[..*n]);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn replayed_handshake_is_rejected() {
    let n = victim().await;
    // Record a genuine initiator's messages 1 and 3.
    let s = TcpStream::connect(socket(&n)).await.unwrap();
    let (r, w) = s.into_split();
    let log = Arc::new(Mutex::new(Vec::new()));
    let id = NoiseIdentity::new(&Keypair::generate()).unwrap();
    let tap = Tap {
        inner: w,
        log: log.clone(),
    };
    let _session = handshake(
        Box::new(r),
        Box::new(tap),
        &id,
        Role::Initiator,
        None,
        &Limits::default(),
    )
    .await
    .unwrap();
    let recorded = log.lock().unwrap().clone();
    assert!(recorded.len() > 32);
    // Replay them on a fresh connection: the node's new ephemeral key makes message 3 fail.
    let before = n.metrics().handshake_failures;
    let mut s = TcpStream::connect(socket(&n)).await.unwrap();
    s.write_all(&recorded).await.unwrap();
    expect_closed(s).await;
    wait_for(T, "replay counted as a failed handshake", || {
        n.metrics().handshake_failures > before
    })
    .await;
    still_serves(&n).await;
    n.shutdown().await;
}

#[tokio::test]
async fn garbage_datagrams_at_a_quic_listener_are_ignored() {
    count_panics();
    let n = node("/ip4/127.0.0.1/udp/0/quic-v1").await;
    let target = n.listen_addrs()[0].socket_addr().unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for len in [1usize, 20, 1200, 1500, 65_000] {
        let junk: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        let _ = sock.send_to(&junk, target).await;
    }
    let honest = node("/ip4/127.0.0.1/udp/0/quic-v1").await;
    within(T, "honest QUIC dial", honest.dial(dial_addr(&n)))
        .await
        .unwrap();
    within(T, "honest ping", honest.ping(n.local_peer_id()))
        .await
        .unwrap();
    assert_eq!(panics(), 0);
    honest.shutdown().await;
    n.shutdown().await;
}
