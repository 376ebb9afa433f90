//! The registry's store writer: one thread that owns every write to the [`Store`].
//!
//! Records arrive from gossip and sync far faster than one durable transaction per record
//! allows: each commit waits for the disk, and has a fixed cost in CPU besides. The writer
//! gathers queued batches and writes them as one transaction, with no blocking I/O on the
//! async runtime.
//!
//! A caller that must know its write is durable (an own publish, which is acknowledged
//! only once it survives a crash) waits on the returned receiver: its batch is written at
//! once, with everything gathered before it. A batch nobody waits for (a record learnt
//! from a peer) is held for up to [`HOLD_FOR`], so that one transaction carries a second's
//! worth of them; closing the writer writes what is held. A crash loses at most that last
//! second of records learnt from peers, which anti-entropy brings back, and never an
//! acknowledged publish. Everything the node serves is read from memory, not from the
//! store, so holding a batch delays nothing a peer sees.
//!
//! If a merged transaction fails, the writer applies its batches one at a time, so one bad
//! batch fails only its own caller.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::store::{Batch, Store};
use crate::metrics::Metrics;

/// Most operations merged into one transaction.
const MAX_MERGED_OPS: usize = 8192;

/// Longest a batch nobody waits for is held before it is written.
const HOLD_FOR: Duration = Duration::from_secs(1);

/// The outcome of a durable write, as the waiting caller sees it.
pub(crate) type Durable = oneshot::Receiver<Result<(), String>>;

struct Job {
    batch: Batch,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// What the callers hand the writer thread.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    ops: usize,
    /// When the oldest job queued.
    oldest: Option<Instant>,
    /// Write now: a caller waits, or the queue is full.
    urgent: bool,
    closed: bool,
}

/// The queue and the writer thread's wake-up. A submit wakes the thread only when the
/// queue was empty (it then starts its hold) or the write is urgent: records streaming in
/// from peers cost no thread wake-up each.
#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    /// The queue; a panic elsewhere while it was held leaves plain data, still usable.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Handle to the writer thread. [`StoreWriter::close`] (or dropping the handle) lets the
/// thread write what is queued and exit.
pub(crate) struct StoreWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl StoreWriter {
    /// Starts the writer thread for `store`; each transaction's duration goes to
    /// `metrics`.
    pub(crate) fn spawn(store: Arc<Store>, metrics: Metrics) -> std::io::Result<StoreWriter> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ggen-store-writer".into())
            .spawn(move || run(&store, &theirs, &metrics))?;
        Ok(StoreWriter {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `batch`; returns false once the writer is closed.
    pub(crate) fn submit(&self, batch: Batch) -> bool {
        self.send(Job { batch, done: None })
    }

    /// Queues `batch` and returns a receiver that resolves once it is durable (or failed);
    /// `None` once the writer is closed.
    pub(crate) fn submit_durable(&self, batch: Batch) -> Option<Durable> {
        let (done, rx) = oneshot::channel();
        self.send(Job {
            batch,
            done: Some(done),
        })
        .then_some(rx)
    }

    fn send(&self, job: Job) -> bool {
        let mut q = self.shared.lock();
        if q.closed {
            return false;
        }
        let was_empty = q.jobs.is_empty();
        q.ops += job.batch.len();
        q.urgent |= job.done.is_some() || q.ops >= MAX_MERGED_OPS;
        q.jobs.push(job);
        q.oldest.get_or_insert_with(Instant::now);
        let wake = was_empty || q.urgent;
        drop(q);
        if wake {
            self.shared.wake.notify_one();
        }
        true
    }

    /// Stops taking batches and returns the thread, which exits once the queue is written.
    pub(crate) fn close(&self) -> Option<JoinHandle<()>> {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        self.thread.lock().ok().and_then(|mut t| t.take())
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

fn run(store: &Store, shared: &Shared, metrics: &Metrics) {
    loop {
        let jobs = {
            let mut q = shared.lock();
            loop {
                let due = q.oldest.map(|t| t + HOLD_FOR);
                let now = Instant::now();
                if !q.jobs.is_empty() && (q.urgent || q.closed || due.is_some_and(|d| now >= d)) {
                    break;
                }
                if q.jobs.is_empty() && q.closed {
                    return;
                }
                q = match due {
                    None => shared.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                    Some(d) => {
                        shared
                            .wake
                            .wait_timeout(q, d.saturating_duration_since(now))
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
            q.ops = 0;
            q.oldest = None;
            q.urgent = false;
            std::mem::take(&mut q.jobs)
        };
        write(store, jobs, metrics);
    }
}

/// Writes `jobs` in one durable transaction; if that fails, one by one, so that one bad
/// batch fails only its own caller.
fn write(store: &Store, mut jobs: Vec<Job>, metrics: &Metrics) {
    let apply = |batch: &Batch| {
        let started = Instant::now();
        let r = store.apply(batch);
        metrics
            .registry()
            .store_write
            .observe(started.elapsed().as_secs_f64());
        r
    };
    if jobs.len() == 1 {
        let job = jobs.remove(0);
        finish(job.done, apply(&job.batch));
        return;
    }
    let mut merged = Batch::new();
    for j in &jobs {
        let mut copy = j.batch.clone();
        merged.append(&mut copy);
    }
    match apply(&merged) {
        Ok(()) => {
            for j in jobs {
                finish(j.done, Ok(()));
            }
        }
        Err(e) => {
            tracing::warn!("merged store write failed ({e}); writing batch by batch");
            for j in jobs {
                finish(j.done, apply(&j.batch));
            }
        }
    }
}

fn finish(
    done: Option<oneshot::Sender<Result<(), String>>>,
    result: Result<(), super::store::StoreError>,
) {
    match done {
        Some(tx) => {
            let _ = tx.send(result.map_err(|e| e.to_string()));
        }
        None => {
            if let Err(e) = result {
                tracing::warn!("store write failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_batch(i: usize) -> Batch {
        let mut b = Batch::new();
        b.put_record(&format!("p{i}@1.0.0"), format!("record {i}").as_bytes());
        b
    }

    #[tokio::test]
    async fn held_writes_go_out_with_a_durable_one_and_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let writer = StoreWriter::spawn(store.clone(), Metrics::new()).unwrap();
        for i in 0..50 {
            assert!(writer.submit(record_batch(i)));
        }
        // A durable write waits for the disk, and carries the held ones before it.
        writer
            .submit_durable(record_batch(50))
            .unwrap()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.record_count().unwrap(), 51);
        for i in 51..80 {
            assert!(writer.submit(record_batch(i)));
        }
        // Closing writes what is still held.
        writer.close().unwrap().join().unwrap();
        drop(writer);
        drop(Arc::try_unwrap(store).ok().unwrap());
        let reopened = Store::open(dir.path()).unwrap();
        assert_eq!(reopened.record_count().unwrap(), 80);
        assert_eq!(
            reopened.get_record("p79@1.0.0").unwrap().unwrap(),
            b"record 79"
        );
    }
}
