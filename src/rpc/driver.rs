//! The thin tokio driver: one task owns an [`RpcCore`], feeds it the node's inbound RPC
//! frames, connection closes and deadlines, sends its frames (dialing known peers that are
//! not connected), runs each admitted request's handler as its own task, and completes
//! callers' futures. Callers hold a cheap [`Rpc`] handle; dropping a request's future cancels
//! the request on both sides.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::AbortHandle;

use super::config::{ProtocolLimits, RpcConfig};
use super::core::{Action, Reputation, RequestId, RpcCore, RpcMetrics};
use super::error::RpcError;
use super::message::{EncodedFrame, ProtocolName};
use crate::identity::PeerId;
use crate::metrics::{Metrics, RpcOutcome, RpcProtocolMetrics};
use crate::node::{InboundMessage, NodeError, NodeEvent, NodeHandle};
use crate::transport::SendError;
use crate::wire::ProtocolId;

/// A typed request-response protocol: a name and version with its request and response
/// types (postcard-encoded) and size limits.
pub trait Protocol: Send + Sync + 'static {
    /// The protocol's name, e.g. `/ggen/echo`.
    const NAME: &'static str;
    /// Its version: peers talk it only when both serve the same one.
    const VERSION: u16;
    /// What a caller sends.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// What a handler answers.
    type Response: Serialize + DeserializeOwned + Send + 'static;

    /// Request and response size limits (default: [`ProtocolLimits::default`]).
    fn limits() -> ProtocolLimits {
        ProtocolLimits::default()
    }

    /// The wire name.
    fn protocol() -> ProtocolName {
        ProtocolName::new(Self::NAME, Self::VERSION)
    }
}

/// Why a handler produced no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandlerError {
    /// The request did not decode for the protocol.
    Malformed(String),
    /// The handler failed; the message goes back to the caller.
    Failed(String),
}

impl From<String> for HandlerError {
    fn from(s: String) -> Self {
        HandlerError::Failed(s)
    }
}

/// What an untyped handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, HandlerError>> + Send>>;
/// An untyped handler: the caller's PeerId and the request bytes in, the response bytes out.
pub type RawHandler = Arc<dyn Fn(PeerId, Bytes) -> HandlerFuture + Send + Sync>;

enum Command {
    Register(
        ProtocolName,
        ProtocolLimits,
        RawHandler,
        oneshot::Sender<bool>,
    ),
    Unregister(ProtocolName, oneshot::Sender<bool>),
    Request {
        id: RequestId,
        peer: PeerId,
        protocol: ProtocolName,
        payload: Bytes,
        timeout: Option<Duration>,
        limits: Option<ProtocolLimits>,
        reply: oneshot::Sender<Result<Bytes, RpcError>>,
    },
    Cancel(RequestId),
    SendFailed(RequestId, RpcError),
    Respond {
        peer: PeerId,
        id: u64,
        protocol: ProtocolName,
        result: Result<Bytes, HandlerError>,
    },
    Reputation(PeerId, oneshot::Sender<Reputation>),
    BadContent(PeerId),
    Metrics(oneshot::Sender<RpcMetrics>),
}

/// A cheap, cloneable handle to a node's RPC service.
#[derive(Clone)]
pub struct Rpc {
    cmd: mpsc::UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
    node: NodeHandle,
    config: Arc<RpcConfig>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("peer", &self.node.local_peer_id())
            .finish_non_exhaustive()
    }
}

/// Cancels a request whose future was dropped before it finished.
struct CancelGuard {
    id: RequestId,
    cmd: mpsc::UnboundedSender<Command>,
    done: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.cmd.send(Command::Cancel(self.id));
        }
    }
}

impl Rpc {
    /// Starts the RPC service on `node` (it registers the node protocol
    /// `config.protocol_name`, version 1).
    pub fn spawn(node: &NodeHandle, config: RpcConfig) -> Result<Rpc, RpcError> {
        config.validate().map_err(RpcError::Local)?;
        let protocol = ProtocolId::new(config.protocol_name.clone(), 1)
            .map_err(|e| RpcError::Local(format!("bad protocol name: {e}")))?;
        let inbound = node
            .register(protocol.clone())
            .map_err(|e| RpcError::Local(e.to_string()))?;
        let (cmd, cmd_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            core: RpcCore::new(config.clone()),
            node: node.clone(),
            protocol,
            handlers: HashMap::new(),
            waiting: HashMap::new(),
            running: HashMap::new(),
            metrics: node.prometheus().clone(),
            protocol_metrics: HashMap::new(),
            cmd: cmd.clone(),
        };
        tokio::spawn(driver.run(cmd_rx, inbound, node.events()));
        Ok(Rpc {
            cmd,
            next_id: Arc::new(AtomicU64::new(1)),
            node: node.clone(),
            config: Arc::new(config),
        })
    }

    /// The node this service runs on.
    pub fn node(&self) -> &NodeHandle {
        &self.node
    }

    /// The configuration.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, RpcError> {
        let (tx, rx) = oneshot::channel();
        self.cmd.send(make(tx)).map_err(|_| RpcError::Stopped)?;
        rx.await.map_err(|_| RpcError::Stopped)
    }

    /// Serves protocol `P`: each admitted request runs `handler` as its own task. Returns
    /// false if `P` was already served.
    pub async fn register<P, F, Fut>(&self, handler: F) -> Result<bool, RpcError>
    where
        P: Protocol,
        F: Fn(PeerId, P::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<P::Response, String>> + Send + 'static,
    {
        let limits = P::limits();
        let handler = Arc::new(handler);
        let raw: RawHandler = Arc::new(move |peer, bytes: Bytes| {
            let handler = handler.clone();
            Box::pin(async move {
                let request: P::Request =
                    crate::wire::decode_bounded(&bytes, limits.max_request, "rpc request")
                        .map_err(|e| HandlerError::Malformed(e.to_string()))?;
                let response = handler(peer, request).await.map_err(HandlerError::Failed)?;
                postcard::to_stdvec(&response)
                    .map(Bytes::from)
                    .map_err(|e| HandlerError::Failed(format!("cannot encode the response: {e}")))
            })
        });
        self.register_raw(P::protocol(), limits, raw).await
    }

    /// Serves `protocol` with an untyped handler. Returns false if it was already served.
    pub async fn register_raw(
        &self,
        protocol: ProtocolName,
        limits: ProtocolLimits,
        handler: RawHandler,
    ) -> Result<bool, RpcError> {
        self.ask(|tx| Command::Register(protocol, limits, handler, tx))
            .await
    }

    /// Stops serving `protocol`; later requests for it are answered `UnsupportedProtocol`.
    pub async fn unregister(&self, protocol: ProtocolName) -> Result<bool, RpcError> {
        self.ask(|tx| Command::Unregister(protocol, tx)).await
    }

    /// Sends `request` to `peer` under protocol `P` and waits for the answer (at most the
    /// configured `request_timeout`). A peer that is not connected is dialed at an address
    /// the node knows. Dropping the future cancels the request.
    pub async fn request<P: Protocol>(
        &self,
        peer: PeerId,
        request: P::Request,
    ) -> Result<P::Response, RpcError> {
        self.request_with_timeout::<P>(peer, request, None).await
    }

    /// [`Rpc::request`] with its own timeout.
    pub async fn request_with_timeout<P: Protocol>(
        &self,
        peer: PeerId,
        request: P::Request,
        timeout: Option<Duration>,
    ) -> Result<P::Response, RpcError> {
        let payload = postcard::to_stdvec(&request)
            .map(Bytes::from)
            .map_err(|e| RpcError::Local(format!("cannot encode the request: {e}")))?;
        let limits = P::limits();
        let bytes = self
            .send_request(peer, P::protocol(), payload, timeout, Some(limits))
            .await?;
        crate::wire::decode_bounded(&bytes, limits.max_response, "rpc response")
            .map_err(|e| RpcError::Malformed(e.to_string()))
    }

    /// Sends raw request bytes under `protocol`; size limits are the protocol's if we serve
    /// it, else the configured defaults (see [`Rpc::request_raw_with_limits`]).
    pub async fn request_raw(
        &self,
        peer: PeerId,
        protocol: ProtocolName,
        payload: Bytes,
        timeout: Option<Duration>,
    ) -> Result<Bytes, RpcError> {
        self.send_request(peer, protocol, payload, timeout, None)
            .await
    }

    /// [`Rpc::request_raw`] with the protocol's size limits given by the caller.
    pub async fn request_raw_with_limits(
        &self,
        peer: PeerId,
        protocol: ProtocolName,
        payload: Bytes,
        timeout: Option<Duration>,
        limits: ProtocolLimits,
    ) -> Result<Bytes, RpcError> {
        self.send_request(peer, protocol, payload, timeout, Some(limits))
            .await
    }

    async fn send_request(
        &self,
        peer: PeerId,
        protocol: ProtocolName,
        payload: Bytes,
        timeout: Option<Duration>,
        limits: Option<ProtocolLimits>,
    ) -> Result<Bytes, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::Request {
                id,
                peer,
                protocol,
                payload,
                timeout,
                limits,
                reply,
            })
            .map_err(|_| RpcError::Stopped)?;
        let mut guard = CancelGuard {
            id,
            cmd: self.cmd.clone(),
            done: false,
        };
        let result = rx.await.unwrap_or(Err(RpcError::Stopped));
        guard.done = true;
        result
    }

    /// What `peer` has done for us so far.
    pub async fn reputation(&self, peer: PeerId) -> Result<Reputation, RpcError> {
        self.ask(|tx| Command::Reputation(peer, tx)).await
    }

    /// Records that `peer` served content that failed verification.
    pub fn report_bad_content(&self, peer: PeerId) {
        let _ = self.cmd.send(Command::BadContent(peer));
    }

    /// Counters.
    pub async fn metrics(&self) -> Result<RpcMetrics, RpcError> {
        self.ask(Command::Metrics).await
    }
}

struct Driver {
    core: RpcCore,
    node: NodeHandle,
    protocol: ProtocolId,
    handlers: HashMap<ProtocolName, RawHandler>,
    waiting: HashMap<RequestId, Waiting>,
    running: HashMap<(PeerId, u64), AbortHandle>,
    cmd: mpsc::UnboundedSender<Command>,
    metrics: Metrics,
    /// Each protocol's instruments, made the first time we send a request under it.
    protocol_metrics: HashMap<ProtocolName, Arc<RpcProtocolMetrics>>,
}

/// A request of ours in flight.
struct Waiting {
    reply: oneshot::Sender<Result<Bytes, RpcError>>,
    started: Instant,
    metrics: Arc<RpcProtocolMetrics>,
}

/// The metric outcome of a finished request.
fn outcome(r: &Result<Bytes, RpcError>) -> RpcOutcome {
    match r {
        Ok(_) => RpcOutcome::Ok,
        Err(RpcError::Timeout { .. }) => RpcOutcome::Timeout,
        Err(
            RpcError::Busy(_)
            | RpcError::RateLimited(_)
            | RpcError::UnsupportedProtocol(_)
            | RpcError::LocalLimit { .. },
        ) => RpcOutcome::Refused,
        Err(RpcError::Dial { .. } | RpcError::ConnectionClosed { .. }) => RpcOutcome::Unreachable,
        Err(_) => RpcOutcome::Error,
    }
}

impl Driver {
    async fn run(
        mut self,
        mut cmd_rx: mpsc::UnboundedReceiver<Command>,
        mut inbound: mpsc::Receiver<InboundMessage>,
        mut events: broadcast::Receiver<NodeEvent>,
    ) {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let timer = tokio::time::sleep_until(far);
        let mut timer = std::pin::pin!(timer);
        // The driver keeps a command sender of its own (for its handler tasks), so the
        // channel never closes by itself: it ends with the node.
        let node = self.node.clone();
        let stopped = node.stopped();
        let mut stopped = std::pin::pin!(stopped);
        loop {
            let next = self
                .core
                .next_timeout()
                .map_or(far, tokio::time::Instant::from_std);
            if timer.deadline() != next {
                timer.as_mut().reset(next);
            }
            tokio::select! {
                c = cmd_rx.recv() => match c {
                    Some(c) => self.command(c),
                    None => break,
                },
                m = inbound.recv() => match m {
                    Some(m) => {
                        self.inbound(m);
                        for _ in 0..64 {
                            let Ok(m) = inbound.try_recv() else { break };
                            self.inbound(m);
                        }
                    }
                    None => break,
                },
                e = events.recv() => match e {
                    Ok(NodeEvent::ConnectionClosed { peer, .. }) => {
                        if !self.node.is_connected(&peer) {
                            self.core.on_disconnected(&peer);
                        }
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = timer.as_mut() => self.core.handle_timeout(Instant::now()),
                _ = stopped.as_mut() => break,
            }
            self.drain();
        }
        for (_, h) in self.running.drain() {
            h.abort();
        }
    }

    fn inbound(&mut self, m: InboundMessage) {
        if !self.core.handle_bytes(Instant::now(), m.peer, &m.payload) {
            tracing::debug!(peer = %m.peer, "undecodable rpc frame, disconnecting");
            self.node.disconnect(m.peer);
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Register(protocol, limits, handler, reply) => {
                let fresh = self.core.register(protocol.clone(), limits);
                if fresh {
                    self.handlers.insert(protocol, handler);
                }
                let _ = reply.send(fresh);
            }
            Command::Unregister(protocol, reply) => {
                self.handlers.remove(&protocol);
                let _ = reply.send(self.core.unregister(&protocol));
            }
            Command::Request {
                id,
                peer,
                protocol,
                payload,
                timeout,
                limits,
                reply,
            } => {
                let metrics = match self.protocol_metrics.get(&protocol) {
                    Some(m) => m.clone(),
                    None => {
                        let m = Arc::new(self.metrics.rpc().protocol(&protocol.to_string()));
                        self.protocol_metrics.insert(protocol.clone(), m.clone());
                        m
                    }
                };
                let started = Instant::now();
                if reply.is_closed() {
                    metrics.finished(RpcOutcome::Cancelled, Duration::ZERO);
                    return;
                }
                match self
                    .core
                    .request(started, id, peer, protocol, payload, timeout, limits)
                {
                    Ok(()) => {
                        self.waiting.insert(
                            id,
                            Waiting {
                                reply,
                                started,
                                metrics,
                            },
                        );
                    }
                    Err(e) => {
                        let r = Err(e);
                        metrics.finished(outcome(&r), started.elapsed());
                        let _ = reply.send(r);
                    }
                }
            }
            Command::Cancel(id) => {
                if let Some(w) = self.waiting.remove(&id) {
                    w.metrics.finished(RpcOutcome::Cancelled, Duration::ZERO);
                }
                self.core.cancel(id);
            }
            Command::SendFailed(id, e) => self.core.send_failed(id, e),
            Command::Respond {
                peer,
                id,
                protocol,
                result,
            } => {
                self.running.remove(&(peer, id));
                match result {
                    Ok(b) => self.core.respond(peer, id, &protocol, Ok(b)),
                    Err(HandlerError::Failed(m)) => self.core.respond(peer, id, &protocol, Err(m)),
                    Err(HandlerError::Malformed(m)) => self.core.respond_malformed(peer, id, m),
                }
            }
            Command::Reputation(peer, reply) => {
                let _ = reply.send(self.core.reputation(&peer));
            }
            Command::BadContent(peer) => self.core.report_bad_content(peer),
            Command::Metrics(reply) => {
                let _ = reply.send(self.core.metrics().clone());
            }
        }
    }

    fn drain(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Send {
                    peer,
                    frame,
                    request,
                } => self.send(peer, frame, request),
                Action::Inbound {
                    peer,
                    id,
                    protocol,
                    payload,
                } => {
                    let Some(handler) = self.handlers.get(&protocol).cloned() else {
                        self.core.respond(
                            peer,
                            id,
                            &protocol,
                            Err(format!("protocol {protocol} has no handler")),
                        );
                        continue;
                    };
                    let cmd = self.cmd.clone();
                    let task = tokio::spawn(async move {
                        let result = handler(peer, payload).await;
                        let _ = cmd.send(Command::Respond {
                            peer,
                            id,
                            protocol,
                            result,
                        });
                    });
                    self.running.insert((peer, id), task.abort_handle());
                }
                Action::AbortInbound { peer, id } => {
                    if let Some(h) = self.running.remove(&(peer, id)) {
                        h.abort();
                    }
                }
                Action::Complete { id, result } => {
                    if let Some(w) = self.waiting.remove(&id) {
                        w.metrics.finished(outcome(&result), w.started.elapsed());
                        let _ = w.reply.send(result);
                    }
                }
            }
        }
    }

    /// Sends at once if the connection has room; otherwise (not connected: dial a known
    /// address; queue full: wait for room) in a task that reports a failure back.
    fn send(&mut self, peer: PeerId, frame: EncodedFrame, request: Option<RequestId>) {
        match self
            .node
            .try_send_parts(peer, &self.protocol, &frame.head, frame.body.clone())
        {
            Ok(()) => {}
            Err(NodeError::NotConnected(_))
            | Err(NodeError::Send {
                source: SendError::QueueFull,
                ..
            }) => {
                let (node, protocol, cmd) =
                    (self.node.clone(), self.protocol.clone(), self.cmd.clone());
                tokio::spawn(async move {
                    let sent = node
                        .send_parts(peer, &protocol, &frame.head, frame.body)
                        .await;
                    if let Err(e) = sent {
                        if let Some(id) = request {
                            let _ = cmd.send(Command::SendFailed(id, send_error(peer, e)));
                        }
                    }
                });
            }
            Err(e) => {
                if let Some(id) = request {
                    self.core.send_failed(id, send_error(peer, e));
                }
            }
        }
    }
}

fn send_error(peer: PeerId, e: NodeError) -> RpcError {
    match e {
        NodeError::Send {
            source: SendError::TooLarge { len, max },
            ..
        } => RpcError::TooLarge(format!("frame of {len} bytes, the connection allows {max}")),
        NodeError::Send { .. } => RpcError::ConnectionClosed { peer },
        other => RpcError::Dial {
            peer,
            reason: other.to_string(),
        },
    }
}
