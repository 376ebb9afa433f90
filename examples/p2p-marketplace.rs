//! The seed's `p2p-marketplace` example: a registry node and one-shot commands that join the
//! network to publish, search, get and print stats.
//!
//! ```text
//! # terminal 1: a long-running node (prints its bootstrap address)
//! cargo run --example p2p-marketplace -- start --listen /ip4/127.0.0.1/tcp/4001 --data-dir /tmp/mk1
//! # terminal 2: commands join through it
//! cargo run --example p2p-marketplace -- publish --bootstrap <addr printed above> \
//!     --name my-package --version 1.0.0 --category web --tags rust,web --file ./pkg.tar
//! cargo run --example p2p-marketplace -- search --bootstrap <addr> rust --category web
//! cargo run --example p2p-marketplace -- get --bootstrap <addr> my-package
//! cargo run --example p2p-marketplace -- stats --bootstrap <addr>
//! ```
//!
//! A command starts its own short-lived node (on 127.0.0.1, a random port, mDNS off),
//! connects to the bootstrap node, waits for the catalogue to sync, does its work, and stops.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ggen_p2p::{
    BootstrapNode, P2PConfig, P2PRegistry, P2PRegistryBuilder, Package, Query, Registry,
};

#[derive(Parser)]
#[command(about = "A decentralized package marketplace on ggen-p2p")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a registry node until Ctrl-C.
    Start {
        /// Listen address (repeatable).
        #[arg(long, default_value = "/ip4/127.0.0.1/tcp/4001")]
        listen: Vec<String>,
        /// Store, identity and content.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Another node to join, `<multiaddr>/p2p/<PeerId>`.
        #[arg(long)]
        bootstrap: Vec<String>,
    },
    /// Publish a package.
    Publish {
        #[arg(long)]
        bootstrap: Vec<String>,
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
        /// Identity of the publisher (the name belongs to it).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Search the network.
    Search {
        #[arg(long)]
        bootstrap: Vec<String>,
        keywords: Vec<String>,
        #[arg(long)]
        category: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Get a package (`name@version` or `name`), optionally its content.
    Get {
        #[arg(long)]
        bootstrap: Vec<String>,
        id: String,
        /// Write the content here.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Print network statistics.
    Stats {
        #[arg(long)]
        bootstrap: Vec<String>,
    },
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

/// A short-lived node joined to `bootstrap`, its catalogue synced.
async fn join(
    bootstrap: &[String],
    data_dir: Option<PathBuf>,
) -> Result<P2PRegistry, Box<dyn std::error::Error>> {
    let mut config = P2PConfig::default();
    config.network.listen_addresses = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.bootstrap.mdns_enabled = false;
    config.bootstrap.nodes = bootstrap_nodes(bootstrap)?;
    config.registry.data_dir = data_dir;
    let registry = P2PRegistryBuilder::new().with_config(config).build()?;
    registry.start().await?;
    // Connected, then a moment for the first sync with each new peer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while registry.stats().await.connected_peers == 0 {
        if tokio::time::Instant::now() > deadline {
            return Err("could not reach any bootstrap node".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    registry.wait_synced(Duration::from_secs(10)).await;
    Ok(registry)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Cli::parse().command {
        Command::Start {
            listen,
            data_dir,
            bootstrap,
        } => {
            let mut config = P2PConfig::default();
            config.network.listen_addresses = listen;
            config.bootstrap.nodes = bootstrap_nodes(&bootstrap)?;
            config.bootstrap.mdns_enabled = false;
            config.registry.data_dir = data_dir;
            // The long-running node keeps a copy of every package's content, so content
            // published by a one-shot command stays available after it exits.
            config.registry.replicate_content = true;
            let registry = P2PRegistryBuilder::new().with_config(config).build()?;
            registry.start().await?;
            println!("peer id: {}", registry.local_peer_id());
            for a in registry.listen_addresses() {
                println!("bootstrap address: {a}/p2p/{}", registry.local_peer_id());
            }
            let mut events = registry.events();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    e = events.recv() => if let Ok(u) = e {
                        println!("{:?}: {}", u.update_type, u.package_id);
                    },
                }
            }
            registry.stop().await?;
        }
        Command::Publish {
            bootstrap,
            name,
            version,
            category,
            tags,
            description,
            file,
            data_dir,
        } => {
            let registry = join(&bootstrap, data_dir).await?;
            let mut package = Package::new(name, version);
            package.category = category;
            package.tags = tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
            package.description = description;
            let published = match file {
                Some(f) => {
                    let bytes = std::fs::read(&f)?;
                    let p = registry.publish_with_content(package, bytes).await?;
                    // Serve the content until another node holds a copy.
                    registry
                        .wait_replicated(&p.id, Duration::from_secs(30))
                        .await;
                    p
                }
                None => {
                    registry.publish(package.clone()).await?;
                    registry
                        .wait_replicated(&package.canonical_id(), Duration::from_secs(10))
                        .await;
                    package
                }
            };
            println!("published {}", published.canonical_id());
            if let Some(h) = &published.content_hash {
                println!("content sha256 {h} ({} bytes)", published.size);
            }
            registry.stop().await?;
        }
        Command::Search {
            bootstrap,
            keywords,
            category,
            limit,
        } => {
            let registry = join(&bootstrap, None).await?;
            let mut query = Query::new(keywords).with_limit(limit);
            if let Some(c) = category {
                query = query.with_category(c);
            }
            for r in registry.search(&query).await? {
                println!(
                    "{} v{} (score: {:.3}, providers: {})",
                    r.package.name, r.package.version, r.score, r.peer_count
                );
            }
            registry.stop().await?;
        }
        Command::Get {
            bootstrap,
            id,
            output,
        } => {
            let registry = join(&bootstrap, None).await?;
            match registry.get(&id).await? {
                None => println!("{id}: not found"),
                Some(p) => {
                    println!("{}", serde_json::to_string_pretty(&p)?);
                    if let Some(out) = output {
                        let bytes = registry.fetch_content(&p.id).await?;
                        std::fs::write(&out, &bytes)?;
                        println!("wrote {} bytes to {}", bytes.len(), out.display());
                    }
                }
            }
            registry.stop().await?;
        }
        Command::Stats { bootstrap } => {
            let registry = join(&bootstrap, None).await?;
            println!("{}", serde_json::to_string_pretty(&registry.stats().await)?);
            registry.stop().await?;
        }
    }
    Ok(())
}
