//! The project's network benchmark: real nodes over loopback TCP, QUIC or the in-process
//! memory transport, in one process or spread over several. Prints one JSON object as its
//! last line.
//!
//! ```text
//! cargo bench --bench netbench -- kad --nodes 200 --transport tcp|quic|memory [--lookups 200] [--procs 1]
//!     [--reply-timeout-s 300] [--out FILE]
//! cargo bench --bench netbench -- gossip --nodes 200 --transport tcp [--messages 100] [--size 1024]
//! cargo bench --bench netbench -- rpc --transport tcp|quic|memory [--out FILE]
//! cargo bench --bench netbench -- registry --nodes 100 --packages 10000 --transport tcp|quic|memory
//!     [--timed 200] [--gets 200] [--rate 500] [--seed 1] [--data-root DIR]
//!     [--dht-max-records N] [--out FILE]
//! ```
//!
//! `registry` (`netbench/registry.rs`): N real `P2PRegistry` nodes, each with its own redb
//! store in a temporary data directory (under `--data-root`, default the system's temp
//! directory), bootstrapped through node 0 and two random earlier nodes, mDNS off. Publishes
//! `--packages` generated packages, then reports publish-to-searchable latency on every node
//! (per node and "on all nodes"), `get` latency from a cold light node (through the DHT),
//! local `search` latency over the whole catalogue, the sync time of a late-joining full
//! node, setup time, peak RSS, the heap per stored version and the CPU time per publish.
//!
//! `rpc` (`netbench/rpc.rs`): echo request rate and latency between two nodes, and a 256 MiB
//! range-request pull from one and from three providers next to the transport's raw limit.
//!
//! `kad`: starts N nodes, bootstraps each through a random earlier node (settle_s), then runs
//! lookups one after another from random nodes for random live PeerIds (success: the target
//! itself is among the k closest returned), then put/get pairs from two different random
//! nodes (success: the get returns the value put).
//!
//! Open files are capped at 20 000 per process here, and over TCP both ends of a connection
//! between two nodes of one process are open files of that process, so each node's
//! `max_connections` is derived from the process's budget; nodes recycle their longest-idle
//! connection when full.
//!
//! `--procs P` (default 1: every node in this process) spreads the nodes over P worker
//! processes, so that each process has its own fd budget and a larger per-node cap. This
//! process then only coordinates: it starts P copies of its own executable with the hidden
//! mode `kad-worker`, node `i` lives in worker `i % P`, and the coordinator drives the same
//! workload as with P = 1 (node indices drawn the same way, one operation at a time) by
//! sending one JSON request per line on each worker's stdin and reading one JSON reply per
//! line from its stdout (workers log to stderr). All nodes listen on 127.0.0.1. Every per-node operation, timing included, runs in [`Host::handle`], both in
//! this process when P = 1 and in the workers. With P > 1, `peak_rss_mb` is the sum of the
//! peaks of the coordinator and every worker. A worker that exits, or that does not reply
//! within `--reply-timeout-s` (default 300), ends the run with an error; the remaining
//! workers are killed first.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ggen_p2p::kademlia::{Dht, KademliaConfig, Key, Record};
use ggen_p2p::node::{Node, NodeConfig, NodeHandle};
use ggen_p2p::{Keypair, Multiaddr, PeerId};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Every allocation of this binary is counted (live and peak heap bytes, see `heap`).
#[global_allocator]
static ALLOCATOR: heap::Counting = heap::Counting;

/// The hidden mode a worker process runs in.
const WORKER_MODE: &str = "kad-worker";

#[path = "netbench/gossip.rs"]
mod gossip_bench;
#[path = "netbench/heap.rs"]
mod heap;
#[path = "shared/packages.rs"]
mod packages;
#[path = "shared/raw.rs"]
mod raw;
#[path = "netbench/registry.rs"]
mod registry_bench;
#[path = "netbench/registry_heap.rs"]
mod registry_heap;
#[path = "netbench/rpc.rs"]
mod rpc_bench;

struct Args {
    mode: String,
    messages: usize,
    size: usize,
    dials: usize,
    gossip_config: Option<String>,
    nodes: usize,
    transport: String,
    lookups: usize,
    procs: usize,
    reply_timeout: Duration,
    packages: usize,
    timed: usize,
    gets: usize,
    rate: f64,
    seed: u64,
    data_root: Option<std::path::PathBuf>,
    dht_max_records: Option<usize>,
    out: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        mode: String::new(),
        messages: 100,
        size: 1024,
        dials: 8,
        gossip_config: None,
        nodes: 200,
        transport: "tcp".into(),
        lookups: 200,
        procs: 1,
        reply_timeout: Duration::from_secs(300),
        packages: 10_000,
        timed: 200,
        gets: 200,
        rate: 500.0,
        seed: 1,
        data_root: None,
        dht_max_records: None,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--nodes" => a.nodes = it.next().and_then(|v| v.parse().ok()).expect("--nodes N"),
            "--transport" => a.transport = it.next().expect("--transport tcp|quic|memory"),
            "--lookups" => a.lookups = it.next().and_then(|v| v.parse().ok()).expect("--lookups N"),
            "--procs" => a.procs = it.next().and_then(|v| v.parse().ok()).expect("--procs P"),
            "--reply-timeout-s" => {
                a.reply_timeout = Duration::from_secs(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--reply-timeout-s SECONDS"),
                )
            }
            "--messages" => {
                a.messages = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--messages N")
            }
            "--size" => {
                a.size = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--size BYTES")
            }
            "--dials" => a.dials = it.next().and_then(|v| v.parse().ok()).expect("--dials N"),
            "--gossip-config" => a.gossip_config = it.next(),
            "--packages" => {
                a.packages = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--packages N")
            }
            "--timed" => a.timed = it.next().and_then(|v| v.parse().ok()).expect("--timed N"),
            "--gets" => a.gets = it.next().and_then(|v| v.parse().ok()).expect("--gets N"),
            "--rate" => {
                a.rate = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--rate PUBLISHES_PER_S")
            }
            "--seed" => a.seed = it.next().and_then(|v| v.parse().ok()).expect("--seed N"),
            "--data-root" => a.data_root = Some(it.next().expect("--data-root DIR").into()),
            "--dht-max-records" => {
                a.dht_max_records = Some(
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .expect("--dht-max-records N"),
                )
            }
            "--out" => a.out = it.next(),
            "--bench" => {}
            s if !s.starts_with('-') && a.mode.is_empty() => a.mode = s.to_string(),
            other => eprintln!("netbench: ignoring argument {other}"),
        }
    }
    a
}

/// One line to stderr in a single write, so that lines from several processes sharing the
/// terminal do not interleave.
fn log(msg: String) {
    let _ = std::io::stderr().write_all(format!("{msg}\n").as_bytes());
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// VmHWM of this process in MB, if readable.
fn peak_rss_mb() -> Option<f64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
}

/// CPU time (user + system, all threads) this process has used, from `/proc/self/stat`
/// (Linux; clock ticks of 10 ms, the kernel's `USER_HZ` on every mainstream build).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it are space-separated.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn listen_addr(transport: &str) -> Result<Multiaddr, String> {
    match transport {
        "tcp" => "/ip4/127.0.0.1/tcp/0",
        "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
        "memory" => "/memory/0",
        other => return Err(format!("unknown transport {other} (tcp, quic or memory)")),
    }
    .parse()
    .map_err(|e| format!("listen address: {e}"))
}

fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(20_000)
}

/// `max_connections` for each of the `hosted` nodes of this process, out of `total` nodes
/// spread over `procs` processes.
///
/// Over TCP every connection end (handshaking or established) is one fd in the process of
/// the node that owns it and counts toward that node's `max_connections`: a connection
/// between two nodes of this process costs 2 fds here, one charged to each node's cap; a
/// connection to a node in another process costs 1. So `hosted` nodes at cap `c` use at most
/// `hosted * c` fds for connections, plus one listener each and 500 spare. QUIC nodes share
/// one UDP socket each and get 64. With P > 1 the cap is also at most `total - 1`; P = 1
/// keeps the formula it has always had.
fn max_connections_per_node(transport: &str, hosted: usize, total: usize, procs: usize) -> usize {
    let cap = if transport == "tcp" {
        (fd_limit().saturating_sub(hosted + 500) / hosted.max(1)).clamp(8, 96)
    } else {
        64
    };
    if procs > 1 {
        cap.min(total.saturating_sub(1).max(1))
    } else {
        cap
    }
}

/// A request to the process hosting some nodes. `node` is an index among that process's
/// nodes, in the order `Start` reported them.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
enum Request {
    /// Start `count` nodes (of `total` over `procs` processes) and report them.
    Start {
        worker: usize,
        count: usize,
        total: usize,
        procs: usize,
        transport: String,
    },
    /// Add `peer` at `addr` to node `node`'s routing table and bootstrap through it.
    Bootstrap {
        node: usize,
        peer: PeerId,
        addr: Multiaddr,
    },
    /// `find_closest_peers(target)` from node `node`.
    Lookup { node: usize, target: PeerId },
    /// `put_record(key, value)` from node `node`.
    Put {
        node: usize,
        key: String,
        value: String,
    },
    /// `get_record(key)` from node `node`; compared with `value`.
    Get {
        node: usize,
        key: String,
        value: String,
    },
    /// Connection count and peak memory.
    Metrics,
    /// Shut every node down.
    Shutdown,
}

#[derive(Debug, Serialize, Deserialize)]
struct StartedNode {
    index: usize,
    peer: PeerId,
    addr: Multiaddr,
}

#[derive(Debug, Serialize, Deserialize)]
struct Started {
    max_connections: usize,
    nodes: Vec<StartedNode>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Bootstrapped {
    error: Option<String>,
    ms: f64,
    messages: usize,
    peers_contacted: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct LookedUp {
    /// The query returned peers (an error counts as a failed lookup without figures).
    completed: bool,
    /// The target is among the returned peers.
    found: bool,
    hops: u32,
    messages: usize,
    /// Around the `find_closest_peers` call only.
    ms: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Put {
    ok: bool,
    ms: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Got {
    /// The get returned a record with the expected value.
    matched: bool,
    ms: f64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Metrics {
    /// Sum of `connections_established` over the hosted nodes.
    connections_established: u64,
    /// VmHWM of the hosting process.
    peak_rss_mb: Option<f64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
enum Reply {
    Started(Started),
    Bootstrapped(Bootstrapped),
    LookedUp(LookedUp),
    Put(Put),
    Got(Got),
    Metrics(Metrics),
    ShutDown,
    Error { message: String },
}

/// The nodes of one process. Every per-node operation of the benchmark goes through
/// [`Host::handle`], whether the nodes are in the benchmark process (P = 1) or in a worker.
#[derive(Default)]
struct Host {
    nodes: Vec<(NodeHandle, Dht)>,
}

impl Host {
    fn node(&self, i: usize) -> Result<&Dht, String> {
        self.nodes.get(i).map(|(_, d)| d).ok_or_else(|| {
            format!(
                "node index {i} out of range (this process hosts {})",
                self.nodes.len()
            )
        })
    }

    async fn handle(&mut self, req: Request) -> Reply {
        match self.try_handle(req).await {
            Ok(reply) => reply,
            Err(message) => Reply::Error { message },
        }
    }

    async fn try_handle(&mut self, req: Request) -> Result<Reply, String> {
        Ok(match req {
            Request::Start {
                worker,
                count,
                total,
                procs,
                transport,
            } => {
                if !self.nodes.is_empty() {
                    return Err("nodes already started".into());
                }
                let max_connections = max_connections_per_node(&transport, count, total, procs);
                if procs > 1 {
                    log(format!(
                        "netbench worker {worker}: starting {count} of {total} nodes over {transport} (max {max_connections} connections per node, fd limit {})",
                        fd_limit()
                    ));
                }
                let listen = listen_addr(&transport)?;
                for _ in 0..count {
                    let config = NodeConfig {
                        listen: vec![listen.clone()],
                        max_connections,
                        eviction_min_idle: Some(Duration::ZERO),
                        ..NodeConfig::default()
                    };
                    let node = Node::spawn(Keypair::generate(), config)
                        .await
                        .map_err(|e| format!("node {} does not start: {e}", self.nodes.len()))?;
                    let dht = Dht::spawn(&node, KademliaConfig::default(), None)
                        .map_err(|e| format!("dht {} does not start: {e}", self.nodes.len()))?;
                    self.nodes.push((node, dht));
                }
                let nodes = self
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(index, (node, _))| {
                        let addr = node
                            .listen_addrs()
                            .into_iter()
                            .next()
                            .ok_or_else(|| format!("node {index} has no listen address"))?;
                        Ok(StartedNode {
                            index,
                            peer: node.local_peer_id(),
                            addr,
                        })
                    })
                    .collect::<Result<_, String>>()?;
                Reply::Started(Started {
                    max_connections,
                    nodes,
                })
            }
            Request::Bootstrap { node, peer, addr } => {
                let dht = self.node(node)?;
                dht.add_peer(peer, addr);
                let t = Instant::now();
                let r = dht.bootstrap().await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                Reply::Bootstrapped(match r {
                    Ok((_, s)) => Bootstrapped {
                        error: None,
                        ms,
                        messages: s.messages,
                        peers_contacted: s.peers_contacted,
                    },
                    Err(e) => Bootstrapped {
                        error: Some(e.to_string()),
                        ms,
                        messages: 0,
                        peers_contacted: 0,
                    },
                })
            }
            Request::Lookup { node, target } => {
                let dht = self.node(node)?;
                let t = Instant::now();
                let r = dht.find_closest_peers(Key::from_peer(&target)).await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                Reply::LookedUp(match r {
                    Ok((peers, stats)) => LookedUp {
                        completed: true,
                        found: peers.iter().any(|p| p.peer == target),
                        hops: stats.hops,
                        messages: stats.messages,
                        ms,
                    },
                    Err(_) => LookedUp {
                        completed: false,
                        found: false,
                        hops: 0,
                        messages: 0,
                        ms,
                    },
                })
            }
            Request::Put { node, key, value } => {
                let dht = self.node(node)?;
                let record = Record {
                    key: Bytes::from(key),
                    value: Bytes::from(value),
                    publisher: None,
                    ttl_secs: 0,
                };
                let t = Instant::now();
                let ok = dht.put_record(record, None).await.is_ok();
                Reply::Put(Put {
                    ok,
                    ms: t.elapsed().as_secs_f64() * 1e3,
                })
            }
            Request::Get { node, key, value } => {
                let dht = self.node(node)?;
                let t = Instant::now();
                let r = dht.get_record(Bytes::from(key)).await;
                let ms = t.elapsed().as_secs_f64() * 1e3;
                Reply::Got(Got {
                    matched: r.is_ok_and(|(rec, _)| rec.value == value.as_bytes()),
                    ms,
                })
            }
            Request::Metrics => Reply::Metrics(Metrics {
                connections_established: self
                    .nodes
                    .iter()
                    .map(|(n, _)| n.metrics().connections_established)
                    .sum(),
                peak_rss_mb: peak_rss_mb(),
            }),
            Request::Shutdown => {
                futures_util::future::join_all(self.nodes.iter().map(|(n, _)| n.shutdown())).await;
                self.nodes.clear();
                Reply::ShutDown
            }
        })
    }
}

/// One worker process, as the coordinator sees it.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Lines of the worker's stdout, read by a thread; closed when the worker closes stdout.
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// The processes hosting the nodes: this one (P = 1) or P workers. Node `i` (global index)
/// is node `i / P` of worker `i % P`.
enum Cluster {
    Local(Host),
    Workers {
        workers: Vec<Worker>,
        reply_timeout: Duration,
    },
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Only reached with workers still running on an unexpected exit path (a panic).
        self.kill_workers();
    }
}

impl Cluster {
    fn new(args: &Args) -> Cluster {
        if args.procs <= 1 {
            return Cluster::Local(Host::default());
        }
        let exe = std::env::current_exe().expect("path of the netbench executable");
        let mut cluster = Cluster::Workers {
            workers: Vec::with_capacity(args.procs),
            reply_timeout: args.reply_timeout,
        };
        for w in 0..args.procs {
            let spawned = Command::new(&exe)
                .arg(WORKER_MODE)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn();
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) => cluster.fail(format!("cannot start worker {w} ({}): {e}", exe.display())),
            };
            let stdin = child.stdin.take().expect("worker stdin is piped");
            let stdout = child.stdout.take().expect("worker stdout is piped");
            let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            if let Cluster::Workers { workers, .. } = &mut cluster {
                workers.push(Worker {
                    child,
                    stdin: Some(stdin),
                    lines,
                });
            }
        }
        cluster
    }

    fn procs(&self) -> usize {
        match self {
            Cluster::Local(_) => 1,
            Cluster::Workers { workers, .. } => workers.len(),
        }
    }

    fn kill_workers(&mut self) {
        if let Cluster::Workers { workers, .. } = self {
            for w in workers.iter_mut() {
                if let Ok(None) = w.child.try_wait() {
                    let _ = w.child.kill();
                }
                let _ = w.child.wait();
            }
            workers.clear();
        }
    }

    /// Prints `msg`, kills every worker and exits non-zero.
    fn fail(&mut self, msg: String) -> ! {
        eprintln!("netbench: error: {msg}");
        self.kill_workers();
        std::process::exit(1);
    }

    fn send(&mut self, w: usize, req: &Request) {
        let line = serde_json::to_string(req).expect("requests serialize to JSON");
        let Cluster::Workers { workers, .. } = self else {
            unreachable!("send is only used with worker processes")
        };
        let sent = match workers[w].stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("stdin already closed")),
        };
        if let Err(e) = sent {
            let status = self.exit_status(w);
            self.fail(format!("cannot send {line} to worker {w} ({status}): {e}"));
        }
    }

    fn exit_status(&mut self, w: usize) -> String {
        let Cluster::Workers { workers, .. } = self else {
            return String::new();
        };
        match workers[w].child.try_wait() {
            Ok(Some(s)) => format!("exited: {s}"),
            Ok(None) => "still running".into(),
            Err(e) => format!("status unknown: {e}"),
        }
    }

    async fn recv(&mut self, w: usize, what: &str) -> Reply {
        let Cluster::Workers {
            workers,
            reply_timeout,
        } = self
        else {
            unreachable!("recv is only used with worker processes")
        };
        let timeout = *reply_timeout;
        let line = match tokio::time::timeout(timeout, workers[w].lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => {
                // The worker closed its stdout: it has exited or is about to.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let status = self.exit_status(w);
                self.fail(format!("worker {w} stopped ({status}) while {what}"))
            }
            Err(_) => self.fail(format!(
                "worker {w} sent no reply within {} s while {what}",
                timeout.as_secs()
            )),
        };
        match serde_json::from_str::<Reply>(&line) {
            Ok(Reply::Error { message }) => self.fail(format!(
                "worker {w} reported an error while {what}: {message}"
            )),
            Ok(reply) => reply,
            Err(e) => self.fail(format!(
                "worker {w} sent a line that is not a reply while {what}: {line:?} ({e})"
            )),
        }
    }

    /// Sends `req` to node `node` (global index; `req` gets the hosting process's index).
    async fn call(&mut self, node: usize, req: impl FnOnce(usize) -> Request, what: &str) -> Reply {
        let procs = self.procs();
        let reply = match self {
            Cluster::Local(host) => host.handle(req(node)).await,
            Cluster::Workers { .. } => {
                let (w, local) = (node % procs, node / procs);
                self.send(w, &req(local));
                self.recv(w, what).await
            }
        };
        if let Reply::Error { message } = reply {
            self.fail(format!("{what}: {message}"));
        }
        reply
    }

    /// Sends `req(w)` to every process and collects the replies in order.
    async fn broadcast(&mut self, req: impl Fn(usize) -> Request, what: &str) -> Vec<Reply> {
        let replies = match self {
            Cluster::Local(host) => vec![host.handle(req(0)).await],
            Cluster::Workers { .. } => {
                let procs = self.procs();
                for w in 0..procs {
                    self.send(w, &req(w));
                }
                let mut replies = Vec::with_capacity(procs);
                for w in 0..procs {
                    replies.push(self.recv(w, what).await);
                }
                replies
            }
        };
        for r in &replies {
            if let Reply::Error { message } = r {
                let msg = format!("{what}: {message}");
                self.fail(msg);
            }
        }
        replies
    }

    fn unexpected(&mut self, what: &str, reply: Reply) -> ! {
        self.fail(format!("unexpected reply while {what}: {reply:?}"))
    }

    /// Starts `total` nodes; returns every node's PeerId and listen address in global order,
    /// and the smallest per-node connection cap among the processes.
    async fn start(&mut self, total: usize, transport: &str) -> (Vec<(PeerId, Multiaddr)>, usize) {
        let procs = self.procs();
        let replies = self
            .broadcast(
                |w| Request::Start {
                    worker: w,
                    // Worker w hosts global indices w, w + P, w + 2P, ...
                    count: (total + procs - 1 - w) / procs,
                    total,
                    procs,
                    transport: transport.to_string(),
                },
                "starting nodes",
            )
            .await;
        let mut peers: Vec<Option<(PeerId, Multiaddr)>> = vec![None; total];
        let mut cap = usize::MAX;
        for (w, reply) in replies.into_iter().enumerate() {
            let Reply::Started(s) = reply else {
                self.unexpected("starting nodes", reply)
            };
            cap = cap.min(s.max_connections);
            for n in s.nodes {
                let global = n.index * procs + w;
                match peers.get_mut(global) {
                    Some(slot) => *slot = Some((n.peer, n.addr)),
                    None => self.fail(format!(
                        "worker {w} reported node {} beyond the {total} requested",
                        n.index
                    )),
                }
            }
        }
        let peers = peers
            .into_iter()
            .enumerate()
            .map(|(i, p)| p.unwrap_or_else(|| self.fail(format!("node {i} was not started"))))
            .collect();
        (peers, cap)
    }

    async fn bootstrap(&mut self, node: usize, peer: PeerId, addr: Multiaddr) -> Bootstrapped {
        let what = format!("bootstrapping node {node}");
        match self
            .call(node, |node| Request::Bootstrap { node, peer, addr }, &what)
            .await
        {
            Reply::Bootstrapped(b) => b,
            other => self.unexpected(&what, other),
        }
    }

    async fn lookup(&mut self, node: usize, target: PeerId) -> LookedUp {
        let what = format!("looking up {target} from node {node}");
        match self
            .call(node, |node| Request::Lookup { node, target }, &what)
            .await
        {
            Reply::LookedUp(l) => l,
            other => self.unexpected(&what, other),
        }
    }

    async fn put(&mut self, node: usize, key: String, value: String) -> Put {
        let what = format!("putting {key} from node {node}");
        match self
            .call(node, |node| Request::Put { node, key, value }, &what)
            .await
        {
            Reply::Put(p) => p,
            other => self.unexpected(&what, other),
        }
    }

    async fn get(&mut self, node: usize, key: String, value: String) -> Got {
        let what = format!("getting {key} from node {node}");
        match self
            .call(node, |node| Request::Get { node, key, value }, &what)
            .await
        {
            Reply::Got(g) => g,
            other => self.unexpected(&what, other),
        }
    }

    async fn metrics(&mut self) -> Vec<Metrics> {
        let replies = self
            .broadcast(|_| Request::Metrics, "collecting metrics")
            .await;
        replies
            .into_iter()
            .map(|r| match r {
                Reply::Metrics(m) => m,
                other => self.unexpected("collecting metrics", other),
            })
            .collect()
    }

    async fn connections_established(&mut self) -> u64 {
        self.metrics()
            .await
            .iter()
            .map(|m| m.connections_established)
            .sum()
    }

    /// Peak RSS in MB: this process's when it hosts the nodes, else the sum of the
    /// coordinator's and every worker's.
    async fn peak_rss_mb(&mut self) -> f64 {
        let hosts: Option<f64> = self.metrics().await.iter().map(|m| m.peak_rss_mb).sum();
        let own = if self.procs() > 1 {
            peak_rss_mb()
        } else {
            Some(0.0)
        };
        hosts.zip(own).map_or(f64::NAN, |(h, o)| h + o)
    }

    async fn shutdown(&mut self) {
        for reply in self.broadcast(|_| Request::Shutdown, "shutting down").await {
            if !matches!(reply, Reply::ShutDown) {
                self.unexpected("shutting down", reply);
            }
        }
        if let Cluster::Workers { workers, .. } = self {
            // Closing stdin tells a worker that nothing more is coming; it exits on its own.
            for w in workers.iter_mut() {
                w.stdin = None;
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            for (i, w) in workers.iter_mut().enumerate() {
                loop {
                    match w.child.try_wait() {
                        Ok(Some(s)) if s.success() => break,
                        Ok(Some(s)) => {
                            eprintln!("netbench: worker {i} exited with {s} after shutdown");
                            break;
                        }
                        Ok(None) if Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        _ => {
                            eprintln!(
                                "netbench: worker {i} did not exit after shutdown; killing it"
                            );
                            let _ = w.child.kill();
                            let _ = w.child.wait();
                            break;
                        }
                    }
                }
            }
            workers.clear();
        }
    }
}

async fn kad(args: &Args) -> String {
    let n = args.nodes;
    let mut cluster = Cluster::new(args);
    let (peers, per_node) = cluster.start(n, &args.transport).await;
    let mut rng = rand::rng();
    let settle = Instant::now();
    for i in 1..n {
        let via = rng.random_range(0..i);
        let (peer, addr) = peers[via].clone();
        let b = cluster.bootstrap(i, peer, addr).await;
        match b.error {
            Some(e) => eprintln!("node {i}: bootstrap failed: {e}"),
            None if i % 50 == 0 => eprintln!(
                "node {i}: bootstrap {:.1} ms, {} messages, {} peers contacted",
                b.ms, b.messages, b.peers_contacted
            ),
            None => {}
        }
    }
    let settle_s = settle.elapsed().as_secs_f64();
    eprintln!(
        "netbench kad: {n} nodes over {} in {} process(es) settled in {settle_s:.2} s (max {per_node} connections per node)",
        args.transport, args.procs
    );

    let conns_before = cluster.connections_established().await;
    let (mut lat, mut hops, mut msgs, mut ok) = (Vec::new(), 0u64, 0u64, 0usize);
    for _ in 0..args.lookups {
        let from = rng.random_range(0..n);
        let mut to = rng.random_range(0..n);
        while to == from {
            to = rng.random_range(0..n);
        }
        let l = cluster.lookup(from, peers[to].0).await;
        lat.push(l.ms);
        if l.completed {
            hops += l.hops as u64;
            msgs += l.messages as u64;
            if l.found {
                ok += 1;
            }
        }
    }
    lat.sort_by(f64::total_cmp);
    // Each connection is counted at both ends.
    let new_conns = (cluster.connections_established().await - conns_before) as f64 / 2.0;
    let pairs = (args.lookups / 2).max(1);
    let (mut get_lat, mut put_lat, mut get_ok, mut put_ok) =
        (Vec::new(), Vec::new(), 0usize, 0usize);
    for i in 0..pairs {
        let a = rng.random_range(0..n);
        let mut b = rng.random_range(0..n);
        while b == a {
            b = rng.random_range(0..n);
        }
        let key = format!("netbench/{i}/{}", rng.random::<u64>());
        let value = format!("value {i}");
        let p = cluster.put(a, key.clone(), value.clone()).await;
        if p.ok {
            put_ok += 1;
        }
        put_lat.push(p.ms);
        let g = cluster.get(b, key, value).await;
        get_lat.push(g.ms);
        if g.matched {
            get_ok += 1;
        }
    }
    get_lat.sort_by(f64::total_cmp);
    put_lat.sort_by(f64::total_cmp);
    let l = args.lookups.max(1) as f64;
    let json = format!(
        concat!(
            "{{\"bench\":\"kad\",\"nodes\":{},\"transport\":\"{}\",\"procs\":{},\"max_connections_per_node\":{},\"settle_s\":{:.3},",
            "\"lookup\":{{\"count\":{},\"p50_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"success_ratio\":{:.4},\"mean_hops\":{:.2},\"mean_messages\":{:.1},\"new_connections_per_lookup\":{:.2}}},",
            "\"record_get\":{{\"count\":{},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"success_ratio\":{:.4}}},",
            "\"record_put\":{{\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"success_ratio\":{:.4}}},",
            "\"peak_rss_mb\":{:.1}}}"
        ),
        n,
        args.transport,
        cluster.procs(),
        per_node,
        settle_s,
        args.lookups,
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        ok as f64 / l,
        hops as f64 / l,
        msgs as f64 / l,
        new_conns / l,
        pairs,
        percentile(&get_lat, 0.5),
        percentile(&get_lat, 0.99),
        get_ok as f64 / pairs as f64,
        percentile(&put_lat, 0.5),
        percentile(&put_lat, 0.99),
        put_ok as f64 / pairs as f64,
        cluster.peak_rss_mb().await,
    );
    cluster.shutdown().await;
    json
}

/// Worker mode: serves requests from stdin, one JSON object per line, and answers each with
/// one JSON line on stdout. Nothing else goes to stdout. Ends on `shutdown` or end of input.
fn worker(rt: &tokio::runtime::Runtime) -> ! {
    let mut host = Host::default();
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        match stdin.lock().read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => {
                log(format!("netbench worker: reading stdin: {e}"));
                break;
            }
        }
        let (reply, last) = match serde_json::from_str::<Request>(line.trim_end()) {
            Ok(req) => {
                let last = matches!(req, Request::Shutdown);
                (rt.block_on(host.handle(req)), last)
            }
            Err(e) => (
                Reply::Error {
                    message: format!("not a request: {:?} ({e})", line.trim_end()),
                },
                false,
            ),
        };
        let out = serde_json::to_string(&reply).expect("replies serialize to JSON");
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = writeln!(stdout, "{out}").and_then(|()| stdout.flush()) {
            log(format!(
                "netbench worker: the coordinator is gone ({e}); exiting"
            ));
            std::process::exit(1);
        }
        if last {
            std::process::exit(0);
        }
    }
    // End of input without `shutdown`: the coordinator has gone away.
    rt.block_on(host.handle(Request::Shutdown));
    std::process::exit(0);
}

fn main() {
    let args = parse_args();
    if args.mode.is_empty() {
        // `cargo bench` without arguments (or `cargo test --benches`): nothing selected.
        eprintln!(
            "netbench: choose a benchmark, e.g. `cargo bench --bench netbench -- kad --nodes 200 --transport tcp`"
        );
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let json = match args.mode.as_str() {
        "kad" => {
            if args.nodes < 2 || args.procs == 0 || args.procs > args.nodes {
                eprintln!(
                    "netbench: kad needs --nodes >= 2 and 1 <= --procs <= --nodes (got {} and {})",
                    args.nodes, args.procs
                );
                std::process::exit(2);
            }
            if args.procs > 1 && args.transport == "memory" {
                eprintln!(
                    "netbench: the memory transport works within one process; use --procs 1 or tcp/quic"
                );
                std::process::exit(2);
            }
            if let Err(e) = listen_addr(&args.transport) {
                eprintln!("netbench: {e}");
                std::process::exit(2);
            }
            rt.block_on(kad(&args))
        }
        "gossip" => {
            let listen = match listen_addr(&args.transport) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("netbench: {e}");
                    std::process::exit(2);
                }
            };
            if args.nodes < 2 || args.messages == 0 {
                eprintln!("netbench: gossip needs --nodes >= 2 and --messages >= 1");
                std::process::exit(2);
            }
            let config = match &args.gossip_config {
                None => ggen_p2p::gossip::GossipsubConfig::default(),
                Some(path) => std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
                    .unwrap_or_else(|e| {
                        eprintln!("netbench: --gossip-config {path}: {e}");
                        std::process::exit(2);
                    }),
            };
            let g = gossip_bench::GossipArgs {
                config,
                nodes: args.nodes,
                transport: args.transport.clone(),
                messages: args.messages,
                size: args.size,
                dials: args.dials,
            };
            rt.block_on(gossip_bench::run(&g, listen, peak_rss_mb, cpu_seconds))
        }
        "rpc" => match listen_addr(&args.transport) {
            Ok(listen) => rt.block_on(rpc_bench::run(
                &args.transport,
                listen,
                peak_rss_mb,
                cpu_seconds,
            )),
            Err(e) => {
                eprintln!("netbench: {e}");
                std::process::exit(2);
            }
        },
        "registry" => {
            if let Err(e) = listen_addr(&args.transport) {
                eprintln!("netbench: {e}");
                std::process::exit(2);
            }
            if args.nodes < 2 || args.packages < 10 || args.rate <= 0.0 {
                eprintln!("netbench: registry needs --nodes >= 2, --packages >= 10 and --rate > 0");
                std::process::exit(2);
            }
            let r = registry_bench::RegistryArgs {
                nodes: args.nodes,
                packages: args.packages,
                transport: args.transport.clone(),
                timed: args.timed,
                gets: args.gets,
                rate: args.rate,
                seed: args.seed,
                data_root: args.data_root.clone(),
                fd_limit: fd_limit(),
                dht_max_records: args.dht_max_records,
            };
            rt.block_on(registry_bench::run(&r, peak_rss_mb, cpu_seconds))
        }
        "registry-heap" => registry_heap::run(args.packages, args.nodes, args.seed, args.rate),
        WORKER_MODE => worker(&rt),
        other => {
            eprintln!(
                "netbench: unknown benchmark {other} (available: kad, gossip, rpc, registry, registry-heap)"
            );
            std::process::exit(2);
        }
    };
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{json}\n")).expect("writing --out file");
    }
    println!("{json}");
}
