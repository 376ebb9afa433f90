//! `ggen`: run and drive a ggen-p2p registry node from the command line.
//!
//! ```text
//! ggen p2p start [--listen <multiaddr>]… [--bootstrap <multiaddr>/p2p/<PeerId>]… [--data-dir DIR]
//!                [--config FILE] [--max-connections N] [--no-mdns] [--replicate-content]
//! ggen p2p id [--data-dir DIR]
//! ggen p2p ping <multiaddr>/p2p/<PeerId> [--count N] [--interval SECS] [--timeout SECS]
//! ```
//!
//! `start` runs a full [`P2PRegistry`] node (DHT, gossip mesh, catalogue with anti-entropy
//! sync, search and content service) until Ctrl-C or SIGTERM, then stops it cleanly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod verbs;

use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use ggen_p2p::daemon::{ApiConfig, ApiServer};
use ggen_p2p::identity::load_or_create_identity;
use ggen_p2p::node::{Node, NodeConfig};
use ggen_p2p::{BootstrapNode, Keypair, Multiaddr, P2PConfig, P2PRegistryBuilder};
use verbs::{ClientArgs, InstallArgs, PublishArgs, SearchArgs, VerbError};

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
    /// Run a registry node until Ctrl-C (or SIGTERM).
    ///
    /// Prints `peer id: <PeerId>`, then one `listening on <multiaddr>/p2p/<PeerId>` line per
    /// bound address (the real port, so `/tcp/0` works), then `data dir: <DIR>`.
    Start(StartArgs),
    /// Print this node's peer id (creating the identity if there is none yet).
    Id(DataDirArg),
    /// Dial a peer, authenticate it, and print round-trip times.
    Ping(PingArgs),
    /// The running daemon: uptime, peer id, addresses, peers, catalogue, store, content.
    Status(ClientArgs),
    /// The running daemon's network statistics.
    Stats(ClientArgs),
    /// The daemon's connected peers: address, direction, transport, RTT, reputation.
    Peers(ClientArgs),
    /// One connected peer.
    PeerInfo {
        /// The peer id.
        peer: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add bootstrap peers to the running daemon (and dial them).
    Bootstrap {
        /// Addresses ending in /p2p/<PeerId>.
        #[arg(required = true)]
        addrs: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Search the network's catalogue through the daemon.
    Search {
        #[command(flatten)]
        search: SearchArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A package's versions, owner and maintainers, providers, hash and size.
    Info {
        /// NAME or NAME@VERSION.
        spec: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Publish a directory with a gpack.toml (or a tar.gz of one) through the daemon, which
    /// keeps serving its content.
    Publish {
        #[command(flatten)]
        publish: PublishArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Fetch a package through the daemon, verify its signature and hash, unpack it safely.
    Install {
        #[command(flatten)]
        install: InstallArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Mark one of your versions deprecated (re-signed and announced).
    Deprecate {
        /// NAME@VERSION.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Args)]
struct DataDirArg {
    /// Directory holding the node's identity (`identity.key`), package store and content
    /// [default: the user's data directory, e.g. ~/.local/share/ggen-p2p].
    #[arg(long, value_name = "DIR", env = "GGEN_P2P_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args)]
struct StartArgs {
    /// Address to listen on; repeat for several. [default: /ip4/0.0.0.0/tcp/4001 and
    /// /ip4/0.0.0.0/udp/4001/quic-v1, or `network.listen_addresses` of --config]
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "GGEN_P2P_LISTEN",
        value_delimiter = ','
    )]
    listen: Vec<Multiaddr>,
    /// Bootstrap peer to dial and keep connected, as <multiaddr>/p2p/<PeerId>; repeatable.
    /// Added to the config file's `bootstrap.nodes`.
    #[arg(
        long,
        value_name = "MULTIADDR",
        env = "GGEN_P2P_BOOTSTRAP",
        value_delimiter = ','
    )]
    bootstrap: Vec<Multiaddr>,
    /// Configuration file (TOML) holding a `P2PConfig`: optional tables `[network]`
    /// (listen_addresses, protocols, max_connections, connection_timeout, idle_timeout),
    /// `[security]` (identity_path), `[bootstrap]` (enabled, mdns_enabled, retry_interval,
    /// `[[bootstrap.nodes]]` with peer_id and address), `[dht]` (k, alpha,
    /// replication_factor, …), `[gossipsub]` (mesh_n, heartbeat_interval, …) and
    /// `[registry]` (data_dir, catalogue, sync_interval, replicate_content, …). Durations
    /// are seconds. Unknown keys are refused. Flags override the file.
    #[arg(
        long,
        value_name = "FILE",
        verbatim_doc_comment,
        env = "GGEN_P2P_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Maximum number of connections [default: 100].
    #[arg(long, value_name = "N", env = "GGEN_P2P_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Do not announce or discover peers with mDNS on the local network.
    #[arg(long, env = "GGEN_P2P_NO_MDNS")]
    no_mdns: bool,
    /// Fetch, keep and serve the content of every package this node admits (a seeder:
    /// content published by short-lived nodes stays available after they leave).
    #[arg(long, env = "GGEN_P2P_REPLICATE_CONTENT")]
    replicate_content: bool,
    /// Address of the local control API (HTTP, JSON) that the CLI verbs use
    /// [default: 127.0.0.1:5001].
    #[arg(
        long,
        value_name = "ADDR",
        conflicts_with = "no_api",
        env = "GGEN_P2P_API"
    )]
    api: Option<std::net::SocketAddr>,
    /// Run without the control API (the CLI verbs then cannot reach this node).
    #[arg(long, env = "GGEN_P2P_NO_API")]
    no_api: bool,
    /// Require the API token for reads too, not only for changes.
    #[arg(long, env = "GGEN_P2P_API_AUTH_READS")]
    api_auth_reads: bool,
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

fn user_data_dir() -> Result<PathBuf, String> {
    dirs::data_dir()
        .map(|d| d.join("ggen-p2p"))
        .ok_or_else(|| "no user data directory on this system; pass --data-dir".to_string())
}

fn data_dir(arg: &DataDirArg) -> Result<PathBuf, String> {
    match &arg.data_dir {
        Some(d) => Ok(d.clone()),
        None => user_data_dir(),
    }
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

/// Runs a verb that talks to the daemon: exit 2 when no daemon answers, 1 on any other
/// failure.
fn client_verb(r: verbs::VerbResult) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(VerbError::NoDaemon(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
        Err(VerbError::Failed(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The verbs that talk to a daemon are short and blocking: no runtime, no logging setup.
    let command = match cli.command {
        Top::P2p(P2p::Status(a)) => return client_verb(verbs::status(&a)),
        Top::P2p(P2p::Stats(a)) => return client_verb(verbs::stats(&a)),
        Top::P2p(P2p::Peers(a)) => return client_verb(verbs::peers(&a)),
        Top::P2p(P2p::PeerInfo { peer, client }) => {
            return client_verb(verbs::peer_info(&client, &peer));
        }
        Top::P2p(P2p::Bootstrap { addrs, client }) => {
            return client_verb(verbs::bootstrap(&client, addrs));
        }
        Top::P2p(P2p::Search { search, client }) => {
            return client_verb(verbs::search(&client, &search));
        }
        Top::P2p(P2p::Info { spec, client }) => return client_verb(verbs::info(&client, &spec)),
        Top::P2p(P2p::Publish { publish, client }) => {
            return client_verb(verbs::publish(&client, &publish));
        }
        Top::P2p(P2p::Install { install, client }) => {
            return client_verb(verbs::install(&client, &install));
        }
        Top::P2p(P2p::Deprecate { id, client }) => {
            return client_verb(verbs::deprecate(&client, &id));
        }
        other => other,
    };
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
        match command {
            Top::P2p(P2p::Start(a)) => start(a).await,
            Top::P2p(P2p::Id(a)) => {
                let dir = data_dir(&a)?;
                let key =
                    load_or_create_identity(&dir.join("identity.key")).map_err(|e| one_line(&e))?;
                println!("{}", key.peer_id());
                Ok(())
            }
            Top::P2p(P2p::Ping(a)) => ping(a).await,
            _ => Err("this command talks to a daemon and ran above".into()),
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

/// Reads a `P2PConfig` from TOML, refusing keys it does not know (a misspelt or moved
/// setting must not be silently ignored).
fn load_config(path: &std::path::Path) -> Result<P2PConfig, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_config(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_config(text: &str) -> Result<P2PConfig, String> {
    let given: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let config: P2PConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    // Every key given must come back when the parsed config is written out again; one that
    // does not was ignored by the parser.
    let understood = toml::Table::try_from(&config)
        .map_err(|e| format!("cannot check the configuration's keys: {e}"))?;
    let mut unknown = Vec::new();
    unknown_keys(&given, &understood, "", &mut unknown);
    if unknown.is_empty() {
        return Ok(config);
    }
    let list: Vec<String> = unknown
        .iter()
        .map(|k| format!("`{k}`{}", moved_hint(k)))
        .collect();
    Err(format!("unknown setting(s): {}", list.join(", ")))
}

fn unknown_keys(given: &toml::Table, understood: &toml::Table, at: &str, out: &mut Vec<String>) {
    for (k, v) in given {
        let path = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match (v, understood.get(k)) {
            (_, None) => out.push(path),
            (toml::Value::Table(g), Some(toml::Value::Table(u))) => unknown_keys(g, u, &path, out),
            (toml::Value::Array(g), Some(toml::Value::Array(u))) => {
                for (i, (g, u)) in g.iter().zip(u).enumerate() {
                    if let (toml::Value::Table(g), toml::Value::Table(u)) = (g, u) {
                        unknown_keys(g, u, &format!("{path}[{i}]"), out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Where the settings of the former node-only configuration file now live.
fn moved_hint(key: &str) -> String {
    let to = match key {
        "kademlia" => "the [dht] table",
        "listen" => "[network] listen_addresses",
        "max_connections" | "connection_timeout" | "idle_timeout" => "the [network] table",
        _ if key.starts_with("kademlia.") => "the [dht] table",
        _ => return String::new(),
    };
    format!(" (the config file is a P2PConfig now; this belongs in {to})")
}

/// `<multiaddr>/p2p/<PeerId>` as a registry bootstrap node.
fn bootstrap_node(addr: &Multiaddr) -> Result<BootstrapNode, String> {
    let peer = addr
        .peer_id()
        .ok_or_else(|| format!("--bootstrap {addr}: expected <multiaddr>/p2p/<PeerId>"))?;
    Ok(BootstrapNode {
        peer_id: peer.to_string(),
        address: addr.without_peer_id().to_string(),
    })
}

/// The configuration `start` runs with: the file (if any), then the flags on top.
fn start_config(args: &StartArgs) -> Result<P2PConfig, String> {
    let mut config = match &args.config {
        Some(path) => load_config(path)?,
        None => P2PConfig::default(),
    };
    if !args.listen.is_empty() {
        config.network.listen_addresses = args.listen.iter().map(|a| a.to_string()).collect();
    }
    for b in &args.bootstrap {
        config.bootstrap.nodes.push(bootstrap_node(b)?);
    }
    if let Some(n) = args.max_connections {
        config.network.max_connections = n;
    }
    if args.no_mdns {
        config.bootstrap.mdns_enabled = false;
    }
    if args.replicate_content {
        config.registry.replicate_content = true;
    }
    match (&args.data.data_dir, &config.registry.data_dir) {
        (Some(d), _) => config.registry.data_dir = Some(d.clone()),
        (None, Some(_)) => {}
        (None, None) => config.registry.data_dir = Some(user_data_dir()?),
    }
    Ok(config)
}

async fn start(args: StartArgs) -> Result<(), String> {
    let config = start_config(&args)?;
    let dir = config.registry.data_dir.clone().unwrap_or_default();
    let mdns = config.bootstrap.mdns_enabled;
    // Listen for the stop signals before anything is printed: a script that reads our
    // addresses and then sends SIGTERM must get a clean stop, not the default action.
    let mut stop = StopSignal::install().map_err(|e| format!("cannot handle signals: {e}"))?;
    let registry = Arc::new(
        P2PRegistryBuilder::new()
            .with_config(config)
            .build()
            .map_err(|e| one_line(&e))?,
    );
    if let Err(e) = registry.start().await {
        let mut msg = one_line(&e);
        if mdns && msg.contains("mDNS") {
            msg.push_str(" (--no-mdns starts the node without mDNS)");
        }
        return Err(msg);
    }
    let me = registry.local_peer_id();
    println!("peer id: {me}");
    for addr in registry.listen_addresses() {
        match addr.parse::<Multiaddr>() {
            Ok(a) => println!("listening on {}", a.with_peer_id(me)),
            Err(_) => println!("listening on {addr}/p2p/{me}"),
        }
    }
    println!("data dir: {}", dir.display());
    let api = if args.no_api {
        None
    } else {
        let config = ApiConfig {
            addr: args.api.unwrap_or(ApiConfig::default().addr),
            auth_reads: args.api_auth_reads,
        };
        match ApiServer::start(registry.clone(), config, Some(&dir)).await {
            Ok(server) => {
                println!("api: http://{}", server.local_addr());
                Some(server)
            }
            Err(e) => {
                let _ = registry.stop().await;
                return Err(format!(
                    "{e} (--api ADDR picks another, --no-api runs without)"
                ));
            }
        }
    };
    use std::io::Write;
    let _ = std::io::stdout().flush();

    let mut events = registry.events();
    let mut status = tokio::time::interval(Duration::from_secs(60));
    status.tick().await;
    loop {
        tokio::select! {
            _ = stop.recv() => break,
            _ = status.tick() => {
                let s = registry.stats().await;
                tracing::info!(
                    connections = s.connected_peers,
                    dht_peers = s.total_peers,
                    packages = s.cached_packages,
                    "status"
                );
            }
            ev = events.recv() => match ev {
                Ok(u) => tracing::info!(package = %u.package_id, update = ?u.update_type, "package update"),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => tracing::debug!("{n} package updates skipped"),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    // No more updates (cannot happen while the registry lives): wait for
                    // the signal alone.
                    stop.recv().await;
                    break;
                }
            },
        }
    }
    tracing::info!("shutting down");
    if let Some(api) = api {
        api.shutdown().await;
    }
    registry.stop().await.map_err(|e| one_line(&e))?;
    Ok(())
}

/// Ctrl-C and (on Unix) SIGTERM, registered at once so none is missed.
struct StopSignal {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl StopSignal {
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.int.recv() => {}
                _ = self.term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_is_a_p2p_config() {
        let c = parse_config(
            "[network]\nmax_connections = 50\nlisten_addresses = [\"/ip4/127.0.0.1/tcp/0\"]\n\
             [bootstrap]\nmdns_enabled = false\n\
             [[bootstrap.nodes]]\npeer_id = \"12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq\"\n\
             address = \"/ip4/127.0.0.1/tcp/4001\"\n\
             [dht]\nk = 16\n[gossipsub]\nmesh_n = 5\n\
             [registry]\nreplicate_content = true\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        assert_eq!(c.network.max_connections, 50);
        assert!(!c.bootstrap.mdns_enabled);
        assert_eq!(c.bootstrap.nodes.len(), 1);
        assert_eq!(c.dht.k, 16);
        assert_eq!(c.gossipsub.mesh_n, 5);
        assert!(c.registry.replicate_content);
        assert_eq!(c.registry.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(parse_config("").unwrap(), P2PConfig::default());
    }

    #[test]
    fn unknown_and_moved_settings_are_refused_by_name() {
        let e = parse_config("[network]\nmax_conections = 5\n").unwrap_err();
        assert!(e.contains("`network.max_conections`"), "{e}");
        let e = parse_config("max_connections = 5\n[kademlia]\nk = 16\n").unwrap_err();
        assert!(e.contains("`kademlia`") && e.contains("[dht]"), "{e}");
        assert!(
            e.contains("`max_connections`") && e.contains("[network]"),
            "{e}"
        );
        let e = parse_config(
            "[[bootstrap.nodes]]\npeer_id = \"x\"\naddress = \"/ip4/127.0.0.1/tcp/1\"\nport = 1\n",
        )
        .unwrap_err();
        assert!(e.contains("`bootstrap.nodes[0].port`"), "{e}");
        assert!(parse_config("[network]\nmax_connections = \"many\"\n").is_err());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[network]\nmax_connections = 50\n[registry]\ndata_dir = \"/from/file\"\n",
        )
        .unwrap();
        let peer = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq";
        let cli = Cli::try_parse_from([
            "ggen",
            "p2p",
            "start",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--bootstrap",
            &format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}"),
            "--max-connections",
            "7",
            "--no-mdns",
            "--replicate-content",
        ])
        .unwrap();
        let Top::P2p(P2p::Start(args)) = cli.command else {
            panic!("not start")
        };
        let c = start_config(&args).unwrap();
        assert_eq!(c.network.listen_addresses, vec!["/ip4/127.0.0.1/tcp/0"]);
        assert_eq!(c.network.max_connections, 7);
        assert!(!c.bootstrap.mdns_enabled && c.registry.replicate_content);
        assert_eq!(
            c.bootstrap.nodes,
            vec![BootstrapNode {
                peer_id: peer.to_string(),
                address: "/ip4/127.0.0.1/tcp/4001".to_string(),
            }]
        );
        assert_eq!(c.registry.data_dir, Some(PathBuf::from("/from/file")));
        // A bootstrap address must name its peer.
        let cli = Cli::try_parse_from([
            "ggen",
            "p2p",
            "start",
            "--bootstrap",
            "/ip4/127.0.0.1/tcp/4001",
            "--data-dir",
            "/d",
        ])
        .unwrap();
        let Top::P2p(P2p::Start(args)) = cli.command else {
            panic!("not start")
        };
        assert!(start_config(&args).unwrap_err().contains("/p2p/<PeerId>"));
    }
}
