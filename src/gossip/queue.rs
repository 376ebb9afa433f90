//! Per-peer send queues with priorities: control messages first, then our own publishes,
//! then forwards. Bounded in bytes: when a peer reads too slowly, forwards are dropped first
//! (and counted), then our own publishes; control messages have their own small allowance.
//! Forwards still queued are removed when the peer says IDONTWANT for them.

use std::collections::{HashSet, VecDeque};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::message::MessageId;

/// What an outbound item is, in the order the queue serves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Priority {
    /// GRAFT, PRUNE, IHAVE, IWANT, IDONTWANT, subscriptions.
    Control,
    /// Messages we publish ourselves.
    Publish,
    /// Messages we forward (including IWANT answers).
    Forward,
}

/// One encoded RPC waiting for a peer.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The encoded RPC.
    pub bytes: Bytes,
    /// Its class.
    pub priority: Priority,
    /// For a single-message RPC, the message id (so IDONTWANT can cancel it).
    pub message: Option<MessageId>,
}

/// Why an item was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dropped(pub Priority);

/// The queue of one peer.
#[derive(Debug, Default)]
pub struct PeerQueue {
    control: VecDeque<Outbound>,
    publish: VecDeque<Outbound>,
    forward: VecDeque<Outbound>,
    data_bytes: usize,
    control_bytes: usize,
}

impl PeerQueue {
    /// Queues `item` within `max_bytes` for publishes and forwards and `max_control_bytes`
    /// for control. A publish that does not fit evicts the newest forwards first. Returns the
    /// number of forwards evicted, or what was dropped.
    pub fn push(
        &mut self,
        item: Outbound,
        max_bytes: usize,
        max_control_bytes: usize,
    ) -> Result<usize, Dropped> {
        let len = item.bytes.len();
        match item.priority {
            Priority::Control => {
                if self.control_bytes + len > max_control_bytes {
                    return Err(Dropped(Priority::Control));
                }
                self.control_bytes += len;
                self.control.push_back(item);
                Ok(0)
            }
            Priority::Publish => {
                let mut evicted = 0;
                while self.data_bytes + len > max_bytes {
                    let Some(f) = self.forward.pop_back() else {
                        return Err(Dropped(Priority::Publish));
                    };
                    self.data_bytes -= f.bytes.len();
                    evicted += 1;
                }
                self.data_bytes += len;
                self.publish.push_back(item);
                Ok(evicted)
            }
            Priority::Forward => {
                if self.data_bytes + len > max_bytes {
                    return Err(Dropped(Priority::Forward));
                }
                self.data_bytes += len;
                self.forward.push_back(item);
                Ok(0)
            }
        }
    }

    /// The next item to send, highest priority first.
    pub fn pop(&mut self) -> Option<Outbound> {
        if let Some(c) = self.control.pop_front() {
            self.control_bytes -= c.bytes.len();
            return Some(c);
        }
        let item = self
            .publish
            .pop_front()
            .or_else(|| self.forward.pop_front())?;
        self.data_bytes -= item.bytes.len();
        Some(item)
    }

    /// Puts back an item [`PeerQueue::pop`] returned and the connection could not take, at
    /// the front of its class (no bound check: it was counted before).
    pub fn unpop(&mut self, item: Outbound) {
        let len = item.bytes.len();
        match item.priority {
            Priority::Control => {
                self.control_bytes += len;
                self.control.push_front(item);
            }
            Priority::Publish => {
                self.data_bytes += len;
                self.publish.push_front(item);
            }
            Priority::Forward => {
                self.data_bytes += len;
                self.forward.push_front(item);
            }
        }
    }

    /// Removes queued forwards of these messages; returns how many.
    pub fn cancel_forwards(&mut self, ids: &HashSet<MessageId>) -> usize {
        let before = self.forward.len();
        let mut freed = 0;
        self.forward.retain(|f| {
            let keep = f.message.as_ref().is_none_or(|id| !ids.contains(id));
            if !keep {
                freed += f.bytes.len();
            }
            keep
        });
        self.data_bytes -= freed;
        before - self.forward.len()
    }

    /// Removes a queued forward of one message; true if there was one.
    pub fn cancel_forward(&mut self, id: &MessageId) -> bool {
        let Some(pos) = self
            .forward
            .iter()
            .position(|f| f.message.as_ref() == Some(id))
        else {
            return false;
        };
        if let Some(f) = self.forward.remove(pos) {
            self.data_bytes -= f.bytes.len();
        }
        true
    }

    /// Bytes queued (all classes).
    pub fn bytes(&self) -> usize {
        self.data_bytes + self.control_bytes
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.control.is_empty() && self.publish.is_empty() && self.forward.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: Priority, len: usize, id: u8) -> Outbound {
        Outbound {
            bytes: Bytes::from(vec![id; len]),
            priority: p,
            message: Some(MessageId(Bytes::from(vec![id]))),
        }
    }

    #[test]
    fn priorities_bounds_and_eviction() {
        let mut q = PeerQueue::default();
        assert_eq!(q.push(item(Priority::Forward, 40, 1), 100, 10), Ok(0));
        assert_eq!(q.push(item(Priority::Forward, 40, 2), 100, 10), Ok(0));
        // A third forward does not fit: dropped, the queue stays within its bound.
        assert_eq!(
            q.push(item(Priority::Forward, 40, 3), 100, 10),
            Err(Dropped(Priority::Forward))
        );
        // A publish evicts the newest forward.
        assert_eq!(q.push(item(Priority::Publish, 40, 4), 100, 10), Ok(1));
        assert!(q.bytes() <= 100);
        // Control has its own allowance.
        assert_eq!(q.push(item(Priority::Control, 8, 5), 100, 10), Ok(0));
        assert_eq!(
            q.push(item(Priority::Control, 8, 6), 100, 10),
            Err(Dropped(Priority::Control))
        );
        let order: Vec<u8> = std::iter::from_fn(|| q.pop()).map(|o| o.bytes[0]).collect();
        assert_eq!(order, vec![5, 4, 1]);
        assert_eq!(q.bytes(), 0);
        assert!(q.is_empty());
    }

    #[test]
    fn idontwant_cancels_queued_forwards_and_unpop_restores() {
        let mut q = PeerQueue::default();
        for i in 0..5 {
            q.push(item(Priority::Forward, 10, i), 1000, 100).unwrap();
        }
        let ids: HashSet<_> = [1u8, 3]
            .iter()
            .map(|i| MessageId(Bytes::from(vec![*i])))
            .collect();
        assert_eq!(q.cancel_forwards(&ids), 2);
        assert_eq!(q.bytes(), 30);
        let first = q.pop().unwrap();
        assert_eq!(first.bytes[0], 0);
        q.unpop(first);
        assert_eq!(q.bytes(), 30);
        assert_eq!(q.pop().unwrap().bytes[0], 0);
    }
}
