//! The sans-IO request-response state machine: tracks our outstanding requests (ids,
//! deadlines, per-peer and per-node limits), admits or refuses inbound requests (registered
//! protocol, size, rate limit, concurrency), and keeps each peer's reputation. It is fed
//! bytes, connection events and the time, and drained of [`Action`]s; the driver does the IO.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::config::{ProtocolLimits, RpcConfig};
use super::error::RpcError;
use super::message::{EncodedFrame, ErrorFrame, ErrorKind, Frame, ProtocolName, clip_message};
use crate::identity::PeerId;

/// Peers whose reputation is remembered (the least active are forgotten first).
const MAX_REPUTATIONS: usize = 10_000;

/// A caller's request id (unique per [`RpcCore`]).
pub type RequestId = u64;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send these bytes to the peer. `request` is set for our own requests, so that a failed
    /// send (dial failure, closed connection) can be reported with [`RpcCore::send_failed`].
    Send {
        /// The peer.
        peer: PeerId,
        /// An encoded [`Frame`], its payload shared rather than copied.
        frame: EncodedFrame,
        /// Our request this carries, if it is one.
        request: Option<RequestId>,
    },
    /// Run the handler of `protocol` for this admitted request and answer with
    /// [`RpcCore::respond`].
    Inbound {
        /// Who asked.
        peer: PeerId,
        /// The peer's id for the request.
        id: u64,
        /// The registered protocol.
        protocol: ProtocolName,
        /// The request bytes (within the protocol's request limit).
        payload: Bytes,
    },
    /// Stop the handler of this inbound request: the caller cancelled, disconnected or the
    /// handler ran past its deadline. Its answer, if it still comes, is ignored.
    AbortInbound {
        /// Who asked.
        peer: PeerId,
        /// The peer's id for the request.
        id: u64,
    },
    /// Our request finished.
    Complete {
        /// Its id.
        id: RequestId,
        /// The response bytes, or why there are none.
        result: Result<Bytes, RpcError>,
    },
}

/// What one peer has done for us, as the content layer and callers read it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reputation {
    /// Requests it answered with a response.
    pub successes: u64,
    /// Requests that failed on its side: timeouts, closed connections, error answers.
    pub failures: u64,
    /// Content it served that failed verification.
    pub bad_content: u64,
}

impl Reputation {
    /// A simple ordering key for choosing among peers: bad content weighs most.
    pub fn score(&self) -> i64 {
        let s = i64::try_from(self.successes).unwrap_or(i64::MAX);
        let f = i64::try_from(self.failures).unwrap_or(i64::MAX);
        let b = i64::try_from(self.bad_content).unwrap_or(i64::MAX);
        s.saturating_sub(f.saturating_mul(2))
            .saturating_sub(b.saturating_mul(100))
    }

    fn activity(&self) -> u64 {
        self.successes
            .saturating_add(self.failures)
            .saturating_add(self.bad_content)
    }
}

/// Counters for operators and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RpcMetrics {
    /// Requests we sent.
    pub requests_sent: u64,
    /// Our requests answered with a response body.
    pub responses_ok: u64,
    /// Our requests that failed, for any reason (timeouts included).
    pub requests_failed: u64,
    /// Our requests that timed out.
    pub timeouts: u64,
    /// Inbound requests handed to a handler.
    pub inbound_admitted: u64,
    /// Inbound requests refused: busy.
    pub inbound_busy: u64,
    /// Inbound requests refused: rate limited.
    pub inbound_rate_limited: u64,
    /// Inbound requests refused: protocol not served.
    pub inbound_unsupported: u64,
    /// Inbound requests refused: too large.
    pub inbound_too_large: u64,
    /// Frames that did not decode (the peer is disconnected by the driver).
    pub malformed_frames: u64,
}

/// A token bucket: `rate` tokens a second up to `burst`.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: f64, burst: f64) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * rate).min(burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Outstanding {
    peer: PeerId,
    deadline: DeadlineKey,
    max_response: usize,
}

/// A deadline's key in [`RpcCore::deadlines`]: its time and a tie-breaking sequence.
type DeadlineKey = (Instant, u64);

#[derive(Debug, Default)]
struct PeerState {
    /// Our requests to this peer.
    outbound: HashSet<RequestId>,
    /// The peer's requests to us being handled, with their deadlines.
    inbound: HashMap<u64, DeadlineKey>,
    bucket: Option<Bucket>,
}

/// The request-response state machine (see the module docs).
#[derive(Debug)]
pub struct RpcCore {
    config: RpcConfig,
    protocols: HashMap<ProtocolName, ProtocolLimits>,
    outstanding: HashMap<RequestId, Outstanding>,
    /// Deadlines of our requests and of inbound handlers, in order.
    deadlines: BTreeMap<DeadlineKey, Deadline>,
    deadline_seq: u64,
    peers: HashMap<PeerId, PeerState>,
    inbound_total: usize,
    frame_limit: usize,
    reputations: HashMap<PeerId, Reputation>,
    actions: std::collections::VecDeque<Action>,
    metrics: RpcMetrics,
}

#[derive(Debug, Clone, Copy)]
enum Deadline {
    Outbound(RequestId),
    Inbound(PeerId, u64),
}

impl RpcCore {
    /// A core with `config` (validated by the caller or the driver).
    pub fn new(config: RpcConfig) -> Self {
        let d = config.default_limits;
        Self {
            config,
            protocols: HashMap::new(),
            outstanding: HashMap::new(),
            deadlines: BTreeMap::new(),
            deadline_seq: 0,
            peers: HashMap::new(),
            inbound_total: 0,
            frame_limit: d
                .max_request
                .max(d.max_response)
                .saturating_add(FRAME_OVERHEAD),
            reputations: HashMap::new(),
            actions: std::collections::VecDeque::new(),
            metrics: RpcMetrics::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// Counters.
    pub fn metrics(&self) -> &RpcMetrics {
        &self.metrics
    }

    /// The largest frame this core accepts: the largest request or response of any protocol
    /// served or called so far, plus room for the frame itself. (Each request and response is
    /// then checked against its own protocol's limit.)
    pub fn max_frame(&self) -> usize {
        self.frame_limit
    }

    fn admit_frame_size(&mut self, limits: ProtocolLimits) {
        let largest = limits.max_request.max(limits.max_response);
        self.frame_limit = self.frame_limit.max(largest.saturating_add(FRAME_OVERHEAD));
    }

    /// Serves `protocol` from now on, with these size limits. Returns false if it was
    /// already registered (the limits are then unchanged).
    pub fn register(&mut self, protocol: ProtocolName, limits: ProtocolLimits) -> bool {
        if self.protocols.contains_key(&protocol) {
            return false;
        }
        self.admit_frame_size(limits);
        self.protocols.insert(protocol, limits);
        true
    }

    /// Stops serving `protocol`.
    pub fn unregister(&mut self, protocol: &ProtocolName) -> bool {
        self.protocols.remove(protocol).is_some()
    }

    /// Whether `protocol` is served here.
    pub fn serves(&self, protocol: &ProtocolName) -> bool {
        self.protocols.contains_key(protocol)
    }

    /// The limits for `protocol`: its registered ones, else the defaults (for requests to
    /// protocols we only call).
    pub fn limits(&self, protocol: &ProtocolName) -> ProtocolLimits {
        self.protocols
            .get(protocol)
            .copied()
            .unwrap_or(self.config.default_limits)
    }

    /// The next action, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`RpcCore::handle_timeout`] must next run.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.keys().next().map(|(t, _)| *t)
    }

    /// `peer`'s reputation (zero if unknown).
    pub fn reputation(&self, peer: &PeerId) -> Reputation {
        self.reputations.get(peer).copied().unwrap_or_default()
    }

    /// Records that `peer` served content that failed verification.
    pub fn report_bad_content(&mut self, peer: PeerId) {
        self.reputation_mut(peer).bad_content += 1;
    }

    fn reputation_mut(&mut self, peer: PeerId) -> &mut Reputation {
        if !self.reputations.contains_key(&peer) && self.reputations.len() >= MAX_REPUTATIONS {
            // Forget the least active peer (a linear scan, only when full).
            if let Some(p) = self
                .reputations
                .iter()
                .min_by_key(|(_, r)| r.activity())
                .map(|(p, _)| *p)
            {
                self.reputations.remove(&p);
            }
        }
        self.reputations.entry(peer).or_default()
    }

    fn add_deadline(&mut self, at: Instant, d: Deadline) -> DeadlineKey {
        self.deadline_seq += 1;
        let key = (at, self.deadline_seq);
        self.deadlines.insert(key, d);
        key
    }

    /// Starts request `id` (chosen by the caller, unique among its live requests) to `peer`.
    /// `limits` are the protocol's (a typed caller knows them); without them, those of the
    /// protocol if served here, else the configured defaults. Fails at once if the request
    /// is too large or a concurrency limit is reached; otherwise queues its
    /// [`Action::Send`] and, later, exactly one [`Action::Complete`] for it.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        now: Instant,
        id: RequestId,
        peer: PeerId,
        protocol: ProtocolName,
        payload: Bytes,
        timeout: Option<Duration>,
        limits: Option<ProtocolLimits>,
    ) -> Result<(), RpcError> {
        let limits = limits.unwrap_or_else(|| self.limits(&protocol));
        if payload.len() > limits.max_request {
            return Err(RpcError::TooLarge(format!(
                "request of {} bytes, {protocol} allows {}",
                payload.len(),
                limits.max_request
            )));
        }
        if self.outstanding.contains_key(&id) {
            return Err(RpcError::Local(format!(
                "request id {id} is already in use"
            )));
        }
        if self.outstanding.len() >= self.config.max_outbound_total {
            return Err(RpcError::LocalLimit {
                limit: self.config.max_outbound_total,
                per_peer: false,
            });
        }
        let state = self.peers.entry(peer).or_default();
        if state.outbound.len() >= self.config.max_outbound_per_peer {
            return Err(RpcError::LocalLimit {
                limit: self.config.max_outbound_per_peer,
                per_peer: true,
            });
        }
        state.outbound.insert(id);
        self.admit_frame_size(limits);
        let at = now + timeout.unwrap_or(self.config.request_timeout);
        let deadline = self.add_deadline(at, Deadline::Outbound(id));
        self.outstanding.insert(
            id,
            Outstanding {
                peer,
                deadline,
                max_response: limits.max_response,
            },
        );
        self.metrics.requests_sent += 1;
        let frame = Frame::Request {
            id,
            protocol,
            payload,
        }
        .encode_parts();
        self.actions.push_back(Action::Send {
            peer,
            frame,
            request: Some(id),
        });
        Ok(())
    }

    /// The caller dropped request `id`: forget it and tell the peer to stop.
    pub fn cancel(&mut self, id: RequestId) {
        let Some(o) = self.outstanding.remove(&id) else {
            return;
        };
        self.forget_outbound(o.peer, id, o.deadline);
        self.actions.push_back(Action::Send {
            peer: o.peer,
            frame: Frame::Cancel { id }.encode_parts(),
            request: None,
        });
    }

    /// The driver could not deliver request `id` (dial failure, connection gone).
    pub fn send_failed(&mut self, id: RequestId, error: RpcError) {
        self.complete(id, Err(error));
    }

    fn forget_outbound(&mut self, peer: PeerId, id: RequestId, deadline: DeadlineKey) {
        if let Some(s) = self.peers.get_mut(&peer) {
            s.outbound.remove(&id);
        }
        self.deadlines.remove(&deadline);
    }

    fn complete(&mut self, id: RequestId, result: Result<Bytes, RpcError>) {
        let Some(o) = self.outstanding.remove(&id) else {
            return;
        };
        self.forget_outbound(o.peer, id, o.deadline);
        match &result {
            Ok(_) => {
                self.metrics.responses_ok += 1;
                self.reputation_mut(o.peer).successes += 1;
            }
            Err(e) => {
                self.metrics.requests_failed += 1;
                if matches!(e, RpcError::Timeout { .. }) {
                    self.metrics.timeouts += 1;
                }
                if e.counts_against_peer() {
                    self.reputation_mut(o.peer).failures += 1;
                }
            }
        }
        self.actions.push_back(Action::Complete { id, result });
    }

    /// Bytes received from `peer` on the RPC protocol. Returns false if they did not decode:
    /// the driver should then disconnect the peer.
    pub fn handle(&mut self, now: Instant, from: PeerId, bytes: &[u8]) -> bool {
        let frame = Frame::decode(bytes, self.max_frame());
        self.on_frame(now, from, frame)
    }

    /// [`RpcCore::handle`] for a received buffer: payloads are slices of it, not copies.
    pub fn handle_bytes(&mut self, now: Instant, from: PeerId, bytes: &Bytes) -> bool {
        let frame = Frame::decode_bytes(bytes, self.max_frame());
        self.on_frame(now, from, frame)
    }

    fn on_frame(
        &mut self,
        now: Instant,
        from: PeerId,
        frame: Result<Frame, crate::wire::WireError>,
    ) -> bool {
        let frame = match frame {
            Ok(f) => f,
            Err(_) => {
                self.metrics.malformed_frames += 1;
                return false;
            }
        };
        match frame {
            Frame::Request {
                id,
                protocol,
                payload,
            } => self.on_request(now, from, id, protocol, payload),
            Frame::Response { id, result } => self.on_response(from, id, result),
            Frame::Cancel { id } => {
                if self.finish_inbound(from, id) {
                    self.actions
                        .push_back(Action::AbortInbound { peer: from, id });
                }
            }
        }
        true
    }

    fn refuse(&mut self, peer: PeerId, id: u64, kind: ErrorKind, message: String) {
        let frame = Frame::Response {
            id,
            result: Err(ErrorFrame {
                kind,
                message: clip_message(message),
            }),
        }
        .encode_parts();
        self.actions.push_back(Action::Send {
            peer,
            frame,
            request: None,
        });
    }

    fn on_request(
        &mut self,
        now: Instant,
        from: PeerId,
        id: u64,
        protocol: ProtocolName,
        payload: Bytes,
    ) {
        let Some(limits) = self.protocols.get(&protocol).copied() else {
            self.metrics.inbound_unsupported += 1;
            let message = format!("protocol {protocol} is not served here");
            self.refuse(from, id, ErrorKind::UnsupportedProtocol, message);
            return;
        };
        if payload.len() > limits.max_request {
            self.metrics.inbound_too_large += 1;
            let message = format!(
                "request of {} bytes, {protocol} allows {}",
                payload.len(),
                limits.max_request
            );
            self.refuse(from, id, ErrorKind::RequestTooLarge, message);
            return;
        }
        let (rate, burst) = (
            self.config.rate_limit.per_second,
            self.config.rate_limit.burst,
        );
        let max_per_peer = self.config.max_inbound_per_peer;
        let node_full = self.inbound_total >= self.config.max_inbound_total;
        let state = self.peers.entry(from).or_default();
        if state.inbound.contains_key(&id) {
            // A repeated id while the first is running: refuse the newcomer, keep the first.
            self.metrics.inbound_busy += 1;
            self.refuse(
                from,
                id,
                ErrorKind::Busy,
                "request id already in use".into(),
            );
            return;
        }
        if rate > 0.0 {
            let bucket = state.bucket.get_or_insert(Bucket {
                tokens: burst.max(1.0),
                last: now,
            });
            if !bucket.take(now, rate, burst.max(1.0)) {
                self.metrics.inbound_rate_limited += 1;
                let message = format!("more than {rate} requests a second");
                self.refuse(from, id, ErrorKind::RateLimited, message);
                return;
            }
        }
        if state.inbound.len() >= max_per_peer || node_full {
            self.metrics.inbound_busy += 1;
            let message = if node_full {
                format!("{} requests in progress", self.config.max_inbound_total)
            } else {
                format!("{max_per_peer} of your requests in progress")
            };
            self.refuse(from, id, ErrorKind::Busy, message);
            return;
        }
        let at = now + self.config.handler_timeout;
        self.deadline_seq += 1;
        let key = (at, self.deadline_seq);
        state.inbound.insert(id, key);
        self.deadlines.insert(key, Deadline::Inbound(from, id));
        self.inbound_total += 1;
        self.metrics.inbound_admitted += 1;
        self.actions.push_back(Action::Inbound {
            peer: from,
            id,
            protocol,
            payload,
        });
    }

    /// Frees an inbound slot; true if it was live.
    fn finish_inbound(&mut self, peer: PeerId, id: u64) -> bool {
        let Some(state) = self.peers.get_mut(&peer) else {
            return false;
        };
        let Some(deadline) = state.inbound.remove(&id) else {
            return false;
        };
        self.inbound_total = self.inbound_total.saturating_sub(1);
        self.deadlines.remove(&deadline);
        true
    }

    fn on_response(&mut self, from: PeerId, id: u64, result: Result<Bytes, ErrorFrame>) {
        let Some(o) = self.outstanding.get(&id) else {
            // Late (after a timeout or cancel) or unknown: nothing waits for it.
            return;
        };
        if o.peer != from {
            // Another peer answering our id: not its request.
            return;
        }
        let max = o.max_response;
        let result = match result {
            Ok(body) if body.len() > max => Err(RpcError::TooLarge(format!(
                "response of {} bytes, the limit is {max}",
                body.len()
            ))),
            Ok(body) => Ok(body),
            Err(e) => Err(RpcError::from_remote(e)),
        };
        self.complete(id, result);
    }

    /// The handler's answer to `peer`'s request `id`. Ignored if the request was cancelled or
    /// timed out meanwhile.
    pub fn respond(
        &mut self,
        peer: PeerId,
        id: u64,
        protocol: &ProtocolName,
        result: Result<Bytes, String>,
    ) {
        if !self.finish_inbound(peer, id) {
            return;
        }
        let max = self.limits(protocol).max_response;
        let result = match result {
            Ok(body) if body.len() > max => Err(ErrorFrame {
                kind: ErrorKind::ResponseTooLarge,
                message: format!("response of {} bytes, {protocol} allows {max}", body.len()),
            }),
            Ok(body) => Ok(body),
            Err(message) => Err(ErrorFrame {
                kind: ErrorKind::Handler,
                message: clip_message(message),
            }),
        };
        self.actions.push_back(Action::Send {
            peer,
            frame: Frame::Response { id, result }.encode_parts(),
            request: None,
        });
    }

    /// Like [`RpcCore::respond`] for a request the driver could not decode for its protocol.
    pub fn respond_malformed(&mut self, peer: PeerId, id: u64, message: String) {
        if self.finish_inbound(peer, id) {
            self.refuse(peer, id, ErrorKind::Malformed, message);
        }
    }

    /// The last connection to `peer` closed: its requests and ours to it end.
    pub fn on_disconnected(&mut self, peer: &PeerId) {
        let Some(state) = self.peers.remove(peer) else {
            return;
        };
        let mut inbound: Vec<(u64, DeadlineKey)> = state.inbound.into_iter().collect();
        inbound.sort_unstable_by_key(|(id, _)| *id);
        for (id, deadline) in inbound {
            self.inbound_total = self.inbound_total.saturating_sub(1);
            self.deadlines.remove(&deadline);
            self.actions
                .push_back(Action::AbortInbound { peer: *peer, id });
        }
        let mut ids: Vec<RequestId> = state.outbound.into_iter().collect();
        ids.sort_unstable();
        for id in ids {
            // `complete` looks the peer state up again; it is gone, which is fine.
            self.complete(id, Err(RpcError::ConnectionClosed { peer: *peer }));
        }
    }

    /// Ends every request and handler whose deadline is at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((&(at, seq), _)) = self.deadlines.first_key_value() {
            if at > now {
                break;
            }
            let Some(d) = self.deadlines.remove(&(at, seq)) else {
                break;
            };
            match d {
                Deadline::Outbound(id) => {
                    if let Some(o) = self.outstanding.get(&id) {
                        let peer = o.peer;
                        self.complete(id, Err(RpcError::Timeout { peer }));
                        // Tell the peer to stop working on it.
                        self.actions.push_back(Action::Send {
                            peer,
                            frame: Frame::Cancel { id }.encode_parts(),
                            request: None,
                        });
                    }
                }
                Deadline::Inbound(peer, id) => {
                    if let Some(state) = self.peers.get_mut(&peer) {
                        if state.inbound.remove(&id).is_some() {
                            self.inbound_total = self.inbound_total.saturating_sub(1);
                            self.actions.push_back(Action::AbortInbound { peer, id });
                            let message = "the handler did not answer in time".to_owned();
                            self.refuse(peer, id, ErrorKind::Timeout, message);
                        }
                    }
                }
            }
        }
    }

    /// Requests of ours still waiting.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Inbound requests being handled.
    pub fn inbound_in_progress(&self) -> usize {
        self.inbound_total
    }
}

/// Room for a frame's own fields around the payload (id, protocol name, lengths).
pub const FRAME_OVERHEAD: usize =
    64 + super::message::MAX_PROTOCOL_NAME + super::message::MAX_ERROR_MESSAGE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Keypair;
    use crate::rpc::RateLimit;

    fn peer(n: u8) -> PeerId {
        Keypair::from_secret_bytes([n; 32]).peer_id()
    }

    fn drain(core: &mut RpcCore) -> Vec<Action> {
        std::iter::from_fn(|| core.poll_action()).collect()
    }

    fn request(id: u64, protocol: &ProtocolName) -> Vec<u8> {
        Frame::Request {
            id,
            protocol: protocol.clone(),
            payload: Bytes::from_static(b"x"),
        }
        .encode()
        .to_vec()
    }

    fn refusal(actions: &[Action]) -> Option<ErrorKind> {
        actions.iter().find_map(|a| match a {
            Action::Send { frame, .. } => match Frame::decode(&frame.to_vec(), 1 << 20) {
                Ok(Frame::Response { result: Err(e), .. }) => Some(e.kind),
                _ => None,
            },
            _ => None,
        })
    }

    #[test]
    fn the_token_bucket_refills_with_time() {
        let config = RpcConfig {
            rate_limit: RateLimit {
                per_second: 2.0,
                burst: 2.0,
            },
            max_inbound_per_peer: 100,
            ..RpcConfig::default()
        };
        let mut core = RpcCore::new(config);
        let p = ProtocolName::new("/t", 1);
        core.register(p.clone(), ProtocolLimits::default());
        let start = Instant::now();
        let a = peer(1);
        let admitted = |core: &mut RpcCore, now: Instant, id: u64| {
            assert!(core.handle(now, a, &request(id, &p)));
            let actions = drain(core);
            match refusal(&actions) {
                Some(ErrorKind::RateLimited) => false,
                None => true,
                Some(other) => panic!("{other:?}"),
            }
        };
        assert!(admitted(&mut core, start, 1));
        assert!(admitted(&mut core, start, 2));
        assert!(!admitted(&mut core, start, 3));
        // Half a second later one token is back, not two.
        let later = start + Duration::from_millis(500);
        assert!(admitted(&mut core, later, 4));
        assert!(!admitted(&mut core, later, 5));
        // Another peer has its own bucket.
        assert!(core.handle(later, peer(2), &request(1, &ProtocolName::new("/t", 1))));
        assert_eq!(refusal(&drain(&mut core)), None);
        assert_eq!(core.metrics().inbound_rate_limited, 2);
    }

    #[test]
    fn deadlines_end_requests_and_handlers_in_order() {
        let config = RpcConfig {
            request_timeout: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(5),
            ..RpcConfig::default()
        };
        let mut core = RpcCore::new(config);
        let p = ProtocolName::new("/t", 1);
        core.register(p.clone(), ProtocolLimits::default());
        let start = Instant::now();
        let b = peer(3);
        core.request(start, 1, b, p.clone(), Bytes::new(), None, None)
            .unwrap();
        core.request(
            start,
            2,
            b,
            p.clone(),
            Bytes::new(),
            Some(Duration::from_secs(1)),
            None,
        )
        .unwrap();
        assert!(core.handle(start, b, &request(9, &p)));
        drain(&mut core);
        assert_eq!(core.next_timeout(), Some(start + Duration::from_secs(1)));
        core.handle_timeout(start + Duration::from_secs(1));
        let a = drain(&mut core);
        assert!(a.contains(&Action::Complete {
            id: 2,
            result: Err(RpcError::Timeout { peer: b })
        }));
        assert_eq!(core.outstanding(), 1);
        // The handler's deadline: aborted and answered Timeout.
        core.handle_timeout(start + Duration::from_secs(5));
        let a = drain(&mut core);
        assert!(a.contains(&Action::AbortInbound { peer: b, id: 9 }));
        assert_eq!(refusal(&a), Some(ErrorKind::Timeout));
        assert_eq!(core.inbound_in_progress(), 0);
        // A late answer from the handler is ignored.
        core.respond(b, 9, &p, Ok(Bytes::new()));
        assert!(drain(&mut core).is_empty());
        // The disconnect ends the last request; the reputation counts both failures.
        core.on_disconnected(&b);
        let a = drain(&mut core);
        assert_eq!(
            a,
            vec![Action::Complete {
                id: 1,
                result: Err(RpcError::ConnectionClosed { peer: b })
            }]
        );
        assert_eq!(core.next_timeout(), None);
        assert_eq!(core.reputation(&b).failures, 2);
    }

    #[test]
    fn responses_from_the_wrong_peer_or_too_large_are_not_accepted() {
        let mut core = RpcCore::new(RpcConfig::default());
        let p = ProtocolName::new("/t", 1);
        core.register(
            p.clone(),
            ProtocolLimits {
                max_request: 16,
                max_response: 16,
            },
        );
        let now = Instant::now();
        let (a, b) = (peer(4), peer(5));
        core.request(now, 1, a, p.clone(), Bytes::new(), None, None)
            .unwrap();
        drain(&mut core);
        let answer = |body: &'static [u8]| {
            Frame::Response {
                id: 1,
                result: Ok(Bytes::from_static(body)),
            }
            .encode()
        };
        assert!(core.handle(now, b, &answer(b"from b")));
        assert!(drain(&mut core).is_empty(), "b did not get request 1");
        assert!(core.handle(now, a, &answer(&[0; 17])));
        match drain(&mut core).as_slice() {
            [
                Action::Complete {
                    id: 1,
                    result: Err(RpcError::TooLarge(_)),
                },
            ] => {}
            other => panic!("{other:?}"),
        }
        assert!(!core.handle(now, a, b"\xff\xff\xff"));
        assert_eq!(core.metrics().malformed_frames, 1);
    }
}
