//! Message multiplexing over one Noise session (TCP and memory transports).
//!
//! Every Noise frame's plaintext starts with a mux header:
//!
//! ```text
//! [message id: u32 BE][flags: u8][total length: u32 BE, only when FIRST is set][chunk …]
//! ```
//!
//! A message is sent as one or more chunks under one id; `FIRST` marks the chunk that
//! announces the total length, `LAST` the one that completes it. The writer keeps up to
//! [`MAX_ACTIVE_MESSAGES`] messages in flight and emits one chunk of each in turn, so a small
//! message waits behind at most one chunk of every larger message already in flight rather than
//! behind their whole bodies.
//!
//! The [`Reassembler`] checks every announced length against [`Limits`] before accepting it,
//! bounds the number and total size of partially received messages, and never trusts a length
//! for allocation beyond a modest initial capacity.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::connection::{Activity, DRAIN_TIMEOUT, Ends, Outbound};
use super::noise::{MAX_FRAME_PLAINTEXT, SecureStream};
use super::{CloseReason, ConnectionInfo, InboundSink, TransportConfig};
use crate::wire::{Limits, WireError};

/// Flag: this chunk starts a message and carries its total length.
pub const FLAG_FIRST: u8 = 0b01;
/// Flag: this chunk completes a message.
pub const FLAG_LAST: u8 = 0b10;
/// Messages the writer interleaves at once.
pub const MAX_ACTIVE_MESSAGES: usize = 16;
/// Encrypted bytes gathered before one write to the socket.
const WRITE_BATCH: usize = 256 * 1024;
/// Initial capacity reserved for a multi-chunk message (it grows as chunks arrive).
const INITIAL_REASSEMBLY_CAPACITY: usize = 1024 * 1024;

/// A decoded mux header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MuxHeader {
    /// Message id.
    pub id: u32,
    /// Total message length, present on the first chunk.
    pub total_len: Option<u32>,
    /// This chunk completes the message.
    pub last: bool,
}

impl MuxHeader {
    /// Encoded length of this header.
    pub fn encoded_len(&self) -> usize {
        if self.total_len.is_some() { 9 } else { 5 }
    }

    /// Appends the header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_be_bytes());
        let mut flags = 0;
        if self.total_len.is_some() {
            flags |= FLAG_FIRST;
        }
        if self.last {
            flags |= FLAG_LAST;
        }
        out.push(flags);
        if let Some(t) = self.total_len {
            out.extend_from_slice(&t.to_be_bytes());
        }
    }

    /// Splits a frame plaintext into its header and chunk. Total.
    pub fn decode(frame: &[u8]) -> Result<(MuxHeader, usize), WireError> {
        let (id, rest) = frame
            .split_first_chunk::<4>()
            .ok_or(WireError::Truncated("mux header"))?;
        let (&flags, rest) = rest
            .split_first()
            .ok_or(WireError::Truncated("mux header"))?;
        if flags & !(FLAG_FIRST | FLAG_LAST) != 0 {
            return Err(WireError::malformed("mux header", "unknown flag bits"));
        }
        let total_len = if flags & FLAG_FIRST != 0 {
            let (t, _) = rest
                .split_first_chunk::<4>()
                .ok_or(WireError::Truncated("mux header length"))?;
            Some(u32::from_be_bytes(*t))
        } else {
            None
        };
        let header = MuxHeader {
            id: u32::from_be_bytes(*id),
            total_len,
            last: flags & FLAG_LAST != 0,
        };
        Ok((header, header.encoded_len()))
    }
}

struct Partial {
    expected: usize,
    buf: BytesMut,
}

/// Rebuilds whole messages from decrypted frames, enforcing [`Limits`].
pub struct Reassembler {
    limits: Limits,
    partial: HashMap<u32, Partial>,
    buffered: usize,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new(limits: &Limits) -> Self {
        Self {
            limits: limits.clone(),
            partial: HashMap::new(),
            buffered: 0,
        }
    }

    /// Bytes of partially received messages held now.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Messages partially received now.
    pub fn partial_messages(&self) -> usize {
        self.partial.len()
    }

    /// Feeds one decrypted frame. Returns a message when this frame completes one.
    /// An error means the peer broke the protocol; the connection must be closed.
    pub fn push(&mut self, frame: &[u8]) -> Result<Option<Bytes>, WireError> {
        let (header, offset) = MuxHeader::decode(frame)?;
        let chunk_len = frame.len() - offset;
        match header.total_len {
            Some(total) => {
                let total = total as usize;
                if total > self.limits.max_message_size {
                    return Err(WireError::FrameTooLarge {
                        len: total as u64,
                        max: self.limits.max_message_size as u64,
                    });
                }
                if self.partial.contains_key(&header.id) {
                    return Err(WireError::malformed(
                        "mux frame",
                        "message id already in use",
                    ));
                }
                if chunk_len > total {
                    return Err(WireError::malformed(
                        "mux frame",
                        "chunk longer than its message",
                    ));
                }
                if header.last {
                    if chunk_len != total {
                        return Err(WireError::malformed(
                            "mux frame",
                            "message shorter than announced",
                        ));
                    }
                    return Ok(Some(Bytes::copy_from_slice(&frame[offset..])));
                }
                if self.partial.len() >= self.limits.max_partial_messages {
                    return Err(WireError::malformed(
                        "mux frame",
                        "too many partial messages",
                    ));
                }
                self.reserve(chunk_len)?;
                let mut buf = BytesMut::with_capacity(total.min(INITIAL_REASSEMBLY_CAPACITY));
                buf.extend_from_slice(&frame[offset..]);
                self.partial.insert(
                    header.id,
                    Partial {
                        expected: total,
                        buf,
                    },
                );
                Ok(None)
            }
            None => {
                let Some(p) = self.partial.get_mut(&header.id) else {
                    return Err(WireError::malformed(
                        "mux frame",
                        "continuation of an unknown message",
                    ));
                };
                if p.buf.len() + chunk_len > p.expected {
                    return Err(WireError::malformed(
                        "mux frame",
                        "message longer than announced",
                    ));
                }
                if self.buffered + chunk_len > self.limits.max_reassembly_bytes {
                    return Err(WireError::FrameTooLarge {
                        len: (self.buffered + chunk_len) as u64,
                        max: self.limits.max_reassembly_bytes as u64,
                    });
                }
                self.buffered += chunk_len;
                p.buf.extend_from_slice(&frame[offset..]);
                if !header.last {
                    return Ok(None);
                }
                if p.buf.len() != p.expected {
                    return Err(WireError::malformed(
                        "mux frame",
                        "message shorter than announced",
                    ));
                }
                let p = self.partial.remove(&header.id).map(|p| p.buf.freeze());
                self.buffered -= p.as_ref().map_or(0, |b| b.len());
                Ok(p)
            }
        }
    }

    fn reserve(&mut self, n: usize) -> Result<(), WireError> {
        if self.buffered + n > self.limits.max_reassembly_bytes {
            return Err(WireError::FrameTooLarge {
                len: (self.buffered + n) as u64,
                max: self.limits.max_reassembly_bytes as u64,
            });
        }
        self.buffered += n;
        Ok(())
    }
}

struct Sending {
    id: u32,
    msg: Outbound,
    offset: usize,
}

/// Copies `len` bytes starting at `from` of `header ‖ payload` into `dst`.
fn copy_range(msg: &Outbound, from: usize, len: usize, dst: &mut Vec<u8>) {
    let h = msg.header.len();
    let end = from + len;
    if from < h {
        dst.extend_from_slice(&msg.header[from..end.min(h)]);
    }
    if end > h {
        dst.extend_from_slice(&msg.payload[from.max(h) - h..end - h]);
    }
}

/// Drives a stream connection until it closes.
pub(crate) async fn run<S: InboundSink>(
    stream: SecureStream,
    info: Arc<ConnectionInfo>,
    sink: Arc<S>,
    mut rx: mpsc::UnboundedReceiver<Outbound>,
    ends: Ends,
    activity: Arc<Activity>,
    config: Arc<TransportConfig>,
) -> CloseReason {
    let Ends {
        cancel,
        retire,
        stopping,
    } = ends;
    let SecureStream {
        mut reader,
        mut writer,
        ..
    } = stream;

    let read_loop = async {
        let mut reassembler = Reassembler::new(&config.limits);
        let mut frame = Vec::new();
        loop {
            if let Err(e) = reader.read_frame_into(&mut frame).await {
                return match e.kind() {
                    std::io::ErrorKind::UnexpectedEof if reassembler.partial_messages() == 0 => {
                        CloseReason::Remote
                    }
                    _ => CloseReason::Error(e.to_string()),
                };
            }
            activity.touch_rx();
            match reassembler.push(&frame) {
                Ok(Some(message)) => sink.deliver(&info, message).await,
                Ok(None) => {}
                Err(e) => return CloseReason::Error(e.to_string()),
            }
        }
    };

    // Ok(()) once every queued message is written and our side is shut down (retired, or
    // every handle dropped); Err on a write error.
    // Set when the remote ends its side: we finish ours (flush, then end-of-stream).
    let remote_done = CancellationToken::new();
    // The same two facts as plain flags, for the busy path (a token's `is_cancelled` locks).
    let remote_ended = AtomicBool::new(false);
    let write_loop = async {
        let mut retired = std::pin::pin!(retire.cancelled());
        let mut remote_finished = std::pin::pin!(remote_done.cancelled());
        let mut active: VecDeque<Sending> = VecDeque::new();
        let mut next_id: u32 = 0;
        let mut wbuf: Vec<u8> = Vec::new();
        let mut plain: Vec<u8> = Vec::new();
        let mut closed = false;
        loop {
            if !closed && (stopping.load(Ordering::Acquire) || remote_ended.load(Ordering::Relaxed))
            {
                // No new messages (senders get `Closed`); the ones already queued are written.
                rx.close();
                closed = true;
            }
            if active.is_empty() {
                // Idle: give back the batch buffers so an idle connection stays small.
                wbuf = Vec::new();
                plain = Vec::new();
                let next = tokio::select! {
                    biased;
                    m = rx.recv() => m,
                    _ = retired.as_mut(), if !closed => {
                        stopping.store(true, Ordering::Release);
                        continue;
                    }
                    _ = remote_finished.as_mut(), if !closed => {
                        remote_ended.store(true, Ordering::Relaxed);
                        continue;
                    }
                };
                match next {
                    Some(msg) => {
                        active.push_back(Sending {
                            id: next_id,
                            msg,
                            offset: 0,
                        });
                        next_id = next_id.wrapping_add(1);
                    }
                    None => {
                        // Our end-of-stream tells the remote we are done.
                        return writer
                            .io
                            .shutdown()
                            .await
                            .map_err(|e| CloseReason::Error(e.to_string()));
                    }
                }
            }
            while active.len() < MAX_ACTIVE_MESSAGES {
                match rx.try_recv() {
                    Ok(msg) => {
                        active.push_back(Sending {
                            id: next_id,
                            msg,
                            offset: 0,
                        });
                        next_id = next_id.wrapping_add(1);
                    }
                    Err(_) => break,
                }
            }
            for _ in 0..active.len() {
                let Some(mut s) = active.pop_front() else {
                    break;
                };
                let total = s.msg.len();
                let first = s.offset == 0;
                let mut header = MuxHeader {
                    id: s.id,
                    total_len: first.then_some(total as u32),
                    last: false,
                };
                let take = (MAX_FRAME_PLAINTEXT - header.encoded_len()).min(total - s.offset);
                header.last = s.offset + take == total;
                plain.clear();
                header.encode(&mut plain);
                copy_range(&s.msg, s.offset, take, &mut plain);
                if let Err(e) = writer.encrypt_frame(&plain, &mut wbuf) {
                    return Err(CloseReason::Error(e.to_string()));
                }
                s.offset += take;
                if !header.last {
                    active.push_back(s);
                }
                if wbuf.len() >= WRITE_BATCH {
                    if let Err(e) = writer.io.write_all(&wbuf).await {
                        return Err(CloseReason::Error(e.to_string()));
                    }
                    wbuf.clear();
                }
            }
            if !wbuf.is_empty() {
                if let Err(e) = writer.io.write_all(&wbuf).await {
                    return Err(CloseReason::Error(e.to_string()));
                }
                wbuf.clear();
            }
        }
    };

    let mut read_loop = std::pin::pin!(read_loop);
    let mut write_loop = std::pin::pin!(write_loop);
    tokio::select! {
        r = &mut read_loop => {
            if r == CloseReason::Remote {
                // The remote is done sending but may still be reading (it retired this
                // connection): write what we already queued, so none of it is lost.
                remote_ended.store(true, Ordering::Relaxed);
                remote_done.cancel();
                tokio::select! {
                    _ = &mut write_loop => {},
                    _ = tokio::time::sleep(DRAIN_TIMEOUT) => {},
                    _ = cancel.cancelled() => {},
                }
            }
            return r;
        }
        w = &mut write_loop => if let Err(r) = w {
            return r;
        },
        _ = cancel.cancelled() => return CloseReason::Local,
    }
    // Our side is done: keep delivering until the remote's end-of-stream, within a bound.
    tokio::select! {
        r = &mut read_loop => match r {
            CloseReason::Remote => CloseReason::Local,
            other => other,
        },
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => CloseReason::Local,
        _ = cancel.cancelled() => CloseReason::Local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(h: MuxHeader, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        h.encode(&mut v);
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn reassembles_interleaved_messages() {
        let mut r = Reassembler::new(&Limits::default());
        let a1 = frame(
            MuxHeader {
                id: 1,
                total_len: Some(4),
                last: false,
            },
            b"ab",
        );
        let b = frame(
            MuxHeader {
                id: 2,
                total_len: Some(1),
                last: true,
            },
            b"x",
        );
        let a2 = frame(
            MuxHeader {
                id: 1,
                total_len: None,
                last: true,
            },
            b"cd",
        );
        assert_eq!(r.push(&a1).unwrap(), None);
        assert_eq!(r.push(&b).unwrap().unwrap(), &b"x"[..]);
        assert_eq!(r.push(&a2).unwrap().unwrap(), &b"abcd"[..]);
        assert_eq!(r.buffered_bytes(), 0);
    }

    #[test]
    fn rejects_lies_and_oversize() {
        let limits = Limits {
            max_message_size: 100,
            max_reassembly_bytes: 10,
            ..Limits::default()
        };
        let mut r = Reassembler::new(&limits);
        assert!(
            r.push(&frame(
                MuxHeader {
                    id: 1,
                    total_len: Some(101),
                    last: false
                },
                b""
            ))
            .is_err()
        );
        let mut r = Reassembler::new(&limits);
        assert!(
            r.push(&frame(
                MuxHeader {
                    id: 1,
                    total_len: Some(3),
                    last: true
                },
                b"ab"
            ))
            .is_err()
        );
        let mut r = Reassembler::new(&limits);
        assert!(
            r.push(&frame(
                MuxHeader {
                    id: 9,
                    total_len: None,
                    last: true
                },
                b"ab"
            ))
            .is_err()
        );
        let mut r = Reassembler::new(&limits);
        r.push(&frame(
            MuxHeader {
                id: 1,
                total_len: Some(50),
                last: false,
            },
            b"0123456789",
        ))
        .unwrap();
        assert!(
            r.push(&frame(
                MuxHeader {
                    id: 1,
                    total_len: None,
                    last: false
                },
                b"x"
            ))
            .is_err()
        );
        assert!(Reassembler::new(&limits).push(&[0, 0, 0, 1, 0xff]).is_err());
        assert!(Reassembler::new(&limits).push(&[0, 0]).is_err());
    }
}
