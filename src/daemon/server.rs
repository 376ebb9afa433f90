//! The control API server: routes, authentication, and the files that let clients find it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query as UrlQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::Stream;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::api::{
    BootstrapReply, BootstrapRequest, DeprecateRequest, ErrorBody, Info, Published, Status,
    VersionInfo,
};
use super::{API_ADDR_FILE, API_PREFIX, API_TOKEN_FILE};
use crate::registry::{P2PRegistry, Package, Query, Registry, RegistryError};
use crate::rpc::content::ContentHash;
use crate::{Multiaddr, PeerId};

/// Largest archive `POST /api/v0/publish` takes.
pub const MAX_UPLOAD_BYTES: usize = 256 << 20;
/// How long a ping may take when listing peers.
const PEER_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How the API is served.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// Where to listen (`127.0.0.1:5001` by default; port 0 picks a free one).
    pub addr: SocketAddr,
    /// Require the token for reads too (`GET`), not only for changes.
    pub auth_reads: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 5001)),
            auth_reads: false,
        }
    }
}

struct AppState {
    registry: Arc<P2PRegistry>,
    token: String,
    auth_reads: bool,
    started: Instant,
    data_dir: Option<PathBuf>,
}

/// A running API server. [`ApiServer::shutdown`] stops it and removes its address file.
pub struct ApiServer {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    addr_file: Option<PathBuf>,
}

impl ApiServer {
    /// Binds `config.addr`, writes the address and a fresh token into `data_dir` (when
    /// given), and serves the API for `registry` until [`ApiServer::shutdown`].
    pub async fn start(
        registry: Arc<P2PRegistry>,
        config: ApiConfig,
        data_dir: Option<&Path>,
    ) -> std::io::Result<ApiServer> {
        let listener = TcpListener::bind(config.addr).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("API address {}: {e}", config.addr))
        })?;
        let addr = listener.local_addr()?;
        let token = new_token();
        let mut addr_file = None;
        if let Some(dir) = data_dir {
            write_private(&dir.join(API_TOKEN_FILE), token.as_bytes())?;
            let f = dir.join(API_ADDR_FILE);
            write_private(&f, addr.to_string().as_bytes())?;
            addr_file = Some(f);
        }
        let state = Arc::new(AppState {
            registry,
            token,
            auth_reads: config.auth_reads,
            started: Instant::now(),
            data_dir: data_dir.map(Path::to_path_buf),
        });
        let app = router(state);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped.cancelled().await });
            if let Err(e) = serve.await {
                tracing::warn!("control API stopped: {e}");
            }
        });
        tracing::info!(%addr, "control API listening");
        Ok(ApiServer {
            addr,
            stop,
            task,
            addr_file,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (open event streams end) and removes the address file, so clients
    /// no longer find a daemon there.
    pub async fn shutdown(self) {
        if let Some(f) = &self.addr_file {
            let _ = std::fs::remove_file(f);
        }
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/status", get(status))
        .route("/stats", get(stats))
        .route("/peers", get(peers))
        .route("/peers/{peer}", get(peer_info))
        .route("/bootstrap", post(bootstrap))
        .route("/search", get(search))
        .route("/info/{name}", get(info))
        .route("/record/{id}", get(record))
        .route("/content/{id}", get(content))
        .route(
            "/publish",
            post(publish).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES)),
        )
        .route("/deprecate", post(deprecate))
        .route("/events", get(events));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .nest(API_PREFIX, api)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// 32 random bytes, hex.
fn new_token() -> String {
    let mut b = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes `bytes` to `path` readable by the owner only, replacing it atomically.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Constant-time comparison of the presented token with ours.
fn token_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    // Health is always open; reads (metrics included) unless `auth_reads`.
    let open = path == "/healthz"
        || (matches!(*req.method(), Method::GET | Method::HEAD) && !st.auth_reads);
    if open || token_matches(req.headers(), &st.token) {
        next.run(req).await
    } else {
        fail(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (the CLI reads it from the daemon's data dir)",
        )
    }
}

fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, axum::Json(ErrorBody { error: msg.into() })).into_response()
}

fn registry_error(e: RegistryError) -> Response {
    let status = match &e {
        RegistryError::NoContent(_) | RegistryError::NoProviders => StatusCode::NOT_FOUND,
        RegistryError::NotRunning => StatusCode::SERVICE_UNAVAILABLE,
        RegistryError::InvalidPackage(_)
        | RegistryError::InvalidSignature { .. }
        | RegistryError::BackDated { .. }
        | RegistryError::InvalidStatement(_)
        | RegistryError::Config(_) => StatusCode::BAD_REQUEST,
        RegistryError::NameOwned { .. } | RegistryError::VersionExists { .. } => {
            StatusCode::CONFLICT
        }
        RegistryError::ContentUnavailable { .. }
        | RegistryError::ContentMismatch { .. }
        | RegistryError::ConnectionTimeout
        | RegistryError::DhtTimeout => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    fail(status, e.to_string())
}

type ApiResult<T> = Result<axum::Json<T>, Response>;

async fn status(State(st): State<Arc<AppState>>) -> ApiResult<Status> {
    let r = &st.registry;
    let me = r.local_peer_id();
    let stats = r.stats().await;
    let (content_held, store_bytes) = r.storage().await;
    Ok(axum::Json(Status {
        peer_id: me.to_string(),
        uptime_s: st.started.elapsed().as_secs(),
        listen_addresses: r
            .listen_addresses()
            .into_iter()
            .map(|a| match a.parse::<Multiaddr>() {
                Ok(m) => m.with_peer_id(me).to_string(),
                Err(_) => format!("{a}/p2p/{me}"),
            })
            .collect(),
        peers: stats.connected_peers,
        catalogue_size: stats.catalogue_size,
        packages: stats.cached_packages,
        store_bytes,
        content_held,
        data_dir: st.data_dir.as_ref().map(|d| d.display().to_string()),
    }))
}

/// Prometheus text format (0.0.4) of every instrument of the node.
async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::Metrics::TEXT_CONTENT_TYPE)],
        st.registry.metrics_text(),
    )
        .into_response()
}

async fn stats(State(st): State<Arc<AppState>>) -> ApiResult<crate::NetworkStats> {
    Ok(axum::Json(st.registry.stats().await))
}

async fn peers(State(st): State<Arc<AppState>>) -> ApiResult<Vec<super::api::Peer>> {
    st.registry
        .peers(PEER_PING_TIMEOUT)
        .await
        .map(axum::Json)
        .map_err(registry_error)
}

async fn peer_info(
    State(st): State<Arc<AppState>>,
    UrlPath(peer): UrlPath<String>,
) -> ApiResult<super::api::Peer> {
    let id: PeerId = peer
        .parse()
        .map_err(|_| fail(StatusCode::BAD_REQUEST, format!("not a peer id: {peer}")))?;
    let all = st
        .registry
        .peers(PEER_PING_TIMEOUT)
        .await
        .map_err(registry_error)?;
    all.into_iter()
        .find(|p| p.peer == id)
        .map(axum::Json)
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("not connected to {id}")))
}

async fn bootstrap(
    State(st): State<Arc<AppState>>,
    axum::Json(req): axum::Json<BootstrapRequest>,
) -> ApiResult<BootstrapReply> {
    let mut added = Vec::new();
    for a in req.addrs {
        let m: Multiaddr = a
            .parse()
            .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("{a}: {e}")))?;
        let Some(peer) = m.peer_id() else {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                format!("{a} has no /p2p/<PeerId> part"),
            ));
        };
        st.registry
            .add_bootstrap_node(peer.to_string(), m.without_peer_id().to_string())
            .await
            .map_err(registry_error)?;
        added.push(a);
    }
    Ok(axum::Json(BootstrapReply { added }))
}

/// `GET /api/v0/search?q=…&category=…&tag=…&tag=…&limit=…&min_downloads=…`: taken as
/// pairs, because `tag` may repeat.
async fn search(
    State(st): State<Arc<AppState>>,
    UrlQuery(pairs): UrlQuery<Vec<(String, String)>>,
) -> ApiResult<Vec<crate::SearchResult>> {
    let mut q = Query::default();
    for (k, v) in pairs {
        let bad = |what: &str| fail(StatusCode::BAD_REQUEST, format!("{what}: {v}"));
        match k.as_str() {
            "q" => q.keywords.extend(v.split_whitespace().map(str::to_string)),
            "category" => q.category = Some(v),
            "tag" => q.tags.push(v),
            "limit" => q.limit = v.parse::<usize>().map_err(|_| bad("limit"))?.clamp(1, 1000),
            "min_downloads" => q.min_downloads = Some(v.parse().map_err(|_| bad("min_downloads"))?),
            _ => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {k}"),
                ));
            }
        }
    }
    st.registry
        .search(&q)
        .await
        .map(axum::Json)
        .map_err(registry_error)
}

/// `GET /api/v0/info/{name}` parameters.
#[derive(Debug, Deserialize)]
struct InfoParams {
    version: Option<String>,
}

async fn info(
    State(st): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    UrlQuery(p): UrlQuery<InfoParams>,
) -> ApiResult<Info> {
    let r = &st.registry;
    let owner = r
        .owner_of(&name)
        .await
        .map_err(registry_error)?
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no package named {name}")))?;
    let mut versions = Vec::new();
    for s in r.versions(&name).await.map_err(registry_error)? {
        if p.version.as_ref().is_some_and(|v| *v != s.package.version) {
            continue;
        }
        let providers = match s
            .package
            .content_hash
            .as_deref()
            .and_then(|h| h.parse::<ContentHash>().ok())
        {
            Some(h) => r
                .content_providers(&h)
                .await
                .map_err(registry_error)?
                .into_iter()
                .map(|p| p.to_string())
                .collect(),
            None => Vec::new(),
        };
        versions.push(VersionInfo {
            id: s.package.id.clone(),
            version: s.package.version.clone(),
            publisher: s.publisher.to_string(),
            content_hash: s.package.content_hash.clone(),
            size: s.package.size,
            deprecated: s.deprecated,
            created_at: s.package.created_at.to_rfc3339(),
            providers,
            package: s.package.clone(),
        });
    }
    if let Some(v) = &p.version {
        if versions.is_empty() {
            return Err(fail(
                StatusCode::NOT_FOUND,
                format!("no version {v} of {name}"),
            ));
        }
    }
    Ok(axum::Json(Info {
        name,
        owner: owner.owner.to_string(),
        settled: owner.settled,
        maintainers: owner.maintainers.iter().map(|m| m.to_string()).collect(),
        versions,
    }))
}

async fn record(
    State(st): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<super::api::Record> {
    st.registry
        .signed_record(&id)
        .await
        .map_err(registry_error)?
        .map(axum::Json)
        .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no record of {id}")))
}

/// The content of `id`, fetched from its providers (verified against its hash) unless
/// held here.
async fn content(State(st): State<Arc<AppState>>, UrlPath(id): UrlPath<String>) -> Response {
    match st.registry.fetch_content(&id).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/gzip".to_string()),
                (header::CONTENT_LENGTH, bytes.len().to_string()),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => registry_error(e),
    }
}

/// `POST /api/v0/publish` parameters: the package manifest as JSON.
#[derive(Debug, Deserialize)]
struct PublishParams {
    manifest: String,
}

async fn publish(
    State(st): State<Arc<AppState>>,
    UrlQuery(p): UrlQuery<PublishParams>,
    body: Bytes,
) -> ApiResult<Published> {
    let package: Package = serde_json::from_str(&p.manifest)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("manifest: {e}")))?;
    let published = if body.is_empty() {
        st.registry.publish(package.clone()).await.map(|()| package)
    } else {
        st.registry.publish_with_content(package, body).await
    }
    .map_err(registry_error)?;
    Ok(axum::Json(Published {
        id: published.id.clone(),
        content_hash: published.content_hash.clone(),
        size: published.size,
        publisher: st.registry.local_peer_id().to_string(),
    }))
}

async fn deprecate(
    State(st): State<Arc<AppState>>,
    axum::Json(req): axum::Json<DeprecateRequest>,
) -> ApiResult<Package> {
    st.registry
        .deprecate(&req.id)
        .await
        .map(axum::Json)
        .map_err(registry_error)
}

/// Package updates as server-sent events (`event: update`, JSON data).
async fn events(
    State(st): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = st.registry.events();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await {
            Ok(u) => Event::default()
                .event("update")
                .json_data(&u)
                .unwrap_or_else(|_| Event::default().comment("unencodable update")),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                Event::default().event("lagged").data(n.to_string())
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(ev), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
