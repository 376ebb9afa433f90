use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::TransportConfig;
use super::noise::SecureStream;
use crate::address::{Multiaddr, TransportKind};
use crate::identity::PeerId;

/// Who opened a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Direction {
    /// We dialed.
    Outbound,
    /// They dialed us.
    Inbound,
}

/// What is known about an established connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// Process-unique id of this connection.
    pub id: u64,
    /// Our identity.
    pub local_peer: PeerId,
    /// The authenticated identity of the remote.
    pub remote_peer: PeerId,
    /// The remote's address (without `/p2p`).
    pub remote_addr: Multiaddr,
    /// Our address on this connection.
    pub local_addr: Multiaddr,
    /// Who dialed.
    pub direction: Direction,
    /// Which transport carries it.
    pub kind: TransportKind,
    /// A value both ends derive identically from the handshake (Noise handshake hash or a TLS
    /// exporter). Used to agree on which of two simultaneous connections to keep.
    pub tiebreak: [u8; 32],
}

impl ConnectionInfo {
    /// The peer that dialed this connection.
    pub fn dialer(&self) -> PeerId {
        match self.direction {
            Direction::Outbound => self.local_peer,
            Direction::Inbound => self.remote_peer,
        }
    }

    /// Both ends compute the same rank for the same connection. Of two connections between the
    /// same peers, both ends keep the one with the smaller rank: the connection dialed by the
    /// smaller `PeerId`, and between two dialed by the same peer, the smaller tiebreak.
    pub fn rank(&self) -> (PeerId, [u8; 32]) {
        (self.dialer(), self.tiebreak)
    }
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// We closed it.
    Local,
    /// The remote closed it cleanly.
    Remote,
    /// It failed: bad data, decryption failure, I/O error, limit exceeded.
    Error(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Remote => f.write_str("closed by remote"),
            CloseReason::Error(e) => write!(f, "error: {e}"),
        }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The message is larger than the connection's message limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Message size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The send queue is full (only from `try_send`).
    #[error("send queue full")]
    QueueFull,
}

/// Where a connection driver hands complete inbound messages. Awaiting in `deliver` pushes
/// back on the remote (its sends stall once the transport's windows fill).
pub trait InboundSink: Send + Sync + 'static {
    /// One whole message from the connection described by `conn`.
    fn deliver(&self, conn: &ConnectionInfo, message: Bytes) -> impl Future<Output = ()> + Send;
}

/// One queued outbound message: two segments sent back to back (typically an envelope
/// header and its payload), and the share of the send budget it holds until written.
pub(crate) struct Outbound {
    pub(crate) header: Bytes,
    pub(crate) payload: Bytes,
    pub(crate) _permit: OwnedSemaphorePermit,
}

impl Outbound {
    pub(crate) fn len(&self) -> usize {
        self.header.len() + self.payload.len()
    }
}

/// Liveness bookkeeping shared between a connection's driver and its owner.
#[derive(Debug)]
pub(crate) struct Activity {
    base: Instant,
    last_rx_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_rx_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch_rx(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_rx_ms.store(ms, Ordering::Relaxed);
    }

    fn since_rx(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_rx_ms.load(Ordering::Relaxed)))
    }
}

pub(crate) enum ConnectionIo {
    Stream(SecureStream),
    Quic(quinn::Connection),
}

/// An authenticated connection, not yet running. [`Connection::spawn`] starts it.
pub struct Connection {
    pub(crate) info: ConnectionInfo,
    pub(crate) io: ConnectionIo,
    pub(crate) config: Arc<TransportConfig>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// What is known about it.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// Starts the connection's driver task. Inbound messages go to `sink`; `on_closed` runs
    /// once when the connection ends, with the reason.
    pub fn spawn<S: InboundSink>(
        self,
        sink: Arc<S>,
        on_closed: impl FnOnce(CloseReason) + Send + 'static,
    ) -> ConnectionHandle {
        let (handle, start) = self.spawn_paused(sink, on_closed);
        start.start();
        handle
    }

    /// Like [`Connection::spawn`], but nothing is read or written until [`Start::start`]
    /// (or until the `Start` is dropped). The owner can first publish the handle (say, in its
    /// connection table) so that a handler answering the first inbound message finds it.
    pub fn spawn_paused<S: InboundSink>(
        self,
        sink: Arc<S>,
        on_closed: impl FnOnce(CloseReason) + Send + 'static,
    ) -> (ConnectionHandle, Start) {
        let (go, gate) = oneshot::channel::<()>();
        let (tx, rx) = mpsc::unbounded_channel();
        let max_message = self.config.limits.max_message_size;
        let budget_bytes = self
            .config
            .send_queue_bytes
            .max(max_message + 64)
            .min(Semaphore::MAX_PERMITS);
        let handle = ConnectionHandle {
            info: Arc::new(self.info.clone()),
            tx,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
            max_message,
            cancel: CancellationToken::new(),
            retire: CancellationToken::new(),
            stopping: Arc::new(AtomicBool::new(false)),
            activity: Arc::new(Activity::new()),
        };
        let info = handle.info.clone();
        let ends = Ends {
            cancel: handle.cancel.clone(),
            retire: handle.retire.clone(),
            stopping: handle.stopping.clone(),
        };
        let activity = handle.activity.clone();
        let config = self.config.clone();
        tokio::spawn(async move {
            // Sent or dropped: either way, go.
            let _ = gate.await;
            let reason = match self.io {
                ConnectionIo::Stream(s) => {
                    super::mux::run(s, info, sink, rx, ends, activity, config).await
                }
                ConnectionIo::Quic(c) => {
                    super::quic::run(c, info, sink, rx, ends, activity, config).await
                }
            };
            on_closed(reason);
        });
        (handle, Start(go))
    }
}

/// Releases a connection started with [`Connection::spawn_paused`].
#[derive(Debug)]
pub struct Start(oneshot::Sender<()>);

impl Start {
    /// Lets the connection's driver run.
    pub fn start(self) {
        let _ = self.0.send(());
    }
}

/// A cheap, cloneable handle to a running connection: queue messages, close it, watch it.
#[derive(Clone, Debug)]
pub struct ConnectionHandle {
    info: Arc<ConnectionInfo>,
    tx: mpsc::UnboundedSender<Outbound>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
    max_message: usize,
    cancel: CancellationToken,
    retire: CancellationToken,
    /// Set by `close` and `retire`: the send path checks this lock-free flag instead of the
    /// tokens (whose `is_cancelled` takes a lock).
    stopping: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

/// How a connection driver is told to stop: `cancel` at once, `retire` gracefully.
#[derive(Clone, Debug)]
pub(crate) struct Ends {
    pub(crate) cancel: CancellationToken,
    pub(crate) retire: CancellationToken,
    /// Set before either token fires: a lock-free "stop taking new messages" check.
    pub(crate) stopping: Arc<AtomicBool>,
}

/// How long a retired connection waits for the remote to finish its side.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

impl ConnectionHandle {
    /// What is known about the connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    fn cost(&self, len: usize) -> Result<u32, SendError> {
        if len > self.max_message {
            return Err(SendError::TooLarge {
                len,
                max: self.max_message,
            });
        }
        Ok((len + 64).min(self.budget_bytes) as u32)
    }

    /// Queues `header ‖ payload` as one message, waiting while the send queue is full.
    pub async fn send(&self, header: Bytes, payload: Bytes) -> Result<(), SendError> {
        let cost = self.cost(header.len() + payload.len())?;
        let permit = tokio::select! {
            p = self.budget.clone().acquire_many_owned(cost) => p.map_err(|_| SendError::Closed)?,
            _ = self.cancel.cancelled() => return Err(SendError::Closed),
            _ = self.retire.cancelled() => return Err(SendError::Closed),
        };
        self.tx
            .send(Outbound {
                header,
                payload,
                _permit: permit,
            })
            .map_err(|_| SendError::Closed)
    }

    /// Queues a message if the send queue has room, without waiting.
    pub fn try_send(&self, header: Bytes, payload: Bytes) -> Result<(), SendError> {
        let cost = self.cost(header.len() + payload.len())?;
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(cost)
            .map_err(|e| match e {
                tokio::sync::TryAcquireError::Closed => SendError::Closed,
                tokio::sync::TryAcquireError::NoPermits => SendError::QueueFull,
            })?;
        self.tx
            .send(Outbound {
                header,
                payload,
                _permit: permit,
            })
            .map_err(|_| SendError::Closed)
    }

    /// Bytes currently waiting in the send queue (including per-message overhead).
    pub fn queued_bytes(&self) -> usize {
        self.budget_bytes - self.budget.available_permits()
    }

    /// Closes the connection. Queued messages not yet written are dropped.
    pub fn close(&self) {
        self.stopping.store(true, Ordering::Release);
        self.cancel.cancel();
    }

    /// Retires the connection gracefully: it takes no new messages, writes those already
    /// queued, tells the remote it is done, and keeps delivering what the remote sends until
    /// the remote is done too (or 5 s pass). Used when a duplicate connection
    /// to the same peer loses: nothing either side queued on it is lost.
    pub fn retire(&self) {
        self.stopping.store(true, Ordering::Release);
        self.retire.cancel();
    }

    /// True once the connection is closing, retiring or closed.
    pub fn is_closed(&self) -> bool {
        self.stopping.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Time since anything was last received on this connection.
    pub fn since_last_received(&self) -> Duration {
        self.activity.since_rx()
    }
}
