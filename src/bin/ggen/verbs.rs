//! The CLI verbs that talk to a running daemon through its control API.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ggen_p2p::daemon::api::{
    BootstrapReply, BootstrapRequest, DeprecateRequest, Info, Peer, Published, Record, Status,
};
use ggen_p2p::daemon::client::{Client, ClientError};
use ggen_p2p::gpack::{self, Manifest, UnpackLimits};
use ggen_p2p::{NetworkStats, Package, SearchResult};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How a verb prints its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON, stable for scripts.
    Json,
}

/// Where the daemon is and how to print.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The daemon's data directory, where it wrote its API address and token
    /// [default: the user's data directory, e.g. ~/.local/share/ggen-p2p].
    #[arg(long, value_name = "DIR", env = "GGEN_P2P_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The daemon's API address (host:port), instead of the one in the data directory.
    #[arg(long, value_name = "ADDR", env = "GGEN_P2P_API")]
    pub api: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// A verb's failure: no daemon (exit 2) or anything else (exit 1).
#[derive(Debug)]
pub enum VerbError {
    /// No daemon answered.
    NoDaemon(String),
    /// Any other failure, one line.
    Failed(String),
}

impl From<ClientError> for VerbError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NoDaemon { .. } => VerbError::NoDaemon(e.to_string()),
            other => VerbError::Failed(other.to_string()),
        }
    }
}

impl From<String> for VerbError {
    fn from(e: String) -> Self {
        VerbError::Failed(e)
    }
}

/// Verb result.
pub type VerbResult = Result<(), VerbError>;

impl ClientArgs {
    /// The data directory to use.
    pub fn dir(&self) -> Result<PathBuf, VerbError> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => ggen_p2p::daemon::client::default_data_dir().ok_or_else(|| {
                VerbError::Failed("no user data directory on this system; pass --data-dir".into())
            }),
        }
    }

    /// Connects to the daemon.
    pub fn connect(&self) -> Result<Client, VerbError> {
        Ok(Client::locate(&self.dir()?, self.api.as_deref())?)
    }
}

fn json<T: Serialize>(v: &T) -> VerbResult {
    let s = serde_json::to_string_pretty(v).map_err(|e| VerbError::Failed(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// Prints rows as aligned columns under a header.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

/// `ggen p2p status`.
pub fn status(a: &ClientArgs) -> VerbResult {
    let c = a.connect()?;
    let s: Status = c.get("/status", &[])?;
    if a.format == Format::Json {
        return json(&s);
    }
    println!("peer id:        {}", s.peer_id);
    println!("uptime:         {} s", s.uptime_s);
    for l in &s.listen_addresses {
        println!("listening on:   {l}");
    }
    println!("peers:          {}", s.peers);
    println!("catalogue:      {} versions", s.catalogue_size);
    println!("packages held:  {}", s.packages);
    println!("content held:   {} blobs", s.content_held);
    println!("store:          {} bytes", s.store_bytes);
    if let Some(d) = &s.data_dir {
        println!("data dir:       {d}");
    }
    Ok(())
}

/// `ggen p2p stats`.
pub fn stats(a: &ClientArgs) -> VerbResult {
    let c = a.connect()?;
    let s: NetworkStats = c.get("/stats", &[])?;
    if a.format == Format::Json {
        return json(&s);
    }
    let rows = vec![
        vec!["connected peers".into(), s.connected_peers.to_string()],
        vec!["known peers".into(), s.total_peers.to_string()],
        vec!["packages held".into(), s.cached_packages.to_string()],
        vec!["catalogue size".into(), s.catalogue_size.to_string()],
        vec!["provider records".into(), s.provider_records.to_string()],
        vec!["gossip topics".into(), s.gossip_topics.to_string()],
        vec!["dht records".into(), s.dht_records.to_string()],
        vec![
            "dht provider records".into(),
            s.dht_provider_records.to_string(),
        ],
        vec![
            "dht query success".into(),
            format!("{:.3}", s.dht_query_success_rate),
        ],
        vec!["cache hit rate".into(), format!("{:.3}", s.cache_hit_rate)],
        vec![
            "gossip delivery rate".into(),
            format!("{:.3}", s.gossip_delivery_rate),
        ],
        vec![
            "request latency p50 ms".into(),
            format!("{:.2}", s.request_latency_p50_ms),
        ],
        vec![
            "request latency p99 ms".into(),
            format!("{:.2}", s.request_latency_p99_ms),
        ],
    ];
    table(&["stat", "value"], &rows);
    Ok(())
}

fn peer_rows(peers: &[Peer]) -> Vec<Vec<String>> {
    peers
        .iter()
        .map(|p| {
            vec![
                p.peer.to_string(),
                p.address.clone(),
                p.direction.clone(),
                p.transport.clone(),
                p.rtt_ms.map_or("-".into(), |r| format!("{r:.1} ms")),
                p.reputation.map_or("-".into(), |r| {
                    format!("{}/{}/{}", r.successes, r.failures, r.bad_content)
                }),
                p.discovered_by.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

const PEER_HEADER: [&str; 7] = [
    "peer",
    "address",
    "direction",
    "transport",
    "rtt",
    "ok/failed/bad",
    "discovered by",
];

/// `ggen p2p peers`.
pub fn peers(a: &ClientArgs) -> VerbResult {
    let c = a.connect()?;
    let peers: Vec<Peer> = c.get("/peers", &[])?;
    if a.format == Format::Json {
        return json(&peers);
    }
    table(&PEER_HEADER, &peer_rows(&peers));
    Ok(())
}

/// `ggen p2p peer-info PEER`.
pub fn peer_info(a: &ClientArgs, peer: &str) -> VerbResult {
    let c = a.connect()?;
    let p: Peer = c.get(&format!("/peers/{peer}"), &[])?;
    if a.format == Format::Json {
        return json(&p);
    }
    table(&PEER_HEADER, &peer_rows(std::slice::from_ref(&p)));
    Ok(())
}

/// `ggen p2p bootstrap ADDR…`.
pub fn bootstrap(a: &ClientArgs, addrs: Vec<String>) -> VerbResult {
    let c = a.connect()?;
    let r: BootstrapReply = c.post("/bootstrap", &BootstrapRequest { addrs })?;
    if a.format == Format::Json {
        return json(&r);
    }
    for added in &r.added {
        println!("added {added}");
    }
    Ok(())
}

/// `ggen p2p search` filters.
#[derive(Args, Clone, Debug)]
pub struct SearchArgs {
    /// Words to look for.
    pub query: Vec<String>,
    /// Only this category.
    #[arg(long)]
    pub category: Option<String>,
    /// Only packages with this tag (repeat for several).
    #[arg(long)]
    pub tag: Vec<String>,
    /// At most this many results.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Only packages downloaded at least this often.
    #[arg(long)]
    pub min_downloads: Option<u64>,
}

/// `ggen p2p search`.
pub fn search(a: &ClientArgs, s: &SearchArgs) -> VerbResult {
    let c = a.connect()?;
    let mut q: Vec<(&str, String)> = vec![("q", s.query.join(" ")), ("limit", s.limit.to_string())];
    if let Some(cat) = &s.category {
        q.push(("category", cat.clone()));
    }
    for t in &s.tag {
        q.push(("tag", t.clone()));
    }
    if let Some(m) = s.min_downloads {
        q.push(("min_downloads", m.to_string()));
    }
    let hits: Vec<SearchResult> = c.get("/search", &q)?;
    if a.format == Format::Json {
        return json(&hits);
    }
    let rows: Vec<Vec<String>> = hits
        .iter()
        .map(|h| {
            vec![
                h.package.name.clone(),
                h.package.version.clone(),
                h.package.category.clone(),
                h.peer_count.to_string(),
                h.package.description.chars().take(60).collect(),
            ]
        })
        .collect();
    table(
        &["name", "version", "category", "providers", "description"],
        &rows,
    );
    Ok(())
}

/// Splits `NAME[@VERSION]`.
pub fn split_spec(spec: &str) -> (String, Option<String>) {
    match spec.split_once('@') {
        Some((n, v)) if !v.is_empty() => (n.to_string(), Some(v.to_string())),
        _ => (spec.trim_end_matches('@').to_string(), None),
    }
}

/// `ggen p2p info NAME[@VERSION]`.
pub fn info(a: &ClientArgs, spec: &str) -> VerbResult {
    let c = a.connect()?;
    let (name, version) = split_spec(spec);
    let q: Vec<(&str, String)> = version.map(|v| ("version", v)).into_iter().collect();
    let i: Info = c.get(&format!("/info/{name}"), &q)?;
    if a.format == Format::Json {
        return json(&i);
    }
    println!("name:        {}", i.name);
    println!(
        "owner:       {}{}",
        i.owner,
        if i.settled { "" } else { " (not settled yet)" }
    );
    for m in &i.maintainers {
        println!("maintainer:  {m}");
    }
    let rows: Vec<Vec<String>> = i
        .versions
        .iter()
        .map(|v| {
            vec![
                v.version.clone(),
                v.content_hash.clone().unwrap_or_else(|| "-".into()),
                v.size.to_string(),
                v.providers.len().to_string(),
                if v.deprecated { "deprecated" } else { "" }.to_string(),
            ]
        })
        .collect();
    table(&["version", "sha256", "size", "providers", ""], &rows);
    Ok(())
}

/// `ggen p2p deprecate NAME@VERSION`.
pub fn deprecate(a: &ClientArgs, id: &str) -> VerbResult {
    let c = a.connect()?;
    let p: Package = c.post("/deprecate", &DeprecateRequest { id: id.to_string() })?;
    if a.format == Format::Json {
        return json(&p);
    }
    println!("deprecated {}", p.id);
    Ok(())
}

/// `ggen p2p publish` arguments.
#[derive(Args, Clone, Debug)]
pub struct PublishArgs {
    /// A directory holding `gpack.toml` (packed as a deterministic tar.gz), or a tar.gz
    /// with `gpack.toml` at its root.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Check and pack, print what would be published, and stop (no daemon needed).
    #[arg(long)]
    pub dry_run: bool,
}

/// What `publish --dry-run` prints.
#[derive(Serialize)]
struct DryRun {
    id: String,
    content_hash: String,
    size: u64,
    files: usize,
    package: Package,
}

/// The manifest and archive bytes of what `path` names.
fn packed(path: &std::path::Path) -> Result<(Manifest, Vec<u8>, usize), VerbError> {
    let fail = |e: gpack::GpackError| VerbError::Failed(e.to_string());
    if path.is_dir() {
        let manifest = Manifest::load(path).map_err(fail)?;
        let p = gpack::pack_dir(path).map_err(fail)?;
        return Ok((manifest, p.bytes, p.files));
    }
    let bytes =
        std::fs::read(path).map_err(|e| VerbError::Failed(format!("{}: {e}", path.display())))?;
    // Unpacked (safely) only to read its manifest and check that it installs.
    let scratch = tempfile::tempdir().map_err(|e| VerbError::Failed(e.to_string()))?;
    let into = scratch.path().join("pkg");
    let report = gpack::unpack(&bytes, &into, &UnpackLimits::default()).map_err(fail)?;
    let manifest = Manifest::load(&into).map_err(fail)?;
    Ok((manifest, bytes, report.files))
}

/// `ggen p2p publish [DIR|FILE]`.
pub fn publish(a: &ClientArgs, p: &PublishArgs) -> VerbResult {
    let (manifest, bytes, files) = packed(&p.path)?;
    let mut package = manifest.to_package();
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if p.dry_run {
        package.content_hash = Some(hash.clone());
        package.size = bytes.len() as u64;
        let d = DryRun {
            id: package.id.clone(),
            content_hash: hash,
            size: bytes.len() as u64,
            files,
            package,
        };
        if a.format == Format::Json {
            return json(&d);
        }
        println!(
            "would publish {} ({files} files, {} bytes, sha256 {})",
            d.id, d.size, d.content_hash
        );
        return Ok(());
    }
    let c = a.connect()?;
    let manifest_json =
        serde_json::to_string(&package).map_err(|e| VerbError::Failed(e.to_string()))?;
    let r: Published = c.post_bytes("/publish", &[("manifest", manifest_json)], &bytes)?;
    if r.content_hash.as_deref() != Some(hash.as_str()) {
        return Err(VerbError::Failed(format!(
            "the daemon stored content {:?}, not the archive's sha256 {hash}",
            r.content_hash
        )));
    }
    if a.format == Format::Json {
        return json(&r);
    }
    println!(
        "published {} ({} bytes, sha256 {}) as {}",
        r.id, r.size, hash, r.publisher
    );
    Ok(())
}

/// `ggen p2p install` arguments.
#[derive(Args, Clone, Debug)]
pub struct InstallArgs {
    /// NAME or NAME@VERSION (the highest version that is not deprecated by default).
    pub spec: String,
    /// Where to unpack it (must not exist, or be empty) [default: ./NAME].
    #[arg(long, value_name = "DIR")]
    pub into: Option<PathBuf>,
}

/// What `install` prints as JSON.
#[derive(Serialize)]
struct Installed {
    id: String,
    content_hash: String,
    size: u64,
    files: usize,
    into: String,
    publisher: String,
}

/// `ggen p2p install NAME[@VERSION] [--into DIR]`.
pub fn install(a: &ClientArgs, i: &InstallArgs) -> VerbResult {
    let c = a.connect()?;
    let (name, version) = split_spec(&i.spec);
    let q: Vec<(&str, String)> = version
        .clone()
        .map(|v| ("version", v))
        .into_iter()
        .collect();
    let info: Info = c.get(&format!("/info/{name}"), &q)?;
    let chosen = if version.is_some() {
        info.versions.last()
    } else {
        info.versions
            .iter()
            .rev()
            .find(|v| !v.deprecated)
            .or(info.versions.last())
    };
    let Some(v) = chosen else {
        return Err(VerbError::Failed(format!("no version of {name} is known")));
    };
    let id = v.id.clone();
    // The record, checked here: its signature, and that its key may publish the name.
    let record: Record = c.get(&format!("/record/{id}"), &[])?;
    record
        .verify(chrono::Utc::now())
        .map_err(|e| VerbError::Failed(format!("{id}: {e}")))?;
    let publisher = record.publisher.to_string();
    if publisher != info.owner && !info.maintainers.contains(&publisher) {
        return Err(VerbError::Failed(format!(
            "{id} is signed by {publisher}, who is neither the owner nor a maintainer of {name}"
        )));
    }
    let Some(expected) = record.package.content_hash.clone() else {
        return Err(VerbError::Failed(format!("{id} has no content to install")));
    };
    let limits = UnpackLimits::default();
    let bar = indicatif::ProgressBar::new(record.package.size);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(id.clone());
    let bytes = c.get_bytes(
        &format!("/content/{id}"),
        limits.max_stream_bytes(),
        |n, _| bar.set_position(n),
    )?;
    bar.finish_and_clear();
    let got: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != expected {
        return Err(VerbError::Failed(format!(
            "{id}: the content's sha256 is {got}, the signed record says {expected}"
        )));
    }
    let into = i.into.clone().unwrap_or_else(|| PathBuf::from(&name));
    let report =
        gpack::unpack(&bytes, &into, &limits).map_err(|e| VerbError::Failed(e.to_string()))?;
    let out = Installed {
        id,
        content_hash: got,
        size: bytes.len() as u64,
        files: report.files,
        into: into.display().to_string(),
        publisher,
    };
    if a.format == Format::Json {
        return json(&out);
    }
    println!(
        "installed {} into {} ({} files, sha256 {})",
        out.id, out.into, out.files, out.content_hash
    );
    Ok(())
}
