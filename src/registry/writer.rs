//! The registry's store writer: one thread that owns every write to the [`Store`].
//!
//! Records arrive from gossip and sync far faster than one durable transaction per record
//! allows (each commit waits for the disk). The writer takes the first queued batch, then
//! everything that queued up behind it while the previous transaction committed, and
//! applies them as one transaction: one disk sync for many records, and no blocking I/O on
//! the async runtime. A caller that must know its write is durable (an own publish, which
//! is acknowledged only once it survives a crash) waits on the returned receiver; the
//! others do not wait.
//!
//! If a merged transaction fails, the writer applies its batches one at a time, so one bad
//! batch fails only its own caller.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::store::{Batch, Store};

/// Most operations merged into one transaction.
const MAX_MERGED_OPS: usize = 8192;

/// The outcome of a durable write, as the waiting caller sees it.
pub(crate) type Durable = oneshot::Receiver<Result<(), String>>;

struct Job {
    batch: Batch,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Handle to the writer thread. Dropping every handle (or [`StoreWriter::close`]) lets the
/// thread finish the queue and exit.
pub(crate) struct StoreWriter {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl StoreWriter {
    /// Starts the writer thread for `store`.
    pub(crate) fn spawn(store: Arc<Store>) -> std::io::Result<StoreWriter> {
        let (tx, rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("ggen-store-writer".into())
            .spawn(move || run(&store, &rx))?;
        Ok(StoreWriter {
            tx: Mutex::new(Some(tx)),
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
        self.tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.send(job).is_ok()))
            .unwrap_or(false)
    }

    /// Stops taking batches and returns the thread, which exits once the queue is written.
    pub(crate) fn close(&self) -> Option<JoinHandle<()>> {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        self.thread.lock().ok().and_then(|mut t| t.take())
    }
}

fn run(store: &Store, rx: &mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        let mut ops = jobs[0].batch.len();
        while ops < MAX_MERGED_OPS {
            match rx.try_recv() {
                Ok(job) => {
                    ops += job.batch.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        if jobs.len() == 1 {
            let job = jobs.remove(0);
            finish(job.done, store.apply(&job.batch));
            continue;
        }
        let mut merged = Batch::new();
        for j in &jobs {
            let mut copy = j.batch.clone();
            merged.append(&mut copy);
        }
        match store.apply(&merged) {
            Ok(()) => {
                for j in jobs {
                    finish(j.done, Ok(()));
                }
            }
            Err(e) => {
                tracing::warn!("merged store write failed ({e}); writing batch by batch");
                for j in jobs {
                    finish(j.done, store.apply(&j.batch));
                }
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
