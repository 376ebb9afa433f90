//! DHT random walks: look up a random key now and then, so the routing table keeps learning
//! peers beyond the ones we were introduced to.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{DiscoveryMethod, PeerBook};
use crate::kademlia::{Dht, DhtError, Key};

/// A request for an immediate walk; the reply is the number of peers new to the book.
pub(crate) type WalkRequest = oneshot::Sender<Result<usize, DhtError>>;

/// One random walk: a lookup of a uniformly random key. Every peer it returns, and every
/// peer in the routing table afterwards, that the book does not know yet is recorded as
/// found by the DHT. Returns how many were new.
pub async fn walk_once(dht: &Dht, book: &PeerBook) -> Result<usize, DhtError> {
    let target = Key::from_raw(rand::random());
    let (found, _) = dht.find_closest_peers(target).await?;
    let local = dht.local_peer_id();
    let mut new = 0;
    for rec in found.iter().filter(|r| r.peer != local) {
        if book.record(rec.peer, DiscoveryMethod::DHT, &rec.addrs) {
            new += 1;
        }
    }
    Ok(new + absorb_routing_table(dht, book).await)
}

/// Records every routing-table peer the book does not know as found by the DHT. Returns how
/// many were new.
pub async fn absorb_routing_table(dht: &Dht, book: &PeerBook) -> usize {
    let Ok(snap) = dht.routing_table().await else {
        return 0;
    };
    let mut new = 0;
    for b in &snap.buckets {
        for (peer, _) in &b.peers {
            if !book.contains(peer) && book.record(*peer, DiscoveryMethod::DHT, &[]) {
                new += 1;
            }
        }
    }
    new
}

/// Walks after `first`, then every `interval`, and whenever asked, until `cancel`.
pub(crate) async fn run(
    dht: Dht,
    book: PeerBook,
    first: Duration,
    interval: Duration,
    mut requests: mpsc::UnboundedReceiver<WalkRequest>,
    cancel: CancellationToken,
) {
    let mut next = tokio::time::Instant::now() + first;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {
                match tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = walk_once(&dht, &book) => r,
                } {
                    Ok(n) => tracing::debug!(new = n, "DHT random walk done"),
                    Err(DhtError::Stopped) => return,
                    Err(e) => tracing::debug!("DHT random walk failed: {e}"),
                }
                next = tokio::time::Instant::now() + interval;
            }
            req = requests.recv() => match req {
                Some(reply) => {
                    let r = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = walk_once(&dht, &book) => r,
                    };
                    let _ = reply.send(r);
                }
                None => return,
            },
        }
    }
}
