//! End to end against a real S3-compatible server (s3s-fs on loopback): publish → commit → offer
//! → fetch → cache hit, and each failure a real store produces (expired and tampered
//! signatures, a swapped object, a missing object, oversize files, invalid settings), each with
//! a clear error and an empty staging directory afterwards.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use veribench_chain::{Chain, LocalChain};
use veribench_circuit::offer::ArtifactError;
use veribench_circuit::{
    ArtifactHash, CircuitOffer, FetchError, Fetcher, MemoryLog, OfferError, PublishError,
    PublishOptions, RequiredFiles, Storage, offer_urls, publish,
};
use veribench_protocol::UnixMillis;

fn opts() -> PublishOptions {
    PublishOptions { transfer: fast_transfer(), chain_retry: FAST_RETRY, progress: None }
}

struct World {
    tmp: tempfile::TempDir,
    s3: S3Server,
    chain: LocalChain,
    storage: Storage,
}

impl World {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let s3 = S3Server::start();
        let chain = chain(tmp.path());
        let storage = s3.storage_config().open().unwrap();
        Self { tmp, s3, chain, storage }
    }

    async fn publish(&self, seed: u8, miner: u8) -> (std::path::PathBuf, ArtifactHash) {
        let dir = artifact(self.tmp.path(), seed);
        let report = publish(
            &dir,
            &RequiredFiles::default(),
            &self.storage,
            &self.chain,
            &key(miner),
            NET,
            &opts(),
        )
        .await
        .unwrap();
        (dir, report.hash)
    }

    async fn offer(&self, dir: &std::path::Path, miner: u8) -> CircuitOffer {
        offer_urls(
            dir,
            &RequiredFiles::default(),
            &self.storage,
            &self.chain,
            NET,
            &key(miner).public(),
            Duration::from_secs(3600),
        )
        .await
        .unwrap()
    }

    fn fetcher(&self, cache: &str) -> (Fetcher, Arc<MemoryLog>, std::path::PathBuf) {
        let dir = self.tmp.path().join(cache);
        let log = Arc::new(MemoryLog::default());
        let f = Fetcher::new(fetch_config(&dir), Arc::new(self.chain.clone()), NET)
            .unwrap()
            .with_log(log.clone());
        (f, log, dir)
    }
}

fn set_url(offer: &mut CircuitOffer, file: &str, f: impl FnOnce(&str) -> String) {
    let entry = offer.urls.iter_mut().find(|(n, _)| n == file).unwrap();
    entry.1 = f(&entry.1);
}

#[tokio::test]
async fn publish_commit_fetch_then_cache_hit() {
    let w = World::new();
    let (dir, hash) = w.publish(7, 1).await;

    // Uploaded under <sha256>/<file>, and committed on chain.
    let mut want: Vec<String> = ["model.compiled", "pk.key", "settings.json", "vk.key"]
        .iter()
        .map(|f| format!("{hash}/{f}"))
        .collect();
    want.sort();
    assert_eq!(w.s3.objects(), want);
    assert_eq!(hash, ArtifactHash::of_file(&dir.join("vk.key")).unwrap());
    let c = w.chain.commitment(NET, &key(1).public()).await.unwrap().unwrap();
    assert_eq!(c.data, hash.as_bytes());

    // Publishing again re-uploads but does not repeat the extrinsic.
    let again =
        publish(&dir, &RequiredFiles::default(), &w.storage, &w.chain, &key(1), NET, &opts())
            .await
            .unwrap();
    assert!(again.receipt.is_none());

    let offer = w.offer(&dir, 1).await;
    assert_eq!(offer.hash, hash);
    assert!(offer.expires_at.0 > UnixMillis::now().0 + 3_500_000);
    // The offer survives its JSON round trip (it is carried as JSON).
    let offer: CircuitOffer =
        serde_json::from_str(&serde_json::to_string(&offer).unwrap()).unwrap();

    let (fetcher, log, cache) = w.fetcher("cache");
    let first = fetcher.fetch(&key(1).public(), &offer).await;
    let fetched = first.result.unwrap();
    assert!(!fetched.cache_hit);
    assert_eq!(fetched.dir, cache.join(hash.to_hex()));
    for f in ["vk.key", "pk.key", "settings.json", "model.compiled"] {
        assert_eq!(
            std::fs::read(fetched.dir.join(f)).unwrap(),
            std::fs::read(dir.join(f)).unwrap(),
            "{f}"
        );
    }
    let total: u64 = ["vk.key", "pk.key", "settings.json", "model.compiled"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    assert_eq!((first.record.outcome.as_str(), first.record.bytes), ("fetched", total));
    assert_eq!(fetcher.cache().total_bytes(), total);

    let second = fetcher.fetch(&key(1).public(), &offer).await;
    assert!(second.result.unwrap().cache_hit);
    assert_eq!((second.record.outcome.as_str(), second.record.bytes), ("cache_hit", 0));
    let outcomes: Vec<String> = log.records().into_iter().map(|r| r.outcome).collect();
    assert_eq!(outcomes, ["fetched", "cache_hit"]);
    assert!(tmp_entries(&cache).is_empty());

    // The index survives a restart: still a hit.
    drop(fetcher);
    let (fetcher, _, _) = w.fetcher("cache");
    assert!(fetcher.fetch(&key(1).public(), &offer).await.result.unwrap().cache_hit);
}

#[tokio::test]
async fn miner_refuses_urls_when_local_artifact_differs_from_chain() {
    let w = World::new();
    let dir = artifact(w.tmp.path(), 3);
    let files = RequiredFiles::default();
    let offer = |d: std::path::PathBuf| {
        let (storage, chain) = (w.storage.clone(), w.chain.clone());
        let files = files.clone();
        async move {
            offer_urls(&d, &files, &storage, &chain, NET, &key(2).public(), Duration::from_secs(60))
                .await
        }
    };
    assert!(matches!(offer(dir.clone()).await, Err(OfferError::NotCommitted(_))));

    let (dir, hash) = w.publish(3, 2).await;
    offer(dir.clone()).await.unwrap();
    std::fs::write(dir.join("vk.key"), b"a different verification key").unwrap();
    match offer(dir.clone()).await {
        Err(OfferError::LocalDiffersFromChain { chain, local }) => {
            assert_eq!(chain, hash);
            assert_eq!(local, ArtifactHash::of_bytes(b"a different verification key"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    std::fs::remove_file(dir.join("model.compiled")).unwrap();
    assert!(matches!(
        offer(dir).await,
        Err(OfferError::Artifact(ArtifactError::MissingFile(f))) if f == "model.compiled"
    ));
}

#[tokio::test]
async fn expired_url_is_refused_and_the_server_agrees() {
    let w = World::new();
    let (dir, hash) = w.publish(4, 1).await;
    let mut offer = w.offer(&dir, 1).await;
    let two_hours_ago = i64::try_from(UnixMillis::now().0 / 1000).unwrap() - 7200;
    let stale =
        w.storage.presign_get_at(&hash, "pk.key", Duration::from_secs(60), two_hours_ago).unwrap();

    // s3s-fs itself rejects it (so the client-side check is not the only line of defence).
    let client = veribench_circuit::transfer::http_client(&fast_transfer()).unwrap();
    let resp = client.get(stale.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 403, "s3s-fs must refuse an expired signature");

    set_url(&mut offer, "pk.key", |_| stale.to_string());
    let (fetcher, log, cache) = w.fetcher("cache");
    let attempt = fetcher.fetch(&key(1).public(), &offer).await;
    let err = attempt.result.unwrap_err();
    assert!(matches!(&err, FetchError::Expired { what, .. } if what.contains("pk.key")), "{err}");
    assert_eq!(attempt.record.outcome, "expired");
    assert!(attempt.record.reason.as_deref().unwrap().contains("expired"));
    assert_eq!(log.records().len(), 1);
    assert!(tmp_entries(&cache).is_empty());

    // An offer past its own expiry is refused before anything else.
    let mut old = w.offer(&dir, 1).await;
    old.expires_at = UnixMillis(UnixMillis::now().0 - 1);
    let err = fetcher.fetch(&key(1).public(), &old).await.result.unwrap_err();
    assert!(matches!(err, FetchError::Expired { .. }), "{err}");
}

#[tokio::test]
async fn tampered_signature_is_refused_by_the_server() {
    let w = World::new();
    let (dir, _) = w.publish(5, 1).await;
    let mut offer = w.offer(&dir, 1).await;
    set_url(&mut offer, "pk.key", |u| {
        let (head, sig) = u.rsplit_once("X-Amz-Signature=").unwrap();
        let flipped: String = sig.chars().map(|c| if c == '0' { '1' } else { '0' }).collect();
        format!("{head}X-Amz-Signature={flipped}")
    });
    let (fetcher, _, cache) = w.fetcher("cache");
    let attempt = fetcher.fetch(&key(1).public(), &offer).await;
    match attempt.result.unwrap_err() {
        FetchError::HttpStatus { file, status, code, .. } => {
            assert_eq!((file.as_str(), status), ("pk.key", 403));
            assert_eq!(code.as_deref(), Some("SignatureDoesNotMatch"));
        }
        other => panic!("expected HTTP 403, got {other}"),
    }
    assert_eq!(attempt.record.outcome, "http_status");
    // vk.key had been downloaded before pk.key failed: nothing of it is left.
    assert!(tmp_entries(&cache).is_empty());
    assert!(fetcher.cache().entries().is_empty());
    assert!(!cache.join(offer.hash.to_hex()).exists());
    // The reason never carries the signature.
    assert!(!attempt.record.reason.unwrap().contains("X-Amz-Signature"));
}

#[tokio::test]
async fn swapped_object_is_a_hash_mismatch() {
    let w = World::new();
    let (dir, hash) = w.publish(6, 1).await;
    let offer = w.offer(&dir, 1).await;
    // The bucket now serves different bytes under the committed key.
    std::fs::write(w.s3.object_path(&format!("{hash}/vk.key")), b"swapped").unwrap();
    let (fetcher, _, cache) = w.fetcher("cache");
    let attempt = fetcher.fetch(&key(1).public(), &offer).await;
    match attempt.result.unwrap_err() {
        FetchError::HashMismatch { file, chain, downloaded } => {
            assert_eq!((file.as_str(), chain), ("vk.key", hash));
            assert_eq!(downloaded, ArtifactHash::of_bytes(b"swapped"));
        }
        other => panic!("expected a hash mismatch, got {other}"),
    }
    assert_eq!(attempt.record.outcome, "hash_mismatch");
    // Committed file first: the 3 MiB proving key was never downloaded.
    assert_eq!(attempt.record.bytes, 7);
    assert!(tmp_entries(&cache).is_empty());

    // An offer whose hash is not the chain's is refused before any download.
    let other = ArtifactHash::of_bytes(b"other");
    let forged = CircuitOffer { hash: other, ..offer.clone() };
    let err = fetcher.fetch(&key(1).public(), &forged).await.result.unwrap_err();
    assert!(
        matches!(err, FetchError::WrongObject { .. } | FetchError::OfferMismatch { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn oversize_files_and_artifacts_are_refused() {
    let w = World::new();
    let (dir, _) = w.publish(8, 1).await;
    let offer = w.offer(&dir, 1).await;
    let cache = w.tmp.path().join("cache");
    let mut cfg = fetch_config(&cache);
    cfg.max_file_bytes = 1024 * 1024; // pk.key is 3 MiB
    let fetcher = Fetcher::new(cfg.clone(), Arc::new(w.chain.clone()), NET).unwrap();
    let err = fetcher.fetch(&key(1).public(), &offer).await.result.unwrap_err();
    assert!(
        matches!(&err, FetchError::TooLarge { what, limit } if what == "file pk.key" && *limit == 1024 * 1024),
        "{err}"
    );
    assert!(tmp_entries(&cache).is_empty());
    drop(fetcher);

    cfg.max_file_bytes = 8 * 1024 * 1024;
    cfg.max_total_bytes = 3 * 1024 * 1024;
    let fetcher = Fetcher::new(cfg, Arc::new(w.chain.clone()), NET).unwrap();
    let err = fetcher.fetch(&key(1).public(), &offer).await.result.unwrap_err();
    assert!(matches!(&err, FetchError::TooLarge { what, .. } if what == "the artifact"), "{err}");
    assert_eq!(err.code(), "too_large");
    assert!(tmp_entries(&cache).is_empty());
}

#[tokio::test]
async fn missing_required_file_in_offer_or_bucket() {
    let w = World::new();
    let (dir, hash) = w.publish(9, 1).await;
    let (fetcher, _, cache) = w.fetcher("cache");

    let mut offer = w.offer(&dir, 1).await;
    offer.urls.retain(|(n, _)| n != "model.compiled");
    let err = fetcher.fetch(&key(1).public(), &offer).await.result.unwrap_err();
    assert!(matches!(&err, FetchError::MissingFile(f) if f == "model.compiled"), "{err}");

    let mut offer = w.offer(&dir, 1).await;
    offer.urls.push(("extra.bin".into(), offer.urls[0].1.clone()));
    let err = fetcher.fetch(&key(1).public(), &offer).await.result.unwrap_err();
    assert!(matches!(&err, FetchError::UnknownFile(f) if f == "extra.bin"), "{err}");

    // The URL is fine but the bucket lost the object.
    let offer = w.offer(&dir, 1).await;
    std::fs::remove_file(w.s3.object_path(&format!("{hash}/model.compiled"))).unwrap();
    let attempt = fetcher.fetch(&key(1).public(), &offer).await;
    let err = attempt.result.unwrap_err();
    assert!(matches!(&err, FetchError::MissingFile(f) if f == "model.compiled"), "{err}");
    assert_eq!(attempt.record.outcome, "missing_file");
    assert!(tmp_entries(&cache).is_empty());
}

#[tokio::test]
async fn invalid_settings_are_refused_on_both_sides() {
    let w = World::new();
    // Miner side: nothing is uploaded, nothing committed.
    let bad = artifact(w.tmp.path(), 10);
    std::fs::write(bad.join("settings.json"), br#"{"run_args": {"logrows": "many"}}"#).unwrap();
    let err = publish(&bad, &RequiredFiles::default(), &w.storage, &w.chain, &key(1), NET, &opts())
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Artifact(ArtifactError::InvalidSettings(_))), "{err}");
    assert!(w.s3.objects().is_empty());
    assert!(w.chain.commitment(NET, &key(1).public()).await.unwrap().is_none());

    // Validator side: the bucket serves a settings.json that breaks the schema.
    let (dir, hash) = w.publish(11, 1).await;
    let offer = w.offer(&dir, 1).await;
    std::fs::write(w.s3.object_path(&format!("{hash}/settings.json")), b"[]").unwrap();
    let (fetcher, _, cache) = w.fetcher("cache");
    let attempt = fetcher.fetch(&key(1).public(), &offer).await;
    let err = attempt.result.unwrap_err();
    assert!(matches!(err, FetchError::InvalidSettings(_)), "{err}");
    assert_eq!(attempt.record.outcome, "invalid_settings");
    assert!(tmp_entries(&cache).is_empty());
    assert!(fetcher.cache().entries().is_empty());
}

#[tokio::test]
async fn a_hash_claimed_by_another_hotkey_is_refused() {
    let w = World::new();
    let (dir, hash) = w.publish(12, 1).await;
    w.chain.advance_blocks(5).unwrap();
    // Miner 3 copies miner 1's commitment and hands out miner 1's URLs.
    w.chain.set_commitment(&key(3), NET, hash.as_bytes()).await.unwrap();
    let offer = w.offer(&dir, 1).await;
    let (fetcher, log, _) = w.fetcher("cache");

    fetcher.fetch(&key(1).public(), &offer).await.result.unwrap();
    let attempt = fetcher.fetch(&key(3).public(), &offer).await;
    match attempt.result.unwrap_err() {
        FetchError::ClaimedByOther { hash: h, other } => {
            assert_eq!((h, other), (hash, key(1).public()));
        }
        other => panic!("expected a claim refusal, got {other}"),
    }
    assert_eq!(attempt.record.outcome, "claimed_by_other");
    // The original miner still hits the cache.
    assert!(fetcher.fetch(&key(1).public(), &offer).await.result.unwrap().cache_hit);
    assert_eq!(log.records().len(), 3);
}

#[tokio::test]
async fn cache_evicts_least_recently_used_beyond_its_limit() {
    let w = World::new();
    let (d1, h1) = w.publish(13, 1).await;
    let (d2, h2) = w.publish(14, 2).await;
    let (d3, h3) = w.publish(15, 3).await;
    let (o1, o2, o3) = (w.offer(&d1, 1).await, w.offer(&d2, 2).await, w.offer(&d3, 3).await);
    let cache = w.tmp.path().join("cache");
    let mut cfg = fetch_config(&cache);
    // Room for two artifacts (each a little over 3.1 MiB).
    cfg.cache_max_bytes = 7 * 1024 * 1024;
    let fetcher = Fetcher::new(cfg, Arc::new(w.chain.clone()), NET).unwrap();
    fetcher.fetch(&key(1).public(), &o1).await.result.unwrap();
    fetcher.fetch(&key(2).public(), &o2).await.result.unwrap();
    assert!(fetcher.fetch(&key(1).public(), &o1).await.result.unwrap().cache_hit);
    let third = fetcher.fetch(&key(3).public(), &o3).await.result.unwrap();
    assert_eq!(third.evicted, vec![h2]);
    assert!(!cache.join(h2.to_hex()).exists());
    assert!(cache.join(h1.to_hex()).exists() && cache.join(h3.to_hex()).exists());
    // Evicted is not forbidden: it comes back with a real download.
    let back = fetcher.fetch(&key(2).public(), &o2).await;
    assert_eq!(back.record.outcome, "fetched");
}
