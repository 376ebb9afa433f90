//! The RPC layer between real nodes over loopback TCP and QUIC: many concurrent requests,
//! timeouts, busy and rate-limited answers while the node stays responsive to others,
//! cancellation on drop, automatic dialing, and clear errors for unknown protocols, oversize
//! messages and garbage frames.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ggen_p2p::node::NodeHandle;
use ggen_p2p::rpc::{Protocol, ProtocolLimits, ProtocolName, RateLimit, Rpc, RpcConfig, RpcError};
use serde::{Deserialize, Serialize};

const T: Duration = Duration::from_secs(30);
const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Add {
    a: u64,
    b: u64,
}

/// Adds two numbers.
struct AddProto;
impl Protocol for AddProto {
    const NAME: &'static str = "/test/add";
    const VERSION: u16 = 1;
    type Request = Add;
    type Response = u64;
}

/// Sleeps for the requested milliseconds, then answers; sets a flag if it was aborted.
struct Sleep;
impl Protocol for Sleep {
    const NAME: &'static str = "/test/sleep";
    const VERSION: u16 = 1;
    type Request = u64;
    type Response = ();
}

/// Echoes bytes; requests up to 1 KiB, responses up to 2 KiB.
struct Echo;
impl Protocol for Echo {
    const NAME: &'static str = "/test/echo";
    const VERSION: u16 = 1;
    type Request = Vec<u8>;
    type Response = Vec<u8>;
    fn limits() -> ProtocolLimits {
        ProtocolLimits {
            max_request: 1024,
            max_response: 2048,
        }
    }
}

/// `Echo` under version 2, which nobody serves.
struct EchoV2;
impl Protocol for EchoV2 {
    const NAME: &'static str = "/test/echo";
    const VERSION: u16 = 2;
    type Request = Vec<u8>;
    type Response = Vec<u8>;
}

async fn pair(listen: &str, server_config: RpcConfig) -> (NodeHandle, Rpc, NodeHandle, Rpc) {
    pair_with(listen, server_config, RpcConfig::default()).await
}

async fn pair_with(
    listen: &str,
    server_config: RpcConfig,
    client_config: RpcConfig,
) -> (NodeHandle, Rpc, NodeHandle, Rpc) {
    let server = node(listen).await;
    let client = node(listen).await;
    let s = Rpc::spawn(&server, server_config).expect("rpc");
    let c = Rpc::spawn(&client, client_config).expect("rpc");
    within(T, "dial", client.dial(dial_addr(&server)))
        .await
        .expect("dial");
    assert!(
        s.register::<AddProto, _, _>(|_, r: Add| async move { Ok(r.a + r.b) })
            .await
            .unwrap()
    );
    (server, s, client, c)
}

async fn many_concurrent_requests(listen: &str) {
    let (server, _s, _client, c) = pair(listen, RpcConfig::default()).await;
    let peer = server.local_peer_id();
    // 300 at once: the first 64 (the per-peer in-flight limit) go out, the rest fail at
    // once with a transient local error (all are queued before any answer can come).
    let calls = (0..300u64).map(|i| {
        let c = c.clone();
        async move { (i, c.request::<AddProto>(peer, Add { a: i, b: 1000 }).await) }
    });
    let results = within(T, "300 requests", futures_util::future::join_all(calls)).await;
    let mut answered = 0;
    for (i, r) in &results {
        match r {
            Ok(v) => {
                assert_eq!(*v, i + 1000, "request {i}");
                answered += 1;
            }
            Err(e) => {
                assert!(
                    matches!(
                        e,
                        RpcError::LocalLimit {
                            limit: 64,
                            per_peer: true
                        }
                    ),
                    "{e:?}"
                );
                assert!(e.is_transient());
            }
        }
    }
    // The first 64 always go out; a few more if early answers free slots meanwhile.
    assert!(results[..64].iter().all(|(_, r)| r.is_ok()));
    assert!(answered < 300, "the in-flight limit held");
    // Then rounds of 64 in flight, all answered correctly.
    for round in 0..10u64 {
        let calls = (0..64u64).map(|i| {
            let c = c.clone();
            async move { (i, c.request::<AddProto>(peer, Add { a: i, b: round }).await) }
        });
        for (i, r) in within(T, "64 requests", futures_util::future::join_all(calls)).await {
            assert_eq!(r, Ok(i + round), "round {round} request {i}");
        }
    }
    let m = c.metrics().await.unwrap();
    assert_eq!(m.responses_ok, answered + 640);
    assert_eq!(c.reputation(peer).await.unwrap().successes, answered + 640);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_over_tcp() {
    many_concurrent_requests(TCP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_over_quic() {
    many_concurrent_requests(QUIC).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_times_out_and_a_dropped_request_is_cancelled_on_the_server() {
    let (server, s, _client, c) = pair(TCP, RpcConfig::default()).await;
    let peer = server.local_peer_id();
    let aborted = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    {
        let (aborted, finished) = (aborted.clone(), finished.clone());
        s.register::<Sleep, _, _>(move |_, ms: u64| {
            struct OnDrop(Arc<AtomicUsize>, Arc<AtomicBool>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    if !self.1.load(Ordering::SeqCst) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            let guard = OnDrop(aborted.clone(), finished.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                guard.1.store(true, Ordering::SeqCst);
                Ok(())
            }
        })
        .await
        .unwrap();
    }
    // The caller's timeout fires first: a typed, transient error naming the peer.
    let r = c
        .request_with_timeout::<Sleep>(peer, 20_000, Some(Duration::from_millis(200)))
        .await;
    assert_eq!(r, Err(RpcError::Timeout { peer }));
    assert!(r.unwrap_err().is_transient());
    // The server was told and stopped the handler.
    wait_for(T, "handler aborted after the timeout", || {
        aborted.load(Ordering::SeqCst) == 1
    })
    .await;
    // Dropping the future cancels too.
    let pending = c.request::<Sleep>(peer, 20_000);
    let _ = tokio::time::timeout(Duration::from_millis(100), pending).await;
    wait_for(T, "handler aborted after the drop", || {
        aborted.load(Ordering::SeqCst) == 2
    })
    .await;
    // A quick one still works.
    assert_eq!(c.request::<Sleep>(peer, 1).await, Ok(()));
    assert_eq!(c.reputation(peer).await.unwrap().failures, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_peer_gets_busy_and_rate_limited_while_others_are_served() {
    let config = RpcConfig {
        max_inbound_per_peer: 8,
        rate_limit: RateLimit {
            per_second: 20.0,
            burst: 50.0,
        },
        ..RpcConfig::default()
    };
    // The flooder lifts its own in-flight limit.
    let flooder_config = RpcConfig {
        max_outbound_per_peer: 1000,
        ..RpcConfig::default()
    };
    let (server, s, flooder_node, flooder) = pair_with(TCP, config, flooder_config).await;
    let peer = server.local_peer_id();
    s.register::<Sleep, _, _>(|_, ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    })
    .await
    .unwrap();
    // A polite second client.
    let polite_node = node(TCP).await;
    let polite = Rpc::spawn(&polite_node, RpcConfig::default()).unwrap();
    polite_node.dial(dial_addr(&server)).await.unwrap();

    // 250 slow requests at once: 8 run, the rest of the burst of 50 is busy, then the
    // bucket is empty and the remainder is rate limited.
    let calls = (0..250).map(|_| {
        let f = flooder.clone();
        async move { f.request::<Sleep>(peer, 300).await }
    });
    let flood = tokio::spawn(futures_util::future::join_all(calls));
    // Meanwhile the polite peer is answered at once.
    for i in 0..20u64 {
        let r = within(
            Duration::from_secs(5),
            "polite request",
            polite.request::<AddProto>(peer, Add { a: i, b: i }),
        )
        .await;
        assert_eq!(r, Ok(2 * i));
    }
    let results = within(T, "flood", flood).await.unwrap();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(RpcError::Busy(_))))
        .count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(RpcError::RateLimited(_))))
        .count();
    assert_eq!(ok + busy + limited, 250, "{results:?}");
    assert!((8..=20).contains(&ok), "ok {ok}");
    assert!(busy >= 30, "busy {busy}");
    assert!(limited >= 150, "rate limited {limited}");
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().err().is_none_or(|e| e.is_transient()))
    );
    let m = s.metrics().await.unwrap();
    assert_eq!(m.inbound_busy as usize, busy);
    assert_eq!(m.inbound_rate_limited as usize, limited);
    drop(flooder_node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_protocols_oversize_and_garbage_get_clear_errors() {
    let (server, s, client, c) = pair(QUIC, RpcConfig::default()).await;
    let peer = server.local_peer_id();
    s.register::<Echo, _, _>(|_, v: Vec<u8>| async move {
        // Doubles the input: a 1 KiB request makes a response over the 2 KiB limit.
        Ok([v.clone(), v, vec![0u8; 8]].concat())
    })
    .await
    .unwrap();
    // Not served: protocol name, or version.
    let r = c
        .request_raw(
            peer,
            ProtocolName::new("/test/nobody", 1),
            Bytes::new(),
            None,
        )
        .await;
    assert!(
        matches!(r, Err(RpcError::UnsupportedProtocol(ref m)) if m.contains("/test/nobody")),
        "{r:?}"
    );
    let r = c.request::<EchoV2>(peer, vec![1]).await;
    assert!(matches!(r, Err(RpcError::UnsupportedProtocol(_))), "{r:?}");
    assert!(!r.unwrap_err().is_transient());
    // Oversize request: refused locally before sending (the caller knows Echo's limits).
    let r = c.request::<Echo>(peer, vec![0; 2000]).await;
    assert!(matches!(r, Err(RpcError::TooLarge(_))), "{r:?}");
    // A caller that does not know the limit sends it anyway: the server refuses it.
    let big = postcard::to_stdvec(&vec![0u8; 2000]).unwrap();
    let r = c
        .request_raw(peer, Echo::protocol(), Bytes::from(big), None)
        .await;
    assert!(
        matches!(r, Err(RpcError::TooLarge(ref m)) if m.contains("1024")),
        "{r:?}"
    );
    // Oversize response: the server refuses to send it.
    let r = c.request::<Echo>(peer, vec![7; 1020]).await;
    assert!(
        matches!(r, Err(RpcError::TooLarge(ref m)) if m.contains("response")),
        "{r:?}"
    );
    // A request body that does not decode for the protocol.
    let r = c
        .request_raw(
            peer,
            AddProto::protocol(),
            Bytes::from_static(&[0xff; 3]),
            None,
        )
        .await;
    assert!(matches!(r, Err(RpcError::Malformed(_))), "{r:?}");
    // Normal service meanwhile.
    assert_eq!(
        c.request::<Echo>(peer, vec![1, 2]).await.unwrap(),
        vec![1, 2, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // Garbage on the RPC protocol itself: the server drops the connection, keeps running.
    let rpc_proto = ggen_p2p::wire::ProtocolId::new("/ggen/rpc", 1).unwrap();
    client
        .send(
            peer,
            &rpc_proto,
            Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff]),
        )
        .await
        .unwrap();
    wait_for(T, "garbage sender disconnected", || {
        !client.is_connected(&peer)
    })
    .await;
    assert_eq!(s.metrics().await.unwrap().malformed_frames, 1);
    // The client redials the known address on the next request.
    assert_eq!(c.request::<AddProto>(peer, Add { a: 2, b: 3 }).await, Ok(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_dial_known_peers_and_fail_typed_when_they_cannot() {
    let server = node(TCP).await;
    let client = node(TCP).await;
    let s = Rpc::spawn(&server, RpcConfig::default()).unwrap();
    let c = Rpc::spawn(&client, RpcConfig::default()).unwrap();
    s.register::<AddProto, _, _>(|_, r: Add| async move { Ok(r.a * r.b) })
        .await
        .unwrap();
    let peer = server.local_peer_id();
    // Unknown peer: a dial error, transient.
    let r = c.request::<AddProto>(peer, Add { a: 2, b: 3 }).await;
    assert!(matches!(r, Err(RpcError::Dial { .. })), "{r:?}");
    // Known address, not connected: dialed on demand.
    client.add_address(peer, server.listen_addrs()[0].clone());
    assert!(!client.is_connected(&peer));
    assert_eq!(c.request::<AddProto>(peer, Add { a: 2, b: 3 }).await, Ok(6));
    // The server goes away: pending requests end with a typed error.
    let pending = {
        let c = c.clone();
        s.register::<Sleep, _, _>(|_, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(())
        })
        .await
        .unwrap();
        tokio::spawn(async move { c.request::<Sleep>(peer, 30_000).await })
    };
    within(T, "in flight", async {
        loop {
            if s.metrics().await.unwrap().inbound_admitted >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    server.shutdown().await;
    let r = within(T, "pending ends", pending).await.unwrap();
    assert_eq!(r, Err(RpcError::ConnectionClosed { peer }));
}
