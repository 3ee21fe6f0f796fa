//! Hostile input: a table of URLs the default policy must refuse (each with its reason, and
//! nothing fetched), redirects off the allowlist, truncated transfers, transient failures
//! retried with backoff, and cancellation mid-download. The failure modes a real store does not
//! produce on demand come from a scripted HTTP server on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use veribench_chain::{Chain, LocalChain};
use veribench_circuit::{
    ArtifactHash, CircuitOffer, FetchConfig, FetchError, Fetcher, MemoryLog, UrlPolicy, UrlRefusal,
};
use veribench_protocol::UnixMillis;

/// `(url, expected refusal code)` under the default policy.
const HOSTILE: &[(&str, &str)] = &[
    // Suffix and substring tricks.
    ("https://r2.cloudflarestorage.com.evil.com/h/vk.key", "host_not_allowed"),
    ("https://evilr2.cloudflarestorage.com/h/vk.key", "host_not_allowed"),
    ("https://cloudflarestorage.com/h/vk.key", "host_not_allowed"),
    ("https://evil.com/?r2.cloudflarestorage.com", "host_not_allowed"),
    ("https://evil.com/r2.cloudflarestorage.com/vk.key", "host_not_allowed"),
    ("https://evil.com#.r2.dev", "host_not_allowed"),
    ("https://evil.com\\@acc.r2.dev/vk.key", "host_not_allowed"),
    ("https://r2.dev.evil.com/vk.key", "host_not_allowed"),
    ("https://s3.amazonaws.com.evil.com/vk.key", "host_not_allowed"),
    ("https://ec2-1-2-3-4.compute-1.amazonaws.com/vk.key", "host_not_allowed"),
    ("https://x.execute-api.us-east-1.amazonaws.com/vk.key", "host_not_allowed"),
    ("https://localhost/vk.key", "host_not_allowed"),
    // User info hiding the real host.
    ("https://r2.cloudflarestorage.com@evil.com/", "userinfo"),
    ("https://acc.r2.dev:443@evil.com/", "userinfo"),
    ("https://user:pw@acc.r2.cloudflarestorage.com/h/vk.key", "userinfo"),
    // IP literals in every notation.
    ("https://127.0.0.1/h/vk.key", "ip_literal"),
    ("https://2130706433/h/vk.key", "ip_literal"),
    ("https://0x7f.1/h/vk.key", "ip_literal"),
    ("https://017700000001/h/vk.key", "ip_literal"),
    ("https://[::1]/h/vk.key", "ip_literal"),
    ("https://[::ffff:169.254.169.254]/latest/meta-data/", "ip_literal"),
    ("http://169.254.169.254/latest/meta-data/", "ip_literal"),
    ("https://10.0.0.1/h/vk.key", "ip_literal"),
    // Plain http and unusual ports.
    ("http://acc.r2.cloudflarestorage.com/h/vk.key", "plain_http"),
    ("https://acc.r2.cloudflarestorage.com:8443/h/vk.key", "port"),
    ("https://acc.r2.cloudflarestorage.com:80/h/vk.key", "port"),
    ("https://acc.r2.cloudflarestorage.com:22/h/vk.key", "port"),
    // Percent-encoded and unicode hosts.
    ("https://r2%2ecloudflarestorage.com/h/vk.key", "encoded_host"),
    ("https://acc%2Er2.dev/h/vk.key", "encoded_host"),
    ("https://acc.r2.dev%00.evil.com/h/vk.key", "encoded_host"),
    ("https://\u{0430}cc.r2.dev/h/vk.key", "non_ascii_host"),
    ("https://acc.r2\u{3002}dev/h/vk.key", "non_ascii_host"),
    ("https://acc.r2\u{ff0e}dev/h/vk.key", "non_ascii_host"),
    ("https://xn--80ak6aa92e.r2.dev/h/vk.key", "idn"),
    ("https://acc.r2.dev./h/vk.key", "trailing_dot"),
    // Other schemes.
    ("file:///etc/passwd", "scheme"),
    ("ftp://acc.r2.dev/h/vk.key", "scheme"),
    ("gopher://acc.r2.dev/h/vk.key", "scheme"),
    ("data:text/plain,hello", "scheme"),
    ("javascript:alert(1)", "scheme"),
    ("ws://acc.r2.dev/h/vk.key", "scheme"),
    // Not URLs.
    ("not a url", "unparseable"),
    ("https://", "unparseable"),
];

#[test]
fn default_policy_refuses_every_hostile_url_with_its_reason() {
    let policy = UrlPolicy::default();
    let mut failures = Vec::new();
    for (url, code) in HOSTILE {
        match policy.check_str(url) {
            Ok(_) => failures.push(format!("{url}: accepted, expected {code}")),
            Err(r) if r.code() != *code => {
                failures.push(format!("{url}: refused as {} ({r}), expected {code}", r.code()));
            }
            Err(r) => assert!(!r.to_string().is_empty()),
        }
    }
    let long = format!("https://acc.r2.dev/{}", "a".repeat(5000));
    assert!(matches!(policy.check_str(&long), Err(UrlRefusal::TooLong(_))));
    // The test hosts of other tests are refused by the default policy.
    assert!(matches!(
        policy.check_str("http://127.0.0.1:9000/b/h/vk.key"),
        Err(UrlRefusal::IpLiteral(_))
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn http_to_a_test_host_needs_both_lists() {
    // Allowlisted but not in http_hosts: https only.
    let mut p = UrlPolicy::default();
    p.allowed_hosts.push("127.0.0.1".into());
    assert!(matches!(p.check_str("http://127.0.0.1:9/x"), Err(UrlRefusal::PlainHttp(_))));
    assert!(matches!(p.check_str("https://127.0.0.1:9/x"), Err(UrlRefusal::Port(9))));
    p.check_str("https://127.0.0.1/x").unwrap();
    // In http_hosts only: still not an allowed host.
    let mut p = UrlPolicy::default();
    p.http_hosts.push("127.0.0.1".into());
    assert!(matches!(p.check_str("http://127.0.0.1:9/x"), Err(UrlRefusal::IpLiteral(_))));
    UrlPolicy::with_test_hosts(&["127.0.0.1"]).check_str("http://127.0.0.1:9/x").unwrap();
}

/// A chain where miner 1 committed the SHA-256 of `vk`, and an offer for `urls`.
async fn committed(tmp: &std::path::Path, vk: &[u8]) -> (LocalChain, ArtifactHash) {
    let chain = chain(tmp);
    let hash = ArtifactHash::of_bytes(vk);
    chain.set_commitment(&key(1), NET, hash.as_bytes()).await.unwrap();
    (chain, hash)
}

fn offer(hash: ArtifactHash, url_of: impl Fn(&str) -> String) -> CircuitOffer {
    let urls = ["vk.key", "pk.key", "settings.json", "model.compiled"]
        .iter()
        .map(|f| ((*f).to_owned(), url_of(f)))
        .collect();
    CircuitOffer { hash, urls, expires_at: UnixMillis(UnixMillis::now().0 + 600_000) }
}

fn new_fetcher(chain: &LocalChain, cfg: FetchConfig) -> (Fetcher, Arc<MemoryLog>) {
    let log = Arc::new(MemoryLog::default());
    (Fetcher::new(cfg, Arc::new(chain.clone()), NET).unwrap().with_log(log.clone()), log)
}

#[tokio::test]
async fn hostile_urls_in_an_offer_fetch_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = ScriptServer::start("127.0.0.1", |_, _| Reply::Body(b"x".to_vec())).await;
    let (chain, hash) = committed(tmp.path(), b"vk").await;
    let cache = tmp.path().join("cache");
    // The default policy: the loopback server is not reachable through it.
    let cfg = FetchConfig { cache_dir: cache.clone(), ..FetchConfig::default() };
    let (fetcher, log) = new_fetcher(&chain, cfg);
    let port = server.addr.port();
    let mut urls: Vec<String> = HOSTILE.iter().map(|(u, _)| (*u).to_owned()).collect();
    urls.push(server.url(&format!("/b/{hash}/vk.key")));
    urls.push(format!("https://127.0.0.1:{port}/b/{hash}/vk.key"));
    urls.push(format!("http://localhost:{port}/b/{hash}/vk.key"));
    urls.push(format!("http://0x7f000001:{port}/b/{hash}/vk.key"));
    for hostile in &urls {
        let o = offer(hash, |f| {
            if f == "vk.key" { hostile.clone() } else { format!("https://a.r2.dev/{hash}/{f}") }
        });
        let attempt = fetcher.fetch(&key(1).public(), &o).await;
        let err = attempt.result.unwrap_err();
        assert!(
            matches!(&err, FetchError::UrlRefused { file, .. } if file == "vk.key"),
            "{hostile}: {err}"
        );
        assert_eq!(attempt.record.outcome, "url_refused");
        assert_eq!(attempt.record.bytes, 0);
    }
    assert_eq!(server.count(), 0, "no request may reach the loopback server");
    assert_eq!(log.records().len(), urls.len());
    assert!(tmp_entries(&cache).is_empty());

    // A URL for another object than <hash>/<file> is refused too.
    let o = offer(hash, |f| format!("https://a.r2.dev/{hash}/other-{f}"));
    let err = fetcher.fetch(&key(1).public(), &o).await.result.unwrap_err();
    assert!(matches!(err, FetchError::WrongObject { .. }), "{err}");
}

#[tokio::test]
async fn redirects_are_checked_hop_by_hop() {
    let tmp = tempfile::tempdir().unwrap();
    let vk = b"verification key".to_vec();
    let (chain, hash) = committed(tmp.path(), &vk).await;
    // The "outside" host: 127.0.0.2 is loopback too, but not on the allowlist.
    let outside = ScriptServer::start("127.0.0.2", |_, _| Reply::Body(b"evil".to_vec())).await;
    let outside_url = outside.url("/steal");
    let redirector = ScriptServer::start("127.0.0.1", move |_, path| {
        if path.ends_with("/vk.key") {
            Reply::Redirect(outside_url.clone())
        } else {
            Reply::Redirect("https://evil.example.com/x".into())
        }
    })
    .await;
    let cache = tmp.path().join("cache");
    let (fetcher, _) = new_fetcher(&chain, fetch_config(&cache));
    let o = offer(hash, |f| redirector.url(&format!("/b/{hash}/{f}")));
    let err = fetcher.fetch(&key(1).public(), &o).await.result.unwrap_err();
    match &err {
        FetchError::RedirectRefused { file, to, refusal } => {
            assert_eq!(file, "vk.key");
            assert!(to.starts_with("http://127.0.0.2:"), "{to}");
            assert!(matches!(refusal, UrlRefusal::IpLiteral(_)), "{refusal}");
        }
        other => panic!("expected a refused redirect, got {other}"),
    }
    assert_eq!(err.code(), "redirect_refused");
    assert_eq!(outside.count(), 0, "the outside host was never contacted");
    assert!(tmp_entries(&cache).is_empty());

    // Redirects inside the allowlist are followed, up to the hop limit.
    let files = std::sync::Arc::new(std::collections::BTreeMap::from([
        ("vk.key".to_owned(), vk.clone()),
        ("pk.key".to_owned(), vec![1u8; 5000]),
        (
            "settings.json".to_owned(),
            veribench_circuit::settings::EXAMPLE_SETTINGS.as_bytes().to_vec(),
        ),
        ("model.compiled".to_owned(), vec![2u8; 10]),
    ]));
    let loops = ScriptServer::start("127.0.0.1", move |_, path| {
        let name = path.rsplit('/').next().unwrap_or("").to_owned();
        if path.starts_with("/loop/") {
            Reply::Redirect(path.to_owned())
        } else if let Some(rest) = path.strip_prefix("/hop/") {
            Reply::Redirect(format!("/real/{rest}"))
        } else {
            files.get(&name).map_or(Reply::Status(404, String::new()), |b| Reply::Body(b.clone()))
        }
    })
    .await;
    let o = offer(hash, |f| loops.url(&format!("/hop/{hash}/{f}")));
    let ok = fetcher.fetch(&key(1).public(), &o).await;
    assert_eq!(ok.record.outcome, "fetched", "{:?}", ok.result);
    let o = offer(hash, |f| loops.url(&format!("/loop/{hash}/{f}")));
    let cache2 = tmp.path().join("cache2");
    let (fetcher2, _) = new_fetcher(&chain, fetch_config(&cache2));
    let err = fetcher2.fetch(&key(1).public(), &o).await.result.unwrap_err();
    assert!(matches!(err, FetchError::TooManyRedirects { limit: 3, .. }), "{err}");
    assert!(tmp_entries(&cache2).is_empty());
}

#[tokio::test]
async fn truncated_transfers_are_retried_then_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (chain, hash) = committed(tmp.path(), b"vk").await;
    let server = ScriptServer::start("127.0.0.1", |_, _| Reply::Truncate {
        announce: 100_000,
        body: vec![7; 1000],
    })
    .await;
    let cache = tmp.path().join("cache");
    let (fetcher, _) = new_fetcher(&chain, fetch_config(&cache));
    let o = offer(hash, |f| server.url(&format!("/b/{hash}/{f}")));
    let attempt = fetcher.fetch(&key(1).public(), &o).await;
    let err = attempt.result.unwrap_err();
    assert!(
        matches!(&err, FetchError::Truncated { file, got: 1000, expected: 100_000 } if file == "vk.key"),
        "{err}"
    );
    assert_eq!(attempt.record.outcome, "truncated");
    assert_eq!(server.count(), FAST_RETRY.attempts as usize, "one request per attempt");
    assert_eq!(attempt.record.bytes, 3000);
    assert!(tmp_entries(&cache).is_empty());
}

#[tokio::test]
async fn transient_errors_are_retried_with_backoff_and_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = artifact(tmp.path(), 1);
    let files = files_of(&dir);
    let (chain, hash) = committed(tmp.path(), &files["vk.key"]).await;
    // Every file fails twice (503, then a truncated body) before it is served.
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    let server = ScriptServer::start("127.0.0.1", move |_, path| {
        let name = path.rsplit('/').next().unwrap_or("").to_owned();
        let mut seen = seen.lock().unwrap();
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        match *n {
            1 => Reply::Status(503, "<Error><Code>SlowDown</Code></Error>".into()),
            2 => Reply::Truncate { announce: 10, body: vec![1] },
            _ => Reply::Body(files[&name].clone()),
        }
    })
    .await;
    let cache = tmp.path().join("cache");
    let (fetcher, _) = new_fetcher(&chain, fetch_config(&cache));
    let o = offer(hash, |f| server.url(&format!("/b/{hash}/{f}")));
    let attempt = fetcher.fetch(&key(1).public(), &o).await;
    assert_eq!(attempt.record.outcome, "fetched", "{:?}", attempt.result);
    assert_eq!(server.count(), 12);

    // A permanent error (403) is not retried.
    let denied = ScriptServer::start("127.0.0.1", |_, _| {
        Reply::Status(
            403,
            "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>".into(),
        )
    })
    .await;
    let cache2 = tmp.path().join("cache2");
    let (fetcher2, _) = new_fetcher(&chain, fetch_config(&cache2));
    let o = offer(hash, |f| denied.url(&format!("/b/{hash}/{f}")));
    let err = fetcher2.fetch(&key(1).public(), &o).await.result.unwrap_err();
    assert_eq!(err.to_string(), "GET vk.key: HTTP 403 (AccessDenied: Request has expired)");
    assert_eq!(denied.count(), 1);
}

#[tokio::test]
async fn cancelling_mid_download_removes_partial_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (chain, hash) = committed(tmp.path(), b"vk").await;
    let server = ScriptServer::start("127.0.0.1", |_, _| Reply::Stall {
        announce: 50_000_000,
        body: vec![9; 256 * 1024],
    })
    .await;
    let cache = tmp.path().join("cache");
    let (fetcher, log) = new_fetcher(&chain, fetch_config(&cache));
    let o = offer(hash, |f| server.url(&format!("/b/{hash}/{f}")));
    {
        let miner = key(1).public();
        let fetch = fetcher.fetch(&miner, &o);
        tokio::pin!(fetch);
        // Poll until part of the file is on disk, then drop the future.
        let started = std::time::Instant::now();
        loop {
            tokio::select! {
                done = &mut fetch => panic!("the stalled fetch finished: {:?}", done.result),
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
            let partial = tmp_entries(&cache)
                .iter()
                .filter_map(|d| std::fs::metadata(d.join("vk.key")).ok())
                .any(|m| m.len() > 0);
            if partial {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "download never started");
        }
        assert!(!tmp_entries(&cache).is_empty());
    }
    assert!(tmp_entries(&cache).is_empty(), "cancellation left {:?}", tmp_entries(&cache));
    let records = log.records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].outcome, "cancelled");
    assert!(records[0].bytes > 0);
    assert!(fetcher.cache().entries().is_empty());
}

#[tokio::test]
async fn malformed_responses_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let (chain, hash) = committed(tmp.path(), b"vk").await;
    let replies: Vec<Vec<u8>> = vec![
        b"garbage\r\n\r\n".to_vec(),
        b"HTTP/1.1 999 Weird\r\nContent-Length: 1\r\n\r\nx".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"HTTP/1.1 302 Found\r\nLocation: \xff\xfe\r\nContent-Length: 0\r\n\r\n".to_vec(),
        b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
        [b"HTTP/1.1 200 OK\r\nX: ".as_slice(), &vec![b'a'; 200_000], b"\r\n\r\n"].concat(),
        Vec::new(),
    ];
    for (i, raw) in replies.into_iter().enumerate() {
        let server = ScriptServer::start("127.0.0.1", move |_, _| Reply::Raw(raw.clone())).await;
        let cache = tmp.path().join(format!("cache-{i}"));
        let (fetcher, _) = new_fetcher(&chain, fetch_config(&cache));
        let o = offer(hash, |f| server.url(&format!("/b/{hash}/{f}")));
        let attempt = fetcher.fetch(&key(1).public(), &o).await;
        let err = attempt.result.unwrap_err();
        assert!(!err.to_string().is_empty());
        assert!(!attempt.record.is_success(), "reply {i}");
        assert!(tmp_entries(&cache).is_empty(), "reply {i}");
    }
}

#[tokio::test]
async fn a_body_without_length_is_cut_at_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let (chain, hash) = committed(tmp.path(), b"vk").await;
    // 64 MiB without Content-Length: the cap (1 MiB) stops the download, not the server.
    let server = ScriptServer::start("127.0.0.1", |_, _| Reply::Unbounded(64 << 20)).await;
    let cache = tmp.path().join("cache");
    let mut cfg = fetch_config(&cache);
    cfg.max_file_bytes = 1 << 20;
    let (fetcher, _) = new_fetcher(&chain, cfg);
    let o = offer(hash, |f| server.url(&format!("/b/{hash}/{f}")));
    let attempt = fetcher.fetch(&key(1).public(), &o).await;
    let err = attempt.result.unwrap_err();
    assert!(matches!(&err, FetchError::TooLarge { what, .. } if what == "file vk.key"), "{err}");
    assert!(attempt.record.bytes <= (1 << 20) + (1 << 20), "read {} bytes", attempt.record.bytes);
    assert_eq!(server.count(), 1, "a cap is final, not retried");
    assert!(tmp_entries(&cache).is_empty());
}
