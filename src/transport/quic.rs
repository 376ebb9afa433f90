//! QUIC v1 transport (quinn): endpoints, dialing and accepting, and the connection driver.
//!
//! Each message travels on its own unidirectional stream as one frame
//! (`[u32 length][message]`), so QUIC's per-stream flow control interleaves large and small
//! messages. A receiver reserves the announced length from a per-connection budget before
//! reading the body: a peer cannot make us hold more than `limits.max_reassembly_bytes` of
//! incoming messages at once, and while the budget is spent its streams simply stall.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;

use super::connection::{Activity, DRAIN_TIMEOUT, Ends, Outbound};
use super::{CloseReason, ConnectionInfo, InboundSink, TransportConfig, TransportError, tls};
use crate::identity::{Keypair, PeerId};
use crate::wire::FrameCodec;

/// Messages up to this size are sent ahead of larger ones on the same connection.
const SMALL_MESSAGE: usize = 64 * 1024;

fn quic_transport_config(cfg: &TransportConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(cfg.quic_max_streams.into());
    t.max_concurrent_bidi_streams(0u32.into());
    t.stream_receive_window(cfg.quic_stream_window.into());
    t.receive_window(cfg.quic_connection_window.into());
    t.send_window(cfg.quic_connection_window as u64);
    t.max_idle_timeout(quinn::IdleTimeout::try_from(cfg.quic_max_idle).ok());
    // Without fairness, streams of equal priority are sent in the order written, instead of
    // round-robin across every bulk message in flight (which cost a third of throughput).
    // Small messages get a higher priority below, so they still overtake bulk transfers.
    t.send_fairness(false);
    t
}

/// Binds a QUIC endpoint that both accepts and dials.
pub(crate) fn endpoint(
    bind: SocketAddr,
    keypair: &Keypair,
    cfg: &TransportConfig,
) -> Result<quinn::Endpoint, TransportError> {
    let crypto = QuicServerConfig::try_from(tls::server_config(keypair)?)
        .map_err(|e| TransportError::Handshake(format!("QUIC server config: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(quic_transport_config(cfg)));
    quinn::Endpoint::server(server, bind)
        .map_err(|e| TransportError::io(format!("binding QUIC endpoint on {bind}"), e))
}

/// Dials `addr` over `endpoint`, pinning `expected` if given. Returns the connection and
/// the authenticated remote identity.
pub(crate) async fn dial(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
    keypair: &Keypair,
    expected: Option<PeerId>,
    cfg: &TransportConfig,
) -> Result<(quinn::Connection, PeerId), TransportError> {
    let (crypto, verifier) = tls::client_config(keypair, expected)?;
    let crypto = QuicClientConfig::try_from(crypto)
        .map_err(|e| TransportError::Handshake(format!("QUIC client config: {e}")))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(quic_transport_config(cfg)));
    let connecting = endpoint
        .connect_with(client, addr, tls::SERVER_NAME)
        .map_err(|e| TransportError::Quic(format!("dialing {addr}: {e}")))?;
    let conn = match connecting.await {
        Ok(c) => c,
        Err(e) => {
            if let (Some(expected), Some(actual)) = (expected, verifier.seen()) {
                if expected != actual {
                    return Err(TransportError::PeerIdMismatch { expected, actual });
                }
            }
            return Err(connection_error(e));
        }
    };
    let peer = tls::peer_from_identity(conn.peer_identity())?;
    finish_checks(&conn, peer, keypair.peer_id(), expected)?;
    Ok((conn, peer))
}

/// Completes an inbound QUIC handshake.
pub(crate) async fn accept(
    incoming: quinn::Incoming,
    local: PeerId,
) -> Result<(quinn::Connection, PeerId), TransportError> {
    let conn = incoming
        .accept()
        .map_err(connection_error)?
        .await
        .map_err(connection_error)?;
    let peer = tls::peer_from_identity(conn.peer_identity())?;
    finish_checks(&conn, peer, local, None)?;
    Ok((conn, peer))
}

fn finish_checks(
    conn: &quinn::Connection,
    peer: PeerId,
    local: PeerId,
    expected: Option<PeerId>,
) -> Result<(), TransportError> {
    let fail = |e: TransportError| {
        conn.close(1u32.into(), b"identity");
        Err(e)
    };
    if peer == local {
        return fail(TransportError::SelfDial);
    }
    match expected {
        Some(expected) if expected != peer => fail(TransportError::PeerIdMismatch {
            expected,
            actual: peer,
        }),
        _ => Ok(()),
    }
}

/// A value both ends derive identically from the TLS session.
pub(crate) fn tiebreak(conn: &quinn::Connection) -> [u8; 32] {
    let mut out = [0u8; 32];
    let _ = conn.export_keying_material(&mut out, b"ggen-p2p connection tiebreak", b"");
    out
}

fn connection_error(e: impl std::fmt::Display) -> TransportError {
    TransportError::Quic(e.to_string())
}

fn close_reason(e: &quinn::ConnectionError) -> CloseReason {
    match e {
        quinn::ConnectionError::LocallyClosed => CloseReason::Local,
        quinn::ConnectionError::ApplicationClosed(_) => CloseReason::Remote,
        other => CloseReason::Error(other.to_string()),
    }
}

/// Drives a QUIC connection until it closes.
///
/// Each message is one unidirectional stream. A stream finished with no bytes at all is the
/// "goodbye" of a retiring peer: every message it sent before has been read by us (it waits
/// for that before saying goodbye), and it sends no more.
pub(crate) async fn run<S: InboundSink>(
    conn: quinn::Connection,
    info: Arc<ConnectionInfo>,
    sink: Arc<S>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    ends: Ends,
    activity: Arc<Activity>,
    config: Arc<TransportConfig>,
) -> CloseReason {
    let Ends { cancel, retire, .. } = ends;
    let limits = config.limits.clone();
    let codec = FrameCodec::new(limits.max_message_size);
    let budget_total = limits
        .max_reassembly_bytes
        .max(limits.max_message_size)
        .min(Semaphore::MAX_PERMITS);
    let budget = Arc::new(Semaphore::new(budget_total));
    let goodbye = Arc::new(Notify::new());

    let reader = async {
        loop {
            let mut recv = match conn.accept_uni().await {
                Ok(s) => s,
                Err(e) => return close_reason(&e),
            };
            activity.touch_rx();
            let (sink, info, activity, budget, goodbye) = (
                sink.clone(),
                info.clone(),
                activity.clone(),
                budget.clone(),
                goodbye.clone(),
            );
            let conn = conn.clone();
            tokio::spawn(async move {
                let mut header = [0u8; 4];
                match recv.read_exact(&mut header).await {
                    Ok(()) => {}
                    Err(quinn::ReadExactError::FinishedEarly(0)) => {
                        goodbye.notify_one();
                        return;
                    }
                    Err(_) => return,
                }
                let len = match codec.decode_header(header) {
                    Ok(len) => len,
                    Err(e) => {
                        tracing::debug!(peer = %info.remote_peer, "closing QUIC connection: {e}");
                        conn.close(2u32.into(), b"message too large");
                        return;
                    }
                };
                // Reserve the whole message before reading it, so partially read messages can
                // never exhaust the budget between them.
                let Ok(_permit) = budget.acquire_many_owned(len.max(1) as u32).await else {
                    return;
                };
                let mut body = vec![0u8; len];
                if recv.read_exact(&mut body).await.is_err() {
                    return;
                }
                let _ = recv.stop(0u32.into());
                activity.touch_rx();
                sink.deliver(&info, Bytes::from(body)).await;
            });
        }
    };

    // Ok(()) once retired (or every handle dropped) and every message sent was read by the
    // remote, and our goodbye is sent.
    let writer = async {
        let mut sending = JoinSet::new();
        loop {
            let next = tokio::select! {
                m = rx.recv() => m,
                _ = retire.cancelled() => {
                    rx.close();
                    rx.recv().await
                }
                // Reap finished sends so the set stays small.
                Some(_) = sending.join_next(), if !sending.is_empty() => continue,
            };
            let Some(msg) = next else {
                break;
            };
            let mut send = match conn.open_uni().await {
                Ok(s) => s,
                Err(e) => return Err(close_reason(&e)),
            };
            let Ok(header) = codec.encode_header(msg.len()) else {
                continue; // refused at enqueue time already; unreachable in practice
            };
            let _ = send.set_priority(if msg.len() <= SMALL_MESSAGE { 1 } else { 0 });
            sending.spawn(async move {
                let mut chunks = [
                    Bytes::copy_from_slice(&header),
                    msg.header.clone(),
                    msg.payload.clone(),
                ];
                if send.write_all_chunks(&mut chunks).await.is_ok() && send.finish().is_ok() {
                    drop(msg);
                    // Ends when the remote has read it (it stops the stream) or acknowledged
                    // it all; the remote's stream credit bounds how many wait here.
                    let _ = send.stopped().await;
                }
            });
        }
        while sending.join_next().await.is_some() {}
        let mut bye = conn.open_uni().await.map_err(|e| close_reason(&e))?;
        let _ = bye.finish();
        Ok(())
    };

    let mut reader = std::pin::pin!(reader);
    let reason = tokio::select! {
        r = &mut reader => r,
        w = writer => match w {
            Err(r) => r,
            Ok(()) => {
                // Keep delivering until the remote says goodbye too, within a bound.
                tokio::select! {
                    r = &mut reader => r,
                    _ = goodbye.notified() => CloseReason::Local,
                    _ = tokio::time::sleep(DRAIN_TIMEOUT) => CloseReason::Local,
                    _ = cancel.cancelled() => CloseReason::Local,
                }
            }
        },
        _ = cancel.cancelled() => CloseReason::Local,
    };
    if reason == CloseReason::Local {
        conn.close(0u32.into(), b"closed");
    }
    reason
}
