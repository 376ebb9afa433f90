//! The in-process transport: `/memory/N` addresses backed by `tokio::io::duplex` pipes.
//!
//! A listener registers its port in a process-wide table; a dial creates a pipe and hands
//! one end to the listener. The pipe then carries the same Noise handshake and mux as TCP,
//! so the code under test is the real stack, minus the kernel. Works under tokio's paused
//! clock, which is what makes timing tests on hundreds of nodes fast and deterministic.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::TransportError;
use crate::address::Multiaddr;

pub(crate) struct MemoryIncoming {
    pub(crate) stream: DuplexStream,
    pub(crate) dialer: u64,
}

type Table = HashMap<u64, mpsc::Sender<MemoryIncoming>>;
static LISTENERS: LazyLock<Mutex<Table>> = LazyLock::new(Default::default);

/// Removes the port from the table when the listener goes away.
#[derive(Debug)]
pub(crate) struct Registration(pub(crate) u64);

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut t) = LISTENERS.lock() {
            t.remove(&self.0);
        }
    }
}

/// Registers a listener on `port` (0 picks a free one).
pub(crate) fn listen(
    port: u64,
) -> Result<(Registration, mpsc::Receiver<MemoryIncoming>), TransportError> {
    let mut table = LISTENERS
        .lock()
        .map_err(|_| TransportError::MemoryAddress(Multiaddr::memory(port)))?;
    let port = if port == 0 {
        loop {
            let p = rand::random::<u64>() >> 1;
            if p != 0 && !table.contains_key(&p) {
                break p;
            }
        }
    } else if table.contains_key(&port) {
        return Err(TransportError::MemoryAddress(Multiaddr::memory(port)));
    } else {
        port
    };
    let (tx, rx) = mpsc::channel(128);
    table.insert(port, tx);
    Ok((Registration(port), rx))
}

/// Opens a pipe to the listener on `port`.
pub(crate) async fn dial(
    port: u64,
    pipe_bytes: usize,
) -> Result<(DuplexStream, u64), TransportError> {
    let tx = LISTENERS
        .lock()
        .ok()
        .and_then(|t| t.get(&port).cloned())
        .ok_or_else(|| TransportError::MemoryAddress(Multiaddr::memory(port)))?;
    let (ours, theirs) = tokio::io::duplex(pipe_bytes);
    let dialer = rand::random::<u64>() >> 1;
    tx.send(MemoryIncoming {
        stream: theirs,
        dialer,
    })
    .await
    .map_err(|_| TransportError::MemoryAddress(Multiaddr::memory(port)))?;
    Ok((ours, dialer))
}
