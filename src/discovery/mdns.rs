//! mDNS on the local network (mdns-sd): announce `_ggen-p2p._udp.local.` with our PeerId and
//! listen addresses in TXT records, browse for the same service, and dial what we hear.
//!
//! What mDNS says is a hint, never an identity: a TXT record can claim any PeerId. We dial
//! the claimed addresses with the claimed PeerId pinned, so the handshake either proves the
//! claim or the dial fails. Peers are recorded as [`DiscoveryMethod::MDNS`] only once a
//! connection to them is authenticated.
//!
//! TXT layout: `id=<PeerId>` and `addr0=<multiaddr>`, `addr1=…`. Each `key=value` string
//! must fit in 255 bytes and the whole record is kept under [`TXT_TOTAL_MAX`] bytes, so
//! addresses that do not fit are left out. An unspecified listen address (`0.0.0.0`, `::`) is
//! announced as is; the receiver replaces its IP with the addresses the mDNS responder
//! published for the interfaces it runs on (its A/AAAA records).
//!
//! Interfaces: mdns-sd 0.17 joins the mDNS group on every interface when its daemon starts;
//! [`MdnsInterfaces`] then restricts which interfaces it announces and queries on. For a
//! guarantee that nothing leaves the host, run in a network namespace with only `lo`, as the
//! test suite does.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent, ServiceInfo};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{DiscoveryError, DiscoveryMethod, PeerBook};
use crate::address::{Multiaddr, TransportKind};
use crate::identity::PeerId;
use crate::node::NodeHandle;

/// The mDNS service type we announce and browse.
pub const SERVICE_TYPE: &str = "_ggen-p2p._udp.local.";
/// Largest `key=value` TXT string (a DNS character-string).
pub const TXT_ENTRY_MAX: usize = 255;
/// Largest total TXT payload we announce (stays well inside one unfragmented packet).
pub const TXT_TOTAL_MAX: usize = 1300;
/// Most addresses announced or accepted from one TXT record.
pub const MAX_TXT_ADDRS: usize = 16;

/// Which interfaces mDNS runs on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MdnsInterfaces {
    /// Every interface (the local network).
    #[default]
    All,
    /// Loopback only (127.0.0.1, ::1): processes on this host. Hints that point anywhere but
    /// loopback are ignored. For tests.
    Loopback,
    /// The named interfaces only (say `["eth0"]`).
    Named(Vec<String>),
}

/// mDNS settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MdnsConfig {
    /// Run mDNS at all (default false here: the registry turns it on from the seed's
    /// `bootstrap.mdns_enabled`, so that nothing multicasts unless asked to).
    pub enabled: bool,
    /// Interfaces (default all).
    pub interfaces: MdnsInterfaces,
    /// UDP port (default 5353, the mDNS port).
    pub port: u16,
    /// Announce ourselves (default true). False: browse only.
    pub announce: bool,
}

impl Default for MdnsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interfaces: MdnsInterfaces::All,
            port: mdns_sd::MDNS_PORT,
            announce: true,
        }
    }
}

/// What one TXT record claims: a peer and where it listens. Unauthenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MdnsHint {
    /// The claimed identity.
    pub peer: PeerId,
    /// The claimed addresses (without `/p2p`).
    pub addrs: Vec<Multiaddr>,
}

/// The TXT properties announcing `peer` at `addrs`: `id` then `addr0…`. Addresses with a
/// `/p2p` part lose it; ones that would break the size limits are left out.
pub fn encode_txt(peer: PeerId, addrs: &[Multiaddr]) -> Vec<(String, String)> {
    let id = peer.to_string();
    let mut total = "id=".len() + id.len() + 1;
    let mut out = vec![("id".to_owned(), id)];
    let mut seen = Vec::new();
    for a in addrs {
        if seen.len() >= MAX_TXT_ADDRS {
            break;
        }
        let a = a.without_peer_id();
        if a.transport_kind().is_none() || seen.contains(&a) {
            continue;
        }
        let key = format!("addr{}", seen.len());
        let value = a.to_string();
        let len = key.len() + 1 + value.len();
        if len > TXT_ENTRY_MAX || total + len + 1 > TXT_TOTAL_MAX {
            continue;
        }
        total += len + 1;
        out.push((key, value));
        seen.push(a);
    }
    out
}

/// Reads a TXT record: `None` without a valid `id`. Addresses are taken in `addrN` order;
/// unparsable ones, ones without a transport and ones naming a different peer are dropped.
pub fn decode_txt<'a>(props: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<MdnsHint> {
    let mut id = None;
    let mut addrs = BTreeMap::new();
    for (k, v) in props {
        if k.eq_ignore_ascii_case("id") {
            id = v.trim().parse::<PeerId>().ok();
        } else if let Some(n) = k.strip_prefix("addr").and_then(|n| n.parse::<u32>().ok()) {
            addrs.insert(n, v.trim().to_owned());
        }
    }
    let peer = id?;
    let mut out: Vec<Multiaddr> = Vec::new();
    for v in addrs.values() {
        let Ok(a) = v.parse::<Multiaddr>() else {
            continue;
        };
        if a.peer_id().is_some_and(|p| p != peer) {
            continue;
        }
        let a = a.without_peer_id();
        if a.transport_kind().is_some() && !out.contains(&a) {
            out.push(a);
        }
        if out.len() >= MAX_TXT_ADDRS {
            break;
        }
    }
    Some(MdnsHint { peer, addrs: out })
}

/// Replaces unspecified IPs (`0.0.0.0`, `::`) in `addrs` by each of `ips` of the same family;
/// other addresses pass through.
pub fn expand_unspecified(addrs: &[Multiaddr], ips: &[IpAddr]) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    for a in addrs {
        match (a.socket_addr(), a.transport_kind()) {
            (Some(sa), Some(kind)) if sa.ip().is_unspecified() => {
                for ip in ips.iter().filter(|ip| ip.is_ipv4() == sa.is_ipv4()) {
                    let s = SocketAddr::new(*ip, sa.port());
                    let m = match kind {
                        TransportKind::Tcp => Multiaddr::tcp(s),
                        TransportKind::Quic => Multiaddr::quic(s),
                        TransportKind::Memory => continue,
                    };
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
            }
            _ => {
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
        }
    }
    out
}

/// The addresses of `hint` we are willing to dial: unspecified ones expanded to `ips`, and
/// under [`MdnsInterfaces::Loopback`] loopback ones only.
pub fn dialable(hint: &MdnsHint, ips: &[IpAddr], interfaces: &MdnsInterfaces) -> Vec<Multiaddr> {
    expand_unspecified(&hint.addrs, ips)
        .into_iter()
        .filter(|a| match a.socket_addr() {
            Some(s) => {
                !s.ip().is_unspecified()
                    && (*interfaces != MdnsInterfaces::Loopback || s.ip().is_loopback())
            }
            None => false,
        })
        .collect()
}

/// A running mDNS announcer and browser. Stops on [`Mdns::stop`] or drop.
pub struct Mdns {
    daemon: Option<ServiceDaemon>,
    fullname: Option<String>,
    cancel: CancellationToken,
}

impl Mdns {
    /// Starts mDNS for `node` (whatever `config.enabled` says: the caller decides): announces
    /// the node unless `config.announce` is false or it has no listen address, browses, and
    /// dials every other peer it hears of, recording it in `book` once authenticated.
    pub fn start(
        node: &NodeHandle,
        book: PeerBook,
        config: &MdnsConfig,
    ) -> Result<Mdns, DiscoveryError> {
        let daemon = ServiceDaemon::new_with_port(config.port).map_err(mdns_err)?;
        let mut mdns = Mdns {
            daemon: None,
            fullname: None,
            cancel: CancellationToken::new(),
        };
        match &config.interfaces {
            MdnsInterfaces::All => {}
            MdnsInterfaces::Loopback => {
                daemon.disable_interface(IfKind::All).map_err(mdns_err)?;
                daemon
                    .enable_interface(IfKind::LoopbackV4)
                    .map_err(mdns_err)?;
                daemon
                    .enable_interface(IfKind::LoopbackV6)
                    .map_err(mdns_err)?;
            }
            MdnsInterfaces::Named(names) => {
                daemon.disable_interface(IfKind::All).map_err(mdns_err)?;
                for n in names {
                    daemon
                        .enable_interface(IfKind::Name(n.clone()))
                        .map_err(mdns_err)?;
                }
            }
        }
        let local = node.local_peer_id();
        let listen = node.listen_addrs();
        if config.announce {
            if let Some(port) = listen
                .iter()
                .find_map(|a| a.socket_addr().map(|s| s.port()))
            {
                let props = encode_txt(local, &listen);
                let props: Vec<(&str, &str)> = props
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let instance = local.to_string();
                let host = format!("{instance}.local.");
                let info = ServiceInfo::new(SERVICE_TYPE, &instance, &host, "", port, &props[..])
                    .map_err(mdns_err)?
                    .enable_addr_auto();
                let fullname = info.get_fullname().to_owned();
                daemon.register(info).map_err(mdns_err)?;
                mdns.fullname = Some(fullname);
            }
        }
        let events = daemon.browse(SERVICE_TYPE).map_err(mdns_err)?;
        mdns.daemon = Some(daemon);
        let (node, cancel, interfaces) =
            (node.clone(), mdns.cancel.clone(), config.interfaces.clone());
        tokio::spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = cancel.cancelled() => return,
                    ev = events.recv_async() => ev,
                };
                let Ok(ev) = ev else { return };
                if let ServiceEvent::ServiceResolved(svc) = ev {
                    let props = svc.get_properties().iter().map(|p| (p.key(), p.val_str()));
                    let Some(hint) = decode_txt(props) else {
                        tracing::debug!(
                            name = svc.get_fullname(),
                            "mDNS record without a valid id"
                        );
                        continue;
                    };
                    if hint.peer == local {
                        continue;
                    }
                    let ips: Vec<IpAddr> = svc
                        .get_addresses()
                        .iter()
                        .map(|ip| ip.to_ip_addr())
                        .collect();
                    let addrs = dialable(&hint, &ips, &interfaces);
                    tracing::debug!(peer = %hint.peer, ?addrs, "mDNS hint");
                    tokio::spawn(follow_hint(node.clone(), book.clone(), hint.peer, addrs));
                }
            }
        });
        Ok(mdns)
    }

    /// Stops announcing and browsing and shuts the mDNS daemon down.
    pub fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(d) = self.daemon.take() {
            if let Some(name) = self.fullname.take() {
                let _ = d.unregister(&name);
            }
            let _ = d.stop_browse(SERVICE_TYPE);
            let _ = d.shutdown();
        }
    }

    /// True until stopped.
    pub fn is_running(&self) -> bool {
        self.daemon.is_some()
    }
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns")
            .field("running", &self.is_running())
            .field("fullname", &self.fullname)
            .finish()
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Dials `peer` at the hinted addresses (identity pinned) until one connects; records it as
/// found by mDNS once connected.
async fn follow_hint(node: NodeHandle, book: PeerBook, peer: PeerId, addrs: Vec<Multiaddr>) {
    if node.is_connected(&peer) {
        book.record(peer, DiscoveryMethod::MDNS, &addrs);
        return;
    }
    for a in &addrs {
        match node.dial(a.with_peer_id(peer)).await {
            Ok(_) => {
                node.add_address(peer, a.clone());
                book.record(peer, DiscoveryMethod::MDNS, &addrs);
                return;
            }
            Err(e) => tracing::debug!(%peer, addr = %a, "mDNS hint did not check out: {e}"),
        }
    }
}

fn mdns_err(e: mdns_sd::Error) -> DiscoveryError {
    DiscoveryError::Mdns(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn as_refs(p: &[(String, String)]) -> Vec<(&str, &str)> {
        p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn txt_round_trip() {
        let p = PeerId::random();
        let addrs = vec![
            addr("/ip4/127.0.0.1/tcp/4001"),
            addr(&format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{p}")),
            addr("/ip4/127.0.0.1/tcp/4001"),
            addr("/ip6/::1/tcp/4002"),
        ];
        let txt = encode_txt(p, &addrs);
        assert_eq!(txt[0], ("id".to_owned(), p.to_string()));
        assert_eq!(txt.len(), 4, "duplicate dropped: {txt:?}");
        assert!(
            txt.iter()
                .all(|(k, v)| k.len() + 1 + v.len() <= TXT_ENTRY_MAX)
        );
        let hint = decode_txt(as_refs(&txt)).unwrap();
        assert_eq!(hint.peer, p);
        let got: Vec<String> = hint.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "/ip4/127.0.0.1/tcp/4001",
                "/ip4/127.0.0.1/udp/4001/quic-v1",
                "/ip6/::1/tcp/4002"
            ]
        );
    }

    #[test]
    fn txt_stays_within_size_limits() {
        let p = PeerId::random();
        let many: Vec<Multiaddr> = (0..200u16)
            .map(|i| addr(&format!("/ip6/2001:db8::{i:x}/udp/{}/quic-v1", 40000 + i)))
            .collect();
        let txt = encode_txt(p, &many);
        let total: usize = txt.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
        assert!(total <= TXT_TOTAL_MAX, "{total}");
        assert!(txt.len() - 1 <= MAX_TXT_ADDRS);
        assert!(txt.len() > 2);
        // Keys are consecutive, so the receiver sees them all.
        for (i, (k, _)) in txt[1..].iter().enumerate() {
            assert_eq!(k, &format!("addr{i}"));
        }
    }

    #[test]
    fn decode_rejects_missing_or_bad_id_and_foreign_addresses() {
        assert!(decode_txt([("addr0", "/ip4/127.0.0.1/tcp/1")]).is_none());
        assert!(decode_txt([("id", "not-a-peer"), ("addr0", "/ip4/127.0.0.1/tcp/1")]).is_none());
        let p = PeerId::random();
        let other = PeerId::random();
        let id = p.to_string();
        let foreign = format!("/ip4/127.0.0.1/tcp/2/p2p/{other}");
        let hint = decode_txt([
            ("id", id.as_str()),
            ("addr1", "/ip4/127.0.0.1/tcp/1"),
            ("addr0", foreign.as_str()),
            ("addr2", "garbage"),
            ("addr3", "/dns4/example.com"),
            ("other", "x"),
        ])
        .unwrap();
        let got: Vec<String> = hint.addrs.iter().map(|a| a.to_string()).collect();
        assert_eq!(got, vec!["/ip4/127.0.0.1/tcp/1"]);
    }

    #[test]
    fn unspecified_addresses_take_the_published_interface_ips() {
        let p = PeerId::random();
        let hint = MdnsHint {
            peer: p,
            addrs: vec![
                addr("/ip4/0.0.0.0/tcp/4001"),
                addr("/ip4/192.0.2.7/tcp/4002"),
                addr("/ip6/::/udp/4003/quic-v1"),
            ],
        };
        let ips: Vec<IpAddr> = vec![
            "127.0.0.1".parse().unwrap(),
            "192.0.2.9".parse().unwrap(),
            "::1".parse().unwrap(),
        ];
        let all: Vec<String> = dialable(&hint, &ips, &MdnsInterfaces::All)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            all,
            vec![
                "/ip4/127.0.0.1/tcp/4001",
                "/ip4/192.0.2.9/tcp/4001",
                "/ip4/192.0.2.7/tcp/4002",
                "/ip6/::1/udp/4003/quic-v1"
            ]
        );
        let lo: Vec<String> = dialable(&hint, &ips, &MdnsInterfaces::Loopback)
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            lo,
            vec!["/ip4/127.0.0.1/tcp/4001", "/ip6/::1/udp/4003/quic-v1"]
        );
        // Nothing to expand into: the unspecified address is dropped, not dialed.
        assert!(dialable(&hint, &[], &MdnsInterfaces::Loopback).is_empty());
    }
}
