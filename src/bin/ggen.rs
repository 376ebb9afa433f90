//! `ggen`: run and drive a ggen-p2p node from the command line.
//!
//! ```text
//! ggen p2p start [--listen <multiaddr>]… [--bootstrap <multiaddr>/p2p/<PeerId>]… [--data-dir DIR]
//! ggen p2p id [--data-dir DIR]
//! ggen p2p ping <multiaddr>/p2p/<PeerId> [--count N] [--interval SECS]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ggen_p2p::gossip::{Gossip, GossipsubConfig};
use ggen_p2p::identity::load_or_create_identity;
use ggen_p2p::kademlia::{Dht, KademliaConfig};
use ggen_p2p::node::{Node, NodeConfig, NodeEvent};
use ggen_p2p::{Keypair, Multiaddr};

#[derive(Parser)]
#[command(
    name = "ggen",
    version,
    about = "ggen: decentralized package registry tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Peer-to-peer node commands.
    #[command(subcommand)]
    P2p(P2p),
}

#[derive(Subcommand)]
enum P2p {
    /// Run a node until Ctrl-C (or SIGTERM).
    Start(StartArgs),
    /// Print this node's peer id (creating the identity if there is none yet).
    Id(DataDirArg),
    /// Dial a peer, authenticate it, and print round-trip times.
    Ping(PingArgs),
}

#[derive(Args)]
struct DataDirArg {
    /// Directory holding the node's identity and data [default: the user's data directory,
    /// e.g. ~/.local/share/ggen-p2p].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct StartArgs {
    /// Address to listen on; repeat for several. [default: /ip4/0.0.0.0/tcp/4001 and
    /// /ip4/0.0.0.0/udp/4001/quic-v1]
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Bootstrap peer to dial and keep connected, as <multiaddr>/p2p/<PeerId>; repeatable.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Configuration file (TOML): the fields of `NodeConfig` at the top level, plus optional
    /// `[kademlia]` (`KademliaConfig`) and `[gossipsub]` (`GossipsubConfig`) tables; flags
    /// override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Maximum number of connections.
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    #[command(flatten)]
    data: DataDirArg,
}

#[derive(Args)]
struct PingArgs {
    /// The peer: <multiaddr>/p2p/<PeerId>.
    address: Multiaddr,
    /// Number of pings.
    #[arg(long, short = 'n', default_value_t = 5)]
    count: u32,
    /// Seconds between pings.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Seconds allowed to connect and authenticate.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

/// What `--config` may hold.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct StartConfig {
    #[serde(flatten)]
    node: NodeConfig,
    kademlia: KademliaConfig,
    gossipsub: GossipsubConfig,
}

fn data_dir(arg: &DataDirArg) -> Result<PathBuf, String> {
    match &arg.data_dir {
        Some(d) => Ok(d.clone()),
        None => dirs::data_dir()
            .map(|d| d.join("ggen-p2p"))
            .ok_or_else(|| "no user data directory on this system; pass --data-dir".to_string()),
    }
}

fn identity(dir: &Path) -> Result<Keypair, String> {
    load_or_create_identity(&dir.join("identity.key")).map_err(|e| e.to_string())
}

/// One line: the error and its sources.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Top::P2p(P2p::Start(a)) => start(a).await,
            Top::P2p(P2p::Id(a)) => {
                let dir = data_dir(&a)?;
                println!("{}", identity(&dir)?.peer_id());
                Ok(())
            }
            Top::P2p(P2p::Ping(a)) => ping(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: StartArgs) -> Result<(), String> {
    let dir = data_dir(&args.data)?;
    let keypair = identity(&dir)?;
    let StartConfig {
        node: mut config,
        kademlia,
        gossipsub,
    } = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            toml::from_str::<StartConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => StartConfig::default(),
    };
    if !args.listen.is_empty() {
        config.listen = args.listen;
    } else if config.listen.is_empty() {
        config.listen = vec![
            "/ip4/0.0.0.0/tcp/4001"
                .parse()
                .map_err(|e| format!("{e}"))?,
            "/ip4/0.0.0.0/udp/4001/quic-v1"
                .parse()
                .map_err(|e| format!("{e}"))?,
        ];
    }
    config.bootstrap.extend(args.bootstrap);
    for b in &config.bootstrap {
        if b.peer_id().is_none() {
            tracing::warn!(addr = %b, "bootstrap address has no /p2p/<PeerId>: its identity will not be checked");
        }
    }
    if let Some(n) = args.max_connections {
        config.max_connections = n;
    }
    let node = Node::spawn(keypair, config)
        .await
        .map_err(|e| one_line(&e))?;
    let me = node.local_peer_id();
    let mut events = node.events();
    // The node serves the DHT (and bootstraps into it through the bootstrap peers) and runs
    // a gossip router, so that peers can join the network through it.
    let dht = Dht::spawn(&node, kademlia, None).map_err(|e| one_line(&e))?;
    let _gossip = Gossip::spawn(&node, gossipsub).map_err(|e| one_line(&e))?;
    println!("peer id: {me}");
    for addr in node.listen_addrs() {
        println!("listening on {}", addr.with_peer_id(me));
    }
    println!("data dir: {}", dir.display());
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut status = tokio::time::interval(Duration::from_secs(60));
    status.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = status.tick() => {
                let table = dht.routing_table().await.map(|t| t.len).unwrap_or(0);
                tracing::info!(connections = node.connected_count(), dht_peers = table, "status");
            }
            ev = events.recv() => match ev {
                Ok(NodeEvent::DialFailed { addr, error }) => tracing::warn!(%addr, "dial failed: {error}"),
                Ok(NodeEvent::InboundFailed { addr, reason }) => tracing::debug!(%addr, "inbound connection failed: {reason}"),
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => tracing::debug!("{n} node events skipped"),
                Err(_) => break,
            },
        }
    }
    tracing::info!("shutting down");
    node.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn ping(args: PingArgs) -> Result<(), String> {
    let timeout =
        Duration::try_from_secs_f64(args.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let interval =
        Duration::try_from_secs_f64(args.interval).map_err(|e| format!("--interval: {e}"))?;
    let config = NodeConfig {
        connection_timeout: timeout,
        ..NodeConfig::default()
    };
    let node = Node::spawn(Keypair::generate(), config)
        .await
        .map_err(|e| one_line(&e))?;
    let result = async {
        let peer = node
            .dial(args.address.clone())
            .await
            .map_err(|e| one_line(&e))?;
        println!("PING {peer} via {}", args.address.without_peer_id());
        let mut rtts = Vec::new();
        for seq in 1..=args.count {
            if seq > 1 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let rtt = node.ping(peer).await.map_err(|e| one_line(&e))?;
            println!(
                "pong from {peer}: seq={seq} time={:.3} ms",
                rtt.as_secs_f64() * 1e3
            );
            rtts.push(rtt.as_secs_f64() * 1e3);
        }
        if !rtts.is_empty() {
            let avg = rtts.iter().sum::<f64>() / rtts.len() as f64;
            let min = rtts.iter().cloned().fold(f64::INFINITY, f64::min);
            let max = rtts.iter().cloned().fold(0.0, f64::max);
            println!(
                "{} pings: min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms",
                rtts.len()
            );
        }
        Ok(())
    }
    .await;
    node.shutdown().await;
    result
}
