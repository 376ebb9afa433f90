//! Router unit tests over a tiny lossless in-memory exchange (the simulator covers scale).

use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

struct Net {
    nodes: Vec<Gossipsub>,
    ids: Vec<PeerId>,
    index: HashMap<PeerId, usize>,
    now: Instant,
    rng: StdRng,
    events: Vec<Vec<GossipEvent>>,
    dials: Vec<Vec<PeerId>>,
}

impl Net {
    fn new(n: usize, config: GossipsubConfig) -> Self {
        let now = Instant::now();
        let mut nodes = Vec::new();
        let mut ids = Vec::new();
        for i in 0..n {
            let key = Keypair::generate();
            ids.push(key.peer_id());
            let addr: Multiaddr = format!("/memory/{}", 1000 + i).parse().unwrap();
            nodes.push(Gossipsub::new(key, vec![addr], config.clone(), now).unwrap());
        }
        let index = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Self {
            nodes,
            ids,
            index,
            now,
            rng: StdRng::seed_from_u64(7),
            events: vec![Vec::new(); n],
            dials: vec![Vec::new(); n],
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let (ia, ib) = (self.ids[a], self.ids[b]);
        self.nodes[a].on_connected(self.now, ib, true, None);
        self.nodes[b].on_connected(self.now, ia, false, None);
    }

    fn full_mesh(&mut self) {
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                self.connect(a, b);
            }
        }
    }

    /// Delivers everything queued until nothing moves; returns the RPCs delivered.
    fn run(&mut self) -> usize {
        let mut moved = 0;
        loop {
            self.collect();
            let mut batch = Vec::new();
            for i in 0..self.nodes.len() {
                for peer in self.nodes[i].take_ready() {
                    while let Some(out) = self.nodes[i].next_outbound(&peer) {
                        batch.push((i, peer, out.bytes));
                    }
                }
            }
            if batch.is_empty() {
                return moved;
            }
            for (from, to, bytes) in batch {
                let Some(&j) = self.index.get(&to) else {
                    continue;
                };
                let rpc = Rpc::decode(&bytes, self.nodes[j].limits()).expect("decodes");
                let from_id = self.ids[from];
                self.nodes[j].handle_rpc(self.now, from_id, rpc);
                moved += 1;
            }
        }
    }

    fn collect(&mut self) {
        for i in 0..self.nodes.len() {
            while let Some(a) = self.nodes[i].poll_action() {
                match a {
                    Action::Event(e) => self.events[i].push(e),
                    Action::Dial { peer, .. } => self.dials[i].push(peer),
                }
            }
        }
    }

    fn heartbeat_all(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.nodes.len() {
            if self.nodes[i].next_heartbeat() <= self.now {
                let now = self.now;
                self.nodes[i].heartbeat(now, &mut self.rng);
            }
        }
        self.run();
    }

    fn subscribe(&mut self, i: usize, t: &Topic) {
        let now = self.now;
        assert!(self.nodes[i].subscribe(now, t.clone(), &mut self.rng));
    }

    fn publish(
        &mut self,
        i: usize,
        t: &Topic,
        data: &'static [u8],
    ) -> Result<MessageId, PublishError> {
        let now = self.now;
        self.nodes[i].publish(now, t.clone(), Bytes::from_static(data), &mut self.rng)
    }

    fn delivered(&self, i: usize) -> Vec<Bytes> {
        self.events[i]
            .iter()
            .filter_map(|e| match e {
                GossipEvent::Message { message, .. } => Some(message.data.clone()),
                _ => None,
            })
            .collect()
    }
}

fn topic() -> Topic {
    Topic::new("ggen-marketplace/updates")
}

#[test]
fn a_published_message_reaches_every_subscriber_once() {
    let mut net = Net::new(10, GossipsubConfig::default());
    net.full_mesh();
    let t = topic();
    for i in 0..10 {
        net.subscribe(i, &t);
    }
    net.run();
    for _ in 0..3 {
        net.heartbeat_all(Duration::from_secs(1));
    }
    for i in 0..10 {
        let m = net.nodes[i].mesh_peers(&t).len();
        assert!((4..=12).contains(&m), "node {i} mesh degree {m}");
    }
    net.publish(3, &t, b"v1").unwrap();
    net.run();
    for i in 0..10 {
        let got = net.delivered(i);
        if i == 3 {
            assert!(got.is_empty(), "the publisher does not deliver to itself");
        } else {
            assert_eq!(got, vec![Bytes::from_static(b"v1")], "node {i}");
        }
    }
}

#[test]
fn publish_without_subscribers_says_which_topic_and_why() {
    let mut net = Net::new(2, GossipsubConfig::default());
    net.connect(0, 1);
    net.run();
    let err = net.publish(0, &topic(), b"x").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ggen-marketplace/updates") && text.contains("no connected peer"),
        "{text}"
    );
    let big = GossipsubConfig {
        max_transmit_size: 2000,
        ..GossipsubConfig::default()
    };
    let mut net = Net::new(2, big);
    net.connect(0, 1);
    net.subscribe(1, &topic());
    net.run();
    let now = net.now;
    let r = net.nodes[0].publish(now, topic(), Bytes::from(vec![0u8; 4000]), &mut net.rng);
    assert!(
        matches!(r, Err(PublishError::MessageTooLarge { .. })),
        "{r:?}"
    );
}

#[test]
fn fanout_publish_without_subscribing() {
    let mut net = Net::new(4, GossipsubConfig::default());
    net.full_mesh();
    let t = topic();
    for i in 1..4 {
        net.subscribe(i, &t);
    }
    net.run();
    net.heartbeat_all(Duration::from_secs(1));
    net.publish(0, &t, b"from outside").unwrap();
    net.run();
    for i in 1..4 {
        assert_eq!(net.delivered(i), vec![Bytes::from_static(b"from outside")]);
    }
    assert!(!net.nodes[0].mesh_snapshot(&t).fanout.is_empty());
}

#[test]
fn forged_messages_are_rejected_and_the_sender_graylisted() {
    let mut net = Net::new(3, GossipsubConfig::default());
    net.full_mesh();
    let t = topic();
    for i in 0..3 {
        net.subscribe(i, &t);
    }
    net.run();
    net.heartbeat_all(Duration::from_secs(1));
    let evil = net.ids[0];
    // Node 0 sends messages with broken signatures straight to node 1.
    for n in 0..5u64 {
        let mut m = GossipMessage {
            from: None,
            seqno: Some(100 + n),
            topic: t.clone(),
            data: Bytes::from_static(b"forged"),
            signature: None,
        };
        m.sign(&Keypair::generate());
        m.data = Bytes::from_static(b"tampered");
        let now = net.now;
        net.nodes[1].handle_rpc(
            now,
            evil,
            Rpc {
                publish: vec![m],
                ..Rpc::default()
            },
        );
    }
    net.run();
    assert!(net.delivered(1).is_empty());
    assert!(
        net.delivered(2).is_empty(),
        "forged messages are not forwarded"
    );
    let score = net.nodes[1].peer_score(net.now, &evil);
    assert!(score < -80.0, "score {score}");
    // Graylisted: even a valid message from it is ignored now.
    let before = net.nodes[1].metrics().graylisted_rpcs;
    let mut good = GossipMessage {
        from: None,
        seqno: Some(1),
        topic: t.clone(),
        data: Bytes::from_static(b"valid"),
        signature: None,
    };
    good.sign(&Keypair::generate());
    let now = net.now;
    net.nodes[1].handle_rpc(
        now,
        evil,
        Rpc {
            publish: vec![good],
            ..Rpc::default()
        },
    );
    assert_eq!(net.nodes[1].metrics().graylisted_rpcs, before + 1);
    assert!(net.delivered(1).is_empty());
    net.collect();
    assert!(net.events[1].iter().any(|e| matches!(
        e,
        GossipEvent::Rejected {
            reason: RejectReason::InvalidSignature,
            ..
        }
    )));
}

#[test]
fn graft_during_backoff_is_penalised_and_pruned() {
    let mut net = Net::new(2, GossipsubConfig::default());
    net.connect(0, 1);
    let t = topic();
    net.subscribe(0, &t);
    net.subscribe(1, &t);
    net.run();
    net.heartbeat_all(Duration::from_secs(1));
    assert!(net.nodes[1].mesh_peers(&t).contains(&net.ids[0]));
    // 1 prunes 0 (unsubscribe), then 0 grafts again at once.
    let now = net.now;
    net.nodes[1].unsubscribe(now, &t);
    net.run();
    net.subscribe(1, &t);
    net.run();
    let id0 = net.ids[0];
    let before = net.nodes[1].metrics().prunes_sent;
    // Four GRAFTs right after the PRUNE: two penalties each (a flood), 8 > threshold 6.
    for _ in 0..4 {
        let now = net.now;
        net.nodes[1].handle_rpc(
            now,
            id0,
            Rpc {
                control: Control {
                    graft: vec![Graft { topic: t.clone() }],
                    ..Control::default()
                },
                ..Rpc::default()
            },
        );
    }
    assert!(!net.nodes[1].mesh_peers(&t).contains(&id0));
    assert_eq!(
        net.nodes[1].metrics().prunes_sent,
        before + 4,
        "each GRAFT is answered by a PRUNE"
    );
    let snap = net.nodes[1].score_snapshot(net.now, &id0).unwrap();
    assert!(snap.behaviour_penalty < 0.0, "{snap:?}");
}

#[test]
fn idontwant_stops_forwards_and_slow_peers_stay_bounded() {
    let config = GossipsubConfig {
        max_queue_bytes: 20_000,
        ..GossipsubConfig::default()
    };
    let mut net = Net::new(2, config);
    net.connect(0, 1);
    let t = topic();
    net.subscribe(0, &t);
    net.subscribe(1, &t);
    net.run();
    // Node 1 never reads from now on: node 0 publishes 100 messages of 1 KiB.
    let now = net.now;
    let mut ids = Vec::new();
    let mut errors = 0;
    for _ in 0..100 {
        match net.nodes[0].publish(now, t.clone(), Bytes::from(vec![7u8; 1024]), &mut net.rng) {
            Ok(id) => ids.push(id),
            Err(PublishError::QueuesFull { .. }) => errors += 1,
            Err(e) => panic!("{e}"),
        }
    }
    let peer = net.ids[1];
    assert!(net.nodes[0].queued_bytes(&peer) <= 20_000);
    assert!(errors > 0, "a full queue makes publish fail");
    assert!(net.nodes[0].metrics().dropped_publishes > 0);
    // IDONTWANT for a queued message removes it from the queue.
    let before = net.nodes[0].queued_bytes(&peer);
    let now = net.now;
    net.nodes[0].handle_rpc(
        now,
        peer,
        Rpc {
            control: Control {
                idontwant: vec![IDontWant {
                    message_ids: ids.clone(),
                }],
                ..Control::default()
            },
            ..Rpc::default()
        },
    );
    // Own publishes are not cancelled (only forwards are), so the bytes stay.
    assert_eq!(net.nodes[0].queued_bytes(&peer), before);
}

#[test]
fn lazy_gossip_repairs_a_node_outside_the_mesh() {
    let config = GossipsubConfig {
        mesh_n: 2,
        mesh_n_low: 1,
        mesh_n_high: 3,
        mesh_outbound_min: 0,
        mesh_n_score: 1,
        gossip_lazy: 10,
        ..GossipsubConfig::default()
    };
    let mut net = Net::new(8, config);
    net.full_mesh();
    let t = topic();
    for i in 0..8 {
        net.subscribe(i, &t);
    }
    net.run();
    net.heartbeat_all(Duration::from_secs(1));
    // Node 7 loses its mesh links (its peers forget it without telling it).
    let id7 = net.ids[7];
    for i in 0..7 {
        if let Some(m) = net.nodes[i].mesh.get_mut(&t) {
            m.remove(&id7);
        }
    }
    if let Some(m) = net.nodes[7].mesh.get_mut(&t) {
        m.clear();
    }
    net.publish(0, &t, b"gossiped").unwrap();
    net.run();
    assert!(net.delivered(7).is_empty() || net.delivered(7).len() == 1);
    net.heartbeat_all(Duration::from_secs(1));
    assert_eq!(net.delivered(7), vec![Bytes::from_static(b"gossiped")]);
    assert!(
        net.nodes
            .iter()
            .map(|n| n.metrics().iwant_answered)
            .sum::<u64>()
            >= 1
    );
}

#[test]
fn prune_carries_signed_peer_exchange_and_it_is_followed() {
    let mut config = GossipsubConfig::default();
    config.score_thresholds.accept_px_threshold = 0.0;
    let mut net = Net::new(3, config);
    // 1 knows 0 and 2; 0 knows only 1.
    net.connect(0, 1);
    net.connect(1, 2);
    let t = topic();
    for i in 0..3 {
        net.subscribe(i, &t);
    }
    net.run();
    net.heartbeat_all(Duration::from_secs(1));
    let now = net.now;
    net.nodes[1].unsubscribe(now, &t);
    net.run();
    net.collect();
    assert_eq!(
        net.dials[0],
        vec![net.ids[2]],
        "0 dials 2, learned by peer exchange"
    );
}

#[test]
fn validation_waits_for_the_application() {
    let config = GossipsubConfig {
        validate_messages: true,
        ..GossipsubConfig::default()
    };
    let mut net = Net::new(3, config);
    net.connect(0, 1);
    net.connect(1, 2);
    let t = topic();
    for i in 0..3 {
        net.subscribe(i, &t);
    }
    net.run();
    net.heartbeat_all(Duration::from_secs(1));
    net.publish(0, &t, b"pending").unwrap();
    net.run();
    net.collect();
    let id = net.events[1]
        .iter()
        .find_map(|e| match e {
            GossipEvent::Message {
                id,
                needs_validation: true,
                ..
            } => Some(id.clone()),
            _ => None,
        })
        .expect("node 1 was asked");
    assert!(
        net.delivered(2).is_empty(),
        "not forwarded before the verdict"
    );
    let now = net.now;
    net.nodes[1].report_validation(now, &id, Validation::Accept);
    net.run();
    assert_eq!(net.delivered(2).len(), 1);
}

#[test]
fn a_choked_peer_is_unchoked_by_delivering_first_not_by_advertising() {
    let mut net = Net::new(3, GossipsubConfig::default());
    net.full_mesh();
    let t = topic();
    for i in 0..3 {
        net.subscribe(i, &t);
    }
    net.run();
    net.heartbeat_all(Duration::from_secs(1));
    let (a, b, c) = (net.ids[0], net.ids[1], net.ids[2]);
    assert!(net.nodes[0].mesh_peers(&t).contains(&b));
    for p in [b, c] {
        net.nodes[0]
            .peers
            .get_mut(&p)
            .unwrap()
            .choked_by_us
            .insert(t.clone());
    }
    let id = net.publish(1, &t, b"late").unwrap();
    // Hold back node 1's copy for node 0.
    let mut held = Vec::new();
    while let Some(out) = net.nodes[1].next_outbound(&a) {
        held.push(out.bytes);
    }
    // An advertisement alone is a promise: node 0 asks, but keeps the choke.
    let now = net.now;
    net.nodes[0].handle_rpc(
        now,
        b,
        Rpc {
            control: Control {
                ihave: vec![IHave {
                    topic: t.clone(),
                    message_ids: vec![id.clone()],
                }],
                ..Control::default()
            },
            ..Rpc::default()
        },
    );
    assert_eq!(net.nodes[0].metrics().iwant_sent, 1);
    assert_eq!(net.nodes[0].metrics().unchokes_sent, 0);
    // The copy arrives before any other: the choked peer filled a gap, so it is unchoked.
    for bytes in held {
        let rpc = Rpc::decode(&bytes, net.nodes[0].limits()).unwrap();
        net.nodes[0].handle_rpc(now, b, rpc);
    }
    assert_eq!(net.nodes[0].metrics().unchokes_sent, 1);
    assert!(!net.nodes[0].peers[&b].choked_by_us.contains(&t));
    // Node 2's copy comes second: a duplicate from a choked peer changes nothing.
    net.run();
    assert!(net.nodes[0].metrics().duplicates >= 1);
    assert_eq!(net.nodes[0].metrics().unchokes_sent, 1);
    assert!(net.nodes[0].peers[&c].choked_by_us.contains(&t));
    assert_eq!(net.delivered(0), vec![Bytes::from_static(b"late")]);
}
