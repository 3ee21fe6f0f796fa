//! HTTP plumbing shared by uploads and downloads: the client, timeouts, retries with backoff, S3
//! error bodies and the expiry of presigned URLs.
//!
//! The client is reqwest over rustls with the *ring* provider and the webpki roots, the TLS stack
//! the rest of the workspace uses (no OpenSSL, no aws-lc). Automatic redirects and proxies are
//! off: the fetcher follows redirects itself so that every hop passes the URL policy, and an
//! environment proxy must not change where a request goes.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;
use veribench_support::retry::RetryPolicy;

/// Timeouts and retries of one kind of transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferConfig {
    /// TCP + TLS connection timeout, seconds.
    pub connect_timeout_secs: u64,
    /// Longest wait for the next bytes of a response, seconds.
    pub read_timeout_secs: u64,
    /// Deadline of one whole file transfer attempt, seconds.
    pub file_timeout_secs: u64,
    /// Attempts per file, and the exponential backoff between them (transient failures only:
    /// connection errors, timeouts, truncated bodies, HTTP 408/429/5xx).
    pub retry: RetryPolicy,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            connect_timeout_secs: 10,
            read_timeout_secs: 30,
            file_timeout_secs: 3600,
            retry: RetryPolicy { attempts: 4, initial_delay_ms: 500, max_delay_ms: 30_000 },
        }
    }
}

impl TransferConfig {
    /// The deadline of one file attempt.
    pub fn file_timeout(&self) -> Duration {
        Duration::from_secs(self.file_timeout_secs.max(1))
    }
}

/// The rustls configuration: ring provider, webpki roots, TLS 1.2 and 1.3.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An HTTP client failed to build (TLS setup).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct ClientError(String);

/// Builds the HTTP client: no redirects, no proxy, the configured timeouts.
pub fn http_client(cfg: &TransferConfig) -> Result<reqwest::Client, ClientError> {
    let tls = tls_config().map_err(|e| ClientError(e.to_string()))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs.max(1)))
        .read_timeout(Duration::from_secs(cfg.read_timeout_secs.max(1)))
        .user_agent(concat!("veribench-circuit/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError(e.to_string()))
}

/// ` (code: message)` of an S3 error body, for error messages; empty when it had neither.
pub(crate) fn detail(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(c), None) => format!(" ({c})"),
        (None, Some(m)) => format!(" ({m})"),
        (None, None) => String::new(),
    }
}

/// At most `limit` bytes of a response body (error bodies: never trust their size).
pub(crate) async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => out.extend_from_slice(&chunk[..chunk.len().min(limit - out.len())]),
            _ => break,
        }
    }
    out
}

/// Whether an HTTP status is worth retrying.
pub(crate) fn status_is_transient(status: reqwest::StatusCode) -> bool {
    status.is_server_error()
        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        || status == reqwest::StatusCode::REQUEST_TIMEOUT
}

/// A reqwest error as one line, with its sources (reqwest's `Display` hides the cause).
pub(crate) fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        err.to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    // A URL in the message would carry the presigned signature into logs.
    strip_query(&text)
}

/// Drops query strings from URLs inside `text` (signatures must not reach logs).
pub(crate) fn strip_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_query = false;
    for c in text.chars() {
        if in_query {
            if c.is_whitespace() || c == ')' {
                in_query = false;
                out.push(c);
            }
            continue;
        }
        if c == '?' {
            in_query = true;
            out.push_str("?…");
            continue;
        }
        out.push(c);
    }
    out
}

/// The `<Code>` and `<Message>` of an S3 error body, sanitised and shortened.
pub(crate) fn s3_error(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find('<')? + start;
        let clean: String =
            text[start..end].chars().filter(|c| !c.is_control()).take(200).collect();
        Some(clean)
    };
    (tag("Code"), tag("Message"))
}

/// The instant (Unix ms) a presigned URL stops being valid, from its `X-Amz-Date` and
/// `X-Amz-Expires` parameters; `None` when the URL is not presigned or the values are not
/// well-formed (the server then decides).
pub fn presigned_expiry_ms(url: &Url) -> Option<u64> {
    let mut date = None;
    let mut expires = None;
    for (k, v) in url.query_pairs() {
        if k.eq_ignore_ascii_case("x-amz-date") {
            date = Some(v.into_owned());
        } else if k.eq_ignore_ascii_case("x-amz-expires") {
            expires = v.parse::<u64>().ok();
        }
    }
    let signed = parse_amz_date(&date?)?;
    signed.checked_add(expires?.checked_mul(1000)?)
}

/// `YYYYMMDDTHHMMSSZ` as Unix milliseconds.
fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs).ok()?.checked_mul(1000)
}

/// Progress of file transfers, for a binary to draw (the library draws nothing itself, so it
/// carries no terminal dependency).
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A transfer of `name` starts; `verb` is `upload` or `fetch`, `len` the size when known.
    fn start(&self, verb: &str, name: &str, len: Option<u64>) -> Arc<dyn FileProgress>;
}

/// One file's transfer, as reported to a [`Progress`].
pub trait FileProgress: Send + Sync {
    /// `bytes` more were transferred.
    fn advance(&self, bytes: u64);
    /// The transfer ended (successfully or not).
    fn finish(&self);
}

struct NoProgress;

impl FileProgress for NoProgress {
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// The file progress of one transfer: `progress`'s, or one that reports nowhere.
pub(crate) fn file_progress(
    progress: Option<&Arc<dyn Progress>>,
    verb: &str,
    name: &str,
    len: Option<u64>,
) -> Arc<dyn FileProgress> {
    match progress {
        Some(p) => p.start(verb, name, len),
        None => Arc::new(NoProgress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_dates() {
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("20240229T120000Z"), Some(1_709_208_000_000));
        assert_eq!(parse_amz_date("20241301T000000Z"), None);
        assert_eq!(parse_amz_date("2024-01-01T00:00Z"), None);
        assert_eq!(parse_amz_date("2024010+T000000Z"), None);
        let url = Url::parse(
            "https://x.r2.dev/a?X-Amz-Date=20240229T120000Z&X-Amz-Expires=3600&X-Amz-Signature=ab",
        )
        .expect("url");
        assert_eq!(presigned_expiry_ms(&url), Some(1_709_211_600_000));
        assert_eq!(presigned_expiry_ms(&Url::parse("https://x.r2.dev/a").expect("url")), None);
    }

    #[test]
    fn s3_error_bodies_and_query_stripping() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                     <Message>bad\x07 sig</Message></Error>";
        assert_eq!(s3_error(body), (Some("SignatureDoesNotMatch".into()), Some("bad sig".into())));
        assert_eq!(s3_error(b"garbage"), (None, None));
        assert_eq!(
            strip_query("error sending request for url (http://h/x?sig=1): closed"),
            "error sending request for url (http://h/x?…): closed"
        );
    }
}
