//! Content transfer over real nodes on loopback (TCP and QUIC): multi-provider downloads,
//! a provider serving corrupted bytes, a provider killed mid-transfer, downloads to a file,
//! and the errors for unknown and lying content.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use ggen_p2p::PeerId;
use ggen_p2p::node::NodeHandle;
use ggen_p2p::rpc::content::{self, ContentRequest, InfoResponse};
use ggen_p2p::rpc::{
    ContentConfig, ContentError, ContentHash, ContentService, ContentSource, HandlerFuture,
    Manifest, Progress, RawHandler, Rpc, RpcConfig,
};
use rand::RngCore;
use tokio::sync::watch;

const T: Duration = Duration::from_secs(60);
const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

struct Peer {
    node: NodeHandle,
    rpc: Rpc,
    content: ContentService,
}

impl Peer {
    fn id(&self) -> PeerId {
        self.node.local_peer_id()
    }
}

async fn peer_with(listen: &str, config: ContentConfig) -> Peer {
    let node = node(listen).await;
    let rpc = Rpc::spawn(&node, RpcConfig::default()).expect("rpc starts");
    let content = ContentService::spawn(&rpc, config)
        .await
        .expect("content service starts");
    Peer { node, rpc, content }
}

async fn peer(listen: &str) -> Peer {
    peer_with(listen, ContentConfig::default()).await
}

fn random_blob(len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    rand::rng().fill_bytes(&mut v);
    Bytes::from(v)
}

async fn connect(from: &Peer, to: &[&Peer]) {
    for p in to {
        within(T, "dial", from.node.dial(dial_addr(&p.node)))
            .await
            .expect("dial");
    }
}

/// Records every progress value the receiver sees; returns them when the sender is gone.
fn record(mut rx: watch::Receiver<Progress>) -> tokio::task::JoinHandle<Vec<Progress>> {
    tokio::spawn(async move {
        let mut seen = vec![*rx.borrow_and_update()];
        while rx.changed().await.is_ok() {
            seen.push(*rx.borrow_and_update());
        }
        seen
    })
}

fn assert_monotonic(seen: &[Progress]) {
    for w in seen.windows(2) {
        assert!(
            w[1].done >= w[0].done,
            "progress went backwards: {:?} -> {:?}",
            w[0],
            w[1]
        );
    }
}

async fn three_providers_at_once(listen: &str, size: usize) {
    let blob = random_blob(size);
    let hash = ContentHash::of(&blob);
    let providers = [peer(listen).await, peer(listen).await, peer(listen).await];
    for p in &providers {
        p.content
            .serve_content(hash, ContentSource::Bytes(blob.clone()))
            .await
            .expect("serve");
    }
    let fetcher = peer(listen).await;
    connect(&fetcher, &providers.iter().collect::<Vec<_>>()).await;
    let ids: Vec<PeerId> = providers.iter().map(Peer::id).collect();

    let (tx, rx) = watch::channel(Progress::default());
    let seen = record(rx);
    let started = std::time::Instant::now();
    let got = within(
        T,
        "fetch",
        fetcher.content.fetch_content(hash, &ids, Some(&tx)),
    )
    .await
    .expect("fetch succeeds");
    let took = started.elapsed();
    drop(tx);
    assert_eq!(got.len(), blob.len());
    assert!(got == blob, "fetched bytes differ");
    assert_eq!(ContentHash::of(&got), hash);

    let seen = seen.await.unwrap();
    assert_monotonic(&seen);
    assert_eq!(
        seen.last().copied(),
        Some(Progress {
            done: size as u64,
            total: size as u64
        })
    );
    for p in &providers {
        let m = p.content.metrics();
        assert!(m.chunks_served > 0, "{} served nothing: {m:?}", p.id());
        let r = fetcher.rpc.reputation(p.id()).await.unwrap();
        assert!(r.successes > 1 && r.bad_content == 0, "{r:?}");
    }
    let m = fetcher.content.metrics();
    assert_eq!(m.bytes_accepted, size as u64);
    assert_eq!(m.bad_chunks, 0);
    assert_eq!(m.fetches_ok, 1);
    eprintln!(
        "{listen}: {} MiB from 3 providers in {took:?}; served {:?}",
        size >> 20,
        providers
            .iter()
            .map(|p| p.content.metrics().chunks_served)
            .collect::<Vec<_>>()
    );
    for p in providers.iter().chain([&fetcher]) {
        p.node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_blob_from_three_tcp_providers_at_once_matches_its_hash() {
    three_providers_at_once(TCP, 64 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_from_three_quic_providers_at_once_matches_its_hash() {
    three_providers_at_once(QUIC, 16 * 1024 * 1024).await;
}

/// One of three providers serves a file that was overwritten after it was hashed: every chunk
/// it sends fails the manifest check. The whole-blob hash fails, the chunks are checked
/// against the manifest, and the bad ones name it: it is reported and dropped, its chunks are
/// fetched again from the other two, and the download completes. Next time it is on probation
/// (its chunks are checked on arrival) and is dropped after its first window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_serving_corrupted_bytes_is_penalised_and_the_download_completes() {
    let size = 16 * 1024 * 1024;
    let blob = random_blob(size);
    let hash = ContentHash::of(&blob);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &blob).unwrap();

    let bad = peer(QUIC).await;
    bad.content
        .serve_content(hash, ContentSource::File(path.clone()))
        .await
        .expect("serve the file");
    // Corrupt it on disk (same size, different bytes).
    let mut corrupted = blob.to_vec();
    for b in corrupted.iter_mut().step_by(4096) {
        *b ^= 0xff;
    }
    std::fs::write(&path, &corrupted).unwrap();
    drop(corrupted);

    let good = [peer(QUIC).await, peer(QUIC).await];
    for p in &good {
        p.content
            .serve_content(hash, ContentSource::Bytes(blob.clone()))
            .await
            .unwrap();
    }
    let fetcher = peer(QUIC).await;
    connect(&fetcher, &[&bad, &good[0], &good[1]]).await;
    // The bad provider first: it is sure to be asked for chunks.
    let ids = [bad.id(), good[0].id(), good[1].id()];
    let got = within(T, "fetch", fetcher.content.fetch_content(hash, &ids, None))
        .await
        .expect("the download completes from the good providers");
    assert!(got == blob, "fetched bytes differ");

    let r = fetcher.rpc.reputation(bad.id()).await.unwrap();
    assert!(r.bad_content > 0, "the bad provider is penalised: {r:?}");
    for p in &good {
        let r = fetcher.rpc.reputation(p.id()).await.unwrap();
        assert_eq!(r.bad_content, 0, "{r:?}");
    }
    let m = fetcher.content.metrics();
    assert!(m.bad_chunks >= 1 && m.providers_dropped == 1, "{m:?}");
    assert!(bad.content.metrics().chunks_served > 0);

    // Next time, the bad provider ranks last: the good ones get the work.
    let before = bad.content.metrics().chunks_served;
    let again = within(T, "fetch", fetcher.content.fetch_content(hash, &ids, None))
        .await
        .expect("second fetch");
    assert!(again == blob);
    let after = bad.content.metrics().chunks_served;
    assert!(
        after - before <= 8,
        "a penalised provider gets one window at most"
    );
    for p in good.iter().chain([&bad, &fetcher]) {
        p.node.shutdown().await;
    }
}

/// Two providers; one is shut down once a quarter of the blob has arrived. The download
/// completes from the other, keeps what it had, and requests little more than the blob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_killed_mid_transfer_the_download_resumes_from_another() {
    let size = 48 * 1024 * 1024;
    let blob = random_blob(size);
    let hash = ContentHash::of(&blob);
    let providers = [peer(TCP).await, peer(TCP).await];
    for p in &providers {
        p.content
            .serve_content(hash, ContentSource::Bytes(blob.clone()))
            .await
            .unwrap();
    }
    let config = ContentConfig {
        window: 4,
        ..ContentConfig::default()
    };
    let window_bytes = (config.window * config.chunk_size as usize) as u64;
    let fetcher = peer_with(TCP, config).await;
    connect(&fetcher, &[&providers[0], &providers[1]]).await;
    let ids: Vec<PeerId> = providers.iter().map(Peer::id).collect();

    let (tx, rx) = watch::channel(Progress::default());
    let seen = record(rx.clone());
    let content = fetcher.content.clone();
    let fetch = tokio::spawn(async move {
        let r = content.fetch_content(hash, &ids, Some(&tx)).await;
        drop(tx);
        r
    });
    let mut rx2 = rx.clone();
    let at_kill = within(
        T,
        "a quarter of the blob",
        rx2.wait_for(|p| p.done >= size as u64 / 4),
    )
    .await
    .map(|p| *p)
    .expect("progress");
    assert!(at_kill.done < size as u64, "the download finished too soon");
    let victim = &providers[1];
    victim.node.shutdown().await;
    let served_by_victim = victim.content.metrics().chunks_served;

    let got = within(T, "fetch", fetch)
        .await
        .unwrap()
        .expect("the download resumes from the other provider");
    assert!(got == blob, "fetched bytes differ");
    let seen = seen.await.unwrap();
    assert_monotonic(&seen);
    assert_eq!(seen.last().map(|p| p.done), Some(size as u64));

    let m = fetcher.content.metrics();
    assert_eq!(m.providers_dropped, 1, "{m:?}");
    assert_eq!(m.bytes_accepted, size as u64);
    // Nothing already stored was asked for again: at most the victim's window in flight
    // when it died is requested twice.
    assert!(
        m.bytes_requested <= size as u64 + window_bytes,
        "requested {} for {} bytes: {m:?}",
        m.bytes_requested,
        size
    );
    assert!(served_by_victim > 0);
    let r = fetcher.rpc.reputation(victim.id()).await.unwrap();
    assert_eq!(r.bad_content, 0, "{r:?}");
    providers[0].node.shutdown().await;
    fetcher.node.shutdown().await;
}

/// A single provider, a download to a file, then the errors: an unknown hash, no providers,
/// and a provider whose manifest and bytes agree with each other but not with the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_provider_to_a_file_and_the_errors() {
    let blob = random_blob(3 * 1024 * 1024 + 12_345);
    let hash = ContentHash::of(&blob);
    let provider = peer(TCP).await;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source");
    std::fs::write(&src, &blob).unwrap();
    provider
        .content
        .serve_content(hash, ContentSource::File(src))
        .await
        .unwrap();
    // Serving bytes under the wrong address is refused.
    let wrong = provider
        .content
        .serve_content(
            ContentHash::of(b"other"),
            ContentSource::Bytes(blob.clone()),
        )
        .await;
    assert!(
        matches!(wrong, Err(ContentError::SourceMismatch { .. })),
        "{wrong:?}"
    );

    let fetcher = peer(TCP).await;
    connect(&fetcher, &[&provider]).await;
    let dest = dir.path().join("out").join("blob.bin");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let (tx, rx) = watch::channel(Progress::default());
    let path = within(
        T,
        "fetch to file",
        fetcher
            .content
            .fetch_content_to_file(hash, &[provider.id()], &dest, Some(&tx)),
    )
    .await
    .expect("fetch to a file");
    assert_eq!(path, dest);
    assert!(std::fs::read(&dest).unwrap() == blob);
    assert_eq!(rx.borrow().done, blob.len() as u64);
    // Only the destination is left: the temporary file was renamed.
    let entries: Vec<_> = std::fs::read_dir(dest.parent().unwrap()).unwrap().collect();
    assert_eq!(entries.len(), 1);

    // Unknown content.
    let unknown = ContentHash::of(b"nobody has this");
    let r = within(
        T,
        "unknown",
        fetcher
            .content
            .fetch_content(unknown, &[provider.id()], None),
    )
    .await;
    assert!(
        matches!(r, Err(ContentError::NotFound(h)) if h == unknown),
        "{r:?}"
    );
    let r = fetcher.content.fetch_content(hash, &[], None).await;
    assert!(matches!(r, Err(ContentError::NotFound(_))), "{r:?}");
    let missing = dir.path().join("out").join("missing.bin");
    let r = fetcher
        .content
        .fetch_content_to_file(unknown, &[provider.id()], &missing, None)
        .await;
    assert!(matches!(r, Err(ContentError::NotFound(_))), "{r:?}");
    assert!(!missing.exists());

    // A liar: consistent manifest and bytes, but of other content. Caught by the whole-blob
    // hash, named, and penalised.
    let (liar, _liar_rpc) = liar_with_raw_content(random_blob(1024 * 1024)).await;
    within(T, "dial", fetcher.node.dial(dial_addr(&liar)))
        .await
        .unwrap();
    let liar_id = liar.local_peer_id();
    let r = within(
        T,
        "liar",
        fetcher.content.fetch_content(hash, &[liar_id], None),
    )
    .await;
    match r {
        Err(ContentError::HashMismatch { provider }) => assert_eq!(provider, liar_id),
        other => panic!("expected a hash mismatch naming the liar, got {other:?}"),
    }
    let rep = fetcher.rpc.reputation(liar_id).await.unwrap();
    assert!(rep.bad_content > 0, "{rep:?}");

    // With the liar and the honest provider, the honest one completes the download.
    let got = within(
        T,
        "liar and honest",
        fetcher
            .content
            .fetch_content(hash, &[liar_id, provider.id()], None),
    )
    .await
    .expect("the honest provider's manifest wins");
    assert!(got == blob);
    for n in [&provider.node, &fetcher.node, &liar] {
        n.shutdown().await;
    }
}

/// A node that answers the content protocol by hand for any hash, with `data`'s manifest and
/// bytes.
async fn liar_with_raw_content(data: Bytes) -> (NodeHandle, Rpc) {
    let node = node(TCP).await;
    let rpc = Rpc::spawn(&node, RpcConfig::default()).unwrap();
    let manifest = Manifest::of(&data, content::DEFAULT_CHUNK_SIZE);
    let info = Bytes::from(postcard::to_stdvec(&InfoResponse::Found(manifest)).unwrap());
    let handler: RawHandler = Arc::new(move |_peer, req: Bytes| -> HandlerFuture {
        let (info, data) = (info.clone(), data.clone());
        Box::pin(async move {
            match postcard::from_bytes::<ContentRequest>(&req) {
                Ok(ContentRequest::Info { .. }) => Ok(info),
                Ok(ContentRequest::Range { offset, len, .. }) => {
                    let start = offset as usize;
                    Ok(data.slice(start..start + len as usize))
                }
                Err(e) => Err(ggen_p2p::rpc::HandlerError::Malformed(e.to_string())),
            }
        })
    });
    rpc.register_raw(content::protocol(), content::limits(), handler)
        .await
        .unwrap();
    // The protocol is now taken: a content service cannot start on this node.
    assert!(
        ContentService::spawn(&rpc, ContentConfig::default())
            .await
            .is_err()
    );
    (node, rpc)
}
