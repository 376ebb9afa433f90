//! The seed's `p2p-marketplace` example: a long-running seeder node, and one-shot commands
//! that join the network through it to publish, search, get and print stats, each in its own
//! process.
//!
//! ```text
//! # terminal 1: the seeder (prints its address; stays up until Ctrl-C or SIGTERM)
//! cargo run --example p2p-marketplace -- start
//! #   peer id: 12D3KooW…
//! #   bootstrap address: /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…
//!
//! # terminal 2: commands join through it (--bootstrap, or the environment variable)
//! export GGEN_P2P_BOOTSTRAP=/ip4/127.0.0.1/tcp/4001/p2p/12D3KooW…
//! cargo run --example p2p-marketplace -- publish --name my-package --version 1.0.0 \
//!     --category web --tags rust,web --file ./pkg.tar
//! cargo run --example p2p-marketplace -- search rust --category web
//! cargo run --example p2p-marketplace -- get my-package --output ./fetched.tar
//! cargo run --example p2p-marketplace -- stats
//! ```
//!
//! - Bootstrap: every command takes `--bootstrap <multiaddr>/p2p/<PeerId>` (repeatable);
//!   without it, the whitespace- or comma-separated addresses in `GGEN_P2P_BOOTSTRAP`.
//!   `publish`, `search`, `get` and `stats` need at least one; `start` may run alone (the
//!   first node) or join others.
//! - Each command runs its own short-lived node on `127.0.0.1` (a random port; mDNS off:
//!   peers are found through the bootstrap nodes), waits until it is connected and its
//!   catalogue is synced with its peers, does its work and stops.
//! - `start` is a seeder: it keeps the whole catalogue and fetches, keeps and serves every
//!   package's content (`registry.replicate_content`), so what a short-lived `publish`
//!   published stays searchable and fetchable after that process exits. `publish` waits
//!   until another node holds the record (and the content) and fails if none does.
//! - Data directories (`--data-dir DIR`, one per running process: a directory is locked
//!   while a node uses it): `start` keeps its store, identity and content in memory unless
//!   given one (then it survives restarts). `publish` signs with the identity in `DIR`
//!   (default: `publisher.key` in the user's data directory, e.g.
//!   `~/.local/share/ggen-p2p-marketplace/`), because a package name belongs to the first
//!   key that published it and later versions must come from the same key. `search`, `get`
//!   and `stats` need no identity: they use a fresh one in memory unless given `--data-dir`.
//! - `get` exits with status 1 when the package is not found; `--json` prints the whole
//!   package record.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ggen_p2p::{
    BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Query, Registry,
};

/// The environment variable read when no `--bootstrap` is given.
const BOOTSTRAP_ENV: &str = "GGEN_P2P_BOOTSTRAP";
/// How long a command waits to connect and sync.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `publish` waits for another node to hold what it published.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(about = "A decentralized package marketplace on ggen-p2p")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes.
#[derive(Args)]
struct NodeArgs {
    /// A node to join, `<multiaddr>/p2p/<PeerId>` (repeatable) [default: $GGEN_P2P_BOOTSTRAP].
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// This process's store, identity and content (one directory per running process).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a seeder node until Ctrl-C or SIGTERM.
    Start {
        /// Listen address (repeatable).
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/4001")]
        listen: Vec<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Publish a package (and its content, with --file).
    Publish {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        #[arg(long, default_value = "uncategorized")]
        category: String,
        /// Comma-separated.
        #[arg(long, default_value = "")]
        tags: String,
        #[arg(long, default_value = "")]
        description: String,
        /// Content to publish with the package.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Search the network's catalogue.
    Search {
        #[command(flatten)]
        node: NodeArgs,
        keywords: Vec<String>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Get a package (`name@version`, or `name` for its latest version).
    Get {
        #[command(flatten)]
        node: NodeArgs,
        id: String,
        /// Download the content and write it here.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print the whole package record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print network statistics (JSON).
    Stats {
        #[command(flatten)]
        node: NodeArgs,
    },
}

type BoxError = Box<dyn std::error::Error>;

/// The bootstrap addresses: the flags, else `GGEN_P2P_BOOTSTRAP`.
fn bootstrap_addresses(flags: &[String]) -> Vec<String> {
    if !flags.is_empty() {
        return flags.to_vec();
    }
    std::env::var(BOOTSTRAP_ENV)
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn bootstrap_nodes(addrs: &[String]) -> Result<Vec<BootstrapNode>, String> {
    addrs
        .iter()
        .map(|a| {
            let (addr, id) = a
                .rsplit_once("/p2p/")
                .ok_or_else(|| format!("{a}: expected <multiaddr>/p2p/<PeerId>"))?;
            Ok(BootstrapNode {
                peer_id: id.to_string(),
                address: addr.to_string(),
            })
        })
        .collect()
}

/// The configuration of every node here: mDNS off, the given bootstrap nodes and data dir.
fn config(node: &NodeArgs, listen: Vec<String>) -> Result<P2PConfig, String> {
    let mut config = P2PConfig::default();
    config.network.listen_addresses = listen;
    config.bootstrap.mdns_enabled = false;
    config.bootstrap.nodes = bootstrap_nodes(&bootstrap_addresses(&node.bootstrap))?;
    config.registry.data_dir = node.data_dir.clone();
    Ok(config)
}

/// A short-lived node joined to the bootstrap nodes, its catalogue synced.
async fn join(mut config: P2PConfig) -> Result<P2PRegistry, BoxError> {
    if config.bootstrap.nodes.is_empty() {
        return Err(format!(
            "no node to join: pass --bootstrap <multiaddr>/p2p/<PeerId> or set {BOOTSTRAP_ENV}"
        )
        .into());
    }
    // Short-lived: redial an unreachable bootstrap node quickly.
    config.bootstrap.retry_interval = 1;
    let registry = P2PRegistryBuilder::new().with_config(config).build()?;
    registry.start().await?;
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    while registry.stats().await.connected_peers == 0 {
        if tokio::time::Instant::now() >= deadline {
            registry.stop().await?;
            return Err(
                format!("could not reach any bootstrap node within {JOIN_TIMEOUT:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !registry.wait_synced(JOIN_TIMEOUT).await {
        eprintln!("warning: the catalogue is not synced with every peer; results may be partial");
    }
    Ok(registry)
}

/// Runs `work` on a joined node, then stops the node whatever the outcome.
async fn with_node<T>(
    config: P2PConfig,
    work: impl AsyncFnOnce(&P2PRegistry) -> Result<T, BoxError>,
) -> Result<T, BoxError> {
    let registry = join(config).await?;
    let result = work(&registry).await;
    registry.stop().await?;
    result
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Start { listen, node } => start(config(&node, listen)?).await?,
        Command::Publish {
            node,
            name,
            version,
            category,
            tags,
            description,
            file,
        } => {
            let mut config = config(&node, vec!["/ip4/127.0.0.1/tcp/0".into()])?;
            if node.data_dir.is_none() {
                // The name belongs to the key that first published it: keep using one.
                let dir = dirs::data_dir()
                    .ok_or("no user data directory on this system; pass --data-dir")?
                    .join("ggen-p2p-marketplace");
                config.security.identity_path = Some(dir.join("publisher.key"));
            }
            let content = file.map(std::fs::read).transpose()?;
            let mut package = Package::new(name, version);
            package.category = category;
            package.tags = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            package.description = description;
            with_node(config, async |registry| {
                let published = match content {
                    Some(bytes) => registry.publish_with_content(package, bytes).await?,
                    None => {
                        registry.publish(package.clone()).await?;
                        package
                    }
                };
                let id = published.canonical_id();
                // Stay up (serving the content) until another node holds a copy.
                if !registry.wait_replicated(&id, REPLICATION_TIMEOUT).await {
                    return Err(format!(
                        "no other node holds {id} after {REPLICATION_TIMEOUT:?}; it would be \
                         lost when this process exits (is the bootstrap node a seeder?)"
                    )
                    .into());
                }
                println!("published {id}");
                if let Some(h) = &published.content_hash {
                    println!("content sha256 {h} ({} bytes)", published.size);
                }
                Ok(())
            })
            .await?;
        }
        Command::Search {
            node,
            keywords,
            category,
            limit,
        } => {
            let mut query = Query::new(keywords).with_limit(limit);
            if let Some(c) = category {
                query = query.with_category(c);
            }
            let config = config(&node, vec!["/ip4/127.0.0.1/tcp/0".into()])?;
            let results = with_node(config, async |r| Ok(r.search(&query).await?)).await?;
            if results.is_empty() {
                println!("no packages found");
            }
            for r in results {
                println!(
                    "{} v{} (score: {:.3}, providers: {})",
                    r.package.name, r.package.version, r.score, r.peer_count
                );
            }
        }
        Command::Get {
            node,
            id,
            output,
            json,
        } => {
            let config = config(&node, vec!["/ip4/127.0.0.1/tcp/0".into()])?;
            let found = with_node(config, async |registry| {
                let Some(p) = registry.get(&id).await? else {
                    return Ok(false);
                };
                if json {
                    println!("{}", serde_json::to_string_pretty(&p)?);
                } else {
                    println!("{} v{}", p.name, p.version);
                    if !p.description.is_empty() {
                        println!("description: {}", p.description);
                    }
                    println!("category: {}", p.category);
                    println!("tags: {}", p.tags.join(","));
                    if let Some(h) = &p.content_hash {
                        println!("content sha256 {h} ({} bytes)", p.size);
                    }
                }
                if let Some(out) = &output {
                    let bytes = registry.fetch_content(&p.id).await?;
                    std::fs::write(out, &bytes)?;
                    println!("wrote {} bytes to {}", bytes.len(), out.display());
                }
                Ok(true)
            })
            .await?;
            if !found {
                return Err(format!("{id}: not found").into());
            }
        }
        Command::Stats { node } => {
            let config = config(&node, vec!["/ip4/127.0.0.1/tcp/0".into()])?;
            let stats = with_node(config, async |r| Ok(r.stats().await)).await?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
    }
    Ok(())
}

/// The seeder: keeps the catalogue and every package's content, until Ctrl-C or SIGTERM.
async fn start(mut config: P2PConfig) -> Result<(), BoxError> {
    config.registry.replicate_content = true;
    let in_memory = config.registry.data_dir.is_none();
    // Listen for the stop signals before printing the address, so that a script that reads
    // it and then sends SIGTERM gets a clean stop.
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let registry = P2PRegistryBuilder::new().with_config(config).build()?;
    registry.start().await?;
    let me = registry.local_peer_id();
    println!("peer id: {me}");
    let addrs: Vec<String> = registry
        .listen_addresses()
        .iter()
        .map(|a| format!("{a}/p2p/{me}"))
        .collect();
    for a in &addrs {
        println!("bootstrap address: {a}");
    }
    if let Some(a) = addrs.first() {
        println!("join with: --bootstrap {a}   (or: export {BOOTSTRAP_ENV}={a})");
    }
    if in_memory {
        println!("data: in memory (pass --data-dir DIR to keep it across restarts)");
    }
    use std::io::Write;
    std::io::stdout().flush()?;
    let mut events = registry.events();
    loop {
        #[cfg(unix)]
        let terminated = term.recv();
        #[cfg(not(unix))]
        let terminated = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = terminated => break,
            e = events.recv() => match e {
                Ok(u) => {
                    println!("{:?}: {}", u.update_type, u.package_id);
                    std::io::stdout().flush()?;
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
    registry.stop().await?;
    Ok(())
}
