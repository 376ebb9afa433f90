//! Bootstrap nodes: parsing the seed's `BootstrapNode { peer_id, address }` and keeping a
//! connection to each, redialing with exponential backoff.
//!
//! The node's own bootstrap redial ([`crate::node::NodeConfig::bootstrap`]) only knows the
//! addresses it was started with and caps its backoff at the node's
//! `reconnect_max_backoff`; bootstrap nodes added later (and the seed's `retry_interval`)
//! need this small task per node instead.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, DiscoveryMethod, PeerBook, walk};
use crate::address::Multiaddr;
use crate::identity::PeerId;
use crate::kademlia::Dht;
use crate::node::{NodeEvent, NodeHandle};
use crate::registry::BootstrapNode;

/// Parses a bootstrap entry: the PeerId and the address (which may end in `/p2p/<same id>`;
/// a different id there is refused). Returns the peer and its address without `/p2p`.
pub fn parse_bootstrap_node(node: &BootstrapNode) -> Result<(PeerId, Multiaddr), DiscoveryError> {
    let bad = |why: String| DiscoveryError::BadBootstrapNode {
        peer_id: node.peer_id.clone(),
        address: node.address.clone(),
        why,
    };
    let peer: PeerId = node
        .peer_id
        .trim()
        .parse()
        .map_err(|e| bad(format!("peer id: {e}")))?;
    let addr: Multiaddr = node
        .address
        .trim()
        .parse()
        .map_err(|e| bad(format!("address: {e}")))?;
    if let Some(in_addr) = addr.peer_id() {
        if in_addr != peer {
            return Err(bad(format!(
                "address names peer {in_addr}, entry names {peer}"
            )));
        }
    }
    let addr = addr.without_peer_id();
    if addr.transport_kind().is_none() {
        return Err(bad("address has no dialable transport".into()));
    }
    Ok((peer, addr))
}

/// Backoff settings for one bootstrap task.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The delay after `delay`: doubled, at most `max`.
    pub(crate) fn next(&self, delay: Duration) -> Duration {
        (delay * 2).min(self.max)
    }
}

/// Keeps `node` connected to `peer` at `addr` until `cancel`: dials, and after a failure
/// waits `initial`, then twice that, … up to `max`; after a connection is lost, starts over.
/// The first connection also seeds the DHT with the peer and bootstraps it.
pub(crate) async fn run(
    node: NodeHandle,
    dht: Option<Dht>,
    book: PeerBook,
    peer: PeerId,
    addr: Multiaddr,
    backoff: Backoff,
    cancel: CancellationToken,
) {
    let mut events = node.events();
    let mut delay = backoff.initial;
    let mut seeded = false;
    let target = addr.with_peer_id(peer);
    loop {
        if !node.is_connected(&peer) {
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = node.dial(target.clone()) => r,
            };
            match r {
                Ok(_) => delay = backoff.initial,
                Err(e) => {
                    if !node.is_running() {
                        return;
                    }
                    tracing::debug!(%peer, %addr, ?delay, "bootstrap dial failed: {e}");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = backoff.next(delay);
                    continue;
                }
            }
        }
        book.record(
            peer,
            DiscoveryMethod::Bootstrap,
            std::slice::from_ref(&addr),
        );
        if !seeded {
            seeded = true;
            if let Some(dht) = &dht {
                dht.add_peer(peer, addr.clone());
                let (dht, book) = (dht.clone(), book.clone());
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        r = dht.bootstrap() => {
                            if let Err(e) = r {
                                tracing::debug!("DHT bootstrap after connecting: {e}");
                            }
                            walk::absorb_routing_table(&dht, &book).await;
                        }
                    }
                });
            }
        }
        // Connected: wait until this peer's connection is lost, then dial again.
        loop {
            let ev = tokio::select! {
                _ = cancel.cancelled() => return,
                ev = events.recv() => ev,
            };
            match ev {
                Ok(NodeEvent::ConnectionClosed { peer: p, .. }) if p == peer => {
                    if !node.is_connected(&peer) {
                        break;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    if !node.is_connected(&peer) {
                        break;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(peer_id: &str, address: &str) -> BootstrapNode {
        BootstrapNode {
            peer_id: peer_id.into(),
            address: address.into(),
        }
    }

    #[test]
    fn parses_plain_and_matching_p2p_addresses_and_refuses_a_different_id() {
        let p = PeerId::random();
        let (peer, addr) =
            parse_bootstrap_node(&entry(&p.to_string(), "/ip4/127.0.0.1/tcp/4001")).unwrap();
        assert_eq!(peer, p);
        assert_eq!(addr.to_string(), "/ip4/127.0.0.1/tcp/4001");
        let with_id = format!("/ip4/127.0.0.1/tcp/4001/p2p/{p}");
        let (_, addr) = parse_bootstrap_node(&entry(&p.to_string(), &with_id)).unwrap();
        assert_eq!(addr.to_string(), "/ip4/127.0.0.1/tcp/4001");
        let other = PeerId::random();
        let wrong = format!("/ip4/127.0.0.1/tcp/4001/p2p/{other}");
        let e = parse_bootstrap_node(&entry(&p.to_string(), &wrong)).unwrap_err();
        assert!(e.to_string().contains("names peer"), "{e}");
        assert!(parse_bootstrap_node(&entry("nonsense", "/ip4/127.0.0.1/tcp/1")).is_err());
        assert!(parse_bootstrap_node(&entry(&p.to_string(), "/ip4/1.2.3/tcp/1")).is_err());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let mut d = b.initial;
        let mut seen = vec![d];
        for _ in 0..4 {
            d = b.next(d);
            seen.push(d);
        }
        let ms: Vec<u128> = seen.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 500, 500]);
    }
}
